//! Replay and verify: rebuild every read model from the log, and check that the live
//! models and every book's hash chain are what the log says they should be.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use domain::{AccountId, BookId, RecordedEvent};
use eventlog::{ChainBreak, EventStore, READ_EVENTS_MAX, verify_book};
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use crate::build::{self, ShardBuilder};
use crate::error::ProjectionError;
use crate::models::ReadModels;
use crate::persist::{self, Cores};
use crate::state::{CdrIdIndex, Model};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub position: u64,
    /// Where the time went: reading and applying run on threads of their own, so these
    /// overlap.
    pub stages: ReplayStages,
}

/// Time of each replay stage, in microseconds: reading is the wall-clock time the
/// reader waited for the log (the store decodes on threads of its own), applying the
/// CPU time of the applier threads, building and saving wall-clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStages {
    /// Reading the log and decoding its events.
    pub read_micros: u64,
    /// Applying events to the accounts' lists in memory (CPU, all appliers together).
    pub apply_micros: u64,
    /// Making the models' persistent maps from those lists (wall-clock, on every core).
    pub build_micros: u64,
    /// Writing the models' snapshot file (encoding, writing, syncing).
    pub save_micros: u64,
}

/// Events read from the log in one go and handed to the applier.
pub const REPLAY_READ_EVENTS: usize = READ_EVENTS_MAX;

/// Chunks of the log read ahead of the applier.
const READ_AHEAD_CHUNKS: usize = 8;

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

/// What a rebuild produced.
pub(crate) struct Rebuilt {
    pub model: Model,
    pub cdr_ids: CdrIdIndex,
    pub events: u64,
    pub read_micros: u64,
    pub apply_micros: u64,
    pub build_micros: u64,
    pub books: BTreeSet<BookId>,
}

/// Reads of the log in flight at once: each decodes its events on a thread of its own.
const READS_IN_FLIGHT: usize = 2;

/// Applier threads of a rebuild, one per core: each builds the accounts of its shard.
fn applier_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8)
}

/// The events at positions `from..to`, in as many reads as the store needs.
async fn read_span(store: &dyn EventStore, from: u64, to: u64) -> Result<Vec<RecordedEvent>, ProjectionError> {
    // The first read is kept as it comes, not copied into a span of its own: it is
    // usually the whole span (tens of MB of events), and the copy with its fresh pages
    // was a twentieth of a replay.
    let mut events = store.read_all(from, (to - from) as usize).await?;
    events.truncate(events.partition_point(|e| e.position < to));
    let mut next = match events.last() {
        Some(last) => last.position + 1,
        None => return Ok(events),
    };
    while next < to {
        let chunk = store.read_all(next, (to - next) as usize).await?;
        let before = events.len();
        events.extend(chunk.into_iter().take_while(|e| e.position < to));
        match events[before..].last() {
            Some(last) => next = last.position + 1,
            None => break,
        }
    }
    Ok(events)
}

