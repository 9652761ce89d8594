//! A column mapping: how to read the CSV file of a switch tollbook has no format of its
//! own for. It names, for each CDR field, the file's column (by header name or by
//! position), how times are written and in which zone (an IANA region or an offset) a time
//! without an offset of its own//! is. A mapping is checked whole before it is kept ([`CsvMapping::validated`]); a file is
//! then read through it row by row ([`crate::switch_cdr::SwitchTable::open_mapped`]), each
//! row becoming a [`NativeCdr`] tied to an account by its identifiers like any switch's
//! CDR. Pure: the caller stores mappings and reads files.

use std::collections::BTreeMap;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::local_time::LocalZone;
use crate::switch::CdrIdentifiers;
use crate::switch_cdr::{NativeCdr, asterisk_peer, epoch_seconds};
use crate::time::Timestamp;

/// The longest mapping name: it goes in a URL path and on a command line.
pub const MAPPING_NAME_LENGTH_MAX: usize = 64;
/// The highest column position a mapping may name: a CSV of CDRs with more columns than
/// this is not a CDR file.
pub const MAPPING_COLUMN_POSITION_MAX: u16 = 1024;
/// The longest header name a mapping may name.
pub const MAPPING_COLUMN_NAME_LENGTH_MAX: usize = 128;
/// The longest time pattern.
pub const MAPPING_TIME_FORMAT_LENGTH_MAX: usize = 64;
/// The time format when a mapping gives none: what Asterisk, FreeSWITCH and most SQL
/// exports write.
pub const MAPPING_TIME_FORMAT_DEFAULT: &str = "%Y-%m-%d %H:%M:%S";

/// A CDR field a mapping can fill from a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappedField {
    /// The switch's id of the call: a repeated id is a duplicate, never a second charge.
    Id,
    /// The switch's account code: an identifier of the account.
    AccountCode,
    /// The calling number: the CDR's caller, and an identifier of the account.
    Caller,
    /// The trunk or gateway: an identifier of the account.
    Trunk,
    /// The called number, rated by its longest matching prefix.
    Callee,
    Start,
    /// Empty: the call was not answered.
    Answer,
    End,
    /// Seconds from start to end; gives `end` when the file has no end time.
    Duration,
    /// What the switch billed (its `billsec`); a fraction is cut to whole seconds.
    BillableSeconds,
    HangupCause,
    /// `outbound` or `inbound`.
    Direction,
    /// A cost the switch already rated.
    Cost,
}

impl MappedField {
    pub const ALL: [MappedField; 13] = [
        MappedField::Id,
        MappedField::AccountCode,
        MappedField::Caller,
        MappedField::Trunk,
        MappedField::Callee,
        MappedField::Start,
        MappedField::Answer,
        MappedField::End,
        MappedField::Duration,
        MappedField::BillableSeconds,
        MappedField::HangupCause,
        MappedField::Direction,
        MappedField::Cost,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            MappedField::Id => "id",
            MappedField::AccountCode => "account_code",
            MappedField::Caller => "caller",
            MappedField::Trunk => "trunk",
            MappedField::Callee => "callee",
            MappedField::Start => "start",
            MappedField::Answer => "answer",
            MappedField::End => "end",
            MappedField::Duration => "duration",
            MappedField::BillableSeconds => "billable_seconds",
            MappedField::HangupCause => "hangup_cause",
            MappedField::Direction => "direction",
            MappedField::Cost => "cost",
        }
    }
}

/// Where a field is in the file: its position (the first column is 1, as in a
/// spreadsheet or awk) or the name its header row gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnRef {
    Position(u16),
    Name(String),
}

impl ColumnRef {
    /// A column as a client writes it: digits are a position, anything else a header
    /// name (a form sends every value as text, so `9` cannot mean a header named "9").
    pub fn parse(field: MappedField, text: &str) -> Result<ColumnRef, DomainError> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u16>() {
                Ok(position) => Ok(ColumnRef::Position(position)),
                Err(_) => Err(invalid(field.as_str(), format!("column {text} is past {MAPPING_COLUMN_POSITION_MAX}"))),
            };
        }
        Ok(ColumnRef::Name(text.to_owned()))
    }

    fn shown(&self) -> String {
        match self {
            ColumnRef::Position(position) => format!("column {position}"),
            ColumnRef::Name(name) => format!("column `{name}`"),
        }
    }
}

/// A column mapping as it is kept: plain values, checked by [`CsvMapping::validated`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvMapping {
    /// Letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// Whether the file's first line names its columns (then it is not a CDR).
    pub header: bool,
    /// The character between columns.
    pub delimiter: char,
    pub columns: BTreeMap<MappedField, ColumnRef>,
    /// `rfc3339`, `epoch` (seconds, a fraction allowed), `epoch_ms`, or a strftime pattern
    /// such as `%Y-%m-%d %H:%M:%S` (`%z` in it reads the time's own offset).
    pub time_format: String,
    /// Where times written without an offset are: an IANA zone (`Europe/Berlin`), whose
    /// offset is the one in force at each time, or a fixed offset (`+01:00`, `UTC`).
    pub time_zone: String,
    /// The trunk column holds a channel name (`SIP/carrier1-0000002a`, Asterisk's
    /// `channel`): its peer (`carrier1`) is the trunk.
    #[serde(default)]
    pub trunk_is_channel: bool,
}

