//! The compact encoding of an account in the models' snapshot (format 6).
//!
//! An account's lists are sorted, so each entry is written as its difference from the
//! one before, in LEB128 varints: a posting takes about 11 bytes instead of postcard's
//! 29 (whose amounts are 16 fixed bytes and whose times are absolute), and the snapshot
//! of the standard 10M set half of what it was. Writing it was a quarter of a replay,
//! and reading it most of a start.
//!
//! Amounts keep every bit of their `Decimal`: the 96-bit mantissa, the sign (a negative
//! zero stays one) and the scale, so that a snapshot reads back to the models that
//! wrote it, byte for byte.

use std::sync::Arc;

use domain::Amount;
use domain::event::Category;
use imbl::Vector;
use rust_decimal::Decimal;

use crate::recent::Recent;
use crate::state::{AccountModel, AccountView, Buckets, CdrRef, Chunk, Chunked, Entry, PostingEntry, Sums};

/// Appends to a buffer.
struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn varint(&mut self, mut value: u128) {
        while value >= 0x80 {
            self.0.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn u64(&mut self, value: u64) {
        self.varint(u128::from(value));
    }

    /// A signed difference, zigzagged so that small ones of either sign are short.
    fn i64(&mut self, value: i64) {
        self.u64(((value << 1) ^ (value >> 63)) as u64);
    }

    fn usize(&mut self, value: usize) {
        self.u64(value as u64);
    }

    fn amount(&mut self, amount: Amount) {
        let (mantissa, negative, scale) =
            (amount.0.mantissa().unsigned_abs(), amount.0.is_sign_negative(), amount.0.scale());
        self.varint(mantissa << 1 | u128::from(negative));
        self.0.push(scale as u8);
    }

    fn sums(&mut self, sums: &Sums) {
        for amount in sums.0 {
            self.amount(amount);
        }
    }

    /// Entries sorted by key, each as its difference from the last.
    fn chunk<T: Entry>(&mut self, entries: &[T], mut put: impl FnMut(&mut Self, &T)) {
        self.usize(entries.len());
        let mut last = (0i64, 0u64);
        for entry in entries {
            let key = entry.key();
            self.i64(key.0.wrapping_sub(last.0));
            self.i64(key.1.wrapping_sub(last.1) as i64);
            put(self, entry);
            last = key;
        }
    }
}

/// Reads what [`Out`] wrote; `None` for anything that is not (a damaged file).
struct In<'a> {
    bytes: &'a [u8],
}