/// Builds the models from the log up to `up_to` (inclusive; `None` for all that is
/// durable now), reading `read_events` at a time. `progress` is told (events applied,
/// position applied, head). Spans of the log are read and decoded two at a time, and
/// each span goes to every applier thread; an applier builds the accounts of its shard
/// as plain lists (see [`crate::build`]), and the persistent maps are made once at the
/// end, accounts on every core.
pub(crate) async fn rebuild(
    store: &dyn EventStore,
    up_to: Option<u64>,
    read_events: usize,
    progress: &mut dyn FnMut(u64, u64, u64),
) -> Result<Rebuilt, ProjectionError> {
    let head = store.head().await?;
    let end = up_to.map_or(head, |p| p + 1);
    let shards = applier_count();
    // Per shard: events applied, and the position of the last.
    let applied: Arc<Vec<(AtomicU64, AtomicU64)>> =
        Arc::new((0..shards).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect());
    let mut senders = Vec::with_capacity(shards);
    let mut appliers = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Arc<Vec<RecordedEvent>>>(READ_AHEAD_CHUNKS);
        let applied = applied.clone();
        appliers.push(tokio::task::spawn_blocking(move || {
            let mut builder = ShardBuilder::new(shard, shards);
            let mut apply_micros = 0;
            while let Some(chunk) = chunk_rx.blocking_recv() {
                let started = thread_cpu_micros();
                for event in chunk.iter() {
                    builder.apply(event);
                }
                apply_micros += thread_cpu_micros() - started;
                let (events, position) = &applied[shard];
                events.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                position.store(chunk.last().map_or(0, |e| e.position), Ordering::Relaxed);
            }
            (builder, apply_micros)
        }));
        senders.push(chunk_tx);
    }
    let done = |applied: &[(AtomicU64, AtomicU64)]| {
        let events = applied.iter().map(|(e, _)| e.load(Ordering::Relaxed)).min().unwrap_or(0);
        let position = applied.iter().map(|(_, p)| p.load(Ordering::Relaxed)).min().unwrap_or(0);
        (events, position)
    };
    let span = read_events.clamp(1, READ_EVENTS_MAX) as u64;
    let spans = (1..end).step_by(span as usize).map(|from| (from, (from + span).min(end)));
    let mut reads = stream::iter(spans).map(|(from, to)| read_span(store, from, to)).buffered(READS_IN_FLIGHT);
    let mut books = BTreeSet::new();
    let mut read_micros = 0;
    let mut read_failure = None;
    loop {
        let started = Instant::now();
        let chunk = match reads.next().await {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => {
                read_failure = Some(error);
                break;
            }
        };
        read_micros += micros_since(started);
        if chunk.is_empty() {
            break;
        }
        let mut last_book = None;
        for event in &chunk {
            let book = event.event.envelope.book;
            if last_book != Some(book) {
                books.insert(book);
                last_book = Some(book);
            }
        }
        let chunk = Arc::new(chunk);
        let mut applier_gone = false;
        for sender in &senders {
            applier_gone |= sender.send(chunk.clone()).await.is_err();
        }
        if applier_gone {
            break; // an applier failed: its panic is reported below
        }
        let (events, position) = done(&applied);
        progress(events, position, end.saturating_sub(1));
    }
    drop(reads);
    drop(senders);
    let mut builders = Vec::with_capacity(shards);
    let mut apply_micros = 0;
    for applier in appliers {
        let (builder, micros) = applier.await.map_err(join_failed)?;
        builders.push(builder);
        apply_micros += micros;
    }
    if let Some(error) = read_failure {
        return Err(error);
    }
    let (events, _) = done(&applied);
    let started = Instant::now();
    let (model, cdr_ids) = tokio::task::spawn_blocking(move || build::finish(builders)).await.map_err(join_failed)?;
    let build_micros = micros_since(started);
    progress(events, model.position, end.saturating_sub(1));
    Ok(Rebuilt { model, cdr_ids, events, read_micros, apply_micros, build_micros, books })
}

/// Rebuilds every read model from the log and saves them in `dir`, replacing the
/// snapshot there once the new one is durable: a crash mid-replay leaves the old one.
/// Run it while no server uses `dir`.
pub async fn replay(
    store: &dyn EventStore,
    dir: &Path,
    progress: impl FnMut(u64, u64, u64),
) -> Result<ReplayReport, ProjectionError> {
    replay_in_spans(store, dir, REPLAY_READ_EVENTS, progress).await
}

/// [`replay`] reading the log `read_events` at a time: what the models hold must not
/// depend on it, which the property tests check with small random reads.
pub async fn replay_in_spans(
    store: &dyn EventStore,
    dir: &Path,
    read_events: usize,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<ReplayReport, ProjectionError> {
    let rebuilt = rebuild(store, None, read_events, &mut progress).await?;
    let started = Instant::now();
    let (model, cdr_ids, dir_owned) = (rebuilt.model, rebuilt.cdr_ids, dir.to_path_buf());
    let position = model.position;
    tokio::task::spawn_blocking(move || persist::write(&dir_owned, &model, &cdr_ids, Cores::All))
        .await
        .map_err(join_failed)??;
    let stages = ReplayStages {
        read_micros: rebuilt.read_micros,
        apply_micros: rebuilt.apply_micros,
        build_micros: rebuilt.build_micros,
        save_micros: micros_since(started),
    };
    Ok(ReplayReport { events: rebuilt.events, position, stages })
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Each book with its event count, or where its chain breaks.
    pub books: Vec<(BookId, Result<u64, ChainBreak>)>,
    pub accounts_checked: usize,
    /// Accounts whose live read models differ from a fresh replay.
    pub differing_accounts: Vec<AccountId>,
    /// True if the CDR id index differs from a fresh replay's.
    pub cdr_index_differs: bool,
    /// The position both sides were compared at.
    pub position: u64,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.differing_accounts.is_empty()
            && !self.cdr_index_differs
            && self.books.iter().all(|(_, verdict)| verdict.is_ok())
    }
}

