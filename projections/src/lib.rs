//! tollbook's read side: read models that follow the global log — statements by
//! period, the CDR store, the account directory, the audit trail — kept in sled with
//! their checkpoint, and replay and verify. It never writes events.

pub mod error;
pub mod models;
pub mod reconcile;
pub mod replay;
pub mod runner;
mod views;

pub use error::ProjectionError;
pub use models::{AccountFilter, AsOf, CdrFilter, PAGE_SIZE_MAX, Page, ReadModels, Statement, StatementLine};
pub use replay::{REPLAY_SPAN_EVENTS, ReplayReport, ReplayStages, VerifyReport, replay, replay_in_spans, verify};
pub use runner::{CHUNK_EVENTS_MAX, Lag, Projector, spawn_projector};
pub use views::{AccountView, CdrRow, EventRow, Sums};
