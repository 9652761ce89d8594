//! The read models' state, held in memory as persistent (structure-sharing) maps: the
//! projector applies a chunk to a cheap clone of the current state and publishes the
//! result whole, so a reader holds one immutable state for as long as its query runs and
//! sees every event up to one position and none after it.
//!
//! What is kept is what queries need and the log cannot answer cheaply: the account
//! directory with balances, per-day sums of postings (statements) and the postings
//! themselves (statement lines), and indexes into the log — each account's events by
//! position (audit trail), its calls by start time (CDR pages), CDR ids to positions.
//! Event rows and CDR rows are not copied: a page reads its events back from the log.
//!
//! Memory, per account: its view (~200 bytes) and map nodes; per event: 8 bytes of
//! trail per account it concerns, 48 bytes per posting, 24 bytes per call per account
//! that lists it (the customer, and its partner), ~32 bytes per CDR id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, PoisonError, RwLock};

use domain::event::{Alert, Category};
use domain::rating::RatedCdr;
use domain::{
    AccountId, AccountKind, AccountStatus, Amount, BookId, Currency, EventId, Payload, RecordedEvent, TariffId,
    Timestamp,
};
use imbl::{OrdMap, OrdSet, Vector};
use serde::{Deserialize, Serialize};

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
        EventRow {
            event_id: envelope.event_id,
            book: envelope.book,
            version: envelope.version,
            kind,
            occurred_at: envelope.occurred_at,
            recorded_at: envelope.recorded_at,
            hash: envelope.hash,
            postings,
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

pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

pub(crate) fn day_of(micros: i64) -> i64 {
    micros.div_euclid(DAY_MICROS)
}

/// One posting of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct PostingEntry {
    pub occurred_at: i64,
    pub position: u64,
    pub category: Category,
    pub amount: Amount,
}

/// An account's postings of one business day, in (occurred_at, position) order, and
/// their sums: a statement adds whole days' sums and reads single postings only in the
/// partial days at its two ends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DayBlock {
    pub sums: Sums,
    pub postings: Vec<PostingEntry>,
}

/// A call in an account's list: where its event is, and what the list filters on
/// without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CdrRef {
    pub start: i64,
    pub position: u64,
    pub answered: bool,
    pub hangup_cause: u16,
}

impl CdrRef {
    pub(crate) fn order(&self) -> (i64, u64) {
        (self.start, self.position)
    }
}

/// Everything the models keep of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccountModel {
    pub view: AccountView,
    /// Postings by business day.
    pub days: OrdMap<i64, Arc<DayBlock>>,
    /// Calls by the day they started: a customer's, and a partner's customers' calls it
    /// paid wholesale.
    pub cdr_days: OrdMap<i64, Arc<Vec<CdrRef>>>,
    /// The positions of the events that concern the account, in log order.
    pub trail: Vector<u64>,
}

impl AccountModel {
    fn new(view: AccountView) -> Self {
        AccountModel { view, days: OrdMap::new(), cdr_days: OrdMap::new(), trail: Vector::new() }
    }

    fn add_posting(&mut self, entry: PostingEntry) {
        let day = day_of(entry.occurred_at);
        let block = match self.days.get_mut(&day) {
            Some(block) => Arc::make_mut(block),
            None => {
                self.days.insert(day, Arc::new(DayBlock::default()));
                Arc::make_mut(self.days.get_mut(&day).expect("just inserted"))
            }
        };
        block.sums.add(entry.category, entry.amount);
        // Postings mostly arrive in business-time order: the search ends at the back.
        let at = block.postings.partition_point(|p| (p.occurred_at, p.position) <= (entry.occurred_at, entry.position));
        block.postings.insert(at, entry);
    }

    fn add_cdr(&mut self, entry: CdrRef) {
        let day = day_of(entry.start);
        let list = match self.cdr_days.get_mut(&day) {
            Some(list) => Arc::make_mut(list),
            None => {
                self.cdr_days.insert(day, Arc::new(Vec::new()));
                Arc::make_mut(self.cdr_days.get_mut(&day).expect("just inserted"))
            }
        };
        let at = list.partition_point(|c| c.order() <= entry.order());
        list.insert(at, entry);
    }

