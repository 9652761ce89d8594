//! Recurring charges on the real sled store in a temp dir: whatever the pattern of runs,
//! runs cut short, downtime and restarts, every subscription is settled exactly once per
//! period it owes (charged, or refused on the record), each fee dated at what it covers.

use std::collections::HashMap;
use std::sync::Arc;

use commands::{EventStore, Ledger, SledStore, charge_due_fees};
use domain::billing::{self, BillingPeriod, Plan, Subscription};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, Command, CommandMeta, Payload, PlanId, SubscriptionId, Timestamp};
use proptest::prelude::*;

const DAY_SECONDS: i64 = 86_400;

fn base() -> Timestamp {
    Timestamp::parse("2026-01-01").unwrap()
}

async fn ledger_in(dir: &std::path::Path) -> Ledger {
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir).unwrap());
    Ledger::open(store).await.unwrap()
}

fn at_meta(now: Timestamp) -> CommandMeta {
    CommandMeta { occurred_at: now, recorded_at: now, ..meta() }
}

#[derive(Clone, Debug)]
struct SubscriptionSpec {
    period: BillingPeriod,
    /// Seconds after the base the subscription starts.
    start: i64,
    /// Seconds it lasts, if it ends.
    length: Option<i64>,
    /// The account's credit limit: a low one makes some fees refused.
    credit_limit: u32,
    /// Subscribed under the partner (whose plan pays an operator plan) or the operator.
    under_partner: bool,
}

#[derive(Clone, Debug)]
enum Step {
    /// The clock moves on (downtime, or time between runs) by this many seconds.
    Wait(i64),
    /// A run that submits at most this many fees (a run cut short, as by a crash).
    Run(usize),
    /// A run taken down while its fees are in flight.
    Abort(usize),
    /// Two runs at once, both seeing the same fees due: the second's are repeats, which
    /// only the books' writers can tell.
    Race(usize),
    Restart,
}

fn subscription_spec() -> impl Strategy<Value = SubscriptionSpec> {
    (
        prop_oneof![Just(BillingPeriod::Daily), Just(BillingPeriod::Weekly), Just(BillingPeriod::Monthly)],
        0..60 * DAY_SECONDS,
        proptest::option::of(1..120 * DAY_SECONDS),
        prop_oneof![Just(0u32), Just(40), Just(100_000)],
        any::<bool>(),
    )
        .prop_map(|(period, start, length, credit_limit, under_partner)| SubscriptionSpec {
            period,
            start,
            length,
            credit_limit,
            under_partner,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..20 * DAY_SECONDS).prop_map(Step::Wait),
        3 => (1usize..8).prop_map(Step::Run),
        1 => (1usize..8).prop_map(Step::Abort),
        2 => (1usize..8).prop_map(Step::Race),
        2 => Just(Step::Restart),
    ]
}

