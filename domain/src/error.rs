//! A user's mistake or a rule of the ledger that refused a command. Each variant has a
//! stable machine code that the API returns; technical failures never live here.

use thiserror::Error;

use crate::ids::{AccountId, AccountLabel, EventId, InvoiceId, PlanId, SubscriptionId, TariffId};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    // Bad input: the request itself is malformed.
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    #[error("`{0}` is not an ISO 4217 currency code")]
    InvalidCurrency(String),
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },

    // Not found inside the book.
    #[error("account {0} does not exist in this book")]
    AccountNotFound(AccountId),
    #[error("event {0} does not exist in this book")]
    EventNotFound(EventId),

    // Rules of the ledger.
    #[error("account number `{0}` is already taken")]
    DuplicateAccountNumber(String),
    #[error("account {0} already exists")]
    DuplicateAccount(AccountId),
    #[error("amount must be greater than zero")]
    AmountNotPositive,
    #[error("account {account} has {available} available, {requested} requested")]
    InsufficientFunds { account: AccountLabel, available: String, requested: String },
    #[error("account {0} is closed")]
    AccountClosed(AccountLabel),
    #[error("account {0} is suspended")]
    AccountSuspended(AccountLabel),
    #[error("account {customer} is not a customer of partner {partner}")]
    NotOwnCustomer { partner: AccountLabel, customer: AccountLabel },
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(String, String),
    #[error("a partner cannot belong to another partner")]
    PartnerOfPartner,
    #[error("account {0} is a partner; this needs a customer")]
    NotACustomer(AccountLabel),
    #[error("account {0} is not a partner")]
    NotAPartner(AccountLabel),
    #[error("partner {0} still has customers that are not closed")]
    PartnerHasOpenCustomers(AccountLabel),
    #[error("status cannot change from {from} to {to}")]
    InvalidStatusChange { from: &'static str, to: &'static str },
    #[error("event {0} has already been reversed")]
    AlreadyReversed(EventId),
    #[error("event {0} moves no money and cannot be reversed")]
    NotReversible(EventId),
    #[error("idempotency key `{0}` was already used with a different request")]
    IdempotencyKeyReused(String),
    #[error("the account's currency {account} differs from the tariff's {tariff}")]
    TariffCurrencyMismatch { account: String, tariff: String },
    #[error("credit limit must not be negative")]
    NegativeCreditLimit,
    #[error("no rate of the tariff matches the number `{0}`")]
    NoMatchingRate(String),
    #[error("the {role} account {account} has no tariff in force when the call started")]
    NoTariff { account: AccountLabel, role: &'static str },
    #[error("tariff {0} does not exist")]
    TariffNotFound(TariffId),
    #[error("a new version of tariff {tariff} must take effect after {after}, the start of its current one")]
    TariffVersionNotLater { tariff: TariffId, after: String },
    #[error("the {kind} `{value}` already belongs to another account")]
    SwitchIdentifierTaken { kind: &'static str, value: String },
    #[error("no account is tied to this CDR: {0}")]
    NoAccountForCdr(String),
    #[error("plan {0} does not exist in this book")]
    PlanNotFound(PlanId),
    #[error("plan {0} already exists")]
    DuplicatePlan(PlanId),
    #[error("subscription {0} does not exist")]
    SubscriptionNotFound(SubscriptionId),
    #[error("subscription {0} already exists")]
    DuplicateSubscription(SubscriptionId),
    #[error("the subscription's fees are charged until {charged_until}; it cannot end before")]
    PeriodAlreadyCharged { charged_until: String },
    #[error("invoice {0} does not exist")]
    InvoiceNotFound(InvoiceId),
    #[error("invoice {0} already stands at these figures: there is nothing to correct")]
    InvoiceUnchanged(String),
}

impl DomainError {
    /// The stable machine code that clients match on.
    pub fn code(&self) -> &'static str {
        use DomainError::*;
        match self {
            InvalidAmount(_) => "invalid_amount",
            InvalidCurrency(_) => "invalid_currency",
            InvalidField { .. } => "invalid_field",
            AccountNotFound(_) => "account_not_found",
            EventNotFound(_) => "event_not_found",
            DuplicateAccountNumber(_) => "duplicate_account_number",
            DuplicateAccount(_) => "duplicate_account",
            AmountNotPositive => "invalid_amount",
            InsufficientFunds { .. } => "insufficient_funds",
            AccountClosed(_) => "account_closed",
            AccountSuspended(_) => "account_suspended",
            NotOwnCustomer { .. } => "not_own_customer",
            CurrencyMismatch(..) => "currency_mismatch",
            PartnerOfPartner => "partner_of_partner",
            NotACustomer(_) => "not_a_customer",
            NotAPartner(_) => "not_a_partner",
            PartnerHasOpenCustomers(_) => "partner_has_open_customers",
            InvalidStatusChange { .. } => "invalid_status_change",
            AlreadyReversed(_) => "already_reversed",
            NotReversible(_) => "not_reversible",
            IdempotencyKeyReused(_) => "idempotency_key_reused",
            TariffCurrencyMismatch { .. } => "currency_mismatch",
            NegativeCreditLimit => "invalid_credit_limit",
            NoMatchingRate(_) => "no_matching_rate",
            NoTariff { .. } => "no_tariff",
            TariffNotFound(_) => "tariff_not_found",
            TariffVersionNotLater { .. } => "tariff_version_not_later",
            SwitchIdentifierTaken { .. } => "switch_identifier_taken",
            NoAccountForCdr(_) => "account_not_identified",
            PlanNotFound(_) => "plan_not_found",
            DuplicatePlan(_) => "duplicate_plan",
            SubscriptionNotFound(_) => "subscription_not_found",
            DuplicateSubscription(_) => "duplicate_subscription",
            PeriodAlreadyCharged { .. } => "period_already_charged",
            InvoiceNotFound(_) => "invoice_not_found",
            InvoiceUnchanged(_) => "invoice_unchanged",
        }
    }

    /// What kind of refusal this is, so that every edge (HTTP, CLI) maps it the same way.
    pub fn kind(&self) -> ErrorKind {
        use DomainError::*;
        match self {
            InvalidAmount(_) | InvalidCurrency(_) | InvalidField { .. } | AmountNotPositive | NegativeCreditLimit => {
                ErrorKind::BadInput
            }
            AccountNotFound(_)
            | EventNotFound(_)
            | TariffNotFound(_)
            | PlanNotFound(_)
            | SubscriptionNotFound(_)
            | InvoiceNotFound(_) => ErrorKind::NotFound,
            DuplicateAccountNumber(_)
            | DuplicateAccount(_)
            | AlreadyReversed(_)
            | IdempotencyKeyReused(_)
            | SwitchIdentifierTaken { .. }
            | DuplicatePlan(_)
            | DuplicateSubscription(_) => ErrorKind::Conflict,
            _ => ErrorKind::Refused,
        }
    }

    /// The input field at fault, where one is.
    pub fn field(&self) -> Option<&'static str> {
        use DomainError::*;
        match self {
            InvalidAmount(_) | AmountNotPositive => Some("amount"),
            InvalidCurrency(_) => Some("currency"),
            InvalidField { field, .. } => Some(field),
            NegativeCreditLimit => Some("credit_limit"),
            DuplicateAccountNumber(_) => Some("number"),
            NoMatchingRate(_) => Some("callee"),
            TariffNotFound(_) => Some("tariff"),
            TariffVersionNotLater { .. } => Some("effective_from"),
            SwitchIdentifierTaken { .. } => Some("identifiers"),
            NoAccountForCdr(_) => Some("account"),
            PlanNotFound(_) => Some("plan"),
            SubscriptionNotFound(_) => Some("subscription"),
            PeriodAlreadyCharged { .. } => Some("ends_at"),
            InvoiceNotFound(_) => Some("invoice"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadInput,
    NotFound,
    Conflict,
    /// A rule of the ledger said no (HTTP 422).
    Refused,
}
