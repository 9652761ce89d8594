//! Recurring fees across kill -9: a child process catches up weeks of daily fees for
//! many subscriptions and is killed with SIGKILL at random moments, then started again
//! with more days due.
//! After every kill no fee is in the log twice (nor half of one); once a start finishes
//! the catch-up, every subscription is charged exactly once for every period due.

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::{EventStore, Ledger, SledStore};
use domain::billing::{self, BillingPeriod, Plan};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, CommandMeta, Currency, PlanId, SubscriptionId, Timestamp};

const KILL_CYCLES: usize = 12;
/// Each start sees this many more days due than the one before: every cycle has a
/// catch-up to kill, however far the ones before it got.
const DAYS_PER_CYCLE: i64 = 40;
/// Subscriptions of the partner's customers and of the operator's own customers.
const SUBSCRIPTIONS_PER_BOOK: usize = 30;
const DAY_SECONDS: i64 = 86_400;

fn base() -> Timestamp {
    Timestamp::parse("2026-01-01").unwrap()
}

fn at(now: Timestamp) -> CommandMeta {
    CommandMeta { occurred_at: now, recorded_at: now, ..meta() }
}

fn daily(price: &str) -> Plan {
    Plan {
        id: PlanId::new(),
        name: "line rental".into(),
        price: amount(price),
        currency: Currency::parse("EUR").unwrap(),
        period: BillingPeriod::Daily,
        wholesale: None,
    }
}

/// A partner selling a daily plan that pays the operator's, the operator selling its
/// own to its customers, and one subscription per customer from the base on.
async fn set_up(data: &std::path::Path) -> BTreeSet<SubscriptionId> {
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(data).unwrap());
    let ledger = Ledger::open(store).await.unwrap();
    let wholesale = daily("0.40");
    ledger.publish_plan(BookId::OPERATOR, wholesale.clone(), None, at(base())).await.unwrap();
    let own = daily("1.10");
    ledger.publish_plan(BookId::OPERATOR, own.clone(), None, at(base())).await.unwrap();
    let partner = AccountId::new();
    ledger.execute(open_partner(partner, "P-1", "100000"), at(base())).await.unwrap();
    let retail = daily("0.90");
    ledger.publish_plan(BookId::of_partner(partner), retail.clone(), Some(wholesale.id), at(base())).await.unwrap();
    let mut subscriptions = BTreeSet::new();
    for (owner, plan) in [(Some(partner), retail.id), (None, own.id)] {
        for n in 0..SUBSCRIPTIONS_PER_BOOK {
            let customer = AccountId::new();
            let number = format!("C-{}-{n}", owner.is_some());
            ledger.execute(open_customer(customer, owner, &number, "100000"), at(base())).await.unwrap();
            let subscription = SubscriptionId::new();
            let start = domain::Command::StartSubscription {
                subscription,
                account: customer,
                plan,
                starts_at: base(),
                ends_at: None,
            };
            ledger.execute(start, at(base())).await.unwrap();
            subscriptions.insert(subscription);
        }
    }
    ledger.shutdown().await;
    subscriptions
}

/// The fees in the log, by (subscription, period): how many commands charged each. A
/// fee command's first event carries its key and how many events it made, and those
/// events follow it in its book.
async fn fees_in_log(data: &std::path::Path) -> HashMap<(SubscriptionId, Timestamp), usize> {
    let store = SledStore::open(data).expect("the store reopens after a kill");
    let mut fees = HashMap::new();
    let mut books: HashMap<BookId, Vec<domain::Event>> = HashMap::new();
    let mut from = 1;
    loop {
        let chunk = store.read_all(from, 4096).await.unwrap();
        let Some(last) = chunk.last() else { break };
        from = last.position + 1;
        for recorded in chunk {
            books.entry(recorded.event.envelope.book).or_default().push(recorded.event);
        }
    }
    for events in books.values() {
        for (at, event) in events.iter().enumerate() {
            let key = event.envelope.idempotency.as_ref().map(|i| i.key.as_str());
            let Some(fee) = key.and_then(billing::parse_fee_key) else { continue };
            let made = event.envelope.command_events as usize;
            assert!(at + made <= events.len(), "the fee {fee:?} is half in the log");
            *fees.entry(fee).or_insert(0) += 1;
        }
    }
    fees
}

/// A pseudo-random delay after the victim starts charging, different every cycle,
/// without a dependency: short, since a catch-up takes a fraction of a second.
fn kill_delay(cycle: usize) -> Duration {
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ (cycle as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let jitter = seed.wrapping_mul(6364136223846793005).rotate_left(17) % 60;
    Duration::from_millis(jitter)
}

/// Waits for the victim's `charging` line: its ledger is open and the catch-up begins.
async fn charging(child: &mut std::process::Child) {
    let stdout = child.stdout.take().expect("the victim's stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await
    .unwrap()
    .expect("the victim's first line");
    assert_eq!(line.trim(), "charging");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_killed_at_any_moment_charges_each_fee_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let subscriptions = set_up(&data).await;
    // Just past midnight, `days` days after the base: that day's fee is due too.
    let now_arg = |days: i64| (base().add_seconds(days * DAY_SECONDS + 1).micros() / 1_000_000).to_string();
    let victim = |days: i64| {
        Command::new(env!("CARGO_BIN_EXE_crash_fees"))
            .arg(&data)
            .arg(now_arg(days))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the victim")
    };
    let mut killed_mid_catch_up = 0;
    let mut seen_before = 0;
    for cycle in 0..KILL_CYCLES {
        let mut child = victim(DAYS_PER_CYCLE * (cycle as i64 + 1));
        charging(&mut child).await;
        tokio::time::sleep(kill_delay(cycle)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().expect("SIGKILL");
            killed_mid_catch_up += 1;
        }
        child.wait().unwrap();
        let fees = fees_in_log(&data).await;
        let twice: Vec<_> = fees.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "cycle {cycle}: fees charged twice: {twice:?}");
        assert!(fees.len() >= seen_before, "cycle {cycle}: fees lost");
        seen_before = fees.len();
    }
    eprintln!("{killed_mid_catch_up} of {KILL_CYCLES} kills landed during a catch-up");
    assert!(killed_mid_catch_up >= KILL_CYCLES / 2, "most kills must land during a catch-up: {killed_mid_catch_up}");

    let days = DAYS_PER_CYCLE * KILL_CYCLES as i64;
    let finished = victim(days).wait_with_output().unwrap();
    assert!(finished.status.success(), "the last start finishes the catch-up");
    assert_eq!(String::from_utf8_lossy(&finished.stdout).lines().last(), Some("caught up"));
    let fees = fees_in_log(&data).await;
    let due: BTreeSet<(SubscriptionId, Timestamp)> = subscriptions
        .iter()
        .flat_map(|s| (0..=days).map(move |day| (*s, base().add_seconds(day * DAY_SECONDS))))
        .collect();
    assert_eq!(fees.keys().copied().collect::<BTreeSet<_>>(), due, "every period due, and nothing else");
    assert!(fees.values().all(|count| *count == 1), "each charged once");
}
