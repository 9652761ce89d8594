//! The ledger's rules, given/when/then.

use crate::account::AccountStatus;
use crate::command::{ChargeCall, Command};
use crate::event::*;
use crate::ids::{AccountId, BookId, EventId};
use crate::rating::{CallDirection, RatedCdr};
use crate::testing::*;
use crate::time::Timestamp;

fn partner_book() -> (AccountId, AccountId, Given) {
    let partner = AccountId::new();
    let customer = AccountId::new();
    let scenario = given(
        BookId::of_partner(partner),
        &[open_partner(partner, "P-1", "0"), open_customer(customer, Some(partner), "C-1", "10"), pay(partner, "100")],
    );
    (partner, customer, scenario)
}

fn pay(account: AccountId, how_much: &str) -> Command {
    Command::ReceivePayment { account, amount: amount(how_much), method: None, reference: None }
}

fn charge(account: AccountId, how_much: &str) -> Command {
    Command::PostCharge { account, amount: amount(how_much), description: None }
}

fn move_funds(from: AccountId, to: AccountId, how_much: &str) -> Command {
    Command::MoveFunds { from, to, amount: amount(how_much), note: None }
}

fn cdr(id: &str, seconds: u32) -> RatedCdr {
    let start = Timestamp::from_seconds(1_767_225_600);
    RatedCdr {
        id: id.into(),
        caller: "15550001".into(),
        callee: "4930123".into(),
        start,
        answer: Some(start),
        end: start.add_seconds(seconds as i64),
        billable_seconds: seconds,
        hangup_cause: 16,
        direction: CallDirection::Outbound,
        billed_seconds: seconds,
        matched_prefix: None,
        customer_tariff: None,
        partner_tariff: None,
        hangup_cause_raw: None,
        hangup_cause_flag: None,
    }
}

fn call(account: AccountId, id: &str, cost: &str, partner_cost: Option<&str>) -> Command {
    Command::ChargeCall(ChargeCall {
        account,
        cdr: cdr(id, 60),
        customer_cost: amount(cost),
        partner_cost: partner_cost.map(amount),
    })
}

#[test]
fn fund_move_to_own_customer_both_ways() {
    let (partner, customer, scenario) = partner_book();
    let scenario = scenario
        .then_payloads(
            &move_funds(partner, customer, "30"),
            &[Payload::FundsMoved(FundsMoved {
                from: partner,
                to: customer,
                amount: amount("30"),
                direction: MoveDirection::ToCustomer,
                note: None,
            })],
        )
        .then_payloads(
            &move_funds(customer, partner, "5"),
            &[Payload::FundsMoved(FundsMoved {
                from: customer,
                to: partner,
                amount: amount("5"),
                direction: MoveDirection::ToPartner,
                note: None,
            })],
        );
    assert_eq!(scenario.balance(partner), amount("75"));
    assert_eq!(scenario.balance(customer), amount("25"));
}

#[test]
fn fund_move_may_use_the_credit_limit_but_not_more() {
    let (partner, customer, scenario) = partner_book();
    // The customer has 0 and a credit limit of 10.
    scenario.then_error(&move_funds(customer, partner, "10.00001"), "insufficient_funds").then_payloads(
        &move_funds(customer, partner, "10"),
        &[Payload::FundsMoved(FundsMoved {
            from: customer,
            to: partner,
            amount: amount("10"),
            direction: MoveDirection::ToPartner,
            note: None,
        })],
    );
}

#[test]
fn fund_move_refusals() {
    let (partner, customer, mut scenario) = partner_book();
    let stranger = AccountId::new();
    let other_customer = AccountId::new();
    scenario.apply(&open_customer(other_customer, Some(partner), "C-2", "0")).unwrap();
    scenario
        .then_error(&move_funds(partner, customer, "0"), "invalid_amount")
        .then_error(&move_funds(partner, customer, "-1"), "invalid_amount")
        .then_error(&move_funds(partner, customer, "0.000001"), "invalid_amount")
        .then_error(&move_funds(partner, stranger, "1"), "account_not_found")
        .then_error(&move_funds(customer, other_customer, "1"), "not_a_partner")
        .then_error(&move_funds(partner, partner, "1"), "not_own_customer");
}

