//! Recurring charges' rules, given/when/then.

use crate::billing::{BillingPeriod, Plan, fee_key};
use crate::command::{Command, CommandMeta, PublishPlan, WholesalePlan};
use crate::event::*;
use crate::ids::{AccountId, BookId, PlanId, SubscriptionId};
use crate::money::Currency;
use crate::testing::*;
use crate::time::Timestamp;

fn at(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn plan(id: PlanId, price: &str) -> Plan {
    Plan {
        id,
        name: "Line rental".into(),
        price: amount(price),
        currency: eur(),
        period: BillingPeriod::Monthly,
        wholesale: None,
    }
}

fn publish(plan: Plan, wholesale: Option<WholesalePlan>) -> Command {
    Command::PublishPlan(Box::new(PublishPlan { plan, wholesale }))
}

fn subscribe(subscription: SubscriptionId, account: AccountId, plan: PlanId, starts_at: &str) -> Command {
    Command::StartSubscription { subscription, account, plan, starts_at: at(starts_at), ends_at: None }
}

fn charge_fee(subscription: SubscriptionId, account: AccountId, period_start: &str) -> Command {
    Command::ChargeFee { subscription, account, period_start: at(period_start) }
}

/// The meta the scheduler sends a fee with: its key, dated at `occurred_at`, at `now`.
fn fee_meta(subscription: SubscriptionId, period_start: &str, occurred_at: &str, now: &str) -> CommandMeta {
    let key = fee_key(subscription, at(period_start));
    CommandMeta {
        occurred_at: at(occurred_at),
        recorded_at: at(now),
        actor: "system:billing".into(),
        idempotency: Some(Idempotency { key, request_digest: [1; 32] }),
    }
}

fn operator_customer(credit_limit: &str) -> (AccountId, PlanId, SubscriptionId, Given) {
    let (customer, plan_id, subscription) = (AccountId::new(), PlanId::new(), SubscriptionId::new());
    let scenario = given(
        BookId::OPERATOR,
        &[
            open_customer(customer, None, "C-1", credit_limit),
            publish(plan(plan_id, "30"), None),
            subscribe(subscription, customer, plan_id, "2026-04-16"),
        ],
    );
    (customer, plan_id, subscription, scenario)
}

#[test]
fn a_fee_is_charged_once_per_period_pro_rated_and_dated_at_what_it_covers() {
    let (customer, _, subscription, mut scenario) = operator_customer("100");
    let when = charge_fee(subscription, customer, "2026-04-01");
    let first = fee_meta(subscription, "2026-04-01", "2026-04-16", "2026-05-03");
    let events = scenario.apply_with(&when, &first).unwrap();
    // 15 of April's 30 days.
    assert!(matches!(&events[..], [Event { payload: Payload::ChargePosted(c), envelope }]
        if c.amount == amount("15.00") && envelope.occurred_at == at("2026-04-16")));
    assert_eq!(scenario.balance(customer), amount("-15.00"));
    // However often it is sent again, nothing more is charged.
    for _ in 0..3 {
        assert!(scenario.apply_with(&when, &first).unwrap().is_empty());
    }
    assert_eq!(scenario.balance(customer), amount("-15.00"));
    assert_eq!(scenario.state.fees_settled_until[&subscription], at("2026-05-01"));
    let may = fee_meta(subscription, "2026-05-01", "2026-05-01", "2026-05-03");
    scenario.apply_with(&charge_fee(subscription, customer, "2026-05-01"), &may).unwrap();
    assert_eq!(scenario.balance(customer), amount("-45.00"));
}

#[test]
fn a_fee_is_refused_when_not_due_misdated_or_under_another_key() {
    let (customer, _, subscription, mut scenario) = operator_customer("100");
    let when = charge_fee(subscription, customer, "2026-05-01");
    let before = scenario.state.clone();
    let early = fee_meta(subscription, "2026-05-01", "2026-05-01", "2026-04-30T23:59:59Z");
    assert_eq!(scenario.apply_with(&when, &early).unwrap_err().code(), "invalid_field");
    let misdated = fee_meta(subscription, "2026-05-01", "2026-05-02", "2026-05-03");
    assert_eq!(scenario.apply_with(&when, &misdated).unwrap_err().field(), Some("occurred_at"));
    let other_key =
        CommandMeta { idempotency: None, ..fee_meta(subscription, "2026-05-01", "2026-05-01", "2026-05-03") };
    assert_eq!(scenario.apply_with(&when, &other_key).unwrap_err().field(), Some("idempotency_key"));
    let before_start = fee_meta(subscription, "2026-03-01", "2026-03-01", "2026-05-03");
    let owed_nothing = scenario.apply_with(&charge_fee(subscription, customer, "2026-03-01"), &before_start);
    assert_eq!(owed_nothing.unwrap_err().field(), Some("period_start"));
    // A fee's key cannot be taken by another request, which would stand in for the fee.
    let squatter = fee_meta(subscription, "2026-05-01", "2026-05-01", "2026-05-03");
    let payment = Command::ReceivePayment { account: customer, amount: amount("1"), method: None, reference: None };
    assert_eq!(scenario.apply_with(&payment, &squatter).unwrap_err().field(), Some("idempotency_key"));
    assert_eq!(scenario.state, before);
}

#[test]
fn a_fee_past_the_credit_limit_is_an_alert_on_the_record_once() {
    let (customer, plan_id, subscription, mut scenario) = operator_customer("10");
    let when = charge_fee(subscription, customer, "2026-05-01");
    let meta = fee_meta(subscription, "2026-05-01", "2026-05-01", "2026-05-01");
    let events = scenario.apply_with(&when, &meta).unwrap();
    let payloads: Vec<Payload> = events.into_iter().map(|e| e.payload).collect();
    assert_eq!(
        payloads,
        vec![Payload::AlertRaised(AlertRaised {
            account: customer,
            alert: Alert::FeeRefused {
                subscription,
                plan: plan_id,
                period_start: at("2026-05-01"),
                amount: amount("30"),
                reason: "insufficient_funds".into(),
            },
            balance: amount("0"),
            credit_limit: amount("10"),
        })]
    );
    assert_eq!(scenario.balance(customer), amount("0"));
    assert!(scenario.apply_with(&when, &meta).unwrap().is_empty(), "the refusal settles the period");
    assert_eq!(scenario.state.fees_settled_until[&subscription], at("2026-06-01"));
}

#[test]
fn a_partners_customer_pays_the_partner_and_the_partner_pays_the_operator_plan() {
    let (partner, customer) = (AccountId::new(), AccountId::new());
    let (operator_plan, partner_plan, subscription) = (PlanId::new(), PlanId::new(), SubscriptionId::new());
    let wholesale = WholesalePlan {
        id: operator_plan,
        book: BookId::OPERATOR,
        currency: eur(),
        period: BillingPeriod::Monthly,
        price: amount("12"),
    };
    let mut scenario = given(
        BookId::of_partner(partner),
        &[open_partner(partner, "P-1", "20"), open_customer(customer, Some(partner), "C-1", "100")],
    );
    scenario = scenario.then_error(&publish(plan(partner_plan, "30"), None), "invalid_field");
    let weekly = WholesalePlan { period: BillingPeriod::Weekly, ..wholesale };
    scenario = scenario.then_error(&publish(plan(partner_plan, "30"), Some(weekly)), "invalid_field");
    scenario.apply(&publish(plan(partner_plan, "30"), Some(wholesale))).unwrap();
    assert_eq!(scenario.state.plans[&partner_plan].wholesale.as_ref().map(|w| w.price), Some(amount("12")));
    scenario.apply(&subscribe(subscription, customer, partner_plan, "2026-05-01")).unwrap();
    scenario
        .apply_with(
            &charge_fee(subscription, customer, "2026-05-01"),
            &fee_meta(subscription, "2026-05-01", "2026-05-01", "2026-05-01"),
        )
        .unwrap();
    assert_eq!((scenario.balance(customer), scenario.balance(partner)), (amount("-30"), amount("-12")));
    // The partner cannot pay its share (8 available, 12 due): the customer's fee is
    // refused too, with the alert on the partner.
    let refused = scenario
        .apply_with(
            &charge_fee(subscription, customer, "2026-06-01"),
            &fee_meta(subscription, "2026-06-01", "2026-06-01", "2026-06-01"),
        )
        .unwrap();
    assert!(matches!(&refused[..], [Event { payload: Payload::AlertRaised(a), .. }] if a.account == partner));
    assert_eq!((scenario.balance(customer), scenario.balance(partner)), (amount("-30"), amount("-12")));
}

#[test]
fn an_operator_plan_is_not_sold_in_a_partners_book_and_names_no_wholesale() {
    let (customer, other_plan) = (AccountId::new(), PlanId::new());
    let wholesale = WholesalePlan {
        id: PlanId::new(),
        book: BookId::OPERATOR,
        currency: eur(),
        period: BillingPeriod::Monthly,
        price: amount("1"),
    };
    given(BookId::OPERATOR, &[open_customer(customer, None, "C-1", "0")])
        .then_error(&publish(plan(PlanId::new(), "1"), Some(wholesale)), "invalid_field")
        .then_error(&publish(plan(PlanId::new(), "0"), None), "invalid_field")
        .then_error(&subscribe(SubscriptionId::new(), customer, other_plan, "2026-01-01"), "plan_not_found");
}

#[test]
fn a_subscription_ends_only_after_what_was_charged() {
    let (customer, _, subscription, mut scenario) = operator_customer("100");
    scenario
        .apply_with(
            &charge_fee(subscription, customer, "2026-04-01"),
            &fee_meta(subscription, "2026-04-01", "2026-04-16", "2026-04-16"),
        )
        .unwrap();
    let end = |ends_at: &str| Command::EndSubscription { subscription, account: customer, ends_at: at(ends_at) };
    scenario = scenario.then_error(&end("2026-04-20"), "period_already_charged");
    scenario = scenario.then_error(&end("2026-04-16"), "invalid_field");
    scenario.apply(&end("2026-05-10")).unwrap();
    scenario = scenario.then_error(&end("2026-05-20"), "invalid_field");
    let other =
        Command::EndSubscription { subscription: SubscriptionId::new(), account: customer, ends_at: at("2026-06-01") };
    scenario.then_error(&other, "subscription_not_found");
}
