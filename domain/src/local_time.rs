//! The zone a switch writes its local times in: a fixed offset from UTC, or a region of
//! the IANA time zone database (`Europe/Berlin`), whose offset is the one in force at each
//! instant. A switch in Berlin writes `2026-03-28 12:00:00` at +01:00 and
//! `2026-03-30 12:00:00` at +02:00; a fixed offset reads one of them an hour off.
//!
//! Twice a year a region's local time does not name one instant:
//! - **the gap** (clocks go forward): the skipped local times (02:00–03:00 in Berlin on
//!   the last Sunday of March) name no instant. A switch whose clock follows the zone never
//!   writes one, so the zone given is not the switch's: the time is refused.
//! - **the fold** (clocks go back): the repeated local times (02:00–03:00 in Berlin on the
//!   last Sunday of October) name two instants an hour apart. The earlier is taken (the
//!   offset in force before the change), as RFC 5545 and `java.time` do; but a call's
//!   answer or end is never read before its start: when the earlier instant would be, the
//!   later is taken. A call across the fold then keeps its true length.

use std::fmt;

use chrono::{LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::error::DomainError;
use crate::switch_cdr::UtcOffset;
use crate::time::Timestamp;

/// Where a switch's local times are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalZone {
    Fixed(UtcOffset),
    Named(Tz),
}

impl Default for LocalZone {
    fn default() -> Self {
        LocalZone::Fixed(UtcOffset::default())
    }
}

impl From<UtcOffset> for LocalZone {
    fn from(offset: UtcOffset) -> Self {
        LocalZone::Fixed(offset)
    }
}

impl fmt::Display for LocalZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalZone::Fixed(offset) => f.write_str(&offset_text(offset.seconds)),
            LocalZone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

