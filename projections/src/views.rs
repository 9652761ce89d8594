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
//! | `E` | account, chunk | the events of that chunk concerning the account ([`EventRow`]) |
//! | `D` | book, CDR id | [`CdrRow`] (CDR ids are unique within a book, not across books) |
//! | `X` | account, hour, chunk | the account's CDRs that started in that hour, in that chunk: a customer's calls, and for a partner its customers' calls it paid wholesale |
//! | `K` | book, account | — (the accounts of a book, for listings by partner) |
//!
//! A chunk is named by its last position. Per-event lists are written once per chunk as
//! one value ("pieces"), never rewritten: sled's cost is per insert, so one key per
//! posting made replay insert-bound. Readers merge the pieces of an hour.
//!
//! Bucket sums exist at four sizes (an hour, a day, 32 days, 1024 days), so the sum of
//! any period costs a few dozen reads whatever the account's history; only the partial
//! hours at a period's two ends read single postings.

use std::collections::HashMap;

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
pub(crate) const PREFIX_CDR: u8 = b'D';
pub(crate) const PREFIX_ACCOUNT_CDR: u8 = b'X';
pub(crate) const PREFIX_BOOK_ACCOUNT: u8 = b'K';

/// Bucket sizes in microseconds, finest first: an hour, a day, 32 days, 1024 days.
pub(crate) const BUCKET_MICROS: [i64; 4] = [3_600_000_000, 86_400_000_000, 32 * 86_400_000_000, 1024 * 86_400_000_000];

/// Per-category sums, in [`Category::ALL`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums(pub [Amount; 6]);

impl Sums {
    pub fn add(&mut self, category: Category, amount: Amount) {
        self.0[category_index(category)] += amount;
    }

    pub fn add_all(&mut self, other: &Sums) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine += *theirs;
        }
    }

    pub fn sub_all(&mut self, other: &Sums) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine -= *theirs;
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
    pub fn available(&self) -> Amount {
        self.balance + self.credit_limit
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

/// One CDR in a piece: when it started, the event that charged it, where it is stored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct CdrEntry {
    pub start: i64,
    pub position: u64,
    pub book: BookId,
    pub id: String,
}

pub(crate) fn book_account_key(book: BookId, account: AccountId) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = PREFIX_BOOK_ACCOUNT;
    key[1..17].copy_from_slice(book.0.as_bytes());
    key[17..].copy_from_slice(account.0.as_bytes());
    key
}

