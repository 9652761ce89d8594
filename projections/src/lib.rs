//! tollbook's read side: read models that follow the global log — statements by
//! period, the CDR store, the account directory, the audit trail — held in memory as
//! immutable snapshots, saved to a snapshot file with their position, and replay and
//! verify. It never writes events.

mod build;
mod compact;
pub mod error;
pub mod invoices;
pub mod models;
mod persist;
mod recent;
pub mod reconcile;
pub mod replay;
pub mod runner;
mod state;

pub use error::ProjectionError;
pub use models::{
    AccountFilter, AsOf, CdrFilter, PAGE_SIZE_MAX, Page, ReadModels, Snapshot, SnapshotPolicy, Statement, StatementLine,
};
pub use replay::{
    REPLAY_READ_EVENTS, ReplayReport, ReplayStages, VerifyReport, replay, replay_in_spans, verify, verify_models,
};
pub use runner::{CHUNK_EVENTS_MAX, Lag, Projector, SNAPSHOT_EVENTS_MIN, SNAPSHOT_INTERVAL_MIN, spawn_projector};
pub use state::{AccountView, CdrRow, EventRow, Sums};
