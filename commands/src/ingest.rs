//! Bulk input: CSV files of CDRs, payments and tariff rates, read row by row (a bad
//! row rejects only itself), and charging many CDRs at once. Shared by the HTTP API and
//! the `tollbook import` command, so that a file gets the same answer either way.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;

use domain::cdr::CdrInput;
use domain::rating::Rate;
use domain::{Amount, BookId, Command, CommandMeta, DomainError, Idempotency};
use eventlog::StoreError;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sha2::{Digest, Sha256};

use crate::error::CommandError;
use crate::ledger::Ledger;
use crate::writer::{BULK_COMMANDS_MAX, BookHandle, CommandOutcome};

// The CSV table and the CDR file format are domain's (pure parsing, shared with the
// read side's reconciliation); re-exported where the API has always found them.
pub use domain::csv_file::{
    CDR_EXPORT_EXTRA_FIELDS, CsvTable, FORMULA_TRIGGERS, RowFields, cdr_table, neutralised_cell, next_cdr,
    restored_cell,
};

/// Payments recorded at once: enough to fill a writer's batch, few enough never to
/// overflow its queue.
pub const PAYMENTS_IN_FLIGHT_MAX: usize = 2048;

/// The columns of a payments file. `id` is the payment's idempotency key, which makes a
/// rerun of the same file record nothing twice.
pub const PAYMENT_FIELDS: [&str; 6] = ["id", "account", "amount", "occurred_at", "method", "reference"];

/// The columns of a tariff's rate table.
pub const RATE_FIELDS: [&str; 6] = [
    "prefix",
    "price_per_minute",
    "connect_fee",
    "minimum_seconds",
    "first_increment_seconds",
    "next_increment_seconds",
];

/// A payment as a file row gives it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PaymentRow {
    pub id: String,
    pub account: String,
    pub amount: Amount,
    pub occurred_at: Option<domain::Timestamp>,
    pub method: Option<String>,
    pub reference: Option<String>,
}

pub fn payment_table<R: Read>(input: R) -> Result<CsvTable<R>, DomainError> {
    CsvTable::open(input, &PAYMENT_FIELDS, &["id", "account", "amount"])
}

pub fn next_payment<R: Read>(table: &mut CsvTable<R>) -> Option<(u64, Result<PaymentRow, DomainError>)> {
    table.next_row(|fields| {
        let get = |name: &str| fields.get(name);
        let required = |name: &'static str| {
            get(name).ok_or(DomainError::InvalidField { field: name, reason: "is required".into() })
        };
        let id = required("id")?.to_owned();
        domain::ids::validate_identifier("id", &id)?;
        let amount = Amount::parse_input(required("amount")?, domain::money::INPUT_SCALE_MAX_DEFAULT)?;
        let occurred_at = get("occurred_at")
            .map(|text| {
                domain::Timestamp::parse(text).ok_or(DomainError::InvalidField {
                    field: "occurred_at",
                    reason: "expected RFC 3339 or YYYY-MM-DD".into(),
                })
            })
            .transpose()?;
        Ok(PaymentRow {
            id,
            account: required("account")?.to_owned(),
            amount,
            occurred_at,
            method: get("method").map(str::to_owned),
            reference: get("reference").map(str::to_owned),
        })
    })
}

