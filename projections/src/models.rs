//! The read models' front door: queries over the views, and waiting for a position.

use std::ops::ControlFlow;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use domain::event::Category;
use domain::{AccountId, AccountStatus, Amount, Currency, Timestamp};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::views::*;

/// Largest page any list returns.
pub const PAGE_SIZE_MAX: usize = 1000;
/// Longest a read waits for the models to reach a position it asked for.
pub const WAIT_FOR_POSITION_MAX: Duration = Duration::from_secs(5);

/// The read models over one sled tree, with the position they reflect.
#[derive(Clone)]
pub struct ReadModels {
    pub(crate) tree: sled::Tree,
    pub(crate) applied: watch::Sender<u64>,
    /// sled has no snapshots: a query that reads several keys (a statement reads the
    /// account view, bucket sums and postings) holds this shared while a chunk's batch
    /// lands under it exclusively, so the query sees one position, never half of a chunk.
    pub(crate) landing: Arc<RwLock<()>>,
}

impl ReadModels {
    pub(crate) fn over(tree: sled::Tree, applied: watch::Sender<u64>) -> Self {
        ReadModels { tree, applied, landing: Arc::new(RwLock::new(())) }
    }

    /// Holds off chunk commits for as long as the guard lives.
    fn consistent(&self) -> RwLockReadGuard<'_, ()> {
        // A poisoned lock guards no data (only the order of reads and commits).
        self.landing.read().unwrap_or_else(PoisonError::into_inner)
    }
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

/// An audit-trail row with its global position.
type PositionedRow = (u64, EventRow);

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

impl ReadModels {
    /// The last global position applied to the models.
    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the models reflect `position` (read your writes), at most `timeout`.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<u64, ProjectionError> {
        let mut applied = self.applied.subscribe();
        let timeout = timeout.min(WAIT_FOR_POSITION_MAX);
        match tokio::time::timeout(timeout, applied.wait_for(|p| *p >= position)).await {
            Ok(Ok(reached)) => Ok(*reached),
            _ => Err(ProjectionError::NotCaughtUp { wanted: position, reached: self.position() }),
        }
    }

    /// An account, its amounts in the currency's canonical form.
    pub fn account(&self, id: AccountId) -> Result<Option<AccountView>, ProjectionError> {
        let key = account_key(id);
        let view: Option<AccountView> = self.tree.get(&key)?.map(|bytes| decode(&key, &bytes)).transpose()?;
        Ok(view.map(AccountView::canonical))
    }

    /// The currency amounts of `account` are shown in; `None` for an account the models
    /// do not know (its amounts are then shown normalised).
    fn currency_of(&self, account: AccountId) -> Result<Option<Currency>, ProjectionError> {
        Ok(self.account(account)?.map(|view| view.currency))
    }

    pub fn account_by_number(&self, number: &str) -> Result<Option<AccountView>, ProjectionError> {
        match self.tree.get(number_key(number))? {
            Some(id) => {
                let id = uuid_from(&id).ok_or_else(|| ProjectionError::Corrupt {
                    key: number.into(),
                    reason: "number index holds no account id".into(),
                })?;
                self.account(AccountId(id))
            }
            None => Ok(None),
        }
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
        // A partner's accounts are its book: read the book's index, not every account.
        let book = filter.partner.map(domain::BookId::of_partner).or(filter.book);
        let ids: Box<dyn Iterator<Item = Result<AccountId, ProjectionError>>> = match book {
            Some(book) => {
                let start = book_account_key(book, after.unwrap_or(AccountId(uuid::Uuid::nil())));
                let end = book_account_key(book, AccountId(uuid::Uuid::max()));
                Box::new(self.tree.range(start..=end).map(|entry| {
                    let (key, _) = entry?;
                    Ok(AccountId(uuid_from(&key[17..33]).expect("16 bytes")))
                }))
            }
            None => {
                let start = after.map_or_else(|| account_key(AccountId(uuid::Uuid::nil())), account_key);
                Box::new(self.tree.range(start..vec![PREFIX_ACCOUNT + 1]).map(|entry| {
                    let (key, _) = entry?;
                    Ok(AccountId(uuid_from(&key[1..17]).expect("16 bytes")))
                }))
            }
        };
        let mut items = Vec::new();
        for id in ids {
            let id = id?;
            if Some(id) == after {
                continue;
            }
            let Some(view) = self.account(id)? else { continue };
            let wanted = filter.partner.is_none_or(|p| view.partner == Some(p) || view.id == p)
                && filter.status.is_none_or(|s| view.status == s)
                && filter.book.is_none_or(|b| view.book == b)
                && filter.kind.is_none_or(|k| view.kind == k);
            if !wanted {
                continue;
            }
            if items.len() == limit {
                let next_cursor = items.last().map(|v: &AccountView| v.id.to_string());
                return Ok(Page { items, next_cursor });
            }
            items.push(view);
        }
        Ok(Page { items, next_cursor: None })
    }

