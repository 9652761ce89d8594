//! The read models, all in one sled tree so that a chunk of events and the checkpoint
//! that follows it are written in one atomic batch: a restart resumes exactly after the
//! last applied event, never applying one twice or skipping one.
//!
//! Keys (account ids are 16 bytes, positions u64 BE, times i64 with the sign bit
//! flipped so that byte order is time order):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `C` | — | checkpoint: the last applied position |
//! | `A` | account | [`AccountView`] |
//! | `N` | number | account id |
//! | `B` | level, account, bucket | per-category sums of postings by `occurred_at` |
//! | `P` | account, hour, chunk | the account's postings of that hour in that chunk |
//! | `E` | account, position | a piece of the account's audit trail ([`EventRow`]s, at most [`EVENT_PIECE_ROWS_MAX`]), keyed by its chunk's last position or, when a long list is cut, by its last row's |
//! | `F` | — | the layout version of these keys ([`MODELS_FORMAT`]) |
//! | `X` | account, hour, chunk | the account's CDRs ([`CdrRow`]s) that started in that hour, in that chunk: a customer's calls, and for a partner its customers' calls it paid wholesale |
//! | `K` | book, account | — (the accounts of a book, for listings by partner) |
//!
//! There is no key per CDR: a CDR by its id is found through the book's write state,
//! which already maps every charged CDR id to its event (see `docs/architecture.md`).
//!
//! A chunk is named by its last position. Per-event lists are written once per chunk as
//! one value ("pieces"), never rewritten: sled's cost is per insert, so one key per
//! posting made replay insert-bound. Readers merge the pieces of an hour.
//!
//! Bucket sums exist at four sizes (an hour, a day, 32 days, 1024 days), so the sum of
//! any period costs a few dozen reads whatever the account's history; only the partial
//! hours at a period's two ends read single postings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use domain::event::{Alert, Category};
use domain::rating::RatedCdr;
use domain::{
    AccountId, AccountKind, AccountStatus, Amount, BookId, Currency, EventId, Payload, RecordedEvent, TariffId,
    Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::error::ProjectionError;

pub(crate) const CHECKPOINT_KEY: &[u8] = b"C";
pub(crate) const PREFIX_ACCOUNT: u8 = b'A';
pub(crate) const PREFIX_NUMBER: u8 = b'N';
pub(crate) const PREFIX_BUCKET: u8 = b'B';
pub(crate) const PREFIX_POSTING: u8 = b'P';
pub(crate) const PREFIX_EVENT: u8 = b'E';
pub(crate) const FORMAT_KEY: &[u8] = b"F";
pub(crate) const PREFIX_ACCOUNT_CDR: u8 = b'X';
pub(crate) const PREFIX_BOOK_ACCOUNT: u8 = b'K';

/// The layout of the keys above. Models of another layout are not read: they are
/// rebuilt from the log. 2: CDR rows live in the account pieces (`X`), no `D` keys.
/// 3: every amount is held normalised ([`Amount::normalized`]), so that the models'
/// bytes depend on the log's values only, not on how it was cut into chunks or spans.
pub(crate) const MODELS_FORMAT: u32 = 3;

/// Bucket sizes in microseconds, finest first: an hour, a day, 32 days, 1024 days.
pub(crate) const BUCKET_MICROS: [i64; 4] = [3_600_000_000, 86_400_000_000, 32 * 86_400_000_000, 1024 * 86_400_000_000];

/// Per-category sums, in [`Category::ALL`] order, each held normalised: a decimal sum
/// keeps the larger scale of its operands (and one that adds zero the other's), so sums
/// of one set of postings added in another order would otherwise differ in their places.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums(pub [Amount; 6]);

impl Sums {
    pub fn add(&mut self, category: Category, amount: Amount) {
        let sum = &mut self.0[category_index(category)];
        *sum = (*sum + amount).normalized();
    }

    pub fn add_all(&mut self, other: &Sums) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine = (*mine + *theirs).normalized();
        }
    }

    pub fn sub_all(&mut self, other: &Sums) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine = (*mine - *theirs).normalized();
        }
    }

    pub fn get(&self, category: Category) -> Amount {
        self.0[category_index(category)]
    }

    /// The balance these sums move: credits minus debits.
    pub fn balance_effect(&self) -> Amount {
        Category::ALL.iter().map(|c| c.balance_effect(self.get(*c))).sum()
    }
}

