//! The pure rating engine: a tariff compiled once into a longest-prefix digit trie, then
//! used to price many calls, plus the Q.850 / SIP hang-up cause tables.
//!
//! Money stays in `Decimal` all the way: the cost of a call is computed exactly (up to
//! the division by 60) and rounded once, with the tariff's rounding, at the very end —
//! rounding a per-second or per-increment price first would drift from what the tariff
//! promises on long calls.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::error::DomainError;
use crate::money::Amount;
use crate::rating::{Rate, Rounding, RoundingMode, Tariff};

/// The longest destination prefix a rate may have. E.164 numbers have at most 15 digits;
/// the slack allows operator-internal routing prefixes in front of them.
pub const PREFIX_LEN_MAX: usize = 32;

/// The most decimals a tariff may round a cost to. Enough for sub-micro-unit wholesale
/// prices, and far inside `Decimal`'s 28 digits of scale.
pub const ROUNDING_DECIMALS_MAX: u32 = 8;

/// Marks "no rate ends here" in a trie node; rate indices are below `u32::MAX` because a
/// tariff with four billion rates cannot be built in memory anyway.
const NO_RATE: u32 = u32::MAX;

/// One trie node. Children and the rate index sit together so a lookup touches one cache
/// line or two per digit. Child index 0 means "none": the root is node 0 and is never
/// anyone's child.
#[derive(Clone, Debug)]
struct Node {
    children: [u32; 10],
    rate: u32,
}

impl Node {
    const EMPTY: Node = Node { children: [0; 10], rate: NO_RATE };
}

#[derive(Clone, Debug)]
struct CompiledRate {
    prefix: Box<str>,
    price_per_minute: Decimal,
    connect_fee: Decimal,
    minimum_seconds: u32,
    first_increment_seconds: u32,
    next_increment_seconds: u32,
}

/// A validated tariff ready to price calls. Build it once per published tariff and share
/// it: `rate` takes `&self` and allocates nothing.
#[derive(Clone, Debug)]
pub struct CompiledTariff {
    rounding_dp: u32,
    strategy: RoundingStrategy,
    rates: Vec<CompiledRate>,
    nodes: Vec<Node>,
}

/// What rating decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rating {
    /// Seconds after the minimum and the increments; 0 for a call that was not answered.
    pub billed_seconds: u32,
    /// Connect fee plus per-minute price for the billed seconds, rounded once.
    pub cost: Amount,
    /// Digits of the callee (after an optional leading `+`) that the matching prefix
    /// covered; 0 when no rate matched (only possible for unanswered calls).
    pub matched_prefix_len: usize,
    /// Index of the matching rate in `Tariff::rates`, if any.
    pub rate_index: Option<usize>,
}

impl CompiledTariff {
    /// Validates the tariff and builds its prefix trie.
    pub fn compile(tariff: &Tariff) -> Result<CompiledTariff, DomainError> {
        if tariff.rounding.decimals > ROUNDING_DECIMALS_MAX {
            return Err(invalid(
                "rounding.decimals",
                format!("{} decimals requested, at most {ROUNDING_DECIMALS_MAX} allowed", tariff.rounding.decimals),
            ));
        }
        if tariff.rates.len() >= NO_RATE as usize {
            return Err(invalid("rates", format!("{} rates, too many for one tariff", tariff.rates.len())));
        }
        let mut rates = Vec::with_capacity(tariff.rates.len());
        // Rough upper bound: real tariffs share most of their leading digits.
        let mut nodes = Vec::with_capacity(tariff.rates.len() * 2 + 1);
        nodes.push(Node::EMPTY);
        for (index, rate) in tariff.rates.iter().enumerate() {
            validate_rate(index, rate)?;
            let mut node = 0usize;
            for digit in rate.prefix.bytes().map(|b| (b - b'0') as usize) {
                let child = nodes[node].children[digit];
                node = if child == 0 {
                    let new = nodes.len();
                    // At most 32 nodes per rate; a tariff big enough to overflow u32 node
                    // indices is refused rather than silently wrapped.
                    let new_u32 = u32::try_from(new)
                        .map_err(|_| invalid("rates", "the prefixes need too many trie nodes".to_owned()))?;
                    nodes.push(Node::EMPTY);
                    nodes[node].children[digit] = new_u32;
                    new
                } else {
                    child as usize
                };
            }
            if nodes[node].rate != NO_RATE {
                let first = nodes[node].rate;
                return Err(invalid(
                    "rates.prefix",
                    format!("rate {index}: prefix `{}` is already used by rate {first}", rate.prefix),
                ));
            }
            nodes[node].rate = index as u32;
            rates.push(CompiledRate {
                prefix: rate.prefix.as_str().into(),
                price_per_minute: rate.price_per_minute.0,
                connect_fee: rate.connect_fee.0,
                minimum_seconds: rate.minimum_seconds,
                first_increment_seconds: rate.first_increment_seconds,
                next_increment_seconds: rate.next_increment_seconds,
            });
        }
        nodes.shrink_to_fit();
        Ok(CompiledTariff { rounding_dp: tariff.rounding.decimals, strategy: strategy(tariff.rounding), rates, nodes })
    }