#[test]
fn fund_move_needs_one_currency() {
    let partner = AccountId::new();
    let customer = AccountId::new();
    let mut open_usd = open_customer(customer, Some(partner), "C-USD", "0");
    if let Command::OpenAccount(open) = &mut open_usd {
        open.currency = crate::money::Currency::parse("USD").unwrap();
    }
    given(BookId::of_partner(partner), &[open_partner(partner, "P-1", "0"), open_usd, pay(partner, "10")])
        .then_error(&move_funds(partner, customer, "1"), "currency_mismatch");
}

#[test]
fn manual_charge_respects_the_credit_limit() {
    let (_, customer, scenario) = partner_book();
    scenario.then_error(&charge(customer, "10.01"), "insufficient_funds").then_payloads(
        &charge(customer, "10"),
        &[Payload::ChargePosted(ChargePosted { account: customer, amount: amount("10"), description: None })],
    );
}

#[test]
fn a_call_is_always_recorded_and_the_crossing_raises_one_alert() {
    let (partner, customer, scenario) = partner_book();
    let mut scenario = scenario;
    // Available 10: the first call takes it to -12 (below -10): an alert.
    let first = scenario.apply(&call(customer, "cdr-1", "12", Some("8"))).unwrap();
    assert_eq!(first.len(), 2);
    assert!(matches!(
        &first[1].payload,
        Payload::AlertRaised(AlertRaised { account, alert: Alert::CreditLimitReached, .. }) if *account == customer
    ));
    // Still overdrawn: no second alert.
    let second = scenario.apply(&call(customer, "cdr-2", "1", Some("0.5"))).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(scenario.balance(customer), amount("-13"));
    assert_eq!(scenario.balance(partner), amount("91.5"));
    // Back within the limit, then over again: a second crossing, a second alert.
    scenario.apply(&move_funds(partner, customer, "20")).unwrap();
    let third = scenario.apply(&call(customer, "cdr-3", "20", Some("1"))).unwrap();
    assert_eq!(third.len(), 2);
}

#[test]
fn a_cdr_is_charged_once() {
    let (_, customer, mut scenario) = partner_book();
    scenario.apply(&call(customer, "cdr-1", "1", Some("0.5"))).unwrap();
    let before = scenario.state.clone();
    let decision = crate::decide(&scenario.state, &call(customer, "cdr-1", "99", Some("1")), &meta()).unwrap();
    assert!(matches!(decision, crate::Decision::Repeat { events: 1, .. }));
    assert_eq!(scenario.state, before);
}

#[test]
fn a_partners_customer_needs_the_wholesale_cost() {
    let (_, customer, scenario) = partner_book();
    scenario.then_error(&call(customer, "cdr-1", "1", None), "invalid_field");
}

#[test]
fn closed_accounts_accept_nothing_but_reversals() {
    let (partner, customer, mut scenario) = partner_book();
    let paid = scenario.apply(&pay(customer, "3")).unwrap();
    let close = Command::ChangeStatus { account: customer, status: AccountStatus::Closed, reason: None };
    scenario.apply(&close).unwrap();
    let scenario = scenario
        .then_error(&pay(customer, "1"), "account_closed")
        .then_error(&charge(customer, "1"), "account_closed")
        .then_error(&move_funds(partner, customer, "1"), "account_closed")
        .then_error(
            &Command::ChangeStatus { account: customer, status: AccountStatus::Active, reason: None },
            "invalid_status_change",
        );
    let reverse = Command::ReverseEntry { target: Box::new(paid[0].clone()), reason: Some("bounced".into()) };
    let scenario = scenario.then_payloads(
        &reverse,
        &[Payload::EntryReversed(EntryReversed {
            reversed_event: paid[0].envelope.event_id,
            reversed_version: paid[0].envelope.version,
            postings: vec![Posting { account: customer, category: Category::Payments, amount: amount("-3") }],
            reason: Some("bounced".into()),
        })],
    );
    assert_eq!(scenario.balance(customer), amount("0"));
    scenario.then_error(&reverse, "already_reversed");
}

