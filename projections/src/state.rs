//! The read models' state, held in memory as persistent (structure-sharing) maps: the
//! projector applies a chunk to a cheap clone of the current state and publishes the
//! result whole, so a reader holds one immutable state for as long as its query runs and
//! sees every event up to one position and none after it. An event's entries go first
//! to its accounts' recent lists ([`crate::recent`]), which grow in place and which a
//! reader reads up to its state's position; a full list is folded into the maps.
//!
//! What is kept is what queries need and the log cannot answer cheaply: the account
//! directory with balances, per-bucket sums of postings (statements) and the postings
//! themselves (statement lines), and indexes into the log — each account's events by
//! position (audit trail), its calls by start time (CDR pages), CDR ids to positions.
//! Event rows and CDR rows are not copied: a page reads its events back from the log.
//!
//! Memory, per account: its view (~200 bytes), map nodes and recent lists (up to
//! ~10 KB for a busy account, none for one loaded until its next event); per event: 8 bytes of
//! trail per account it concerns, ~34 bytes per posting, ~17 bytes per call per account
//! that lists it (the customer, and its partner), ~20 bytes per CDR id.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use domain::event::{Alert, Category, Posting};
use domain::rating::RatedCdr;
use domain::{
    AccountId, AccountKind, AccountStatus, Amount, BookId, Currency, EventId, Payload, RecordedEvent, TariffId,
    Timestamp,
};
use imbl::{OrdMap, OrdSet, Vector};
use serde::{Deserialize, Serialize};

use crate::recent::{RECENT_ENTRIES_FIRST, RECENT_ENTRIES_MAX, Recent};

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
    /// What people read about the event besides its amounts: a payment's method and
    /// reference, a charge's description, an adjustment's or a reversal's reason, a fund
    /// move's note.
    #[serde(default)]
    pub remarks: Vec<String>,
    /// The other account of a fund move.
    #[serde(default)]
    pub counterparty: Option<AccountId>,
}

impl EventRow {
    /// `recorded` as `account`'s trail shows it, amounts normalised.
    pub(crate) fn of(recorded: &RecordedEvent, account: AccountId) -> EventRow {
        let event = &recorded.event;
        let envelope = &event.envelope;
        let kind = match &event.payload {
            Payload::AlertRaised(a) => format!("{}:{}", event.payload.type_name(), alert_kind(&a.alert)),
            other => other.type_name().to_string(),
        };
        let mut postings = Vec::new();
        event.payload.for_each_posting(|p| {
            if p.account == account {
                postings.push((p.category, p.amount.normalized()));
            }
        });
        let texts = |texts: &[&Option<String>]| texts.iter().filter_map(|t| t.as_ref()).cloned().collect();
        let (remarks, counterparty) = match &event.payload {
            Payload::PaymentReceived(p) => (texts(&[&p.method, &p.reference]), None),
            Payload::ChargePosted(c) => (texts(&[&c.description]), None),
            Payload::AdjustmentPosted(a) => (texts(&[&a.reason]), None),
            Payload::EntryReversed(r) => (texts(&[&r.reason]), None),
            Payload::FundsMoved(m) => (texts(&[&m.note]), Some(if m.from == account { m.to } else { m.from })),
            _ => (Vec::new(), None),
        };
        EventRow {
            event_id: envelope.event_id,
            book: envelope.book,
            version: envelope.version,
            kind,
            occurred_at: envelope.occurred_at,
            recorded_at: envelope.recorded_at,
            hash: envelope.hash,
            postings,
            remarks,
            counterparty,
        }
    }
}

fn alert_kind(alert: &Alert) -> &'static str {
    alert.kind()
}

/// A CDR as the CDR store shows it, with its costs and the event that charged it.
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

/// Month-sized buckets of business time (32 days, aligned to the epoch): an account keeps
/// its sums per bucket, so a statement adds whole buckets and reads single postings only
/// at its two ends.
pub(crate) const BUCKET_MICROS: i64 = 32 * 86_400_000_000;

pub(crate) fn bucket_of(micros: i64) -> i64 {
    micros.div_euclid(BUCKET_MICROS)
}

/// One posting of an account, in 32 bytes: the category rides in the top byte of the
/// position (a log of 2^56 events is not a concern), which took 8 bytes of padding of
/// its own, a sixth of the models' memory over all postings.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PostingFields", into = "PostingFields")]
pub(crate) struct PostingEntry {
    pub occurred_at: i64,
    position_and_category: u64,
    pub amount: Amount,
}

// What the models cost per event rests on these; a field added here should be a choice.
const _: () = assert!(std::mem::size_of::<PostingEntry>() == 32);
const _: () = assert!(std::mem::size_of::<CdrRef>() == 16);

const POSITION_BITS: u32 = 56;
const POSITION_MASK: u64 = (1 << POSITION_BITS) - 1;

impl PostingEntry {
    pub(crate) fn new(occurred_at: i64, position: u64, category: Category, amount: Amount) -> Self {
        Self::checked(occurred_at, position, category, amount).expect("a log position past 2^56")
    }

    /// `None` for a position that does not fit (from a damaged snapshot).
    pub(crate) fn checked(occurred_at: i64, position: u64, category: Category, amount: Amount) -> Option<Self> {
        let category = (category_index(category) as u64) << POSITION_BITS;
        (position <= POSITION_MASK).then_some(PostingEntry {
            occurred_at,
            position_and_category: position | category,
            amount,
        })
    }

