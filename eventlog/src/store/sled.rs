//! The embedded backend: the events in append-only segment files, indexed by the store.
//!
//! One append is one batch of one book at contiguous positions. It is written as one
//! record at the end of the current segment (see [`super::segment`] for the format and
//! for why the events left sled), and indexed in memory by pushing the record's place
//! onto the current segment's index (see [`super::segment_index`]): by position, and by
//! book and version. A closed segment's index goes to an immutable file next to it,
//! `segment-N.idx`, read by mapping. This index replaced two sled inserts per append
//! (`F` + first position, `S` + book + first version), which were about 22% of the
//! write path's CPU; sled's index only ever grew at its end, which a sorted vector does
//! for the price of a push.
//!
//! sled remains for logs written before the segments, which keep their batches in sled
//! under `L` + first position (the framed events themselves) and their streams under
//! `S` + book + first version; they are read as before, and every later batch goes to
//! the segments. A log indexed in sled by an earlier release (its `F` and `S` entries) is
//! indexed from its segments at the first open, which then takes those entries out of
//! sled. sled's lock on its directory also keeps a second process out.
//!
//! Durability: one flusher thread `fdatasync`s the segments written since its last
//! round, so the appends of all books that arrive during one sync share the next (group
//! commit across books). `append_pipelined` returns right after the write, with the wait
//! for the sync as a future: a book's writer applies its next batch while this one is
//! synced. The index is made durable only at checkpoints, after the segment it indexes
//! was synced: when a segment is full (its index file), and when the store closes (the
//! current segment's, up to where it was synced). The segments are the truth: an open
//! scans every segment that no usable index file covers, and cuts a torn record off the
//! last one.
//!
//! Readers of the global log see only positions below the durable watermark, so a
//! projection never acts on an event that a crash could still take back.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use async_trait::async_trait;
use domain::{BookId, RecordedEvent};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::chain::{self, EncodedEvent};
use crate::error::StoreError;
use crate::store::segment::{self, Segment};
use crate::store::segment_index::{self, RecordEntry, SegmentIndex};
use crate::store::snapshots;
use crate::store::{Appended, BookAppend, EventStore, ExpectedVersion, PendingAppend, PendingAppends, READ_EVENTS_MAX};

const LEGACY_LOG_PREFIX: u8 = b'L';
const EARLIER_SEGMENT_INDEX_PREFIX: u8 = b'F';
const STREAM_PREFIX: u8 = b'S';

/// Events the live subscription reads in one go: also the most a projector catching up
/// gets in one chunk (it takes what is ready), see `projections::CHUNK_EVENTS_MAX`.
const SUBSCRIPTION_CHUNK_EVENTS: usize = 2048;
/// A caught-up subscription under load, once woken, waits this long for more events to become
/// durable (or for `SUBSCRIPTION_GATHER_EVENTS` of them): its consumer (the projector)
/// pays per chunk, and one flush's worth of events at a time made projecting most of the
/// server's CPU under load. It is also the extra delay a read-your-writes read may see.
const SUBSCRIPTION_GATHER: std::time::Duration = std::time::Duration::from_millis(5);
const SUBSCRIPTION_GATHER_EVENTS: u64 = 512;
/// Events that one flush made durable from which a subscription counts as under load.
const SUBSCRIPTION_GATHER_UNDER_LOAD: u64 = 16;
/// A segment is closed and the next one started once it holds this much (by default). It
/// bounds what an open after a crash scans again (a closed segment's index is written to
/// its file once the segment is synced), and the memory the current segment's index takes.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// How the sled store lays out its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// See [`SEGMENT_BYTES_MAX`]; smaller segments mean more files and index files.
    pub segment_bytes_max: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions { segment_bytes_max: SEGMENT_BYTES_MAX }
    }
}
/// How much of a segment one read of the global log takes: many records at once.
const SEGMENT_READ_BYTES: u64 = 1024 * 1024;
/// The segments, in the store's directory.
const SEGMENT_DIR: &str = "segments";
/// sled 0.34's data file in its directory.
const SLED_DATA_FILE: &str = "db";

#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Only the batches and streams of the layout before the segments (`L`, `S`).
    log: sled::Tree,
    /// The first position in the segments: every position before it is in sled.
    segments_start: u64,
    index: Arc<SegmentIndex>,
    segment_dir: PathBuf,
    snapshot_dir: PathBuf,
    /// Segments opened for reading, by sequence.
    readers: RwLock<HashMap<u64, Arc<File>>>,
    append_lock: Arc<Mutex<AppendState>>,
    flusher: Arc<Flusher>,
    flusher_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpoint_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Zeros written ahead of the records, so that appends do not grow the file.
    zero_ahead: Arc<segment::ZeroAhead>,
    zeroing_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    opened_next_position: u64,
    /// One past the highest durable position (positions start at 1), or the flush
    /// failure that stopped durability.
    durable: watch::Receiver<Durable>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Durable {
    end: u64,
    failure: Option<String>,
}

