//! An account's recent entries: lists the projector appends to in place while readers
//! read them, so that applying an event copies nothing.
//!
//! A published state is shared with every reader holding it, so the persistent maps of
//! an account cannot change in place: the projector used to copy the paths it changed
//! (the account, its last chunk of postings and of calls, its buckets, its trail) for
//! every chunk it published, which cost more than the ledger's own write. Instead an
//! event's postings, call and position go to the account's [`Recent`] lists, which only
//! grow: a reader holding the state at position P reads the entries at or before P and
//! ignores the rest, which the state it holds does not contain. A full list shorter than
//! [`RECENT_ENTRIES_MAX`] is copied into one twice as long; a full list of that length
//! makes the projector fold the account: its recent entries go into the persistent maps,
//! in bulk, and the account starts new, empty lists.
//!
//! The lists store their entries as atomic words written before the length that shows
//! them (release, acquire): no `unsafe`, and a reader never sees half an entry.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use domain::{Amount, Timestamp};
use rust_decimal::Decimal;

use crate::state::{AccountTarget, AccountView, CdrRef, PostingEntry};

/// Entries one recent list holds at most: the larger, the fewer folds (each copies the
/// paths of the persistent maps it changes once), the more a reader merges and the more
/// memory a busy account holds (80 bytes an entry over its three lists: 10 KB at 128).
/// 128 against 64: 0.88–0.90 µs of applying an event against 0.99–1.26 on the 1M set.
pub(crate) const RECENT_ENTRIES_MAX: usize = 128;
/// What the lists of a new account hold (an account loaded from a snapshot has none
/// until its first event, then these): they grow by doubling with use, so a quiet
/// account costs little memory.
pub(crate) const RECENT_ENTRIES_FIRST: usize = 4;

/// A value an [`AppendOnly`] list keeps, as words.
pub(crate) trait Words: Copy {
    const WORDS: usize;
    fn to_words(&self, words: &mut [u64]);
    fn from_words(words: &[u64]) -> Self;
}

fn amount_words(amount: Amount) -> [u64; 2] {
    let bytes = amount.0.serialize();
    let (low, high) = bytes.split_at(8);
    [u64::from_le_bytes(low.try_into().expect("8 bytes")), u64::from_le_bytes(high.try_into().expect("8 bytes"))]
}

fn amount_of(words: [u64; 2]) -> Amount {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&words[0].to_le_bytes());
    bytes[8..].copy_from_slice(&words[1].to_le_bytes());
    Amount(Decimal::deserialize(bytes))
}

impl Words for u64 {
    const WORDS: usize = 1;
    fn to_words(&self, words: &mut [u64]) {
        words[0] = *self;
    }
    fn from_words(words: &[u64]) -> Self {
        words[0]
    }
}

impl Words for CdrRef {
    const WORDS: usize = 2;
    fn to_words(&self, words: &mut [u64]) {
        let (start, packed) = self.to_parts();
        words[0] = start as u64;
        words[1] = packed;
    }
    fn from_words(words: &[u64]) -> Self {
        CdrRef::from_parts(words[0] as i64, words[1])
    }
}

/// A posting with the account's balance and earliest business time after it: a
/// reader's view at any position is the last posting's at or before it, found from the
/// end, without going over the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecentPosting {
    pub entry: PostingEntry,
    pub balance: Amount,
    pub first_occurred_at: i64,
}

impl Words for RecentPosting {
    const WORDS: usize = 7;
    fn to_words(&self, words: &mut [u64]) {
        let (occurred_at, position_and_category) = self.entry.to_parts();
        words[0] = occurred_at as u64;
        words[1] = position_and_category;
        words[2..4].copy_from_slice(&amount_words(self.entry.amount));
        words[4..6].copy_from_slice(&amount_words(self.balance));
        words[6] = self.first_occurred_at as u64;
    }
    fn from_words(words: &[u64]) -> Self {
        RecentPosting {
            entry: PostingEntry::from_parts(words[0] as i64, words[1], amount_of([words[2], words[3]])),
            balance: amount_of([words[4], words[5]]),
            first_occurred_at: words[6] as i64,
        }
    }
}

/// A list of fixed capacity that one writer appends to while any number of readers
/// read what was appended before.
pub(crate) struct AppendOnly<T: Words> {
    words: Box<[AtomicU64]>,
    len: AtomicUsize,
    _entries: std::marker::PhantomData<T>,
}

