//! The write side's one error type: a refusal by the ledger's rules (the caller's
//! business) or a technical failure (the operator's business, never shown in detail).

use domain::DomainError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The book's queue is full: the caller should back off and retry.
    #[error("the ledger is overloaded, retry later")]
    Overloaded,
    /// Another writer appended to the stream first (only possible with several servers
    /// on a shared cluster); the command was not applied.
    #[error("the book changed concurrently, retry")]
    Conflict,
    #[error("the ledger is shutting down")]
    ShuttingDown,
    #[error("account `{0}` not found")]
    UnknownAccount(String),
    #[error("event at position {0} not found")]
    UnknownPosition(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

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
