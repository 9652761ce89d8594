//! The read side's one error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProjectionError {
    #[error("account `{0}` not found")]
    AccountNotFound(String),
    #[error("CDR `{0}` not found")]
    CdrNotFound(String),
    #[error("{field}: {reason}")]
    InvalidQuery { field: &'static str, reason: String },
    #[error("the read models did not reach position {wanted} in time (at {reached})")]
    NotCaughtUp { wanted: u64, reached: u64 },
    #[error("read model storage: {0}")]
    Storage(String),
    #[error("read model is corrupt at key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] eventlog::StoreError),
}