#[test]
fn suspended_accounts_take_payments_and_charges_but_keep_their_funds() {
    let (partner, customer, mut scenario) = partner_book();
    scenario.apply(&move_funds(partner, customer, "5")).unwrap();
    scenario
        .apply(&Command::ChangeStatus { account: customer, status: AccountStatus::Suspended, reason: None })
        .unwrap();
    scenario.apply(&pay(customer, "1")).unwrap();
    scenario.apply(&charge(customer, "1")).unwrap();
    scenario.apply(&call(customer, "cdr-9", "1", Some("1"))).unwrap();
    scenario.apply(&move_funds(partner, customer, "1")).unwrap();
    scenario.then_error(&move_funds(customer, partner, "1"), "account_suspended");
}

#[test]
fn a_partner_with_open_customers_cannot_close() {
    let (partner, _, scenario) = partner_book();
    scenario.then_error(
        &Command::ChangeStatus { account: partner, status: AccountStatus::Closed, reason: None },
        "partner_has_open_customers",
    );
}

#[test]
fn account_numbers_are_unique_in_the_book_and_books_hold_their_own() {
    let (partner, _, scenario) = partner_book();
    scenario
        .then_error(&open_customer(AccountId::new(), Some(partner), "C-1", "0"), "duplicate_account_number")
        .then_error(&open_customer(AccountId::new(), Some(partner), "C 2", "0"), "invalid_field")
        .then_error(&open_customer(AccountId::new(), Some(partner), "C-3", "-1"), "invalid_credit_limit")
        .then_error(&open_customer(AccountId::new(), None, "C-4", "0"), "invalid_field")
        .then_error(&open_partner(AccountId::new(), "P-2", "0"), "invalid_field");
}

#[test]
fn adjustments_are_signed_and_reversals_move_back_in_the_same_category() {
    let (_, customer, mut scenario) = partner_book();
    let debit = Command::PostAdjustment { account: customer, amount: amount("2.5"), reason: None };
    let credit = Command::PostAdjustment { account: customer, amount: amount("-1"), reason: None };
    let debited = scenario.apply(&debit).unwrap();
    scenario.apply(&credit).unwrap();
    assert_eq!(scenario.balance(customer), amount("-1.5"));
    scenario.apply(&Command::ReverseEntry { target: Box::new(debited[0].clone()), reason: None }).unwrap();
    assert_eq!(scenario.balance(customer), amount("1"));
    let zero = Command::PostAdjustment { account: customer, amount: amount("0"), reason: None };
    scenario.then_error(&zero, "invalid_amount");
}

#[test]
fn reversals_name_an_event_of_this_book_that_moved_money() {
    let (partner, _, scenario) = partner_book();
    let opened = scenario.log[0].clone();
    let mut foreign = scenario.log[2].clone();
    foreign.envelope.book = BookId::OPERATOR;
    let mut unknown = scenario.log[2].clone();
    unknown.envelope.event_id = EventId::new();
    unknown.envelope.version = 99;
    scenario
        .then_error(&Command::ReverseEntry { target: Box::new(opened), reason: None }, "not_reversible")
        .then_error(&Command::ReverseEntry { target: Box::new(foreign), reason: None }, "event_not_found")
        .then_error(&Command::ReverseEntry { target: Box::new(unknown), reason: None }, "event_not_found");
    let _ = partner;
}

#[test]
fn idempotency_key_repeats_or_conflicts() {
    let (partner, _, mut scenario) = partner_book();
    let keyed = |digest: u8| crate::CommandMeta {
        idempotency: Some(Idempotency { key: "pay-1".into(), request_digest: [digest; 32] }),
        ..meta()
    };
    let first = scenario.apply_with(&pay(partner, "1"), &keyed(1)).unwrap();
    assert_eq!(first.len(), 1);
    let before = scenario.state.clone();
    let repeat = crate::decide(&scenario.state, &pay(partner, "1"), &keyed(1)).unwrap();
    assert_eq!(repeat, crate::Decision::Repeat { first_version: first[0].envelope.version, events: 1 });
    let reused = crate::decide(&scenario.state, &pay(partner, "2"), &keyed(2)).unwrap_err();
    assert_eq!(reused.code(), "idempotency_key_reused");
    assert_eq!(scenario.state, before);
}