    pub(crate) fn position(&self) -> u64 {
        self.position_and_category & POSITION_MASK
    }

    pub(crate) fn category(&self) -> Category {
        Category::ALL[self.category_index()]
    }

    /// The category's index in [`Category::ALL`] and in [`Sums`].
    pub(crate) fn category_index(&self) -> usize {
        (self.position_and_category >> POSITION_BITS) as usize
    }

    /// The time and the packed position and category, for [`crate::recent`]'s words.
    pub(crate) fn to_parts(self) -> (i64, u64) {
        (self.occurred_at, self.position_and_category)
    }

    pub(crate) fn from_parts(occurred_at: i64, position_and_category: u64, amount: Amount) -> Self {
        PostingEntry { occurred_at, position_and_category, amount }
    }
}

impl std::fmt::Debug for PostingEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        PostingFields::from(*self).fmt(f)
    }
}

/// A posting as snapshots of format 5 and verify's comparisons encode it: its fields
/// apart, in this order.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct PostingFields {
    occurred_at: i64,
    position: u64,
    category: Category,
    amount: Amount,
}

impl TryFrom<PostingFields> for PostingEntry {
    type Error = &'static str;
    fn try_from(p: PostingFields) -> Result<Self, Self::Error> {
        PostingEntry::checked(p.occurred_at, p.position, p.category, p.amount).ok_or("a log position past 2^56")
    }
}

impl From<PostingEntry> for PostingFields {
    fn from(p: PostingEntry) -> Self {
        PostingFields { occurred_at: p.occurred_at, position: p.position(), category: p.category(), amount: p.amount }
    }
}

/// A call in an account's list, in 16 bytes: where its event is, and what the list
/// filters on without reading it, packed beside the position (a log of 2^47 events is
/// not a concern).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CallFields", into = "CallFields")]
pub(crate) struct CdrRef {
    pub start: i64,
    /// The position (low 47 bits), whether the call was answered (bit 47) and its
    /// hang-up cause (the top 16 bits).
    packed: u64,
}

const CALL_POSITION_BITS: u32 = 47;
const CALL_POSITION_MASK: u64 = (1 << CALL_POSITION_BITS) - 1;

impl CdrRef {
    pub(crate) fn new(start: i64, position: u64, answered: bool, hangup_cause: u16) -> Self {
        Self::checked(start, position, answered, hangup_cause).expect("a log position past 2^47")
    }

    /// `None` for a position that does not fit (from a damaged snapshot).
    pub(crate) fn checked(start: i64, position: u64, answered: bool, hangup_cause: u16) -> Option<Self> {
        let packed = position | u64::from(answered) << CALL_POSITION_BITS | u64::from(hangup_cause) << 48;
        (position <= CALL_POSITION_MASK).then_some(CdrRef { start, packed })
    }

    pub(crate) fn position(&self) -> u64 {
        self.packed & CALL_POSITION_MASK
    }

    pub(crate) fn answered(&self) -> bool {
        self.packed >> CALL_POSITION_BITS & 1 == 1
    }

    pub(crate) fn hangup_cause(&self) -> u16 {
        (self.packed >> 48) as u16
    }

    /// The start and the packed fields, for [`crate::recent`]'s words.
    pub(crate) fn to_parts(self) -> (i64, u64) {
        (self.start, self.packed)
    }

    pub(crate) fn from_parts(start: i64, packed: u64) -> Self {
        CdrRef { start, packed }
    }
}

impl std::fmt::Debug for CdrRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        CallFields::from(*self).fmt(f)
    }
}

/// A call as snapshots of format 5 and verify's comparisons encode it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct CallFields {
    start: i64,
    position: u64,
    answered: bool,
    hangup_cause: u16,
}

impl TryFrom<CallFields> for CdrRef {
    type Error = &'static str;
    fn try_from(c: CallFields) -> Result<Self, Self::Error> {
        CdrRef::checked(c.start, c.position, c.answered, c.hangup_cause).ok_or("a log position past 2^47")
    }
}

impl From<CdrRef> for CallFields {
    fn from(c: CdrRef) -> Self {
        CallFields { start: c.start, position: c.position(), answered: c.answered(), hangup_cause: c.hangup_cause() }
    }
}

/// An entry of a [`Chunked`] list: its place in the order, and what a chunk sums of it.
pub(crate) trait Entry: Clone {
    type Summary: Clone + Default + Eq + std::fmt::Debug;
    fn key(&self) -> (i64, u64);
    fn add_to(&self, summary: &mut Self::Summary);
}

impl Entry for PostingEntry {
    type Summary = Sums;
    fn key(&self) -> (i64, u64) {
        (self.occurred_at, self.position())
    }
    fn add_to(&self, summary: &mut Sums) {
        summary.add(self.category(), self.amount);
    }
}

impl Entry for CdrRef {
    type Summary = ();
    fn key(&self) -> (i64, u64) {
        (self.start, self.position())
    }
    fn add_to(&self, _: &mut ()) {}
}

/// Entries in a chunk at most: small enough that a chunk copied for a new state is
/// cheap and a partial chunk at a statement's end is a short scan, large enough that a
/// chunk's map node and summary cost little per entry.
pub(crate) const CHUNK_ENTRIES_MAX: usize = 64;

/// A sorted run of entries and their summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk<T: Entry> {
    pub summary: T::Summary,
    pub entries: Vec<T>,
}

impl<T: Entry> Chunk<T> {
    pub(crate) fn of(entries: Vec<T>) -> Self {
        let mut summary = T::Summary::default();
        for entry in &entries {
            entry.add_to(&mut summary);
        }
        Chunk { summary, entries }
    }