impl<T: Words> AppendOnly<T> {
    fn with_capacity(capacity: usize) -> Self {
        AppendOnly {
            words: (0..capacity * T::WORDS).map(|_| AtomicU64::new(0)).collect(),
            len: AtomicUsize::new(0),
            _entries: std::marker::PhantomData,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.words.len() / T::WORDS
    }

    /// A list of `capacity` entries holding this one's.
    fn copied(&self, capacity: usize) -> Self {
        let len = self.len.load(Ordering::Acquire);
        let held = len * T::WORDS;
        AppendOnly {
            words: (0..capacity * T::WORDS)
                .map(|at| AtomicU64::new(if at < held { self.words[at].load(Ordering::Relaxed) } else { 0 }))
                .collect(),
            len: AtomicUsize::new(len),
            _entries: std::marker::PhantomData,
        }
    }

    fn room(&self) -> usize {
        self.capacity() - self.len.load(Ordering::Relaxed)
    }

    /// Appends `value`; only [`Appender`] calls it, one at a time.
    fn push(&self, value: T) {
        let len = self.len.load(Ordering::Relaxed);
        assert!(len < self.capacity(), "a recent list is folded before it overflows");
        let mut words = [0u64; 8];
        value.to_words(&mut words);
        for (slot, word) in self.words[len * T::WORDS..(len + 1) * T::WORDS].iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        // Shows the entry: a reader that sees the new length sees its words.
        self.len.store(len + 1, Ordering::Release);
    }

    /// The entries appended so far, in order.
    pub(crate) fn entries(&self) -> impl DoubleEndedIterator<Item = T> + ExactSizeIterator + '_ {
        let len = self.len.load(Ordering::Acquire);
        self.words[..len * T::WORDS].chunks_exact(T::WORDS).map(|slots| {
            let mut words = [0u64; 8];
            for (word, slot) in words.iter_mut().zip(slots) {
                *word = slot.load(Ordering::Relaxed);
            }
            T::from_words(&words[..T::WORDS])
        })
    }
}

/// An account's recent entries, in log order; see the module's documentation.
pub(crate) struct Recent {
    postings: AppendOnly<RecentPosting>,
    calls: AppendOnly<CdrRef>,
    trail: AppendOnly<u64>,
    /// Set while an [`Appender`] holds the lists: one writer at a time.
    appending: AtomicBool,
}

impl Recent {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Recent {
            postings: AppendOnly::with_capacity(capacity),
            calls: AppendOnly::with_capacity(capacity),
            trail: AppendOnly::with_capacity(capacity),
            appending: AtomicBool::new(false),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.trail.capacity()
    }

    /// Lists of `capacity` entries holding these lists' entries (which fit: the caller
    /// makes them longer, never shorter).
    pub(crate) fn copied(&self, capacity: usize) -> Recent {
        assert!(capacity >= self.capacity(), "recent lists are copied into longer ones");
        Recent {
            postings: self.postings.copied(capacity),
            calls: self.calls.copied(capacity),
            trail: self.trail.copied(capacity),
            appending: AtomicBool::new(false),
        }
    }

    /// Whether an event with `postings` postings and `calls` calls for the account fits.
    pub(crate) fn has_room(&self, postings: usize, calls: usize) -> bool {
        self.trail.room() >= 1 && self.postings.room() >= postings && self.calls.room() >= calls
    }