#[test]
fn balance_alerts_fire_once_per_crossing_down() {
    let (partner, customer, mut scenario) = partner_book();
    let configure = Command::ConfigureAlerts {
        account: customer,
        balance_below: Some(amount("5")),
        call_cost_above: Some(amount("2")),
    };
    scenario.apply(&configure).unwrap();
    scenario.apply(&move_funds(partner, customer, "10")).unwrap();
    let alerts_of = |events: &[Event]| -> Vec<&'static str> {
        events
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::AlertRaised(a) => Some(a.alert.kind()),
                _ => None,
            })
            .collect()
    };
    // 10 -> 9: above the threshold, a cheap call: no alert.
    assert!(alerts_of(&scenario.apply(&call(customer, "a", "1", Some("0.5"))).unwrap()).is_empty());
    // 9 -> 4: down through 5, and the call cost 5 > 2.
    assert_eq!(
        alerts_of(&scenario.apply(&call(customer, "b", "5", Some("1"))).unwrap()),
        vec!["call_cost_above", "balance_below"]
    );
    // 4 -> 3: still below, no second balance alert.
    assert!(alerts_of(&scenario.apply(&call(customer, "c", "1", Some("0.5"))).unwrap()).is_empty());
    // Back up above (13), then down again (4): a second crossing.
    scenario.apply(&move_funds(partner, customer, "10")).unwrap();
    assert_eq!(alerts_of(&scenario.apply(&charge(customer, "9")).unwrap()), vec!["balance_below"]);
    // Turning alerts off stops them.
    let off = Command::ConfigureAlerts { account: customer, balance_below: None, call_cost_above: None };
    scenario.apply(&off).unwrap();
    scenario.apply(&move_funds(partner, customer, "10")).unwrap();
    assert!(alerts_of(&scenario.apply(&call(customer, "d", "9", Some("1"))).unwrap()).is_empty());
}

#[test]
fn ledger_time_never_goes_back_within_a_book() {
    let (partner, _, mut scenario) = partner_book();
    let later = crate::CommandMeta { recorded_at: Timestamp::from_seconds(1_800_000_000), ..meta() };
    let earlier = crate::CommandMeta { recorded_at: Timestamp::from_seconds(1_700_000_000), ..meta() };
    scenario.apply_with(&pay(partner, "1"), &later).unwrap();
    let stepped_back = scenario.apply_with(&pay(partner, "1"), &earlier).unwrap();
    assert_eq!(stepped_back[0].envelope.recorded_at, later.recorded_at);
}

/// The balance alerts `events` raised, by kind.
fn balance_alerts(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::AlertRaised(a) if !matches!(a.alert, Alert::CallCostAbove { .. }) => Some(a.alert.kind()),
            _ => None,
        })
        .collect()
}

#[test]
fn down_through_the_threshold_back_up_and_down_again_is_two_alerts() {
    let customer = AccountId::new();
    let mut scenario = given(BookId::OPERATOR, &[open_customer(customer, None, "C-1", "100"), pay(customer, "20")]);
    let configure =
        Command::ConfigureAlerts { account: customer, balance_below: Some(amount("10")), call_cost_above: None };
    scenario.apply(&configure).unwrap();
    let mut raised = Vec::new();
    // 20 -> 10: at the threshold is not below it.
    raised.extend(balance_alerts(&scenario.apply(&charge(customer, "10")).unwrap()));
    assert!(raised.is_empty(), "reaching the threshold is not crossing it");
    // 10 -> 9.99: down through it.
    raised.extend(balance_alerts(&scenario.apply(&call(customer, "a", "0.01", None)).unwrap()));
    // 9.99 -> 5: still below.
    raised.extend(balance_alerts(&scenario.apply(&charge(customer, "4.99")).unwrap()));
    // 5 -> 15: back up; 15 -> 2: down again.
    raised.extend(balance_alerts(&scenario.apply(&pay(customer, "10")).unwrap()));
    raised.extend(balance_alerts(&scenario.apply(&call(customer, "b", "13", None)).unwrap()));
    assert_eq!(raised, vec!["balance_below", "balance_below"]);
    let alert = scenario.log.iter().rev().find_map(|e| match &e.payload {
        Payload::AlertRaised(a) => Some(a.clone()),
        _ => None,
    });
    assert_eq!(
        alert,
        Some(AlertRaised {
            account: customer,
            alert: Alert::BalanceBelow { threshold: amount("10") },
            balance: amount("2"),
            credit_limit: amount("100"),
        }),
        "the alert carries the balance right after the crossing"
    );
}

