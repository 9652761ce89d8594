//! Events: the immutable facts of the ledger. Every movement of money is described by
//! [`Payload::postings`], the one place that says which account and which statement
//! category an event touches: the book's writer, the statements and replay all use it.

use serde::{Deserialize, Serialize};

use crate::account::{AccountKind, AccountStatus};
use crate::billing::Plan;
use crate::ids::{AccountId, BookId, EventId, InvoiceId, PlanId, SubscriptionId, TariffId};
use crate::invoice::{Figures, TaxRule, Totals};
use crate::money::{Amount, Currency};
use crate::rating::{RatedCdr, Tariff};
use crate::time::Timestamp;

/// A SHA-256 digest, the links of each book's hash chain.
pub type Hash = [u8; 32];

/// The hash that the first event of every book links back to.
pub const GENESIS_HASH: Hash = [0u8; 32];

/// Who asked for the change: `admin`, `user:<login>`, `token:<id>`, `system`.
pub type Actor = String;

/// A client's idempotency key, with a digest of the request it came with, so that the
/// same key with another request can be told apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub request_digest: Hash,
}

/// Everything an event carries besides its payload. The global log `position` is not
/// here: the store assigns it and gives it back on read, so a backend with its own
/// positions (KurrentDB's `$all`) keeps the hash chain intact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: EventId,
    pub book: BookId,
    /// Position in the book's stream, from 0.
    pub version: u64,
    /// Business time: when the call started, when the payment was made.
    pub occurred_at: Timestamp,
    /// Ledger time: when the book's writer accepted it.
    pub recorded_at: Timestamp,
    pub actor: Actor,
    pub idempotency: Option<Idempotency>,
    /// How many events the command that made this one produced; the first of them
    /// carries the idempotency key.
    pub command_events: u32,
    pub prev_hash: Hash,
    pub hash: Hash,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub envelope: Envelope,
    pub payload: Payload,
}

impl AsRef<Event> for Event {
    fn as_ref(&self) -> &Event {
        self
    }
}

/// An event as read back from a store, with its place in the global log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: u64,
    pub event: Event,
}

/// The statement categories, one per figure of the statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Payments,
    Adjustments,
    CallCharges,
    OtherCharges,
    TransfersIn,
    TransfersOut,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Payments,
        Category::Adjustments,
        Category::CallCharges,
        Category::OtherCharges,
        Category::TransfersIn,
        Category::TransfersOut,
    ];

    /// How an amount in this category moves the balance: credits add, debits subtract.
    pub fn balance_effect(&self, amount: Amount) -> Amount {
        match self {
            Category::Payments | Category::TransfersIn => amount,
            Category::Adjustments | Category::CallCharges | Category::OtherCharges | Category::TransfersOut => -amount,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Category::Payments => "payments",
            Category::Adjustments => "adjustments",
            Category::CallCharges => "call_charges",
            Category::OtherCharges => "other_charges",
            Category::TransfersIn => "transfers_in",
            Category::TransfersOut => "transfers_out",
        }
    }
}

/// One account's share of an event: `amount` added to `category` of `account`'s statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: AccountId,
    pub category: Category,
    pub amount: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveDirection {
    /// Partner's funds to its customer.
    ToCustomer,
    /// Customer's funds back to its partner.
    ToPartner,
}

