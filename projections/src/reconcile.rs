//! Reconciliation: an outside CDR file (a switch's or a carrier's) against the CDRs
//! the ledger charged in a period. Each call is matched by its account and id; the
//! report says which matched, which are missing on either side and whose costs differ.

use std::collections::BTreeMap;

use domain::{AccountId, Amount, Timestamp};
use serde::Serialize;

use crate::error::ProjectionError;
use crate::models::{AccountFilter, CdrFilter, PAGE_SIZE_MAX, Snapshot};

/// A call as either side tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub account: String,
    pub id: String,
    pub start: Timestamp,
    /// The customer's cost; a file may leave it out (then only presence is compared).
    pub cost: Option<Amount>,
    pub partner_cost: Option<Amount>,
    /// The file's line, for rows of a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// A call whose costs the two sides disagree on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CostDifference {
    pub file: CallRecord,
    pub ledger: CallRecord,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub file_calls: u64,
    pub ledger_calls: u64,
    /// Sum of the file's costs over the period (rows without a cost count 0).
    pub file_cost: Amount,
    pub ledger_cost: Amount,
    pub file_partner_cost: Amount,
    pub ledger_partner_cost: Amount,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub from: Timestamp,
    pub to: Timestamp,
    pub matched: u64,
    pub missing_in_ledger: Vec<CallRecord>,
    pub missing_in_file: Vec<CallRecord>,
    pub cost_differs: Vec<CostDifference>,
    /// File rows that started outside the period: not compared.
    pub outside_period: u64,
    /// File rows that appear twice (same account and id): the later ones are not compared.
    pub repeated_in_file: Vec<CallRecord>,
    /// File rows that are not a valid CDR: not compared.
    pub unreadable: Vec<UnreadableRow>,
    pub totals: Totals,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnreadableRow {
    pub line: u64,
    /// The machine code and the field at fault, as the API names them.
    pub error: &'static str,
    pub field: Option<&'static str>,
    pub message: String,
}

/// Reads an outside CDR file in the ledger's CSV format (the columns of a CDR upload or
/// export): its calls, and the rows that are not valid CDRs.
pub fn file_calls<R: std::io::Read>(input: R) -> Result<(Vec<CallRecord>, Vec<UnreadableRow>), domain::DomainError> {
    let mut table = domain::csv_file::cdr_table(input)?;
    let (mut calls, mut unreadable) = (Vec::new(), Vec::new());
    while let Some((line, parsed)) = domain::csv_file::next_cdr(&mut table) {
        match parsed {
            Ok(cdr) => calls.push(CallRecord {
                account: cdr.account,
                id: cdr.id,
                start: cdr.start,
                cost: cdr.cost,
                partner_cost: cdr.partner_cost,
                line: Some(line),
            }),
            Err(error) => unreadable.push(UnreadableRow {
                line,
                error: error.code(),
                field: error.field(),
                message: error.to_string(),
            }),
        }
    }
    if let Some(failure) = table.io_failure() {
        return Err(domain::DomainError::InvalidField { field: "file", reason: format!("unreadable: {failure}") });
    }
    Ok((calls, unreadable))
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.missing_in_ledger.is_empty()
            && self.missing_in_file.is_empty()
            && self.cost_differs.is_empty()
            && self.repeated_in_file.is_empty()
            && self.unreadable.is_empty()
    }
}

