//! The event log's one error type: a technical failure of the store, or a conflict on
//! the expected version that the writer turns into a retry.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("expected version {expected:?} but the stream is at {actual:?}")]
    WrongExpectedVersion { expected: Option<u64>, actual: Option<u64> },
    #[error("storage failure: {0}")]
    Io(String),
    #[error("corrupt event at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("the store is closed")]
    Closed,
    /// Another process holds the store's data directory (sled takes a lock on it).
    #[error("{0} is in use by another process: is `tollbook serve` running on this data directory?")]
    InUse(String),
    /// A backend cannot start reading at this position: the store never handed it out
    /// (KurrentDB can only start a read at an event's own position).
    #[error("position {0} is not a position of this store")]
    InvalidPosition(u64),
    /// The store cannot be opened as configured: a malformed `--store` value, or a
    /// backend that this build does not include.
    #[error("store configuration: {0}")]
    Config(String),
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Io(error.to_string())
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(error: sled::transaction::TransactionError<StoreError>) -> Self {
        match error {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}