/// Sets the book up: one operator plan and one partner plan per period, each
/// subscription on its own customer. The specs' subscriptions, in order.
async fn set_up(ledger: &Ledger, specs: &[SubscriptionSpec]) -> Vec<(SubscriptionId, BillingPeriod)> {
    let now = base();
    let partner = AccountId::new();
    ledger.execute(open_partner(partner, "P-1", "0"), at_meta(now)).await.unwrap();
    // The partner's own funds decide whether its share can be paid: enough for a while.
    let pay = Command::ReceivePayment { account: partner, amount: amount("900"), method: None, reference: None };
    ledger.execute(pay, at_meta(now)).await.unwrap();
    let mut plans = HashMap::new();
    for (index, period) in BillingPeriod::ALL.into_iter().enumerate() {
        let price = ["3.10", "7.70", "31.30"][index];
        let operator_plan = Plan {
            id: PlanId::new(),
            name: format!("wholesale {}", period.as_str()),
            price: amount(&format!("{}", index + 1)),
            currency: domain::Currency::parse("EUR").unwrap(),
            period,
            wholesale: None,
        };
        ledger.publish_plan(BookId::OPERATOR, operator_plan.clone(), None, at_meta(now)).await.unwrap();
        let partner_plan = Plan { id: PlanId::new(), price: amount(price), ..operator_plan.clone() };
        let partner_book = BookId::of_partner(partner);
        ledger.publish_plan(partner_book, partner_plan.clone(), Some(operator_plan.id), at_meta(now)).await.unwrap();
        let operator_retail = Plan { id: PlanId::new(), price: amount(price), ..operator_plan };
        ledger.publish_plan(BookId::OPERATOR, operator_retail.clone(), None, at_meta(now)).await.unwrap();
        plans.insert(period, (operator_retail.id, partner_plan.id));
    }
    let mut subscriptions = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let customer = AccountId::new();
        let owner = spec.under_partner.then_some(partner);
        let limit = spec.credit_limit.to_string();
        ledger.execute(open_customer(customer, owner, &format!("C-{index}"), &limit), at_meta(now)).await.unwrap();
        let (operator_plan, partner_plan) = plans[&spec.period];
        let starts_at = base().add_seconds(spec.start);
        let subscription = SubscriptionId::new();
        let command = Command::StartSubscription {
            subscription,
            account: customer,
            plan: if spec.under_partner { partner_plan } else { operator_plan },
            starts_at,
            ends_at: spec.length.map(|length| starts_at.add_seconds(length)),
        };
        ledger.execute(command, at_meta(now)).await.unwrap();
        subscriptions.push((subscription, spec.period));
    }
    subscriptions
}

/// Every fee settled in the log: (subscription, period) to the events of its command
/// (the first carries the key and says how many the command made, the rest follow it in
/// its book).
async fn settled(store: &dyn EventStore) -> HashMap<(SubscriptionId, Timestamp), Vec<domain::Event>> {
    let mut fees: HashMap<(SubscriptionId, Timestamp), Vec<domain::Event>> = HashMap::new();
    let mut open: HashMap<BookId, ((SubscriptionId, Timestamp), u32)> = HashMap::new();
    let mut from = 1;
    loop {
        let events = store.read_all(from, 1000).await.unwrap();
        let Some(last) = events.last() else { break };
        from = last.position + 1;
        for recorded in events {
            let envelope = &recorded.event.envelope;
            if let Some(key) = envelope.idempotency.as_ref().and_then(|i| billing::parse_fee_key(&i.key)) {
                assert!(!fees.contains_key(&key), "fee {key:?} settled twice");
                fees.insert(key, vec![recorded.event.clone()]);
                if envelope.command_events > 1 {
                    open.insert(envelope.book, (key, envelope.command_events - 1));
                }
            } else if let Some((key, remaining)) = open.get_mut(&envelope.book) {
                fees.get_mut(key).unwrap().push(recorded.event.clone());
                *remaining -= 1;
                if *remaining == 0 {
                    open.remove(&envelope.book);
                }
            }
        }
    }
    fees
}