/// Compares the file's calls with the ledger's over `[from, to)` by start time. Pure:
/// both sides are given; see [`ledger_calls`] for the ledger's.
pub fn reconcile(
    from: Timestamp,
    to: Timestamp,
    file: impl IntoIterator<Item = CallRecord>,
    ledger: impl IntoIterator<Item = CallRecord>,
) -> Report {
    let mut report = Report { from, to, ..Report::default() };
    let mut in_file: BTreeMap<(String, String), CallRecord> = BTreeMap::new();
    for record in file {
        if record.start < from || record.start >= to {
            report.outside_period += 1;
            continue;
        }
        let key = (record.account.clone(), record.id.clone());
        if in_file.contains_key(&key) {
            report.repeated_in_file.push(record);
            continue;
        }
        report.totals.file_calls += 1;
        report.totals.file_cost += record.cost.unwrap_or(Amount::ZERO);
        report.totals.file_partner_cost += record.partner_cost.unwrap_or(Amount::ZERO);
        in_file.insert(key, record);
    }
    for record in ledger {
        report.totals.ledger_calls += 1;
        report.totals.ledger_cost += record.cost.unwrap_or(Amount::ZERO);
        report.totals.ledger_partner_cost += record.partner_cost.unwrap_or(Amount::ZERO);
        match in_file.remove(&(record.account.clone(), record.id.clone())) {
            None => report.missing_in_file.push(record),
            Some(file) => {
                // Compared as numbers: 0.10 and 0.1 are the same cost.
                let differs = |file: Option<Amount>, ledger: Option<Amount>| {
                    file.is_some_and(|f| f != ledger.unwrap_or(Amount::ZERO))
                };
                if differs(file.cost, record.cost) || differs(file.partner_cost, record.partner_cost) {
                    report.cost_differs.push(CostDifference { file, ledger: record });
                } else {
                    report.matched += 1;
                }
            }
        }
    }
    report.missing_in_ledger = in_file.into_values().collect();
    report.missing_in_ledger.sort_by(|a, b| (a.start, &a.account, &a.id).cmp(&(b.start, &b.account, &b.id)));
    report
}

