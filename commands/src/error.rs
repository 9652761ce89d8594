//! The write side's one error type: a refusal by the ledger's rules (the caller's
//! business) or a technical failure (the operator's business, never shown in detail).

use domain::DomainError;
use eventlog::StoreError;
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
