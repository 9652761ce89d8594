//! The write path: mixed commands (payments, call charges, fund moves) through the book
//! writers into a durable sled store, at 1, 16 and 256 concurrent callers over 1 and 8
//! books, and 800 callers over 100 books. Criterion reports commands/s; each case also prints the latency p50/p99 of
//! one command as its caller saw it.
//!
//! `write_path/bulk_cdrs` charges files of CDRs (pre-rated, over 8 books) through
//! `Ledger::charge_cdrs` (one writer message per book's group) and, for comparison, as
//! one command message per CDR (`charge_cdr`, concurrent, as `charge_cdrs` used to).
//!
//! cargo bench -p tollbook-commands --features testing --bench write_path
//! cargo bench -p tollbook-commands --features testing --bench write_path -- bulk_cdrs

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use commands::testing::sample_call;
use commands::{EventStore, Ledger, SledStore};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use domain::cdr::CdrInput;
use domain::rating::CallDirection;
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, Command, Timestamp};
use eventlog::testing::process_cpu_seconds;
use futures::StreamExt;
use hdrhistogram::Histogram;

// The server binary uses mimalloc too, tuned the same way: measure what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Book {
    partner: AccountId,
    customer: AccountId,
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: SledStore,
    ledger: Arc<Ledger>,
    books: Vec<Book>,
}

async fn fixture(book_count: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(dir.path()).expect("store");
    let ledger = Arc::new(Ledger::open(Arc::new(store.clone()) as Arc<dyn EventStore>).await.expect("ledger"));
    let mut books = Vec::new();
    for b in 0..book_count {
        let partner = AccountId::new();
        let customer = AccountId::new();
        ledger.execute(open_partner(partner, &format!("P{b}"), "0"), meta()).await.unwrap();
        ledger.execute(open_customer(customer, Some(partner), &format!("C{b}"), "0"), meta()).await.unwrap();
        let funding =
            Command::ReceivePayment { account: partner, amount: amount("1000000000"), method: None, reference: None };
        ledger.execute(funding, meta()).await.unwrap();
        books.push(Book { partner, customer });
    }
    Fixture { _dir: dir, store, ledger, books }
}

static CDR_SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn mixed_command(book: &Book, n: u64) -> Command {
    match n % 3 {
        0 => Command::ReceivePayment { account: book.customer, amount: amount("1.5"), method: None, reference: None },
        1 => {
            let id = CDR_SEQUENCE.fetch_add(1, Ordering::Relaxed);
            sample_call(book.customer, format!("cdr-{id}"), Timestamp::from_seconds(1_767_225_600))
        }
        _ => Command::MoveFunds { from: book.partner, to: book.customer, amount: amount("0.5"), note: None },
    }
}

/// CDRs in one charged file of the bulk benchmark.
const FILE_CDRS: usize = 20_000;

/// A file of answered, pre-rated calls spread over the customers of `books` books.
fn cdr_file(books: usize) -> Vec<CdrInput> {
    let start = Timestamp::from_seconds(1_767_225_600);
    (0..FILE_CDRS)
        .map(|n| {
            let id = CDR_SEQUENCE.fetch_add(1, Ordering::Relaxed);
            CdrInput {
                id: format!("cdr-{id}"),
                account: format!("C{}", n % books),
                caller: "15550001".into(),
                callee: "4930123456".into(),
                start,
                answer: Some(start),
                end: start.add_seconds(61),
                billable_seconds: 61,
                hangup_cause: 16,
                direction: CallDirection::Outbound,
                cost: Some(amount("0.024")),
                partner_cost: Some(amount("0.012")),
                hangup_cause_raw: None,
                hangup_cause_flag: None,
            }
        })
        .collect()
}

fn bulk_cdrs(c: &mut Criterion) {
    eventlog::memory::tune_process();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("write_path/bulk_cdrs");
    group.throughput(Throughput::Elements(FILE_CDRS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    let book_count = 8;
    let fixture = runtime.block_on(fixture(book_count));
    for mode in ["bulk", "per_cdr_message"] {
        group.bench_function(BenchmarkId::new(format!("{book_count}_books"), mode), |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let ledger = fixture.ledger.clone();
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let file = cdr_file(book_count);
                        let started = Instant::now();
                        let outcomes = match mode {
                            "bulk" => ledger.charge_cdrs(file, &meta()).await,
                            _ => {
                                futures::stream::iter(&file)
                                    .map(|cdr| ledger.charge_cdr(cdr, meta()))
                                    .buffered(2048)
                                    .collect::<Vec<_>>()
                                    .await
                            }
                        };
                        spent += started.elapsed();
                        assert!(outcomes.iter().all(|o| o.as_ref().is_ok_and(|o| !o.repeated)), "every CDR charged");
                    }
                    spent
                }
            })
        });
    }
    runtime.block_on(fixture.ledger.shutdown());
    group.finish();
}