/// The flusher thread's mailbox: the highest position written and waiting for a sync.
struct Flusher {
    requested_end: Mutex<FlushRequest>,
    /// Where the segments were when the last sync began: what a checkpoint may promise.
    synced: Mutex<SyncedUpTo>,
    wake: Condvar,
    flushes: AtomicU64,
    flush_micros_total: AtomicU64,
    checkpoints: AtomicU64,
}

/// Counters of the store's durable writes, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SledStats {
    pub appends: u64,
    pub events: u64,
    /// Syncs of the segments: group commits.
    pub flushes: u64,
    pub flush_micros_total: u64,
    /// Checkpoints of the index: index files written at each new segment and at close.
    pub checkpoints: u64,
}

struct FlushRequest {
    end: u64,
    stop: bool,
    /// The flusher waits for a request. A notification costs a system call, which a
    /// busy flusher does not need: it looks at the request before it waits again.
    idle: bool,
}

impl Flusher {
    fn request(&self, end: u64) {
        let mut request = self.requested_end.lock().expect("flusher lock");
        if end > request.end {
            request.end = end;
            if request.idle {
                self.wake.notify_one();
            }
        }
    }

    fn stop(&self) {
        self.requested_end.lock().expect("flusher lock").stop = true;
        self.wake.notify_one();
    }

    /// Syncs until stopped. Each round makes durable every batch written before it
    /// began, whichever book wrote it, and asks for a checkpoint when a segment was
    /// closed since the last round. On stop, asks for a last checkpoint, so that a clean
    /// restart has nothing to scan.
    fn run(
        &self,
        appends: &Mutex<AppendState>,
        durable: watch::Sender<Durable>,
        checkpoints: std::sync::mpsc::Sender<Checkpoint>,
    ) {
        let mut flushed_end = durable.borrow().end;
        loop {
            {
                let mut request = self.requested_end.lock().expect("flusher lock");
                while request.end <= flushed_end && !request.stop {
                    request.idle = true;
                    request = self.wake.wait(request).expect("flusher lock");
                    request.idle = false;
                }
                if request.end <= flushed_end {
                    break;
                }
            }
            let (reached, closed, current) = {
                let mut state = appends.lock().expect("append lock poisoned");
                let reached = SyncedUpTo {
                    segment: state.segment.sequence(),
                    offset: state.segment.bytes(),
                    next_position: state.next_position,
                };
                (reached, std::mem::take(&mut state.closed_unsynced), state.segment.sync_handle())
            };
            let end = reached.next_position;
            let started = std::time::Instant::now();
            let synced = closed.iter().chain([&current]).try_for_each(|file| file.sync_data()).map_err(segment::io);
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.flush_micros_total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match synced {
                Ok(()) => {
                    flushed_end = end;
                    *self.synced.lock().expect("synced lock") = reached;
                    durable.send_modify(|d| d.end = end);
                    if !closed.is_empty() {
                        let _ = checkpoints.send(Checkpoint::SegmentsClosed);
                    }
                }
                Err(error) => {
                    // Nothing after this point can be promised durable: fail every waiter.
                    tracing::error!(%error, "syncing the event log failed");
                    durable.send_modify(|d| d.failure = Some(error.to_string()));
                    return;
                }
            }
        }
        let _ = checkpoints.send(Checkpoint::Closing);
    }
}

/// What the checkpoint thread is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checkpoint {
    /// Segments were closed and then synced: write their index files.
    SegmentsClosed,
    /// The store is closing, everything written is synced: also write the current
    /// segment's index file, so that the next open scans nothing.
    Closing,
}