mod crossing_properties {
    use proptest::prelude::*;

    use super::*;
    use crate::money::Amount;

    fn of_cents(cents: i64) -> Amount {
        Amount(rust_decimal::Decimal::new(cents, 2))
    }

    proptest! {
        /// Whatever the walk of payments, charges and calls, an account gets exactly one
        /// balance alert per step from at or above the threshold to below it, and one
        /// credit-limit alert per step from within the limit to beyond it.
        #[test]
        fn one_alert_per_crossing(
            threshold_cents in -2_000i64..2_000,
            steps in proptest::collection::vec((-3_000i64..3_000, 0u8..3), 1..60),
        ) {
            let customer = AccountId::new();
            let mut scenario = given(BookId::OPERATOR, &[open_customer(customer, None, "C-1", "50")]);
            let threshold = of_cents(threshold_cents);
            let configure =
                Command::ConfigureAlerts { account: customer, balance_below: Some(threshold), call_cost_above: None };
            scenario.apply(&configure).unwrap();
            let limit = amount("-50");
            let (mut expected_below, mut expected_limit, mut raised) = (0, 0, Vec::new());
            for (index, (cents, how)) in steps.into_iter().enumerate() {
                if cents == 0 {
                    continue;
                }
                let step = of_cents(cents.abs());
                let before = scenario.balance(customer);
                let command = match (cents > 0, how) {
                    (true, _) => pay(customer, &step.to_string()),
                    // A manual charge may not pass the credit limit; a call always goes through.
                    (false, 0) if before - step >= limit => charge(customer, &step.to_string()),
                    (false, _) => call(customer, &format!("cdr-{index}"), &step.to_string(), None),
                };
                let events = scenario.apply(&command).unwrap();
                let after = scenario.balance(customer);
                expected_below += usize::from(before >= threshold && after < threshold);
                expected_limit += usize::from(before >= limit && after < limit);
                raised.extend(balance_alerts(&events));
            }
            prop_assert_eq!(raised.iter().filter(|k| **k == "balance_below").count(), expected_below);
            prop_assert_eq!(raised.iter().filter(|k| **k == "credit_limit_reached").count(), expected_limit);
        }
    }
}

/// At most 5 decimal places as written, trailing zeros included, for every amount a
/// command carries: `1.0000000000000000000000000000` once went through (its normalised
/// scale is 0) and balances then printed with 28 places.
#[test]
fn amounts_with_more_than_five_places_are_refused_even_when_they_are_zeros() {
    let (partner, customer, scenario) = partner_book();
    let padded = "1.0000000000000000000000000000";
    scenario
        .then_error(&pay(customer, padded), "invalid_amount")
        .then_error(&pay(customer, "1.000000"), "invalid_amount")
        .then_error(&charge(customer, "1.000000"), "invalid_amount")
        .then_error(&move_funds(partner, customer, padded), "invalid_amount")
        .then_error(
            &Command::PostAdjustment { account: customer, amount: amount(padded), reason: None },
            "invalid_amount",
        )
        .then_payloads(
            &pay(customer, "1.00000"),
            &[Payload::PaymentReceived(PaymentReceived {
                account: customer,
                amount: amount("1.00000"),
                method: None,
                reference: None,
            })],
        );
}

/// A tariff's prices keep their own limit (the rounding's 8 places), counted the same
/// way whatever format the tariff came in.
#[test]
fn tariff_prices_have_at_most_eight_places_as_written() {
    use crate::money::Currency;
    use crate::rating::{Rate, Rounding, RoundingMode, Tariff};
    let tariff = |price: &str| Tariff {
        id: crate::ids::TariffId::new(),
        name: "Retail".into(),
        currency: Currency::parse("EUR").unwrap(),
        effective_from: Timestamp::from_seconds(1_767_225_600),
        rounding: Rounding { decimals: 4, mode: RoundingMode::Up },
        rates: vec![Rate {
            prefix: "49".into(),
            price_per_minute: amount(price),
            connect_fee: amount("0"),
            minimum_seconds: 0,
            first_increment_seconds: 60,
            next_increment_seconds: 60,
        }],
    };
    let mut scenario = given(BookId::OPERATOR, &[]);
    let error = scenario.apply(&Command::PublishTariff(Box::new(tariff("0.010000000")))).unwrap_err();
    assert_eq!((error.code(), error.field()), ("invalid_field", Some("rates.price_per_minute")), "{error}");
    assert!(scenario.apply(&Command::PublishTariff(Box::new(tariff("0.01000000")))).is_ok());
}

