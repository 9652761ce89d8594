//! Money: decimal amounts in one ISO 4217 currency. No floats anywhere.
//!
//! On the wire (JSON) an amount is a number written from the decimal itself — the
//! workspace enables serde_json's `arbitrary_precision`, so `12.30` stays `12.30`
//! and never passes through `f64`. Input is accepted as a JSON number or a string.
//! In the binary event encoding an amount is the decimal's 16 raw bytes.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DomainError;

/// Decimal places accepted on input unless the operator configures otherwise.
pub const INPUT_SCALE_MAX_DEFAULT: u32 = 5;

/// The largest magnitude an input amount may have (10^15). Far above any real balance,
/// far below `Decimal::MAX`, so sums of billions of amounts cannot overflow.
pub const INPUT_MAGNITUDE_MAX: Decimal = Decimal::from_parts(0xA4C6_8000, 0x0003_8D7E, 0, false, 0);

/// An ISO 4217 alphabetic currency code, e.g. `USD`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, DomainError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || iso_currency::Currency::from_code(code).is_none() {
            return Err(DomainError::InvalidCurrency(code.chars().take(16).collect()));
        }
        Ok(Currency([bytes[0], bytes[1], bytes[2]]))
    }

    /// Decimal places of the currency's minor unit (ISO 4217): 2 for EUR, 0 for JPY, 3
    /// for KWD; 0 for codes without one (gold, SDRs).
    pub fn minor_unit_places(&self) -> u32 {
        iso_currency::Currency::from_code(self.as_str()).and_then(|c| c.exponent()).map_or(0, u32::from)
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from a validated ASCII code.
        std::str::from_utf8(&self.0).expect("currency codes are ASCII")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(self.as_str()) } else { self.0.serialize(s) }
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let code = String::deserialize(d)?;
            Currency::parse(&code).map_err(de::Error::custom)
        } else {
            let bytes = <[u8; 3]>::deserialize(d)?;
            let code = std::str::from_utf8(&bytes).map_err(de::Error::custom)?;
            Currency::parse(code).map_err(de::Error::custom)
        }
    }
}

/// A signed decimal amount of money. The currency lives on the account.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Amount(pub Decimal);

impl Amount {
    pub const ZERO: Amount = Amount(Decimal::ZERO);

