//! The read models' front door: queries over the views, and waiting for a position.

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
        Statement {
            account: view.id,
            number: view.number.clone(),
            currency: view.currency,
            from,
            to,
            opening_balance: opening,
            payments,
            adjustments,
            call_charges,
            other_charges,
            total_charges,
            transfers_in,
            transfers_out,
            closing_balance: opening + payments + transfers_in - transfers_out - total_charges,
            position,
        }
    }
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

    pub fn account(&self, id: AccountId) -> Result<Option<AccountView>, ProjectionError> {
        let key = account_key(id);
        self.tree.get(&key)?.map(|bytes| decode(&key, &bytes)).transpose()
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
        let start = match cursor {
            Some(c) => {
                let after = AccountId::parse(c).ok_or_else(bad_cursor)?;
                let mut key = account_key(after);
                key.push(0); // strictly after
                key
            }
            None => vec![PREFIX_ACCOUNT],
        };
        let mut items = Vec::new();
        for entry in self.tree.range(start..vec![PREFIX_ACCOUNT + 1]) {
            let (key, value) = entry?;
            let view: AccountView = decode(&key, &value)?;
            let wanted = filter.partner.is_none_or(|p| view.partner == Some(p) || view.id == p)
                && filter.status.is_none_or(|s| view.status == s)
                && filter.book.is_none_or(|b| view.book == b);
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
                    let hour = BUCKET_MICROS[0];
                    let end = ((cursor.div_euclid(hour) + 1) * hour).min(to);
                    for entry in self.tree.range(posting_key(account, cursor, 0)..posting_key(account, end, 0)) {
                        let (key, value) = entry?;
                        let (category, amount): (Category, Amount) = decode(&key, &value)?;
                        sums.add(category, amount);
                    }
                    cursor = end;
                }
            }
        }
        Ok(sums)
    }

    /// The statement of `account` for `[from, to)`; with `as_of`, as the ledger knew it
    /// at that global position (events recorded later are left out, whatever their
    /// business time).
    pub fn statement(
        &self,
        account: AccountId,
        from: Timestamp,
        to: Timestamp,
        as_of: Option<u64>,
    ) -> Result<Statement, ProjectionError> {
        if from > to {
            return Err(ProjectionError::InvalidQuery { field: "to", reason: "must not be before `from`".into() });
        }
        // Read the account view and sums at one consistent point of the tree.
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
        if let Some(as_of) = as_of.filter(|p| *p < position) {
            // Take back what was recorded after `as_of`: bounded by the account's events since.
            for entry in self.tree.range(event_key(account, as_of + 1)..event_key(account, u64::MAX)) {
                let (key, value) = entry?;
                let row: EventRow = decode(&key, &value)?;
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
            reflects = as_of;
        }
        Ok(Statement::from_sums(&view, from, to, opening, &period, reflects))
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
        let start = match cursor {
            Some(c) => {
                let (time, position) = c.split_once('-').ok_or_else(bad_cursor)?;
                let time: i64 = time.parse().map_err(|_| bad_cursor())?;
                let position: u64 = position.parse().map_err(|_| bad_cursor())?;
                posting_key(account, time, position.checked_add(1).ok_or_else(bad_cursor)?)
            }
            None => posting_key(account, from.micros(), 0),
        };
        let mut items = Vec::new();
        for entry in self.tree.range(start..posting_key(account, to.micros(), 0)) {
            let (key, value) = entry?;
            let (line_category, amount): (Category, Amount) = decode(&key, &value)?;
            if category.is_some_and(|c| c != line_category) {
                continue;
            }
            let line = StatementLine {
                position: u64::from_be_bytes(key[25..33].try_into().expect("8 bytes")),
                occurred_at: Timestamp(time_from_bytes(&key[17..25])),
                category: line_category,
                amount,
            };
            if items.len() == limit {
                let next_cursor =
                    items.last().map(|l: &StatementLine| format!("{}-{}", l.occurred_at.micros(), l.position));
                return Ok(Page { items, next_cursor });
            }
            items.push(line);
        }
        Ok(Page { items, next_cursor: None })
    }

    /// The events concerning `account`, in log order, after `after_position`.
    pub fn account_events(
        &self,
        account: AccountId,
        after_position: u64,
        limit: usize,
    ) -> Result<Page<(u64, EventRow)>, ProjectionError> {
        let limit = check_limit(limit)?;
        let mut items = Vec::new();
        let start = event_key(account, after_position.saturating_add(1));
        for entry in self.tree.range(start..event_key(account, u64::MAX)) {
            let (key, value) = entry?;
            let position = u64::from_be_bytes(key[17..25].try_into().expect("8 bytes"));
            if items.len() == limit {
                let next_cursor = items.last().map(|(p, _): &(u64, EventRow)| p.to_string());
                return Ok(Page { items, next_cursor });
            }
            items.push((position, decode(&key, &value)?));
        }
        Ok(Page { items, next_cursor: None })
    }

    pub fn cdr(&self, id: &str) -> Result<Option<CdrRow>, ProjectionError> {
        let key = cdr_key(id);
        self.tree.get(&key)?.map(|bytes| decode(&key, &bytes)).transpose()
    }

    /// CDRs of `account` that started in `[from, to)`, oldest first, filtered.
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
        let start = match cursor {
            Some(c) => {
                let (time, position) = c.split_once('-').ok_or_else(bad_cursor)?;
                let time: i64 = time.parse().map_err(|_| bad_cursor())?;
                let position: u64 = position.parse().map_err(|_| bad_cursor())?;
                account_cdr_key(account, time, position.checked_add(1).ok_or_else(bad_cursor)?)
            }
            None => account_cdr_key(account, from.micros(), 0),
        };
        let mut items = Vec::new();
        for entry in self.tree.range(start..account_cdr_key(account, to.micros(), 0)) {
            let (_, id) = entry?;
            let id = String::from_utf8_lossy(&id).into_owned();
            let row = self.cdr(&id)?.ok_or_else(|| ProjectionError::Corrupt {
                key: id.clone(),
                reason: "listed for the account but missing from the CDR store".into(),
            })?;
            let wanted = filter.answered.is_none_or(|a| row.cdr.answered() == a)
                && filter.hangup_cause.is_none_or(|c| row.cdr.hangup_cause == c)
                && filter.destination_prefix.as_deref().is_none_or(|p| row.cdr.callee.starts_with(p));
            if !wanted {
                continue;
            }
            if items.len() == limit {
                let next_cursor = items.last().map(|r: &CdrRow| format!("{}-{}", r.cdr.start.micros(), r.position));
                return Ok(Page { items, next_cursor });
            }
            items.push(row);
        }
        Ok(Page { items, next_cursor: None })
    }
}

fn uuid_from(bytes: &[u8]) -> Option<uuid::Uuid> {
    uuid::Uuid::from_slice(bytes).ok()
}