/// A time as read from a column, before the mapping's zone is applied.
enum TimeRead {
    /// The text said which instant (an epoch, an RFC 3339 time, a pattern with `%z`).
    Instant(Timestamp),
    /// A wall-clock time without a zone.
    Local(NaiveDateTime),
}

/// How a mapping's times are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    /// A strftime pattern, and whether it reads an offset of its own (`%z`).
    Pattern {
        pattern: String,
        zoned: bool,
    },
}

impl TimeFormat {
    pub fn parse(text: &str) -> Result<TimeFormat, DomainError> {
        let bad = |why: String| invalid("time_format", why);
        match text.trim() {
            "rfc3339" => return Ok(TimeFormat::Rfc3339),
            "epoch" => return Ok(TimeFormat::EpochSeconds),
            "epoch_ms" => return Ok(TimeFormat::EpochMillis),
            _ => {}
        }
        if text.len() > MAPPING_TIME_FORMAT_LENGTH_MAX {
            return Err(bad(format!("longer than {MAPPING_TIME_FORMAT_LENGTH_MAX} bytes")));
        }
        if !text.contains('%') {
            return Err(bad(format!(
                "`{}` is not `rfc3339`, `epoch`, `epoch_ms` or a strftime pattern such as %Y-%m-%d %H:%M:%S",
                shown(text)
            )));
        }
        if StrftimeItems::new(text).any(|item| matches!(item, Item::Error)) {
            return Err(bad(format!("`{}` is not a valid strftime pattern", shown(text))));
        }
        let zoned = ["%z", "%:z", "%::z", "%#z"].iter().any(|z| text.contains(z));
        let format = TimeFormat::Pattern { pattern: text.to_owned(), zoned };
        // The pattern must give a whole date and time: a time written with it reads back.
        let sample = DateTime::parse_from_rfc3339("2026-05-04T10:11:12+02:00").expect("a valid sample");
        let written = sample.format(text).to_string();
        if format.read(&written).is_none() {
            return Err(bad(format!("`{}` does not give a whole date and time (it wrote `{written}`)", shown(text))));
        }
        Ok(format)
    }

    /// What a time text says: an instant, or a local time for the mapping's zone to place.
    fn read(&self, text: &str) -> Option<TimeRead> {
        let instant = |micros: i64| Some(TimeRead::Instant(Timestamp::from_micros(micros)));
        match self {
            TimeFormat::Rfc3339 => instant(DateTime::parse_from_rfc3339(text).ok()?.timestamp_micros()),
            TimeFormat::EpochSeconds => epoch_seconds(text).map(TimeRead::Instant),
            TimeFormat::EpochMillis => {
                let millis: i64 = text.parse().ok().filter(|_| text.bytes().all(|b| b.is_ascii_digit()))?;
                instant(millis.checked_mul(1000)?)
            }
            TimeFormat::Pattern { pattern, zoned: true } => {
                instant(DateTime::parse_from_str(text, pattern).ok()?.timestamp_micros())
            }
            TimeFormat::Pattern { pattern, zoned: false } => {
                NaiveDateTime::parse_from_str(text, pattern).ok().map(TimeRead::Local)
            }
        }
    }

