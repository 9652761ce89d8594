//! Instants in the ledger: microseconds since the Unix epoch, UTC. On the wire, RFC 3339.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(pub i64);

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub fn micros(&self) -> i64 {
        self.0
    }

    pub fn from_seconds(seconds: i64) -> Self {
        Timestamp(seconds.saturating_mul(MICROS_PER_SECOND))
    }

    /// Days since the epoch (floor), the bucket of per-day sums.
    pub fn day(&self) -> i64 {
        self.0.div_euclid(MICROS_PER_DAY)
    }

    pub fn add_seconds(&self, seconds: i64) -> Self {
        Timestamp(self.0.saturating_add(seconds.saturating_mul(MICROS_PER_SECOND)))
    }

    /// Accepts RFC 3339 (`2026-01-31T10:00:00Z`, with offset or fraction) or a plain
    /// date (`2026-01-31`, meaning its midnight UTC).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
            return Some(Timestamp(dt.with_timezone(&Utc).timestamp_micros()));
        }
        let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        let midnight = date.and_hms_opt(0, 0, 0)?.and_utc();
        Some(Timestamp(midnight.timestamp_micros()))
    }

    pub fn to_rfc3339(&self) -> String {
        match DateTime::<Utc>::from_timestamp_micros(self.0) {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&self.to_rfc3339()) } else { s.serialize_i64(self.0) }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Timestamp::parse(&text)
                .ok_or_else(|| de::Error::custom(format!("`{text}` is not an RFC 3339 time or a YYYY-MM-DD date")))
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_rfc3339() {
        let t = Timestamp::parse("2026-03-01T12:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-01T10:00:00Z");
        assert_eq!(Timestamp::parse("2026-03-01").unwrap().to_rfc3339(), "2026-03-01T00:00:00Z");
        assert!(Timestamp::parse("yesterday").is_none());
    }

    #[test]
    fn days_floor_before_the_epoch() {
        assert_eq!(Timestamp(-1).day(), -1);
        assert_eq!(Timestamp(0).day(), 0);
        assert_eq!(Timestamp(MICROS_PER_DAY).day(), 1);
    }
}
