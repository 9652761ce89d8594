//! Snapshots of the write side's folded state, kept by the event store
//! ([`EventStore::put_snapshot`]) so that neither start-up nor a book's first command
//! reads the whole log: a book's state at a version, and the ledger's catalogs (account
//! index, tariffs, plans and subscriptions) at a global position. A snapshot is only a
//! cache: one that is missing, damaged, of another format or of another log is ignored,
//! and the state is folded from the start instead.
//!
//! Form: `[format u8][postcard body]`. A change of the body's shape (of [`BookState`] or
//! of the catalogs) takes a new format number; snapshots of an older one are then folded
//! again once and replaced.

use domain::rating::Tariff;
use domain::{BookId, BookState, Hash};
use eventlog::EventStore;
use serde::{Deserialize, Serialize};

use crate::ids::{IdIndex, SavedIndex};

/// The format of book snapshots this build writes and reads (3: the state with the id
/// runs it left).
pub const BOOK_SNAPSHOT_FORMAT: u8 = 3;
/// The format of ledger snapshots this build writes and reads.
pub const LEDGER_SNAPSHOT_FORMAT: u8 = 2;
/// The snapshot name of the ledger's catalogs.
pub const LEDGER_SNAPSHOT_NAME: &str = "ledger";

/// The snapshot name of `book`'s state.
pub fn book_snapshot_name(book: BookId) -> String {
    format!("book-{}", book.0)
}

/// A book as its snapshot holds it: the state, without the ids moved into runs, and
/// the runs that hold those.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedBook {
    pub state: BookState,
    pub ids: SavedIndex,
}

/// The same, borrowed: postcard encodes both alike.
#[derive(Serialize)]
struct SavedBookRef<'a> {
    state: &'a BookState,
    ids: &'a SavedIndex,
}

/// `state` and its id runs as a book snapshot.
pub fn encode_book(state: &BookState, ids: &SavedIndex) -> Vec<u8> {
    let mut bytes = vec![BOOK_SNAPSHOT_FORMAT];
    postcard::to_io(&SavedBookRef { state, ids }, &mut bytes).expect("a book state always serializes");
    bytes
}

/// What a book snapshot holds, if it is of this format and of `book`.
pub fn decode_book(bytes: &[u8], book: BookId) -> Option<SavedBook> {
    let (&format, body) = bytes.split_first()?;
    if format != BOOK_SNAPSHOT_FORMAT {
        return None;
    }
    postcard::from_bytes::<SavedBook>(body).ok().filter(|saved| saved.state.book == book)
}

/// The latest snapshot of `book` that the log confirms (its last event is there, with the
/// hash the snapshot says) and whose id runs can be read, or `None`: then the book is
/// folded from the start. A store that cannot be read here is no error either: the fold
/// that follows will say so.
pub async fn saved_book(store: &dyn EventStore, book: BookId) -> Option<(BookState, IdIndex)> {
    if !store.keeps_snapshots() {
        return None;
    }
    let bytes = match store.get_snapshot(&book_snapshot_name(book)).await {
        Ok(bytes) => bytes?,
        Err(error) => {
            tracing::warn!(%book, %error, "cannot read the book's snapshot; folding its stream");
            return None;
        }
    };
    let Some(SavedBook { state, ids }) = decode_book(&bytes, book) else {
        tracing::warn!(%book, "the book's snapshot is of another format or damaged; folding its stream");
        return None;
    };
    if state.next_version > 0 {
        let last = store.read_stream(book, state.next_version - 1, 1).await.ok()?;
        let fits = last.first().is_some_and(|e| {
            e.event.envelope.version == state.next_version - 1 && e.event.envelope.hash == state.last_hash
        });
        if !fits {
            tracing::warn!(%book, "the book's snapshot does not fit its stream; folding its stream");
            return None;
        }
    }
    match IdIndex::open(store, ids).await {
        Ok(index) => Some((state, index)),
        Err(error) => {
            tracing::warn!(%book, %error, "the book's id runs cannot be read; folding its stream");
            None
        }
    }
}

/// The ledger's catalogs as saved: every event before `next_position` is folded in.
#[derive(Serialize, Deserialize)]
pub(crate) struct SavedLedger<Index, Billing, Invoices> {
    pub next_position: u64,
    /// Position and hash of the last event folded in, to check that the snapshot is of
    /// this log; `None` for an empty log.
    pub last: Option<(u64, Hash)>,
    pub index: Index,
    /// Every published tariff version, per tariff oldest first, with its book.
    pub tariffs: Vec<(BookId, Vec<Tariff>)>,
    pub billing: Billing,
    pub invoices: Invoices,
}

pub(crate) fn encode_ledger<I: Serialize, B: Serialize, V: Serialize>(saved: &SavedLedger<I, B, V>) -> Vec<u8> {
    let mut bytes = vec![LEDGER_SNAPSHOT_FORMAT];
    postcard::to_io(saved, &mut bytes).expect("the ledger's catalogs always serialize");
    bytes
}

pub(crate) fn decode_ledger<I, B, V>(bytes: &[u8]) -> Option<SavedLedger<I, B, V>>
where
    I: for<'de> Deserialize<'de>,
    B: for<'de> Deserialize<'de>,
    V: for<'de> Deserialize<'de>,
{
    let (&format, body) = bytes.split_first()?;
    if format != LEDGER_SNAPSHOT_FORMAT {
        return None;
    }
    postcard::from_bytes(body).ok()
}
