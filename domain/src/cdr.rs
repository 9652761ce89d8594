//! Call detail records as switches and carriers hand them over, and how one becomes a
//! call charge: validation of the record, then rating with the tariffs in force when
//! the call started. Every input format (JSON, CSV, the import command) reads a record
//! field by field through [`CdrInput::from_fields`], so a bad field gets the same error
//! whatever the format.

use crate::command::ChargeCall;
use crate::error::DomainError;
use crate::hangup::{CauseFlag, read_cause};
use crate::ids::{AccountLabel, TariffId, validate_identifier, validate_text};
use crate::money::{Amount, Currency};
use crate::rating::{CallDirection, RatedCdr, Tariff};
use crate::rating_engine::CompiledTariff;
use crate::time::Timestamp;

/// Longest call a CDR may describe: a record claiming more is a broken clock, not a call.
pub const CALL_SECONDS_MAX: i64 = 7 * 24 * 3600;
/// Decimals a pre-rated cost may carry (carriers rate to sub-cent precision).
pub const COST_SCALE_MAX: u32 = 8;

/// The fields of a CDR, in the order the CSV format lists them. `account` is the
/// account's number; times are RFC 3339.
pub const CDR_FIELDS: [&str; 12] = [
    "id",
    "account",
    "caller",
    "callee",
    "start",
    "answer",
    "end",
    "billable_seconds",
    "hangup_cause",
    "direction",
    "cost",
    "partner_cost",
];

/// A CDR before rating, validated.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CdrInput {
    pub id: String,
    /// The number of the account the call is charged to.
    pub account: String,
    pub caller: String,
    pub callee: String,
    pub start: Timestamp,
    pub answer: Option<Timestamp>,
    pub end: Timestamp,
    /// What the switch billed, or `end - answer` in whole seconds when it did not say.
    pub billable_seconds: u32,
    /// Q.850 release cause.
    pub hangup_cause: u16,
    pub direction: CallDirection,
    /// A cost the switch already computed; when present the customer's tariff is not used.
    pub cost: Option<Amount>,
    /// The partner's wholesale cost, already computed.
    pub partner_cost: Option<Amount>,
    /// The cause as the switch wrote it, when it was not a bare Q.850 number.
    pub hangup_cause_raw: Option<String>,
    /// Set when the cause was missing or unknown; the call is billed all the same.
    pub hangup_cause_flag: Option<CauseFlag>,
}

impl CdrInput {
    /// Reads a CDR from named text fields (a CSV row, a form, JSON scalars). An empty
    /// field counts as absent.
    pub fn from_fields<'a>(field: impl Fn(&str) -> Option<&'a str>) -> Result<CdrInput, DomainError> {
        let get = |name: &str| field(name).map(str::trim).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or_else(|| invalid(name, "is required".into()));
        let time = |name: &'static str, text: &str| {
            Timestamp::parse(text).ok_or_else(|| invalid(name, format!("`{}` is not an RFC 3339 time", shown(text))))
        };
        let cost = |name: &'static str| {
            get(name)
                .map(|text| {
                    let amount = Amount::parse_input(text, COST_SCALE_MAX)
                        .map_err(|e| invalid(name, format!("`{}`: {e}", shown(text))))?;
                    if amount.is_negative() {
                        return Err(invalid(name, "must not be negative".into()));
                    }
                    Ok(amount)
                })
                .transpose()
        };
        let id = required("id")?.to_owned();
        validate_identifier("id", &id)?;
        let account = required("account")?.to_owned();
        validate_identifier("account", &account)?;
        let caller = get("caller").unwrap_or_default().to_owned();
        validate_text("caller", &caller)?;
        let callee = required("callee")?.to_owned();
        validate_text("callee", &callee)?;
        let start = time("start", required("start")?)?;
        let answer = get("answer").map(|t| time("answer", t)).transpose()?;
        let end = time("end", required("end")?)?;
        if end < start {
            return Err(invalid("end", "is before `start`".into()));
        }
        if (end.micros() - start.micros()) / 1_000_000 > CALL_SECONDS_MAX {
            return Err(invalid("end", format!("the call lasts more than {CALL_SECONDS_MAX} seconds")));
        }
        if let Some(answer) = answer
            && (answer < start || answer > end)
        {
            return Err(invalid("answer", "must be between `start` and `end`".into()));
        }
        let talk_seconds = answer.map_or(0, |a| (end.micros() - a.micros()) / 1_000_000);
        let billable_seconds = match get("billable_seconds") {
            None => talk_seconds as u32,
            Some(text) => {
                let seconds: u32 = text.parse().map_err(|_| {
                    invalid("billable_seconds", format!("`{}` is not a whole number of seconds", shown(text)))
                })?;
                if answer.is_none() && seconds > 0 {
                    return Err(invalid("billable_seconds", "a call with no `answer` has no billable seconds".into()));
                }
                // A second of slack: switches round the talk time their own way.
                if i64::from(seconds) > talk_seconds + 1 {
                    return Err(invalid(
                        "billable_seconds",
                        format!("{seconds} seconds is longer than the {talk_seconds} seconds from `answer` to `end`"),
                    ));
                }
                seconds
            }
        };
        // Never a reason to refuse a call: a missing cause reads as 16, an unknown one
        // as 0, both flagged, and the call is billed by its billable seconds.
        let cause = read_cause(get("hangup_cause"))?;
        let direction = match get("direction") {
            None => CallDirection::Outbound,
            Some(text) if text.eq_ignore_ascii_case("outbound") => CallDirection::Outbound,
            Some(text) if text.eq_ignore_ascii_case("inbound") => CallDirection::Inbound,
            Some(text) => {
                return Err(invalid("direction", format!("`{}` is neither `outbound` nor `inbound`", shown(text))));
            }
        };
        Ok(CdrInput {
            id,
            account,
            caller,
            callee,
            start,
            answer,
            end,
            billable_seconds,
            hangup_cause: cause.code,
            direction,
            cost: cost("cost")?,
            partner_cost: cost("partner_cost")?,
            hangup_cause_raw: cause.raw,
            hangup_cause_flag: cause.flag,
        })
    }

    /// Whether the call was answered and lasted: only those are charged.
    pub fn charged(&self) -> bool {
        self.answer.is_some() && self.billable_seconds > 0
    }
}

