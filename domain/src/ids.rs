//! Identifiers. Ledger-made ids are UUIDv7 (time-ordered, so they index well);
//! account numbers and CDR ids come from the operator's systems and are validated text.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DomainError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        // The order of the bytes, as `Uuid`'s own, compared as one number: `Uuid`
        // compares them as slices, a call per comparison, and ids key the read
        // models' and the books' maps.
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.0.as_u128().cmp(&other.0.as_u128())
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl $name {
            /// A fresh time-ordered id.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            pub fn parse(text: &str) -> Option<Self> {
                Uuid::parse_str(text).ok().map($name)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

uuid_id!(
    /// An account, partner or customer.
    AccountId
);
uuid_id!(
    /// One event, ledger-wide.
    EventId
);

impl EventId {
    /// A v7 id whose time is `at` (to the millisecond) and whose other bits are random:
    /// sealing names each event from its recorded time, without a clock reading and a
    /// shared counter per event (1.7 % of the write path's CPU). Ids of one millisecond
    /// are unordered among themselves; an event's order is its version and position.
    pub fn recorded_at(at: crate::Timestamp) -> EventId {
        let micros = at.micros().max(0) as u64;
        let (seconds, subsec_nanos) = (micros / 1_000_000, (micros % 1_000_000) as u32 * 1_000);
        EventId(Uuid::new_v7(uuid::Timestamp::from_unix_time(seconds, subsec_nanos, 0, 0)))
    }
}
uuid_id!(
    /// A published tariff.
    TariffId
);
uuid_id!(
    /// A recurring-charge plan.
    PlanId
);
uuid_id!(
    /// An account's subscription to a plan.
    SubscriptionId
);
uuid_id!(
    /// An invoice or a credit note.
    InvoiceId
);

/// An account as a message names it: by the number the operator gave it, which is what
/// people know it by (an internal id in an error means nothing to them). The id rides
/// along for code that needs to tell accounts apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountLabel {
    pub id: AccountId,
    pub number: String,
}

impl fmt::Display for AccountLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.number)
    }
}

/// A book: the consistency boundary, one event stream. A partner's book has the
/// partner's own account id; customers of the operator itself share the operator's book.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BookId(pub Uuid);

impl BookId {
    /// The operator's own book: its direct customers and its tariffs.
    pub const OPERATOR: BookId = BookId(Uuid::nil());

    pub fn of_partner(partner: AccountId) -> BookId {
        BookId(partner.0)
    }

    pub fn parse(text: &str) -> Option<Self> {
        if text == "operator" {
            return Some(BookId::OPERATOR);
        }
        Uuid::parse_str(text).ok().map(BookId)
    }

    /// The stream name on backends that name streams (KurrentDB).
    pub fn stream_name(&self) -> String {
        format!("{}{}", STREAM_PREFIX, self)
    }
}

/// Every tollbook stream name starts with this, so `$all` can be filtered to ours.
pub const STREAM_PREFIX: &str = "tollbook-book-";

impl fmt::Debug for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == BookId::OPERATOR { f.write_str("operator") } else { write!(f, "{}", self.0) }
    }
}

/// Longest account number, CDR id, idempotency key and other free identifiers.
pub const IDENTIFIER_LENGTH_MAX: usize = 128;

/// Checks an identifier that comes from outside: non-empty, bounded, printable, no spaces.
pub fn validate_identifier(field: &'static str, text: &str) -> Result<(), DomainError> {
    let ok = !text.is_empty() && text.len() <= IDENTIFIER_LENGTH_MAX && text.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidField {
            field,
            reason: format!("must be 1 to {IDENTIFIER_LENGTH_MAX} printable ASCII characters without spaces"),
        })
    }
}

/// Longest free text (names, descriptions, reasons).
pub const TEXT_LENGTH_MAX: usize = 512;

pub fn validate_text(field: &'static str, text: &str) -> Result<(), DomainError> {
    if text.chars().count() > TEXT_LENGTH_MAX || text.chars().any(|c| c.is_control()) {
        return Err(DomainError::InvalidField {
            field,
            reason: format!("must be at most {TEXT_LENGTH_MAX} characters without control characters"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// An event's id carries its recorded time to the millisecond, is a v7 id, and
        /// two events recorded at the same instant still get different ids.
        #[test]
        fn an_event_id_carries_its_recorded_millisecond(micros in 0i64..4_102_444_800_000_000) {
            let at = crate::Timestamp(micros);
            let (first, second) = (EventId::recorded_at(at), EventId::recorded_at(at));
            prop_assert_eq!(first.0.get_version_num(), 7);
            let (seconds, nanos) = first.0.get_timestamp().expect("a v7 id has a time").to_unix();
            prop_assert_eq!(seconds * 1000 + u64::from(nanos) / 1_000_000, micros as u64 / 1000);
            prop_assert_ne!(first, second);
        }

        /// Ids compare as their bytes do (as `Uuid` compares them), so maps keyed by
        /// them keep the order they always had.
        #[test]
        fn ids_compare_as_their_bytes(a in any::<u128>(), b in any::<u128>(), shared in 0usize..16) {
            // Ids that share a prefix, as time-ordered ids do.
            let prefix = a.to_be_bytes();
            let mut bytes = b.to_be_bytes();
            bytes[..shared].copy_from_slice(&prefix[..shared]);
            let (a, b) = (AccountId(Uuid::from_u128(a)), AccountId(Uuid::from_bytes(bytes)));
            prop_assert_eq!(a.cmp(&b), a.0.as_bytes().cmp(b.0.as_bytes()));
            prop_assert_eq!(a.cmp(&b), a.0.cmp(&b.0));
        }
    }
}