/// Serialized externally tagged (the binary codec needs it); the API renders it with a
/// `type` field of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    AccountOpened(AccountOpened),
    AccountStatusChanged(AccountStatusChanged),
    CreditLimitChanged(CreditLimitChanged),
    TariffAssigned(TariffAssigned),
    PaymentReceived(PaymentReceived),
    AdjustmentPosted(AdjustmentPosted),
    ChargePosted(ChargePosted),
    CallCharged(CallCharged),
    FundsMoved(FundsMoved),
    EntryReversed(EntryReversed),
    TariffPublished(TariffPublished),
    AlertsConfigured(AlertsConfigured),
    AlertRaised(AlertRaised),
    SwitchIdentifiersSet(SwitchIdentifiersSet),
    PlanPublished(PlanPublished),
    SubscriptionStarted(SubscriptionStarted),
    SubscriptionEnded(SubscriptionEnded),
    TaxConfigured(TaxConfigured),
    InvoiceIssued(Box<InvoiceIssued>),
    CreditNoteIssued(Box<CreditNoteIssued>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOpened {
    pub account: AccountId,
    pub number: String,
    pub name: String,
    pub kind: AccountKind,
    pub partner: Option<AccountId>,
    pub currency: Currency,
    pub credit_limit: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatusChanged {
    pub account: AccountId,
    pub from: AccountStatus,
    pub to: AccountStatus,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditLimitChanged {
    pub account: AccountId,
    pub from: Amount,
    pub to: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffAssigned {
    pub account: AccountId,
    pub tariff: Option<TariffId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReceived {
    pub account: AccountId,
    pub amount: Amount,
    pub method: Option<String>,
    pub reference: Option<String>,
}

/// Signed: positive is a debit (adds to total charges), negative a credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustmentPosted {
    pub account: AccountId,
    pub amount: Amount,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargePosted {
    pub account: AccountId,
    pub amount: Amount,
    pub description: Option<String>,
}

/// One CDR, rated: the customer's retail cost and, where the customer has a partner,
/// the partner's wholesale cost of the same call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCharged {
    pub account: AccountId,
    pub cdr: RatedCdr,
    pub customer_cost: Amount,
    pub partner: Option<AccountId>,
    pub partner_cost: Option<Amount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsMoved {
    pub from: AccountId,
    pub to: AccountId,
    pub amount: Amount,
    pub direction: MoveDirection,
    pub note: Option<String>,
}

/// A correction: names the event it reverses and moves each of its postings back in
/// the same category. Nothing is ever edited or deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryReversed {
    pub reversed_event: EventId,
    pub reversed_version: u64,
    pub postings: Vec<Posting>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffPublished {
    pub tariff: Tariff,
}

/// The identifiers an account is known by on the switches (account code, caller ids,
/// trunks), replacing those it had: a switch's CDR is charged to the account holding one
/// of its identifiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchIdentifiersSet {
    pub account: AccountId,
    pub identifiers: Vec<crate::switch::SwitchIdentifier>,
}

/// An account's alert thresholds; `None` turns an alert off. Reaching the credit limit
/// always alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertsConfigured {
    pub account: AccountId,
    pub balance_below: Option<Amount>,
    pub call_cost_above: Option<Amount>,
}

/// A threshold was crossed. Balance alerts fire once per crossing (down through the
/// threshold), not once per charge; a call-cost alert fires for each costly call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRaised {
    pub account: AccountId,
    pub alert: Alert,
    /// The balance right after the event that crossed the threshold.
    pub balance: Amount,
    pub credit_limit: Amount,
}

/// A plan, published in the book that sells it (the operator's, or a partner's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanPublished {
    pub plan: Plan,
}

/// An account subscribes to a plan of its book for `[starts_at, ends_at)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStarted {
    pub subscription: SubscriptionId,
    pub account: AccountId,
    pub plan: PlanId,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
}

/// A subscription's end is set (or brought forward).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEnded {
    pub subscription: SubscriptionId,
    pub account: AccountId,
    pub ends_at: Timestamp,
}

/// The tax an issuing book charges: its own rule (`account` none) or one account's
/// (`tax` none takes the account's rule away, back to the issuer's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxConfigured {
    pub account: Option<AccountId>,
    pub tax: Option<TaxRule>,
}

/// An invoice: an account's statement for a billing period, frozen with its tax and
/// its number in the issuer's sequence. Never changed; a credit note corrects it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceIssued {
    pub invoice: InvoiceId,
    /// The issuer's invoice sequence: 1, 2, 3, ... with no gap.
    pub sequence: u64,
    pub number: String,
    pub account: AccountId,
    pub account_number: String,
    pub account_name: String,
    pub currency: Currency,
    /// The issuer as the invoice names it: the partner's name, or `Operator`.
    pub issuer_name: String,
    pub period_from: Timestamp,
    pub period_to: Timestamp,
    pub figures: Figures,
    /// The global position of the statement the figures are from: the statement as of
    /// it gives them again.
    pub statement_position: u64,
    pub tax: TaxRule,
    pub totals: Totals,
}

