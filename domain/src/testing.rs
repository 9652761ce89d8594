//! Given/when/then for the decider: given these past events, when this command, then
//! these events or this error. Hashes here are placeholders; the real chain is the
//! writer's (commands crate).

use crate::account::AccountKind;
use crate::command::{Command, CommandMeta, OpenAccount};
use crate::decide::{BookState, Decision, decide, seal};
use crate::error::DomainError;
use crate::event::{Event, Payload};
use crate::ids::{AccountId, BookId};
use crate::money::{Amount, Currency};
use crate::time::Timestamp;

pub fn meta() -> CommandMeta {
    CommandMeta {
        occurred_at: Timestamp::from_seconds(1_767_225_600),
        recorded_at: Timestamp::from_seconds(1_767_225_600),
        actor: "test".into(),
        idempotency: None,
    }
}

pub fn amount(text: &str) -> Amount {
    text.parse().expect("test amounts are valid")
}

pub fn open_partner(id: AccountId, number: &str, credit_limit: &str) -> Command {
    Command::OpenAccount(OpenAccount {
        account: id,
        number: number.into(),
        name: format!("Partner {number}"),
        kind: AccountKind::Partner,
        partner: None,
        currency: Currency::parse("EUR").unwrap(),
        credit_limit: amount(credit_limit),
    })
}

pub fn open_customer(id: AccountId, partner: Option<AccountId>, number: &str, credit_limit: &str) -> Command {
    Command::OpenAccount(OpenAccount {
        account: id,
        number: number.into(),
        name: format!("Customer {number}"),
        kind: AccountKind::Customer,
        partner,
        currency: Currency::parse("EUR").unwrap(),
        credit_limit: amount(credit_limit),
    })
}

/// A book state built by deciding and applying `commands` in order; each must succeed.
pub struct Given {
    pub state: BookState,
    pub log: Vec<Event>,
}

pub fn given(book: BookId, commands: &[Command]) -> Given {
    let mut scenario = Given { state: BookState::new(book), log: Vec::new() };
    for command in commands {
        scenario.apply(command).unwrap_or_else(|e| panic!("given command {command:?} failed: {e}"));
    }
    scenario
}

impl Given {
    /// Decides and, if accepted, applies; returns the new events.
    pub fn apply(&mut self, command: &Command) -> Result<Vec<Event>, DomainError> {
        self.apply_with(command, &meta())
    }

    pub fn apply_with(&mut self, command: &Command, meta: &CommandMeta) -> Result<Vec<Event>, DomainError> {
        match decide(&self.state, command, meta)? {
            Decision::Accept(payloads) => {
                let events = seal(&mut self.state, payloads, meta, |_, _| [7u8; 32]);
                self.log.extend(events.iter().cloned());
                Ok(events)
            }
            Decision::Repeat { .. } => Ok(vec![]),
        }
    }

    /// When `command`, then exactly these payloads.
    pub fn then_payloads(mut self, command: &Command, expected: &[Payload]) -> Self {
        let events = self.apply(command).unwrap_or_else(|e| panic!("expected events, got error {e}"));
        let payloads: Vec<Payload> = events.into_iter().map(|e| e.payload).collect();
        assert_eq!(payloads, expected);
        self
    }

    /// When `command`, then this error code, and the state is unchanged.
    pub fn then_error(mut self, command: &Command, code: &str) -> Self {
        let before = self.state.clone();
        match self.apply(command) {
            Err(error) => assert_eq!(error.code(), code, "wrong error: {error}"),
            Ok(events) => panic!("expected error {code}, got events {events:?}"),
        }
        assert_eq!(self.state, before, "a refused command changed the state");
        self
    }

    pub fn balance(&self, account: AccountId) -> Amount {
        self.state.accounts[&account].balance
    }
}