    /// The sums of `account`'s postings with `occurred_at` in `[from, to)`.
    fn sum_range(&self, account: AccountId, from: i64, to: i64) -> Result<Sums, ProjectionError> {
        let mut sums = Sums::default();
        let mut cursor = from;
        while cursor < to {
            // The largest bucket that starts here and fits; else single postings up to
            // the next hour.
            let level = (0..BUCKET_MICROS.len()).rev().find(|&level| {
                let size = BUCKET_MICROS[level];
                cursor.rem_euclid(size) == 0 && cursor.checked_add(size).is_some_and(|end| end <= to)
            });
            match level {
                Some(level) => {
                    let size = BUCKET_MICROS[level];
                    let key = bucket_key(level, account, cursor.div_euclid(size));
                    if let Some(bytes) = self.tree.get(key)? {
                        sums.add_all(&decode(&key, &bytes)?);
                    }
                    cursor += size;
                }
                None => {
                    let hour = cursor.div_euclid(HOUR_MICROS);
                    let end = ((hour + 1) * HOUR_MICROS).min(to);
                    self.visit_hours::<PostingEntry>(PREFIX_POSTING, account, hour, hour, |entries| {
                        for e in entries.iter().filter(|e| e.occurred_at >= cursor && e.occurred_at < end) {
                            sums.add(e.category, e.amount);
                        }
                        ControlFlow::Continue(())
                    })?;
                    cursor = end;
                }
            }
        }
        Ok(sums)
    }

    /// The statement of `account` for `[from, to)`; with `as_of`, as the ledger knew it
    /// at that global position or ledger time (events recorded later are left out,
    /// whatever their business time).
    pub fn statement(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        as_of: Option<AsOf>,
    ) -> Result<Statement, ProjectionError> {
        if from > to {
            return Err(ProjectionError::InvalidQuery { field: "to", reason: "must not be before `from`".into() });
        }
        let _consistent = self.consistent();
        let view = self.account(account)?.ok_or_else(|| ProjectionError::AccountNotFound(account.to_string()))?;
        let position = self.position();
        let history_start = view.first_occurred_at.map_or(from.micros(), |t| t.micros());
        let opening_sums = if history_start < from.micros() {
            self.sum_range(account, history_start, from.micros())?
        } else {
            Sums::default()
        };
        let mut opening = opening_sums.balance_effect();
        let mut period = self.sum_range(account, from.micros(), to.micros())?;
        let mut reflects = position;
        let later = match as_of {
            None => None,
            Some(AsOf::Position(p)) if p >= position => None,
            Some(AsOf::Position(p)) => Some((p, self.events_after(account, p)?)),
            Some(AsOf::Time(t)) => {
                let (known, later) = self.events_recorded_after(account, t)?;
                Some((known.unwrap_or(0), later))
            }
        };
        if let Some((known_position, later)) = later {
            // Take back what was recorded later: bounded by the account's events since.
            for (_, row) in later {
                for (category, amount) in row.postings {
                    if row.occurred_at < from {
                        opening -= category.balance_effect(amount);
                    } else if row.occurred_at < to {
                        let mut taken = Sums::default();
                        taken.add(category, amount);
                        period.sub_all(&taken);
                    }
                }
            }
            reflects = known_position.min(position);
        }
        Ok(Statement::from_sums(&view, from, to, opening, &period, reflects))
    }

