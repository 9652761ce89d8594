//! Recurring charges at one instant: 100,000 subscriptions (100 partners, 1,000
//! customers each, on a daily partner plan that pays a daily operator plan) all due at
//! once, charged by `charge_due_fees` runs until none is left (a run submits at most
//! `FEES_PER_RUN_MAX`). Each iteration moves the clock on by one day, so that each finds
//! a whole new day of 100,000 fees due. Issue 18's target: all charged in < 5 s.
//!
//! cargo bench -p tollbook-commands --features testing --bench recurring_fees

use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::{EventStore, FeeRun, Ledger, SledStore, charge_due_fees};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use domain::billing::{BillingPeriod, Plan};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, Command, CommandMeta, Currency, PlanId, SubscriptionId, Timestamp};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTNERS: usize = 100;
const CUSTOMERS_PER_PARTNER: usize = 1_000;
const SUBSCRIPTIONS: usize = PARTNERS * CUSTOMERS_PER_PARTNER;
const DAY_SECONDS: i64 = 86_400;

fn base() -> Timestamp {
    Timestamp::parse("2026-01-01").unwrap()
}

fn at(now: Timestamp) -> CommandMeta {
    CommandMeta { occurred_at: now, recorded_at: now, ..meta() }
}

fn daily_plan(name: &str, price: &str) -> Plan {
    Plan {
        id: PlanId::new(),
        name: name.to_owned(),
        price: amount(price),
        currency: Currency::parse("EUR").unwrap(),
        period: BillingPeriod::Daily,
        wholesale: None,
    }
}

/// Opens the partners, their plans, their customers and one subscription each, all
/// starting at the base; every book opens concurrently, as many resellers would.
async fn subscribed_ledger(dir: &std::path::Path) -> Arc<Ledger> {
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir).expect("store"));
    let ledger = Arc::new(Ledger::open(store).await.expect("ledger"));
    let wholesale = daily_plan("line rental, wholesale", "0.50");
    ledger.publish_plan(BookId::OPERATOR, wholesale.clone(), None, at(base())).await.expect("operator plan");
    let books = (0..PARTNERS).map(|p| {
        let (ledger, wholesale) = (ledger.clone(), wholesale.id);
        tokio::spawn(async move {
            let partner = AccountId::new();
            // Credit for every day the bench may run: the fees are charged, not refused.
            ledger.execute(open_partner(partner, &format!("P-{p}"), "100000000"), at(base())).await.unwrap();
            let retail = daily_plan("line rental", "1.00");
            let book = BookId::of_partner(partner);
            ledger.publish_plan(book, retail.clone(), Some(wholesale), at(base())).await.expect("partner plan");
            for c in 0..CUSTOMERS_PER_PARTNER {
                let customer = AccountId::new();
                let open = open_customer(customer, Some(partner), &format!("C-{p}-{c}"), "1000000");
                ledger.execute(open, at(base())).await.unwrap();
                let subscribe = Command::StartSubscription {
                    subscription: SubscriptionId::new(),
                    account: customer,
                    plan: retail.id,
                    starts_at: base(),
                    ends_at: None,
                };
                ledger.execute(subscribe, at(base())).await.unwrap();
            }
        })
    });
    for book in books.collect::<Vec<_>>() {
        book.await.unwrap();
    }
    ledger
}

fn recurring_fees(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = runtime.block_on(subscribed_ledger(dir.path()));
    // The first day is charged before the clock starts: it is the same work as any other.
    let mut days = 0i64;
    let mut group = c.benchmark_group("recurring_fees");
    group.throughput(Throughput::Elements(SUBSCRIPTIONS as u64));
    group.sample_size(10);
    // One day of fees per iteration, each sample as long as the next.
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("100000_due_at_once", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let ledger = ledger.clone();
            days += iters as i64;
            let last_day = days;
            async move {
                let started = Instant::now();
                for day in last_day - iters as i64..last_day {
                    // Just past midnight of the day after: that day's fee is due.
                    let now = base().add_seconds(day * DAY_SECONDS + 1);
                    let mut total = FeeRun::default();
                    loop {
                        let run = charge_due_fees(&ledger, now, commands::billing::FEES_PER_RUN_MAX).await;
                        total.charged += run.charged;
                        total.refused += run.refused;
                        total.failed += run.failed;
                        if !run.more {
                            break;
                        }
                    }
                    assert_eq!(
                        (total.charged, total.refused, total.failed),
                        (SUBSCRIPTIONS, 0, 0),
                        "every fee of the day charged, none refused or left"
                    );
                }
                started.elapsed()
            }
        })
    });
    group.finish();
}

criterion_group!(benches, recurring_fees);
criterion_main!(benches);