#[test]
fn switch_identifiers_replace_each_other_and_name_one_account_in_the_book() {
    use crate::switch::{IdentifierKind, SwitchIdentifier};
    let (partner, customer, scenario) = partner_book();
    let other = AccountId::new();
    let mut scenario = scenario;
    scenario.apply(&open_customer(other, Some(partner), "C-2", "0")).unwrap();
    let set = |account: AccountId, values: &[(IdentifierKind, &str)]| Command::SetSwitchIdentifiers {
        account,
        identifiers: values.iter().map(|(kind, value)| SwitchIdentifier::new(*kind, *value)).collect(),
    };
    let code = SwitchIdentifier::new(IdentifierKind::AccountCode, "1001");
    let trunk = SwitchIdentifier::new(IdentifierKind::Trunk, "gw1");
    let scenario = scenario
        .then_payloads(
            &set(customer, &[(IdentifierKind::Trunk, "gw1"), (IdentifierKind::AccountCode, " 1001 ")]),
            &[Payload::SwitchIdentifiersSet(SwitchIdentifiersSet {
                account: customer,
                identifiers: vec![code.clone(), trunk.clone()],
            })],
        )
        // The same set again changes nothing.
        .then_payloads(&set(customer, &[(IdentifierKind::AccountCode, "1001"), (IdentifierKind::Trunk, "gw1")]), &[])
        .then_error(&set(other, &[(IdentifierKind::AccountCode, "1001")]), "switch_identifier_taken")
        .then_error(&set(partner, &[(IdentifierKind::Trunk, "p")]), "not_a_customer")
        // Given up by one account, an identifier may go to another.
        .then_payloads(
            &set(customer, &[(IdentifierKind::Trunk, "gw1")]),
            &[Payload::SwitchIdentifiersSet(SwitchIdentifiersSet {
                account: customer,
                identifiers: vec![trunk.clone()],
            })],
        )
        .then_payloads(
            &set(other, &[(IdentifierKind::AccountCode, "1001")]),
            &[Payload::SwitchIdentifiersSet(SwitchIdentifiersSet { account: other, identifiers: vec![code.clone()] })],
        );
    assert_eq!(scenario.state.switch_identifiers.get(&code), Some(&other));
    assert_eq!(scenario.state.switch_identifiers.get(&trunk), Some(&customer));
}

/// Issue 19: refusals named accounts by their internal id, which means nothing to the
/// people reading them; they name them by number.
#[test]
fn refusals_name_accounts_by_their_number() {
    let (partner, customer, mut scenario) = partner_book();
    let other_customer = AccountId::new();
    scenario.apply(&open_customer(other_customer, Some(partner), "C-2", "0")).unwrap();
    let status = |account, status| Command::ChangeStatus { account, status, reason: None };
    let refusals = [
        (move_funds(customer, partner, "100"), "account C-1 has 10.00 available, 100.00 requested"),
        (move_funds(partner, partner, "1"), "account P-1 is not a customer of partner P-1"),
        (move_funds(customer, other_customer, "1"), "account C-2 is not a partner"),
        (status(partner, AccountStatus::Closed), "partner P-1 still has customers that are not closed"),
    ];
    for (command, message) in refusals {
        assert_eq!(scenario.apply(&command).unwrap_err().to_string(), message);
    }
    scenario.apply(&status(customer, AccountStatus::Suspended)).unwrap();
    let refusal = scenario.apply(&move_funds(customer, partner, "1")).unwrap_err();
    assert_eq!(refusal.to_string(), "account C-1 is suspended");
    scenario.apply(&status(other_customer, AccountStatus::Closed)).unwrap();
    let refusal = scenario.apply(&pay(other_customer, "1")).unwrap_err();
    assert_eq!(refusal.to_string(), "account C-2 is closed");
}
