//! Crash safety: a child process writes commands in a loop and records every
//! acknowledged event; it is killed with SIGKILL at random moments and restarted. After
//! every kill the log must hold every acknowledged event exactly once, at the position
//! it was acknowledged with; no command may be half-applied; every chain must verify;
//! and the write side's snapshots, which a kill can land in the middle of saving, must
//! give each book the state a fold of its whole stream gives, and the ledger the accounts
//! the log opened.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::writer::{fold_book, load_book};
use commands::{EventStore, Ledger, SledStore, verify_book};
use domain::{BookId, Payload, RecordedEvent};

/// At least 20 kill cycles run in CI.
const KILL_CYCLES: usize = 24;

struct Ack {
    book: String,
    position: u64,
    version: u64,
}

fn read_acks(path: &std::path::Path) -> HashMap<String, Ack> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut acks = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // A kill can cut the last line short; a cut line was never a complete ack.
        if fields.len() != 4 {
            continue;
        }
        let (Ok(position), Ok(version)) = (fields[2].parse(), fields[3].parse()) else { continue };
        let previous = acks.insert(fields[1].to_string(), Ack { book: fields[0].to_string(), position, version });
        assert!(previous.is_none(), "event {} acknowledged twice", fields[1]);
    }
    acks
}

/// A pseudo-random delay, different every cycle, without a dependency.
fn kill_delay(cycle: usize) -> Duration {
    let seed = Instant::now().elapsed().as_nanos() as u64 ^ (cycle as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let jitter = seed.wrapping_mul(6364136223846793005).rotate_left(17) % 400;
    Duration::from_millis(60 + jitter + (cycle as u64 % 5) * 37)
}

async fn check(data: &std::path::Path, acks: &HashMap<String, Ack>) -> usize {
    let store = Arc::new(SledStore::open(data).expect("store reopens after a kill"));
    let mut log: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = log.last().map(|e| e.position + 1).unwrap_or(1);
        let chunk = store.read_all(from, 4096).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        log.extend(chunk);
    }
    // Every event exactly once, positions strictly increasing.
    let mut seen = HashSet::new();
    for pair in log.windows(2) {
        assert!(pair[0].position < pair[1].position, "positions out of order");
    }
    let by_id: HashMap<String, &RecordedEvent> = log
        .iter()
        .map(|e| {
            let id = e.event.envelope.event_id.to_string();
            assert!(seen.insert(id.clone()), "event {id} stored twice");
            (id, e)
        })
        .collect();
    for (id, ack) in acks {
        let stored = by_id.get(id).unwrap_or_else(|| panic!("acknowledged event {id} is lost"));
        assert_eq!(stored.position, ack.position, "event {id} moved");
        assert_eq!(stored.event.envelope.version, ack.version);
        assert_eq!(stored.event.envelope.book.to_string(), ack.book);
    }
    // No command is half-applied: each keyed command's events are all there, in a row.
    let mut books: HashMap<BookId, Vec<&RecordedEvent>> = HashMap::new();
    for e in &log {
        books.entry(e.event.envelope.book).or_default().push(e);
    }
    for (book, events) in &books {
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.event.envelope.version, i as u64, "book {book} has a gap");
            if e.event.envelope.idempotency.is_some() {
                let count = e.event.envelope.command_events as usize;
                assert!(i + count <= events.len(), "a command of book {book} is half-applied");
            }
        }
        assert_eq!(verify_book(&*store, *book).await.unwrap(), Ok(events.len() as u64), "chain of {book}");
        let loaded = load_book(&*store, *book).await.unwrap();
        let folded = fold_book(&*store, *book).await.unwrap();
        if let Err(difference) = loaded.matches_fold(&*store, &folded).await {
            panic!("book {book} from its snapshot and id runs: {difference}");
        }
    }
    let opened = log.iter().filter(|e| matches!(e.event.payload, Payload::AccountOpened(_))).count();
    let store: Arc<dyn EventStore> = store;
    let ledger = Ledger::open(store).await.expect("the ledger opens after a kill");
    assert_eq!(ledger.account_count(), opened, "the ledger's snapshot and the log after it");
    drop(ledger);
    log.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    kill_and_check(None).await;
}

/// The same over segments of 16 KiB: the writer closes a segment every few dozen events,
/// so kills land between a segment's close, its sync and the writing of its index file,
/// and every reopen maps index files, scans the segments without one and writes theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_over_small_segments() {
    kill_and_check(Some(16 * 1024)).await;
}

async fn kill_and_check(segment_bytes_max: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ack_path = dir.path().join("acks");
    let mut last_len = 0;
    for cycle in 0..KILL_CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"));
        child.arg(&data).arg(&ack_path).stdout(Stdio::null()).stderr(Stdio::inherit());
        if let Some(bytes) = segment_bytes_max {
            child.env("CRASH_SEGMENT_BYTES_MAX", bytes.to_string());
        }
        let mut child = child.spawn().expect("start the writer");
        tokio::time::sleep(kill_delay(cycle)).await;
        assert!(child.try_wait().unwrap().is_none(), "the writer died on its own in cycle {cycle}");
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let acks = read_acks(&ack_path);
        let stored = check(&data, &acks).await;
        assert!(stored >= acks.len());
        last_len = stored;
    }
    let acks = read_acks(&ack_path);
    let book_snapshots = std::fs::read_dir(data.join("snapshots"))
        .map(|entries| {
            entries.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("book-"))).count()
        })
        .unwrap_or(0);
    assert!(acks.len() > KILL_CYCLES * 10, "too few writes were acknowledged to mean anything: {}", acks.len());
    assert!(book_snapshots > 0, "no book snapshot was saved: the restarts never loaded one");
    assert!(last_len >= acks.len());
    if segment_bytes_max.is_some() {
        let segments = std::fs::read_dir(data.join("segments")).unwrap().count();
        assert!(segments > 10, "the small segments were never closed: {segments} files");
    }
}