/// A correction of an invoice: the corrected figures minus those the invoice stood at,
/// so that the invoice and its credit notes add up to the corrected figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteIssued {
    pub credit_note: InvoiceId,
    /// The issuer's credit-note sequence (its own, from 1).
    pub sequence: u64,
    pub number: String,
    pub invoice: InvoiceId,
    pub invoice_number: String,
    pub account: AccountId,
    pub currency: Currency,
    pub figures: Figures,
    pub totals: Totals,
    pub statement_position: u64,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alert {
    /// The balance went below `-credit_limit` (only a call charge or a correction can).
    CreditLimitReached,
    BalanceBelow {
        threshold: Amount,
    },
    CallCostAbove {
        threshold: Amount,
        cdr_id: String,
        callee: String,
        billed_seconds: u32,
        cost: Amount,
    },
    /// A subscription's fee for one period was refused (the account, or the partner that
    /// pays the operator its share, had not the funds, or was closed). The period stays
    /// unpaid, on the record: the fee is not tried again (see docs/billing-cycle.md).
    FeeRefused {
        subscription: SubscriptionId,
        plan: PlanId,
        period_start: Timestamp,
        amount: Amount,
        /// The refusal's machine code (`insufficient_funds`, `account_closed`).
        reason: String,
    },
}

impl Alert {
    pub fn kind(&self) -> &'static str {
        match self {
            Alert::CreditLimitReached => "credit_limit_reached",
            Alert::BalanceBelow { .. } => "balance_below",
            Alert::CallCostAbove { .. } => "call_cost_above",
            Alert::FeeRefused { .. } => "fee_refused",
        }
    }
}

impl Payload {
    /// Every [`Payload::type_name`], for clients that filter events by kind.
    pub const TYPE_NAMES: [&'static str; 20] = [
        "AccountOpened",
        "AccountStatusChanged",
        "CreditLimitChanged",
        "TariffAssigned",
        "PaymentReceived",
        "AdjustmentPosted",
        "ChargePosted",
        "CallCharged",
        "FundsMoved",
        "EntryReversed",
        "TariffPublished",
        "AlertsConfigured",
        "AlertRaised",
        "SwitchIdentifiersSet",
        "PlanPublished",
        "SubscriptionStarted",
        "SubscriptionEnded",
        "TaxConfigured",
        "InvoiceIssued",
        "CreditNoteIssued",
    ];