    /// The number of rates (prefixes) in the tariff.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// The longest prefix of `callee` that has a rate: the rate's index and the prefix
    /// length. A leading `+` is skipped; matching stops at the first non-digit.
    pub fn lookup(&self, callee: &str) -> Option<(usize, usize)> {
        let digits = callee.strip_prefix('+').unwrap_or(callee).as_bytes();
        let mut node = 0usize;
        let mut best = None;
        for (depth, &byte) in digits.iter().enumerate() {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            // In bounds: every stored child index was a valid node index when written.
            let child = self.nodes[node].children[digit as usize];
            if child == 0 {
                break;
            }
            node = child as usize;
            let rate = self.nodes[node].rate;
            if rate != NO_RATE {
                best = Some((rate as usize, depth + 1));
            }
        }
        best
    }

    /// The prefix of the rate that priced a call.
    pub fn matched_prefix(&self, rating: &Rating) -> Option<&str> {
        rating.rate_index.map(|index| &*self.rates[index].prefix)
    }

    /// Prices one call. Unanswered calls and calls with no billable seconds cost nothing
    /// and always succeed, so that zero-cost CDRs are still kept; an answered call whose
    /// callee matches no prefix is refused with `no_matching_rate`.
    pub fn rate(&self, callee: &str, billable_seconds: u32, answered: bool) -> Result<Rating, DomainError> {
        let found = self.lookup(callee);
        if !answered || billable_seconds == 0 {
            return Ok(Rating {
                billed_seconds: 0,
                cost: Amount::ZERO,
                matched_prefix_len: found.map_or(0, |(_, len)| len),
                rate_index: found.map(|(index, _)| index),
            });
        }
        let Some((index, prefix_len)) = found else {
            return Err(DomainError::NoMatchingRate(callee.chars().take(PREFIX_LEN_MAX + 8).collect()));
        };
        let rate = &self.rates[index];
        let billed = billed_seconds(
            billable_seconds,
            rate.minimum_seconds,
            rate.first_increment_seconds,
            rate.next_increment_seconds,
        )
        .ok_or_else(|| invalid("billable_seconds", format!("{billable_seconds} seconds bill beyond u32 seconds")))?;
        let cost = cost(rate.price_per_minute, rate.connect_fee, billed)
            .ok_or_else(|| invalid("billable_seconds", format!("the cost of {billed} seconds overflows")))?
            .round_dp_with_strategy(self.rounding_dp, self.strategy);
        Ok(Rating {
            billed_seconds: billed,
            cost: Amount(cost),
            matched_prefix_len: prefix_len,
            rate_index: Some(index),
        })
    }
}

/// `max(minimum, billable)` rounded up to the first increment, then to whole next
/// increments beyond it. `None` if the result does not fit a `u32`.
fn billed_seconds(billable: u32, minimum: u32, first: u32, next: u32) -> Option<u32> {
    let seconds = billable.max(minimum) as u64;
    let (first, next) = (first as u64, next as u64);
    let billed = if seconds <= first { first } else { first + (seconds - first).div_ceil(next) * next };
    u32::try_from(billed).ok()
}

/// `connect_fee + price_per_minute × billed / 60`, unrounded. The multiplication comes
/// first so that the only inexact step is the one division.
fn cost(price_per_minute: Decimal, connect_fee: Decimal, billed: u32) -> Option<Decimal> {
    // Whole minutes are the common case (60/60 tariffs) and skip the slow division.
    let usage = if billed.is_multiple_of(60) {
        price_per_minute.checked_mul(Decimal::from(billed / 60))?
    } else {
        price_per_minute.checked_mul(Decimal::from(billed))?.checked_div(Decimal::from(60u32))?
    };
    connect_fee.checked_add(usage)
}