/// A tariff's rate table from CSV text; the first bad row refuses the whole table, since
/// a tariff with a hole in it would misprice calls.
pub fn rates_from_csv(text: &str) -> Result<Vec<Rate>, DomainError> {
    let mut table = CsvTable::open(text.as_bytes(), &RATE_FIELDS, &["prefix", "price_per_minute"])?;
    let mut rates = Vec::new();
    while let Some((line, rate)) = table.next_row(|fields| {
        let get = |name: &str| fields.get(name);
        let seconds = |name: &'static str, default: u32| {
            get(name)
                .map(|text| {
                    text.parse::<u32>().map_err(|_| DomainError::InvalidField {
                        field: name,
                        reason: format!("`{text}` is not a whole number of seconds"),
                    })
                })
                .unwrap_or(Ok(default))
        };
        let amount = |name: &'static str| {
            get(name)
                .map(|text| {
                    Amount::parse_input(text, domain::rating_engine::ROUNDING_DECIMALS_MAX)
                        .map_err(|e| DomainError::InvalidField { field: name, reason: e.to_string() })
                })
                .unwrap_or(Ok(Amount::ZERO))
        };
        Ok(Rate {
            prefix: get("prefix").unwrap_or_default().to_owned(),
            price_per_minute: amount("price_per_minute")?,
            connect_fee: amount("connect_fee")?,
            minimum_seconds: seconds("minimum_seconds", 0)?,
            first_increment_seconds: seconds("first_increment_seconds", 60)?,
            next_increment_seconds: seconds("next_increment_seconds", 60)?,
        })
    }) {
        rates.push(rate.map_err(|e| DomainError::InvalidField {
            field: "rates",
            reason: format!("line {line}: {}", e.field().map_or_else(|| e.to_string(), |f| format!("{f}: {e}"))),
        })?);
    }
    Ok(rates)
}

/// CDRs a bulk charge has handed to the book writers and not yet seen answered: four
/// writer batches, so that the writers of the busiest books have their next batch queued
/// while one is flushed. Bulk messages are at least one CDR, so this also keeps one
/// caller from ever filling a writer's queue.
pub const BULK_CDRS_IN_FLIGHT_MAX: usize = 4 * crate::writer::BATCH_COMMANDS_MAX;
/// Rated CDRs a bulk charge holds back in partly filled groups. With many books a group
/// may take long to fill; past this many, every group is sent as it is, so that the
/// writers are not left waiting for the end of the input.
const BULK_CDRS_UNSENT_MAX: usize = BULK_CDRS_IN_FLIGHT_MAX;

/// The rated CDRs of one book waiting to be sent as one bulk message, with their places
/// in the input.
struct BookGroup {
    /// The book's writer, or why it could not be started.
    handle: Result<BookHandle, String>,
    items: Vec<(Command, CommandMeta)>,
    indexes: Vec<usize>,
}

impl BookGroup {
    /// Room for a whole message, so that filling one does not grow it step by step.
    fn new(handle: Result<BookHandle, String>) -> Self {
        BookGroup {
            handle,
            items: Vec::with_capacity(BULK_COMMANDS_MAX),
            indexes: Vec::with_capacity(BULK_COMMANDS_MAX),
        }
    }
}

type GroupAnswers = (Vec<usize>, Vec<Result<CommandOutcome, CommandError>>);

impl Ledger {
    /// Rates and charges many CDRs and answers per CDR in input order, exactly as
    /// [`Ledger::charge_cdr`] would one by one in that order. Rated CDRs are grouped by
    /// book and each group goes to its book's writer as one bulk message (one channel
    /// hop and one reply for up to [`BULK_COMMANDS_MAX`] CDRs instead of one each); a
    /// book's CDRs keep their input order, so the first of two with the same id is the
    /// one charged. `meta` is each charge's metadata; CDRs need no idempotency key, their
    /// ids already make a repeat a duplicate.
    pub async fn charge_cdrs(
        &self,
        cdrs: Vec<CdrInput>,
        meta: &CommandMeta,
    ) -> Vec<Result<CommandOutcome, CommandError>> {
        self.queue_cdrs(cdrs, meta).await.answers().await
    }