    fn describe(&self) -> &str {
        match self {
            TimeFormat::Rfc3339 => "an RFC 3339 time",
            TimeFormat::EpochSeconds => "epoch seconds",
            TimeFormat::EpochMillis => "epoch milliseconds",
            TimeFormat::Pattern { pattern, .. } => pattern,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::InvalidField { field, reason: reason.into() }
}

fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

impl CsvMapping {
    /// The mapping as it will be kept, or the first thing wrong with it, naming the field.
    pub fn validated(self) -> Result<CsvMapping, DomainError> {
        let name = self.name.trim();
        if name.is_empty()
            || name.chars().count() > MAPPING_NAME_LENGTH_MAX
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid("name", format!("1 to {MAPPING_NAME_LENGTH_MAX} letters, digits, `.`, `_` or `-`")));
        }
        if !self.delimiter.is_ascii() || matches!(self.delimiter, '"' | '\n' | '\r') {
            return Err(invalid("delimiter", "one ASCII character other than a quote or a line break"));
        }
        let mut columns = BTreeMap::new();
        let mut seen: Vec<(MappedField, ColumnRef)> = Vec::new();
        for (field, column) in self.columns {
            let column = match column {
                ColumnRef::Position(0) => {
                    return Err(invalid(field.as_str(), "columns are counted from 1"));
                }
                ColumnRef::Position(position) if position > MAPPING_COLUMN_POSITION_MAX => {
                    return Err(invalid(
                        field.as_str(),
                        format!("column {position} is past {MAPPING_COLUMN_POSITION_MAX}"),
                    ));
                }
                ColumnRef::Position(position) => ColumnRef::Position(position),
                ColumnRef::Name(name) => {
                    let name = name.trim().to_owned();
                    if name.is_empty() || name.chars().count() > MAPPING_COLUMN_NAME_LENGTH_MAX {
                        return Err(invalid(
                            field.as_str(),
                            format!(
                                "a column is a position or a header name of 1 to {MAPPING_COLUMN_NAME_LENGTH_MAX} characters"
                            ),
                        ));
                    }
                    crate::ids::validate_text(field.as_str(), &name)?;
                    if !self.header {
                        return Err(invalid(
                            field.as_str(),
                            format!(
                                "column `{}` is named, but the file has no header row: give its position",
                                shown(&name)
                            ),
                        ));
                    }
                    ColumnRef::Name(name)
                }
            };
            // A column read as two fields is a slip in the mapping, not a switch's design.
            if let Some((other, _)) = seen.iter().find(|(_, c)| *c == column) {
                return Err(invalid(
                    field.as_str(),
                    format!("{} is already the `{}` column", column.shown(), other.as_str()),
                ));
            }
            seen.push((field, column.clone()));
            columns.insert(field, column);
        }
        let has = |field: MappedField| columns.contains_key(&field);
        for required in [MappedField::Id, MappedField::Callee, MappedField::Start] {
            if !has(required) {
                return Err(invalid(required.as_str(), "is required: the column it is read from"));
            }
        }
        if !has(MappedField::End) && !has(MappedField::Duration) {
            return Err(invalid("end", "is required, or `duration` to count it from `start`"));
        }
        if ![MappedField::AccountCode, MappedField::Caller, MappedField::Trunk].into_iter().any(has) {
            return Err(invalid(
                "account_code",
                "one of `account_code`, `caller` or `trunk` is required: it ties each CDR to an account",
            ));
        }
        if self.trunk_is_channel && !has(MappedField::Trunk) {
            return Err(invalid("trunk_is_channel", "needs a `trunk` column"));
        }
        TimeFormat::parse(&self.time_format)?;
        let time_zone = self.time_zone.trim().to_owned();
        LocalZone::parse("time_zone", &time_zone)?;
        Ok(CsvMapping { name: name.to_owned(), columns, time_zone, ..self })
    }
}

/// The ready-made mappings every operator and partner may use by name.
pub fn builtin_mappings() -> Vec<CsvMapping> {
    vec![asterisk_cdr_custom()]
}

/// A ready-made mapping by its name.
pub fn builtin_mapping(name: &str) -> Option<CsvMapping> {
    builtin_mappings().into_iter().find(|m| m.name == name)
}

/// Asterisk `cdr_custom` with the `Master.csv` mapping of the `cdr_custom.conf` sample
/// Asterisk ships (configs/samples/cdr_custom.conf.sample): clid, src, dst, dcontext,
/// channel, dstchannel, lastapp, lastdata, start, answer, end, duration, billsec,
/// disposition, amaflags, accountcode, uniqueid, userfield, sequence; no header; times
/// as `CDR()` writes them (`%Y-%m-%d %T`), in the switch's local time.
pub fn asterisk_cdr_custom() -> CsvMapping {
    use ColumnRef::Position;
    use MappedField::*;
    CsvMapping {
        name: "asterisk-cdr-custom".to_owned(),
        header: false,
        delimiter: ',',
        columns: [
            (Caller, Position(2)),
            (Callee, Position(3)),
            (Trunk, Position(5)),
            (Start, Position(9)),
            (Answer, Position(10)),
            (End, Position(11)),
            (BillableSeconds, Position(13)),
            (HangupCause, Position(14)),
            (AccountCode, Position(16)),
            (Id, Position(17)),
        ]
        .into_iter()
        .collect(),
        time_format: MAPPING_TIME_FORMAT_DEFAULT.to_owned(),
        time_zone: "UTC".to_owned(),
        trunk_is_channel: true,
    }
}

/// A checked mapping ready to read rows: columns resolved to indexes.
pub struct MappingReader {
    mapping: CsvMapping,
    time_format: TimeFormat,
    zone: LocalZone,
    /// Each mapped field's index in a record, from 0.
    index: BTreeMap<MappedField, usize>,
}

impl MappingReader {
    /// Reads with `mapping`, its names found in `header` (the file's first row, when the
    /// mapping says it has one); `zone`, when given, replaces the mapping's time zone.
    pub fn new(
        mapping: CsvMapping,
        header: Option<&csv::StringRecord>,
        zone: Option<LocalZone>,
    ) -> Result<MappingReader, DomainError> {
        let mapping = mapping.validated()?;
        let time_format = TimeFormat::parse(&mapping.time_format)?;
        let zone = match zone {
            Some(zone) => zone,
            None => LocalZone::parse("time_zone", &mapping.time_zone)?,
        };
        let mut index = BTreeMap::new();
        for (field, column) in &mapping.columns {
            let at = match column {
                ColumnRef::Position(position) => usize::from(*position) - 1,
                ColumnRef::Name(name) => header
                    .and_then(|h| h.iter().position(|h| h.trim().trim_start_matches('\u{feff}') == name))
                    .ok_or_else(|| {
                        invalid(
                            "header",
                            format!("the header row has no column `{}` (the `{}` field)", shown(name), field.as_str()),
                        )
                    })?,
            };
            index.insert(*field, at);
        }
        Ok(MappingReader { mapping, time_format, zone, index })
    }

    pub fn mapping(&self) -> &CsvMapping {
        &self.mapping
    }