/// Writes index files, once per request (requests that queue up meanwhile are served by
/// one checkpoint). Off the append path: an index file is fsynced, renamed and its
/// directory fsynced, and appends go on meanwhile.
fn run_checkpoints(index: Arc<SegmentIndex>, flusher: Arc<Flusher>, requests: std::sync::mpsc::Receiver<Checkpoint>) {
    while let Ok(mut request) = requests.recv() {
        while let Ok(next) = requests.try_recv() {
            if next == Checkpoint::Closing {
                request = next;
            }
        }
        // Only what is synced: an index file must never name a record that a power cut
        // could still take.
        let synced = *flusher.synced.lock().expect("synced lock");
        let live_end = (request == Checkpoint::Closing).then_some(synced.next_position);
        match index.write_files(synced.segment, live_end) {
            Ok(_) => {
                flusher.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            // Nothing is lost: the next open scans the segments whose index is missing.
            Err(error) => tracing::error!(%error, "writing the event log's index files failed"),
        }
    }
}

impl Drop for Inner {
    /// Waits for the flusher and the last checkpoint, so that the database (and its
    /// lock) is released when the last handle to the store goes.
    fn drop(&mut self) {
        self.zero_ahead.stop();
        if let Some(thread) = self.zeroing_thread.lock().expect("zeroing thread lock").take() {
            let _ = thread.join();
        }
        self.flusher.stop();
        if let Some(thread) = self.flusher_thread.lock().expect("flusher thread lock").take() {
            let _ = thread.join();
        }
        // The flusher's end closed the checkpoints' queue after its last request.
        if let Some(thread) = self.checkpoint_thread.lock().expect("checkpoint thread lock").take() {
            let _ = thread.join();
        }
    }
}

struct AppendState {
    appends: u64,
    next_position: u64,
    /// Next version of each book seen so far; others are looked up on first append.
    next_versions: HashMap<BookId, u64>,
    segment: Segment,
    segment_bytes_max: u64,
    /// Segments closed since the flusher's last round, which it syncs before the current.
    closed_unsynced: Vec<Arc<File>>,
    /// The record being written, kept for its capacity.
    record: Vec<u8>,
    /// Set when writing a batch to its segment failed (part of it may be there):
    /// appends stop rather than write another record at the same positions.
    failed: Option<String>,
}

fn log_key(prefix: u8, position: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn stream_key(book: BookId, first_version: u64) -> [u8; 25] {
    let mut key = [STREAM_PREFIX; 25];
    key[1..17].copy_from_slice(book.0.as_bytes());
    key[17..].copy_from_slice(&first_version.to_be_bytes());
    key
}

/// Where the segments were when a sync began: the segment, the byte in it, and the
/// position of the next batch. Every record before it is durable once the sync returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SyncedUpTo {
    segment: u64,
    offset: u64,
    next_position: u64,
}

/// Earlier releases indexed the segments in sled: `F` + first position -> an
/// `EARLIER_RECORD_REF_BYTES` value (segment, offset, body length, count, book, first
/// version), `S` + book + first version -> (first position, count), and under this key
/// how far those entries were complete when sled was last flushed.
const EARLIER_CHECKPOINT_KEY: &[u8] = b"C";
const EARLIER_RECORD_REF_BYTES: usize = 48;

/// Takes an earlier release's segment index out of sled: each `F` entry with the `S`
/// entry it names, and the checkpoint entry. The segments were indexed from their
/// records before (and the closed ones' index files made durable), so nothing read
/// depends on these entries, and a crash in the middle only leaves the rest to the next
/// open. Returns how many batches' entries it took out.
fn remove_earlier_index(log: &sled::Tree, db: &sled::Db, store_dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for entry in log.range(log_key(EARLIER_SEGMENT_INDEX_PREFIX, 0)..=log_key(EARLIER_SEGMENT_INDEX_PREFIX, u64::MAX)) {
        let (key, value) = entry?;
        if value.len() == EARLIER_RECORD_REF_BYTES {
            let book = BookId(uuid::Uuid::from_bytes(value[24..40].try_into().expect("16 bytes")));
            log.remove(stream_key(book, parse_u64(&value[40..])))?;
        }
        log.remove(key)?;
        removed += 1;
    }
    let checkpoint = log.remove(EARLIER_CHECKPOINT_KEY)?;
    if removed > 0 || checkpoint.is_some() {
        db.flush()?;
        // sled's own flush stops at `sync_file_range`.
        File::open(store_dir.join(SLED_DATA_FILE)).and_then(|f| f.sync_all()).map_err(segment::io)?;
    }
    Ok(removed)
}

/// A stored batch's framed events, wherever they are.
enum Framed {
    Legacy(sled::IVec),
    Segment(Vec<u8>),
}

impl std::ops::Deref for Framed {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Framed::Legacy(value) => value,
            Framed::Segment(bytes) => bytes,
        }
    }
}

/// Frames a batch's encoded events into one value.
fn frame_events(events: &[EncodedEvent]) -> Vec<u8> {
    let size = 4 + events.iter().map(|e| 4 + e.bytes.len()).sum::<usize>();
    let mut value = Vec::with_capacity(size);
    value.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for event in events {
        value.extend_from_slice(&(event.bytes.len() as u32).to_le_bytes());
        value.extend_from_slice(&event.bytes);
    }
    value
}

/// The stored bytes of each event of a framed batch, in order.
fn unframe(first_position: u64, value: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let corrupt = || StoreError::Corrupt { position: first_position, reason: "batch framing is damaged".into() };
    let count = u32::from_le_bytes(value.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes")) as usize;
    let mut frames = Vec::with_capacity(count);
    let mut at = 4;
    for _ in 0..count {
        let len = u32::from_le_bytes(value.get(at..at + 4).ok_or_else(corrupt)?.try_into().expect("4 bytes")) as usize;
        frames.push(value.get(at + 4..at + 4 + len).ok_or_else(corrupt)?);
        at += 4 + len;
    }
    if at != value.len() {
        return Err(corrupt());
    }
    Ok(frames)
}

fn parse_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// A stored batch of one book: versions `first_version..first_version+count` sit at
/// positions `first_position..`.
struct BatchRef {
    first_version: u64,
    first_position: u64,
    count: u64,
}

fn parse_batch(key: &[u8], value: &[u8]) -> BatchRef {
    BatchRef {
        first_version: parse_u64(&key[17..]),
        first_position: parse_u64(&value[..8]),
        count: u32::from_be_bytes(value[8..12].try_into().expect("4 bytes")) as u64,
    }
}

/// The last entry under `prefix` before `key`, if any.
fn last_before(log: &sled::Tree, prefix: u8, key: &[u8]) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
    Ok(log.get_lt(key)?.filter(|(k, _)| k.len() == 9 && k[0] == prefix))
}

