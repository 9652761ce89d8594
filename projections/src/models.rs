//! The read models' front door: one consistent snapshot per query, and waiting for a
//! position.
//!
//! Every query takes the state the projector last published (an `Arc`, taken without a
//! lock) and answers from it alone, with the position it reflects. What the state keeps
//! only as positions (audit rows, CDR rows) is read back from the log, off the async
//! workers; those events are at or before the state's position, so they belong to it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use domain::event::Category;
use domain::{AccountId, AccountStatus, Amount, Currency, RecordedEvent, Timestamp};
use eventlog::{EventStore, READ_EVENTS_MAX};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::persist::{self, Cores};
use crate::state::*;

/// Largest page any list returns.
pub const PAGE_SIZE_MAX: usize = 1000;
/// Longest a read waits for the models to reach a position it asked for.
pub const WAIT_FOR_POSITION_MAX: Duration = Duration::from_secs(5);

/// The read models: the current state, the log it follows, and where it is saved.
#[derive(Clone)]
pub struct ReadModels {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Model>,
    cdr_ids: CdrIdIndex,
    applied: watch::Sender<u64>,
    store: Arc<dyn EventStore>,
    dir: PathBuf,
    /// One applier at a time: each builds on the state the last one published.
    applying: Mutex<()>,
    saved: Mutex<Saved>,
    policy: Mutex<SnapshotPolicy>,
}

/// When the projector saves a snapshot in the background: once at least `events` were
/// applied and `interval` passed since the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub events: u64,
    pub interval: Duration,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy { events: crate::runner::SNAPSHOT_EVENTS_MIN, interval: crate::runner::SNAPSHOT_INTERVAL_MIN }
    }
}

/// The last snapshot written, and whether one is being written.
struct Saved {
    position: u64,
    at: Instant,
    writing: bool,
}

/// The statement (balance by period) of an account for `[from, to)` by `occurred_at`.
/// `closing_balance = opening_balance + payments + transfers_in - transfers_out - total_charges`
/// and `total_charges = call_charges + other_charges + adjustments` hold by construction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub account: AccountId,
    pub number: String,
    pub currency: Currency,
    pub from: Timestamp,
    pub to: Timestamp,
    pub opening_balance: Amount,
    pub payments: Amount,
    pub adjustments: Amount,
    pub call_charges: Amount,
    pub other_charges: Amount,
    pub total_charges: Amount,
    pub transfers_in: Amount,
    pub transfers_out: Amount,
    pub closing_balance: Amount,
    /// The global log position this statement reflects.
    pub position: u64,
}

impl Statement {
    fn from_sums(
        view: &AccountView,
        from: Timestamp,
        to: Timestamp,
        opening: Amount,
        period: &Sums,
        position: u64,
    ) -> Self {
        let payments = period.get(Category::Payments);
        let adjustments = period.get(Category::Adjustments);
        let call_charges = period.get(Category::CallCharges);
        let other_charges = period.get(Category::OtherCharges);
        let transfers_in = period.get(Category::TransfersIn);
        let transfers_out = period.get(Category::TransfersOut);
        let total_charges = call_charges + other_charges + adjustments;
        let closing_balance = opening + payments + transfers_in - transfers_out - total_charges;
        // Every figure in the currency's canonical form: a statement reads the same
        // whether the models were projected live, replayed, or taken back to an `as_of`.
        let shown = |amount: Amount| amount.canonical(view.currency);
        Statement {
            account: view.id,
            number: view.number.clone(),
            currency: view.currency,
            from,
            to,
            opening_balance: shown(opening),
            payments: shown(payments),
            adjustments: shown(adjustments),
            call_charges: shown(call_charges),
            other_charges: shown(other_charges),
            total_charges: shown(total_charges),
            transfers_in: shown(transfers_in),
            transfers_out: shown(transfers_out),
            closing_balance: shown(closing_balance),
            position,
        }
    }
}

/// The point in the ledger's history a statement is reproduced at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Everything up to and including this global position.
    Position(u64),
    /// Everything the ledger had recorded by this ledger time (`recorded_at`).
    Time(Timestamp),
}

/// A posting behind a statement figure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    pub position: u64,
    pub occurred_at: Timestamp,
    pub category: Category,
    pub amount: Amount,
}