/// Checks every book's chain and compares the models saved in `dir` with a fresh
/// replay up to the same position, one checksum per account.
pub async fn verify(
    store: Arc<dyn EventStore>,
    dir: &Path,
    progress: impl FnMut(u64, u64, u64),
) -> Result<VerifyReport, ProjectionError> {
    let live = ReadModels::open(dir, store.clone())?;
    verify_models(&*store, &live, progress).await
}

/// Checks every book's chain and compares `live` with a fresh replay up to its position.
pub async fn verify_models(
    store: &dyn EventStore,
    live: &ReadModels,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<VerifyReport, ProjectionError> {
    let live_model = live.model();
    let position = live_model.position;
    let fresh = rebuild(store, Some(position), REPLAY_READ_EVENTS, &mut progress).await?;
    let live_sums = checksums(&live_model);
    let fresh_sums = checksums(&fresh.model);
    let accounts: BTreeSet<&AccountId> = live_sums.keys().chain(fresh_sums.keys()).collect();
    let differing_accounts = accounts.iter().filter(|a| live_sums.get(a) != fresh_sums.get(a)).map(|a| **a).collect();
    let cdr_index_differs = live.cdr_ids().entries(position) != fresh.cdr_ids.entries(position);
    let mut verdicts = Vec::new();
    for book in fresh.books {
        verdicts.push((book, verify_book(store, book).await?));
    }
    Ok(VerifyReport {
        books: verdicts,
        accounts_checked: accounts.len(),
        differing_accounts,
        cdr_index_differs,
        position,
    })
}

/// One checksum per account over everything the models hold of it.
fn checksums(model: &Model) -> BTreeMap<AccountId, [u8; 32]> {
    model
        .accounts
        .iter()
        .map(|(id, account)| (*id, Sha256::digest(persist::account_bytes(account, model.position)).into()))
        .collect()
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

    async fn synthetic(dir: &Path, events: u64) -> (Arc<dyn EventStore>, eventlog::testing::SyntheticBook) {
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.join("events")).unwrap());
        let book = append_synthetic_book(&*store, events, 3).await;
        (store, book)
    }

    /// Replay reading the log in small pieces holds what the live projector built chunk
    /// by chunk, byte for byte, and answers the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_in_small_reads_equals_live_projection() {
        let dir = tempfile::tempdir().unwrap();
        let (store, book) = synthetic(dir.path(), 3000).await;
        let live = ReadModels::open(&dir.path().join("views"), store.clone()).unwrap();
        let projector = spawn_projector(live.clone(), store.clone());
        let last = store.head().await.unwrap() - 1;
        live.wait_for(last, Duration::from_secs(5)).await.unwrap();
        projector.stop().await.unwrap();

        let replayed_dir = dir.path().join("replayed");
        let report = replay_in_spans(&*store, &replayed_dir, 700, |_, _, _| {}).await.unwrap();
        assert_eq!((report.events, report.position), (3000, last));
        let fresh = ReadModels::open(&replayed_dir, store.clone()).unwrap();
        assert_eq!(live.encoded(), fresh.encoded());

        let (from, to) = (Timestamp::from_seconds(1_767_225_600), Timestamp::from_seconds(1_767_225_600 + 3 * 86_400));
        let middle = Timestamp::from_seconds(1_767_225_600 + 86_400 + 3_601);
        for account in [book.customer, book.partner] {
            assert_eq!(live.account(account).unwrap(), fresh.account(account).unwrap());
            for (a, b) in [(from, to), (from, middle), (middle, to)] {
                assert_eq!(
                    live.statement(account, a, b, None).await.unwrap(),
                    fresh.statement(account, a, b, None).await.unwrap()
                );
            }
            let as_of = Some(AsOf::Position(last / 2));
            assert_eq!(
                live.statement(account, from, to, as_of).await.unwrap(),
                fresh.statement(account, from, to, as_of).await.unwrap()
            );
            let mut after = 0;
            let mut rows = 0;
            loop {
                let (a, b) = (
                    live.account_events(account, after, 97).await.unwrap(),
                    fresh.account_events(account, after, 97).await.unwrap(),
                );
                assert_eq!(a, b);
                rows += a.items.len();
                match a.next_cursor {
                    Some(cursor) => after = cursor.parse().unwrap(),
                    None => break,
                }
            }
            assert!(rows > 1000, "{rows} rows in the trail");
        }
    }

    /// A state saved part way and the rest of the log applied after a reopen equals the
    /// state built in one go; so does a snapshot taken by a clean stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_and_tail_equal_a_full_build() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = synthetic(dir.path(), 2000).await;
        let log = store.read_all(1, READ_EVENTS_MAX).await.unwrap();
        let views = dir.path().join("views");
        let first = ReadModels::open(&views, store.clone()).unwrap();
        first.apply_chunk(&log[..1234]).unwrap();
        first.save().unwrap();
        first.apply_chunk(&log[1234..1500]).unwrap(); // applied but never saved: lost at "crash"
        drop(first);
        let reopened = ReadModels::open(&views, store.clone()).unwrap();
        assert_eq!(reopened.position(), log[1233].position);
        reopened.apply_chunk(&log).unwrap();
        let whole = ReadModels::open(&dir.path().join("whole"), store.clone()).unwrap();
        whole.apply_chunk(&log).unwrap();
        assert_eq!(reopened.encoded(), whole.encoded());
        let report = verify_models(&*store, &reopened, |_, _, _| {}).await.unwrap();
        assert!(report.is_clean(), "{report:?}");
    }

    /// A snapshot cut short or damaged (a crash while writing it, a bad disk) and models
    /// of the sled layout of earlier versions are never read as if they were sound: the
    /// models start empty and the projector rebuilds them from the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_snapshots_and_older_layouts_are_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (store, book) = synthetic(dir.path(), 300).await;
        let last = store.head().await.unwrap() - 1;
        let views = dir.path().join("views");
        let models = ReadModels::open(&views, store.clone()).unwrap();
        models.apply_chunk(&store.read_all(1, READ_EVENTS_MAX).await.unwrap()).unwrap();
        models.save().unwrap();
        let sound = std::fs::read(persist::snapshot_path(&views)).unwrap();
        let expected = models.encoded();
        drop(models);

        let mut flipped = sound.clone();
        flipped[sound.len() / 2] ^= 1;
        let mut other_format = sound.clone();
        other_format[8] ^= 0xff;
        for (what, bytes) in [
            ("cut short", &sound[..sound.len() / 3]),
            ("a bit flipped", &flipped[..]),
            ("another format", &other_format[..]),
        ] {
            std::fs::write(persist::snapshot_path(&views), bytes).unwrap();
            // What a crash mid-write leaves beside it is ignored as well.
            std::fs::write(persist::snapshot_path(&views).with_extension("partial"), &sound[..10]).unwrap();
            let models = ReadModels::open(&views, store.clone()).unwrap();
            assert_eq!(models.position(), 0, "{what}: the snapshot must not be trusted");
            let projector = spawn_projector(models.clone(), store.clone());
            models.wait_for(last, Duration::from_secs(5)).await.unwrap();
            projector.stop().await.unwrap();
            assert_eq!(models.encoded(), expected, "{what}");
        }

        let old = dir.path().join("old-views");
        drop(sled::open(&old).unwrap());
        assert!(old.join("db").exists() && old.join("conf").exists());
        let models = ReadModels::open(&old, store.clone()).unwrap();
        assert!(!old.join("db").exists() && !old.join("conf").exists(), "the old layout's files are removed");
        assert_eq!(models.position(), 0);
        let projector = spawn_projector(models.clone(), store.clone());
        models.wait_for(last, Duration::from_secs(5)).await.unwrap();
        projector.stop().await.unwrap();
        assert!(models.account(book.customer).unwrap().is_some());
        assert_eq!(models.encoded(), expected);
    }
}