fn run_scenario(specs: Vec<SubscriptionSpec>, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Arc::new(ledger_in(dir.path()).await);
        let subscriptions = set_up(&ledger, &specs).await;
        let mut now = base();
        for step in steps {
            match step {
                Step::Wait(seconds) => now = now.add_seconds(seconds),
                Step::Run(limit) => {
                    charge_due_fees(&ledger, now, limit).await;
                }
                Step::Abort(limit) => {
                    let running = ledger.clone();
                    let run = tokio::spawn(async move { charge_due_fees(&running, now, limit).await });
                    tokio::task::yield_now().await;
                    run.abort();
                    let _ = run.await;
                }
                Step::Race(limit) => {
                    let (first, second) =
                        tokio::join!(charge_due_fees(&ledger, now, limit), charge_due_fees(&ledger, now, limit));
                    prop_assert_eq!(first.failed + second.failed, 0);
                }
                Step::Restart => {
                    ledger.shutdown().await;
                    drop(ledger);
                    ledger = Arc::new(ledger_in(dir.path()).await);
                }
            }
        }
        // Back after the last downtime: the catch-up settles everything due.
        let end = base().add_seconds(200 * DAY_SECONDS);
        ledger.shutdown().await;
        drop(ledger);
        let ledger = ledger_in(dir.path()).await;
        loop {
            let run = charge_due_fees(&ledger, end, 50).await;
            prop_assert_eq!(run.failed, 0);
            if !run.more {
                break;
            }
        }
        prop_assert_eq!(charge_due_fees(&ledger, end, 50).await, commands::FeeRun::default(), "nothing left to do");

        let fees = settled(&**ledger.store()).await;
        let catalog = ledger.billing_catalog();
        let mut expected_count = 0;
        for (id, period) in &subscriptions {
            let entry = catalog.subscription(*id).unwrap();
            let plan = &catalog.plan(entry.subscription.plan).unwrap().plan;
            prop_assert_eq!(plan.period, *period);
            let sub: &Subscription = &entry.subscription;
            let owed = billing::due_periods(plan, sub, billing::first_period(plan, sub), end, 10_000);
            expected_count += owed.len();
            for period_start in owed {
                let events = fees.get(&(*id, period_start));
                prop_assert!(events.is_some(), "period {} of {} was never settled", period_start, id);
                let fee = billing::fee(plan, sub, period_start).unwrap();
                let events = events.unwrap();
                match &events[0].payload {
                    Payload::ChargePosted(charge) => {
                        prop_assert_eq!(charge.amount, fee.amount);
                        prop_assert_eq!(charge.account, sub.account);
                        prop_assert_eq!(events[0].envelope.occurred_at, fee.covers_from);
                        prop_assert_eq!(events.len(), 1 + usize::from(fee.wholesale.is_some()));
                    }
                    Payload::AlertRaised(_) => prop_assert_eq!(events.len(), 1),
                    other => prop_assert!(false, "a fee settled by {:?}", other),
                }
            }
        }
        prop_assert_eq!(fees.len(), expected_count, "no fee for a period not owed");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_subscription_is_settled_exactly_once_per_period(
        specs in proptest::collection::vec(subscription_spec(), 1..6),
        steps in proptest::collection::vec(step(), 0..14),
    ) {
        run_scenario(specs, steps)?;
    }
}

/// The plain case, spelled out: a month of downtime is caught up on start, and a second
/// start charges nothing more.
#[tokio::test]
async fn downtime_is_caught_up_on_start_and_never_charged_twice() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SubscriptionSpec {
        period: BillingPeriod::Daily,
        start: 0,
        length: Some(10 * DAY_SECONDS + DAY_SECONDS / 2),
        credit_limit: 100_000,
        under_partner: false,
    };
    {
        let ledger = ledger_in(dir.path()).await;
        set_up(&ledger, &[spec]).await;
        let first = charge_due_fees(&ledger, base().add_seconds(3 * DAY_SECONDS), 100).await;
        assert_eq!((first.charged, first.more), (4, false));
        ledger.shutdown().await;
    }
    let ledger = ledger_in(dir.path()).await;
    let caught_up = charge_due_fees(&ledger, base().add_seconds(40 * DAY_SECONDS), 100).await;
    assert_eq!(caught_up.charged, 7, "days 4 to 10, the last a half day");
    assert_eq!(charge_due_fees(&ledger, base().add_seconds(41 * DAY_SECONDS), 100).await, commands::FeeRun::default());
    let state = ledger.book_state(BookId::OPERATOR).await.unwrap();
    let customer = state.account_by_number("C-0").unwrap();
    // 10 whole days at 3.10 and half a day: 1.55.
    assert_eq!(customer.balance, amount("-32.55"));
    let customer_id = customer.id;
    // The first day's fee sent again, as a stale scheduler would: a repeat, nothing charged.
    let catalog_entry = ledger.billing_catalog().subscriptions().next().unwrap().clone();
    let meta = commands::billing::fee_meta(
        catalog_entry.subscription.id,
        base(),
        base(),
        base().add_seconds(41 * DAY_SECONDS),
    );
    let again = Command::ChargeFee {
        subscription: catalog_entry.subscription.id,
        account: catalog_entry.subscription.account,
        period_start: base(),
    };
    let outcome = ledger.execute(again, meta).await.unwrap();
    assert!(outcome.repeated, "{outcome:?}");
    assert_eq!(ledger.book_state(BookId::OPERATOR).await.unwrap().accounts[&customer_id].balance, amount("-32.55"));
}