fn offset_text(seconds: i32) -> String {
    if seconds == 0 {
        return "UTC".to_owned();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", seconds.abs() / 3600, seconds.abs() % 3600 / 60)
}

impl LocalZone {
    /// An offset (`+01:00`, `-0530`, `UTC`) or an IANA region (`Europe/Berlin`), the error
    /// naming `field`. Only `Area/Location` names are regions: the database's abbreviations
    /// (`CET`, `EST`, `EST5EDT`) are refused, since `EST` there has no summer time while
    /// whoever writes it usually means New York's clock.
    pub fn parse(field: &'static str, text: &str) -> Result<LocalZone, DomainError> {
        let text = text.trim();
        if let Ok(offset) = UtcOffset::parse(text) {
            return Ok(LocalZone::Fixed(offset));
        }
        let region = text.contains('/').then(|| text.parse::<Tz>().ok()).flatten();
        region.map(LocalZone::Named).ok_or_else(|| DomainError::InvalidField {
            field,
            reason: format!(
                "`{}` is neither an IANA time zone such as Europe/Berlin nor an offset such as +01:00 or UTC",
                text.chars().take(40).collect::<String>()
            ),
        })
    }

    /// The instant the local time `local` names in this zone; `not_before`, the call's
    /// start when `local` is its answer or end, decides a time of the fold (see the module's
    /// comment). A time in a gap is an error saying why, to follow the time as written.
    pub fn instant(&self, local: NaiveDateTime, not_before: Option<Timestamp>) -> Result<Timestamp, String> {
        let tz = match self {
            LocalZone::Fixed(offset) => {
                let micros = local.and_utc().timestamp_micros() - i64::from(offset.seconds) * 1_000_000;
                return Ok(Timestamp::from_micros(micros));
            }
            LocalZone::Named(tz) => tz,
        };
        match tz.from_local_datetime(&local) {
            LocalResult::Single(at) => Ok(Timestamp::from_micros(at.timestamp_micros())),
            LocalResult::Ambiguous(earlier, later) => {
                let earlier = Timestamp::from_micros(earlier.timestamp_micros());
                let later = Timestamp::from_micros(later.timestamp_micros());
                Ok(if not_before.is_some_and(|floor| earlier < floor) { later } else { earlier })
            }
            LocalResult::None => {
                // No zone changes its offset twice within a day, so a day either side
                // gives the offsets before and after the change.
                let offset_at = |hours: i64| {
                    let utc = local - chrono::Duration::hours(hours);
                    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()
                };
                Err(format!(
                    "is not a time in {}: its clocks skipped it, going from {} to {}",
                    tz.name(),
                    offset_text(offset_at(24)),
                    offset_text(offset_at(-24))
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    #[test]
    fn names_and_offsets_parse_and_abbreviations_do_not() {
        let berlin = LocalZone::parse("time_zone", "Europe/Berlin").unwrap();
        assert_eq!(berlin, LocalZone::Named(Tz::Europe__Berlin));
        assert_eq!(berlin.to_string(), "Europe/Berlin");
        assert_eq!(LocalZone::parse("time_zone", "+01:00").unwrap(), LocalZone::Fixed(UtcOffset { seconds: 3600 }));
        assert_eq!(LocalZone::parse("time_zone", " UTC ").unwrap(), LocalZone::default());
        for bad in ["CET", "EST", "EST5EDT", "Europe/Berlim", "europe/berlin", "", "+25:00", "Mars/Olympus"] {
            let error = LocalZone::parse("time_zone", bad).unwrap_err();
            assert_eq!(error.field(), Some("time_zone"), "{bad}");
            assert!(error.to_string().contains("IANA time zone"), "{error}");
        }
    }

    /// Berlin's clocks (tzdata, Europe/Berlin: EU rules, changes at 01:00 UTC on the last
    /// Sundays of March and October): +01:00 in winter, +02:00 in summer.
    #[test]
    fn a_named_zone_gives_the_offset_in_force_at_each_instant() {
        let berlin = LocalZone::Named(Tz::Europe__Berlin);
        assert_eq!(berlin.instant(local("2026-03-28 12:00:00"), None).unwrap(), at("2026-03-28T11:00:00Z"));
        assert_eq!(berlin.instant(local("2026-03-30 12:00:00"), None).unwrap(), at("2026-03-30T10:00:00Z"));
        assert_eq!(berlin.instant(local("2026-03-29 01:59:59"), None).unwrap(), at("2026-03-29T00:59:59Z"));
        assert_eq!(berlin.instant(local("2026-03-29 03:00:00"), None).unwrap(), at("2026-03-29T01:00:00Z"));
        let fixed = LocalZone::Fixed(UtcOffset { seconds: 3600 });
        assert_eq!(fixed.instant(local("2026-07-01 12:00:00"), None).unwrap(), at("2026-07-01T11:00:00Z"));
    }

    #[test]
    fn a_time_in_the_gap_is_refused_saying_why() {
        let berlin = LocalZone::Named(Tz::Europe__Berlin);
        let error = berlin.instant(local("2026-03-29 02:30:00"), None).unwrap_err();
        assert_eq!(error, "is not a time in Europe/Berlin: its clocks skipped it, going from +01:00 to +02:00");
    }

    #[test]
    fn a_time_in_the_fold_is_the_earlier_instant_unless_that_is_before_the_start() {
        let berlin = LocalZone::Named(Tz::Europe__Berlin);
        // 02:30 on 25 October 2026 is 00:30 UTC (summer time) and 01:30 UTC (winter time).
        let twice = local("2026-10-25 02:30:00");
        assert_eq!(berlin.instant(twice, None).unwrap(), at("2026-10-25T00:30:00Z"));
        assert_eq!(berlin.instant(twice, Some(at("2026-10-25T00:30:00Z"))).unwrap(), at("2026-10-25T00:30:00Z"));
        // A call started at 02:50 summer time and ended at 02:30 winter time.
        assert_eq!(berlin.instant(twice, Some(at("2026-10-25T00:50:00Z"))).unwrap(), at("2026-10-25T01:30:00Z"));
    }
}