    /// The recent postings at or before `up_to`.
    pub(crate) fn postings(&self, up_to: u64) -> impl Iterator<Item = RecentPosting> + '_ {
        self.postings.entries().take_while(move |p| p.entry.position() <= up_to)
    }

    pub(crate) fn calls(&self, up_to: u64) -> impl Iterator<Item = CdrRef> + '_ {
        self.calls.entries().take_while(move |c| c.position() <= up_to)
    }

    pub(crate) fn trail(&self, up_to: u64) -> impl Iterator<Item = u64> + '_ {
        self.trail.entries().take_while(move |p| *p <= up_to)
    }

    /// Whether any entry is at or before `up_to`: every event applied here is on the
    /// trail, so the trail's first entry tells.
    pub(crate) fn holds_any(&self, up_to: u64) -> bool {
        self.trail(up_to).next().is_some()
    }

    /// `view` (the account as folded) as of `up_to`, with the recent entries at or
    /// before it: the last of them tell, read from the end (usually the very end).
    pub(crate) fn update_view(&self, view: &mut AccountView, up_to: u64) {
        if let Some(last) = self.postings.entries().rev().find(|p| p.entry.position() <= up_to) {
            view.balance = last.balance;
            view.first_occurred_at = Some(Timestamp(last.first_occurred_at));
        }
        if let Some(last) = self.trail.entries().rev().find(|p| *p <= up_to) {
            view.last_position = last;
        }
    }

    /// The one writer of these lists, for as long as it lives; `folded` is the account
    /// as of its last fold, which what it appends follows.
    pub(crate) fn appender(&self, folded: &AccountView) -> Appender<'_> {
        assert!(!self.appending.swap(true, Ordering::Acquire), "a recent list has one writer at a time");
        let mut view = (folded.balance, folded.first_occurred_at.map(|t| t.micros()));
        if let Some(last) = self.postings.entries().next_back() {
            view = (last.balance, Some(last.first_occurred_at));
        }
        Appender { recent: self, balance: view.0, first_occurred_at: view.1 }
    }
}

/// A copy has the same entries in lists of its own.
impl Clone for Recent {
    fn clone(&self) -> Self {
        self.copied(self.capacity())
    }
}

impl PartialEq for Recent {
    fn eq(&self, other: &Self) -> bool {
        self.postings.entries().eq(other.postings.entries())
            && self.calls.entries().eq(other.calls.entries())
            && self.trail.entries().eq(other.trail.entries())
    }
}

impl Eq for Recent {}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("postings", &self.postings.entries().collect::<Vec<_>>())
            .field("calls", &self.calls.entries().collect::<Vec<_>>())
            .field("trail", &self.trail.entries().collect::<Vec<_>>())
            .finish()
    }
}

/// Appends an event's entries to an account's recent lists.
pub(crate) struct Appender<'a> {
    recent: &'a Recent,
    balance: Amount,
    first_occurred_at: Option<i64>,
}

impl Drop for Appender<'_> {
    fn drop(&mut self) {
        self.recent.appending.store(false, Ordering::Release);
    }
}

