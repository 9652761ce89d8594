//! The embedded backend: the whole log in one sled tree.
//!
//! One append is one batch of one book at contiguous positions, and it is stored as
//! such: `L` + first position (u64 BE) holds the batch's events, framed
//! (`[count u32][len u32][bytes]...`); `S` + book (16 bytes) + first version (u64 BE)
//! holds (first position, count). Two sled inserts per append, whatever its size —
//! sled copies a leaf on every insert, so one key per event cost more than everything
//! else on the write path. Both inserts go in one sled batch (atomic).
//!
//! Appends are serialized only around position assignment and the in-memory batch
//! apply. Durability comes from one flusher thread: an append asks for everything up to
//! its last position to be flushed and waits; the flusher flushes whatever has been
//! applied by the time it starts, so the appends of all books that arrive during one
//! flush share the next (group commit across books). sled's own `flush_async` is not
//! used: concurrent calls to it deadlock in sled 0.34 (spacejam/sled#1308).
//! `append_pipelined` returns right after the apply, with the wait for the flush as a
//! future: a book's writer applies its next batch while this one is flushed.
//!
//! Readers of the global log see only positions below the durable watermark, so a
//! projection never acts on an event that a crash could still take back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use async_trait::async_trait;
use domain::{BookId, RecordedEvent};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::chain::{self, EncodedEvent};
use crate::error::StoreError;
use crate::store::{Appended, EventStore, ExpectedVersion, PendingAppend, READ_EVENTS_MAX};

const LOG_PREFIX: u8 = b'L';
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

#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    log: sled::Tree,
    append_lock: Mutex<AppendState>,
    flusher: Arc<Flusher>,
    flusher_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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

/// The flusher thread's mailbox: the highest position applied and waiting for a flush.
struct Flusher {
    requested_end: Mutex<FlushRequest>,
    wake: Condvar,
    flushes: std::sync::atomic::AtomicU64,
    flush_micros_total: std::sync::atomic::AtomicU64,
}

/// Counters of the store's durable writes, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SledStats {
    pub appends: u64,
    pub events: u64,
    pub flushes: u64,
    pub flush_micros_total: u64,
}

struct FlushRequest {
    end: u64,
    stop: bool,
}

impl Flusher {
    fn request(&self, end: u64) {
        let mut request = self.requested_end.lock().expect("flusher lock");
        if end > request.end {
            request.end = end;
            self.wake.notify_one();
        }
    }

    fn stop(&self) {
        self.requested_end.lock().expect("flusher lock").stop = true;
        self.wake.notify_one();
    }

    /// Flushes until stopped. Each round makes durable every batch applied before it
    /// began, whichever book wrote it.
    fn run(&self, db: sled::Db, durable: watch::Sender<Durable>) {
        let mut flushed_end = durable.borrow().end;
        loop {
            let target = {
                let mut request = self.requested_end.lock().expect("flusher lock");
                while request.end <= flushed_end && !request.stop {
                    request = self.wake.wait(request).expect("flusher lock");
                }
                if request.end <= flushed_end {
                    return;
                }
                request.end
            };
            let started = std::time::Instant::now();
            let flushed = db.flush();
            self.flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let micros = started.elapsed().as_micros() as u64;
            self.flush_micros_total.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
            match flushed {
                Ok(_) => {
                    flushed_end = target;
                    durable.send_modify(|d| d.end = target);
                }
                Err(error) => {
                    // Nothing after this point can be promised durable: fail every waiter.
                    tracing::error!(%error, "flushing the event log failed");
                    durable.send_modify(|d| d.failure = Some(error.to_string()));
                    return;
                }
            }
        }
    }
}

impl Drop for Inner {
    /// Waits for the flusher to finish, so that the database (and its lock) is released
    /// when the last handle to the store goes.
    fn drop(&mut self) {
        self.flusher.stop();
        if let Some(thread) = self.flusher_thread.lock().expect("flusher thread lock").take() {
            let _ = thread.join();
        }
    }
}

struct AppendState {
    appends: u64,
    next_position: u64,
    /// Next version of each book seen so far; others are looked up on first append.
    next_versions: HashMap<BookId, u64>,
}