    /// A field of a record, trimmed; empty counts as absent.
    fn get<'r>(&self, record: &'r csv::StringRecord, field: MappedField) -> Option<&'r str> {
        self.index.get(&field).and_then(|i| record.get(*i)).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The record's id as written, to name a row that could not be read.
    pub fn id_of(&self, record: &csv::StringRecord) -> Option<String> {
        self.get(record, MappedField::Id).map(str::to_owned)
    }

    /// A time field; `not_before` (the call's start, for its answer and end) places a local
    /// time the zone's clocks showed twice (see `crate::local_time`).
    fn time(
        &self,
        record: &csv::StringRecord,
        field: MappedField,
        not_before: Option<Timestamp>,
    ) -> Result<Option<Timestamp>, DomainError> {
        let Some(text) = self.get(record, field) else { return Ok(None) };
        let read = self.time_format.read(text).ok_or_else(|| {
            invalid(field.as_str(), format!("`{}` is not {}", shown(text), self.time_format.describe()))
        })?;
        match read {
            TimeRead::Instant(at) => Ok(Some(at)),
            TimeRead::Local(local) => self.zone.instant(local, not_before).map(Some).map_err(|why| {
                let column = self.mapping.columns.get(&field).map(ColumnRef::shown).unwrap_or_default();
                invalid(field.as_str(), format!("`{}` ({column}) {why}", shown(text)))
            }),
        }
    }

    /// Whole seconds from a number of seconds that may have a fraction (`65`, `65.250`).
    fn seconds(&self, record: &csv::StringRecord, field: MappedField) -> Result<Option<i64>, DomainError> {
        let Some(text) = self.get(record, field) else { return Ok(None) };
        epoch_seconds(text)
            .map(|t| Some(t.micros() / 1_000_000))
            .ok_or_else(|| invalid(field.as_str(), format!("`{}` is not a number of seconds", shown(text))))
    }

    /// One record read into a switch's CDR, or why it cannot be, naming the field and the
    /// value.
    pub fn row(&self, record: &csv::StringRecord) -> Result<NativeCdr, DomainError> {
        use MappedField::*;
        let id = self.get(record, Id).ok_or_else(|| invalid("id", "is required"))?.to_owned();
        let start = self.time(record, Start, None)?.ok_or_else(|| invalid("start", "is required"))?;
        let answer_column = self.index.contains_key(&Answer);
        let answered_at = if answer_column { self.time(record, Answer, Some(start))? } else { None };
        let end = match self.time(record, End, Some(answered_at.unwrap_or(start)))? {
            Some(end) => end,
            None => {
                let duration = self.seconds(record, Duration)?.ok_or_else(|| invalid("end", "is required"))?;
                start.add_seconds(duration)
            }
        };
        let billable = self.seconds(record, BillableSeconds)?;
        // Without an answer column, a call with billable seconds was answered that long
        // before its end (as Kamailio's duration); with one, an empty answer is unanswered.
        let answer = if answer_column {
            answered_at
        } else {
            billable.filter(|b| *b > 0).map(|b| start.max(end.add_seconds(-b)))
        };
        let mut fields = vec![("start", start.to_rfc3339()), ("end", end.to_rfc3339())];
        fields.extend(answer.map(|a| ("answer", a.to_rfc3339())));
        fields.extend(billable.map(|b| ("billable_seconds", b.to_string())));
        for (field, name) in [(Caller, "caller"), (Callee, "callee"), (HangupCause, "hangup_cause")] {
            fields.extend(self.get(record, field).map(|v| (name, v.to_owned())));
        }
        for (field, name) in [(Direction, "direction"), (Cost, "cost")] {
            fields.extend(self.get(record, field).map(|v| (name, v.to_owned())));
        }
        let trunk =
            self.get(record, Trunk).map(|t| if self.mapping.trunk_is_channel { asterisk_peer(t) } else { Some(t) });
        let identifiers = CdrIdentifiers {
            account_code: self.get(record, AccountCode).map(str::to_owned),
            caller_id: self.get(record, Caller).map(str::to_owned),
            trunk: trunk.flatten().map(str::to_owned),
        };
        Ok(NativeCdr::new(id, identifiers, fields))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cdr::CdrInput;
    use crate::switch_cdr::{SwitchTable, UtcOffset};

    fn mapping(columns: &[(MappedField, ColumnRef)]) -> CsvMapping {
        CsvMapping {
            name: "sw".into(),
            header: true,
            delimiter: ',',
            columns: columns.iter().cloned().collect(),
            time_format: MAPPING_TIME_FORMAT_DEFAULT.into(),
            time_zone: "UTC".into(),
            trunk_is_channel: false,
        }
    }

    fn name(text: &str) -> ColumnRef {
        ColumnRef::Name(text.into())
    }

    fn minimal() -> Vec<(MappedField, ColumnRef)> {
        use MappedField::*;
        vec![(Id, name("call")), (Caller, name("from")), (Callee, name("to")), (Start, name("t0")), (End, name("t1"))]
    }

    fn read_all(
        file: &str,
        mapping: CsvMapping,
        zone: Option<LocalZone>,
    ) -> Vec<(u64, Option<String>, Result<NativeCdr, DomainError>)> {
        let mut table = SwitchTable::open_mapped(file.as_bytes(), mapping, zone).unwrap();
        let rows: Vec<_> = std::iter::from_fn(|| table.next_cdr()).collect();
        assert_eq!(table.io_failure(), None);
        rows
    }

    #[test]
    fn a_mapping_lacking_a_field_naming_a_column_twice_or_with_a_bad_time_format_is_refused() {
        use MappedField::*;
        assert!(mapping(&minimal()).validated().is_ok());
        for missing in [Id, Callee, Start] {
            let columns: Vec<_> = minimal().into_iter().filter(|(f, _)| *f != missing).collect();
            assert_eq!(mapping(&columns).validated().unwrap_err().field(), Some(missing.as_str()));
        }
        let no_end: Vec<_> = minimal().into_iter().filter(|(f, _)| *f != End).collect();
        assert_eq!(mapping(&no_end).validated().unwrap_err().field(), Some("end"));
        let mut with_duration = no_end.clone();
        with_duration.push((Duration, ColumnRef::Name("secs".into())));
        assert!(mapping(&with_duration).validated().is_ok());
        let anonymous: Vec<_> = minimal().into_iter().filter(|(f, _)| *f != Caller).collect();
        assert_eq!(mapping(&anonymous).validated().unwrap_err().field(), Some("account_code"));

        let mut twice = minimal();
        twice.push((AccountCode, name("from")));
        let error = mapping(&twice).validated().unwrap_err();
        assert_eq!(error.field(), Some("caller"), "{error}");
        assert!(error.to_string().contains("column `from` is already the `account_code` column"), "{error}");

        for bad in ["%Y-%m-%d", "%Q", "yyyy-mm-dd", "RFC3339"] {
            let error = CsvMapping { time_format: bad.into(), ..mapping(&minimal()) }.validated().unwrap_err();
            assert_eq!(error.field(), Some("time_format"), "{bad}: {error}");
        }
        for good in ["rfc3339", "epoch", "epoch_ms", "%d/%m/%Y %H:%M", "%Y-%m-%dT%H:%M:%S%z", "%s"] {
            assert!(CsvMapping { time_format: good.into(), ..mapping(&minimal()) }.validated().is_ok(), "{good}");
        }
        let zone = CsvMapping { time_zone: "CET".into(), ..mapping(&minimal()) }.validated().unwrap_err();
        assert_eq!(zone.field(), Some("time_zone"));
        let zero = mapping(&[(Id, ColumnRef::Position(0))]).validated().unwrap_err();
        assert_eq!(zero.field(), Some("id"));
        let headless = CsvMapping { header: false, ..mapping(&minimal()) }.validated().unwrap_err();
        assert!(headless.to_string().contains("no header row"), "{headless}");
        let bad_name = CsvMapping { name: "a b".into(), ..mapping(&minimal()) }.validated().unwrap_err();
        assert_eq!(bad_name.field(), Some("name"));
        assert_eq!(ColumnRef::parse(Id, " 17 ").unwrap(), ColumnRef::Position(17));
        assert_eq!(ColumnRef::parse(Id, "uniqueid").unwrap(), name("uniqueid"));
    }

    #[test]
    fn rows_are_read_by_header_name_and_a_bad_row_names_its_line_field_and_value() {
        let file = "t1,t0,call,to,from,ignored\n\
                    2026-05-04 12:01:05,2026-05-04 12:00:00,c-1,4930123,4940111,x\n\
                    2026-05-04 12:01:05,yesterday,c-2,4930123,4940111,x\n";
        let mapping = CsvMapping { time_zone: "+02:00".into(), ..mapping(&minimal()) };
        let rows = read_all(file, mapping.clone(), None);
        let first = rows[0].2.clone().unwrap();
        assert_eq!(first.identifiers.caller_id.as_deref(), Some("4940111"));
        let first = first.into_input("C-1").unwrap();
        assert_eq!(first.start, Timestamp::parse("2026-05-04T10:00:00Z").unwrap(), "12:00 at +02:00");
        assert_eq!((first.answer, first.billable_seconds), (None, 0), "no answer column, no billable seconds");
        let (line, id, error) = &rows[1];
        let error = error.clone().unwrap_err();
        assert_eq!((*line, id.as_deref(), error.field()), (3, Some("c-2"), Some("start")));
        assert!(error.to_string().contains("`yesterday` is not %Y-%m-%d %H:%M:%S"), "{error}");
        // The upload's offset wins over the mapping's.
        let utc = read_all(file, mapping.clone(), Some(LocalZone::default()));
        assert_eq!(utc[0].2.clone().unwrap().into_input("C-1").unwrap().start.to_rfc3339(), "2026-05-04T12:00:00Z");
        // A named column the header lacks refuses the file, naming it.
        let error = SwitchTable::open_mapped("a,b\n".as_bytes(), mapping, None).err().unwrap();
        assert_eq!(error.field(), Some("header"));
        assert!(error.to_string().contains("no column `call` (the `id` field)"), "{error}");
    }

    /// Asterisk `cdr_custom` as the `Master.csv` mapping of the `cdr_custom.conf` sample
    /// writes it (Asterisk, configs/samples/cdr_custom.conf.sample, "Legacy Mappings":
    /// `${CSV_QUOTE(${CDR(clid)})},${CSV_QUOTE(${CDR(src)})},...,${CDR(sequence)}`, every
    /// field quoted but the sequence; `start`, `answer` and `end` as `%Y-%m-%d %T` in the
    /// switch's local time; an unanswered call has an empty answer).
    #[test]
    fn asterisk_cdr_custom_rows_are_read_with_the_ready_made_mapping() {
        let file = concat!(
            r#""""Alice"" <4940111>","4940111","4930123456","default","SIP/carrier1-0000002a","SIP/out-0000002b","Dial","SIP/out/4930123456,30","2026-05-04 12:00:00","2026-05-04 12:00:02","2026-05-04 12:01:07","67","65","ANSWERED","DOCUMENTATION","1001","1777888800.42","",17"#,
            "\n",
            r#""","4940111","4930999","default","PJSIP/carrier1-00000002","","Dial","","2026-05-04 12:05:00","","2026-05-04 12:05:30","30","0","NO ANSWER","DOCUMENTATION","1001","1777889100.43","",18"#,
            "\n",
        );
        assert!(asterisk_cdr_custom().validated().is_ok());
        let rows = read_all(
            file,
            builtin_mapping("asterisk-cdr-custom").unwrap(),
            Some(UtcOffset::parse("+02:00").unwrap().into()),
        );
        let first = rows[0].2.clone().unwrap();
        assert_eq!(
            first.identifiers,
            CdrIdentifiers {
                account_code: Some("1001".into()),
                caller_id: Some("4940111".into()),
                trunk: Some("carrier1".into())
            }
        );
        let first = first.into_input("C-1").unwrap();
        assert_eq!(first.id, "1777888800.42");
        assert_eq!(first.start, Timestamp::parse("2026-05-04T10:00:00Z").unwrap());
        assert_eq!((first.billable_seconds, first.hangup_cause, first.callee.as_str()), (65, 16, "4930123456"));
        let second = rows[1].2.clone().unwrap().into_input("C-1").unwrap();
        assert_eq!((second.answer, second.billable_seconds, second.hangup_cause), (None, 0, 19));
    }

    #[test]
    fn duration_gives_the_end_and_billsec_the_answer_when_the_file_has_neither() {
        use MappedField::*;
        let columns = [
            (Id, ColumnRef::Position(1)),
            (AccountCode, ColumnRef::Position(2)),
            (Callee, ColumnRef::Position(3)),
            (Start, ColumnRef::Position(4)),
            (Duration, ColumnRef::Position(5)),
            (BillableSeconds, ColumnRef::Position(6)),
        ];
        let mapping = CsvMapping { header: false, delimiter: ';', time_format: "epoch".into(), ..mapping(&columns) };
        let rows = read_all("x1;77;4930;1777888800;67;65.9\n", mapping, None);
        let cdr = rows[0].2.clone().unwrap().into_input("C-1").unwrap();
        assert_eq!(cdr.end, Timestamp::from_seconds(1_777_888_867));
        assert_eq!(cdr.answer, Some(Timestamp::from_seconds(1_777_888_802)));
        assert_eq!(cdr.billable_seconds, 65, "a fraction is cut");
    }

    /// The time formats a generated row may be written in, with the writer for each.
    fn written(format: &str, at: Timestamp, offset: UtcOffset) -> String {
        let utc = DateTime::from_timestamp_micros(at.micros()).unwrap();
        let local = utc.with_timezone(&chrono::FixedOffset::east_opt(offset.seconds).unwrap());
        match format {
            "rfc3339" => local.to_rfc3339(),
            "epoch" => (at.micros() / 1_000_000).to_string(),
            "epoch_ms" => (at.micros() / 1000).to_string(),
            pattern => local.format(pattern).to_string(),
        }
    }

    proptest! {
        /// A row written in any column order, any time format and offset, read through
        /// the mapping that describes it, is the CDR built by hand from the same values.
        #[test]
        fn a_mapped_row_is_the_cdr_built_by_hand(
            order in Just((0..9usize).collect::<Vec<_>>()).prop_shuffle(),
            by_name in any::<bool>(),
            format in prop::sample::select(vec!["rfc3339", "epoch", "epoch_ms", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
            offset_minutes in -12 * 60..14 * 60i32,
            start_seconds in 1_700_000_000i64..1_800_000_000,
            ring in 0i64..60,
            talk in 0i64..7200,
            cause in prop::sample::select(vec!["16", "ANSWERED", "NO ANSWER", "ORIGINATOR_CANCEL", "sip:486", "", "WEIRD"]),
            id in "[a-z0-9][a-z0-9.-]{0,20}",
            caller in "[0-9]{3,12}",
            callee in "[0-9]{3,12}",
        ) {
            use MappedField::*;
            let offset = UtcOffset { seconds: offset_minutes * 60 };
            let start = Timestamp::from_seconds(start_seconds);
            let answer = (talk > 0).then(|| start.add_seconds(ring));
            let end = start.add_seconds(ring + talk);
            let fields = [Id, AccountCode, Caller, Callee, Start, Answer, End, BillableSeconds, HangupCause];
            let time = |t: Option<Timestamp>| t.map(|t| written(format, t, offset)).unwrap_or_default();
            let values = [
                id.clone(), "1001".to_owned(), caller.clone(), callee.clone(), time(Some(start)), time(answer), time(Some(end)),
                talk.to_string(), cause.to_owned(),
            ];
            // Column `order[i]` of the file holds field i.
            let mut record = vec![String::new(); fields.len()];
            for (i, column) in order.iter().enumerate() {
                record[*column] = values[i].clone();
            }
            let names: Vec<String> = (0..fields.len()).map(|c| format!("col{c}")).collect();
            let mut writer = csv::Writer::from_writer(Vec::new());
            if by_name {
                writer.write_record(&names).unwrap();
            }
            writer.write_record(&record).unwrap();
            let file = String::from_utf8(writer.into_inner().unwrap()).unwrap();
            let columns = fields.iter().zip(&order).map(|(field, column)| {
                let at = if by_name { ColumnRef::Name(names[*column].clone()) } else { ColumnRef::Position(*column as u16 + 1) };
                (*field, at)
            });
            let mapping = CsvMapping {
                name: "generated".into(),
                header: by_name,
                delimiter: ',',
                columns: columns.collect(),
                time_format: format.into(),
                time_zone: if offset.seconds == 0 { "UTC".into() } else {
                    let sign = if offset.seconds < 0 { '-' } else { '+' };
                    format!("{sign}{:02}:{:02}", offset.seconds.abs() / 3600, offset.seconds.abs() % 3600 / 60)
                },
                trunk_is_channel: false,
            };
            let mut table = SwitchTable::open_mapped(file.as_bytes(), mapping, None).unwrap();
            let (line, read_id, cdr) = table.next_cdr().unwrap();
            prop_assert_eq!(line, if by_name { 2 } else { 1 });
            prop_assert_eq!(read_id.as_deref(), Some(id.as_str()));
            let cdr = cdr.unwrap();
            prop_assert_eq!(cdr.identifiers.account_code.as_deref(), Some("1001"));
            let mapped = cdr.into_input("C-1").unwrap();
            let (start_text, end_text, talk_text) = (start.to_rfc3339(), end.to_rfc3339(), talk.to_string());
            let answer_text = answer.map(|a| a.to_rfc3339());
            let by_hand = CdrInput::from_fields(|name| match name {
                "id" => Some(id.as_str()),
                "account" => Some("C-1"),
                "caller" => Some(caller.as_str()),
                "callee" => Some(callee.as_str()),
                "start" => Some(start_text.as_str()),
                "answer" => answer_text.as_deref(),
                "end" => Some(end_text.as_str()),
                "billable_seconds" => Some(talk_text.as_str()),
                "hangup_cause" => Some(cause),
                _ => None,
            }).unwrap();
            prop_assert_eq!(mapped, by_hand);
        }
    }

    /// Zones with summer time in either hemisphere, one whose change is 30 minutes (Lord
    /// Howe), and ones without (Kolkata at +05:30, São Paulo since 2019).
    const ZONES: [chrono_tz::Tz; 6] = [
        chrono_tz::Tz::Europe__Berlin,
        chrono_tz::Tz::America__New_York,
        chrono_tz::Tz::Australia__Lord_Howe,
        chrono_tz::Tz::Pacific__Chatham,
        chrono_tz::Tz::Asia__Kolkata,
        chrono_tz::Tz::America__Sao_Paulo,
    ];

    /// The hours (epoch seconds) of 2025–2027 in which `zone`'s offset changes, or noon of
    /// midsummer 2026 for a zone that never changes: calls are generated around them.
    fn offset_changes(zone: chrono_tz::Tz) -> Vec<i64> {
        use chrono::{Offset, TimeZone};
        let offset = |seconds: i64| {
            zone.offset_from_utc_datetime(&DateTime::from_timestamp(seconds, 0).unwrap().naive_utc()).fix()
        };
        let hours = (1_735_689_600i64..1_830_297_600).step_by(3600);
        let changes: Vec<i64> = hours.filter(|h| offset(*h) != offset(h + 3600)).collect();
        if changes.is_empty() { vec![1_782_043_200] } else { changes }
    }

    #[test]
    fn a_local_time_the_clocks_skipped_is_refused_naming_line_field_and_column() {
        use MappedField::*;
        let columns = [
            (Id, name("call")),
            (Caller, name("from")),
            (Callee, name("to")),
            (Start, name("setup")),
            (End, name("release")),
        ];
        let mapping = CsvMapping { time_zone: "Europe/Berlin".into(), ..mapping(&columns) };
        let file = "call,from,to,setup,release\n\
                    c-1,4940111,4930123,2026-03-29 01:59:00,2026-03-29 03:01:00\n\
                    c-2,4940111,4930123,2026-03-29 02:30:00,2026-03-29 03:31:00\n";
        let rows = read_all(file, mapping, None);
        let first = rows[0].2.clone().unwrap().into_input("C-1").unwrap();
        assert_eq!(
            (first.start.to_rfc3339(), first.end.to_rfc3339()),
            ("2026-03-29T00:59:00Z".into(), "2026-03-29T01:01:00Z".into()),
            "two minutes across the change"
        );
        let (line, id, error) = &rows[1];
        let error = error.clone().unwrap_err();
        assert_eq!((*line, id.as_deref(), error.field()), (3, Some("c-2"), Some("start")));
        assert_eq!(
            error.to_string(),
            "start: `2026-03-29 02:30:00` (column `setup`) is not a time in Europe/Berlin: its clocks skipped it, going from +01:00 to +02:00"
        );
    }

    #[test]
    fn a_call_across_the_fold_keeps_its_length() {
        use MappedField::*;
        let columns = [
            (Id, name("call")),
            (Caller, name("from")),
            (Callee, name("to")),
            (Start, name("t0")),
            (Answer, name("t1")),
            (End, name("t2")),
        ];
        let mapping = CsvMapping { time_zone: "Europe/Berlin".into(), ..mapping(&columns) };
        // Berlin showed 02:00–03:00 twice on 25 October 2026: 00:00–01:00 UTC, then 01:00–02:00 UTC.
        let file = "call,from,to,t0,t1,t2\n\
                    c-1,4940111,4930123,2026-10-25 02:50:00,2026-10-25 02:51:00,2026-10-25 02:10:00\n\
                    c-2,4940111,4930123,2026-10-25 02:10:00,2026-10-25 02:11:00,2026-10-25 02:20:00\n";
        let rows = read_all(file, mapping, None);
        let across = rows[0].2.clone().unwrap().into_input("C-1").unwrap();
        assert_eq!(across.start.to_rfc3339(), "2026-10-25T00:50:00Z", "the earlier of the two");
        assert_eq!(across.answer.unwrap().to_rfc3339(), "2026-10-25T00:51:00Z");
        assert_eq!(across.end.to_rfc3339(), "2026-10-25T01:10:00Z", "the later: the earlier is before the answer");
        assert_eq!(across.billable_seconds, 19 * 60);
        let within = rows[1].2.clone().unwrap().into_input("C-1").unwrap();
        assert_eq!(
            (within.start.to_rfc3339(), within.end.to_rfc3339()),
            ("2026-10-25T00:10:00Z".into(), "2026-10-25T00:20:00Z".into())
        );
    }

    proptest! {
        /// A row a switch in a named zone wrote in its local time is the CDR built by hand
        /// from the same local times with the zone's offset at each instant, for calls
        /// around and across the zone's offset changes. Local times the zone shows twice
        /// (the fold) are left to `a_call_across_the_fold_keeps_its_length`: a text alone
        /// cannot say which of the two it is.
        #[test]
        fn a_row_in_a_named_zone_is_read_with_the_offset_in_force_at_each_time(
            zone in prop::sample::select(ZONES.to_vec()),
            change in any::<prop::sample::Index>(),
            from_change in -4 * 3600i64..4 * 3600,
            ring in 0i64..60,
            talk in 0i64..3 * 3600,
            format in prop::sample::select(vec!["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "epoch"]),
        ) {
            use chrono::TimeZone;
            use MappedField::*;
            let changes = offset_changes(zone);
            let start = Timestamp::from_seconds(changes[change.index(changes.len())] + from_change);
            let answer = (talk > 0).then(|| start.add_seconds(ring));
            let end = start.add_seconds(ring + talk);
            let local = |at: Timestamp| DateTime::from_timestamp_micros(at.micros()).unwrap().with_timezone(&zone);
            for at in [Some(start), answer, Some(end)].into_iter().flatten() {
                prop_assume!(zone.from_local_datetime(&local(at).naive_local()).single().is_some());
            }
            let written = |at: Option<Timestamp>| match (at, format) {
                (None, _) => String::new(),
                (Some(at), "epoch") => (at.micros() / 1_000_000).to_string(),
                (Some(at), pattern) => local(at).format(pattern).to_string(),
            };
            let file = format!("c-1,1001,4930123,{},{},{},{talk}\n", written(Some(start)), written(answer), written(Some(end)));
            let columns: Vec<_> = [Id, AccountCode, Callee, Start, Answer, End, BillableSeconds]
                .into_iter()
                .zip(1u16..)
                .map(|(field, position)| (field, ColumnRef::Position(position)))
                .collect();
            let mapping = CsvMapping {
                header: false,
                time_format: format.into(),
                time_zone: zone.name().into(),
                ..mapping(&columns)
            };
            let mut table = SwitchTable::open_mapped(file.as_bytes(), mapping, None).unwrap();
            let mapped = table.next_cdr().unwrap().2.unwrap().into_input("C-1").unwrap();
            // The local time with the offset the zone had at that instant, as RFC 3339.
            let (start_text, end_text) = (local(start).to_rfc3339(), local(end).to_rfc3339());
            let answer_text = answer.map(|a| local(a).to_rfc3339());
            let talk_text = talk.to_string();
            let by_hand = CdrInput::from_fields(|name| match name {
                "id" => Some("c-1"),
                "account" => Some("C-1"),
                "callee" => Some("4930123"),
                "start" => Some(start_text.as_str()),
                "answer" => answer_text.as_deref(),
                "end" => Some(end_text.as_str()),
                "billable_seconds" => Some(talk_text.as_str()),
                _ => None,
            }).unwrap();
            prop_assert_eq!(mapped, by_hand);
        }
    }
}
