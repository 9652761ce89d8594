//! Bulk CDR charging (`Ledger::charge_cdrs`, one writer message per book's group) gives
//! exactly what charging the same CDRs one by one in input order gives: the same answer
//! per CDR (charged, duplicate with the first charge's events, refused and why), the same
//! events in each book's stream, the same balances. Both run on the real sled store.

use std::sync::Arc;

use commands::{CommandError, CommandOutcome, EventStore, Ledger, SledStore, verify_book};
use domain::cdr::CdrInput;
use domain::rating::{CallDirection, Rate, Rounding, RoundingMode, Tariff};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, AccountStatus, BookId, Command, Currency, TariffId, Timestamp};
use futures::StreamExt;
use proptest::prelude::*;

const DAY0: i64 = 1_767_225_600;

/// Account numbers a CDR may name: the operator's customer (rated with a tariff), two
/// customers of P-1, one of P-2, a closed customer of P-1 (the writer refuses it), a
/// partner (rating refuses it: not a customer) and a number that does not exist.
const NUMBERS: [&str; 7] = ["C-0", "C-1", "C-2", "C-3", "C-4", "P-1", "C-X"];

/// The ids of the accounts and the tariff, the same in both ledgers compared.
struct Ids {
    partners: [AccountId; 2],
    customers: [AccountId; 5],
    tariff: TariffId,
}

impl Ids {
    fn new() -> Self {
        Ids {
            partners: std::array::from_fn(|_| AccountId::new()),
            customers: std::array::from_fn(|_| AccountId::new()),
            tariff: TariffId::new(),
        }
    }

    fn books(&self) -> Vec<BookId> {
        vec![BookId::OPERATOR, BookId::of_partner(self.partners[0]), BookId::of_partner(self.partners[1])]
    }
}

async fn ledger_with_accounts(dir: &std::path::Path, ids: &Ids) -> Ledger {
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir).unwrap());
    let ledger = Ledger::open(store).await.unwrap();
    let [p1, p2] = ids.partners;
    let [c0, c1, c2, c3, c4] = ids.customers;
    ledger.execute(open_partner(p1, "P-1", "0"), meta()).await.unwrap();
    ledger.execute(open_partner(p2, "P-2", "0"), meta()).await.unwrap();
    ledger.execute(open_customer(c0, None, "C-0", "0"), meta()).await.unwrap();
    ledger.execute(open_customer(c1, Some(p1), "C-1", "5"), meta()).await.unwrap();
    ledger.execute(open_customer(c2, Some(p1), "C-2", "0"), meta()).await.unwrap();
    ledger.execute(open_customer(c3, Some(p2), "C-3", "0"), meta()).await.unwrap();
    ledger.execute(open_customer(c4, Some(p1), "C-4", "0"), meta()).await.unwrap();
    let close = Command::ChangeStatus { account: c4, status: AccountStatus::Closed, reason: None };
    ledger.execute(close, meta()).await.unwrap();
    let tariff = Tariff {
        id: ids.tariff,
        name: "operator".into(),
        currency: Currency::parse("EUR").unwrap(),
        effective_from: Timestamp::from_seconds(DAY0),
        rounding: Rounding { decimals: 4, mode: RoundingMode::HalfUp },
        rates: vec![Rate {
            prefix: "4".into(),
            price_per_minute: amount("0.30"),
            connect_fee: amount("0.01"),
            minimum_seconds: 0,
            first_increment_seconds: 30,
            next_increment_seconds: 6,
        }],
    };
    ledger.publish_tariff(BookId::OPERATOR, tariff, meta()).await.unwrap();
    ledger.assign_tariff(c0, Some(ids.tariff), meta()).await.unwrap();
    ledger
}

/// A CDR: which account, which id (few ids, so that repeats are common, some with other
/// contents), how long, whether it carries its own costs, whether it was answered.
type CdrSpec = (usize, u16, u32, bool, bool);