    fn last_key(&self) -> (i64, u64) {
        self.entries.last().expect("a chunk is never empty").key()
    }
}

/// Entries sorted by key, in chunks keyed by their last entry. Entries mostly arrive in
/// key order (business time moves forward), so an insert usually lands at the end of
/// the last chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunked<T: Entry> {
    pub chunks: OrdMap<(i64, u64), Arc<Chunk<T>>>,
}

impl<T: Entry> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: OrdMap::new() }
    }
}

impl<T: Entry> Chunked<T> {
    fn insert(&mut self, entry: T) {
        let key = entry.key();
        // The first chunk that ends at or after the entry holds its place; past the end,
        // the last chunk grows. Past the end is the common case: checked first, without
        // walking a range.
        let holder = match self.chunks.get_max() {
            Some((max, _)) if *max < key => Some(*max),
            Some(_) => self.chunks.range(key..).next().map(|(last, _)| *last),
            None => None,
        };
        let Some(holder) = holder else {
            self.chunks.insert(key, Arc::new(Chunk::of(vec![entry])));
            return;
        };
        let moves = key > holder;
        let mut chunk = if moves {
            self.chunks.remove(&holder).expect("the chunk was just found")
        } else {
            match self.chunks.get_mut(&holder) {
                Some(chunk) if chunk.entries.len() < CHUNK_ENTRIES_MAX => {
                    let chunk = Arc::make_mut(chunk);
                    let at = chunk.entries.partition_point(|e| e.key() <= key);
                    entry.add_to(&mut chunk.summary);
                    chunk.entries.insert(at, entry);
                    return;
                }
                _ => self.chunks.remove(&holder).expect("the chunk was just found"),
            }
        };
        let inner = Arc::make_mut(&mut chunk);
        let at = inner.entries.partition_point(|e| e.key() <= key);
        entry.add_to(&mut inner.summary);
        inner.entries.insert(at, entry);
        if inner.entries.len() > CHUNK_ENTRIES_MAX {
            // Appended past the end (entries in order, the common case): the chunk stays
            // full and the new one starts with the entry, so in-order lists are dense.
            // Otherwise halves, with room for more inserts in either.
            let at = if moves { CHUNK_ENTRIES_MAX } else { inner.entries.len() / 2 };
            let upper = Chunk::of(inner.entries.split_off(at));
            let mut lower = std::mem::take(&mut inner.entries);
            lower.shrink_to_fit();
            *inner = Chunk::of(lower);
            self.chunks.insert(upper.last_key(), Arc::new(upper));
        }
        self.chunks.insert(chunk.last_key(), chunk);
    }

    /// Inserts `entries`, in their order: what inserting them one by one leaves, and
    /// in bulk when they come after every entry here, one after another (the common
    /// case: business time moves forward).
    pub(crate) fn extend(&mut self, entries: &[T]) {
        let after_all = |max: &(i64, u64)| entries.first().is_none_or(|first| first.key() > *max);
        let in_order = entries.windows(2).all(|pair| pair[0].key() < pair[1].key())
            && self.chunks.get_max().is_none_or(|(max, _)| after_all(max));
        if !in_order {
            for entry in entries {
                self.insert(entry.clone());
            }
            return;
        }
        let mut rest = entries;
        let last = self.chunks.get_max().map(|(key, chunk)| (*key, chunk.entries.len()));
        if let Some((key, len)) = last.filter(|(_, len)| *len < CHUNK_ENTRIES_MAX) {
            let mut chunk = self.chunks.remove(&key).expect("the last chunk is there");
            let inner = Arc::make_mut(&mut chunk);
            let (filling, after) = rest.split_at(rest.len().min(CHUNK_ENTRIES_MAX - len));
            for entry in filling {
                entry.add_to(&mut inner.summary);
            }
            inner.entries.extend_from_slice(filling);
            self.chunks.insert(inner.last_key(), chunk);
            rest = after;
        }
        for piece in rest.chunks(CHUNK_ENTRIES_MAX) {
            let chunk = Chunk::of(piece.to_vec());
            self.chunks.insert(chunk.last_key(), Arc::new(chunk));
        }
    }

    /// The chunks that may hold entries with keys in `[from, to)` by time, in order.
    pub(crate) fn chunks_between(&self, from: i64, to: i64) -> impl Iterator<Item = &Chunk<T>> {
        self.chunks.range((from, 0)..).map(|(_, chunk)| &**chunk).take_while(move |chunk| chunk.entries[0].key().0 < to)
    }
}

/// An account's sums per bucket of business time, sorted by bucket: a dozen a year, so
/// a plain list, shared between states and copied whole by the fold that changes it.
/// (In an `imbl` map, a change copied a node allocated for 64 sums of 104 bytes: a
/// tenth of applying an event.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Buckets(Arc<Vec<(i64, Sums)>>);

