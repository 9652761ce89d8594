//! Recurring charges: plans, subscriptions, and the rule that says which periods a
//! subscription owes and what each costs. Pure: the scheduler (commands) asks these
//! functions what is due and submits it; the decider charges it.
//!
//! Periods are calendar periods in UTC: a day from midnight, a week from Monday
//! midnight, a month from the first's midnight. A period's fee is charged at the start of
//! the part of the period the subscription covers. A period only partly covered (the
//! subscription starts or ends inside it) costs the price times the covered share of the
//! period, measured in microseconds, rounded to the currency's minor unit, half away from
//! zero. docs/billing-cycle.md says the same for people.

use chrono::{Datelike, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::ids::{PlanId, SubscriptionId};
use crate::money::{Amount, Currency};
use crate::time::{MICROS_PER_DAY, Timestamp};

/// How often a plan charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingPeriod {
    Daily,
    Weekly,
    Monthly,
}

impl BillingPeriod {
    pub const ALL: [BillingPeriod; 3] = [BillingPeriod::Daily, BillingPeriod::Weekly, BillingPeriod::Monthly];

    pub fn as_str(&self) -> &'static str {
        match self {
            BillingPeriod::Daily => "daily",
            BillingPeriod::Weekly => "weekly",
            BillingPeriod::Monthly => "monthly",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        BillingPeriod::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// The start of the period that holds `at`.
    pub fn floor(&self, at: Timestamp) -> Timestamp {
        let day = at.day();
        match self {
            BillingPeriod::Daily => Timestamp::from_micros(day * MICROS_PER_DAY),
            // 1970-01-01 was a Thursday: three days after a Monday.
            BillingPeriod::Weekly => Timestamp::from_micros((day - (day + 3).rem_euclid(7)) * MICROS_PER_DAY),
            BillingPeriod::Monthly => {
                let date = date_of(day);
                midnight(NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("the first of a month"))
            }
        }
    }

    /// The start of the period after the one that starts at `start` (a period start).
    pub fn next(&self, start: Timestamp) -> Timestamp {
        match self {
            BillingPeriod::Daily => Timestamp::from_micros(start.micros() + MICROS_PER_DAY),
            BillingPeriod::Weekly => Timestamp::from_micros(start.micros() + 7 * MICROS_PER_DAY),
            BillingPeriod::Monthly => {
                let date = date_of(start.day());
                let (year, month) =
                    if date.month() == 12 { (date.year() + 1, 1) } else { (date.year(), date.month() + 1) };
                midnight(NaiveDate::from_ymd_opt(year, month, 1).expect("the first of a month"))
            }
        }
    }

    pub fn is_start(&self, at: Timestamp) -> bool {
        self.floor(at) == at
    }
}

fn date_of(day: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch") + chrono::TimeDelta::days(day)
}

fn midnight(date: NaiveDate) -> Timestamp {
    Timestamp::from_micros(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_micros())
}

/// What a partner pays the operator for each subscription to one of its plans: the
/// price of an operator plan, copied when the partner's plan is published (plans never
/// change, so the copy never goes stale).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholesalePrice {
    pub plan: PlanId,
    pub price: Amount,
}

/// A recurring fee an account may subscribe to. Published once and never changed: a new
/// price is a new plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    pub price: Amount,
    pub currency: Currency,
    pub period: BillingPeriod,
    /// For a partner's plan: what the partner pays the operator per subscription.
    pub wholesale: Option<WholesalePrice>,
}

/// A subscription as the book knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub account: crate::ids::AccountId,
    pub plan: PlanId,
    pub starts_at: Timestamp,
    /// Exclusive: the subscription covers `[starts_at, ends_at)`.
    pub ends_at: Option<Timestamp>,
}

