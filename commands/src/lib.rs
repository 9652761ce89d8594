//! tollbook's write side: the book writers (serial decide, batched durable append), the
//! ledger facade that routes commands, idempotency and bulk input. Knows nothing of
//! HTTP. The event log it appends to (the store, its backends, the hash chain) is the
//! `eventlog` crate; what of it the API and the tests use is re-exported here.

pub mod billing;
pub mod error;
pub mod ids;
pub mod ingest;
pub mod invoices;
pub mod ledger;
pub mod snapshot;
pub mod tariffs;
pub mod writer;

pub use billing::{BillingCatalog, FeeRun, charge_due_fees};
pub use error::CommandError;
#[cfg(feature = "kurrentdb")]
pub use eventlog::KurrentDbStore;
/// The synthetic-book fixtures, for the benchmarks and other crates' tests.
#[cfg(feature = "testing")]
pub use eventlog::testing;
pub use eventlog::{
    Appended, ChainBreak, ChainVerifier, DEFAULT_STORE_SPEC, EncodedEvent, EventStore, ExpectedVersion, PendingAppend,
    READ_EVENTS_MAX, SledStats, SledStore, StoreError, StoreSpec, open_store, verify_book,
};
pub use invoices::{DocumentEntry, DocumentKind, InvoiceCatalog, InvoiceRun, issuer_of};
pub use ledger::{AccountRef, Ledger};
pub use tariffs::{TariffCatalog, TariffHistory};
pub use writer::{BalanceAfter, CommandOutcome};