    /// The sums of the postings with `occurred_at` in `[from, to)`.
    pub(crate) fn sum_range(&self, from: i64, to: i64) -> Sums {
        let mut sums = Sums::default();
        if from >= to {
            return sums;
        }
        for (day, block) in self.days.range(day_of(from)..=day_of(to - 1)) {
            let start = day * DAY_MICROS;
            if start >= from && start.saturating_add(DAY_MICROS) <= to {
                sums.add_all(&block.sums);
            } else {
                for p in block.postings.iter().filter(|p| p.occurred_at >= from && p.occurred_at < to) {
                    sums.add(p.category, p.amount);
                }
            }
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
    fn account_mut(&mut self, id: AccountId) -> Option<&mut AccountModel> {
        self.accounts.get_mut(&id).map(Arc::make_mut)
    }

    pub(crate) fn insert_account(&mut self, account: AccountModel) {
        self.numbers.insert(account.view.number.clone(), account.view.id);
        self.books.insert((account.view.book, account.view.id));
        self.accounts.insert(account.view.id, Arc::new(account));
    }

    /// Applies one event (the next in log order). Ids of charged CDRs go to `cdr_ids`,
    /// which is shared by every state (see [`CdrIdIndex`]).
    pub(crate) fn apply(&mut self, recorded: &RecordedEvent, cdr_ids: &CdrIdIndex) {
        let event = &recorded.event;
        let envelope = &event.envelope;
        let position = recorded.position;
        let occurred_at = envelope.occurred_at;
        match &event.payload {
            Payload::AccountOpened(e) => self.insert_account(AccountModel::new(AccountView {
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
            })),
            Payload::AccountStatusChanged(e) => {
                if let Some(account) = self.account_mut(e.account) {
                    account.view.status = e.to;
                }
            }
            Payload::CreditLimitChanged(e) => {
                if let Some(account) = self.account_mut(e.account) {
                    account.view.credit_limit = e.to.normalized();
                }
            }
            Payload::TariffAssigned(e) => {
                if let Some(account) = self.account_mut(e.account) {
                    account.view.tariff = e.tariff;
                }
            }
            Payload::CallCharged(e) => {
                let entry = CdrRef {
                    start: e.cdr.start.micros(),
                    position,
                    answered: e.cdr.answered(),
                    hangup_cause: e.cdr.hangup_cause,
                };
                for account in std::iter::once(e.account).chain(e.partner) {
                    if let Some(account) = self.account_mut(account) {
                        account.add_cdr(entry);
                    }
                }
                cdr_ids.insert(cdr_id_hash(&e.cdr.id), position);
            }
            _ => {}
        }
        let occurred = occurred_at.micros();
        // The accounts whose trail lists this event: those it names and those it posts to.
        let mut concerned = event.payload.accounts();
        event.payload.for_each_posting(|posting| {
            // As recorded the amount keeps the places it was sent with; the models hold
            // its value only, so that they depend on the log's values alone.
            let amount = posting.amount.normalized();
            if !concerned.contains(&posting.account) {
                concerned.push(posting.account);
            }
            let Some(account) = self.account_mut(posting.account) else { return };
            account.view.balance = (account.view.balance + posting.category.balance_effect(amount)).normalized();
            account.view.first_occurred_at =
                Some(account.view.first_occurred_at.map_or(occurred_at, |t| t.min(occurred_at)));
            account.add_posting(PostingEntry { occurred_at: occurred, position, category: posting.category, amount });
        });
        for id in concerned {
            if let Some(account) = self.account_mut(id) {
                account.view.last_position = position;
                account.trail.push_back(position);
            }
        }
        self.position = position;
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

/// The positions of the calls charged under one CDR id hash (ids are unique per book,
/// so several books may share one).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Positions {
    One(u64),
    Many(Vec<u64>),
}

const CDR_ID_SHARDS: usize = 64;

/// CDR id hash -> positions of the events that charged it. Unlike the rest of the
/// state it is not copied per version: entries are only ever added, each carries its
/// position, and a reader ignores those past the position of the state it holds. So a
/// chunk adds its ids in place, under a short lock of one shard of 64.
pub(crate) struct CdrIdIndex {
    shards: Vec<RwLock<FastMap<u64, Positions>>>,
}

impl Default for CdrIdIndex {
    fn default() -> Self {
        CdrIdIndex { shards: (0..CDR_ID_SHARDS).map(|_| RwLock::default()).collect() }
    }
}

impl CdrIdIndex {
    fn shard(&self, hash: u64) -> &RwLock<FastMap<u64, Positions>> {
        &self.shards[(hash >> 58) as usize % CDR_ID_SHARDS]
    }

    /// Adds `position` under `hash`; adding it again changes nothing (a chunk applied
    /// again after a failure).
    pub(crate) fn insert(&self, hash: u64, position: u64) {
        let mut shard = self.shard(hash).write().unwrap_or_else(PoisonError::into_inner);
        match shard.get_mut(&hash) {
            None => {
                shard.insert(hash, Positions::One(position));
            }
            Some(Positions::One(p)) if *p == position => {}
            Some(Positions::One(p)) => {
                let mut many = vec![*p, position];
                many.sort_unstable();
                shard.insert(hash, Positions::Many(many));
            }
            Some(Positions::Many(many)) => {
                if let Err(at) = many.binary_search(&position) {
                    many.insert(at, position);
                }
            }
        }
    }

    /// The positions at or before `up_to` under `hash`.
    pub(crate) fn positions(&self, hash: u64, up_to: u64) -> Vec<u64> {
        let shard = self.shard(hash).read().unwrap_or_else(PoisonError::into_inner);
        match shard.get(&hash) {
            None => Vec::new(),
            Some(Positions::One(p)) => [*p].into_iter().filter(|p| *p <= up_to).collect(),
            Some(Positions::Many(many)) => many.iter().copied().filter(|p| *p <= up_to).collect(),
        }
    }

    /// Every (hash, position) at or before `up_to`, sorted: what a snapshot saves and
    /// what verify compares.
    pub(crate) fn entries(&self, up_to: u64) -> Vec<(u64, u64)> {
        let mut entries = Vec::new();
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for (hash, positions) in shard.iter() {
                match positions {
                    Positions::One(p) => entries.push((*hash, *p)),
                    Positions::Many(many) => entries.extend(many.iter().map(|p| (*hash, *p))),
                }
            }
        }
        entries.retain(|(_, p)| *p <= up_to);
        entries.sort_unstable();
        entries
    }

    pub(crate) fn from_entries(entries: &[(u64, u64)]) -> Self {
        let index = CdrIdIndex::default();
        for (hash, position) in entries {
            index.insert(*hash, *position);
        }
        index
    }
}
