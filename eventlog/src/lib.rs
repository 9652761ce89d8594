//! tollbook's event log: the one interface between the ledger and its durable log (the
//! `EventStore` trait), its backends (sled, embedded; KurrentDB, clustered, behind the
//! `kurrentdb` feature), and the canonical encoding of events with their hash chain.
//!
//! Shared by the write side (`commands`, which appends) and the read side
//! (`projections`, which follows the log and verifies it); it knows neither. It depends
//! on `domain` alone for the events it stores.

pub mod chain;
pub mod error;
pub mod memory;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use chain::{ChainBreak, ChainVerifier, EncodedEvent, verify_book};
pub use error::StoreError;
#[cfg(feature = "kurrentdb")]
pub use store::kurrentdb::KurrentDbStore;
pub use store::sled::{SledOptions, SledStats, SledStore};
pub use store::{
    Appended, BookAppend, DEFAULT_STORE_SPEC, EventStore, ExpectedVersion, PendingAppend, PendingAppends,
    READ_EVENTS_MAX, StoreSpec, open_store,
};