/// The calls the ledger charged to `accounts` (customers) that started in `[from, to)`,
/// named by account number, as one snapshot of the read models holds them.
pub async fn ledger_calls(
    models: &Snapshot,
    accounts: &[(AccountId, String)],
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<CallRecord>, ProjectionError> {
    let mut calls = Vec::new();
    for (account, number) in accounts {
        let mut cursor = None;
        loop {
            let page = models.cdrs(*account, from, to, &CdrFilter::default(), cursor.as_deref(), PAGE_SIZE_MAX).await?;
            // A partner's list also holds its customers' calls; only the customer's own count.
            calls.extend(page.items.into_iter().filter(|row| row.account == *account).map(|row| CallRecord {
                account: number.clone(),
                id: row.cdr.id,
                start: row.cdr.start,
                cost: Some(row.customer_cost),
                partner_cost: row.partner_cost,
                line: None,
            }));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(calls)
}

/// Every customer account the filter keeps, with its number.
pub fn customer_accounts(
    models: &Snapshot,
    filter: &AccountFilter,
) -> Result<Vec<(AccountId, String)>, ProjectionError> {
    let filter = AccountFilter { kind: Some(domain::AccountKind::Customer), ..filter.clone() };
    let mut accounts = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = models.accounts(&filter, cursor.as_deref(), PAGE_SIZE_MAX)?;
        accounts.extend(page.items.into_iter().map(|view| (view.id, view.number)));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn call(account: u8, id: u16, cost: i64) -> CallRecord {
        CallRecord {
            account: format!("C{account}"),
            id: format!("cdr-{id}"),
            start: Timestamp::from_seconds(1_000 + i64::from(id)),
            cost: Some(Amount(rust_decimal::Decimal::new(cost, 2))),
            partner_cost: None,
            line: None,
        }
    }

    #[derive(Clone, Debug)]
    enum Change {
        Remove,
        Add,
        Alter,
    }

    proptest! {
        /// Against its own export the ledger finds nothing; against a file with random
        /// rows removed, added or altered it finds exactly those.
        #[test]
        fn finds_exactly_what_changed(
            ledger in prop::collection::btree_map((0u8..4, 0u16..500), 0i64..10_000, 0..60),
            changes in prop::collection::vec((0usize..60, prop_oneof![Just(Change::Remove), Just(Change::Add), Just(Change::Alter)]), 0..20),
        ) {
            let ledger: Vec<CallRecord> = ledger.into_iter().map(|((a, id), cost)| call(a, id, cost)).collect();
            let (from, to) = (Timestamp::from_seconds(0), Timestamp::from_seconds(10_000));
            let clean = reconcile(from, to, ledger.clone(), ledger.clone());
            prop_assert!(clean.is_clean());
            prop_assert_eq!(clean.matched, ledger.len() as u64);
            prop_assert_eq!(clean.totals.file_cost, clean.totals.ledger_cost);

            let mut file = ledger.clone();
            let (mut removed, mut added, mut altered) = (Vec::new(), Vec::new(), Vec::new());
            let mut extras = 0u16;
            for (index, change) in changes {
                match change {
                    Change::Add => {
                        extras += 1;
                        let extra = call(9, 1_000 + extras, 1);
                        added.push(extra.id.clone());
                        file.push(extra);
                    }
                    Change::Remove | Change::Alter if file.is_empty() => {}
                    Change::Remove => {
                        let gone = file.remove(index % file.len());
                        if gone.account != "C9" {
                            altered.retain(|id| *id != (gone.account.clone(), gone.id.clone()));
                            removed.push((gone.account, gone.id));
                        } else {
                            added.retain(|id| *id != gone.id);
                        }
                    }
                    Change::Alter => {
                        let index = index % file.len();
                        if file[index].account != "C9" {
                            let row = &mut file[index];
                            row.cost = Some(row.cost.unwrap() + Amount(rust_decimal::Decimal::new(1, 2)));
                            let key = (row.account.clone(), row.id.clone());
                            if !altered.contains(&key) {
                                altered.push(key);
                            }
                        }
                    }
                }
            }
            let report = reconcile(from, to, file, ledger.clone());
            let mut missing_in_file: Vec<_> = report.missing_in_file.iter().map(|r| (r.account.clone(), r.id.clone())).collect();
            let mut differs: Vec<_> = report.cost_differs.iter().map(|d| (d.ledger.account.clone(), d.ledger.id.clone())).collect();
            let mut missing_in_ledger: Vec<_> = report.missing_in_ledger.iter().map(|r| r.id.clone()).collect();
            for list in [&mut removed, &mut missing_in_file, &mut altered, &mut differs] {
                list.sort();
            }
            missing_in_ledger.sort();
            added.sort();
            prop_assert_eq!(missing_in_file, removed.clone());
            prop_assert_eq!(differs, altered.clone());
            prop_assert_eq!(missing_in_ledger, added);
            prop_assert_eq!(report.matched as usize, ledger.len() - removed.len() - altered.len());
        }
    }

    #[test]
    fn rows_outside_the_period_and_repeats_are_set_apart() {
        let (from, to) = (Timestamp::from_seconds(1_000), Timestamp::from_seconds(1_100));
        let inside = call(1, 5, 10);
        let outside = call(1, 200, 10);
        let report = reconcile(from, to, vec![inside.clone(), outside, inside.clone()], vec![inside]);
        assert_eq!((report.matched, report.outside_period, report.repeated_in_file.len()), (1, 1, 1));
        assert!(!report.is_clean());
    }

    #[test]
    fn a_file_without_costs_compares_presence_only_and_equal_decimals_match() {
        let (from, to) = (Timestamp::from_seconds(0), Timestamp::from_seconds(10_000));
        let mut file = call(1, 1, 10);
        file.cost = None;
        let mut scaled = call(1, 2, 10);
        scaled.cost = Some(Amount(rust_decimal::Decimal::new(1000, 4)));
        let report = reconcile(from, to, vec![file, scaled], vec![call(1, 1, 10), call(1, 2, 10)]);
        assert_eq!(report.matched, 2);
        assert!(report.is_clean());
    }
}