impl AccountTarget for Appender<'_> {
    fn add_call(&mut self, call: CdrRef) {
        self.recent.calls.push(call);
    }

    fn add_posting(&mut self, entry: PostingEntry) {
        self.balance = (self.balance + entry.category().balance_effect(entry.amount)).normalized();
        let first = self.first_occurred_at.map_or(entry.occurred_at, |t| t.min(entry.occurred_at));
        self.first_occurred_at = Some(first);
        self.recent.postings.push(RecentPosting { entry, balance: self.balance, first_occurred_at: first });
    }

    fn add_to_trail(&mut self, position: u64) {
        self.recent.trail.push(position);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use domain::event::Category;
    use proptest::prelude::*;

    use super::*;
    use crate::state::AccountModel;

    proptest! {
        /// Every entry comes back as it went in, amounts to the last bit (scale and
        /// the sign of a zero).
        #[test]
        fn entries_come_back_as_appended(
            entries in proptest::collection::vec(
                (any::<i64>(), 0u64..1 << 47, 0usize..6, any::<i64>(), 0u32..28, any::<bool>(), any::<u16>()),
                0..RECENT_ENTRIES_MAX,
            ),
        ) {
            let recent = Recent::with_capacity(RECENT_ENTRIES_MAX);
            let mut postings = Vec::new();
            let mut calls = Vec::new();
            {
                let mut appender = recent.appender(&crate::state::tests::view());
                for (at, position, category, mantissa, scale, answered, cause) in &entries {
                    let mut amount = Decimal::new(*mantissa, *scale);
                    amount.set_sign_negative(*answered);
                    let entry = PostingEntry::new(*at, *position, Category::ALL[*category], Amount(amount));
                    appender.add_posting(entry);
                    postings.push(entry);
                    let call = CdrRef::new(*at, *position, *answered, *cause);
                    appender.add_call(call);
                    calls.push(call);
                    appender.add_to_trail(*position);
                }
            }
            let got: Vec<PostingEntry> = recent.postings.entries().map(|p| p.entry).collect();
            prop_assert_eq!(got.len(), postings.len());
            for (got, expected) in got.iter().zip(&postings) {
                prop_assert_eq!(got.amount.0.serialize(), expected.amount.0.serialize());
                prop_assert_eq!(got, expected);
            }
            prop_assert_eq!(recent.calls.entries().collect::<Vec<_>>(), calls);
            prop_assert_eq!(recent.trail.entries().count(), entries.len());
        }
    }

    /// A reader on another thread sees a prefix of the entries, whole, while they are
    /// appended, and entries past the position it asks for are left out.
    #[test]
    fn readers_see_whole_entries_while_the_writer_appends() {
        let recent = Arc::new(Recent::with_capacity(RECENT_ENTRIES_MAX));
        let reader = {
            let recent = recent.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                while seen < RECENT_ENTRIES_MAX {
                    let postings: Vec<RecentPosting> = recent.postings(u64::MAX).collect();
                    for (n, posting) in postings.iter().enumerate() {
                        assert_eq!(posting.entry.position(), n as u64 + 1);
                        assert_eq!(posting.balance, Amount(Decimal::from(n as i64 + 1)));
                    }
                    seen = postings.len();
                }
            })
        };
        {
            let mut appender = recent.appender(&crate::state::tests::view());
            for position in 1..=RECENT_ENTRIES_MAX as u64 {
                appender.add_posting(PostingEntry::new(0, position, Category::Payments, Amount(Decimal::ONE)));
            }
        }
        reader.join().unwrap();
        assert_eq!(recent.postings(10).count(), 10);
        assert!(!recent.has_room(1, 0));
    }

    proptest! {
        /// An account read as of any position, with some of its entries folded and the
        /// rest recent, is the account with the entries up to that position put straight
        /// into its maps, whatever their order of business time.
        #[test]
        fn an_account_at_a_position_is_its_entries_up_to_it(
            entries in proptest::collection::vec((0i64..50, 0usize..6, -500i64..500, any::<bool>()), 1..150),
            fold_every in 1usize..40,
            read_at in 0u64..160,
        ) {
            let day = 86_400_000_000i64;
            let view = crate::state::tests::view();
            let mut live = Arc::new(AccountModel::new(view.clone()));
            let mut appended = Vec::new();
            // A reader's state is at or past the last fold of the accounts it holds.
            let mut folded_at = 0;
            for (n, (days, category, cents, call)) in entries.iter().enumerate() {
                let position = n as u64 + 1;
                let posting = PostingEntry::new(days * day, position, Category::ALL[*category], Amount(Decimal::new(*cents, 2)));
                let call = call.then(|| CdrRef::new(days * day, position, true, 16));
                let capacity = live.recent.capacity();
                if !live.recent.has_room(1, 1) && capacity < RECENT_ENTRIES_MAX && n % 3 == 0 {
                    // Longer lists, the same entries, no fold.
                    live = Arc::new(live.regrown(capacity * 2));
                } else if !live.recent.has_room(1, 1) || n % fold_every == 0 {
                    live = Arc::new(live.folded(position - 1, RECENT_ENTRIES_FIRST.min(fold_every + 1)));
                    folded_at = position - 1;
                }
                let mut appender = live.recent.appender(&live.view);
                appender.add_posting(posting);
                call.inspect(|c| appender.add_call(*c));
                appender.add_to_trail(position);
                appended.push((posting, call, position));
            }
            let read_at = read_at.max(folded_at);
            let mut direct = AccountModel::new(view);
            for (posting, call, position) in appended.into_iter().filter(|(_, _, p)| *p <= read_at) {
                direct.add_posting(posting);
                call.inspect(|c| direct.add_call(*c));
                direct.add_to_trail(position);
            }
            let at = live.at(read_at);
            prop_assert_eq!(live.view_at(read_at), direct.view.clone());
            prop_assert_eq!(&at.view, &direct.view);
            prop_assert_eq!(
                crate::persist::account_bytes(&live, read_at),
                crate::persist::account_bytes(&direct, u64::MAX)
            );
            for (from, to) in [(0, 10), (3, 40), (-1, 60)] {
                prop_assert_eq!(at.sum_range(from * day, to * day), direct.sum_range(from * day, to * day));
            }
        }
    }

    #[test]
    #[should_panic(expected = "one writer at a time")]
    fn a_second_writer_is_refused() {
        let recent = Recent::with_capacity(4);
        let _first = recent.appender(&crate::state::tests::view());
        let _second = recent.appender(&crate::state::tests::view());
    }
}
