//! The event store: the one interface between the ledger and its durable log.
//!
//! Shaped after KurrentDB so that both backends fit: a book is a stream, the expected
//! version is the expected revision, and the global log is `$all`. Positions in the
//! global log are strictly increasing but need not be contiguous.

use async_trait::async_trait;
use domain::{BookId, RecordedEvent};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::chain::EncodedEvent;
use crate::error::StoreError;

#[cfg(feature = "kurrentdb")]
pub mod kurrentdb;
pub mod open;
mod segment;
mod segment_index;
pub mod sled;
mod snapshots;

pub use open::{DEFAULT_STORE_SPEC, StoreSpec, open_store};

/// The largest number of events one read returns.
pub const READ_EVENTS_MAX: usize = 4096;

/// What the stream must look like for an append to go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream has no events yet.
    NoStream,
    /// The stream's last event has this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation for a stream whose next event gets `next_version`.
    pub fn before(next_version: u64) -> Self {
        match next_version {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n - 1),
        }
    }
}

/// Where an append put its events in the global log, one position per event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub positions: Vec<u64>,
}

/// An append that holds its place in the stream but may not be durable yet.
pub struct PendingAppend {
    pub positions: Vec<u64>,
    /// Resolves once the events are durable, or with the reason they cannot be.
    pub durable: BoxFuture<'static, Result<(), StoreError>>,
}

/// One book's batch in a multi-book append ([`EventStore::append_many_pipelined`]).
#[derive(Clone, Copy, Debug)]
pub struct BookAppend<'a> {
    pub book: BookId,
    pub expected: ExpectedVersion,
    pub events: &'a [EncodedEvent],
}

/// Batches of several books that hold their places in their streams, with one future
/// for the durability of them all.
pub struct PendingAppends {
    /// Each batch's positions, in the order the batches were given.
    pub positions: Vec<Vec<u64>>,
    /// Resolves once every batch is durable, or with the reason one cannot be.
    pub durable: BoxFuture<'static, Result<(), StoreError>>,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `book` if the stream is at `expected`: all of them or none,
    /// and only once they are durable.
    async fn append(
        &self,
        book: BookId,
        expected: ExpectedVersion,
        events: &[EncodedEvent],
    ) -> Result<Appended, StoreError>;

    /// Like `append`, but returns as soon as the batch holds its place in the stream
    /// (a later append of the book builds on it), with a future for its durability: a
    /// writer decides its next batch while this one is flushed. Batches of one book
    /// become durable in the order they were appended; a caller must not be told of a
    /// batch before `durable` resolves. Backends that cannot split the two wait here.
    async fn append_pipelined(
        &self,
        book: BookId,
        expected: ExpectedVersion,
        events: &[EncodedEvent],
    ) -> Result<PendingAppend, StoreError> {
        let appended = self.append(book, expected, events).await?;
        Ok(PendingAppend { positions: appended.positions, durable: Box::pin(async { Ok(()) }) })
    }

    /// The batches of several books (each book at most once), each as
    /// [`EventStore::append_pipelined`] takes it: a writer that serves many books pays one
    /// append per round rather than one per book. On `Err` the writer must reload the
    /// books' states from the store: a backend that appends book by book (this default)
    /// may have appended some of the batches; the sled store appends all or none.
    async fn append_many_pipelined(&self, appends: &[BookAppend<'_>]) -> Result<PendingAppends, StoreError> {
        let mut positions = Vec::with_capacity(appends.len());
        let mut durables = Vec::with_capacity(appends.len());
        for append in appends {
            let pending = self.append_pipelined(append.book, append.expected, append.events).await?;
            positions.push(pending.positions);
            durables.push(pending.durable);
        }
        let durable = async move {
            for durable in durables {
                durable.await?;
            }
            Ok(())
        };
        Ok(PendingAppends { positions, durable: Box::pin(durable) })
    }

    /// Up to `max` events of `book` from `from_version` on, in stream order.
    async fn read_stream(&self, book: BookId, from_version: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `max` durable events of the global log with a position `>= from`.
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The durable events at `positions` (ascending), in that order; a position that
    /// holds no durable event is left out. Read models keep positions, not copies of
    /// events, and read a page's events back with one call.
    async fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = Vec::with_capacity(positions.len());
        for &position in positions {
            if let Some(event) = self.read_all(position, 1).await?.pop().filter(|e| e.position == position) {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// The global log from `from` on: everything already there, then live events as
    /// they become durable. No gap, no repeat.
    fn subscribe_all(&self, from: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>>;

    /// The position the next durable event will be at or after: `read_all(head)` is
    /// empty right now.
    async fn head(&self) -> Result<u64, StoreError>;

    /// The raw stored bytes of the event at `position`, for hash checks and audits.
    async fn read_raw(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// True when the store keeps snapshots ([`EventStore::put_snapshot`]) and gives the
    /// global log consecutive positions (an append of n events takes the n positions
    /// after the last one handed out), so that a fold of appended batches, in whatever
    /// order they arrive, can tell which positions it has seen all of.
    fn keeps_snapshots(&self) -> bool {
        false
    }

    /// Saves `bytes` as the snapshot called `name`, replacing the one before. A snapshot
    /// is a cache of state folded from the log (a book's state, the ledger's account
    /// index): callers save one only once the events it reflects are durable, and treat
    /// a missing, damaged or unfitting one as "fold the log instead". A store that does
    /// not keep snapshots keeps nothing.
    async fn put_snapshot(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let _ = (name, bytes);
        Ok(())
    }

    /// The latest snapshot saved as `name`, if any.
    async fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let _ = name;
        Ok(None)
    }

    /// The bytes `(offset, len)` of snapshot `name`, in the order asked, or `None` when
    /// there is no such snapshot. The snapshot's whole-file check is not made here: a
    /// caller that reads parts (the write side's id index) checks its own parts. An
    /// index larger than memory is read this way, a few blocks per lookup.
    async fn read_snapshot_ranges(
        &self,
        name: &str,
        ranges: &[(u64, usize)],
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let Some(bytes) = self.get_snapshot(name).await? else { return Ok(None) };
        ranges
            .iter()
            .map(|&(offset, len)| {
                let start = usize::try_from(offset).ok().filter(|s| s.saturating_add(len) <= bytes.len());
                start.map(|s| bytes[s..s + len].to_vec()).ok_or_else(|| StoreError::Corrupt {
                    position: 0,
                    reason: format!("snapshot {name} is shorter than the range asked"),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The file that holds snapshot `name`'s body from its first byte, for a store that
    /// keeps snapshots as files: a reader of many small parts (the id index) maps it and
    /// lets the page cache serve them. The file is replaced only by a new
    /// [`EventStore::put_snapshot`] of the same name (a rename, so a mapping stays whole).
    fn snapshot_path(&self, name: &str) -> Option<std::path::PathBuf> {
        let _ = name;
        None
    }

    /// Removes snapshot `name`; removing one that is not there is no error.
    async fn delete_snapshot(&self, name: &str) -> Result<(), StoreError> {
        let _ = name;
        Ok(())
    }
}