pub(crate) fn category_index(category: Category) -> usize {
    Category::ALL.iter().position(|c| *c == category).expect("every category is in ALL")
}

/// An account as the directory shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    pub id: AccountId,
    pub number: String,
    pub name: String,
    pub kind: AccountKind,
    pub partner: Option<AccountId>,
    pub book: BookId,
    pub currency: Currency,
    pub credit_limit: Amount,
    pub status: AccountStatus,
    pub tariff: Option<TariffId>,
    pub balance: Amount,
    pub opened_at: Timestamp,
    /// The earliest business time of any posting (the start of its statement history).
    pub first_occurred_at: Option<Timestamp>,
    pub last_position: u64,
}

impl AccountView {
    /// What may still be spent, in the account's canonical form.
    pub fn available(&self) -> Amount {
        (self.balance + self.credit_limit).canonical(self.currency)
    }

    /// The view as answers show it: its amounts in the currency's canonical form (the
    /// models hold them normalised).
    pub(crate) fn canonical(mut self) -> Self {
        self.balance = self.balance.canonical(self.currency);
        self.credit_limit = self.credit_limit.canonical(self.currency);
        self
    }
}

/// An event as an account's audit trail lists it; `postings` are this account's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub event_id: EventId,
    pub book: BookId,
    pub version: u64,
    pub kind: String,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub hash: [u8; 32],
    pub postings: Vec<(Category, Amount)>,
}

/// A CDR as the CDR store keeps it, with its costs and the event that charged it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrRow {
    pub account: AccountId,
    pub position: u64,
    pub event_id: EventId,
    pub cdr: RatedCdr,
    pub customer_cost: Amount,
    pub partner: Option<AccountId>,
    pub partner_cost: Option<Amount>,
}

impl CdrRow {
    /// The row with its costs in their canonical forms: the customer's cost in the
    /// customer's currency, the partner's in the partner's.
    pub fn canonical(mut self, customer: Currency, partner: Option<Currency>) -> Self {
        self.customer_cost = self.customer_cost.canonical(customer);
        self.partner_cost = self.partner_cost.map(|c| partner.map_or_else(|| c.normalized(), |p| c.canonical(p)));
        self
    }

    fn normalized(mut self) -> Self {
        self.customer_cost = self.customer_cost.normalized();
        self.partner_cost = self.partner_cost.map(Amount::normalized);
        self
    }

    /// The CDR that `recorded` charged, if it is a `CallCharged` event.
    pub fn from_recorded(recorded: &RecordedEvent) -> Option<CdrRow> {
        let Payload::CallCharged(e) = &recorded.event.payload else { return None };
        Some(CdrRow {
            account: e.account,
            position: recorded.position,
            event_id: recorded.event.envelope.event_id,
            cdr: e.cdr.clone(),
            customer_cost: e.customer_cost,
            partner: e.partner,
            partner_cost: e.partner_cost,
        })
    }
}

