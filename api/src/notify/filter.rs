//! Which events a subscriber gets: its tenant scope (never widened by a filter) and the
//! filters it asked for (book, account, event kinds).

use std::collections::BTreeSet;

use domain::{AccountId, BookId, Event, Payload};
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Scope};
use crate::error::ApiError;

/// Event kinds one filter may name at most (there are fewer kinds than this).
pub const KINDS_MAX: usize = 64;

/// Whose events a subscriber may receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The operator: every event.
    All,
    /// A partner: the events of its own book (itself and its customers).
    Book(BookId),
    /// A customer: the events that concern its own account.
    Account(AccountId),
}

impl Audience {
    pub fn of(caller: &Caller) -> Audience {
        match caller.scope {
            Scope::Admin => Audience::All,
            Scope::Partner(partner) => Audience::Book(BookId::of_partner(partner)),
            Scope::Customer(customer) => Audience::Account(customer),
        }
    }

    pub fn sees(&self, event: &Event) -> bool {
        match self {
            Audience::All => true,
            Audience::Book(book) => event.envelope.book == *book,
            Audience::Account(account) => event.payload.accounts().contains(account),
        }
    }
}

/// What a subscriber asked for; every part that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    pub book: Option<BookId>,
    pub account: Option<AccountId>,
    /// Event type names (`PaymentReceived`, `AlertRaised`, …); empty: every kind.
    pub kinds: BTreeSet<String>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.book.is_none_or(|book| event.envelope.book == book)
            && self.account.is_none_or(|account| event.payload.accounts().contains(&account))
            && (self.kinds.is_empty() || self.kinds.contains(event.payload.type_name()))
    }

    /// A filter from what a client sent: `book` is `operator` or a partner's account
    /// number, `account` an account number, `kinds` type names. Books and accounts the
    /// caller may not see answer 404, as if they did not exist.
    pub fn parse(
        ledger: &commands::Ledger,
        caller: &Caller,
        book: Option<&str>,
        account: Option<&str>,
        kinds: &[String],
    ) -> Result<EventFilter, ApiError> {
        let audience = Audience::of(caller);
        let book = book
            .filter(|b| !b.is_empty())
            .map(|text| {
                let found = if text == "operator" {
                    Some(BookId::OPERATOR)
                } else {
                    ledger
                        .account(text)
                        .filter(|a| a.kind == domain::AccountKind::Partner && caller.sees(a))
                        .map(|a| a.book)
                };
                let visible = match (found, audience) {
                    (Some(book), Audience::All) => Some(book),
                    (Some(book), Audience::Book(own)) if book == own => Some(book),
                    (Some(book), Audience::Account(own)) => {
                        ledger.account_by_id(own).filter(|a| a.book == book).map(|a| a.book)
                    }
                    _ => None,
                };
                visible.ok_or_else(|| {
                    ApiError::not_found("book_not_found", format!("book `{text}` not found")).with_field("book")
                })
            })
            .transpose()?;
        let account = account
            .filter(|a| !a.is_empty())
            .map(|number| crate::write::visible_account(ledger, caller, "account", number).map(|a| a.id))
            .transpose()?;
        Ok(EventFilter { book, account, kinds: parse_kinds(kinds)? })
    }
}

/// Event kinds, each a known type name.
pub fn parse_kinds(kinds: &[String]) -> Result<BTreeSet<String>, ApiError> {
    if kinds.len() > KINDS_MAX {
        return Err(ApiError::bad_request("invalid_field", "kinds", format!("kinds: at most {KINDS_MAX}")));
    }
    kinds
        .iter()
        .map(|kind| kind.trim())
        .filter(|kind| !kind.is_empty())
        .map(|kind| {
            if Payload::TYPE_NAMES.contains(&kind) {
                Ok(kind.to_owned())
            } else {
                Err(ApiError::bad_request(
                    "invalid_field",
                    "kinds",
                    format!(
                        "kinds: `{}` is not an event kind; known: {}",
                        kind.chars().take(64).collect::<String>(),
                        Payload::TYPE_NAMES.join(", ")
                    ),
                ))
            }
        })
        .collect()
}

/// Splits `A,B C` into kinds (forms and query strings send one string).
pub fn split_kinds(text: &str) -> Vec<String> {
    text.split([',', ' ']).filter(|part| !part.is_empty()).map(str::to_owned).collect()
}