fn strategy(rounding: Rounding) -> RoundingStrategy {
    match rounding.mode {
        RoundingMode::Up => RoundingStrategy::ToPositiveInfinity,
        RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
        RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
        // Costs are never negative, so toward zero and toward -∞ agree.
        RoundingMode::Down => RoundingStrategy::ToZero,
    }
}

fn validate_rate(index: usize, rate: &Rate) -> Result<(), DomainError> {
    let prefix = &rate.prefix;
    if prefix.is_empty() || prefix.len() > PREFIX_LEN_MAX || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = prefix.chars().take(PREFIX_LEN_MAX + 8).collect();
        return Err(invalid(
            "rates.prefix",
            format!("rate {index}: prefix `{shown}` must be 1 to {PREFIX_LEN_MAX} digits"),
        ));
    }
    if rate.price_per_minute.is_negative() {
        return Err(invalid(
            "rates.price_per_minute",
            format!("rate {index} ({prefix}): price per minute {} is negative", rate.price_per_minute),
        ));
    }
    if rate.connect_fee.is_negative() {
        return Err(invalid(
            "rates.connect_fee",
            format!("rate {index} ({prefix}): connect fee {} is negative", rate.connect_fee),
        ));
    }
    if rate.first_increment_seconds == 0 {
        return Err(invalid(
            "rates.first_increment_seconds",
            format!("rate {index} ({prefix}): the first increment must be at least 1 second"),
        ));
    }
    if rate.next_increment_seconds == 0 {
        return Err(invalid(
            "rates.next_increment_seconds",
            format!("rate {index} ({prefix}): the next increment must be at least 1 second"),
        ));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: String) -> DomainError {
    DomainError::InvalidField { field, reason }
}

// ---------------------------------------------------------------------------------------
// Hang-up causes: the tables are `crate::hangup`'s; these are the readers rating and the
// CDR filters have always used.

pub use crate::hangup::sip_to_q850;

/// The name of a Q.850 cause (0 to 127), e.g. 16 → `normal_clearing`.
pub fn q850_name(code: u16) -> Option<&'static str> {
    crate::hangup::q850(code).map(|c| c.name)
}