/// Decodes the events of one framed batch that fall in `from..durable` into `events`,
/// up to `max`. False once no more are wanted.
fn push_batch(
    events: &mut Vec<RecordedEvent>,
    first_position: u64,
    framed: &[u8],
    from: u64,
    durable: u64,
    max: usize,
) -> Result<bool, StoreError> {
    push_frames(events, first_position, &unframe(first_position, framed)?, from, durable, max)
}

/// Decodes the framed events of one batch at `first_position..` into `events`, those
/// from `from` on; false once `events` holds `max` or the durable end is reached.
fn push_frames(
    events: &mut Vec<RecordedEvent>,
    first_position: u64,
    frames: &[&[u8]],
    from: u64,
    durable: u64,
    max: usize,
) -> Result<bool, StoreError> {
    for (offset, bytes) in frames.iter().enumerate() {
        let position = first_position + offset as u64;
        if position < from {
            continue;
        }
        if events.len() == max || position >= durable {
            return Ok(false);
        }
        events.push(RecordedEvent { position, event: chain::decode(position, bytes)? });
    }
    Ok(events.len() < max)
}

impl SledStore {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SledOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = sled::Config::new()
            .path(path)
            // Durability comes from the segments' syncs and the index files; sled holds
            // only the layout before the segments, and is flushed only when an earlier
            // release's index is taken out of it.
            .flush_every_ms(None)
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|error| match error {
                // sled 0.34 says so only in the message of an `Other` error.
                sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
                    StoreError::InUse(path.display().to_string())
                }
                other => other.into(),
            })?;
        let log = db.open_tree("log")?;
        let segment_dir = path.join(SEGMENT_DIR);
        std::fs::create_dir_all(&segment_dir).map_err(segment::io)?;
        let snapshot_dir = path.join(snapshots::SNAPSHOT_DIR);
        std::fs::create_dir_all(&snapshot_dir).map_err(segment::io)?;
        let segments_start = match last_before(&log, LEGACY_LOG_PREFIX, &log_key(LEGACY_LOG_PREFIX, u64::MAX))? {
            Some((key, value)) => {
                let first_position = parse_u64(&key[1..]);
                first_position + unframe(first_position, &value)?.len() as u64
            }
            None => 1,
        };
        let opened = segment_index::open(&segment_dir, segments_start)?;
        let (sequence, valid, next_position) = (opened.sequence, opened.valid_bytes, opened.next_position);
        let index = Arc::new(opened.index);
        let segment = Segment::open(&segment_dir, sequence, valid, options.segment_bytes_max)?;
        let zero_ahead = segment.zero_ahead();
        let removed = remove_earlier_index(&log, &db, path)?;
        if removed > 0 {
            tracing::info!(removed, "took an earlier release's segment index out of sled: index files replace it");
        }
        let synced = SyncedUpTo { segment: sequence, offset: valid, next_position };
        let (durable_tx, durable) = watch::channel(Durable { end: next_position, failure: None });
        let flusher = Arc::new(Flusher {
            requested_end: Mutex::new(FlushRequest { end: next_position, stop: false, idle: false }),
            synced: Mutex::new(synced),
            wake: Condvar::new(),
            flushes: Default::default(),
            flush_micros_total: Default::default(),
            checkpoints: Default::default(),
        });
        let append_lock = Arc::new(Mutex::new(AppendState {
            appends: 0,
            next_position,
            next_versions: HashMap::new(),
            segment,
            segment_bytes_max: options.segment_bytes_max,
            closed_unsynced: Vec::new(),
            record: Vec::new(),
            failed: None,
        }));
        let (checkpoint_tx, checkpoint_rx) = std::sync::mpsc::channel();
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(run).map_err(segment::io)
        };
        let flusher_thread = {
            let (flusher, appends) = (flusher.clone(), append_lock.clone());
            spawn("tollbook-flusher", Box::new(move || flusher.run(&appends, durable_tx, checkpoint_tx)))?
        };
        let checkpoint_thread = {
            let (index, flusher) = (index.clone(), flusher.clone());
            let run = move || run_checkpoints(index, flusher, checkpoint_rx);
            spawn("tollbook-checkpoint", Box::new(run))?
        };
        let zeroing_thread = {
            let zeros = zero_ahead.clone();
            spawn("tollbook-zeros", Box::new(move || zeros.run()))?
        };
        Ok(SledStore {
            inner: Arc::new(Inner {
                log,
                segments_start,
                index,
                segment_dir,
                snapshot_dir,
                readers: RwLock::new(HashMap::new()),
                append_lock,
                flusher,
                flusher_thread: Mutex::new(Some(flusher_thread)),
                checkpoint_thread: Mutex::new(Some(checkpoint_thread)),
                zero_ahead,
                zeroing_thread: Mutex::new(Some(zeroing_thread)),
                opened_next_position: next_position,
                durable,
            }),
        })
    }

    /// Appends, events and flushes since the store was opened.
    pub fn stats(&self) -> SledStats {
        use Ordering::Relaxed;
        let (appends, next_position) = {
            let state = self.inner.append_lock.lock().expect("append lock poisoned");
            (state.appends, state.next_position)
        };
        let opened_at = self.inner.opened_next_position;
        SledStats {
            appends,
            events: next_position - opened_at,
            flushes: self.inner.flusher.flushes.load(Relaxed),
            flush_micros_total: self.inner.flusher.flush_micros_total.load(Relaxed),
            checkpoints: self.inner.flusher.checkpoints.load(Relaxed),
        }
    }

    /// A segment opened for reading.
    fn reader(&self, sequence: u64) -> Result<Arc<File>, StoreError> {
        if let Some(file) = self.inner.readers.read().expect("readers lock").get(&sequence) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(segment::segment_path(&self.inner.segment_dir, sequence)).map_err(segment::io)?);
        self.inner.readers.write().expect("readers lock").insert(sequence, file.clone());
        Ok(file)
    }

    /// The framed events of the record at `record` of segment `segment`.
    fn read_record(&self, segment: u64, record: RecordEntry) -> Result<Framed, StoreError> {
        let file = self.reader(segment)?;
        let framed = segment::read_framed(&file, record.offset, record.body_len).map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt { position: record.first_position, reason },
            other => other,
        })?;
        Ok(Framed::Segment(framed))
    }

    /// The next version of `book` as stored, from its last batch: in the segments
    /// (searched from the newest back), else in sled's batches of the layout before them.
    fn stored_next_version(&self, book: BookId) -> Result<u64, StoreError> {
        if let Some(end_version) = self.inner.index.book_end_version(book) {
            return Ok(end_version);
        }
        for entry in self.inner.log.range(stream_key(book, 0)..=stream_key(book, u64::MAX)).rev() {
            let (key, value) = entry?;
            let batch = parse_batch(&key, &value);
            if batch.first_position < self.inner.segments_start {
                return Ok(batch.first_version + batch.count);
            }
        }
        Ok(0)
    }

    /// The stored batch holding `position`: its first position and its events. Batches
    /// in segments all come after those of the legacy layout.
    fn batch_holding(&self, position: u64) -> Result<Option<(u64, Framed)>, StoreError> {
        if position >= self.inner.segments_start {
            let Some((segment, record)) = self.inner.index.locate(position) else { return Ok(None) };
            return Ok(Some((record.first_position, self.read_record(segment, record)?)));
        }
        let after = position.saturating_add(1);
        Ok(last_before(&self.inner.log, LEGACY_LOG_PREFIX, &log_key(LEGACY_LOG_PREFIX, after))?
            .map(|(key, value)| (parse_u64(&key[1..]), Framed::Legacy(value))))
    }

    /// One lookup per stored batch, not per event: a page's positions are often in one
    /// batch.
    fn read_positions_sync(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, StoreError> {
        let durable = self.inner.durable.borrow().end;
        let mut events = Vec::with_capacity(positions.len());
        // The batch last read: its first position, bytes and frames' byte ranges.
        let mut batch: Option<(u64, Framed, Vec<std::ops::Range<usize>>)> = None;
        for &position in positions {
            if position == 0 || position >= durable {
                continue;
            }
            let held = |(first, _, frames): &(u64, Framed, Vec<std::ops::Range<usize>>)| {
                *first <= position && position - first < frames.len() as u64
            };
            if !batch.as_ref().is_some_and(held) {
                batch = match self.batch_holding(position)? {
                    Some((first, value)) => {
                        let base = value.as_ptr() as usize;
                        let frames = unframe(first, &value)?
                            .into_iter()
                            .map(|frame| {
                                let start = frame.as_ptr() as usize - base;
                                start..start + frame.len()
                            })
                            .collect();
                        Some((first, value, frames))
                    }
                    None => None,
                };
            }
            let Some((first, value, frames)) = &batch else { continue };
            if let Some(range) = frames.get((position - first) as usize) {
                events.push(RecordedEvent { position, event: chain::decode(position, &value[range.clone()])? });
            }
        }
        Ok(events)
    }

    fn read_all_sync(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let durable = self.inner.durable.borrow().end;
        let from = from.max(1);
        if from >= durable {
            return Ok(Vec::new());
        }
        let max = max.min(READ_EVENTS_MAX).min((durable - from) as usize);
        let mut events = Vec::with_capacity(max);
        // The legacy batches first: they all precede the segments'.
        let legacy_start = last_before(&self.inner.log, LEGACY_LOG_PREFIX, &log_key(LEGACY_LOG_PREFIX, from + 1))?
            .map_or(from, |(key, _)| parse_u64(&key[1..]));
        for entry in self.inner.log.range(log_key(LEGACY_LOG_PREFIX, legacy_start)..log_key(LEGACY_LOG_PREFIX, durable))
        {
            let (key, value) = entry?;
            if !push_batch(&mut events, parse_u64(&key[1..]), &value, from, durable, max)? {
                return Ok(events);
            }
        }
        // Then the segments, read in long runs: their records are in log order, and
        // their positions run on from `segments_start` without a gap.
        let Some((segment, record)) = self.inner.index.locate(from.max(self.inner.segments_start)) else {
            return Ok(events);
        };
        self.read_segments_from(&mut events, record.first_position, segment, record.offset, from, durable, max)?;
        Ok(events)
    }

    /// Reads the records of the segments from `offset` of `segment` (where the record of
    /// `position` starts) on, until `max` events or the durable end.
    #[expect(clippy::too_many_arguments, reason = "one cursor's worth of state, used once")]
    fn read_segments_from(
        &self,
        events: &mut Vec<RecordedEvent>,
        mut position: u64,
        mut segment: u64,
        mut offset: u64,
        from: u64,
        durable: u64,
        max: usize,
    ) -> Result<(), StoreError> {
        let mut buffer = Vec::new();
        while position < durable && events.len() < max {
            let file = self.reader(segment)?;
            // The segment being appended to holds zeros after its records: read it only
            // up to the durable end (a closed one is cut back to its records).
            let synced = *self.inner.flusher.synced.lock().expect("synced lock");
            let length = match segment.cmp(&synced.segment) {
                std::cmp::Ordering::Less => file.metadata().map_err(segment::io)?.len(),
                std::cmp::Ordering::Equal => synced.offset,
                std::cmp::Ordering::Greater => 0,
            };
            if offset >= length {
                // Records of durable positions are past this segment: in the next one.
                (segment, offset) = (segment + 1, 0);
                continue;
            }
            let mut wanted = (length - offset).min(SEGMENT_READ_BYTES);
            buffer.resize(wanted as usize, 0);
            file.read_exact_at(&mut buffer, offset).map_err(segment::io)?;
            if let Some(len) = segment::record_len(&buffer).filter(|len| *len as u64 > wanted) {
                // One record longer than a read: read it whole.
                wanted = (len as u64).min(length - offset);
                buffer.resize(wanted as usize, 0);
                file.read_exact_at(&mut buffer, offset).map_err(segment::io)?;
            }
            let mut consumed = 0;
            for record in segment::records(&buffer) {
                if record.first_position != position {
                    let reason =
                        format!("segment {segment} holds position {} where {position} was due", record.first_position);
                    return Err(StoreError::Corrupt { position, reason });
                }
                consumed = record.at + record.len;
                let frames = unframe(position, record.framed)?;
                let more = push_frames(events, position, &frames, from, durable, max)?;
                position += frames.len() as u64;
                if !more {
                    return Ok(());
                }
            }
            if consumed == 0 {
                let reason = format!("segment {segment} has no whole record at byte {offset} before the durable end");
                return Err(StoreError::Corrupt { position, reason });
            }
            offset += consumed as u64;
        }
        Ok(())
    }

    fn read_stream_sync(&self, book: BookId, from_version: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let max = max.min(READ_EVENTS_MAX);
        let mut events = Vec::new();
        // The batches of the layout before the segments come first, from sled. The
        // batch holding `from_version` starts at or before it.
        let start = match self.inner.log.get_lt(stream_key(book, from_version.saturating_add(1)))? {
            Some((key, _)) if key.len() == 25 && key[..17] == stream_key(book, 0)[..17] => parse_u64(&key[17..]),
            _ => from_version,
        };
        for entry in self.inner.log.range(stream_key(book, start)..=stream_key(book, u64::MAX)) {
            let (key, value) = entry?;
            let batch = parse_batch(&key, &value);
            if batch.first_version + batch.count <= from_version || batch.first_position >= self.inner.segments_start {
                continue;
            }
            let stored = self.inner.log.get(log_key(LEGACY_LOG_PREFIX, batch.first_position))?.ok_or_else(|| {
                StoreError::Corrupt {
                    position: batch.first_position,
                    reason: "indexed by its stream but missing from the log".into(),
                }
            })?;
            if !push_stream_batch(&mut events, book, &batch, &stored, from_version, max)? {
                return Ok(events);
            }
        }
        // Then the segments'.
        let wanted = (max - events.len()) as u64;
        for found in self.inner.index.book_batches(book, from_version, wanted) {
            let batch = BatchRef {
                first_version: found.first_version,
                first_position: found.record.first_position,
                count: u64::from(found.record.count),
            };
            let stored = self.read_record(found.segment, found.record)?;
            if !push_stream_batch(&mut events, book, &batch, &stored, from_version, max)? {
                return Ok(events);
            }
        }
        Ok(events)
    }
}

