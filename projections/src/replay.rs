//! Replay and verify: rebuild every read model from the log, and check that the live
//! models and every book's hash chain are what the log says they should be.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use domain::{AccountId, BookId, RecordedEvent};
use eventlog::{ChainBreak, EventStore, READ_EVENTS_MAX, verify_book};
use sha2::{Digest, Sha256};

use crate::error::ProjectionError;
use crate::models::ReadModels;
use crate::runner::{generation, set_generation, tree_name};
use crate::views::*;

const VERIFY_TREE: &str = "views-verify";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub position: u64,
    /// Where the time went: each stage runs on its own thread, so these overlap.
    pub stages: ReplayStages,
}

/// Time of each replay stage, in microseconds: reading is wall-clock time (the store
/// decodes on threads of its own), the others CPU time of their thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStages {
    /// Reading the log and decoding its events.
    pub read_micros: u64,
    /// Applying events to the models in memory.
    pub apply_micros: u64,
    /// Turning a span's pieces into sorted key-value writes (encoding, bucket merges).
    pub encode_micros: u64,
    /// Inserting them into sled.
    pub insert_micros: u64,
}

/// Events replay applies in memory before writing them out. Each key of a span (bucket
/// sums, posting and audit pieces) is then written once per span instead of once per
/// live chunk. Larger spans measured no faster (sled's inserts dominate either way) and
/// hold more memory.
pub const REPLAY_SPAN_EVENTS: usize = 32_768;

/// Inserts per sled batch when replay writes a span. A fresh tree being rebuilt needs no
/// atomicity across batches (the checkpoint goes last, and the tree is swapped in only
/// when complete); 512 cost less CPU than 4096 in the replay benchmark.
const REPLAY_BATCH_INSERTS_MAX: usize = 512;

/// Chunks of the log read ahead of the applier.
const READ_AHEAD_CHUNKS: usize = 4;

fn micros_since(started: Instant) -> u64 {
    started.elapsed().as_micros() as u64
}

/// CPU time this thread has run, in microseconds (Linux; 0 elsewhere). Stage times are
/// CPU time so that they do not count waiting for a core on a busy machine.
fn thread_cpu_micros() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .map_or(0, |ns| ns / 1000)
}

fn join_failed(e: tokio::task::JoinError) -> ProjectionError {
    ProjectionError::Storage(e.to_string())
}

/// Writes spans' pieces in log order; a span's bucket sums are merged with the earlier
/// spans' already written, so the writer must be the only one touching the tree.
fn write_spans(
    tree: sled::Tree,
    spans: std::sync::mpsc::Receiver<(Pieces, u64, u64)>,
    written: Arc<(AtomicU64, AtomicU64)>,
) -> Result<(u64, u64), ProjectionError> {
    let (mut encode_micros, mut insert_micros) = (0, 0);
    for (pieces, checkpoint, events) in spans {
        let started = thread_cpu_micros();
        let writes = pieces.into_writes(&tree, checkpoint)?;
        encode_micros += thread_cpu_micros() - started;
        let started = thread_cpu_micros();
        for run in writes.chunks(REPLAY_BATCH_INSERTS_MAX) {
            let mut batch = sled::Batch::default();
            for (key, value) in run {
                batch.insert(key.as_slice(), value.as_slice());
            }
            tree.apply_batch(batch)?;
        }
        tree.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes())?;
        tree.insert(FORMAT_KEY, &MODELS_FORMAT.to_be_bytes())?;
        insert_micros += thread_cpu_micros() - started;
        written.0.store(events, Ordering::Relaxed);
        written.1.store(checkpoint, Ordering::Relaxed);
    }
    Ok((encode_micros, insert_micros))
}

/// Applies chunks of events in memory and hands a span's pieces to the writer every
/// `span_events` events.
fn apply_spans(
    tree: sled::Tree,
    span_events: usize,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<RecordedEvent>>,
    spans: std::sync::mpsc::SyncSender<(Pieces, u64, u64)>,
) -> Result<u64, ProjectionError> {
    let mut writer = ChunkWriter::for_replay(&tree);
    let mut apply_micros = 0;
    let (mut events, mut in_span, mut last) = (0u64, 0usize, 0u64);
    let writer_gone = || ProjectionError::Storage("the replay writer stopped".into());
    while let Some(chunk) = chunks.blocking_recv() {
        let started = thread_cpu_micros();
        for event in &chunk {
            writer.apply(event)?;
        }
        events += chunk.len() as u64;
        in_span += chunk.len();
        last = chunk.last().map_or(last, |e| e.position);
        let full = in_span >= span_events;
        let pieces = full.then(|| writer.take_pieces());
        apply_micros += thread_cpu_micros() - started;
        if let Some(pieces) = pieces {
            spans.send((pieces, last, events)).map_err(|_| writer_gone())?;
            in_span = 0;
        }
    }
    if in_span > 0 {
        spans.send((writer.take_pieces(), last, events)).map_err(|_| writer_gone())?;
    }
    Ok(apply_micros)
}