/// Filters of an account listing.
#[derive(Clone, Debug, Default)]
pub struct AccountFilter {
    pub partner: Option<AccountId>,
    pub status: Option<AccountStatus>,
    pub book: Option<domain::BookId>,
    pub kind: Option<domain::AccountKind>,
}

/// Filters of a CDR listing.
#[derive(Clone, Debug, Default)]
pub struct CdrFilter {
    pub answered: Option<bool>,
    pub hangup_cause: Option<u16>,
    pub destination_prefix: Option<String>,
}

/// A page of a list and the cursor of the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

fn check_limit(limit: usize) -> Result<usize, ProjectionError> {
    if limit == 0 || limit > PAGE_SIZE_MAX {
        return Err(ProjectionError::InvalidQuery { field: "limit", reason: format!("must be 1 to {PAGE_SIZE_MAX}") });
    }
    Ok(limit)
}

fn bad_cursor() -> ProjectionError {
    ProjectionError::InvalidQuery { field: "cursor", reason: "not a cursor this list gave".into() }
}

/// Files an older version kept its models in (a sled database): derived data, replaced
/// by the snapshot file.
const OLD_LAYOUT_FILES: [&str; 3] = ["db", "conf", "blobs"];

fn remove_old_layout(dir: &Path) -> Result<(), ProjectionError> {
    let io = |e: std::io::Error| ProjectionError::Storage(format!("{}: {e}", dir.display()));
    if !dir.join("db").exists() || !dir.join("conf").exists() {
        return Ok(());
    }
    tracing::warn!(dir = %dir.display(), "removing read models of an older layout; they are rebuilt from the log");
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if OLD_LAYOUT_FILES.contains(&name.as_str()) || name.starts_with("snap.") {
            let path = entry.path();
            if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }.map_err(io)?;
        }
    }
    Ok(())
}

impl ReadModels {
    /// Opens the models saved in `dir` (empty if there is no usable snapshot there) over
    /// the log in `store`; a projector then brings them up to the log's head.
    pub fn open(dir: &Path, store: Arc<dyn EventStore>) -> Result<Self, ProjectionError> {
        std::fs::create_dir_all(dir).map_err(|e| ProjectionError::Storage(format!("{}: {e}", dir.display())))?;
        remove_old_layout(dir)?;
        let (model, cdr_ids) = persist::read(dir)?.unwrap_or_default();
        Ok(ReadModels::over(dir, store, model, cdr_ids))
    }