pub(crate) fn time_bytes(time: i64) -> [u8; 8] {
    ((time as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn time_from_bytes(bytes: &[u8]) -> i64 {
    (u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

pub(crate) fn account_key(account: AccountId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(PREFIX_ACCOUNT);
    key.extend_from_slice(account.0.as_bytes());
    key
}

pub(crate) fn number_key(number: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + number.len());
    key.push(PREFIX_NUMBER);
    key.extend_from_slice(number.as_bytes());
    key
}

pub(crate) fn bucket_key(level: usize, account: AccountId, bucket: i64) -> [u8; 26] {
    let mut key = [0u8; 26];
    key[0] = PREFIX_BUCKET;
    key[1] = level as u8;
    key[2..18].copy_from_slice(account.0.as_bytes());
    key[18..].copy_from_slice(&time_bytes(bucket));
    key
}

pub(crate) const HOUR_MICROS: i64 = BUCKET_MICROS[0];

/// Audit-trail rows in one piece at most: a live chunk's pieces are smaller anyway, and
/// a replay span's are cut to this (sled slows down badly on values of megabytes).
pub(crate) const EVENT_PIECE_ROWS_MAX: usize = 64;

/// `prefix` + account + hour + chunk: one piece of an account's per-hour list.
pub(crate) fn hour_piece_key(prefix: u8, account: AccountId, hour: i64, chunk: u64) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = prefix;
    key[1..17].copy_from_slice(account.0.as_bytes());
    key[17..25].copy_from_slice(&time_bytes(hour));
    key[25..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// `E` + account + chunk: the piece of an account's audit trail a chunk wrote.
pub(crate) fn event_piece_key(account: AccountId, chunk: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[0] = PREFIX_EVENT;
    key[1..17].copy_from_slice(account.0.as_bytes());
    key[17..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// One posting in a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct PostingEntry {
    pub occurred_at: i64,
    pub position: u64,
    pub category: Category,
    pub amount: Amount,
}

/// One CDR in a piece, ordered by start and then by the position that charged it: an
/// account's list is in start order, and within one account no two rows share a
/// position (an event charges one call).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct CdrEntry(pub CdrRow);

impl CdrEntry {
    pub(crate) fn order(&self) -> (i64, u64) {
        (self.0.cdr.start.micros(), self.0.position)
    }
}

impl PartialEq for CdrEntry {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for CdrEntry {}

impl PartialOrd for CdrEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CdrEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

pub(crate) fn book_account_key(book: BookId, account: AccountId) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = PREFIX_BOOK_ACCOUNT;
    key[1..17].copy_from_slice(book.0.as_bytes());
    key[17..].copy_from_slice(account.0.as_bytes());
    key
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encoding to a Vec cannot fail")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, ProjectionError> {
    postcard::from_bytes(bytes)
        .map_err(|e| ProjectionError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// FxHash's mixing step, for the writer's maps: their keys are account ids (random) and
/// hours, so SipHash's defence against chosen keys buys nothing on this hot path.
#[derive(Clone, Copy, Default)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A key and its value, to be written.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// An account's postings of one hour in one chunk, and their sums.
#[derive(Default)]
pub(crate) struct HourPiece {
    sums: Sums,
    postings: Vec<PostingEntry>,
}

/// What a chunk (or a replay span) changed, not yet merged into the tree. Bucket sums
/// are kept per hour only while applying (one map update per posting); the coarser
/// buckets are derived from them when written.
#[derive(Default)]
pub(crate) struct Pieces {
    /// Keys written as they are: the number and book indexes.
    rows: Vec<KeyValue>,
    accounts: Vec<AccountView>,
    hours: FastMap<(AccountId, i64), HourPiece>,
    cdrs: FastMap<(AccountId, i64), Vec<CdrEntry>>,
    events: FastMap<AccountId, Vec<(u64, EventRow)>>,
}

impl Pieces {
    /// The key-value writes of these pieces for a chunk ending at `checkpoint`, sorted by
    /// key (later writes of a key after earlier ones), without the checkpoint itself.
    /// Bucket sums are added to what `tree` holds: of every bucket key, one read.
    pub(crate) fn into_writes(self, tree: &sled::Tree, checkpoint: u64) -> Result<Vec<KeyValue>, ProjectionError> {
        let mut buckets: FastMap<[u8; 26], Sums> = FastMap::default();
        for ((account, hour), piece) in &self.hours {
            for (level, size) in BUCKET_MICROS.iter().enumerate() {
                // Every bucket size is a whole number of hours.
                let bucket = hour.div_euclid(size / HOUR_MICROS);
                buckets.entry(bucket_key(level, *account, bucket)).or_default().add_all(&piece.sums);
            }
        }
        let mut writes = self.rows;
        writes.reserve(self.accounts.len() + buckets.len() + self.hours.len() + self.cdrs.len() + self.events.len());
        for view in &self.accounts {
            writes.push((account_key(view.id), encode(view)));
        }
        for (key, mut sums) in buckets {
            if let Some(bytes) = tree.get(key)? {
                sums.add_all(&decode(&key, &bytes)?);
            }
            writes.push((key.to_vec(), encode(&sums)));
        }
        for ((account, hour), piece) in &self.hours {
            let key = hour_piece_key(PREFIX_POSTING, *account, *hour, checkpoint);
            writes.push((key.to_vec(), encode(&piece.postings)));
        }
        for ((account, hour), entries) in &self.cdrs {
            writes.push((hour_piece_key(PREFIX_ACCOUNT_CDR, *account, *hour, checkpoint).to_vec(), encode(entries)));
        }
        for (account, rows) in &self.events {
            // A long list (a replay span) is cut: each piece is keyed by its last row's
            // position, which keeps keys in log order and at or after their rows, as
            // readers expect, and a page of the trail decodes one small piece.
            let pieces = rows.chunks(EVENT_PIECE_ROWS_MAX);
            let count = pieces.len();
            for (i, piece) in pieces.enumerate() {
                let key = if i + 1 == count { checkpoint } else { piece.last().map_or(checkpoint, |(p, _)| *p) };
                writes.push((event_piece_key(*account, key).to_vec(), encode(&piece)));
            }
        }
        // Stable: of two writes of one key, the later stays last.
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(writes)
    }
}

/// Applies events to the models. Live projection makes one per chunk and commits it
/// with the checkpoint in one atomic batch; replay keeps one for the whole log and takes
/// its pieces out span by span.
pub(crate) struct ChunkWriter {
    tree: sled::Tree,
    /// Replay holds every account in memory from the start (the tree it rebuilds holds
    /// nothing replay did not put there), so it never reads one back; live projection
    /// reads an account from the tree on its first touch in a chunk.
    accounts_in_memory: bool,
    accounts: FastMap<AccountId, AccountView>,
    /// The accounts changed since the pieces were last taken (replay only: live
    /// projection writes every account it read).
    touched: Vec<AccountId>,
    pieces: Pieces,
}

impl ChunkWriter {
    pub(crate) fn new(tree: &sled::Tree) -> Self {
        ChunkWriter {
            tree: tree.clone(),
            accounts_in_memory: false,
            accounts: FastMap::default(),
            touched: Vec::new(),
            pieces: Pieces::default(),
        }
    }

    /// A writer for rebuilding an empty tree from the start of the log.
    pub(crate) fn for_replay(tree: &sled::Tree) -> Self {
        ChunkWriter { accounts_in_memory: true, ..ChunkWriter::new(tree) }
    }

    fn account(&mut self, id: AccountId) -> Result<Option<&mut AccountView>, ProjectionError> {
        if self.accounts_in_memory {
            let view = self.accounts.get_mut(&id);
            if view.is_some() {
                self.touched.push(id);
            }
            return Ok(view);
        }
        if !self.accounts.contains_key(&id) {
            let key = account_key(id);
            match self.tree.get(&key)? {
                Some(bytes) => {
                    let view: AccountView = decode(&key, &bytes)?;
                    self.accounts.insert(id, view);
                }
                None => return Ok(None),
            }
        }
        Ok(self.accounts.get_mut(&id))
    }

    pub(crate) fn apply(&mut self, recorded: &RecordedEvent) -> Result<(), ProjectionError> {
        let event = &recorded.event;
        let envelope = &event.envelope;
        let position = recorded.position;
        let occurred_at = envelope.occurred_at;
        match &event.payload {
            Payload::AccountOpened(e) => {
                self.pieces.rows.push((number_key(&e.number), e.account.0.as_bytes().to_vec()));
                self.pieces.rows.push((book_account_key(envelope.book, e.account).to_vec(), Vec::new()));
                self.touched.push(e.account);
                self.accounts.insert(
                    e.account,
                    AccountView {
                        id: e.account,
                        number: e.number.clone(),
                        name: e.name.clone(),
                        kind: e.kind,
                        partner: e.partner,
                        book: envelope.book,
                        currency: e.currency,
                        credit_limit: e.credit_limit.normalized(),
                        status: AccountStatus::Active,
                        tariff: None,
                        balance: Amount::ZERO,
                        opened_at: occurred_at,
                        first_occurred_at: None,
                        last_position: position,
                    },
                );
            }
            Payload::AccountStatusChanged(e) => {
                if let Some(view) = self.account(e.account)? {
                    view.status = e.to;
                }
            }
            Payload::CreditLimitChanged(e) => {
                if let Some(view) = self.account(e.account)? {
                    view.credit_limit = e.to.normalized();
                }
            }
            Payload::TariffAssigned(e) => {
                if let Some(view) = self.account(e.account)? {
                    view.tariff = e.tariff;
                }
            }
            Payload::CallCharged(_) => {
                let row = CdrRow::from_recorded(recorded).expect("a CallCharged event").normalized();
                let hour = row.cdr.start.micros().div_euclid(HOUR_MICROS);
                if let Some(partner) = row.partner {
                    self.pieces.cdrs.entry((partner, hour)).or_default().push(CdrEntry(row.clone()));
                }
                self.pieces.cdrs.entry((row.account, hour)).or_default().push(CdrEntry(row));
            }
            _ => {}
        }
        let mut per_account: Vec<(AccountId, Vec<(Category, Amount)>)> =
            event.payload.accounts().into_iter().map(|a| (a, Vec::new())).collect();
        let occurred = occurred_at.micros();
        let hour = occurred.div_euclid(HOUR_MICROS);
        for posting in event.payload.postings() {
            // As recorded the amount keeps the places it was sent with; the models hold
            // its value only (see `MODELS_FORMAT`).
            let amount = posting.amount.normalized();
            let Some(view) = self.account(posting.account)? else { continue };
            view.balance = (view.balance + posting.category.balance_effect(amount)).normalized();
            view.first_occurred_at = Some(view.first_occurred_at.map_or(occurred_at, |t| t.min(occurred_at)));
            let piece = self.pieces.hours.entry((posting.account, hour)).or_default();
            piece.sums.add(posting.category, amount);
            piece.postings.push(PostingEntry { occurred_at: occurred, position, category: posting.category, amount });
            match per_account.iter_mut().find(|(a, _)| *a == posting.account) {
                Some((_, list)) => list.push((posting.category, amount)),
                None => per_account.push((posting.account, vec![(posting.category, amount)])),
            }
        }
        let kind = match &event.payload {
            Payload::AlertRaised(a) => format!("{}:{}", event.payload.type_name(), alert_kind(&a.alert)),
            other => other.type_name().to_string(),
        };
        for (account, postings) in per_account {
            if let Some(view) = self.account(account)? {
                view.last_position = position;
            }
            let row = EventRow {
                event_id: envelope.event_id,
                book: envelope.book,
                version: envelope.version,
                kind: kind.clone(),
                occurred_at,
                recorded_at: envelope.recorded_at,
                hash: envelope.hash,
                postings,
            };
            self.pieces.events.entry(account).or_default().push((position, row));
        }
        Ok(())
    }

    /// Takes out what was applied since the last take (replay), leaving the accounts.
    pub(crate) fn take_pieces(&mut self) -> Pieces {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        let mut pieces = std::mem::take(&mut self.pieces);
        pieces.accounts = touched.iter().filter_map(|id| self.accounts.get(id)).cloned().collect();
        pieces
    }

    /// Everything the chunk changed together with the checkpoint, as one batch to apply
    /// atomically.
    pub(crate) fn into_batch(self, checkpoint: u64) -> Result<sled::Batch, ProjectionError> {
        let mut pieces = self.pieces;
        pieces.accounts = self.accounts.into_values().collect();
        let mut batch = sled::Batch::default();
        for (key, value) in pieces.into_writes(&self.tree, checkpoint)? {
            batch.insert(key, value);
        }
        batch.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
        batch.insert(FORMAT_KEY, &MODELS_FORMAT.to_be_bytes());
        Ok(batch)
    }
}

fn alert_kind(alert: &Alert) -> &'static str {
    alert.kind()
}

pub(crate) fn read_checkpoint(tree: &sled::Tree) -> Result<u64, ProjectionError> {
    Ok(tree.get(CHECKPOINT_KEY)?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))).unwrap_or(0))
}

/// The layout version `tree` was written in: none for a tree never written to, and for
/// trees of the first layout, which had no version key.
pub(crate) fn read_format(tree: &sled::Tree) -> Result<Option<u32>, ProjectionError> {
    Ok(tree.get(FORMAT_KEY)?.map(|v| u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]))))
}
