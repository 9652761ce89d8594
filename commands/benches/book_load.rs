//! Start-up: how long one book with 1,000,000 events takes to load (read its stream
//! from sled, decode, fold with `evolve`). The events are appended directly in large
//! batches so that the set-up itself stays quick.
//!
//! cargo bench -p tollbook-commands --bench book_load

use std::sync::Arc;
use std::time::Duration;

use commands::chain::{self, EncodedEvent};
use commands::writer::load_book;
use commands::{EventStore, ExpectedVersion, SledStore};
use criterion::{Criterion, criterion_group, criterion_main};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, BookState, Command, CommandMeta, Decision, Idempotency, decide, seal};

// The server binary uses mimalloc too; measure what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BOOK_EVENTS: u64 = 1_000_000;
const APPEND_BATCH_EVENTS: usize = 4096;

async fn build_book(store: &SledStore) -> BookId {
    let partner = AccountId::new();
    let customer = AccountId::new();
    let book = BookId::of_partner(partner);
    let mut state = BookState::new(book);
    let mut pending: Vec<EncodedEvent> = Vec::new();
    // Popped from the end: the partner opens first.
    let mut commands = vec![open_customer(customer, Some(partner), "C", "0"), open_partner(partner, "P", "0")];
    let mut n: u64 = 0;
    while state.next_version < BOOK_EVENTS {
        let command = commands.pop().unwrap_or_else(|| match n % 2 {
            0 => Command::ReceivePayment { account: partner, amount: amount("2"), method: None, reference: None },
            _ => Command::MoveFunds { from: partner, to: customer, amount: amount("1"), note: None },
        });
        n += 1;
        // Every tenth command carries an idempotency key, as API traffic would.
        let command_meta = if n.is_multiple_of(10) {
            CommandMeta { idempotency: Some(Idempotency { key: format!("k{n}"), request_digest: [3; 32] }), ..meta() }
        } else {
            meta()
        };
        let Decision::Accept(payloads) = decide(&state, &command, &command_meta).expect("accepted") else {
            unreachable!("fresh commands are never repeats")
        };
        let expected = ExpectedVersion::before(state.next_version - pending.len() as u64);
        let mut bytes = Vec::new();
        let events = seal(&mut state, payloads, &command_meta, |envelope, payload| {
            let (encoded, hash) = chain::encode(envelope, payload);
            bytes.push(encoded);
            hash
        });
        pending.extend(events.into_iter().zip(bytes).map(|(event, bytes)| EncodedEvent { event, bytes }));
        if pending.len() >= APPEND_BATCH_EVENTS {
            store.append(book, expected, &pending).await.expect("append");
            pending.clear();
        }
    }
    if !pending.is_empty() {
        let expected = ExpectedVersion::before(state.next_version - pending.len() as u64);
        store.append(book, expected, &pending).await.expect("append");
    }
    book
}

fn book_load(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let book = runtime.block_on(build_book(&store));
    let mut group = c.benchmark_group("book_load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("1m_events", |b| {
        b.to_async(&runtime).iter(|| async {
            let state = load_book(&*store as &dyn EventStore, book).await.expect("load");
            assert!(state.next_version >= BOOK_EVENTS);
            state
        })
    });
    group.finish();
}

criterion_group!(benches, book_load);
criterion_main!(benches);