    /// The first half of [`Ledger::charge_cdrs`]: rates the CDRs and hands every one to
    /// its book's writer (waiting for answers only to stay within
    /// [`BULK_CDRS_IN_FLIGHT_MAX`]). A caller with more CDRs (the next chunk of a file)
    /// may queue them as soon as this returns, before these are durable: each book still
    /// gets them in input order, and its writer does not wait for the caller in between.
    pub async fn queue_cdrs(&self, cdrs: Vec<CdrInput>, meta: &CommandMeta) -> QueuedCdrs {
        let mut answers: Vec<Option<Result<CommandOutcome, CommandError>>> = (0..cdrs.len()).map(|_| None).collect();
        let meta = CommandMeta { idempotency: None, ..meta.clone() };
        let mut groups: HashMap<BookId, BookGroup> = HashMap::new();
        let mut in_flight = FuturesUnordered::new();
        let (mut in_flight_cdrs, mut unsent_cdrs) = (0, 0);
        for (index, cdr) in cdrs.into_iter().enumerate() {
            if index % BULK_COMMANDS_MAX == BULK_COMMANDS_MAX - 1 {
                // Rating is all CPU and may not wait for anything for a long while: let the
                // worker thread run other tasks (a server's requests) in between.
                tokio::task::yield_now().await;
            }
            let (book, charge) = match self.rate_in_book(&cdr) {
                Ok(rated) => rated,
                // As in `charge_cdr`: a CDR that cannot be rated may still be a duplicate,
                // answered with its first charge. The book is asked only after it has been
                // sent this call's earlier CDRs, which may hold that first charge.
                Err(refusal) => {
                    let Some(customer) = self.account(&cdr.account) else {
                        answers[index] = Some(Err(refusal));
                        continue;
                    };
                    if let Some(group) = groups.get_mut(&customer.book).filter(|g| !g.items.is_empty()) {
                        unsent_cdrs -= group.items.len();
                        in_flight_cdrs += group.items.len();
                        in_flight.push(send_group(group));
                    }
                    match self.first_charge(&cdr).await {
                        Ok(Some(first)) => (customer.book, first),
                        Ok(None) => {
                            answers[index] = Some(Err(refusal));
                            continue;
                        }
                        Err(error) => {
                            answers[index] = Some(Err(error));
                            continue;
                        }
                    }
                }
            };
            let group = match groups.entry(book) {
                Entry::Occupied(group) => group.into_mut(),
                Entry::Vacant(slot) => slot.insert(BookGroup::new(self.writer(book).await.map_err(|e| e.to_string()))),
            };
            // The charge's business time is the call's start, as in `charge_cdr`.
            group.items.push((Command::ChargeCall(charge), CommandMeta { occurred_at: cdr.start, ..meta.clone() }));
            group.indexes.push(index);
            unsent_cdrs += 1;
            if group.items.len() == BULK_COMMANDS_MAX {
                unsent_cdrs -= BULK_COMMANDS_MAX;
                in_flight_cdrs += BULK_COMMANDS_MAX;
                in_flight.push(send_group(group));
            } else if unsent_cdrs >= BULK_CDRS_UNSENT_MAX {
                for group in groups.values_mut().filter(|g| !g.items.is_empty()) {
                    in_flight_cdrs += group.items.len();
                    in_flight.push(send_group(group));
                }
                unsent_cdrs = 0;
            }
            while in_flight_cdrs > BULK_CDRS_IN_FLIGHT_MAX {
                let (indexes, outcomes) = in_flight.next().await.expect("CDRs are in flight");
                in_flight_cdrs -= indexes.len();
                place(&mut answers, indexes, outcomes);
            }
        }
        for group in groups.values_mut().filter(|g| !g.items.is_empty()) {
            in_flight.push(send_group(group));
        }
        QueuedCdrs { answers, in_flight }
    }
}

/// CDRs handed to their writers by [`Ledger::queue_cdrs`], some already answered.
pub struct QueuedCdrs {
    answers: Vec<Option<Result<CommandOutcome, CommandError>>>,
    in_flight: FuturesUnordered<futures::future::BoxFuture<'static, GroupAnswers>>,
}

