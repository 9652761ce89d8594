//! Read models on a book of 1,500,000 events (payments, rated calls, fund moves over a
//! year): replay throughput into all read models, and the latency of a statement for
//! random periods on the busiest account, which two events in three touch: an account
//! of 1,000,000 events (the bench counts and prints them).
//!
//! cargo bench -p tollbook-projections --bench read_models

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain::Timestamp;
use eventlog::testing::append_synthetic_book;
use eventlog::{EventStore, READ_EVENTS_MAX, SledStore};
use hdrhistogram::Histogram;
use projections::ReadModels;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `TOLLBOOK_BENCH_EVENTS` overrides the book size (for quick runs).
fn book_events() -> u64 {
    std::env::var("TOLLBOOK_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_500_000)
}
const DAYS: i64 = 365;
const START_SECONDS: i64 = 1_767_225_600;

fn read_models(c: &mut Criterion) {
    eventlog::memory::tune_process();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path().join("events")).unwrap());
    let book_events = book_events();
    let book = runtime.block_on(append_synthetic_book(&*store, book_events, DAYS));
    let views = dir.path().join("views");

    let mut group = c.benchmark_group("read_models");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements(book_events));
    group.bench_function("replay_whole_book", |b| {
        b.to_async(&runtime).iter(|| async {
            let report = projections::replay(&*store, &views, |_, _, _| {}).await.expect("replay");
            assert!(report.events >= book_events);
        })
    });
    group.finish();

    // Statements on the account most events touch, for random periods. A filtered run
    // (`-- statement`) skipped the replays above: the models are built once here.
    if ReadModels::open(&views, store.clone()).unwrap().position() == 0 {
        runtime.block_on(projections::replay(&*store, &views, |_, _, _| {})).expect("replay");
    }
    let models = ReadModels::open(&views, store.clone()).unwrap();
    let account_events = runtime.block_on(async {
        let (mut next, mut touching) = (1, 0u64);
        loop {
            let chunk = store.read_all(next, READ_EVENTS_MAX).await.unwrap();
            let Some(last) = chunk.last() else { break };
            next = last.position + 1;
            touching += chunk.iter().filter(|e| e.event.payload.accounts().contains(&book.customer)).count() as u64;
        }
        touching
    });
    eprintln!("the statement account has {account_events} events");
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let span_micros = DAYS * 86_400 * 1_000_000;
    let mut random_period = move || {
        let a = (next() % span_micros as u64) as i64;
        let b = (next() % span_micros as u64) as i64;
        let base = START_SECONDS * 1_000_000;
        (Timestamp(base + a.min(b)), Timestamp(base + a.max(b)))
    };
    let mut group = c.benchmark_group("read_models");
    group.bench_function("statement_random_period_1m_account", |b| {
        b.iter(|| {
            let (from, to) = random_period();
            let started = Instant::now();
            let statement = runtime.block_on(models.statement(book.customer, from, to, None)).expect("statement");
            latencies.record(started.elapsed().as_nanos() as u64).unwrap();
            statement
        })
    });
    group.finish();
    eprintln!(
        "statement latency over {} random periods: p50 {} us, p99 {} us, max {} us",
        latencies.len(),
        latencies.value_at_quantile(0.5) / 1000,
        latencies.value_at_quantile(0.99) / 1000,
        latencies.max() / 1000
    );
}

criterion_group!(benches, read_models);
criterion_main!(benches);
