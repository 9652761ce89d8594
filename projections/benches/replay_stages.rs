//! Replay's stages measured one by one on a book of 1,000,000 events: reading and
//! decoding the log alone (with `read_all`, then as the live projector's subscription
//! reads it), then full replays with each stage's busy time, then the live
//! projector catching up on the whole log from nothing (its chunks of at most
//! `CHUNK_EVENTS_MAX` events, each committed atomically with its checkpoint), which is
//! what it does behind a bulk import.
//!
//! cargo bench -p tollbook-projections --bench replay_stages
//!
//! With `TOLLBOOK_BENCH_DATA=DIR` the log is written to `DIR/events` and kept, for
//! `tollbook replay --data DIR`. With `TOLLBOOK_BENCH_LOG=DIR` the log of an existing
//! data directory is used as it is, nothing appended (for example one kept by
//! `KEEP=DIR api/bench/import.sh`: `TOLLBOOK_BENCH_LOG=DIR/data`).

use std::sync::Arc;
use std::time::Instant;

use eventlog::testing::{append_synthetic_book, process_cpu_seconds, thread_cpu_seconds};
use eventlog::{EventStore, READ_EVENTS_MAX, SledStore};
use futures::StreamExt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `TOLLBOOK_BENCH_EVENTS` overrides the book size (for quick runs).
fn book_events() -> u64 {
    std::env::var("TOLLBOOK_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// Full replays timed; `TOLLBOOK_BENCH_REPLAYS` overrides (0 times the live projector only).
fn replays() -> usize {
    std::env::var("TOLLBOOK_BENCH_REPLAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// CPU seconds the whole process has used (user + system), from /proc/self/stat.
fn main() {
    eventlog::memory::tune_process();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let existing = std::env::var_os("TOLLBOOK_BENCH_LOG").map(std::path::PathBuf::from);
    let kept = std::env::var_os("TOLLBOOK_BENCH_DATA").map(std::path::PathBuf::from);
    let events_dir =
        existing.as_ref().or(kept.as_ref()).map_or_else(|| dir.path().join("events"), |d| d.join("events"));
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(events_dir).unwrap());
    let events = match existing {
        Some(_) => runtime.block_on(store.head()).unwrap() - 1,
        None => {
            let events = book_events();
            runtime.block_on(append_synthetic_book(&*store, events, 365));
            events
        }
    };
    let views = dir.path().join("views");
    runtime.block_on(async {
        let (started, cpu) = (Instant::now(), process_cpu_seconds());
        let (mut next, mut read) = (1, 0u64);
        loop {
            let chunk = store.read_all(next, READ_EVENTS_MAX).await.unwrap();
            let Some(last) = chunk.last() else { break };
            next = last.position + 1;
            read += chunk.len() as u64;
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds() - cpu;
        println!("read_all + decode only: {read} events in {seconds:.3} s ({cpu:.2} CPU s), {:.0} events/s", read as f64 / seconds);
        // The live projector's reading alone: the subscription, in its chunks, dropped
        // as they come. The projector's CPU less this is what applying costs.
        let (started, cpu) = (Instant::now(), process_cpu_seconds());
        let mut subscription = store.subscribe_all(1).ready_chunks(projections::CHUNK_EVENTS_MAX);
        let mut received = 0u64;
        while received < read {
            received += subscription.next().await.expect("the subscription goes on").len() as u64;
        }
        drop(subscription);
        let seconds = started.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds() - cpu;
        println!(
            "subscribe_all in the projector's chunks only: {received} events in {seconds:.3} s ({cpu:.2} CPU s), {:.0} events/s",
            received as f64 / seconds
        );
        for _ in 0..replays() {
            let (started, cpu) = (Instant::now(), process_cpu_seconds());
            let report = projections::replay(&*store, &views, |_, _, _| {}).await.unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let cpu = process_cpu_seconds() - cpu;
            let s = report.stages;
            println!(
                "replay: {} events in {seconds:.3} s ({cpu:.2} CPU s), {:.0} events/s; read {} ms (wall), CPU: apply {} ms, build {} ms (wall), save {} ms (wall)",
                report.events,
                report.events as f64 / seconds,
                s.read_micros / 1000,
                s.apply_micros / 1000,
                s.build_micros / 1000,
                s.save_micros / 1000
            );
        }
        // Applying alone: the subscription's chunks applied on a thread of their own, as
        // the projector does, with that thread's CPU time counted apart from the reading.
        let applied = projections::ReadModels::open(&dir.path().join("applied"), store.clone()).unwrap();
        let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<Vec<domain::RecordedEvent>>(2);
        let applier = {
            let applied = applied.clone();
            std::thread::Builder::new().name("applier".into()).spawn(move || {
                let cpu = thread_cpu_seconds();
                for chunk in chunk_rx {
                    applied.apply_chunk(&chunk).unwrap();
                }
                thread_cpu_seconds() - cpu
            })
            .expect("a thread")
        };
        let started = Instant::now();
        let mut subscription = store.subscribe_all(1).ready_chunks(projections::CHUNK_EVENTS_MAX);
        let mut received = 0u64;
        while received < read {
            let chunk: Vec<_> = subscription.next().await.expect("the subscription goes on").into_iter().map(Result::unwrap).collect();
            received += chunk.len() as u64;
            chunk_tx.send(chunk).unwrap();
        }
        drop((subscription, chunk_tx));
        let apply_cpu = applier.join().unwrap();
        println!(
            "applying the subscription's chunks on a thread of their own: {received} events in {:.3} s, {apply_cpu:.2} CPU s on the applying thread ({:.2} µs an event)",
            started.elapsed().as_secs_f64(),
            apply_cpu * 1e6 / received as f64
        );
        drop(applied);

        let models = projections::ReadModels::open(&dir.path().join("live"), store.clone()).unwrap();
        let last = store.head().await.unwrap() - 1;
        let (started, cpu) = (Instant::now(), process_cpu_seconds());
        let projector = projections::spawn_projector(models.clone(), store.clone());
        // A wait is capped at a few seconds; the projector failing ends the loop.
        while let Err(error) = models.wait_for(last, std::time::Duration::from_secs(3600)).await {
            assert!(!projector.is_finished(), "the projector stopped: {error}");
        }
        let (seconds, cpu) = (started.elapsed().as_secs_f64(), process_cpu_seconds() - cpu);
        projector.stop().await.unwrap();
        println!(
            "live projector catching up from nothing, chunks of at most {}: {events} events in {seconds:.3} s ({cpu:.2} CPU s), {:.0} events/s",
            projections::CHUNK_EVENTS_MAX,
            events as f64 / seconds
        );
    });
}