/// Reads a hang-up cause that must be known (a filter): a Q.850 number (`16`), a name
/// from any table in any case (`normal_clearing`, `ORIGINATOR_CANCEL`, `NO ANSWER`), or a
/// SIP status (`sip:486`, `SIP 486`). A CDR's own cause is read with
/// [`crate::hangup::read_cause`], which never refuses a call for an unknown cause.
pub fn parse_hangup_cause(text: &str) -> Result<u16, DomainError> {
    crate::hangup::known_code(text).ok_or_else(|| {
        invalid(
            "hangup_cause",
            format!(
                "`{}` is neither a Q.850 cause, a known cause name nor a SIP status",
                text.chars().take(40).collect::<String>()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::ids::TariffId;
    use crate::money::Currency;
    use crate::time::Timestamp;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn rate(prefix: &str, ppm: &str, fee: &str, min: u32, first: u32, next: u32) -> Rate {
        Rate {
            prefix: prefix.to_owned(),
            price_per_minute: Amount(dec(ppm)),
            connect_fee: Amount(dec(fee)),
            minimum_seconds: min,
            first_increment_seconds: first,
            next_increment_seconds: next,
        }
    }

    fn tariff(decimals: u32, mode: RoundingMode, rates: Vec<Rate>) -> Tariff {
        Tariff {
            id: TariffId::new(),
            name: "test".to_owned(),
            currency: Currency::parse("EUR").unwrap(),
            effective_from: Timestamp::from_seconds(0),
            rounding: Rounding { decimals, mode },
            rates,
        }
    }

    fn compile(decimals: u32, mode: RoundingMode, rates: Vec<Rate>) -> CompiledTariff {
        CompiledTariff::compile(&tariff(decimals, mode, rates)).unwrap()
    }

    #[test]
    fn golden_table() {
        use RoundingMode::*;
        // (rate, rounding, callee, billable, answered) → (billed, cost, matched prefix)
        #[allow(clippy::type_complexity)]
        let cases: &[(Rate, u32, RoundingMode, &str, u32, bool, u32, &str, &str)] = &[
            // 60/60: every started minute is billed whole.
            (rate("44", "0.10", "0", 0, 60, 60), 4, Up, "441234", 1, true, 60, "0.1", "44"),
            (rate("44", "0.10", "0", 0, 60, 60), 4, Up, "441234", 60, true, 60, "0.1", "44"),
            (rate("44", "0.10", "0", 0, 60, 60), 4, Up, "441234", 61, true, 120, "0.2", "44"),
            // 30/6: 30 seconds first, then 6-second steps.
            (rate("49", "0.12", "0", 0, 30, 6), 4, Up, "49301", 10, true, 30, "0.06", "49"),
            (rate("49", "0.12", "0", 0, 30, 6), 4, Up, "49301", 31, true, 36, "0.072", "49"),
            (rate("49", "0.12", "0", 0, 30, 6), 4, Up, "49301", 36, true, 36, "0.072", "49"),
            (rate("49", "0.12", "0", 0, 30, 6), 4, Up, "49301", 37, true, 42, "0.084", "49"),
            // 1/1: per second; 0.07/min × 7 s = 0.0081666… rounded up to 0.0082.
            (rate("33", "0.07", "0", 0, 1, 1), 4, Up, "33612", 7, true, 7, "0.0082", "33"),
            // Connect fee is added before the one rounding.
            (rate("1", "0.01", "0.05", 0, 1, 1), 4, Up, "1212555", 90, true, 90, "0.065", "1"),
            // Minimum duration: a 3-second call billed as 30 seconds.
            (rate("39", "0.20", "0", 30, 1, 1), 4, Up, "3906", 3, true, 30, "0.1", "39"),
            (rate("39", "0.20", "0", 30, 1, 1), 4, Up, "3906", 31, true, 31, "0.1034", "39"),
            // Each rounding mode on 0.07 × 7 / 60 = 0.0081666…
            (rate("33", "0.07", "0", 0, 1, 1), 3, Up, "33", 7, true, 7, "0.009", "33"),
            (rate("33", "0.07", "0", 0, 1, 1), 3, HalfUp, "33", 7, true, 7, "0.008", "33"),
            (rate("33", "0.07", "0", 0, 1, 1), 3, HalfEven, "33", 7, true, 7, "0.008", "33"),
            (rate("33", "0.07", "0", 0, 1, 1), 3, Down, "33", 7, true, 7, "0.008", "33"),
            // … and on exact midpoints: 0.15/min × 1 min = 0.15 and 0.25 to one decimal.
            (rate("7", "0.15", "0", 0, 60, 60), 1, HalfUp, "7495", 60, true, 60, "0.2", "7"),
            (rate("7", "0.15", "0", 0, 60, 60), 1, HalfEven, "7495", 60, true, 60, "0.2", "7"),
            (rate("7", "0.25", "0", 0, 60, 60), 1, HalfUp, "7495", 60, true, 60, "0.3", "7"),
            (rate("7", "0.25", "0", 0, 60, 60), 1, HalfEven, "7495", 60, true, 60, "0.2", "7"),
            (rate("7", "0.25", "0", 0, 60, 60), 1, Down, "7495", 60, true, 60, "0.2", "7"),
            (rate("7", "0.25", "0", 0, 60, 60), 1, Up, "7495", 60, true, 60, "0.3", "7"),
            // Unanswered, or answered with 0 seconds: nothing billed, prefix still reported.
            (rate("44", "0.10", "0.05", 30, 60, 60), 4, Up, "4420", 45, false, 0, "0", "44"),
            (rate("44", "0.10", "0.05", 30, 60, 60), 4, Up, "4420", 0, true, 0, "0", "44"),
            // A leading `+` is not part of the number.
            (rate("44", "0.10", "0", 0, 60, 60), 4, Up, "+4420", 60, true, 60, "0.1", "44"),
        ];
        for (i, (r, decimals, mode, callee, billable, answered, billed, cost, prefix)) in cases.iter().enumerate() {
            let compiled = compile(*decimals, *mode, vec![r.clone()]);
            let rating = compiled.rate(callee, *billable, *answered).unwrap();
            assert_eq!(rating.billed_seconds, *billed, "case {i}: billed");
            assert_eq!(rating.cost, Amount(dec(cost)), "case {i}: cost");
            assert_eq!(compiled.matched_prefix(&rating), Some(*prefix), "case {i}: prefix");
            assert_eq!(rating.matched_prefix_len, prefix.len(), "case {i}: prefix length");
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let compiled = compile(
            4,
            RoundingMode::Up,
            vec![
                rate("4", "1.00", "0", 0, 60, 60),
                rate("447", "0.30", "0", 0, 60, 60),
                rate("44", "0.10", "0", 0, 60, 60),
                rate("44790", "0.50", "0", 0, 60, 60),
            ],
        );
        let cases = [("4420", "44", "0.1"), ("447712", "447", "0.3"), ("4479012", "44790", "0.5"), ("49", "4", "1")];
        for (callee, prefix, cost) in cases {
            let rating = compiled.rate(callee, 60, true).unwrap();
            assert_eq!(compiled.matched_prefix(&rating), Some(prefix), "{callee}");
            assert_eq!(rating.cost, Amount(dec(cost)), "{callee}");
        }
        // Matching stops at the first non-digit.
        assert_eq!(compiled.lookup("44-790"), Some((2, 2)));
    }

    #[test]
    fn no_matching_prefix_refuses_answered_calls_only() {
        let compiled = compile(4, RoundingMode::Up, vec![rate("44", "0.10", "0", 0, 60, 60)]);
        let err = compiled.rate("4930", 60, true).unwrap_err();
        assert_eq!(err.code(), "no_matching_rate");
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert_eq!(compiled.rate("", 60, true).unwrap_err().code(), "no_matching_rate");
        let unanswered = compiled.rate("4930", 60, false).unwrap();
        assert_eq!(
            unanswered,
            Rating { billed_seconds: 0, cost: Amount::ZERO, matched_prefix_len: 0, rate_index: None }
        );
        assert!(compiled.rate("4930", 0, true).is_ok());
    }

    #[test]
    fn tariff_validation() {
        let ok = || rate("44", "0.10", "0", 0, 60, 60);
        let cases: Vec<(u32, Vec<Rate>, &str, &str)> = vec![
            (4, vec![rate("", "0.1", "0", 0, 1, 1)], "rates.prefix", "1 to 32 digits"),
            (4, vec![rate("+44", "0.1", "0", 0, 1, 1)], "rates.prefix", "1 to 32 digits"),
            (4, vec![rate("4a", "0.1", "0", 0, 1, 1)], "rates.prefix", "1 to 32 digits"),
            (4, vec![rate(&"1".repeat(33), "0.1", "0", 0, 1, 1)], "rates.prefix", "1 to 32 digits"),
            (4, vec![ok(), ok()], "rates.prefix", "rate 1: prefix `44` is already used by rate 0"),
            (4, vec![ok(), rate("1", "-0.01", "0", 0, 1, 1)], "rates.price_per_minute", "rate 1 (1)"),
            (4, vec![rate("1", "0.01", "-1", 0, 1, 1)], "rates.connect_fee", "negative"),
            (4, vec![rate("1", "0.01", "0", 0, 0, 1)], "rates.first_increment_seconds", "at least 1"),
            (4, vec![rate("1", "0.01", "0", 0, 1, 0)], "rates.next_increment_seconds", "at least 1"),
            (9, vec![ok()], "rounding.decimals", "at most 8"),
        ];
        for (decimals, rates, field, reason_part) in cases {
            let err = CompiledTariff::compile(&tariff(decimals, RoundingMode::Up, rates)).unwrap_err();
            assert_eq!(err.code(), "invalid_field");
            assert_eq!(err.field(), Some(field));
            match err {
                DomainError::InvalidField { reason, .. } => assert!(reason.contains(reason_part), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        // 32 digits, 8 decimals and an empty tariff are fine.
        assert!(
            CompiledTariff::compile(&tariff(8, RoundingMode::Up, vec![rate(&"9".repeat(32), "0", "0", 0, 1, 1)]))
                .is_ok()
        );
        assert!(CompiledTariff::compile(&tariff(2, RoundingMode::Up, vec![])).unwrap().is_empty());
    }

    #[test]
    fn sip_to_q850_table() {
        let table: &[(u16, u16)] = &[
            (400, 41),
            (401, 21),
            (402, 21),
            (403, 21),
            (404, 1),
            (405, 63),
            (406, 79),
            (407, 21),
            (408, 102),
            (410, 22),
            (413, 127),
            (414, 127),
            (415, 79),
            (416, 127),
            (420, 127),
            (421, 127),
            (423, 127),
            (480, 18),
            (481, 41),
            (482, 25),
            (483, 25),
            (484, 28),
            (485, 1),
            (486, 17),
            (487, 127),
            (488, 127),
            (500, 41),
            (501, 79),
            (502, 38),
            (503, 41),
            (504, 102),
            (505, 127),
            (513, 127),
            (600, 17),
            (603, 21),
            (604, 1),
            (606, 58),
            (200, 16),
            (409, 31),
            (599, 31),
            (699, 31),
        ];
        for (status, cause) in table {
            assert_eq!(sip_to_q850(*status), *cause, "SIP {status}");
        }
    }

    #[test]
    fn q850_names_and_parsing() {
        assert_eq!(q850_name(16), Some("normal_clearing"));
        assert_eq!(q850_name(17), Some("user_busy"));
        assert_eq!(q850_name(127), Some("interworking"));
        assert_eq!(q850_name(200), None);
        for cause in crate::hangup::Q850 {
            assert_eq!(parse_hangup_cause(cause.name), Ok(cause.code));
        }
        assert_eq!(parse_hangup_cause("16"), Ok(16));
        assert_eq!(parse_hangup_cause(" NORMAL_CLEARING "), Ok(16));
        assert_eq!(parse_hangup_cause("sip:486"), Ok(17));
        assert_eq!(parse_hangup_cause("SIP 486"), Ok(17));
        assert_eq!(parse_hangup_cause("SIP486"), Ok(17));
        assert_eq!(parse_hangup_cause("sip:404"), Ok(1));
        // 0 is a cause (unspecified), and so are Asterisk's `BUSY` and FreeSWITCH's names.
        assert_eq!(parse_hangup_cause("0"), Ok(0));
        assert_eq!(parse_hangup_cause("busy"), Ok(17));
        assert_eq!(parse_hangup_cause("ORIGINATOR_CANCEL"), Ok(16));
        for bad in ["", "128", "65536", "sip:", "sip:99", "sip:700", "-16", "sip:4x6", "nonsense"] {
            let err = parse_hangup_cause(bad).unwrap_err();
            assert_eq!(err.field(), Some("hangup_cause"), "{bad}");
        }
    }

    fn any_rate() -> impl Strategy<Value = (Rate, u32, RoundingMode)> {
        (
            0u64..100_000,
            0u64..10_000,
            0u32..120,
            1u32..120,
            1u32..120,
            0u32..=8,
            prop_oneof![
                Just(RoundingMode::Up),
                Just(RoundingMode::HalfUp),
                Just(RoundingMode::HalfEven),
                Just(RoundingMode::Down)
            ],
        )
            .prop_map(|(ppm, fee, min, first, next, decimals, mode)| {
                let r = Rate {
                    prefix: "1".to_owned(),
                    price_per_minute: Amount(Decimal::new(ppm as i64, 4)),
                    connect_fee: Amount(Decimal::new(fee as i64, 4)),
                    minimum_seconds: min,
                    first_increment_seconds: first,
                    next_increment_seconds: next,
                };
                (r, decimals, mode)
            })
    }

    proptest! {
        #[test]
        fn cost_never_decreases_with_duration((r, decimals, mode) in any_rate(), a in 0u32..100_000, b in 0u32..100_000) {
            let compiled = compile(decimals, mode, vec![r]);
            let (short, long) = (a.min(b), a.max(b));
            let short = compiled.rate("15551234", short, true).unwrap();
            let long = compiled.rate("15551234", long, true).unwrap();
            prop_assert!(short.cost <= long.cost);
            prop_assert!(short.billed_seconds <= long.billed_seconds);
        }

        #[test]
        fn billed_covers_billable_in_whole_increments((r, decimals, mode) in any_rate(), billable in 1u32..1_000_000) {
            let (first, next, min) = (r.first_increment_seconds, r.next_increment_seconds, r.minimum_seconds);
            let compiled = compile(decimals, mode, vec![r]);
            let billed = compiled.rate("1", billable, true).unwrap().billed_seconds;
            prop_assert!(billed >= billable && billed >= min && billed >= first);
            if billed > first {
                prop_assert_eq!((billed - first) % next, 0);
                // Never more than one increment beyond what had to be billed.
                prop_assert!(billed - next < billable.max(min));
            }
        }

        #[test]
        fn rating_is_deterministic((r, decimals, mode) in any_rate(), billable in 0u32..1_000_000, answered: bool) {
            let tariff = tariff(decimals, mode, vec![r]);
            let once = CompiledTariff::compile(&tariff).unwrap().rate("1234", billable, answered).unwrap();
            let again = CompiledTariff::compile(&tariff).unwrap().rate("1234", billable, answered).unwrap();
            prop_assert_eq!(once, again);
            prop_assert!(once.cost.0.scale() <= decimals.max(4));
        }
    }
}