pub(crate) fn cdr_key(book: BookId, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(17 + id.len());
    key.push(PREFIX_CDR);
    key.extend_from_slice(book.0.as_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encoding to a Vec cannot fail")
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, ProjectionError> {
    postcard::from_bytes(bytes)
        .map_err(|e| ProjectionError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// Applies a chunk of events to the models in one atomic batch with the checkpoint.
/// Values changed several times within the chunk are read once and written once.
pub(crate) struct ChunkWriter<'a> {
    tree: &'a sled::Tree,
    accounts: HashMap<AccountId, AccountView>,
    buckets: HashMap<[u8; 26], Sums>,
    postings: HashMap<(AccountId, i64), Vec<PostingEntry>>,
    cdrs: HashMap<(AccountId, i64), Vec<CdrEntry>>,
    events: HashMap<AccountId, Vec<(u64, EventRow)>>,
    batch: sled::Batch,
}

impl<'a> ChunkWriter<'a> {
    pub(crate) fn new(tree: &'a sled::Tree) -> Self {
        ChunkWriter {
            tree,
            accounts: HashMap::new(),
            buckets: HashMap::new(),
            postings: HashMap::new(),
            cdrs: HashMap::new(),
            events: HashMap::new(),
            batch: sled::Batch::default(),
        }
    }

    fn account(&mut self, id: AccountId) -> Result<Option<&mut AccountView>, ProjectionError> {
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

    fn add_to_bucket(&mut self, key: [u8; 26], category: Category, amount: Amount) -> Result<(), ProjectionError> {
        let sums = match self.buckets.get_mut(&key) {
            Some(sums) => sums,
            None => {
                let stored = match self.tree.get(key)? {
                    Some(bytes) => decode(&key, &bytes)?,
                    None => Sums::default(),
                };
                self.buckets.entry(key).or_insert(stored)
            }
        };
        sums.add(category, amount);
        Ok(())
    }

    pub(crate) fn apply(&mut self, recorded: &RecordedEvent) -> Result<(), ProjectionError> {
        let event = &recorded.event;
        let envelope = &event.envelope;
        let position = recorded.position;
        let occurred_at = envelope.occurred_at;
        match &event.payload {
            Payload::AccountOpened(e) => {
                self.batch.insert(number_key(&e.number), e.account.0.as_bytes().as_slice());
                self.batch.insert(book_account_key(envelope.book, e.account).as_slice(), &[]);
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
                        credit_limit: e.credit_limit,
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
                    view.credit_limit = e.to;
                }
            }
            Payload::TariffAssigned(e) => {
                if let Some(view) = self.account(e.account)? {
                    view.tariff = e.tariff;
                }
            }
            Payload::CallCharged(e) => {
                let row = CdrRow {
                    account: e.account,
                    position,
                    event_id: envelope.event_id,
                    cdr: e.cdr.clone(),
                    customer_cost: e.customer_cost,
                    partner: e.partner,
                    partner_cost: e.partner_cost,
                };
                self.batch.insert(cdr_key(envelope.book, &e.cdr.id), encode(&row));
                let start = e.cdr.start.micros();
                let entry = CdrEntry { start, position, book: envelope.book, id: e.cdr.id.clone() };
                let hour = start.div_euclid(HOUR_MICROS);
                if let Some(partner) = e.partner {
                    self.cdrs.entry((partner, hour)).or_default().push(entry.clone());
                }
                self.cdrs.entry((e.account, hour)).or_default().push(entry);
            }
            _ => {}
        }
        let mut per_account: Vec<(AccountId, Vec<(Category, Amount)>)> =
            event.payload.accounts().into_iter().map(|a| (a, Vec::new())).collect();
        for posting in event.payload.postings() {
            let Some(view) = self.account(posting.account)? else { continue };
            view.balance += posting.category.balance_effect(posting.amount);
            view.first_occurred_at = Some(view.first_occurred_at.map_or(occurred_at, |t| t.min(occurred_at)));
            for (level, size) in BUCKET_MICROS.iter().enumerate() {
                let bucket = occurred_at.micros().div_euclid(*size);
                self.add_to_bucket(bucket_key(level, posting.account, bucket), posting.category, posting.amount)?;
            }
            let occurred = occurred_at.micros();
            self.postings.entry((posting.account, occurred.div_euclid(HOUR_MICROS))).or_default().push(PostingEntry {
                occurred_at: occurred,
                position,
                category: posting.category,
                amount: posting.amount,
            });
            match per_account.iter_mut().find(|(a, _)| *a == posting.account) {
                Some((_, list)) => list.push((posting.category, posting.amount)),
                None => per_account.push((posting.account, vec![(posting.category, posting.amount)])),
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
            self.events.entry(account).or_default().push((position, row));
        }
        Ok(())
    }

    /// Writes everything the chunk changed together with the checkpoint, atomically.
    pub(crate) fn commit(mut self, checkpoint: u64) -> Result<(), ProjectionError> {
        for (id, view) in &self.accounts {
            self.batch.insert(account_key(*id), encode(view));
        }
        for (key, sums) in &self.buckets {
            self.batch.insert(key.as_slice(), encode(sums));
        }
        for ((account, hour), entries) in &self.postings {
            self.batch.insert(hour_piece_key(PREFIX_POSTING, *account, *hour, checkpoint).as_slice(), encode(entries));
        }
        for ((account, hour), entries) in &self.cdrs {
            self.batch
                .insert(hour_piece_key(PREFIX_ACCOUNT_CDR, *account, *hour, checkpoint).as_slice(), encode(entries));
        }
        for (account, rows) in &self.events {
            self.batch.insert(event_piece_key(*account, checkpoint).as_slice(), encode(rows));
        }
        self.batch.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
        self.tree.apply_batch(self.batch)?;
        Ok(())
    }
}

fn alert_kind(alert: &Alert) -> &'static str {
    alert.kind()
}

pub(crate) fn read_checkpoint(tree: &sled::Tree) -> Result<u64, ProjectionError> {
    Ok(tree.get(CHECKPOINT_KEY)?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))).unwrap_or(0))
}