/// Rebuilds `tree` from the log up to `up_to` (inclusive; `None` for all that is
/// durable now). `progress` is told (events written, position written, head).
///
/// Three stages run at once: this task reads and decodes the log, one thread applies the
/// events to the models in memory, one writes each span to sled.
async fn rebuild_into(
    store: &dyn EventStore,
    tree: sled::Tree,
    up_to: Option<u64>,
    span_events: usize,
    progress: &mut dyn FnMut(u64, u64, u64),
) -> Result<(ReplayReport, BTreeSet<BookId>), ProjectionError> {
    tree.clear()?;
    let head = store.head().await?;
    let end = up_to.map_or(head, |p| p + 1);
    let written = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
    // One span waits while the next is applied: memory holds at most three spans.
    let (span_tx, span_rx) = std::sync::mpsc::sync_channel(1);
    let applier = {
        let tree = tree.clone();
        tokio::task::spawn_blocking(move || apply_spans(tree, span_events, chunk_rx, span_tx))
    };
    let writer = {
        let (tree, written) = (tree.clone(), written.clone());
        tokio::task::spawn_blocking(move || write_spans(tree, span_rx, written))
    };
    let mut books = BTreeSet::new();
    let mut next = 1;
    let mut read_micros = 0;
    let mut read_failure = None;
    while next < end {
        let started = Instant::now();
        let mut chunk = match store.read_all(next, READ_EVENTS_MAX).await {
            Ok(chunk) => chunk,
            Err(error) => {
                read_failure = Some(error);
                break;
            }
        };
        read_micros += micros_since(started);
        chunk.retain(|e| e.position < end);
        let Some(last) = chunk.last() else { break };
        next = last.position + 1;
        for event in &chunk {
            books.insert(event.event.envelope.book);
        }
        if chunk_tx.send(chunk).await.is_err() {
            break; // the applier failed: its error is reported below
        }
        progress(written.0.load(Ordering::Relaxed), written.1.load(Ordering::Relaxed), end.saturating_sub(1));
    }
    drop(chunk_tx);
    let applied = applier.await.map_err(join_failed)?;
    let wrote = writer.await.map_err(join_failed)?;
    if let Some(error) = read_failure {
        return Err(error.into());
    }
    // A failed writer makes the applier fail too ("the writer stopped"): the writer's
    // error is the cause, so it is the one reported.
    let (encode_micros, insert_micros) = wrote?;
    let apply_micros = applied?;
    let (events, position) = (written.0.load(Ordering::Relaxed), written.1.load(Ordering::Relaxed));
    progress(events, position, end.saturating_sub(1));
    let stages = ReplayStages { read_micros, apply_micros, encode_micros, insert_micros };
    Ok((ReplayReport { events, position, stages }, books))
}

/// Rebuilds every read model from the log into fresh trees, then swaps them in. A crash
/// mid-replay leaves the old models in place. Run it while no server uses `db`.
pub async fn replay(
    store: &dyn EventStore,
    db: &sled::Db,
    progress: impl FnMut(u64, u64, u64),
) -> Result<ReplayReport, ProjectionError> {
    replay_in_spans(store, db, REPLAY_SPAN_EVENTS, progress).await
}

/// [`replay`] with spans of `span_events` events: what the models hold must not depend
/// on it, which the property tests check with small random spans.
pub async fn replay_in_spans(
    store: &dyn EventStore,
    db: &sled::Db,
    span_events: usize,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<ReplayReport, ProjectionError> {
    let old = generation(db)?;
    let fresh = old + 1;
    let tree = db.open_tree(tree_name(fresh))?;
    let (report, _) = rebuild_into(store, tree, None, span_events.max(1), &mut progress).await?;
    set_generation(db, fresh)?;
    db.drop_tree(tree_name(old))?;
    Ok(report)
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Each book with its event count, or where its chain breaks.
    pub books: Vec<(BookId, Result<u64, ChainBreak>)>,
    pub accounts_checked: usize,
    /// Accounts whose live read models differ from a fresh replay.
    pub differing_accounts: Vec<AccountId>,
    /// The position both sides were compared at.
    pub position: u64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.differing_accounts.is_empty() && self.books.iter().all(|(_, verdict)| verdict.is_ok())
    }
}

