//! Rating: turning a call detail record into a cost with a tariff.

use serde::{Deserialize, Serialize};

use crate::ids::TariffId;
use crate::money::{Amount, Currency};
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    Outbound,
    Inbound,
}

/// A call detail record as the ledger keeps it: what the switch said, plus what rating
/// decided (billed seconds, the prefix that matched, the tariffs used).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedCdr {
    pub id: String,
    pub caller: String,
    pub callee: String,
    pub start: Timestamp,
    pub answer: Option<Timestamp>,
    pub end: Timestamp,
    pub billable_seconds: u32,
    /// Q.850 release cause.
    pub hangup_cause: u16,
    pub direction: CallDirection,
    /// Seconds after the tariff's minimum and increments.
    pub billed_seconds: u32,
    /// The destination prefix that priced the call, if a tariff rated it.
    pub matched_prefix: Option<String>,
    pub customer_tariff: Option<TariffId>,
    pub partner_tariff: Option<TariffId>,
    /// The hang-up cause as the switch wrote it, when it was not a bare Q.850 number
    /// (`CallCharged` schema 2; absent from older events).
    #[serde(default)]
    pub hangup_cause_raw: Option<String>,
    /// Set when the cause was missing or unknown (`CallCharged` schema 2).
    #[serde(default)]
    pub hangup_cause_flag: Option<crate::hangup::CauseFlag>,
}

impl RatedCdr {
    pub fn answered(&self) -> bool {
        self.answer.is_some() && self.billable_seconds > 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingMode {
    /// Toward +infinity: the operator never under-bills a fraction.
    Up,
    /// Half away from zero.
    HalfUp,
    /// Banker's rounding.
    HalfEven,
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rounding {
    pub decimals: u32,
    pub mode: RoundingMode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub prefix: String,
    pub price_per_minute: Amount,
    pub connect_fee: Amount,
    pub minimum_seconds: u32,
    pub first_increment_seconds: u32,
    pub next_increment_seconds: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub id: TariffId,
    pub name: String,
    pub currency: Currency,
    pub effective_from: Timestamp,
    pub rounding: Rounding,
    pub rates: Vec<Rate>,
}