/// A tariff version as rating uses it: its terms and its compiled prefix table.
#[derive(Clone, Debug)]
pub struct TariffVersion {
    pub tariff: Tariff,
    pub compiled: CompiledTariff,
}

impl TariffVersion {
    pub fn new(tariff: Tariff) -> Result<Self, DomainError> {
        let compiled = CompiledTariff::compile(&tariff)?;
        Ok(TariffVersion { tariff, compiled })
    }
}

/// The account a call is charged to, as rating needs it: its currency, and the tariff
/// version in force when the call started (none if no tariff is assigned or none was in
/// force yet).
pub struct RatingParty<'a> {
    pub account: AccountLabel,
    pub currency: Currency,
    pub tariff: Option<&'a TariffVersion>,
}

/// Turns a validated CDR into the charge of `customer` (and of its partner's wholesale
/// cost, when it has one). A call that was not answered, or lasted no billable second,
/// costs nothing and is still kept. A pre-rated cost wins over the tariff.
pub fn rate_call(
    cdr: &CdrInput,
    customer: &RatingParty<'_>,
    partner: Option<&RatingParty<'_>>,
) -> Result<ChargeCall, DomainError> {
    let charged = cdr.charged();
    let rate = |party: &RatingParty<'_>, role: &'static str| -> Result<(Amount, Option<(u32, String)>), DomainError> {
        if !charged {
            return Ok((Amount::ZERO, None));
        }
        let version = party.tariff.ok_or(DomainError::NoTariff { account: party.account.clone(), role })?;
        if version.tariff.currency != party.currency {
            return Err(DomainError::TariffCurrencyMismatch {
                account: party.currency.as_str().to_owned(),
                tariff: version.tariff.currency.as_str().to_owned(),
            });
        }
        let rating = version.compiled.rate(&cdr.callee, cdr.billable_seconds, true)?;
        let prefix = version.compiled.matched_prefix(&rating).unwrap_or_default().to_owned();
        Ok((rating.cost, Some((rating.billed_seconds, prefix))))
    };
    let (customer_cost, customer_rating) = match cdr.cost {
        Some(cost) => (cost, None),
        None => rate(customer, "customer")?,
    };
    let (partner_cost, partner_rating) = match (partner, cdr.partner_cost) {
        (None, Some(_)) => return Err(invalid("partner_cost", "the account has no partner".into())),
        (None, None) => (None, None),
        (Some(_), Some(cost)) => (Some(cost), None),
        (Some(partner), None) => {
            let (cost, rating) = rate(partner, "partner")?;
            (Some(cost), rating)
        }
    };
    // What the customer was billed decides the billed seconds shown; a pre-rated call
    // shows the partner's rating if there was one, else the talk time.
    let (billed_seconds, matched_prefix) = match customer_rating.or(partner_rating) {
        Some((seconds, prefix)) => (seconds, Some(prefix)),
        None if charged => (cdr.billable_seconds, None),
        None => (0, None),
    };
    let tariff_id = |party: Option<&RatingParty<'_>>, rated: bool| -> Option<TariffId> {
        party.filter(|_| rated && charged).and_then(|p| p.tariff).map(|v| v.tariff.id)
    };
    Ok(ChargeCall {
        account: customer.account.id,
        cdr: RatedCdr {
            id: cdr.id.clone(),
            caller: cdr.caller.clone(),
            callee: cdr.callee.clone(),
            start: cdr.start,
            answer: cdr.answer,
            end: cdr.end,
            billable_seconds: cdr.billable_seconds,
            hangup_cause: cdr.hangup_cause,
            direction: cdr.direction,
            billed_seconds,
            matched_prefix,
            customer_tariff: tariff_id(Some(customer), cdr.cost.is_none()),
            partner_tariff: tariff_id(partner, cdr.partner_cost.is_none()),
            hangup_cause_raw: cdr.hangup_cause_raw.clone(),
            hangup_cause_flag: cdr.hangup_cause_flag,
        },
        customer_cost,
        partner_cost,
    })
}

