//! Start-up: how long one book with 1,000,000 events takes to load (read its stream
//! from sled, decode, fold with `evolve`).
//!
//! cargo bench -p tollbook-commands --features testing --bench book_load

use std::sync::Arc;
use std::time::Duration;

use commands::testing::append_synthetic_book;
use commands::writer::load_book;
use commands::{EventStore, SledStore};
use criterion::{Criterion, criterion_group, criterion_main};

// The server binary uses mimalloc too; measure what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BOOK_EVENTS: u64 = 1_000_000;

fn book_load(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let book = runtime.block_on(append_synthetic_book(&*store, BOOK_EVENTS, 365)).book;
    let mut group = c.benchmark_group("book_load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("1m_events", |b| {
        b.to_async(&runtime).iter(|| async {
            let state = load_book(&*store as &dyn EventStore, book).await.expect("load").state;
            assert!(state.next_version >= BOOK_EVENTS);
            state
        })
    });
    group.finish();
}

criterion_group!(benches, book_load);
criterion_main!(benches);