impl QueuedCdrs {
    /// The answer of every CDR, in input order, once all are durable (or refused).
    pub async fn answers(mut self) -> Vec<Result<CommandOutcome, CommandError>> {
        while let Some((indexes, outcomes)) = self.in_flight.next().await {
            place(&mut self.answers, indexes, outcomes);
        }
        // Every CDR was refused by rating or sent in exactly one group.
        self.answers.into_iter().map(|a| a.expect("every CDR is answered")).collect()
    }
}

/// Sends `group`'s CDRs to its writer at once and empties it; the future gives their
/// answers with their places.
fn send_group(group: &mut BookGroup) -> futures::future::BoxFuture<'static, GroupAnswers> {
    let BookGroup { items, indexes, .. } = std::mem::replace(group, BookGroup::new(group.handle.clone()));
    match &group.handle {
        Ok(handle) => {
            let answer = handle.submit_many(items);
            Box::pin(async move { (indexes, answer.await) })
        }
        Err(failure) => {
            let failed = indexes.iter().map(|_| Err(CommandError::Store(StoreError::Io(failure.clone())))).collect();
            Box::pin(async move { (indexes, failed) })
        }
    }
}

fn place(
    answers: &mut [Option<Result<CommandOutcome, CommandError>>],
    indexes: Vec<usize>,
    outcomes: Vec<Result<CommandOutcome, CommandError>>,
) {
    assert_eq!(indexes.len(), outcomes.len(), "a bulk message answers each of its commands");
    for (index, outcome) in indexes.into_iter().zip(outcomes) {
        answers[index] = Some(outcome);
    }
}

impl Ledger {
    /// Records many payments, concurrently, answering per row in input order. Each row's
    /// `id` is its idempotency key: a rerun of the same file records nothing twice, and
    /// the same id with another row is refused (`idempotency_key_reused`).
    pub async fn receive_payments(
        &self,
        rows: Vec<PaymentRow>,
        meta: &CommandMeta,
    ) -> Vec<Result<CommandOutcome, CommandError>> {
        futures::stream::iter(rows)
            .map(|row| {
                let meta = meta.clone();
                async move {
                    let account =
                        self.account(&row.account).ok_or_else(|| CommandError::UnknownAccount(row.account.clone()))?;
                    let digest: [u8; 32] = Sha256::digest(postcard::to_allocvec(&row).expect("a row encodes")).into();
                    let meta = CommandMeta {
                        occurred_at: row.occurred_at.unwrap_or(meta.occurred_at),
                        idempotency: Some(Idempotency { key: row.id, request_digest: digest }),
                        ..meta
                    };
                    let command = Command::ReceivePayment {
                        account: account.id,
                        amount: row.amount,
                        method: row.method,
                        reference: row.reference,
                    };
                    self.execute(command, meta).await
                }
            })
            .buffered(PAYMENTS_IN_FLIGHT_MAX)
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_with_defaults_and_name_the_bad_line() {
        let rates =
            rates_from_csv("prefix,price_per_minute,first_increment_seconds\n49,0.10,30\n4930,0.05,\n").unwrap();
        assert_eq!(rates.len(), 2);
        assert_eq!((rates[0].first_increment_seconds, rates[0].next_increment_seconds), (30, 60));
        assert_eq!(rates[1].connect_fee, Amount::ZERO);
        let error = rates_from_csv("prefix,price_per_minute\n49,0.10\n33,cheap\n").unwrap_err();
        assert_eq!(error.field(), Some("rates"));
        assert!(error.to_string().contains("line 3"), "{error}");
    }

    #[test]
    fn payments_read_with_their_idempotency_key() {
        let file = "id,account,amount,occurred_at\np-1,C-1,10.50,2026-02-01\np-2,C-1,ten,\n";
        let mut table = payment_table(file.as_bytes()).unwrap();
        let first = next_payment(&mut table).unwrap().1.unwrap();
        assert_eq!((first.id.as_str(), first.amount), ("p-1", "10.50".parse().unwrap()));
        assert!(next_payment(&mut table).unwrap().1.is_err());
        assert!(next_payment(&mut table).is_none());
    }
}