/// Checks every book's chain and compares the live read models with a fresh replay up
/// to the same position, one checksum per account.
pub async fn verify(
    store: &dyn EventStore,
    db: &sled::Db,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<VerifyReport, ProjectionError> {
    let live = ReadModels::open(db)?;
    let position = live.position();
    let fresh_tree = db.open_tree(VERIFY_TREE)?;
    let (_, books) = rebuild_into(store, fresh_tree.clone(), Some(position), REPLAY_SPAN_EVENTS, &mut progress).await?;
    let live_sums = checksums(&live.tree)?;
    let fresh_sums = checksums(&fresh_tree)?;
    db.drop_tree(VERIFY_TREE)?;
    let accounts: BTreeSet<&AccountId> = live_sums.keys().chain(fresh_sums.keys()).collect();
    let differing_accounts = accounts.iter().filter(|a| live_sums.get(a) != fresh_sums.get(a)).map(|a| **a).collect();
    let mut verdicts = Vec::new();
    for book in books {
        verdicts.push((book, verify_book(store, book).await?));
    }
    Ok(VerifyReport { books: verdicts, accounts_checked: accounts.len(), differing_accounts, position })
}

/// One checksum per account over every model entry that belongs to it. Lists written
/// in pieces (postings, CDRs, audit trail) are hashed entry by entry, and the entry
/// hashes are added up (a multiset hash), so the checksum depends on what the models
/// hold, not on how the log happened to be cut into chunks.
fn checksums(tree: &sled::Tree) -> Result<BTreeMap<AccountId, [u64; 4]>, ProjectionError> {
    let mut sums: BTreeMap<AccountId, [u64; 4]> = BTreeMap::new();
    let mut add = |account: AccountId, tag: u8, bytes: &[u8]| {
        let digest: [u8; 32] = Sha256::new().chain_update([tag]).chain_update(bytes).finalize().into();
        let lanes = sums.entry(account).or_default();
        for (lane, chunk) in lanes.iter_mut().zip(digest.chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
    };
    for entry in tree.iter() {
        let (key, value) = entry?;
        let Some(&prefix) = key.first() else { continue };
        match prefix {
            PREFIX_POSTING => {
                let account = account_at(&key, 1).ok_or_else(|| corrupt(&key))?;
                for e in decode::<Vec<PostingEntry>>(&key, &value)? {
                    add(account, prefix, &encode(&e));
                }
            }
            PREFIX_ACCOUNT_CDR => {
                let account = account_at(&key, 1).ok_or_else(|| corrupt(&key))?;
                for e in decode::<Vec<CdrEntry>>(&key, &value)? {
                    add(account, prefix, &encode(&e));
                }
            }
            PREFIX_EVENT => {
                let account = account_at(&key, 1).ok_or_else(|| corrupt(&key))?;
                for e in decode::<Vec<(u64, EventRow)>>(&key, &value)? {
                    add(account, prefix, &encode(&e));
                }
            }
            PREFIX_ACCOUNT | PREFIX_BUCKET | PREFIX_NUMBER | PREFIX_BOOK_ACCOUNT => {
                let account = match prefix {
                    PREFIX_ACCOUNT => account_at(&key, 1),
                    PREFIX_BUCKET => account_at(&key, 2),
                    PREFIX_BOOK_ACCOUNT => account_at(&key, 17),
                    _ => uuid::Uuid::from_slice(&value).ok().map(AccountId),
                }
                .ok_or_else(|| corrupt(&key))?;
                let mut item = key.to_vec();
                item.extend_from_slice(&value);
                add(account, prefix, &item);
            }
            _ => {} // the checkpoint and the format
        }
    }
    Ok(sums)
}

fn corrupt(key: &[u8]) -> ProjectionError {
    ProjectionError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: "no account in the key".into() }
}

fn account_at(key: &[u8], offset: usize) -> Option<AccountId> {
    key.get(offset..offset + 16).and_then(|b| uuid::Uuid::from_slice(b).ok()).map(AccountId)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use domain::Timestamp;
    use eventlog::testing::append_synthetic_book;
    use eventlog::{EventStore, SledStore};

    use super::*;
    use crate::models::AsOf;
    use crate::runner::spawn_projector;

    /// Replay in spans much smaller than the log (so that bucket sums are merged across
    /// spans and the busy account's audit trail is cut into pieces) holds what the live
    /// projector wrote chunk by chunk, and answers the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_in_small_spans_equals_live_projection() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path().join("events")).unwrap());
        let book = append_synthetic_book(&*store, 3000, 3).await;
        let db = sled::open(dir.path().join("views")).unwrap();
        let live = ReadModels::open(&db).unwrap();
        let projector = spawn_projector(live.clone(), store.clone());
        let last = store.head().await.unwrap() - 1;
        live.wait_for(last, Duration::from_secs(5)).await.unwrap();
        projector.stop().await.unwrap();

        let tree = db.open_tree("views-small-spans").unwrap();
        let (report, _) = rebuild_into(&*store, tree.clone(), None, 700, &mut |_, _, _| {}).await.unwrap();
        assert_eq!((report.events, report.position), (3000, last));
        // The customer is in two events of three: about 470 rows a span, cut into pieces.
        let event_pieces = tree.scan_prefix([PREFIX_EVENT]).count();
        assert!(event_pieces > 3000 / 700 * 2, "only {event_pieces} audit pieces");
        assert_eq!(checksums(&live.tree).unwrap(), checksums(&tree).unwrap());

        let (applied, _) = tokio::sync::watch::channel(report.position);
        let fresh = ReadModels::over(tree, applied);
        let (from, to) = (Timestamp::from_seconds(1_767_225_600), Timestamp::from_seconds(1_767_225_600 + 3 * 86_400));
        let middle = Timestamp::from_seconds(1_767_225_600 + 86_400 + 3_601);
        for account in [book.customer, book.partner] {
            assert_eq!(live.account(account).unwrap(), fresh.account(account).unwrap());
            for (a, b) in [(from, to), (from, middle), (middle, to)] {
                assert_eq!(live.statement(account, a, b, None).unwrap(), fresh.statement(account, a, b, None).unwrap());
            }
            let as_of = Some(AsOf::Position(last / 2));
            assert_eq!(
                live.statement(account, from, to, as_of).unwrap(),
                fresh.statement(account, from, to, as_of).unwrap()
            );
            let mut after = 0;
            loop {
                let (a, b) = (
                    live.account_events(account, after, 97).unwrap(),
                    fresh.account_events(account, after, 97).unwrap(),
                );
                assert_eq!(a, b);
                match a.next_cursor {
                    Some(cursor) => after = cursor.parse().unwrap(),
                    None => break,
                }
            }
        }
    }

    /// Models of the first layout (no format key, a `D` key per CDR, `X` pieces without
    /// the rows) are never read as if they were of this one: opening them starts a fresh
    /// generation, which the projector rebuilds from the log into today's layout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn models_of_an_older_layout_are_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path().join("events")).unwrap());
        let book = append_synthetic_book(&*store, 300, 3).await;
        let last = store.head().await.unwrap() - 1;
        let db = sled::open(dir.path().join("views")).unwrap();
        let old = db.open_tree(tree_name(0)).unwrap();
        old.insert(CHECKPOINT_KEY, &last.to_be_bytes()).unwrap();
        old.insert(b"Dsome-book-and-cdr-id", b"an old row").unwrap();

        let models = ReadModels::open(&db).unwrap();
        assert_eq!(models.position(), 0, "the old models' checkpoint must not be trusted");
        assert_eq!(generation(&db).unwrap(), 1);
        assert!(!db.tree_names().iter().any(|name| name.as_ref() == tree_name(0).as_bytes()));
        let projector = spawn_projector(models.clone(), store.clone());
        models.wait_for(last, Duration::from_secs(5)).await.unwrap();
        projector.stop().await.unwrap();
        assert_eq!(read_format(&models.tree).unwrap(), Some(MODELS_FORMAT));
        assert!(models.account(book.customer).unwrap().is_some());
        let fresh = db.open_tree("views-fresh").unwrap();
        rebuild_into(&*store, fresh.clone(), None, REPLAY_SPAN_EVENTS, &mut |_, _, _| {}).await.unwrap();
        assert_eq!(checksums(&models.tree).unwrap(), checksums(&fresh).unwrap());

        // Reopened, the rebuilt models are kept as they are.
        drop(models);
        let reopened = ReadModels::open(&db).unwrap();
        assert_eq!((reopened.position(), generation(&db).unwrap()), (last, 1));
    }
}