    /// Parses client input: a plain decimal with at most `scale_max` places and a sane
    /// magnitude. Exponents, `NaN` and friends are refused.
    pub fn parse_input(text: &str, scale_max: u32) -> Result<Self, DomainError> {
        let trimmed = text.trim();
        let well_formed = !trimmed.is_empty()
            && trimmed
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_digit() || b == b'.' || (i == 0 && (b == b'-' || b == b'+')));
        if !well_formed {
            return Err(DomainError::InvalidAmount(format!("`{}` is not a decimal number", shorten(trimmed))));
        }
        let value = Decimal::from_str_exact(trimmed)
            .map_err(|_| DomainError::InvalidAmount(format!("`{}` is not a decimal number", shorten(trimmed))))?;
        Amount(value).checked_input(scale_max)
    }

    /// Checks an amount that arrived already as a decimal against the input rules.
    ///
    /// Decimal places are counted as written, trailing zeros included: `1.000000` has six.
    /// An accepted amount is recorded exactly as sent, so the rule is about what the
    /// client wrote, and no event ever holds more places than the rule allows (a
    /// normalising rule would record `1` for `1.000000`, a figure the client never sent).
    pub fn checked_input(self, scale_max: u32) -> Result<Self, DomainError> {
        if self.0.scale() > scale_max {
            return Err(DomainError::InvalidAmount(format!(
                "{} has {} decimal places, at most {scale_max} are accepted (trailing zeros count)",
                self.0,
                self.0.scale()
            )));
        }
        if self.0.abs() > INPUT_MAGNITUDE_MAX {
            return Err(DomainError::InvalidAmount(format!("{} is too large", self.0)));
        }
        Ok(self)
    }

    /// The same value with no trailing zeros and no negative zero: `25.50` and `25.500`
    /// both become `25.5`, `0.00` and `-0` become `0`. The read models hold amounts in
    /// this form, so that what they hold depends on the values only, never on the places
    /// an input was written with or on the order in which sums were added up (a decimal
    /// sum keeps the larger scale, and one that adds zero keeps the other operand's).
    pub fn normalized(self) -> Amount {
        // Most amounts have no trailing zero to strip (a call cost, a balance after one):
        // told by one 64-bit remainder, not by `normalize`'s 96-bit divisions, which were
        // a twelfth of a replay.
        let mantissa = self.0.mantissa();
        if mantissa != 0 && (self.0.scale() == 0 || i64::try_from(mantissa).is_ok_and(|m| m % 10 != 0)) {
            return self;
        }
        let mut value = self.0.normalize();
        if value.is_zero() {
            value.set_sign_positive(true);
        }
        Amount(value)
    }

    /// The form every answer shows an amount in: [`Amount::normalized`], then padded
    /// with zeros to the currency's minor unit. `25.5` EUR is `25.50`, zero is `0.00`,
    /// a call cost of `0.01234` keeps its places; `1000` JPY is `1000`. One value has
    /// one form, however it was written or summed.
    pub fn canonical(self, currency: Currency) -> Amount {
        let mut value = self.normalized().0;
        let places = currency.minor_unit_places();
        if value.scale() < places {
            value.rescale(places);
        }
        Amount(value)
    }

    pub fn is_positive(&self) -> bool {
        self.0 > Decimal::ZERO
    }

    pub fn is_negative(&self) -> bool {
        self.0 < Decimal::ZERO
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn abs(self) -> Self {
        Amount(self.0.abs())
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(32).collect()
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::ops::Add for Amount {
    type Output = Amount;
    fn add(self, rhs: Amount) -> Amount {
        Amount(self.0 + rhs.0)
    }
}

impl std::ops::Sub for Amount {
    type Output = Amount;
    fn sub(self, rhs: Amount) -> Amount {
        Amount(self.0 - rhs.0)
    }
}

impl std::ops::Neg for Amount {
    type Output = Amount;
    /// Zero stays zero: a decimal keeps the sign of a negated zero, and `-0` in a
    /// statement or an event would read as a debt of nothing.
    fn neg(self) -> Amount {
        if self.0.is_zero() { self } else { Amount(-self.0) }
    }
}

impl std::ops::AddAssign for Amount {
    fn add_assign(&mut self, rhs: Amount) {
        self.0 += rhs.0;
    }
}

impl std::ops::SubAssign for Amount {
    fn sub_assign(&mut self, rhs: Amount) {
        self.0 -= rhs.0;
    }
}

impl std::iter::Sum for Amount {
    fn sum<I: Iterator<Item = Amount>>(iter: I) -> Amount {
        iter.fold(Amount::ZERO, |a, b| a + b)
    }
}

impl From<Decimal> for Amount {
    fn from(value: Decimal) -> Self {
        Amount(value)
    }
}

impl FromStr for Amount {
    type Err = DomainError;
    /// Parses without the input scale rule (used for stored figures and tests).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(s.trim())
            .map(Amount)
            .map_err(|_| DomainError::InvalidAmount(format!("`{}` is not a decimal number", shorten(s))))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            // A JSON number holding exactly the decimal's digits; never `-0`.
            let mut value = self.0;
            if value.is_zero() {
                value.set_sign_positive(true);
            }
            let number = serde_json::Number::from_str(&value.to_string()).map_err(serde::ser::Error::custom)?;
            number.serialize(s)
        } else {
            self.0.serialize().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(AmountVisitor)
        } else {
            let bytes = <[u8; 16]>::deserialize(d)?;
            Ok(Amount(Decimal::deserialize(bytes)))
        }
    }
}

struct AmountVisitor;

