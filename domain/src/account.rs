//! Accounts: partners (resellers) and customers.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, AccountLabel, TariffId};
use crate::money::{Amount, Currency};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Partner,
    Customer,
}

impl AccountKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountKind::Partner => "partner",
            AccountKind::Customer => "customer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "partner" => Some(AccountKind::Partner),
            "customer" => Some(AccountKind::Customer),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Suspended,
    Closed,
}

impl AccountStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(AccountStatus::Active),
            "suspended" => Some(AccountStatus::Suspended),
            "closed" => Some(AccountStatus::Closed),
            _ => None,
        }
    }
}

/// An account as its book's writer knows it: everything a rule needs, nothing more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub number: String,
    pub name: String,
    pub kind: AccountKind,
    /// The partner a customer belongs to; `None` for partners and the operator's customers.
    pub partner: Option<AccountId>,
    pub currency: Currency,
    pub credit_limit: Amount,
    pub status: AccountStatus,
    pub tariff: Option<TariffId>,
    /// Current balance, all events applied regardless of their business time.
    pub balance: Amount,
    pub alert_balance_below: Option<Amount>,
    pub alert_call_cost_above: Option<Amount>,
}

impl Account {
    /// How messages name the account.
    pub fn label(&self) -> AccountLabel {
        AccountLabel { id: self.id, number: self.number.clone() }
    }

    /// What may still be spent before the credit limit: `balance + credit_limit`.
    pub fn available(&self) -> Amount {
        self.balance + self.credit_limit
    }

    /// Below the credit limit: a call charge can take an account here, nothing else can.
    pub fn is_overdrawn(&self) -> bool {
        self.available().is_negative()
    }
}
