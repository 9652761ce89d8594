//! tollbook's write side: the event store and its backends, the book writers (serial
//! decide, batched durable append), idempotency and the hash chain. Knows nothing of HTTP.

pub mod chain;
pub mod error;
pub mod ingest;
pub mod ledger;
pub mod store;
pub mod tariffs;
#[cfg(feature = "testing")]
pub mod testing;
pub mod writer;

pub use chain::{ChainBreak, ChainVerifier, EncodedEvent, verify_book};
pub use error::{CommandError, StoreError};
pub use ledger::{AccountRef, Ledger};
#[cfg(feature = "kurrentdb")]
pub use store::kurrentdb::KurrentDbStore;
pub use store::sled::{SledStats, SledStore};
pub use store::{Appended, EventStore, ExpectedVersion, PendingAppend, StoreSpec, open_store};
pub use tariffs::{TariffCatalog, TariffHistory};
pub use writer::{BalanceAfter, CommandOutcome};