impl Buckets {
    /// The buckets of `list`, if sorted by bucket with none twice.
    pub(crate) fn from_sorted(list: Vec<(i64, Sums)>) -> Option<Self> {
        list.windows(2).all(|pair| pair[0].0 < pair[1].0).then(|| Buckets(Arc::new(list)))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(i64, Sums)> {
        self.0.iter()
    }

    /// The buckets from `from` up to but not including `to`.
    fn range(&self, from: i64, to: i64) -> &[(i64, Sums)] {
        let start = self.0.partition_point(|(bucket, _)| *bucket < from);
        let end = self.0.partition_point(|(bucket, _)| *bucket < to).max(start);
        &self.0[start..end]
    }

    /// Adds postings to their buckets. A run of postings in one bucket (most of a fold's,
    /// all of a sorted list's) is summed apart and added once: sums are held
    /// normalised, so the grouping does not show.
    pub(crate) fn add_postings<'a>(&mut self, postings: impl IntoIterator<Item = &'a PostingEntry>) {
        let mut run: Option<(i64, Sums)> = None;
        for posting in postings {
            let bucket = bucket_of(posting.occurred_at);
            match &mut run {
                Some((at, sums)) if *at == bucket => sums.add(posting.category(), posting.amount),
                _ => {
                    if let Some((at, sums)) = run.take() {
                        self.add(at, &sums);
                    }
                    let mut sums = Sums::default();
                    sums.add(posting.category(), posting.amount);
                    run = Some((bucket, sums));
                }
            }
        }
        if let Some((at, sums)) = run {
            self.add(at, &sums);
        }
    }

    fn add(&mut self, bucket: i64, sums: &Sums) {
        let list = Arc::make_mut(&mut self.0);
        match list.binary_search_by_key(&bucket, |(at, _)| *at) {
            Ok(at) => list[at].1.add_all(sums),
            Err(at) => list.insert(at, (bucket, *sums)),
        }
    }
}

/// Everything the models keep of one account: what was folded into its persistent
/// maps, and its recent entries since (see [`crate::recent`]). Readers take the
/// account as of their state's position with [`AccountModel::at`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccountModel {
    /// The account as of the last fold.
    pub view: AccountView,
    /// Postings by business time, each chunk with its sums.
    pub postings: Chunked<PostingEntry>,
    /// Sums of postings per bucket of business time ([`BUCKET_MICROS`]).
    pub buckets: Buckets,
    /// Calls by start time: a customer's, and a partner's customers' calls it paid
    /// wholesale.
    pub cdrs: Chunked<CdrRef>,
    /// The positions of the events that concern the account, in log order.
    pub trail: Vector<u64>,
    /// Entries since the last fold, shared with every state that holds this model
    /// (the model is shared whole, so its lists are in it: one block fewer to reach).
    pub recent: Recent,
}

/// Adds without normalising: a query's running sums are shown in canonical form at the
/// end, so the rescale per addition that stored sums pay is not needed.
fn add_raw(sums: &mut Sums, other: &Sums) {
    for (mine, theirs) in sums.0.iter_mut().zip(other.0.iter()) {
        *mine += *theirs;
    }
}

impl AccountModel {
    /// A new account, with room for its first recent entries. (An account loaded from
    /// a snapshot or built by a replay has lists of no room: they take no memory until
    /// its next event folds it.)
    pub(crate) fn new(view: AccountView) -> Self {
        AccountModel {
            view,
            postings: Chunked::default(),
            buckets: Buckets::default(),
            cdrs: Chunked::default(),
            trail: Vector::new(),
            recent: Recent::with_capacity(RECENT_ENTRIES_FIRST),
        }
    }

    /// The account as of `up_to`: its view with the recent entries at or before it.
    pub(crate) fn view_at(&self, up_to: u64) -> AccountView {
        let mut view = self.view.clone();
        self.recent.update_view(&mut view, up_to);
        view
    }

    /// The account as of `up_to`, with the recent entries at or before it folded in:
    /// itself when there are none. Its view and maps are the account at `up_to`; its
    /// recent lists may hold later entries, so a caller reads the former only.
    pub(crate) fn at(&self, up_to: u64) -> Cow<'_, AccountModel> {
        if self.recent.holds_any(up_to) { Cow::Owned(self.folded(up_to, 0)) } else { Cow::Borrowed(self) }
    }

    /// A copy with its recent entries at or before `up_to` folded into its maps, in
    /// bulk, and new recent lists of `capacity` entries. The maps share every node the
    /// fold does not change.
    pub(crate) fn folded(&self, up_to: u64, capacity: usize) -> AccountModel {
        let mut next = AccountModel {
            view: self.view_at(up_to),
            postings: self.postings.clone(),
            buckets: self.buckets.clone(),
            cdrs: self.cdrs.clone(),
            trail: self.trail.clone(),
            recent: Recent::with_capacity(capacity),
        };
        let postings: Vec<PostingEntry> = self.recent.postings(up_to).map(|p| p.entry).collect();
        next.buckets.add_postings(&postings);
        next.postings.extend(&postings);
        let calls: Vec<CdrRef> = self.recent.calls(up_to).collect();
        next.cdrs.extend(&calls);
        next.trail.extend(self.recent.trail(up_to));
        next
    }

    /// A copy whose recent lists are longer, `capacity` entries, with the same entries:
    /// its maps are this one's, shared.
    pub(crate) fn regrown(&self, capacity: usize) -> AccountModel {
        AccountModel {
            view: self.view.clone(),
            postings: self.postings.clone(),
            buckets: self.buckets.clone(),
            cdrs: self.cdrs.clone(),
            trail: self.trail.clone(),
            recent: self.recent.copied(capacity),
        }
    }

    /// Adds a posting to the maps (a fold does it in bulk); the view's balance and
    /// history are the caller's.
    fn add_posting_to_maps(&mut self, entry: PostingEntry) {
        self.buckets.add_postings([&entry]);
        self.postings.insert(entry);
    }

    /// The sums of the postings with `occurred_at` in `[from, to)`, from chunks only.
    fn sum_chunks(&self, from: i64, to: i64, sums: &mut Sums) {
        if from >= to {
            return;
        }
        for chunk in self.postings.chunks_between(from, to) {
            let (first, last) = (chunk.entries[0].occurred_at, chunk.last_key().0);
            if first >= from && last < to {
                add_raw(sums, &chunk.summary);
            } else {
                for p in chunk.entries.iter().filter(|p| p.occurred_at >= from && p.occurred_at < to) {
                    sums.0[p.category_index()] += p.amount;
                }
            }
        }
    }

    /// The sums of the postings with `occurred_at` in `[from, to)`: whole buckets from
    /// their sums, the partial buckets at the ends from the chunks.
    pub(crate) fn sum_range(&self, from: i64, to: i64) -> Sums {
        let mut sums = Sums::default();
        if from >= to {
            return sums;
        }
        let first_whole = bucket_of(from) + i64::from(from.rem_euclid(BUCKET_MICROS) != 0);
        let end_whole = bucket_of(to);
        if first_whole >= end_whole {
            self.sum_chunks(from, to, &mut sums);
        } else {
            self.sum_chunks(from, first_whole * BUCKET_MICROS, &mut sums);
            for (_, bucket) in self.buckets.range(first_whole, end_whole) {
                add_raw(&mut sums, bucket);
            }
            self.sum_chunks(end_whole * BUCKET_MICROS, to, &mut sums);
        }
        sums
    }

    /// The index in the trail of the first event after `position`.
    pub(crate) fn trail_after(&self, position: u64) -> usize {
        let (mut low, mut high) = (0, self.trail.len());
        while low < high {
            let middle = (low + high) / 2;
            if self.trail[middle] <= position { low = middle + 1 } else { high = middle }
        }
        low
    }
}