impl<'a> In<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        In { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(*first)
    }

    fn varint(&mut self) -> Option<u128> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn u64(&mut self) -> Option<u64> {
        u64::try_from(self.varint()?).ok()
    }

    fn i64(&mut self) -> Option<i64> {
        let zigzag = self.u64()?;
        Some((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    /// A count of items that each take at least one byte: more than the bytes left is
    /// damage, and must not become a huge allocation.
    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok().filter(|n| *n <= self.bytes.len())
    }

    fn amount(&mut self) -> Option<Amount> {
        let packed = self.varint()?;
        let (mantissa, negative) = (packed >> 1, packed & 1 == 1);
        let scale = u32::from(self.byte()?);
        if mantissa >> 96 != 0 || scale > Decimal::MAX_SCALE {
            return None;
        }
        let mut decimal =
            Decimal::from_parts(mantissa as u32, (mantissa >> 32) as u32, (mantissa >> 64) as u32, false, scale);
        decimal.set_sign_negative(negative);
        Some(Amount(decimal))
    }

    fn sums(&mut self) -> Option<Sums> {
        let mut sums = Sums::default();
        for amount in &mut sums.0 {
            *amount = self.amount()?;
        }
        Some(sums)
    }

    fn chunk<T>(&mut self, mut get: impl FnMut(&mut Self, (i64, u64)) -> Option<T>) -> Option<Vec<T>> {
        let count = self.count()?;
        let mut entries = Vec::with_capacity(count);
        let mut last = (0i64, 0u64);
        for _ in 0..count {
            let key = (last.0.wrapping_add(self.i64()?), last.1.wrapping_add(self.i64()? as u64));
            entries.push(get(self, key)?);
            last = key;
        }
        Some(entries)
    }
}

/// Appends `account` in the compact form.
pub(crate) fn put_account(out: &mut Vec<u8>, account: &AccountModel) {
    let view = std::mem::take(out);
    *out = postcard::to_extend(&account.view, view).expect("encoding to a Vec cannot fail");
    let mut out = Out(out);
    out.usize(account.postings.chunks.len());
    for chunk in account.postings.chunks.values() {
        out.sums(&chunk.summary);
        out.chunk(&chunk.entries, |out, posting| {
            out.0.push(crate::state::category_index(posting.category()) as u8);
            out.amount(posting.amount);
        });
    }
    out.usize(account.buckets.len());
    let mut last = 0i64;
    for (bucket, sums) in account.buckets.iter() {
        out.i64(bucket.wrapping_sub(last));
        out.sums(sums);
        last = *bucket;
    }
    out.usize(account.cdrs.chunks.len());
    for chunk in account.cdrs.chunks.values() {
        out.chunk(&chunk.entries, |out, call| {
            out.u64(u64::from(call.hangup_cause()) << 1 | u64::from(call.answered()))
        });
    }
    out.usize(account.trail.len());
    let mut last = 0u64;
    for position in &account.trail {
        out.i64(position.wrapping_sub(last) as i64);
        last = *position;
    }
}

/// The account [`put_account`] wrote as the whole of `bytes`; `None` for damage.
pub(crate) fn account(bytes: &[u8]) -> Option<AccountModel> {
    let (view, rest): (AccountView, _) = postcard::take_from_bytes(bytes).ok()?;
    let mut input = In::new(rest);
    let mut postings = imbl::OrdMap::new();
    for _ in 0..input.count()? {
        let summary = input.sums()?;
        let entries = input.chunk(|input, (occurred_at, position)| {
            let category = *Category::ALL.get(usize::from(input.byte()?))?;
            PostingEntry::checked(occurred_at, position, category, input.amount()?)
        })?;
        let last = entries.last()?.key();
        postings.insert(last, Arc::new(Chunk { summary, entries }));
    }
    let mut buckets = Vec::new();
    let mut last = 0i64;
    for _ in 0..input.count()? {
        let bucket = last.wrapping_add(input.i64()?);
        buckets.push((bucket, input.sums()?));
        last = bucket;
    }
    let buckets = Buckets::from_sorted(buckets)?;
    let mut cdrs = imbl::OrdMap::new();
    for _ in 0..input.count()? {
        let entries = input.chunk(|input, (start, position)| {
            let packed = input.u64()?;
            CdrRef::checked(start, position, packed & 1 == 1, u16::try_from(packed >> 1).ok()?)
        })?;
        let last = entries.last()?.key();
        cdrs.insert(last, Arc::new(Chunk::of(entries)));
    }
    let count = input.count()?;
    let mut trail = Vec::with_capacity(count);
    let mut last = 0u64;
    for _ in 0..count {
        last = last.wrapping_add(input.i64()? as u64);
        trail.push(last);
    }
    input.is_empty().then(|| AccountModel {
        view,
        postings: Chunked { chunks: postings },
        buckets,
        cdrs: Chunked { chunks: cdrs },
        trail: Vector::from(trail),
        recent: Recent::with_capacity(0),
    })
}

/// Appends CDR id entries, sorted by (hash, position), as differences of the hash and
/// the position itself.
pub(crate) fn put_cdr_entries(out: &mut Vec<u8>, entries: &[(u64, u64)]) {
    put_cdr_entries_after(out, entries, 0);
}

/// [`put_cdr_entries`] for a run that follows entries whose last hash is `last`: the
/// runs' bytes one after the other are the bytes of all their entries.
pub(crate) fn put_cdr_entries_after(out: &mut Vec<u8>, entries: &[(u64, u64)], mut last: u64) {
    let mut out = Out(out);
    for (hash, position) in entries {
        out.u64(hash.wrapping_sub(last));
        out.u64(*position);
        last = *hash;
    }
}

/// The `count` entries [`put_cdr_entries`] wrote as the whole of `bytes`.
pub(crate) fn cdr_entries(bytes: &[u8], count: usize) -> Option<Vec<(u64, u64)>> {
    let mut input = In::new(bytes);
    let mut entries = Vec::with_capacity(count.min(bytes.len() / 2));
    let mut last = 0u64;
    for _ in 0..count {
        last = last.wrapping_add(input.u64()?);
        entries.push((last, input.u64()?));
    }
    input.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::state::AccountTarget;

    fn decimal(mantissa: i128, scale: u32, negative_zero: bool) -> Amount {
        let mut d = Decimal::from_i128_with_scale(mantissa, scale);
        if negative_zero {
            d.set_sign_negative(true);
        }
        Amount(d)
    }

    proptest! {
        /// Every amount, a negative zero and the largest mantissa among them, comes back
        /// with the same bits.
        #[test]
        fn amounts_keep_every_bit(
            mantissa in -(1i128 << 95)..(1i128 << 95),
            scale in 0u32..=28,
            negative_zero in any::<bool>(),
        ) {
            let amount = decimal(if negative_zero { 0 } else { mantissa }, scale, negative_zero);
            let mut bytes = Vec::new();
            Out(&mut bytes).amount(amount);
            let mut input = In::new(&bytes);
            let back = input.amount().unwrap();
            prop_assert!(input.is_empty());
            prop_assert_eq!(back.0.serialize(), amount.0.serialize());
        }

        /// Signed differences and CDR id entries of any size come back.
        #[test]
        fn differences_and_cdr_entries_come_back(mut entries in proptest::collection::vec(any::<(u64, u64)>(), 0..50)) {
            entries.sort_unstable();
            let mut bytes = Vec::new();
            put_cdr_entries(&mut bytes, &entries);
            prop_assert_eq!(cdr_entries(&bytes, entries.len()), Some(entries.clone()));
            for (a, _) in &entries {
                let mut bytes = Vec::new();
                Out(&mut bytes).i64(*a as i64);
                prop_assert_eq!(In::new(&bytes).i64(), Some(*a as i64));
            }
        }
    }

    /// Damage is `None`, never a panic or a huge allocation: every cut of an encoded
    /// account, and a count far larger than the bytes.
    #[test]
    fn damaged_accounts_are_refused() {
        let mut model = AccountModel::new(crate::state::tests::view());
        for n in 0..100u64 {
            model.add_posting(PostingEntry::new(
                n as i64 * 7_000_000 - 300,
                1000 - n,
                Category::ALL[n as usize % 6],
                decimal(n as i128 * 12345 - 600_000, (n % 7) as u32, false),
            ));
        }
        let mut bytes = Vec::new();
        put_account(&mut bytes, &model);
        assert_eq!(account(&bytes).as_ref(), Some(&model));
        for cut in 0..bytes.len() {
            assert!(account(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut huge = Vec::new();
        Out(&mut huge).u64(u64::MAX >> 1);
        assert!(In::new(&huge).count().is_none());
        assert!(cdr_entries(&huge, usize::MAX).is_none());
    }
}