fn invalid(field: &'static str, reason: String) -> DomainError {
    DomainError::InvalidField { field, reason }
}

fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::rating::{Rate, Rounding, RoundingMode};

    fn fields(pairs: &[(&str, &str)]) -> Result<CdrInput, DomainError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        CdrInput::from_fields(|name| map.get(name).map(String::as_str))
    }

    fn answered_call() -> Vec<(&'static str, &'static str)> {
        vec![
            ("id", "cdr-1"),
            ("account", "C-1"),
            ("caller", "4930111"),
            ("callee", "4930222333"),
            ("start", "2026-03-01T10:00:00Z"),
            ("answer", "2026-03-01T10:00:05Z"),
            ("end", "2026-03-01T10:01:10.900Z"),
        ]
    }

    fn with(
        mut base: Vec<(&'static str, &'static str)>,
        key: &'static str,
        value: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        base.retain(|(k, _)| *k != key);
        base.push((key, value));
        base
    }

    fn field_of(error: DomainError) -> &'static str {
        error.field().unwrap_or("-")
    }

    #[test]
    fn billable_seconds_are_derived_from_answer_to_end_in_whole_seconds() {
        let cdr = fields(&answered_call()).unwrap();
        assert_eq!(cdr.billable_seconds, 65);
        assert_eq!(cdr.hangup_cause, 16);
        assert_eq!(cdr.direction, CallDirection::Outbound);
        assert!(cdr.charged());
    }

    #[test]
    fn an_unanswered_call_is_kept_with_no_billable_seconds() {
        let mut call = answered_call();
        call.retain(|(k, _)| *k != "answer");
        let cdr = fields(&with(call, "hangup_cause", "sip:486")).unwrap();
        assert_eq!(cdr.billable_seconds, 0);
        assert_eq!(cdr.hangup_cause, 17);
        assert!(!cdr.charged());
    }

    #[test]
    fn an_answered_call_with_an_odd_or_missing_cause_is_charged_and_flagged() {
        let tariff = version("49", "0.10", "EUR");
        for (cause, code, raw, flag) in [
            (Some("ORIGINATOR_CANCEL"), 16, Some("ORIGINATOR_CANCEL"), None),
            (Some("0"), 0, None, None),
            (Some("SOMETHING_NEW"), 0, Some("SOMETHING_NEW"), Some(CauseFlag::Unrecognised)),
            (None, 16, None, Some(CauseFlag::Missing)),
        ] {
            let mut call = answered_call();
            if let Some(cause) = cause {
                call = with(call, "hangup_cause", cause);
            }
            let cdr = fields(&call).unwrap();
            assert!(cdr.charged(), "{cause:?}");
            let charge = rate_call(&cdr, &party(Some(&tariff)), None).unwrap();
            assert_eq!(charge.customer_cost, "0.2".parse().unwrap(), "{cause:?}");
            assert_eq!(charge.cdr.hangup_cause, code);
            assert_eq!(charge.cdr.hangup_cause_raw.as_deref(), raw);
            assert_eq!(charge.cdr.hangup_cause_flag, flag);
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (with(answered_call(), "id", ""), "id"),
            (with(answered_call(), "id", "has space"), "id"),
            (with(answered_call(), "account", ""), "account"),
            (with(answered_call(), "callee", ""), "callee"),
            (with(answered_call(), "start", "yesterday"), "start"),
            (with(answered_call(), "end", "2026-03-01T09:00:00Z"), "end"),
            (with(answered_call(), "end", "2026-04-01T09:00:00Z"), "end"),
            (with(answered_call(), "answer", "2026-03-01T09:59:00Z"), "answer"),
            (with(answered_call(), "billable_seconds", "-3"), "billable_seconds"),
            (with(answered_call(), "billable_seconds", "600"), "billable_seconds"),
            (with(answered_call(), "hangup_cause", &*"9".repeat(65).leak()), "hangup_cause"),
            (with(answered_call(), "direction", "sideways"), "direction"),
            (with(answered_call(), "cost", "1.2.3"), "cost"),
            (with(answered_call(), "cost", "-1"), "cost"),
            (with(answered_call(), "partner_cost", "abc"), "partner_cost"),
        ];
        for (input, field) in cases {
            let error = fields(&input).expect_err(field);
            assert_eq!(field_of(error), field, "{input:?}");
        }
    }

    fn version(prefix: &str, price: &str, currency: &str) -> TariffVersion {
        TariffVersion::new(Tariff {
            id: TariffId::new(),
            name: "t".into(),
            currency: Currency::parse(currency).unwrap(),
            effective_from: Timestamp::from_seconds(0),
            rounding: Rounding { decimals: 4, mode: RoundingMode::Up },
            rates: vec![Rate {
                prefix: prefix.into(),
                price_per_minute: price.parse().unwrap(),
                connect_fee: Amount::ZERO,
                minimum_seconds: 0,
                first_increment_seconds: 60,
                next_increment_seconds: 60,
            }],
        })
        .unwrap()
    }

    fn party(tariff: Option<&TariffVersion>) -> RatingParty<'_> {
        let account = AccountLabel { id: crate::ids::AccountId::new(), number: "C-1".into() };
        RatingParty { account, currency: Currency::parse("EUR").unwrap(), tariff }
    }

    #[test]
    fn a_customer_of_a_partner_gets_its_retail_and_the_partner_its_wholesale_cost() {
        let cdr = fields(&answered_call()).unwrap();
        let (retail, wholesale) = (version("49", "0.10", "EUR"), version("4930", "0.04", "EUR"));
        let charge = rate_call(&cdr, &party(Some(&retail)), Some(&party(Some(&wholesale)))).unwrap();
        // 65 s in 60/60 increments bill 120 s.
        assert_eq!(charge.customer_cost, "0.2".parse().unwrap());
        assert_eq!(charge.partner_cost, Some("0.08".parse().unwrap()));
        assert_eq!(charge.cdr.billed_seconds, 120);
        assert_eq!(charge.cdr.matched_prefix.as_deref(), Some("49"));
        assert_eq!(charge.cdr.customer_tariff, Some(retail.tariff.id));
        assert_eq!(charge.cdr.partner_tariff, Some(wholesale.tariff.id));
    }

    #[test]
    fn a_pre_rated_cost_wins_over_the_tariff() {
        let cdr = fields(&with(answered_call(), "cost", "0.333")).unwrap();
        let retail = version("49", "0.10", "EUR");
        let charge = rate_call(&cdr, &party(Some(&retail)), None).unwrap();
        assert_eq!(charge.customer_cost, "0.333".parse().unwrap());
        assert_eq!(charge.cdr.customer_tariff, None);
        assert_eq!(charge.cdr.billed_seconds, 65);
    }

    #[test]
    fn refusals_say_why() {
        let cdr = fields(&answered_call()).unwrap();
        let missing = rate_call(&cdr, &party(None), None).unwrap_err();
        assert_eq!(missing.code(), "no_tariff");
        let dollars = version("49", "0.10", "USD");
        assert_eq!(rate_call(&cdr, &party(Some(&dollars)), None).unwrap_err().code(), "currency_mismatch");
        let elsewhere = version("33", "0.10", "EUR");
        assert_eq!(rate_call(&cdr, &party(Some(&elsewhere)), None).unwrap_err().code(), "no_matching_rate");
        let retail = version("49", "0.10", "EUR");
        let partner_missing = rate_call(&cdr, &party(Some(&retail)), Some(&party(None))).unwrap_err();
        assert_eq!(
            partner_missing,
            DomainError::NoTariff { account: partner_missing_account(&partner_missing), role: "partner" }
        );
        let stray = fields(&with(answered_call(), "partner_cost", "0.01")).unwrap();
        assert_eq!(field_of(rate_call(&stray, &party(Some(&retail)), None).unwrap_err()), "partner_cost");
    }

    fn partner_missing_account(error: &DomainError) -> AccountLabel {
        match error {
            DomainError::NoTariff { account, .. } => account.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unanswered_call_costs_nothing_even_without_tariffs() {
        let mut call = answered_call();
        call.retain(|(k, _)| *k != "answer");
        let cdr = fields(&call).unwrap();
        let charge = rate_call(&cdr, &party(None), Some(&party(None))).unwrap();
        assert_eq!(charge.customer_cost, Amount::ZERO);
        assert_eq!(charge.partner_cost, Some(Amount::ZERO));
        assert_eq!(charge.cdr.billed_seconds, 0);
    }
}
