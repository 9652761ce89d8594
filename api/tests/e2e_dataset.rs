//! `tollbook dataset`, the standard benchmark data set, on the real binary: the same seed
//! gives the same ledger (every account's details and statements), another seed another
//! one; the events are the promised mix; money is conserved across the whole set.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use common::{ADMIN_KEY, Server, send, tollbook};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;

const PARTNERS: u64 = 3;
const CUSTOMERS: u64 = 8;
const EVENTS: u64 = 3000;
/// The operator's tariff; per partner its account, retail tariff and assignment; per
/// customer its account and assignment.
const SETUP_EVENTS: u64 = 1 + PARTNERS * (3 + 2 * CUSTOMERS);
/// Statements compared: the whole year, and two months of it.
const PERIODS: [(&str, &str); 3] =
    [("2025-01-01", "2026-01-01"), ("2025-03-01", "2025-04-01"), ("2025-10-01", "2025-11-01")];

/// A small set's data directory, generated and replayed.
fn generate(data: &Path, seed: u64) {
    let (partners, customers, events, seed) =
        (PARTNERS.to_string(), CUSTOMERS.to_string(), EVENTS.to_string(), seed.to_string());
    let args = ["dataset", "--events", &events, "--partners", &partners, "--customers", &customers, "--seed", &seed];
    let (ok, out, err) = tollbook(&args, data);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("wrote {EVENTS} events")), "{out}");
    let (ok, out, err) = tollbook(&["replay"], data);
    assert!(ok, "{out}{err}");
}

/// An account's postings in one event: its number, the statement category, the amount.
type Posting = (String, String, Decimal);