/// Decodes the events of one batch of `book` from `from_version` on into `events`, up
/// to `max`. False once no more are wanted.
fn push_stream_batch(
    events: &mut Vec<RecordedEvent>,
    book: BookId,
    batch: &BatchRef,
    stored: &[u8],
    from_version: u64,
    max: usize,
) -> Result<bool, StoreError> {
    let frames = unframe(batch.first_position, stored)?;
    if frames.len() as u64 != batch.count {
        let reason = "stream index and log disagree on the batch size".into();
        return Err(StoreError::Corrupt { position: batch.first_position, reason });
    }
    for (offset, bytes) in frames.into_iter().enumerate() {
        let version = batch.first_version + offset as u64;
        if version < from_version {
            continue;
        }
        if events.len() == max {
            return Ok(false);
        }
        let position = batch.first_position + offset as u64;
        let event = chain::decode(position, bytes)?;
        // Paired check: the index and the event agree on where it belongs.
        if event.envelope.book != book || event.envelope.version != version {
            return Err(StoreError::Corrupt { position, reason: "stream index disagrees with the event".into() });
        }
        events.push(RecordedEvent { position, event });
    }
    Ok(true)
}

#[async_trait]
impl EventStore for SledStore {
    async fn append(
        &self,
        book: BookId,
        expected: ExpectedVersion,
        events: &[EncodedEvent],
    ) -> Result<Appended, StoreError> {
        let pending = self.append_pipelined(book, expected, events).await?;
        pending.durable.await?;
        Ok(Appended { positions: pending.positions })
    }

