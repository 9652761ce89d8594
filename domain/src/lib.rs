//! tollbook's domain: the pure rules of the ledger. No I/O, no async, no storage, no
//! HTTP — the same functions decide commands live, in replay and in property tests.

pub mod account;
pub mod billing;
#[cfg(test)]
mod billing_tests;
pub mod cdr;
pub mod command;
pub mod csv_file;
pub mod csv_mapping;
pub mod decide;
#[cfg(test)]
mod decide_tests;
pub mod error;
pub mod event;
pub mod hangup;
pub mod ids;
pub mod invoice;
pub mod local_time;
pub mod money;
pub mod rating;
pub mod rating_engine;
pub mod switch;
pub mod switch_cdr;
pub mod time;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use account::{Account, AccountKind, AccountStatus};
pub use command::{
    AssignedTariff, ChargeCall, Command, CommandMeta, InvoiceSubject, IssueCreditNote, IssueInvoice, OpenAccount,
    PublishPlan, WholesalePlan,
};
pub use decide::{BookState, Decision, IdempotencyRecord, decide, evolve, seal, seal_into};
pub use error::{DomainError, ErrorKind};
pub use event::{Category, Envelope, Event, Hash, Idempotency, Payload, Posting, RecordedEvent};
pub use ids::{AccountId, AccountLabel, BookId, EventId, InvoiceId, PlanId, SubscriptionId, TariffId};
pub use money::{Amount, Currency};
pub use time::Timestamp;