fn cdr((number, id, seconds, pre_rated, answered): CdrSpec) -> CdrInput {
    let start = Timestamp::from_seconds(DAY0 + i64::from(id) * 60 + i64::from(seconds));
    let partnered = matches!(NUMBERS[number], "C-1" | "C-2" | "C-3" | "C-4");
    CdrInput {
        id: format!("cdr-{id}"),
        account: NUMBERS[number].into(),
        caller: "1".into(),
        callee: format!("4930{id:04}"),
        start,
        answer: answered.then_some(start),
        end: start.add_seconds(i64::from(seconds)),
        billable_seconds: if answered { seconds } else { 0 },
        hangup_cause: 16,
        direction: CallDirection::Outbound,
        cost: pre_rated.then(|| amount(&format!("0.{:03}", seconds % 1000))),
        partner_cost: (pre_rated && partnered).then(|| amount(&format!("0.{:03}", seconds % 500))),
        hangup_cause_raw: None,
        hangup_cause_flag: None,
    }
}

fn specs(max: usize) -> impl Strategy<Value = Vec<CdrSpec>> {
    prop::collection::vec((0..NUMBERS.len(), 0u16..40, 0u32..900, any::<bool>(), prop::bool::weighted(0.8)), 0..max)
}

/// What an answer says, without what differs between two ledgers by chance (event ids
/// and hashes are random, global positions depend on how books interleave, and the
/// book version reported is that of the writer's batch).
fn answer_of(outcome: &Result<CommandOutcome, CommandError>) -> String {
    match outcome {
        Err(error) => format!("refused: {error}"),
        Ok(outcome) => {
            let events: Vec<_> = outcome
                .events
                .iter()
                .map(|e| (e.event.envelope.version, e.event.envelope.occurred_at, &e.event.payload))
                .collect();
            format!("{} repeated={} {events:?} {:?}", outcome.book, outcome.repeated, outcome.balances)
        }
    }
}

/// Charges `cdrs` one at a time, each waiting for the previous one's answer.
async fn one_by_one(ledger: &Ledger, cdrs: &[CdrInput]) -> Vec<Result<CommandOutcome, CommandError>> {
    let mut outcomes = Vec::new();
    for cdr in cdrs {
        outcomes.push(ledger.charge_cdr(cdr, meta()).await);
    }
    outcomes
}

