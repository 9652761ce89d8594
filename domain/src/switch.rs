//! What ties a switch's CDR to a ledger account: identifiers the operator assigns to each
//! customer account (its account code on the switch, a caller id, a trunk). A switch
//! knows its own names for a caller, not tollbook's account numbers.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::validate_text;

/// Identifiers one account may hold at most: a customer's numbers and trunks, not a
/// number block (a block belongs in a tariff or an account code).
pub const SWITCH_IDENTIFIERS_PER_ACCOUNT_MAX: usize = 256;
/// The longest identifier: a SIP URI or an IP address and port fit.
pub const SWITCH_IDENTIFIER_LENGTH_MAX: usize = 128;

/// Which of a CDR's fields an identifier is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// The switch's account code (FreeSWITCH `accountcode`, Asterisk `accountcode`).
    AccountCode,
    /// The calling number (FreeSWITCH `caller_id_number`, Asterisk `src`).
    CallerId,
    /// The trunk or gateway the call came in on (an Asterisk channel's peer, a FreeSWITCH
    /// gateway, a Kamailio source address).
    Trunk,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 3] = [IdentifierKind::AccountCode, IdentifierKind::CallerId, IdentifierKind::Trunk];

    pub fn as_str(&self) -> &'static str {
        match self {
            IdentifierKind::AccountCode => "account_code",
            IdentifierKind::CallerId => "caller_id",
            IdentifierKind::Trunk => "trunk",
        }
    }

    pub fn parse(text: &str) -> Option<IdentifierKind> {
        IdentifierKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One identifier of an account on the switches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SwitchIdentifier {
    pub kind: IdentifierKind,
    pub value: String,
}

impl SwitchIdentifier {
    pub fn new(kind: IdentifierKind, value: impl Into<String>) -> SwitchIdentifier {
        SwitchIdentifier { kind, value: value.into() }
    }
}

/// An account's identifiers as they will be kept: each checked, sorted, without repeats.
pub fn validated_identifiers(identifiers: &[SwitchIdentifier]) -> Result<Vec<SwitchIdentifier>, DomainError> {
    if identifiers.len() > SWITCH_IDENTIFIERS_PER_ACCOUNT_MAX {
        return Err(DomainError::InvalidField {
            field: "identifiers",
            reason: format!("{} identifiers, at most {SWITCH_IDENTIFIERS_PER_ACCOUNT_MAX}", identifiers.len()),
        });
    }
    let mut kept = Vec::with_capacity(identifiers.len());
    for identifier in identifiers {
        let value = identifier.value.trim();
        if value.is_empty() || value.chars().count() > SWITCH_IDENTIFIER_LENGTH_MAX {
            return Err(DomainError::InvalidField {
                field: "identifiers.value",
                reason: format!(
                    "a {} must be 1 to {SWITCH_IDENTIFIER_LENGTH_MAX} characters",
                    identifier.kind.as_str()
                ),
            });
        }
        validate_text("identifiers.value", value)?;
        kept.push(SwitchIdentifier::new(identifier.kind, value));
    }
    kept.sort();
    kept.dedup();
    Ok(kept)
}

/// The identifiers a switch's CDR offers, in the order they are tried: the account code
/// first (the switch's own account), then the calling number, then the trunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdrIdentifiers {
    pub account_code: Option<String>,
    pub caller_id: Option<String>,
    pub trunk: Option<String>,
}

impl CdrIdentifiers {
    /// Each identifier the CDR has, with the name of the switch field it came from.
    pub fn candidates(&self) -> Vec<SwitchIdentifier> {
        [
            (IdentifierKind::AccountCode, &self.account_code),
            (IdentifierKind::CallerId, &self.caller_id),
            (IdentifierKind::Trunk, &self.trunk),
        ]
        .into_iter()
        .filter_map(|(kind, value)| {
            value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(|v| SwitchIdentifier::new(kind, v))
        })
        .collect()
    }

    /// Why no account matched, naming every value tried.
    pub fn unmatched(&self) -> DomainError {
        let tried = self.candidates();
        let values = if tried.is_empty() {
            "it carries no account code, caller id or trunk".to_owned()
        } else {
            tried
                .iter()
                .map(|i| format!("{} `{}`", i.kind.as_str(), i.value.chars().take(64).collect::<String>()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        DomainError::NoAccountForCdr(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked_sorted_and_kept_once() {
        let kept = validated_identifiers(&[
            SwitchIdentifier::new(IdentifierKind::Trunk, " gw1 "),
            SwitchIdentifier::new(IdentifierKind::AccountCode, "1001"),
            SwitchIdentifier::new(IdentifierKind::Trunk, "gw1"),
        ])
        .unwrap();
        assert_eq!(
            kept,
            [
                SwitchIdentifier::new(IdentifierKind::AccountCode, "1001"),
                SwitchIdentifier::new(IdentifierKind::Trunk, "gw1")
            ]
        );
        let empty = validated_identifiers(&[SwitchIdentifier::new(IdentifierKind::CallerId, " ")]).unwrap_err();
        assert_eq!(empty.field(), Some("identifiers.value"));
        let many: Vec<_> = (0..=SWITCH_IDENTIFIERS_PER_ACCOUNT_MAX)
            .map(|n| SwitchIdentifier::new(IdentifierKind::CallerId, n.to_string()))
            .collect();
        assert_eq!(validated_identifiers(&many).unwrap_err().field(), Some("identifiers"));
    }

    #[test]
    fn an_unmatched_cdr_names_every_value_it_offered() {
        let ids = CdrIdentifiers { account_code: Some("77".into()), caller_id: Some("4930111".into()), trunk: None };
        assert_eq!(ids.candidates().len(), 2);
        let error = ids.unmatched();
        assert_eq!(error.code(), "account_not_identified");
        let text = error.to_string();
        assert!(text.contains("account_code `77`") && text.contains("caller_id `4930111`"), "{text}");
        assert!(CdrIdentifiers::default().unmatched().to_string().contains("no account code"));
    }
}
