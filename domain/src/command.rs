//! Commands: what a client asks the ledger to do. A command is decided against its
//! book's state and either becomes events or is refused with a [`DomainError`].

use serde::{Deserialize, Serialize};
use smallvec::smallvec;

use crate::account::{AccountKind, AccountStatus};
use crate::billing::{BillingPeriod, Plan};
use crate::event::{Actor, Event, Idempotency};
use crate::ids::{AccountId, BookId, InvoiceId, PlanId, SubscriptionId, TariffId};
use crate::invoice::{Figures, TaxRule};
use crate::money::{Amount, Currency};
use crate::rating::{RatedCdr, Tariff};
use crate::time::Timestamp;

/// What travels with every command besides its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandMeta {
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub actor: Actor,
    pub idempotency: Option<Idempotency>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    OpenAccount(OpenAccount),
    ChangeStatus {
        account: AccountId,
        status: AccountStatus,
        reason: Option<String>,
    },
    ChangeCreditLimit {
        account: AccountId,
        credit_limit: Amount,
    },
    ConfigureAlerts {
        account: AccountId,
        balance_below: Option<Amount>,
        call_cost_above: Option<Amount>,
    },
    AssignTariff {
        account: AccountId,
        tariff: Option<AssignedTariff>,
    },
    ReceivePayment {
        account: AccountId,
        amount: Amount,
        method: Option<String>,
        reference: Option<String>,
    },
    PostAdjustment {
        account: AccountId,
        amount: Amount,
        reason: Option<String>,
    },
    PostCharge {
        account: AccountId,
        amount: Amount,
        description: Option<String>,
    },
    ChargeCall(ChargeCall),
    MoveFunds {
        from: AccountId,
        to: AccountId,
        amount: Amount,
        note: Option<String>,
    },
    /// `target` is the event to reverse as the store holds it; the writer loads it.
    ReverseEntry {
        target: Box<Event>,
        reason: Option<String>,
    },
    PublishTariff(Box<Tariff>),
    /// Replaces the identifiers the switches know the account by.
    SetSwitchIdentifiers {
        account: AccountId,
        identifiers: Vec<crate::switch::SwitchIdentifier>,
    },
    /// Publishes a plan in the book the command is sent to.
    PublishPlan(Box<PublishPlan>),
    StartSubscription {
        subscription: SubscriptionId,
        account: AccountId,
        plan: PlanId,
        starts_at: Timestamp,
        ends_at: Option<Timestamp>,
    },
    EndSubscription {
        subscription: SubscriptionId,
        account: AccountId,
        ends_at: Timestamp,
    },
    /// Charges one period's fee of a subscription. Its idempotency key must be the fee's
    /// ([`crate::billing::fee_key`]) and its business time the start of the covered part
    /// of the period: the scheduler sends it, and a repeat is answered as a repeat.
    ChargeFee {
        subscription: SubscriptionId,
        account: AccountId,
        period_start: Timestamp,
    },
    /// Sets the tax the book charges on its invoices: its own rule (`account` none) or
    /// one invoiced account's (`tax` none: back to the book's rule).
    ConfigureTax {
        account: Option<InvoiceSubject>,
        tax: Option<TaxRule>,
    },
    IssueInvoice(Box<IssueInvoice>),
    IssueCreditNote(Box<IssueCreditNote>),
}

/// The account an invoice is for, as the ledger's index knows it: an invoicing book
/// may bill an account of another book (the operator bills its partners, whose accounts
/// open their own books).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceSubject {
    pub account: AccountId,
    pub number: String,
    pub name: String,
    pub kind: AccountKind,
    pub currency: Currency,
}

/// An invoice of one account for `[period_from, period_to)`, from that period's
/// statement at `statement_position`. A second one for the same account and period is
/// answered with the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueInvoice {
    pub invoice: InvoiceId,
    pub subject: InvoiceSubject,
    pub period_from: Timestamp,
    pub period_to: Timestamp,
    pub figures: Figures,
    pub statement_position: u64,
}

/// Corrects an invoice to `figures`, the statement of its period as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueCreditNote {
    pub credit_note: InvoiceId,
    pub invoice: InvoiceId,
    pub figures: Figures,
    pub statement_position: u64,
    pub reason: Option<String>,
}

/// A plan to publish. `plan.wholesale` is ignored: a partner's plan names the operator
/// plan it pays for in `wholesale`, as the ledger's catalog knows it (the operator's
/// plans live in another book).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishPlan {
    pub plan: Plan,
    pub wholesale: Option<WholesalePlan>,
}

/// An operator plan as the catalog knows it, for a partner plan that pays its price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WholesalePlan {
    pub id: PlanId,
    pub book: BookId,
    pub currency: Currency,
    pub period: BillingPeriod,
    pub price: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAccount {
    pub account: AccountId,
    pub number: String,
    pub name: String,
    pub kind: AccountKind,
    pub partner: Option<AccountId>,
    pub currency: Currency,
    pub credit_limit: Amount,
}

/// A tariff as the ledger's catalog knows it, for the rules of assigning it: tariffs
/// live in the book that published them, which the account's book may not be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssignedTariff {
    pub id: TariffId,
    /// The book that published the tariff.
    pub book: BookId,
    pub currency: Currency,
}

/// A CDR with its costs already computed (by rating, or by the switch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeCall {
    pub account: AccountId,
    pub cdr: RatedCdr,
    pub customer_cost: Amount,
    /// The partner's wholesale cost; required when the customer has a partner.
    pub partner_cost: Option<Amount>,
}

/// The accounts a command concerns: one or two, kept inline (this is asked for every
/// command, by the router and by the writer).
pub type AffectedAccounts = smallvec::SmallVec<[AccountId; 2]>;

impl Command {
    /// The accounts whose balances a caller wants to see after this command.
    pub fn affected_accounts(&self) -> AffectedAccounts {
        match self {
            Command::OpenAccount(c) => smallvec![c.account],
            Command::ChangeStatus { account, .. }
            | Command::ChangeCreditLimit { account, .. }
            | Command::AssignTariff { account, .. }
            | Command::ConfigureAlerts { account, .. }
            | Command::ReceivePayment { account, .. }
            | Command::PostAdjustment { account, .. }
            | Command::PostCharge { account, .. } => smallvec![*account],
            Command::ChargeCall(c) => smallvec![c.account],
            Command::MoveFunds { from, to, .. } => smallvec![*from, *to],
            Command::ReverseEntry { target, .. } => target.payload.accounts().into(),
            Command::PublishTariff(_) | Command::PublishPlan(_) => smallvec![],
            Command::StartSubscription { account, .. }
            | Command::EndSubscription { account, .. }
            | Command::ChargeFee { account, .. } => smallvec![*account],
            Command::SetSwitchIdentifiers { account, .. } => smallvec![*account],
            // The invoiced account may live in another book, whose balance this book
            // cannot tell; invoices move no money anyway.
            Command::ConfigureTax { .. } | Command::IssueInvoice(_) | Command::IssueCreditNote(_) => smallvec![],
        }
    }
}