/// One period's fee of one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fee {
    /// The calendar period's start: with the subscription, the fee's identity.
    pub period_start: Timestamp,
    /// The part of the period the subscription covers, `[covers_from, covers_to)`; the
    /// charge is dated at `covers_from`.
    pub covers_from: Timestamp,
    pub covers_to: Timestamp,
    pub amount: Amount,
    /// The partner's share for the operator, pro-rated alike.
    pub wholesale: Option<Amount>,
}

/// The fee `subscription` owes for the period starting at `period_start`, or none when
/// the subscription does not cover any of that period (or it is not a period start).
pub fn fee(plan: &Plan, subscription: &Subscription, period_start: Timestamp) -> Option<Fee> {
    if !plan.period.is_start(period_start) {
        return None;
    }
    let period_end = plan.period.next(period_start);
    let covers_from = period_start.max(subscription.starts_at);
    let covers_to = subscription.ends_at.map_or(period_end, |end| end.min(period_end));
    if covers_from >= covers_to {
        return None;
    }
    let share = |price: Amount| {
        if covers_from == period_start && covers_to == period_end {
            return price;
        }
        let covered = Decimal::from(covers_to.micros() - covers_from.micros());
        let whole = Decimal::from(period_end.micros() - period_start.micros());
        Amount(
            (price.0 * covered / whole)
                .round_dp_with_strategy(plan.currency.minor_unit_places(), RoundingStrategy::MidpointAwayFromZero),
        )
    };
    Some(Fee {
        period_start,
        covers_from,
        covers_to,
        amount: share(plan.price),
        wholesale: plan.wholesale.as_ref().map(|w| share(w.price)),
    })
}

/// The first period a subscription owes.
pub fn first_period(plan: &Plan, subscription: &Subscription) -> Timestamp {
    plan.period.floor(subscription.starts_at)
}

/// The starts of the periods `subscription` owes from `from` (a period start: the first
/// not yet charged) whose fee is due by `now` (due when its covered part begins), in
/// order, at most `limit` of them.
pub fn due_periods(
    plan: &Plan,
    subscription: &Subscription,
    from: Timestamp,
    now: Timestamp,
    limit: usize,
) -> Vec<Timestamp> {
    let mut due = Vec::new();
    let mut start = from.max(first_period(plan, subscription));
    while due.len() < limit {
        if subscription.ends_at.is_some_and(|end| start >= end) || start.max(subscription.starts_at) > now {
            break;
        }
        due.push(start);
        start = plan.period.next(start);
    }
    due
}

/// The reserved idempotency keys of fees start with this: no client request may use one.
pub const FEE_KEY_PREFIX: &str = "fee:";

/// The idempotency key of a subscription's fee for one period: the (subscription,
/// period) identity of the charge inside its book, so the writer's repeat detection
/// charges it once whatever is resubmitted.
pub fn fee_key(subscription: SubscriptionId, period_start: Timestamp) -> String {
    format!("{FEE_KEY_PREFIX}{subscription}:{}", period_start.micros())
}