    /// The event's type name, stable forever (KurrentDB's event type).
    pub fn type_name(&self) -> &'static str {
        match self {
            Payload::AccountOpened(_) => "AccountOpened",
            Payload::AccountStatusChanged(_) => "AccountStatusChanged",
            Payload::CreditLimitChanged(_) => "CreditLimitChanged",
            Payload::TariffAssigned(_) => "TariffAssigned",
            Payload::PaymentReceived(_) => "PaymentReceived",
            Payload::AdjustmentPosted(_) => "AdjustmentPosted",
            Payload::ChargePosted(_) => "ChargePosted",
            Payload::CallCharged(_) => "CallCharged",
            Payload::FundsMoved(_) => "FundsMoved",
            Payload::EntryReversed(_) => "EntryReversed",
            Payload::TariffPublished(_) => "TariffPublished",
            Payload::AlertsConfigured(_) => "AlertsConfigured",
            Payload::AlertRaised(_) => "AlertRaised",
            Payload::SwitchIdentifiersSet(_) => "SwitchIdentifiersSet",
            Payload::PlanPublished(_) => "PlanPublished",
            Payload::SubscriptionStarted(_) => "SubscriptionStarted",
            Payload::SubscriptionEnded(_) => "SubscriptionEnded",
            Payload::TaxConfigured(_) => "TaxConfigured",
            Payload::InvoiceIssued(_) => "InvoiceIssued",
            Payload::CreditNoteIssued(_) => "CreditNoteIssued",
        }
    }

    /// The payload's schema version. When a payload's shape changes, its number goes
    /// up and the store's codec keeps a reader for every older number.
    /// `CallCharged` is at 2 since its CDR keeps the hang-up cause as the switch wrote it
    /// (`RatedCdr::hangup_cause_raw`, `hangup_cause_flag`); every other payload is at 1.
    pub fn schema_version(&self) -> u16 {
        match self {
            Payload::CallCharged(_) => 2,
            _ => 1,
        }
    }

    /// Which accounts' statements this event moves, and in which category.
    pub fn postings(&self) -> Vec<Posting> {
        let mut postings = Vec::new();
        self.for_each_posting(|p| postings.push(p));
        postings
    }

    /// [`Payload::postings`] without the allocation, for the hot paths.
    pub fn for_each_posting(&self, mut emit: impl FnMut(Posting)) {
        match self {
            Payload::PaymentReceived(e) => {
                emit(Posting { account: e.account, category: Category::Payments, amount: e.amount })
            }
            Payload::AdjustmentPosted(e) => {
                emit(Posting { account: e.account, category: Category::Adjustments, amount: e.amount })
            }
            Payload::ChargePosted(e) => {
                emit(Posting { account: e.account, category: Category::OtherCharges, amount: e.amount })
            }
            Payload::CallCharged(e) => {
                emit(Posting { account: e.account, category: Category::CallCharges, amount: e.customer_cost });
                if let (Some(partner), Some(cost)) = (e.partner, e.partner_cost) {
                    emit(Posting { account: partner, category: Category::CallCharges, amount: cost });
                }
            }
            Payload::FundsMoved(e) => {
                emit(Posting { account: e.from, category: Category::TransfersOut, amount: e.amount });
                emit(Posting { account: e.to, category: Category::TransfersIn, amount: e.amount });
            }
            Payload::EntryReversed(e) => e.postings.iter().copied().for_each(emit),
            Payload::AccountOpened(_)
            | Payload::AccountStatusChanged(_)
            | Payload::CreditLimitChanged(_)
            | Payload::TariffAssigned(_)
            | Payload::TariffPublished(_)
            | Payload::AlertsConfigured(_)
            | Payload::AlertRaised(_)
            | Payload::SwitchIdentifiersSet(_)
            | Payload::PlanPublished(_)
            | Payload::SubscriptionStarted(_)
            | Payload::SubscriptionEnded(_)
            | Payload::TaxConfigured(_)
            | Payload::InvoiceIssued(_)
            | Payload::CreditNoteIssued(_) => {}
        }
    }

    /// Every account this event concerns (for the audit trail of an account).
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut accounts = Vec::with_capacity(2);
        self.for_each_account(|account| {
            if !accounts.contains(&account) {
                accounts.push(account)
            }
        });
        accounts
    }

    /// Calls `emit` with every account this event concerns, without allocating; an
    /// account may come twice.
    pub fn for_each_account(&self, mut emit: impl FnMut(AccountId)) {
        match self {
            Payload::AccountOpened(e) => emit(e.account),
            Payload::AccountStatusChanged(e) => emit(e.account),
            Payload::CreditLimitChanged(e) => emit(e.account),
            Payload::TariffAssigned(e) => emit(e.account),
            Payload::AlertsConfigured(e) => emit(e.account),
            Payload::AlertRaised(e) => emit(e.account),
            Payload::SwitchIdentifiersSet(e) => emit(e.account),
            Payload::SubscriptionStarted(e) => emit(e.account),
            Payload::SubscriptionEnded(e) => emit(e.account),
            Payload::TaxConfigured(e) => e.account.into_iter().for_each(&mut emit),
            Payload::InvoiceIssued(e) => emit(e.account),
            Payload::CreditNoteIssued(e) => emit(e.account),
            Payload::TariffPublished(_) | Payload::PlanPublished(_) => {}
            _ => self.for_each_posting(|p| emit(p.account)),
        }
    }
}