fn write_path(c: &mut Criterion) {
    eventlog::memory::tune_process();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("write_path");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    // (books, callers): the last is issue 16's tenant case, 8 callers for each of 100 books.
    let cases: [(usize, &[u64]); 3] = [(1, &[1, 16, 256]), (8, &[1, 16, 256]), (100, &[800])];
    for (book_count, callers_cases) in cases {
        let fixture = runtime.block_on(fixture(book_count));
        for &callers in callers_cases {
            let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
            // Process CPU seconds and wall seconds spent on the measured commands.
            let cpu = Arc::new(Mutex::new((0.0_f64, 0.0_f64)));
            let stats_before = fixture.store.stats();
            let id = BenchmarkId::new(format!("{book_count}_books"), format!("{callers}_callers"));
            group.bench_function(id, |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let ledger = fixture.ledger.clone();
                    let books: Vec<(AccountId, AccountId)> =
                        fixture.books.iter().map(|b| (b.partner, b.customer)).collect();
                    let latencies = latencies.clone();
                    let cpu = cpu.clone();
                    async move {
                        let per_caller = iters.div_ceil(callers);
                        let (started, cpu_before) = (Instant::now(), process_cpu_seconds());
                        let tasks: Vec<_> = (0..callers)
                            .map(|caller| {
                                let ledger = ledger.clone();
                                let (partner, customer) = books[caller as usize % books.len()];
                                tokio::spawn(async move {
                                    let book = Book { partner, customer };
                                    // Kept as a plain list and counted into the histogram
                                    // after the clock stops: a histogram per caller (256 of
                                    // ~56 KB) made each record a cache miss, a twentieth of
                                    // the measured CPU spent measuring.
                                    let mut micros = Vec::with_capacity(per_caller as usize);
                                    for n in 0..per_caller {
                                        let command = mixed_command(&book, caller + n);
                                        let sent = Instant::now();
                                        ledger.execute(command, meta()).await.expect("command accepted");
                                        micros.push(sent.elapsed().as_micros() as u32);
                                    }
                                    micros
                                })
                            })
                            .collect();
                        let mut seen = Vec::with_capacity(tasks.len());
                        for task in tasks {
                            seen.push(task.await.unwrap());
                        }
                        let wall = started.elapsed();
                        {
                            let mut cpu = cpu.lock().unwrap();
                            cpu.0 += process_cpu_seconds() - cpu_before;
                            cpu.1 += wall.as_secs_f64();
                        }
                        let elapsed = wall.mul_f64(iters as f64 / (per_caller * callers) as f64);
                        let mut latencies = latencies.lock().unwrap();
                        for micros in seen.iter().flatten() {
                            latencies.record(u64::from(*micros)).unwrap();
                        }
                        elapsed
                    }
                })
            });
            let h = latencies.lock().unwrap();
            if h.is_empty() {
                continue; // filtered out on the command line
            }
            let stats = fixture.store.stats();
            let flushes = (stats.flushes - stats_before.flushes).max(1);
            eprintln!(
                "write_path/{book_count}_books/{callers}_callers: {:.1} events/flush, {:.1} appends/flush, {} us/flush",
                (stats.events - stats_before.events) as f64 / flushes as f64,
                (stats.appends - stats_before.appends) as f64 / flushes as f64,
                (stats.flush_micros_total - stats_before.flush_micros_total) / flushes,
            );
            eprintln!(
                "write_path/{book_count}_books/{callers}_callers latency: p50 {} us, p99 {} us, max {} us over {} commands",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max(),
                h.len()
            );
            // The whole process's CPU (writers, flusher, callers, the store's threads) per
            // command: with the cores it had, the rate it allows.
            let (cpu_seconds, wall_seconds) = *cpu.lock().unwrap();
            eprintln!(
                "write_path/{book_count}_books/{callers}_callers CPU: {:.2} us per command, {:.2} cores busy",
                cpu_seconds * 1e6 / h.len() as f64,
                cpu_seconds / wall_seconds.max(f64::MIN_POSITIVE),
            );
        }
        runtime.block_on(fixture.ledger.shutdown());
    }
    group.finish();
}

criterion_group!(benches, write_path, bulk_cdrs);
criterion_main!(benches);