/// The whole state at one position. Cloning it is cheap (the maps share their nodes);
/// changing the clone copies only the nodes on the changed paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Model {
    /// The last position applied.
    pub position: u64,
    pub accounts: OrdMap<AccountId, Arc<AccountModel>>,
    pub numbers: OrdMap<String, AccountId>,
    pub books: OrdSet<(BookId, AccountId)>,
}

impl Model {
    pub(crate) fn insert_account(&mut self, account: AccountModel) {
        self.numbers.insert(account.view.number.clone(), account.view.id);
        self.books.insert((account.view.book, account.view.id));
        self.accounts.insert(account.view.id, Arc::new(account));
    }

    /// Applies one event (the next in log order). The id of a charged CDR goes to
    /// `charged`, for [`CdrIdIndex::insert_all`], which is shared by every state.
    pub(crate) fn apply(&mut self, recorded: &RecordedEvent, charged: &mut Vec<(u64, u64)>) {
        let effect = EventEffect::of(recorded);
        if let Some(view) = effect.opened() {
            self.insert_account(AccountModel::new(view));
        }
        if let Some((hash, _)) = effect.charged_cdr() {
            charged.push((hash, recorded.position));
        }
        let mut folded_account;
        for &id in &effect.concerned {
            let Some(mut account) = self.accounts.get(&id) else { continue };
            let (postings, calls) = effect.entries_for(id);
            // Most events only add entries: they go to the account's recent lists in
            // place. Lists too short for an account in use are copied into longer ones;
            // an event that changes the account's settings, or finds its lists full at
            // their longest, folds the account into a new model first.
            if effect.changes_view() || !account.recent.has_room(postings, calls) {
                let capacity = account.recent.capacity();
                let longer = (capacity * 2).clamp(RECENT_ENTRIES_FIRST, RECENT_ENTRIES_MAX);
                let regrown = (!effect.changes_view() && longer > capacity)
                    .then(|| account.regrown(longer))
                    .filter(|regrown| regrown.recent.has_room(postings, calls));
                let next = match regrown {
                    Some(regrown) => regrown,
                    None => {
                        let room = account.recent.has_room(postings, calls);
                        let mut folded = account.folded(self.position, if room { capacity } else { longer });
                        effect.change_view(&mut folded.view);
                        if !folded.recent.has_room(postings, calls) {
                            // More entries than a list holds: straight into the maps.
                            effect.apply_to(id, &mut folded);
                            self.accounts.insert(id, Arc::new(folded));
                            continue;
                        }
                        folded
                    }
                };
                folded_account = Arc::new(next);
                self.accounts.insert(id, folded_account.clone());
                account = &folded_account;
            }
            effect.apply_to(id, &mut account.recent.appender(&account.view));
        }
        self.position = recorded.position;
    }
}

/// Where an event's entries for one account go: a live account's recent lists
/// ([`crate::recent::Appender`]) or its maps, or a replay's builder (`crate::build`),
/// which keeps plain lists and sorts them once at the end. The target keeps the
/// account's balance and history up to date with the postings.
pub(crate) trait AccountTarget {
    fn add_call(&mut self, call: CdrRef);
    fn add_posting(&mut self, entry: PostingEntry);
    fn add_to_trail(&mut self, position: u64);
}

impl AccountView {
    /// The view after `entry` was posted to the account.
    pub(crate) fn note_posting(&mut self, entry: &PostingEntry) {
        self.balance = (self.balance + entry.category().balance_effect(entry.amount)).normalized();
        let occurred_at = Timestamp(entry.occurred_at);
        self.first_occurred_at = Some(self.first_occurred_at.map_or(occurred_at, |t| t.min(occurred_at)));
    }
}