fn log_key(position: u64) -> [u8; 9] {
    let mut key = [LOG_PREFIX; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn stream_key(book: BookId, first_version: u64) -> [u8; 25] {
    let mut key = [STREAM_PREFIX; 25];
    key[1..17].copy_from_slice(book.0.as_bytes());
    key[17..].copy_from_slice(&first_version.to_be_bytes());
    key
}

fn batch_value(first_position: u64, count: u32) -> [u8; 12] {
    let mut value = [0u8; 12];
    value[..8].copy_from_slice(&first_position.to_be_bytes());
    value[8..].copy_from_slice(&count.to_be_bytes());
    value
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

impl SledStore {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = sled::Config::new()
            .path(path)
            // Durability comes from the explicit flush after every append.
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
        Self::with_db(db)
    }

    pub fn with_db(db: sled::Db) -> Result<Self, StoreError> {
        let log = db.open_tree("log")?;
        let next_position = match log.get_lt(log_key(u64::MAX))? {
            Some((key, value)) if key[0] == LOG_PREFIX => {
                let first_position = parse_u64(&key[1..]);
                first_position + unframe(first_position, &value)?.len() as u64
            }
            _ => 1,
        };
        let (durable_tx, durable) = watch::channel(Durable { end: next_position, failure: None });
        let flusher = Arc::new(Flusher {
            requested_end: Mutex::new(FlushRequest { end: next_position, stop: false }),
            wake: Condvar::new(),
            flushes: Default::default(),
            flush_micros_total: Default::default(),
        });
        let flusher_db = db.clone();
        let flusher_thread = flusher.clone();
        let flusher_thread = std::thread::Builder::new()
            .name("tollbook-flusher".into())
            .spawn(move || flusher_thread.run(flusher_db, durable_tx))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                log,
                append_lock: Mutex::new(AppendState { appends: 0, next_position, next_versions: HashMap::new() }),
                flusher,
                flusher_thread: Mutex::new(Some(flusher_thread)),
                opened_next_position: next_position,
                durable,
            }),
        })
    }

    pub fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Appends, events and flushes since the store was opened.
    pub fn stats(&self) -> SledStats {
        use std::sync::atomic::Ordering::Relaxed;
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
        }
    }

    /// The next version of `book` as stored, from its last batch.
    fn stored_next_version(&self, book: BookId) -> Result<u64, StoreError> {
        let last = self.inner.log.get_lt(stream_key(book, u64::MAX))?;
        Ok(match last {
            Some((key, value)) if key.len() == 25 && key[..17] == stream_key(book, 0)[..17] => {
                let batch = parse_batch(&key, &value);
                batch.first_version + batch.count
            }
            _ => 0,
        })
    }

    /// The stored batch holding `position`: its first position and its value.
    fn batch_holding(&self, position: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
        Ok(match self.inner.log.get_lt(log_key(position.saturating_add(1)))? {
            Some((key, value)) if key[0] == LOG_PREFIX => Some((parse_u64(&key[1..]), value)),
            _ => None,
        })
    }

    /// One lookup per stored batch, not per event: a page's positions are often in one
    /// batch.
    fn read_positions_sync(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, StoreError> {
        let durable = self.inner.durable.borrow().end;
        let mut events = Vec::with_capacity(positions.len());
        // The batch last read: its first position, bytes and frames' byte ranges.
        let mut batch: Option<(u64, sled::IVec, Vec<std::ops::Range<usize>>)> = None;
        for &position in positions {
            if position == 0 || position >= durable {
                continue;
            }
            let held = |(first, _, frames): &(u64, sled::IVec, Vec<std::ops::Range<usize>>)| {
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
        let start = self.batch_holding(from)?.map_or(from, |(first, _)| first);
        for entry in self.inner.log.range(log_key(start)..log_key(durable)) {
            let (key, value) = entry?;
            let first_position = parse_u64(&key[1..]);
            for (offset, bytes) in unframe(first_position, &value)?.into_iter().enumerate() {
                let position = first_position + offset as u64;
                if position < from {
                    continue;
                }
                if events.len() == max || position >= durable {
                    return Ok(events);
                }
                events.push(RecordedEvent { position, event: chain::decode(position, bytes)? });
            }
        }
        Ok(events)
    }

    fn read_stream_sync(&self, book: BookId, from_version: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let max = max.min(READ_EVENTS_MAX);
        let mut events = Vec::new();
        // The batch holding `from_version` starts at or before it.
        let start = match self.inner.log.get_lt(stream_key(book, from_version.saturating_add(1)))? {
            Some((key, _)) if key.len() == 25 && key[..17] == stream_key(book, 0)[..17] => parse_u64(&key[17..]),
            _ => from_version,
        };
        for entry in self.inner.log.range(stream_key(book, start)..=stream_key(book, u64::MAX)) {
            let (key, value) = entry?;
            let batch = parse_batch(&key, &value);
            if batch.first_version + batch.count <= from_version {
                continue;
            }
            let stored = self.inner.log.get(log_key(batch.first_position))?.ok_or_else(|| StoreError::Corrupt {
                position: batch.first_position,
                reason: "indexed by its stream but missing from the log".into(),
            })?;
            let frames = unframe(batch.first_position, &stored)?;
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
                    return Ok(events);
                }
                let position = batch.first_position + offset as u64;
                let event = chain::decode(position, bytes)?;
                // Paired check: the index and the event agree on where it belongs.
                if event.envelope.book != book || event.envelope.version != version {
                    return Err(StoreError::Corrupt {
                        position,
                        reason: "stream index disagrees with the event".into(),
                    });
                }
                events.push(RecordedEvent { position, event });
            }
        }
        Ok(events)
    }
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
        if events.is_empty() {
            return Ok(PendingAppend { positions: vec![], durable: Box::pin(async { Ok(()) }) });
        }
        let applied_end = {
            let mut state = self.inner.append_lock.lock().expect("append lock poisoned");
            let next_version = match state.next_versions.get(&book) {
                Some(v) => *v,
                None => self.stored_next_version(book)?,
            };
            if ExpectedVersion::before(next_version) != expected {
                return Err(StoreError::WrongExpectedVersion {
                    expected: match expected {
                        ExpectedVersion::NoStream => None,
                        ExpectedVersion::Exact(v) => Some(v),
                    },
                    actual: next_version.checked_sub(1),
                });
            }
            let first_position = state.next_position;
            for (offset, encoded) in events.iter().enumerate() {
                // Paired check: what is written is what the writer decided.
                let envelope = &encoded.event.envelope;
                assert_eq!(envelope.book, book, "event of another book in the batch");
                assert_eq!(envelope.version, next_version + offset as u64, "batch versions must be contiguous");
            }
            let mut batch = sled::Batch::default();
            batch.insert(&log_key(first_position), frame_events(events));
            batch.insert(&stream_key(book, next_version), &batch_value(first_position, events.len() as u32));
            self.inner.log.apply_batch(batch)?;
            state.appends += 1;
            state.next_position = first_position + events.len() as u64;
            state.next_versions.insert(book, next_version + events.len() as u64);
            state.next_position
        };
        let first_position = applied_end - events.len() as u64;
        self.inner.flusher.request(applied_end);
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
        Ok(PendingAppend { positions: (first_position..applied_end).collect(), durable: Box::pin(durable) })
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