/// The subscription and period a fee key names.
pub fn parse_fee_key(key: &str) -> Option<(SubscriptionId, Timestamp)> {
    let (subscription, start) = key.strip_prefix(FEE_KEY_PREFIX)?.split_once(':')?;
    Some((SubscriptionId::parse(subscription)?, Timestamp::from_micros(start.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccountId;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn plan(period: BillingPeriod, price: &str) -> Plan {
        Plan {
            id: PlanId::new(),
            name: "line".into(),
            price: price.parse().unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            period,
            wholesale: None,
        }
    }

    fn subscription(starts_at: &str, ends_at: Option<&str>) -> Subscription {
        Subscription {
            id: SubscriptionId::new(),
            account: AccountId::new(),
            plan: PlanId::new(),
            starts_at: at(starts_at),
            ends_at: ends_at.map(at),
        }
    }

    #[test]
    fn periods_are_calendar_periods_in_utc() {
        let t = at("2026-03-18T15:30:00Z"); // a Wednesday
        assert_eq!(BillingPeriod::Daily.floor(t), at("2026-03-18"));
        assert_eq!(BillingPeriod::Weekly.floor(t), at("2026-03-16"));
        assert_eq!(BillingPeriod::Monthly.floor(t), at("2026-03-01"));
        assert_eq!(BillingPeriod::Weekly.floor(at("2026-03-16")), at("2026-03-16"), "a Monday is its week's start");
        assert_eq!(BillingPeriod::Monthly.next(at("2026-12-01")), at("2027-01-01"));
        assert_eq!(BillingPeriod::Monthly.next(at("2028-02-01")), at("2028-03-01"));
        assert_eq!(BillingPeriod::Weekly.floor(at("1969-12-31")), at("1969-12-29"), "before the epoch too");
        assert!(!BillingPeriod::Monthly.is_start(at("2026-03-02")));
    }

    #[test]
    fn a_partial_period_costs_its_share_rounded_half_away_from_zero() {
        let monthly = plan(BillingPeriod::Monthly, "10");
        // 16 of April's 30 days, 10 * 16 / 30 = 5.3333…
        let sub = subscription("2026-04-15", Some("2026-06-10"));
        let first = fee(&monthly, &sub, at("2026-04-01")).unwrap();
        assert_eq!((first.covers_from, first.amount), (at("2026-04-15"), "5.33".parse().unwrap()));
        assert_eq!(fee(&monthly, &sub, at("2026-05-01")).unwrap().amount, "10".parse().unwrap());
        // 9 of June's 30 days: 3.00.
        let last = fee(&monthly, &sub, at("2026-06-01")).unwrap();
        assert_eq!((last.covers_to, last.amount), (at("2026-06-10"), "3.00".parse().unwrap()));
        assert_eq!(fee(&monthly, &sub, at("2026-07-01")), None, "past the end");
        assert_eq!(fee(&monthly, &sub, at("2026-03-01")), None, "before the start");
        assert_eq!(fee(&monthly, &sub, at("2026-05-02")), None, "not a period start");
        // Half a day of a 1.01 daily plan: 0.505 rounds away from zero to 0.51.
        let daily = plan(BillingPeriod::Daily, "1.01");
        let half = subscription("2026-04-15T12:00:00Z", None);
        assert_eq!(fee(&daily, &half, at("2026-04-15")).unwrap().amount, "0.51".parse().unwrap());
    }

    #[test]
    fn due_periods_start_with_the_first_uncharged_and_stop_at_now_and_the_end() {
        let weekly = plan(BillingPeriod::Weekly, "7");
        let sub = subscription("2026-03-18T10:00:00Z", Some("2026-04-08"));
        let first = first_period(&weekly, &sub);
        assert_eq!(first, at("2026-03-16"));
        assert!(due_periods(&weekly, &sub, first, at("2026-03-18T09:59:59Z"), 10).is_empty(), "not begun yet");
        assert_eq!(due_periods(&weekly, &sub, first, at("2026-03-18T10:00:00Z"), 10), vec![first]);
        let all = due_periods(&weekly, &sub, first, at("2030-01-01"), 10);
        assert_eq!(all, vec![at("2026-03-16"), at("2026-03-23"), at("2026-03-30"), at("2026-04-06")]);
        assert_eq!(due_periods(&weekly, &sub, at("2026-03-30"), at("2030-01-01"), 1), vec![at("2026-03-30")]);
    }

    #[test]
    fn fee_keys_round_trip() {
        let id = SubscriptionId::new();
        let key = fee_key(id, at("2026-03-01"));
        assert!(key.starts_with(FEE_KEY_PREFIX));
        assert_eq!(parse_fee_key(&key), Some((id, at("2026-03-01"))));
        assert_eq!(parse_fee_key("fee:nonsense"), None);
        crate::ids::validate_identifier("idempotency_key", &key).unwrap();
    }
}