/// Each book's stream as (version, payload), and each book's accounts and charged CDRs.
async fn books_of(ledger: &Ledger, ids: &Ids) -> Vec<String> {
    let mut seen = Vec::new();
    for book in &ids.books() {
        let state = ledger.book_state(*book).await.unwrap();
        assert_eq!(verify_book(&**ledger.store(), *book).await.unwrap(), Ok(state.next_version));
        let mut events = Vec::new();
        while (events.len() as u64) < state.next_version {
            events.extend(ledger.store().read_stream(*book, events.len() as u64, usize::MAX).await.unwrap());
        }
        let stream: Vec<_> = events.iter().map(|e| (e.event.envelope.version, &e.event.payload)).collect();
        let mut accounts: Vec<_> = state.accounts.values().map(|a| (a.number.clone(), a.balance)).collect();
        accounts.sort();
        let mut charged: Vec<_> = state.charged_cdrs.iter().collect();
        charged.sort();
        seen.push(format!("{book} {} {stream:?} {accounts:?} {charged:?}", state.next_version));
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A first file, then a second that repeats some of its ids (repeats of earlier
    /// batches, read back from the store) and itself (repeats within a batch).
    #[test]
    fn bulk_charging_equals_charging_one_by_one(earlier in specs(30), cdrs in specs(120)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let earlier: Vec<CdrInput> = earlier.into_iter().map(cdr).collect();
            let cdrs: Vec<CdrInput> = cdrs.into_iter().map(cdr).collect();
            let (bulk_dir, single_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let ids = Ids::new();
            let bulk = ledger_with_accounts(bulk_dir.path(), &ids).await;
            let single = ledger_with_accounts(single_dir.path(), &ids).await;
            let mut bulk_answers = bulk.charge_cdrs(earlier.clone(), &meta()).await;
            bulk_answers.extend(bulk.charge_cdrs(cdrs.clone(), &meta()).await);
            let mut single_answers = one_by_one(&single, &earlier).await;
            single_answers.extend(one_by_one(&single, &cdrs).await);
            prop_assert_eq!(bulk_answers.len(), earlier.len() + cdrs.len());
            for (n, (b, s)) in bulk_answers.iter().zip(&single_answers).enumerate() {
                prop_assert_eq!(answer_of(b), answer_of(s), "answer {}", n);
            }
            prop_assert_eq!(books_of(&bulk, &ids).await, books_of(&single, &ids).await);
            bulk.shutdown().await;
            single.shutdown().await;
            Ok(())
        })?;
    }
}

/// More CDRs than one bulk message and one writer batch carry, over several books, with
/// repeats far apart: each book's CDRs are charged in input order across messages and
/// batches, every CDR is answered in its place, and the streams are those that the
/// per-command path (each CDR its own message, in input order) writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_answered_in_order_across_messages_and_batches() {
    let specs: Vec<CdrSpec> = (0..12_000u32)
        .map(|n| ((n % 5) as usize, ((n * 7919) % 9_000) as u16, n % 700, n % 3 == 0, n % 7 != 0))
        .collect();
    let cdrs: Vec<CdrInput> = specs.into_iter().map(cdr).collect();
    let (bulk_dir, single_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ids = Ids::new();
    let bulk = ledger_with_accounts(bulk_dir.path(), &ids).await;
    let single = ledger_with_accounts(single_dir.path(), &ids).await;
    let bulk_answers = bulk.charge_cdrs(cdrs.clone(), &meta()).await;
    // The per-command path, concurrent so that its writers batch too: each CDR is queued
    // on its first poll, and `buffered` polls in input order.
    let single_answers: Vec<_> =
        futures::stream::iter(&cdrs).map(|cdr| single.charge_cdr(cdr, meta())).buffered(2048).collect().await;
    let repeated = bulk_answers.iter().filter(|a| a.as_ref().is_ok_and(|o| o.repeated)).count();
    assert!(repeated > 1000, "the file repeats ids: {repeated} repeats");
    let refused = bulk_answers.iter().filter(|a| a.is_err()).count();
    assert!(refused > 1000, "the closed account refuses: {refused} refusals");
    for (n, (b, s)) in bulk_answers.iter().zip(&single_answers).enumerate() {
        assert_eq!(answer_of(b), answer_of(s), "answer {n}");
    }
    assert_eq!(books_of(&bulk, &ids).await, books_of(&single, &ids).await);
}

/// Many books with few CDRs each: no book's group fills a message, so the groups go out
/// when too many CDRs are held back, all at once, and at the end; the answers are still
/// those of the per-command path, in input order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_books_with_few_cdrs_each_are_sent_before_the_end() {
    let partners: Vec<AccountId> = (0..40).map(|_| AccountId::new()).collect();
    let customers: Vec<AccountId> = (0..40).map(|_| AccountId::new()).collect();
    let start = Timestamp::from_seconds(DAY0);
    let cdrs: Vec<CdrInput> = (0..12_000u32)
        .map(|n| CdrInput {
            id: format!("cdr-{}", n % 11_000),
            account: format!("C-{}", n % 40),
            caller: "1".into(),
            callee: "4930".into(),
            start,
            answer: Some(start),
            end: start.add_seconds(i64::from(n % 300)),
            billable_seconds: n % 300,
            hangup_cause: 16,
            direction: CallDirection::Outbound,
            cost: Some(amount("0.01")),
            partner_cost: Some(amount("0.005")),
            hangup_cause_raw: None,
            hangup_cause_flag: None,
        })
        .collect();
    let mut answers = Vec::new();
    for bulk in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let ledger = Ledger::open(store).await.unwrap();
        for (n, (partner, customer)) in partners.iter().zip(&customers).enumerate() {
            ledger.execute(open_partner(*partner, &format!("P-{n}"), "0"), meta()).await.unwrap();
            ledger.execute(open_customer(*customer, Some(*partner), &format!("C-{n}"), "0"), meta()).await.unwrap();
        }
        answers.push(if bulk {
            ledger.charge_cdrs(cdrs.clone(), &meta()).await
        } else {
            futures::stream::iter(&cdrs).map(|cdr| ledger.charge_cdr(cdr, meta())).buffered(2048).collect().await
        });
    }
    let repeated = answers[0].iter().filter(|a| a.as_ref().is_ok_and(|o| o.repeated)).count();
    assert_eq!(repeated, 1000, "ids 0..1000 come twice, each time for the same account");
    for (n, (b, s)) in answers[0].iter().zip(&answers[1]).enumerate() {
        assert_eq!(answer_of(b), answer_of(s), "answer {n}");
    }
}