/// Straight into the maps: for an event with more entries than the recent lists hold,
/// and for tests of the maps.
impl AccountTarget for AccountModel {
    fn add_call(&mut self, call: CdrRef) {
        self.cdrs.insert(call);
    }

    fn add_posting(&mut self, entry: PostingEntry) {
        self.view.note_posting(&entry);
        self.add_posting_to_maps(entry);
    }

    fn add_to_trail(&mut self, position: u64) {
        self.view.last_position = position;
        self.trail.push_back(position);
    }
}

/// What one event does to the models, worked out once: the accounts it concerns and
/// what each of them gets. Live states and replay's builders both apply it, so that the
/// two cannot disagree on what an event means.
pub(crate) struct EventEffect<'a> {
    recorded: &'a RecordedEvent,
    /// The accounts whose trail lists the event: those it names and those it posts to.
    pub concerned: Vec<AccountId>,
    postings: Vec<Posting>,
    call: Option<CdrRef>,
}

impl<'a> EventEffect<'a> {
    pub(crate) fn of(recorded: &'a RecordedEvent) -> Self {
        let payload = &recorded.event.payload;
        let call = match payload {
            Payload::CallCharged(e) => {
                Some(CdrRef::new(e.cdr.start.micros(), recorded.position, e.cdr.answered(), e.cdr.hangup_cause))
            }
            _ => None,
        };
        let mut concerned = payload.accounts();
        let mut postings = Vec::with_capacity(2);
        payload.for_each_posting(|posting| {
            if !concerned.contains(&posting.account) {
                concerned.push(posting.account);
            }
            postings.push(posting);
        });
        EventEffect { recorded, concerned, postings, call }
    }

    /// The account the event opens, as the directory first shows it.
    pub(crate) fn opened(&self) -> Option<AccountView> {
        let Payload::AccountOpened(e) = &self.recorded.event.payload else { return None };
        let envelope = &self.recorded.event.envelope;
        Some(AccountView {
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
            opened_at: envelope.occurred_at,
            first_occurred_at: None,
            last_position: self.recorded.position,
        })
    }

    /// The hash of the charged CDR's id (for the CDR id index), and the customer charged.
    pub(crate) fn charged_cdr(&self) -> Option<(u64, AccountId)> {
        match &self.recorded.event.payload {
            Payload::CallCharged(e) => Some((cdr_id_hash(&e.cdr.id), e.account)),
            _ => None,
        }
    }

    /// Whether the event changes an account's settings (not only its entries and
    /// balance).
    pub(crate) fn changes_view(&self) -> bool {
        matches!(
            self.recorded.event.payload,
            Payload::AccountStatusChanged(_) | Payload::CreditLimitChanged(_) | Payload::TariffAssigned(_)
        )
    }

    /// Changes the account's settings as the event says (nothing for most events).
    pub(crate) fn change_view(&self, view: &mut AccountView) {
        match &self.recorded.event.payload {
            Payload::AccountStatusChanged(e) => view.status = e.to,
            Payload::CreditLimitChanged(e) => view.credit_limit = e.to.normalized(),
            Payload::TariffAssigned(e) => view.tariff = e.tariff,
            _ => {}
        }
    }

    fn lists_call_of(&self, id: AccountId) -> bool {
        matches!(&self.recorded.event.payload, Payload::CallCharged(e) if id == e.account || Some(id) == e.partner)
    }

    /// How many postings and calls the event adds to `id`'s lists.
    pub(crate) fn entries_for(&self, id: AccountId) -> (usize, usize) {
        (self.postings.iter().filter(|p| p.account == id).count(), usize::from(self.lists_call_of(id)))
    }

    /// Adds the event's entries for `account`, one of those it concerns (its settings
    /// are [`EventEffect::change_view`]'s).
    pub(crate) fn apply_to(&self, id: AccountId, account: &mut impl AccountTarget) {
        let position = self.recorded.position;
        let occurred_at = self.recorded.event.envelope.occurred_at;
        if self.lists_call_of(id) {
            account.add_call(self.call.expect("a CallCharged event has its call"));
        }
        for posting in self.postings.iter().filter(|p| p.account == id) {
            // As recorded the amount keeps the places it was sent with; the models
            // hold its value only, so that they depend on the log's values alone.
            let amount = posting.amount.normalized();
            account.add_posting(PostingEntry::new(occurred_at.micros(), position, posting.category, amount));
        }
        account.add_to_trail(position);
    }
}