    pub(crate) fn over(dir: &Path, store: Arc<dyn EventStore>, model: Model, cdr_ids: CdrIdIndex) -> Self {
        let position = model.position;
        ReadModels {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(model),
                cdr_ids,
                applied: watch::channel(position).0,
                store,
                dir: dir.to_path_buf(),
                applying: Mutex::new(()),
                saved: Mutex::new(Saved { position, at: Instant::now(), writing: false }),
                policy: Mutex::new(SnapshotPolicy::default()),
            }),
        }
    }

    /// The state as of now, to answer one query from.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { model: self.shared.current.load_full(), shared: self.shared.clone() }
    }

    pub(crate) fn model(&self) -> Arc<Model> {
        self.shared.current.load_full()
    }

    pub(crate) fn cdr_ids(&self) -> &CdrIdIndex {
        &self.shared.cdr_ids
    }

    /// The bytes a snapshot of the current state holds: two models are equal exactly when
    /// these are (tests compare live projection, replay and restarts with them).
    pub fn encoded(&self) -> Vec<u8> {
        persist::encode(&self.model(), &self.shared.cdr_ids).expect("encoding into memory cannot fail")
    }

    /// The last global position applied to the models.
    pub fn position(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Waits until the models reflect `position` (read your writes), at most `timeout`.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<u64, ProjectionError> {
        let mut applied = self.shared.applied.subscribe();
        let timeout = timeout.min(WAIT_FOR_POSITION_MAX);
        match tokio::time::timeout(timeout, applied.wait_for(|p| *p >= position)).await {
            Ok(Ok(reached)) => Ok(*reached),
            _ => Err(ProjectionError::NotCaughtUp { wanted: position, reached: self.position() }),
        }
    }

    /// Applies events (in log order) and publishes the state after them. Events at or
    /// before the models' position are skipped: a redelivered event is never applied
    /// twice. The projector calls it per chunk; public so that tests can cut the log into
    /// chunks of their choosing.
    ///
    /// A chunk that panicked while it was applied left entries past the published
    /// position in accounts' recent lists (readers skip them, but applying the chunk
    /// again would add them twice): every later chunk is refused, and the models must be
    /// opened again (from their snapshot and the log).
    pub fn apply_chunk(&self, chunk: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Ok(_applying) = self.shared.applying.lock() else {
            return Err(ProjectionError::Storage("a chunk failed while it was applied; reopen the read models".into()));
        };
        let current = self.shared.current.load_full();
        let applied = current.position;
        let fresh = chunk.iter().filter(|e| e.position > applied);
        let mut next = (*current).clone();
        // The published state is no longer referenced from here: nodes only the new
        // state uses are changed in place, shared ones are copied once.
        drop(current);
        let mut any = false;
        let mut charged = Vec::new();
        for event in fresh {
            next.apply(event, &mut charged);
            any = true;
        }
        // Before the state is published, so that its readers find every id it charged.
        self.shared.cdr_ids.insert_all(&mut charged);
        if any {
            let position = next.position;
            self.shared.current.store(Arc::new(next));
            self.shared.applied.send_replace(position);
        }
        Ok(())
    }

    /// Writes a snapshot of the current state now (a clean stop does, so that the next
    /// start projects nothing).
    pub fn save(&self) -> Result<(), ProjectionError> {
        let model = self.model();
        {
            // Nothing new since the file was written or loaded: an idle server's clean
            // stop does not rewrite a GB.
            let saved = self.shared.saved.lock().unwrap_or_else(PoisonError::into_inner);
            if saved.position == model.position && persist::snapshot_path(&self.shared.dir).exists() {
                return Ok(());
            }
        }
        persist::write(&self.shared.dir, &model, &self.shared.cdr_ids, Cores::One)?;
        let mut saved = self.shared.saved.lock().unwrap_or_else(PoisonError::into_inner);
        saved.position = saved.position.max(model.position);
        saved.at = Instant::now();
        Ok(())
    }

    /// Changes when the projector saves snapshots (tests save after every chunk).
    pub fn set_snapshot_policy(&self, policy: SnapshotPolicy) {
        *self.shared.policy.lock().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Starts writing a snapshot in the background if the policy says one is due and none
    /// is being written.
    pub(crate) fn save_in_background_if_due(&self) {
        let SnapshotPolicy { events, interval } = *self.shared.policy.lock().unwrap_or_else(PoisonError::into_inner);
        let model = self.model();
        {
            let mut saved = self.shared.saved.lock().unwrap_or_else(PoisonError::into_inner);
            if saved.writing || model.position < saved.position + events || saved.at.elapsed() < interval {
                return;
            }
            saved.writing = true;
        }
        let models = self.clone();
        std::thread::spawn(move || {
            let result = persist::write(&models.shared.dir, &model, &models.shared.cdr_ids, Cores::One);
            let mut saved = models.shared.saved.lock().unwrap_or_else(PoisonError::into_inner);
            saved.writing = false;
            saved.at = Instant::now();
            match result {
                Ok(()) => saved.position = saved.position.max(model.position),
                // Only a cache: the next start projects more of the log.
                Err(error) => tracing::warn!(%error, "could not save the read models' snapshot"),
            }
        });
    }

    pub fn account(&self, id: AccountId) -> Result<Option<AccountView>, ProjectionError> {
        Ok(self.snapshot().account(id))
    }

    pub fn account_by_number(&self, number: &str) -> Result<Option<AccountView>, ProjectionError> {
        Ok(self.snapshot().account_by_number(number))
    }

    pub fn accounts(
        &self,
        filter: &AccountFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AccountView>, ProjectionError> {
        self.snapshot().accounts(filter, cursor, limit)
    }

    pub async fn statement(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        as_of: Option<AsOf>,
    ) -> Result<Statement, ProjectionError> {
        self.snapshot().statement(account, from, to, as_of).await
    }

    pub fn statement_lines(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        category: Option<Category>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<StatementLine>, ProjectionError> {
        self.snapshot().statement_lines(account, from, to, category, cursor, limit)
    }

    pub async fn account_events(
        &self,
        account: AccountId,
        after_position: u64,
        limit: usize,
    ) -> Result<Page<(u64, EventRow)>, ProjectionError> {
        self.snapshot().account_events(account, after_position, limit).await
    }

    pub async fn cdrs(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        filter: &CdrFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CdrRow>, ProjectionError> {
        self.snapshot().cdrs(account, from, to, filter, cursor, limit).await
    }

    pub async fn cdrs_by_id(&self, id: &str) -> Result<Vec<CdrRow>, ProjectionError> {
        self.snapshot().cdrs_by_id(id).await
    }
}

/// The models at one position: every answer taken from it agrees with every other.
#[derive(Clone)]
pub struct Snapshot {
    model: Arc<Model>,
    shared: Arc<Shared>,
}

impl Snapshot {
    /// The global position this snapshot reflects.
    pub fn position(&self) -> u64 {
        self.model.position
    }

    /// An account, its amounts in the currency's canonical form.
    pub fn account(&self, id: AccountId) -> Option<AccountView> {
        self.model.accounts.get(&id).map(|a| a.view_at(self.model.position).canonical())
    }

    pub fn account_by_number(&self, number: &str) -> Option<AccountView> {
        self.model.numbers.get(number).and_then(|id| self.account(*id))
    }

    fn currency_of(&self, account: AccountId) -> Option<Currency> {
        self.model.accounts.get(&account).map(|a| a.view.currency)
    }

    /// An account as of this snapshot's position.
    fn account_at(&self, account: AccountId) -> Option<Cow<'_, AccountModel>> {
        self.model.accounts.get(&account).map(|a| a.at(self.model.position))
    }

    fn account_model(&self, account: AccountId) -> Result<Cow<'_, AccountModel>, ProjectionError> {
        self.account_at(account).ok_or_else(|| ProjectionError::AccountNotFound(account.to_string()))
    }

    /// Accounts in id order (ids are time-ordered: oldest first), filtered.
    pub fn accounts(
        &self,
        filter: &AccountFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AccountView>, ProjectionError> {
        let limit = check_limit(limit)?;
        let after = cursor.map(|c| AccountId::parse(c).ok_or_else(bad_cursor)).transpose()?;
        let wanted = |view: &AccountView| {
            filter.partner.is_none_or(|p| view.partner == Some(p) || view.id == p)
                && filter.status.is_none_or(|s| view.status == s)
                && filter.book.is_none_or(|b| view.book == b)
                && filter.kind.is_none_or(|k| view.kind == k)
        };
        // A partner's accounts are its book: walk the book's index, not every account.
        let book = filter.partner.map(domain::BookId::of_partner).or(filter.book);
        let start = after.unwrap_or(AccountId(uuid::Uuid::nil()));
        let ids: Box<dyn Iterator<Item = AccountId> + '_> = match book {
            Some(book) => Box::new(
                self.model.books.range((book, start)..=(book, AccountId(uuid::Uuid::max()))).map(|(_, id)| *id),
            ),
            None => Box::new(self.model.accounts.range(start..).map(|(id, _)| *id)),
        };
        let mut items = Vec::new();
        for id in ids {
            if Some(id) == after {
                continue;
            }
            let Some(account) = self.model.accounts.get(&id) else { continue };
            // What the filter asks of an account changes only with a fold.
            if !wanted(&account.view) {
                continue;
            }
            if items.len() == limit {
                let next_cursor = items.last().map(|v: &AccountView| v.id.to_string());
                return Ok(Page { items, next_cursor });
            }
            items.push(account.view_at(self.model.position).canonical());
        }
        Ok(Page { items, next_cursor: None })
    }

    /// The statement of `account` for `[from, to)`; with `as_of`, as the ledger knew it
    /// at that global position or ledger time (events recorded later are left out,
    /// whatever their business time).
    pub async fn statement(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        as_of: Option<AsOf>,
    ) -> Result<Statement, ProjectionError> {
        if from > to {
            return Err(ProjectionError::InvalidQuery { field: "to", reason: "must not be before `from`".into() });
        }
        let model = self.account_model(account)?;
        let view = &model.view;
        let position = self.position();
        let history_start = view.first_occurred_at.map_or(from.micros(), |t| t.micros());
        let mut opening = model.sum_range(history_start, from.micros()).balance_effect();
        let mut period = model.sum_range(from.micros(), to.micros());
        let mut reflects = position;
        let later = match as_of {
            None => None,
            Some(AsOf::Position(p)) if p >= position => None,
            Some(AsOf::Position(p)) => Some((p, model.trail_after(p))),
            Some(AsOf::Time(t)) => {
                let first_later = self.first_recorded_after(&model, t).await?;
                let known = first_later.checked_sub(1).map_or(0, |i| model.trail[i]);
                Some((known, first_later))
            }
        };
        if let Some((known_position, first_later)) = later {
            // Take back what was recorded later: bounded by the account's events since.
            let positions: Vec<u64> = model.trail.iter().skip(first_later).copied().collect();
            for batch in positions.chunks(READ_EVENTS_MAX) {
                for recorded in self.read(batch).await? {
                    let occurred_at = recorded.event.envelope.occurred_at;
                    recorded.event.payload.for_each_posting(|posting| {
                        if posting.account != account {
                            return;
                        }
                        let amount = posting.amount.normalized();
                        if occurred_at < from {
                            opening -= posting.category.balance_effect(amount);
                        } else if occurred_at < to {
                            let mut taken = Sums::default();
                            taken.add(posting.category, amount);
                            period.sub_all(&taken);
                        }
                    });
                }
            }
            reflects = known_position.min(position);
        }
        Ok(Statement::from_sums(view, from, to, opening, &period, reflects))
    }

    /// The index in `account`'s trail of its first event recorded after ledger time
    /// `time`. Ledger time never goes back within a book, so the events recorded by then
    /// are a prefix of the trail: a binary search reads a handful of events.
    async fn first_recorded_after(&self, account: &AccountModel, time: Timestamp) -> Result<usize, ProjectionError> {
        let (mut low, mut high) = (0, account.trail.len());
        while low < high {
            let middle = (low + high) / 2;
            let recorded = self.read(&[account.trail[middle]]).await?;
            let recorded_at =
                recorded.first().map(|e| e.event.envelope.recorded_at).ok_or_else(|| ProjectionError::Corrupt {
                    key: account.trail[middle].to_string(),
                    reason: "the log has no event at this position".into(),
                })?;
            if recorded_at <= time { low = middle + 1 } else { high = middle }
        }
        Ok(low)
    }

    /// The events at `positions`, all of which this snapshot's state has applied.
    async fn read(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, ProjectionError> {
        let events = self.shared.store.read_positions(positions).await?;
        if events.len() != positions.len() {
            return Err(ProjectionError::Corrupt {
                key: format!("{positions:?}"),
                reason: "the log is missing events the read models index".into(),
            });
        }
        Ok(events)
    }

    /// The postings behind a statement's figures, in business-time order.
    pub fn statement_lines(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        category: Option<Category>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<StatementLine>, ProjectionError> {
        let limit = check_limit(limit)?;
        let Some(model) = self.account_at(account) else {
            return Ok(Page { items: vec![], next_cursor: None });
        };
        let currency = model.view.currency;
        let after = cursor.map(parse_time_cursor).transpose()?;
        let start = after.map_or(from.micros(), |(time, _)| time.max(from.micros()));
        let mut items = Vec::new();
        if start >= to.micros() {
            return Ok(Page { items, next_cursor: None });
        }
        for chunk in model.postings.chunks_between(start, to.micros()) {
            for e in &chunk.entries {
                let in_period = e.occurred_at >= from.micros() && e.occurred_at < to.micros();
                let past_cursor = after.is_none_or(|c| (e.occurred_at, e.position()) > c);
                if !in_period || !past_cursor || category.is_some_and(|c| c != e.category()) {
                    continue;
                }
                if items.len() == limit {
                    let next_cursor =
                        items.last().map(|l: &StatementLine| format!("{}-{}", l.occurred_at.micros(), l.position));
                    return Ok(Page { items, next_cursor });
                }
                items.push(StatementLine {
                    position: e.position(),
                    occurred_at: Timestamp(e.occurred_at),
                    category: e.category(),
                    amount: e.amount.canonical(currency),
                });
            }
        }
        Ok(Page { items, next_cursor: None })
    }

    /// The events concerning `account`, in log order, after `after_position`.
    pub async fn account_events(
        &self,
        account: AccountId,
        after_position: u64,
        limit: usize,
    ) -> Result<Page<(u64, EventRow)>, ProjectionError> {
        let limit = check_limit(limit)?;
        let Some(model) = self.account_at(account) else {
            return Ok(Page { items: vec![], next_cursor: None });
        };
        let first = model.trail_after(after_position);
        let positions: Vec<u64> = model.trail.iter().skip(first).take(limit + 1).copied().collect();
        let more = positions.len() > limit;
        let mut items = Vec::with_capacity(limit.min(positions.len()));
        for recorded in self.read(&positions[..positions.len().min(limit)]).await? {
            let mut row = EventRow::of(&recorded, account);
            for (_, amount) in &mut row.postings {
                *amount = amount.canonical(model.view.currency);
            }
            items.push((recorded.position, row));
        }
        let next_cursor = if more { items.last().map(|(p, _)| p.to_string()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// CDRs of `account` that started in `[from, to)`, oldest first, filtered: a
    /// customer's calls, or for a partner the calls of its customers it paid wholesale.
    pub async fn cdrs(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        filter: &CdrFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CdrRow>, ProjectionError> {
        let limit = check_limit(limit)?;
        let Some(model) = self.account_at(account) else {
            return Ok(Page { items: vec![], next_cursor: None });
        };
        let after = cursor.map(parse_time_cursor).transpose()?;
        let mut items: Vec<CdrRow> = Vec::new();
        let mut next_cursor = None;
        let mut seen = after;
        // Read one more row than the page holds, so that the page knows whether the list
        // goes on, in batches as large as what may still be needed.
        loop {
            let wanted = (limit + 1 - items.len()).max(16);
            let batch = cdr_candidates(&model, from.micros(), to.micros(), seen, filter, wanted);
            let Some(last) = batch.last() else { break };
            seen = Some(last.key());
            let positions: Vec<u64> = batch.iter().map(|c| c.position()).collect();
            for recorded in self.read(&positions).await? {
                let Some(row) = CdrRow::from_recorded(&recorded) else { continue };
                if filter.destination_prefix.as_deref().is_some_and(|p| !row.cdr.callee.starts_with(p)) {
                    continue;
                }
                if items.len() == limit {
                    next_cursor = items.last().map(|r| format!("{}-{}", r.cdr.start.micros(), r.position));
                    break;
                }
                items.push(self.shown(row));
            }
            if next_cursor.is_some() || batch.len() < wanted {
                break;
            }
        }
        Ok(Page { items, next_cursor })
    }

    /// The row with each cost in the currency of the account that pays it.
    fn shown(&self, row: CdrRow) -> CdrRow {
        let partner = row.partner.and_then(|p| self.currency_of(p));
        match self.currency_of(row.account) {
            Some(customer) => row.canonical(customer, partner),
            None => row,
        }
    }

    /// Every call charged under the switch's CDR id `id`, in any book (ids are unique
    /// per book); the caller keeps those it may see.
    pub async fn cdrs_by_id(&self, id: &str) -> Result<Vec<CdrRow>, ProjectionError> {
        let positions = self.shared.cdr_ids.positions(cdr_id_hash(id), self.position());
        Ok(self
            .read(&positions)
            .await?
            .iter()
            .filter_map(CdrRow::from_recorded)
            .filter(|row| row.cdr.id == id)
            .map(|row| self.shown(row))
            .collect())
    }
}

/// Up to `max` calls of `account` that started in `[from, to)`, after `after` in list
/// order, passing what the index can decide on its own (the destination needs the event).
fn cdr_candidates(
    account: &AccountModel,
    from: i64,
    to: i64,
    after: Option<(i64, u64)>,
    filter: &CdrFilter,
    max: usize,
) -> Vec<CdrRef> {
    let start = after.map_or(from, |(time, _)| time.max(from));
    if start >= to {
        return Vec::new();
    }
    account
        .cdrs
        .chunks_between(start, to)
        .flat_map(|chunk| chunk.entries.iter())
        .filter(|c| c.start >= from && c.start < to)
        .filter(|c| after.is_none_or(|cursor| c.key() > cursor))
        .filter(|c| filter.answered.is_none_or(|a| c.answered() == a))
        .filter(|c| filter.hangup_cause.is_none_or(|h| c.hangup_cause() == h))
        .take(max)
        .copied()
        .collect()
}

/// A `<micros>-<position>` cursor of a time-ordered list.
fn parse_time_cursor(cursor: &str) -> Result<(i64, u64), ProjectionError> {
    let (time, position) = cursor.split_once('-').filter(|(t, _)| !t.is_empty()).ok_or_else(bad_cursor)?;
    // A negative time has its own leading '-'.
    let (time, position) =
        if time.is_empty() { cursor[1..].split_once('-').ok_or_else(bad_cursor)? } else { (time, position) };
    let time: i64 = time.parse().map_err(|_| bad_cursor())?;
    Ok((time, position.parse().map_err(|_| bad_cursor())?))
}