/// What the API says about every account of a data set.
struct Ledger {
    /// By number: the account's details.
    accounts: BTreeMap<String, Value>,
    /// By number and period: the statement, without the position it reflects (positions
    /// interleave the books as they happened to be written).
    statements: BTreeMap<(String, &'static str), Value>,
    /// By global position: the event's type and every account's postings in it.
    events: BTreeMap<u64, (String, Vec<Posting>)>,
}

async fn get(server: &Server, path: &str) -> Value {
    let (status, body) = send(reqwest::Client::new().get(server.url(path)).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

fn amount(value: &Value) -> Decimal {
    Decimal::from_str(&value.to_string()).unwrap_or_else(|_| panic!("not an amount: {value}"))
}

async fn read_ledger(data: &Path) -> Ledger {
    let server = Server::start(data, &["--admin-key", ADMIN_KEY]).await;
    let mut ledger = Ledger { accounts: BTreeMap::new(), statements: BTreeMap::new(), events: BTreeMap::new() };
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(cursor) => get(&server, &format!("/api/v1/accounts?limit=1000&cursor={cursor}")).await,
            None => get(&server, "/api/v1/accounts?limit=1000").await,
        };
        for account in page["accounts"].as_array().unwrap() {
            ledger.accounts.insert(account["number"].as_str().unwrap().to_owned(), account.clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for number in ledger.accounts.keys() {
        for (index, (from, to)) in PERIODS.iter().enumerate() {
            let path = format!("/api/v1/accounts/{number}/statement?from={from}&to={to}");
            let mut statement = get(&server, &path).await["statement"].clone();
            statement.as_object_mut().unwrap().remove("position");
            ledger.statements.insert((number.clone(), ["year", "march", "october"][index]), statement);
        }
        let mut after = 0;
        loop {
            let page = get(&server, &format!("/api/v1/accounts/{number}/events?limit=1000&after={after}")).await;
            for event in page["events"].as_array().unwrap() {
                let position = event["position"].as_u64().unwrap();
                let entry = ledger
                    .events
                    .entry(position)
                    .or_insert_with(|| (event["type"].as_str().unwrap().to_owned(), vec![]));
                for posting in event["postings"].as_array().unwrap() {
                    let category = posting["category"].as_str().unwrap().to_owned();
                    entry.1.push((number.clone(), category, amount(&posting["amount"])));
                }
            }
            match page["next_after"].as_u64() {
                Some(next) => after = next,
                None => break,
            }
        }
    }
    server.stop();
    ledger
}

/// How a posting of `category` moves the balance.
fn balance_effect(category: &str, amount: Decimal) -> Decimal {
    match category {
        "payments" | "transfers_in" => amount,
        "adjustments" | "call_charges" | "other_charges" | "transfers_out" => -amount,
        other => panic!("unknown category {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_one_ledger_in_the_promised_mix_with_money_conserved() {
    let dir = tempfile::tempdir().unwrap();
    let (first, again, other) = (dir.path().join("first"), dir.path().join("again"), dir.path().join("other"));
    generate(&first, 7);
    generate(&again, 7);
    generate(&other, 8);
    let (first, again, other) = (read_ledger(&first).await, read_ledger(&again).await, read_ledger(&other).await);

    // Same seed: every account and every statement the same.
    let accounts = (PARTNERS * (1 + CUSTOMERS)) as usize;
    assert_eq!(first.accounts.len(), accounts);
    assert_eq!(first.accounts, again.accounts);
    assert_eq!(first.statements.len(), accounts * PERIODS.len());
    assert_eq!(first.statements, again.statements);
    // Another seed: the same accounts by number, other money.
    assert_eq!(first.accounts.keys().collect::<Vec<_>>(), other.accounts.keys().collect::<Vec<_>>());
    let differing =
        first.accounts.iter().filter(|(number, a)| a["balance"] != other.accounts[*number]["balance"]).count();
    assert!(differing > accounts / 2, "only {differing} of {accounts} balances differ between seeds");
    assert_ne!(first.statements, other.statements);

    // The mix. Every event but a published tariff concerns an account, so the accounts'
    // audit trails together hold every other event of the log.
    let count =
        |kinds: &[&str]| first.events.values().filter(|(kind, _)| kinds.contains(&kind.as_str())).count() as u64;
    let tariffs = 1 + PARTNERS;
    assert_eq!(first.events.len() as u64 + tariffs, EVENTS, "every event once, nothing more");
    assert_eq!(count(&["AccountOpened"]), accounts as u64);
    assert_eq!(count(&["TariffAssigned"]), accounts as u64);
    assert_eq!(count(&["AlertRaised"]), 0, "the generator keeps every account within its credit limit");
    let business = (EVENTS - SETUP_EVENTS) as f64;
    for (kinds, percent) in [
        (&["CallCharged"][..], 70.0),
        (&["PaymentReceived"][..], 15.0),
        (&["FundsMoved"][..], 10.0),
        (&["ChargePosted", "AdjustmentPosted", "EntryReversed"][..], 5.0),
    ] {
        let share = count(kinds) as f64 * 100.0 / business;
        assert!((share - percent).abs() < 3.0, "{kinds:?}: {share:.1}% of the business events, not about {percent}%");
    }
    for kind in ["ChargePosted", "AdjustmentPosted", "EntryReversed"] {
        assert!(count(&[kind]) > 0, "no {kind}");
    }

    // Money is conserved: the events' postings add up to the balances; fund moves only
    // move money; each statement's identity holds and they add up to the same.
    let postings: Vec<&Posting> = first.events.values().flat_map(|(_, p)| p).collect();
    let from_events: Decimal = postings.iter().map(|(_, category, amount)| balance_effect(category, *amount)).sum();
    let balances: Decimal = first.accounts.values().map(|a| amount(&a["balance"])).sum();
    assert_eq!(from_events, balances);
    let sum = |category: &str| -> Decimal { postings.iter().filter(|p| p.1 == category).map(|p| p.2).sum() };
    assert_eq!(sum("transfers_in"), sum("transfers_out"));
    assert!(sum("transfers_in") > Decimal::ZERO && sum("payments") > Decimal::ZERO);
    let mut closing = Decimal::ZERO;
    for number in first.accounts.keys() {
        let s = &first.statements[&(number.clone(), "year")];
        let figure = |name: &str| amount(&s[name]);
        assert_eq!(figure("opening_balance"), Decimal::ZERO, "{number}: everything happens within the year");
        assert_eq!(
            figure("closing_balance"),
            figure("opening_balance") + figure("payments") + figure("transfers_in")
                - figure("transfers_out")
                - figure("total_charges"),
            "{number}"
        );
        assert_eq!(figure("closing_balance"), amount(&first.accounts[number]["balance"]), "{number}");
        closing += figure("closing_balance");
    }
    assert_eq!(closing, balances);
}

#[test]
fn refuses_a_used_directory_and_too_few_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("something"), "x").unwrap();
    let (ok, _, err) = tollbook(&["dataset", "--events", "1000", "--partners", "2", "--customers", "2"], &data);
    assert!(!ok && err.contains("is not empty"), "{err}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1, "nothing written into it");

    // Two partners with two customers each take 1 + 2 * (3 + 4) = 15 events to set up.
    let fresh = dir.path().join("fresh");
    let (ok, _, err) = tollbook(&["dataset", "--events", "14", "--partners", "2", "--customers", "2"], &fresh);
    assert!(!ok && err.contains("take 15 events to set up"), "{err}");
    let (ok, out, err) = tollbook(&["dataset", "--events", "15", "--partners", "2", "--customers", "2"], &fresh);
    assert!(ok && out.contains("wrote 15 events"), "{out}{err}");
}