    async fn append_pipelined(
        &self,
        book: BookId,
        expected: ExpectedVersion,
        events: &[EncodedEvent],
    ) -> Result<PendingAppend, StoreError> {
        let mut appended = self.append_many_pipelined(&[BookAppend { book, expected, events }]).await?;
        let positions = appended.positions.pop().expect("one batch, one list of positions");
        Ok(PendingAppend { positions, durable: appended.durable })
    }

    /// All the batches in one write to the segment, one record each, under one lock: all
    /// of them or none.
    async fn append_many_pipelined(&self, appends: &[BookAppend<'_>]) -> Result<PendingAppends, StoreError> {
        if appends.iter().all(|a| a.events.is_empty()) {
            let positions = appends.iter().map(|_| Vec::new()).collect();
            return Ok(PendingAppends { positions, durable: Box::pin(async { Ok(()) }) });
        }
        let (first_position, applied_end) = {
            let mut state = self.inner.append_lock.lock().expect("append lock poisoned");
            if let Some(failure) = &state.failed {
                return Err(StoreError::Io(failure.clone()));
            }
            // Every expectation is checked before anything is written.
            let mut versions = Vec::with_capacity(appends.len());
            for append in appends {
                let next_version = match state.next_versions.get(&append.book) {
                    Some(v) => *v,
                    None => self.stored_next_version(append.book)?,
                };
                if ExpectedVersion::before(next_version) != append.expected {
                    return Err(StoreError::WrongExpectedVersion {
                        expected: match append.expected {
                            ExpectedVersion::NoStream => None,
                            ExpectedVersion::Exact(v) => Some(v),
                        },
                        actual: next_version.checked_sub(1),
                    });
                }
                for (offset, encoded) in append.events.iter().enumerate() {
                    // Paired check: what is written is what the writer decided.
                    let envelope = &encoded.event.envelope;
                    assert_eq!(envelope.book, append.book, "event of another book in the batch");
                    assert_eq!(envelope.version, next_version + offset as u64, "batch versions must be contiguous");
                }
                versions.push((append.book, next_version));
            }
            // A book twice would get the same versions twice. Checked in one pass over a
            // set, not pairwise: a round of a shard with a thousand books has hundreds.
            let mut books = std::collections::HashSet::with_capacity(versions.len());
            assert!(versions.iter().all(|&(book, _)| books.insert(book)), "a book twice in one append");
            let state = &mut *state;
            let first_position = state.next_position;
            state.record.clear();
            // Where each batch's record starts in the write, and its position.
            let mut records = Vec::with_capacity(appends.len());
            let mut position = first_position;
            for (append, &(book, next_version)) in appends.iter().zip(&versions) {
                if append.events.is_empty() {
                    continue;
                }
                let start = state.record.len();
                segment::encode_record(&mut state.record, position, book, next_version, &frame_events(append.events));
                records.push((start, position, append.events.len() as u32, book, next_version));
                position += append.events.len() as u64;
            }
            if state.segment.bytes() > 0 && state.segment.bytes() + state.record.len() as u64 > state.segment_bytes_max
            {
                state.closed_unsynced.push(state.segment.sync_handle());
                state.segment.rotate()?;
                self.inner.index.rotate(state.segment.sequence(), first_position);
            }
            let record_bytes = state.record.len();
            let offset = match state.segment.append(&state.record) {
                Ok(offset) => offset,
                Err(error) => {
                    // Part of the records may be in the segment: others at the same
                    // positions must never follow them. A restart scans what is there.
                    tracing::error!(%error, "a batch could not be written; the store takes no more appends");
                    state.failed = Some(format!("the event log stopped taking appends after a failure: {error}"));
                    return Err(error);
                }
            };
            // Indexed under the append lock, so the index is in log order too. Readers
            // see the entries at once; `read_all` and `read_positions` stop at the
            // durable watermark, as they did with sled's entries.
            let ends = records.iter().skip(1).map(|r| r.0).chain([record_bytes]);
            let entries =
                records.iter().zip(ends).map(|(&(start, first_position, count, book, first_version), end)| {
                    let body_len = (end - start - segment::RECORD_HEADER_BYTES) as u32;
                    (
                        book,
                        first_version,
                        RecordEntry { first_position, offset: offset + start as u64, body_len, count },
                    )
                });
            self.inner.index.push(state.segment.sequence(), entries);
            state.appends += 1;
            state.next_position = position;
            for (append, &(book, next_version)) in appends.iter().zip(&versions) {
                state.next_versions.insert(book, next_version + append.events.len() as u64);
            }
            (first_position, position)
        };
        self.inner.flusher.request(applied_end);
        let mut positions = Vec::with_capacity(appends.len());
        let mut next = first_position;
        for append in appends {
            let count = append.events.len() as u64;
            positions.push((next..next + count).collect());
            next += count;
        }
        let mut durable = self.inner.durable.clone();
        let durable = async move {
            let outcome = durable
                .wait_for(|d| d.end >= applied_end || d.failure.is_some())
                .await
                .map_err(|_| StoreError::Closed)?
                .clone();
            if outcome.end < applied_end {
                return Err(StoreError::Io(outcome.failure.unwrap_or_else(|| "flush failed".into())));
            }
            Ok(())
        };
        Ok(PendingAppends { positions, durable: Box::pin(durable) })
    }

    async fn read_stream(&self, book: BookId, from_version: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_stream_sync(book, from_version, max))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_all_sync(from, max))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    async fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, StoreError> {
        let (store, positions) = (self.clone(), positions.to_vec());
        tokio::task::spawn_blocking(move || store.read_positions_sync(&positions))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    fn subscribe_all(&self, from: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        let store = self.clone();
        let durable = self.inner.durable.clone();
        let chunks =
            stream::unfold((store, durable, from.max(1), false), |(store, mut durable, next, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    match store.read_all(next, SUBSCRIPTION_CHUNK_EVENTS).await {
                        Err(error) => return Some((vec![Err(error)], (store, durable, next, true))),
                        Ok(events) if events.is_empty() => {
                            // Caught up: wait for the watermark to move past `next`.
                            let moved_end = match durable.wait_for(|d| d.end > next || d.failure.is_some()).await {
                                Ok(d) => d.end,
                                Err(_) => return None,
                            };
                            if moved_end <= next {
                                let failure = StoreError::Io("the log stopped being durable".into());
                                return Some((vec![Err(failure)], (store, durable, next, true)));
                            }
                            // Only under load: a lone write's reader should not wait for it.
                            if moved_end - next >= SUBSCRIPTION_GATHER_UNDER_LOAD {
                                let gathered =
                                    |d: &Durable| d.end >= next + SUBSCRIPTION_GATHER_EVENTS || d.failure.is_some();
                                let _ = tokio::time::timeout(SUBSCRIPTION_GATHER, durable.wait_for(gathered)).await;
                            }
                        }
                        Ok(events) => {
                            let after = events.last().map(|e| e.position + 1).unwrap_or(next);
                            return Some((
                                events.into_iter().map(Ok).collect::<Vec<_>>(),
                                (store, durable, after, false),
                            ));
                        }
                    }
                }
            });
        chunks.flat_map(stream::iter).boxed()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.inner.durable.borrow().end)
    }

    async fn read_raw(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if position >= self.inner.durable.borrow().end {
            return Ok(None);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let Some((first_position, value)) = store.batch_holding(position)? else { return Ok(None) };
            let frames = unframe(first_position, &value)?;
            Ok(frames.get((position - first_position) as usize).map(|bytes| bytes.to_vec()))
        })
        .await
        .map_err(|e| StoreError::Io(e.to_string()))?
    }

    fn keeps_snapshots(&self) -> bool {
        true
    }

    async fn put_snapshot(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let (dir, name) = (self.inner.snapshot_dir.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || snapshots::put(&dir, &name, bytes))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    async fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (dir, name) = (self.inner.snapshot_dir.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || snapshots::get(&dir, &name))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    async fn read_snapshot_ranges(
        &self,
        name: &str,
        ranges: &[(u64, usize)],
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let (dir, name, ranges) = (self.inner.snapshot_dir.clone(), name.to_owned(), ranges.to_vec());
        tokio::task::spawn_blocking(move || snapshots::read_ranges(&dir, &name, &ranges))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    fn snapshot_path(&self, name: &str) -> Option<std::path::PathBuf> {
        snapshots::path_of(&self.inner.snapshot_dir, name).ok()
    }

    async fn delete_snapshot(&self, name: &str) -> Result<(), StoreError> {
        let (dir, name) = (self.inner.snapshot_dir.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || snapshots::delete(&dir, &name))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second process (or a second open in this one) on the same directory is told
    /// that the directory is in use, not shown sled's lock error.
    #[test]
    fn a_data_directory_in_use_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let _first = SledStore::open(&path).unwrap();
        match SledStore::open(&path) {
            Err(StoreError::InUse(named)) => assert_eq!(named, path.display().to_string()),
            Err(other) => panic!("expected InUse, got {other}"),
            Ok(_) => panic!("the directory was opened twice"),
        }
    }
}