/// FxHash's mixing step: CDR ids are hashed into the index with it. It must stay the
/// same across versions (the index is saved in snapshots), which std's hasher does not
/// promise. A collision costs one more event read, never a wrong answer: a lookup
/// compares the ids of the events it reads.
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

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) fn cdr_id_hash(id: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(id.as_bytes());
    hasher.write_u64(id.len() as u64);
    hasher.finish()
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

pub(crate) const CDR_ID_SHARDS: usize = 64;

/// The shard of the CDR id index that holds `hash`: its top bits, so that shards in
/// order hold ascending hashes.
pub(crate) fn cdr_id_shard_of(hash: u64) -> usize {
    (hash >> 58) as usize % CDR_ID_SHARDS
}

/// One shard of the CDR id index: hash -> position, and for the rare hash that more
/// than one call shares (the same id in two books, or a collision), all its positions
/// apart, so that the common entry costs 16 bytes.
#[derive(Default)]
struct CdrIdShard {
    first: FastMap<u64, u64>,
    more: FastMap<u64, Vec<u64>>,
}

/// CDR id hash -> positions of the events that charged it. Unlike the rest of the
/// state it is not copied per version: entries are only ever added, each carries its
/// position, and a reader ignores those past the position of the state it holds. So a
/// chunk adds its ids in place, under a short lock of one shard of 64.
pub(crate) struct CdrIdIndex {
    shards: Vec<RwLock<CdrIdShard>>,
}

impl Default for CdrIdIndex {
    fn default() -> Self {
        CdrIdIndex { shards: (0..CDR_ID_SHARDS).map(|_| RwLock::default()).collect() }
    }
}

impl CdrIdIndex {
    fn shard(&self, hash: u64) -> &RwLock<CdrIdShard> {
        &self.shards[cdr_id_shard_of(hash)]
    }

    /// Adds `position` under `hash`; adding it again changes nothing (a chunk applied
    /// again after a failure).
    pub(crate) fn insert(&self, hash: u64, position: u64) {
        self.shard(hash).write().unwrap_or_else(PoisonError::into_inner).insert(hash, position);
    }

    /// [`CdrIdIndex::insert`] for many entries, one lock of each shard they fall in.
    pub(crate) fn insert_all(&self, entries: &mut [(u64, u64)]) {
        entries.sort_unstable_by_key(|(hash, _)| cdr_id_shard_of(*hash));
        for run in entries.chunk_by(|a, b| cdr_id_shard_of(a.0) == cdr_id_shard_of(b.0)) {
            let mut shard = self.shard(run[0].0).write().unwrap_or_else(PoisonError::into_inner);
            for (hash, position) in run {
                shard.insert(*hash, *position);
            }
        }
    }

    /// The positions at or before `up_to` under `hash`, ascending.
    pub(crate) fn positions(&self, hash: u64, up_to: u64) -> Vec<u64> {
        let shard = self.shard(hash).read().unwrap_or_else(PoisonError::into_inner);
        let mut positions: Vec<u64> = shard.first.get(&hash).copied().into_iter().collect();
        positions.extend(shard.more.get(&hash).into_iter().flatten().copied());
        positions.retain(|p| *p <= up_to);
        positions.sort_unstable();
        positions
    }

    /// Every (hash, position) at or before `up_to`, sorted: what a snapshot saves and
    /// what verify compares.
    pub(crate) fn entries(&self, up_to: u64) -> Vec<(u64, u64)> {
        // A shard is the hash's top bits, so shards in order hold ascending hashes:
        // sorting each shard's run sorts the whole, in runs that fit the caches.
        let mut entries = Vec::new();
        for shard in &self.shards {
            Self::push_shard_entries(&mut entries, shard, up_to);
        }
        entries
    }

    /// [`CdrIdIndex::entries`] as one sorted run per shard, the shards sorted on every
    /// core: the runs in order are the entries.
    pub(crate) fn entry_runs_on_every_core(&self, up_to: u64) -> Vec<Vec<(u64, u64)>> {
        use rayon::prelude::*;
        self.shards
            .par_iter()
            .map(|shard| {
                let mut run = Vec::new();
                Self::push_shard_entries(&mut run, shard, up_to);
                run
            })
            .collect()
    }

    /// Appends the entries of `shard` at or before `up_to`, sorted.
    fn push_shard_entries(entries: &mut Vec<(u64, u64)>, shard: &RwLock<CdrIdShard>, up_to: u64) {
        let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
        let start = entries.len();
        entries.extend(shard.first.iter().map(|(hash, p)| (*hash, *p)).filter(|(_, p)| *p <= up_to));
        for (hash, more) in &shard.more {
            entries.extend(more.iter().filter(|p| **p <= up_to).map(|p| (*hash, *p)));
        }
        entries[start..].sort_unstable();
    }

    /// The index of `entries` as [`CdrIdIndex::entries`] gives them: sorted by hash,
    /// and so by shard (a shard is the hash's top bits), each shard's run built on its
    /// own thread. Unsorted entries (not from this index) are inserted one by one.
    pub(crate) fn from_entries(entries: &[(u64, u64)]) -> Self {
        use rayon::prelude::*;
        if !entries.is_sorted() {
            let index = CdrIdIndex::default();
            for (hash, position) in entries {
                index.insert(*hash, *position);
            }
            return index;
        }
        let shards = (0..CDR_ID_SHARDS)
            .into_par_iter()
            .map(|shard| {
                let start = entries.partition_point(|(hash, _)| cdr_id_shard_of(*hash) < shard);
                let end = entries.partition_point(|(hash, _)| cdr_id_shard_of(*hash) <= shard);
                RwLock::new(CdrIdShard::of_sorted(&entries[start..end]))
            })
            .collect();
        CdrIdIndex { shards }
    }

    /// The index of runs of entries in any order, run `s` holding those of shard `s`
    /// ([`cdr_id_shard_of`]): what a replay's appliers collect. Each run is sorted and
    /// built on its own, so the work stays in the caches, on every core.
    pub(crate) fn from_shard_runs(runs: Vec<Vec<(u64, u64)>>) -> Self {
        use rayon::prelude::*;
        assert_eq!(runs.len(), CDR_ID_SHARDS, "one run per shard");
        let shards = runs
            .into_par_iter()
            .enumerate()
            .map(|(shard, mut run)| {
                debug_assert!(run.iter().all(|(hash, _)| cdr_id_shard_of(*hash) == shard));
                run.sort_unstable();
                RwLock::new(CdrIdShard::of_sorted(&run))
            })
            .collect();
        CdrIdIndex { shards }
    }
}

impl CdrIdShard {
    fn insert(&mut self, hash: u64, position: u64) {
        match self.first.get(&hash) {
            None => {
                self.first.insert(hash, position);
            }
            Some(first) if *first == position => {}
            Some(_) => {
                let more = self.more.entry(hash).or_default();
                if let Err(at) = more.binary_search(&position) {
                    more.insert(at, position);
                }
            }
        }
    }

    /// The shard of entries sorted by (hash, position): a hash's first entry is its
    /// first position, the rest follow in order, as `insert` would leave them; an entry
    /// given twice is kept once.
    fn of_sorted(run: &[(u64, u64)]) -> Self {
        let mut built = CdrIdShard {
            first: FastMap::with_capacity_and_hasher(run.len(), Default::default()),
            more: FastMap::default(),
        };
        for (at, (hash, position)) in run.iter().enumerate() {
            if at > 0 && run[at - 1] == (*hash, *position) {
                continue;
            }
            if at > 0 && run[at - 1].0 == *hash {
                built.more.entry(*hash).or_default().push(*position);
            } else {
                built.first.insert(*hash, *position);
            }
        }
        built
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use super::*;

    /// An empty EUR customer, for tests of one account's structures.
    pub(crate) fn view() -> AccountView {
        AccountView {
            id: AccountId::new(),
            number: "A".into(),
            name: "A".into(),
            kind: AccountKind::Customer,
            partner: None,
            book: BookId::OPERATOR,
            currency: Currency::parse("EUR").unwrap(),
            credit_limit: Amount::ZERO,
            status: AccountStatus::Active,
            tariff: None,
            balance: Amount::ZERO,
            opened_at: Timestamp(0),
            first_occurred_at: None,
            last_position: 0,
        }
    }

    /// One id charged in two books (or two ids of one hash): both positions answer, each
    /// only to states at or past it, and adding one again changes nothing.
    #[test]
    fn the_cdr_id_index_keeps_every_position_of_a_hash() {
        let index = CdrIdIndex::default();
        let hash = cdr_id_hash("call-1");
        index.insert(hash, 40);
        index.insert(hash, 12);
        index.insert(hash, 40);
        index.insert(cdr_id_hash("call-2"), 7);
        assert_eq!(index.positions(hash, u64::MAX), vec![12, 40]);
        assert_eq!(index.positions(hash, 39), vec![12]);
        assert_eq!(index.positions(hash, 11), Vec::<u64>::new());
        let entries = index.entries(u64::MAX);
        assert_eq!(entries.len(), 3);
        assert_eq!(CdrIdIndex::from_entries(&entries).entries(u64::MAX), entries);
        assert_eq!(index.entries(12).len(), 2);
    }

    /// Entries come out sorted shard by shard; that only sorts the whole because a
    /// shard is a hash's top bits. A later change of how shards are picked must fail here.
    #[test]
    fn cdr_id_entries_are_sorted_across_shards() {
        let index = CdrIdIndex::default();
        for n in 0..5_000u64 {
            index.insert(cdr_id_hash(&format!("call-{n}")), n % 977);
        }
        let entries = index.entries(u64::MAX);
        assert_eq!(entries.len(), 5_000);
        assert!(entries.is_sorted());
        assert!(index.entries(500).iter().all(|(_, p)| *p <= 500));
    }

    proptest! {
        /// Postings inserted in any order, enough to split chunks many times: the chunks
        /// stay sorted, bounded and keyed by their last entry, and every range sum equals
        /// the sum of the postings in it.
        #[test]
        fn chunked_postings_sum_every_range_like_a_plain_list(
            postings in proptest::collection::vec((0i64..200, 0usize..6, -500i64..500), 1..400),
            ranges in proptest::collection::vec((-5i64..210, -5i64..210), 1..20),
        ) {
            let day = 86_400_000_000i64;
            let mut account = AccountModel::new(view());
            let mut plain = Vec::new();
            for (position, (days, category, cents)) in postings.into_iter().enumerate() {
                let entry = PostingEntry::new(
                    days * day / 3,
                    position as u64 + 1,
                    Category::ALL[category],
                    Amount(Decimal::new(cents, 2)),
                );
                account.add_posting(entry);
                plain.push(entry);
            }
            plain.sort_by_key(Entry::key);
            let listed: Vec<PostingEntry> =
                account.postings.chunks.values().flat_map(|c| c.entries.iter().copied()).collect();
            prop_assert_eq!(&listed, &plain);
            for (key, chunk) in &account.postings.chunks {
                prop_assert!(!chunk.entries.is_empty() && chunk.entries.len() <= CHUNK_ENTRIES_MAX);
                prop_assert_eq!(*key, chunk.last_key());
                prop_assert_eq!(&chunk.summary, &Chunk::of(chunk.entries.clone()).summary);
            }
            for (a, b) in ranges {
                let (from, to) = (a.min(b) * day / 3, a.max(b) * day / 3);
                let mut expected = [Amount::ZERO; 6];
                for p in plain.iter().filter(|p| p.occurred_at >= from && p.occurred_at < to) {
                    expected[p.category_index()] += p.amount;
                }
                let got = account.sum_range(from, to);
                for (i, (got, expected)) in got.0.iter().zip(expected).enumerate() {
                    prop_assert_eq!(got.normalized(), expected.normalized(), "[{}, {}) category {}", from, to, i);
                }
            }
        }
    }
}