/// serde_json with `arbitrary_precision` hands numbers over as a one-entry map under
/// this key, holding the number's original text.
const JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Visitor<'de> for AmountVisitor {
    type Value = Amount;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal amount as a number or a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        parse_wire(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
        Ok(Amount(Decimal::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
        Ok(Amount(Decimal::from(v)))
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Amount, E> {
        Err(E::custom("amounts must not pass through a float"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Amount, A::Error> {
        match map.next_key::<String>()? {
            Some(key) if key == JSON_NUMBER_TOKEN => {
                let text: String = map.next_value()?;
                parse_wire(&text).map_err(de::Error::custom)
            }
            _ => Err(de::Error::custom("expected a decimal amount")),
        }
    }
}

/// Wire text to amount: plain decimals and JSON's exponent form (`1e2`) are read
/// exactly; the input scale rule is applied later, where the configuration is known.
fn parse_wire(text: &str) -> Result<Amount, DomainError> {
    let trimmed = text.trim();
    let parsed =
        if trimmed.contains(['e', 'E']) { Decimal::from_scientific(trimmed) } else { Decimal::from_str_exact(trimmed) };
    parsed
        .map(Amount)
        .map_err(|_| DomainError::InvalidAmount(format!("`{}` is not a decimal number", shorten(trimmed))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Category;
    use proptest::prelude::*;

    proptest! {
        /// The shortcut for amounts with nothing to strip gives the bits `normalize`
        /// gives, for any mantissa, scale and sign (a negative zero among them).
        #[test]
        fn normalized_is_normalize_with_a_positive_zero(
            mantissa in prop_oneof![-1000i128..1000, -(1i128 << 95)..(1i128 << 95)],
            scale in 0u32..=28,
            negative in any::<bool>(),
        ) {
            let mut decimal = Decimal::from_i128_with_scale(mantissa, scale);
            if negative {
                decimal.set_sign_negative(true);
            }
            let mut expected = decimal.normalize();
            if expected.is_zero() {
                expected.set_sign_positive(true);
            }
            prop_assert_eq!(Amount(decimal).normalized().0.serialize(), expected.serialize());
        }
    }

    #[test]
    fn json_round_trip_keeps_every_digit() {
        let amount: Amount = serde_json::from_str("12.30").unwrap();
        assert_eq!(serde_json::to_string(&amount).unwrap(), "12.30");
        let from_string: Amount = serde_json::from_str("\"0.10000\"").unwrap();
        assert_eq!(from_string.0.to_string(), "0.10000");
        // 0.1 + 0.2 is exact in decimal, unlike in f64.
        let a: Amount = serde_json::from_str("0.1").unwrap();
        let b: Amount = serde_json::from_str("0.2").unwrap();
        assert_eq!(serde_json::to_string(&(a + b)).unwrap(), "0.3");
    }

    #[test]
    fn zero_is_never_negative() {
        let zero: Amount = "0.00".parse().unwrap();
        assert_eq!((-zero).to_string(), "0.00");
        let mut negative_zero = Decimal::new(0, 2);
        negative_zero.set_sign_negative(true);
        assert_eq!(serde_json::to_string(&Amount(negative_zero)).unwrap(), "0.00");
        assert_eq!(Category::TransfersOut.balance_effect(zero).to_string(), "0.00");
    }

    #[test]
    fn input_rules() {
        assert!(Amount::parse_input("1.12345", 5).is_ok());
        assert!(Amount::parse_input("1.10000", 5).is_ok());
        // Trailing zeros count: 28 of them once made balances print with 28 places.
        assert!(Amount::parse_input("1.123450", 5).is_err());
        assert!(Amount::parse_input("1.0000000000000000000000000000", 5).is_err());
        let padded: Amount = serde_json::from_str("1.0000000000000000000000000000").unwrap();
        assert!(padded.checked_input(5).is_err(), "a JSON number is held to the same rule");
        let padded: Amount = serde_json::from_str("\"1.000000\"").unwrap();
        assert!(padded.checked_input(5).is_err(), "so is a string");
        let exponent: Amount = serde_json::from_str("1.5e-6").unwrap();
        assert!(exponent.checked_input(5).is_err(), "and a number with an exponent");
        assert!(matches!(Amount::parse_input("1.123456", 5), Err(DomainError::InvalidAmount(_))));
        assert!(Amount::parse_input("1e3", 5).is_err());
        assert!(Amount::parse_input("NaN", 5).is_err());
        assert!(Amount::parse_input("", 5).is_err());
        assert!(Amount::parse_input("99999999999999999999", 5).is_err());
    }

    #[test]
    fn one_value_has_one_canonical_form() {
        let eur = Currency::parse("EUR").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        let shown = |text: &str, currency| text.parse::<Amount>().unwrap().canonical(currency).to_string();
        for zero in ["0", "0.00", "-0.000", "0.0000000000000000000000000000"] {
            assert_eq!(shown(zero, eur), "0.00", "{zero}");
        }
        for text in ["25.5", "25.50", "25.5000000", "25.50000000000000000000000000"] {
            assert_eq!(shown(text, eur), "25.50", "{text}");
        }
        assert_eq!(shown("0.012340", eur), "0.01234");
        assert_eq!(shown("-3", eur), "-3.00");
        assert_eq!(shown("1000.00", jpy), "1000");
        assert_eq!(shown("1000.5", jpy), "1000.5");
        assert_eq!(shown("1.5", kwd), "1.500");
        // Sums that cancel keep the larger scale, or the other operand's when one is zero:
        // the canonical form does not care.
        let (a, b): (Amount, Amount) = ("25.50".parse().unwrap(), "25.5".parse().unwrap());
        assert_eq!((a - b).canonical(eur).to_string(), (Amount::ZERO + (b - a)).canonical(eur).to_string());
        assert_eq!(serde_json::to_string(&(a - a).canonical(eur)).unwrap(), "0.00");
    }

    #[test]
    fn magnitude_limit_is_ten_to_the_fifteenth() {
        assert_eq!(INPUT_MAGNITUDE_MAX.to_string(), "1000000000000000");
    }

    #[test]
    fn currency_must_be_iso_4217() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("EURO").is_err());
    }
}