    /// The pieces of an account's per-hour list (`P` or `X`) for hours `first..=last`,
    /// merged per hour and sorted.
    /// Visits an account's pieces of `prefix` hour by hour, oldest first, each hour's
    /// entries merged and sorted, until `visit` says stop: a page of a long history reads
    /// only the hours it shows.
    fn visit_hours<T: for<'de> serde::Deserialize<'de> + Ord>(
        &self,
        prefix: u8,
        account: AccountId,
        first_hour: i64,
        last_hour: i64,
        mut visit: impl FnMut(Vec<T>) -> ControlFlow<()>,
    ) -> Result<(), ProjectionError> {
        let range =
            hour_piece_key(prefix, account, first_hour, 0)..=hour_piece_key(prefix, account, last_hour, u64::MAX);
        let mut current: Option<(i64, Vec<T>)> = None;
        for entry in self.tree.range(range) {
            let (key, value) = entry?;
            let hour = time_from_bytes(&key[17..25]);
            let piece: Vec<T> = decode(&key, &value)?;
            match &mut current {
                Some((h, entries)) if *h == hour => entries.extend(piece),
                _ => {
                    if let Some((_, mut entries)) = current.replace((hour, piece)) {
                        entries.sort();
                        if visit(entries).is_break() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if let Some((_, mut entries)) = current {
            entries.sort();
            let _ = visit(entries);
        }
        Ok(())
    }

    /// An account's events recorded after `position`, in log order.
    fn events_after(&self, account: AccountId, position: u64) -> Result<Vec<(u64, EventRow)>, ProjectionError> {
        let mut rows = Vec::new();
        let range = event_piece_key(account, position.saturating_add(1))..=event_piece_key(account, u64::MAX);
        for entry in self.tree.range(range) {
            let (key, value) = entry?;
            let piece: Vec<(u64, EventRow)> = decode(&key, &value)?;
            rows.extend(piece.into_iter().filter(|(p, _)| *p > position));
        }
        Ok(rows)
    }

    /// An account's events recorded after ledger time `time`, and the position of the
    /// last one recorded at or before it. Ledger time never goes back within a book,
    /// so these are a suffix of the account's events: read from the end.
    fn events_recorded_after(
        &self,
        account: AccountId,
        time: Timestamp,
    ) -> Result<(Option<u64>, Vec<PositionedRow>), ProjectionError> {
        let mut later = Vec::new();
        let range = event_piece_key(account, 0)..=event_piece_key(account, u64::MAX);
        for entry in self.tree.range(range).rev() {
            let (key, value) = entry?;
            let piece: Vec<(u64, EventRow)> = decode(&key, &value)?;
            for (position, row) in piece.into_iter().rev() {
                if row.recorded_at <= time {
                    later.reverse();
                    return Ok((Some(position), later));
                }
                later.push((position, row));
            }
        }
        later.reverse();
        Ok((None, later))
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
        let _consistent = self.consistent();
        let currency = self.currency_of(account)?;
        let after = cursor.map(parse_time_cursor).transpose()?;
        let start = after.map_or(from.micros(), |(time, _)| time.max(from.micros()));
        let (first, last) = (start.div_euclid(HOUR_MICROS), to.micros().div_euclid(HOUR_MICROS));
        let mut items = Vec::new();
        let mut next_cursor = None;
        self.visit_hours::<PostingEntry>(PREFIX_POSTING, account, first, last, |entries| {
            for e in entries {
                let in_period = e.occurred_at >= from.micros() && e.occurred_at < to.micros();
                let past_cursor = after.is_none_or(|c| (e.occurred_at, e.position) > c);
                if !in_period || !past_cursor || category.is_some_and(|c| c != e.category) {
                    continue;
                }
                if items.len() == limit {
                    next_cursor =
                        items.last().map(|l: &StatementLine| format!("{}-{}", l.occurred_at.micros(), l.position));
                    return ControlFlow::Break(());
                }
                items.push(StatementLine {
                    position: e.position,
                    occurred_at: Timestamp(e.occurred_at),
                    category: e.category,
                    amount: currency.map_or(e.amount, |c| e.amount.canonical(c)),
                });
            }
            ControlFlow::Continue(())
        })?;
        Ok(Page { items, next_cursor })
    }

    /// The events concerning `account`, in log order, after `after_position`.
    pub fn account_events(
        &self,
        account: AccountId,
        after_position: u64,
        limit: usize,
    ) -> Result<Page<(u64, EventRow)>, ProjectionError> {
        let limit = check_limit(limit)?;
        let _consistent = self.consistent();
        let currency = self.currency_of(account)?;
        let mut items = Vec::new();
        let range = event_piece_key(account, after_position.saturating_add(1))..=event_piece_key(account, u64::MAX);
        for entry in self.tree.range(range) {
            let (key, value) = entry?;
            let piece: Vec<(u64, EventRow)> = decode(&key, &value)?;
            for (position, mut row) in piece.into_iter().filter(|(p, _)| *p > after_position) {
                if items.len() == limit {
                    let next_cursor = items.last().map(|(p, _): &(u64, EventRow)| p.to_string());
                    return Ok(Page { items, next_cursor });
                }
                if let Some(currency) = currency {
                    for (_, amount) in &mut row.postings {
                        *amount = amount.canonical(currency);
                    }
                }
                items.push((position, row));
            }
        }
        Ok(Page { items, next_cursor: None })
    }

    /// CDRs of `account` that started in `[from, to)`, oldest first, filtered: a
    /// customer's calls, or for a partner the calls of its customers it paid wholesale.
    pub fn cdrs(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        filter: &CdrFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CdrRow>, ProjectionError> {
        let limit = check_limit(limit)?;
        let _consistent = self.consistent();
        let after = cursor.map(parse_time_cursor).transpose()?;
        let start = after.map_or(from.micros(), |(time, _)| time.max(from.micros()));
        let (first, last) = (start.div_euclid(HOUR_MICROS), to.micros().div_euclid(HOUR_MICROS));
        let mut items = Vec::new();
        let mut next_cursor = None;
        // A partner's list holds its customers' calls: each cost is shown in the currency
        // of the account that pays it.
        let mut currencies: std::collections::HashMap<AccountId, Option<Currency>> = Default::default();
        let mut failure = None;
        self.visit_hours::<CdrEntry>(PREFIX_ACCOUNT_CDR, account, first, last, |entries| {
            for e in entries {
                let (start, _) = e.order();
                let in_period = start >= from.micros() && start < to.micros();
                if !in_period || after.is_some_and(|c| e.order() <= c) {
                    continue;
                }
                let row = e.0;
                let wanted = filter.answered.is_none_or(|a| row.cdr.answered() == a)
                    && filter.hangup_cause.is_none_or(|c| row.cdr.hangup_cause == c)
                    && filter.destination_prefix.as_deref().is_none_or(|p| row.cdr.callee.starts_with(p));
                if !wanted {
                    continue;
                }
                if items.len() == limit {
                    next_cursor = items.last().map(|r: &CdrRow| format!("{}-{}", r.cdr.start.micros(), r.position));
                    return ControlFlow::Break(());
                }
                let mut currency = |account: AccountId| match currencies.get(&account) {
                    Some(known) => Ok(*known),
                    None => self.currency_of(account).inspect(|c| {
                        currencies.insert(account, *c);
                    }),
                };
                let (customer, partner) = match (currency(row.account), row.partner.map(&mut currency).transpose()) {
                    (Ok(customer), Ok(partner)) => (customer, partner.flatten()),
                    (Err(error), _) | (_, Err(error)) => {
                        failure = Some(error);
                        return ControlFlow::Break(());
                    }
                };
                items.push(match customer {
                    Some(customer) => row.canonical(customer, partner),
                    None => row,
                });
            }
            ControlFlow::Continue(())
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(Page { items, next_cursor })
    }
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

fn uuid_from(bytes: &[u8]) -> Option<uuid::Uuid> {
    uuid::Uuid::from_slice(bytes).ok()
}
