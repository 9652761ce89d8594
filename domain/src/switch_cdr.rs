//! CDRs as switches write them, read into tollbook's CDR fields: FreeSWITCH's
//! `mod_json_cdr` document and `mod_cdr_csv`'s default template, Asterisk's `cdr_csv`
//! (`Master.csv`), Kamailio's dialog CDRs (`acc` with `cdr_enable`, in its db_text table or
//! a CSV of the same columns). A record is read here, tied to an account by its
//! identifiers ([`crate::switch`]) by the caller, then becomes a [`CdrInput`] like any
//! other CDR: one rating path for every format.

use std::io::Read;

use chrono::NaiveDateTime;

use crate::cdr::CdrInput;
use crate::csv_mapping::{CsvMapping, MappingReader};
use crate::error::DomainError;
use crate::local_time::LocalZone;
use crate::switch::CdrIdentifiers;
use crate::time::Timestamp;

/// The formats a switch's CDRs arrive in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchFormat {
    /// tollbook's own CSV columns (`CDR_FIELDS`).
    Tollbook,
    /// FreeSWITCH `mod_json_cdr`: one JSON document per call (a file holds one per line).
    FreeswitchJson,
    /// FreeSWITCH `mod_cdr_csv` with its default (`example`) template, no header.
    FreeswitchCsv,
    /// Asterisk `cdr_csv`'s `Master.csv`, no header.
    AsteriskCsv,
    /// Kamailio `acc` dialog CDRs as the db_text table `acc_cdrs` holds them.
    KamailioDbText,
    /// Kamailio `acc` dialog CDRs as a CSV with a header of the table's columns.
    KamailioCsv,
}

impl SwitchFormat {
    pub const ALL: [SwitchFormat; 6] = [
        SwitchFormat::Tollbook,
        SwitchFormat::FreeswitchJson,
        SwitchFormat::FreeswitchCsv,
        SwitchFormat::AsteriskCsv,
        SwitchFormat::KamailioDbText,
        SwitchFormat::KamailioCsv,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SwitchFormat::Tollbook => "tollbook",
            SwitchFormat::FreeswitchJson => "freeswitch-json",
            SwitchFormat::FreeswitchCsv => "freeswitch-csv",
            SwitchFormat::AsteriskCsv => "asterisk-csv",
            SwitchFormat::KamailioDbText => "kamailio-dbtext",
            SwitchFormat::KamailioCsv => "kamailio-csv",
        }
    }

    pub fn parse(text: &str) -> Option<SwitchFormat> {
        SwitchFormat::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

/// A fixed offset from UTC (`+01:00`), one way to say where a switch's local times
/// (`2026-05-04 10:00:00`, no zone) are; the other is an IANA region
/// ([`LocalZone`]), whose offset follows the clock changes. FreeSWITCH's `*_stamp`,
/// Asterisk's times (unless `usegmtime=yes`) and Kamailio's formatted times are the
/// switch's local time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtcOffset {
    pub seconds: i32,
}

impl UtcOffset {
    /// `Z`, `UTC`, `+01:00`, `-0530`.
    pub fn parse(text: &str) -> Result<UtcOffset, DomainError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
            return Ok(UtcOffset::default());
        }
        let bad = || DomainError::InvalidField {
            field: "utc_offset",
            reason: format!("`{}` is not an offset such as +01:00 or UTC", text.chars().take(16).collect::<String>()),
        };
        let (sign, rest) = match text.as_bytes().first() {
            Some(b'+') => (1, &text[1..]),
            Some(b'-') => (-1, &text[1..]),
            _ => return Err(bad()),
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (hours, minutes): (i32, i32) =
            (digits[..2].parse().map_err(|_| bad())?, digits[2..].parse().map_err(|_| bad())?);
        if hours > 14 || minutes > 59 {
            return Err(bad());
        }
        Ok(UtcOffset { seconds: sign * (hours * 3600 + minutes * 60) })
    }
}

/// A switch's CDR read into tollbook's fields, not yet tied to an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeCdr {
    /// The switch's id of the call.
    pub id: String,
    /// What may tie it to an account.
    pub identifiers: CdrIdentifiers,
    /// tollbook's CDR fields (`CDR_FIELDS` names) as text.
    fields: Vec<(&'static str, String)>,
}

impl NativeCdr {
    pub(crate) fn new(id: String, identifiers: CdrIdentifiers, fields: Vec<(&'static str, String)>) -> NativeCdr {
        NativeCdr { id, identifiers, fields }
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The CDR charged to the account numbered `account`, checked like every CDR.
    pub fn into_input(self, account: &str) -> Result<CdrInput, DomainError> {
        CdrInput::from_fields(|name| match name {
            "id" => Some(self.id.as_str()),
            "account" => Some(account),
            other => self.field(other),
        })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::InvalidField { field, reason: reason.into() }
}

fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Seconds since the epoch, with an optional fraction (`1700000000`, `1700000000.25`).
pub(crate) fn epoch_seconds(text: &str) -> Option<Timestamp> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let mut micros_text: String = fraction.chars().take(6).collect();
    while micros_text.len() < 6 {
        micros_text.push('0');
    }
    let micros: i64 = micros_text.parse().ok()?;
    seconds.checked_mul(1_000_000)?.checked_add(micros).map(Timestamp::from_micros)
}

/// A time column of a switch's record: epoch seconds, an RFC 3339 time with its own zone,
/// or the switch's local time (`2026-05-04 10:00:00`, optionally with a fraction) in
/// `zone`. `not_before`, the call's start (or answer) when this is its answer (or end),
/// places a local time the zone's clocks showed twice (see [`crate::local_time`]); a local
/// time they skipped is refused, the error naming the column (`field`, and its position
/// `column` in a file without a header).
fn any_time(
    field: &'static str,
    column: Option<usize>,
    text: &str,
    zone: &LocalZone,
    not_before: Option<Timestamp>,
) -> Result<Timestamp, DomainError> {
    if let Some(at) = epoch_seconds(text) {
        return Ok(at);
    }
    if let Ok(local) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f") {
        return zone.instant(local, not_before).map_err(|why| {
            let column = column.map(|c| format!(" (column {c})")).unwrap_or_default();
            invalid(field, format!("`{}`{column} {why}", shown(text)))
        });
    }
    Timestamp::parse(text).filter(|_| text.contains('T')).ok_or_else(|| {
        invalid(field, format!("`{}` is neither epoch seconds nor a time such as 2026-05-04 10:00:00", shown(text)))
    })
}

/// `%XX` escapes decoded (mod_json_cdr URL-encodes variable values by default,
/// `encode-values`); a text that does not decode to UTF-8 is kept as sent.
fn percent_decoded(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[index] == b'%'
            && index + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[index + 1]), hex(bytes[index + 2]))
        {
            out.push((high * 16 + low) as u8);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// One `mod_json_cdr` document (FreeSWITCH's JSON CDR, as it POSTs it): the call's
/// `variables`, with `callflow[0].caller_profile` for the numbers when the variables lack
/// them.
pub fn freeswitch_json(document: &serde_json::Value) -> Result<NativeCdr, DomainError> {
    let variables = document
        .get("variables")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| invalid("variables", "a mod_json_cdr document has an object `variables`"))?;
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => Some(percent_decoded(text)),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    let var = |name: &str| variables.get(name).and_then(text).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let profile = document
        .get("callflow")
        .and_then(|flow| flow.as_array().and_then(|steps| steps.first()).or(Some(flow)))
        .and_then(|step| step.get("caller_profile"));
    let from_profile = |name: &str| {
        profile.and_then(|p| p.get(name)).and_then(text).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    };
    let id = var("uuid").ok_or_else(|| invalid("variables.uuid", "is required"))?;
    // Microseconds when FreeSWITCH gives them (`*_uepoch`), else whole seconds; 0 means never.
    let time = |name: &'static str| -> Result<Option<Timestamp>, DomainError> {
        let micro = var(&format!("{name}_uepoch")).filter(|v| v != "0");
        if let Some(text) = micro {
            let micros: i64 = text
                .parse()
                .map_err(|_| invalid("variables", format!("{name}_uepoch: `{}` is not a number", shown(&text))))?;
            return Ok(Some(Timestamp::from_micros(micros)));
        }
        match var(&format!("{name}_epoch")).filter(|v| v != "0") {
            None => Ok(None),
            Some(text) => epoch_seconds(&text)
                .map(Some)
                .ok_or_else(|| invalid("variables", format!("{name}_epoch: `{}` is not epoch seconds", shown(&text)))),
        }
    };
    let start = time("start")?.ok_or_else(|| invalid("variables.start_epoch", "is required"))?;
    let answer = time("answer")?;
    let end = time("end")?.ok_or_else(|| invalid("variables.end_epoch", "is required"))?;
    let caller = var("caller_id_number").or_else(|| from_profile("caller_id_number"));
    let callee = var("destination_number").or_else(|| from_profile("destination_number"));
    let mut fields = vec![("start", start.to_rfc3339()), ("end", end.to_rfc3339())];
    if let Some(answer) = answer {
        fields.push(("answer", answer.to_rfc3339()));
    }
    fields.extend(caller.clone().map(|c| ("caller", c)));
    fields.extend(callee.map(|c| ("callee", c)));
    fields.extend(var("billsec").map(|b| ("billable_seconds", b)));
    // The name keeps more than its Q.850 number (ORIGINATOR_CANCEL is 16 by number).
    fields.extend(var("hangup_cause").or_else(|| var("hangup_cause_q850")).map(|c| ("hangup_cause", c)));
    let identifiers =
        CdrIdentifiers { account_code: var("accountcode"), caller_id: caller, trunk: var("sip_gateway_name") };
    Ok(NativeCdr { id, identifiers, fields })
}

/// The columns of `mod_cdr_csv`'s default template (`example` in cdr_csv.conf.xml).
pub const FREESWITCH_CSV_COLUMNS: [&str; 15] = [
    "caller_id_name",
    "caller_id_number",
    "destination_number",
    "context",
    "start_stamp",
    "answer_stamp",
    "end_stamp",
    "duration",
    "billsec",
    "hangup_cause",
    "uuid",
    "bleg_uuid",
    "accountcode",
    "read_codec",
    "write_codec",
];

/// The columns of Asterisk's `Master.csv` (cdr_csv), the last two only with
/// `loguniqueid` and `loguserfield` on.
pub const ASTERISK_CSV_COLUMNS: [&str; 18] = [
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
];

/// One row of a CSV without a header, by the format's column names.
struct Columns<'r> {
    names: &'static [&'static str],
    record: &'r csv::StringRecord,
}

impl Columns<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let index = self.names.iter().position(|n| *n == name)?;
        self.record.get(index).map(str::trim).filter(|v| !v.is_empty())
    }

    /// A time column, if not empty (see [`any_time`]); the error names it by its name and
    /// its position from 1, since the file has no header to find it by.
    fn time(
        &self,
        name: &'static str,
        zone: &LocalZone,
        not_before: Option<Timestamp>,
    ) -> Result<Option<Timestamp>, DomainError> {
        let column = self.names.iter().position(|n| *n == name).map(|i| i + 1);
        self.get(name).map(|text| any_time(name, column, text, zone, not_before)).transpose()
    }
}

/// A stable id for a row that carries none (Asterisk without `loguniqueid`): the same row
/// read twice gets the same id, so a rerun is a duplicate, not a second charge.
fn row_id(prefix: &str, record: &csv::StringRecord) -> String {
    // FNV-1a, 64 bits: not a security boundary, only a name.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in record.iter() {
        for byte in field.bytes().chain([0x1f]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{prefix}-{hash:016x}")
}

fn freeswitch_csv_row(record: &csv::StringRecord, zone: &LocalZone) -> Result<NativeCdr, DomainError> {
    let row = Columns { names: &FREESWITCH_CSV_COLUMNS, record };
    if record.len() < 11 {
        return Err(invalid("line", format!("{} columns; mod_cdr_csv's default template has 15", record.len())));
    }
    let id = row.get("uuid").ok_or_else(|| invalid("uuid", "is required"))?.to_owned();
    let start = row.time("start_stamp", zone, None)?.ok_or_else(|| invalid("start_stamp", "is required"))?;
    let answer = row.time("answer_stamp", zone, Some(start))?;
    let end = row
        .time("end_stamp", zone, Some(answer.unwrap_or(start)))?
        .ok_or_else(|| invalid("end_stamp", "is required"))?;
    let mut fields = vec![("start", start.to_rfc3339()), ("end", end.to_rfc3339())];
    if let Some(answer) = answer {
        fields.push(("answer", answer.to_rfc3339()));
    }
    let caller = row.get("caller_id_number").map(str::to_owned);
    fields.extend(caller.clone().map(|c| ("caller", c)));
    fields.extend(row.get("destination_number").map(|c| ("callee", c.to_owned())));
    fields.extend(row.get("billsec").map(|b| ("billable_seconds", b.to_owned())));
    fields.extend(row.get("hangup_cause").map(|c| ("hangup_cause", c.to_owned())));
    let identifiers =
        CdrIdentifiers { account_code: row.get("accountcode").map(str::to_owned), caller_id: caller, trunk: None };
    Ok(NativeCdr { id, identifiers, fields })
}

/// The peer of an Asterisk channel name, its trunk: `SIP/carrier1-0000002a` → `carrier1`,
/// `PJSIP/carrier1-00000002` → `carrier1`.
pub fn asterisk_peer(channel: &str) -> Option<&str> {
    let (_, rest) = channel.split_once('/')?;
    let peer = rest.rsplit_once('-').map_or(rest, |(peer, _)| peer);
    Some(peer).filter(|p| !p.is_empty())
}

fn asterisk_csv_row(record: &csv::StringRecord, zone: &LocalZone) -> Result<NativeCdr, DomainError> {
    let row = Columns { names: &ASTERISK_CSV_COLUMNS, record };
    if record.len() < 16 {
        return Err(invalid("line", format!("{} columns; Master.csv has at least 16", record.len())));
    }
    let id = row.get("uniqueid").map_or_else(|| row_id("ast", record), str::to_owned);
    let start = row.time("start", zone, None)?.ok_or_else(|| invalid("start", "is required"))?;
    let answer = row.time("answer", zone, Some(start))?;
    let end = row.time("end", zone, Some(answer.unwrap_or(start)))?.ok_or_else(|| invalid("end", "is required"))?;
    let mut fields = vec![("start", start.to_rfc3339()), ("end", end.to_rfc3339())];
    if let Some(answer) = answer {
        fields.push(("answer", answer.to_rfc3339()));
    }
    let caller = row.get("src").map(str::to_owned);
    fields.extend(caller.clone().map(|c| ("caller", c)));
    fields.extend(row.get("dst").map(|c| ("callee", c.to_owned())));
    fields.extend(row.get("billsec").map(|b| ("billable_seconds", b.to_owned())));
    fields.extend(row.get("disposition").map(|c| ("hangup_cause", c.to_owned())));
    let identifiers = CdrIdentifiers {
        account_code: row.get("accountcode").map(str::to_owned),
        caller_id: caller,
        trunk: row.get("channel").and_then(asterisk_peer).map(str::to_owned),
    };
    Ok(NativeCdr { id, identifiers, fields })
}

/// Kamailio's dialog CDR columns tollbook reads: the three the `acc` module always writes
/// (`cdr_start_id`, `cdr_end_id`, `cdr_duration_id` at their defaults) and the
/// `cdr_extra` names the docs page sets up.
pub const KAMAILIO_COLUMNS: [&str; 9] =
    ["start_time", "end_time", "duration", "callid", "src_user", "dst_user", "src_ip", "accountcode", "sip_code"];

fn kamailio_row(get: &dyn Fn(&str) -> Option<String>, zone: &LocalZone) -> Result<NativeCdr, DomainError> {
    let id = get("callid").ok_or_else(|| invalid("callid", "is required (cdr_extra callid=$dlg(callid))"))?;
    let start_text = get("start_time").ok_or_else(|| invalid("start_time", "is required"))?;
    // The header names the columns: their names are enough to find them by.
    let start = any_time("start_time", None, &start_text, zone, None)?;
    let duration = match get("duration") {
        None => None,
        Some(text) => Some(
            epoch_seconds(&text)
                .map(|t| t.micros())
                .ok_or_else(|| invalid("duration", format!("`{}` is not a number of seconds", shown(&text))))?,
        ),
    };
    let end = match get("end_time") {
        Some(text) => any_time("end_time", None, &text, zone, Some(start))?,
        None => Timestamp::from_micros(
            start.micros() + duration.ok_or_else(|| invalid("end_time", "is required without `duration`"))?,
        ),
    };
    let status: Option<u16> = get("sip_code").and_then(|c| c.parse().ok());
    // A dialog CDR starts when the dialog does, or at its confirmation with
    // `cdr_start_on_confirmed`; a failed dialog (cdr_on_failed) has a final status >= 300.
    let answered = status.is_none_or(|s| s < 300) && duration.is_some_and(|d| d > 0);
    let mut fields = vec![("start", start.to_rfc3339()), ("end", end.to_rfc3339())];
    if answered {
        let answer = Timestamp::from_micros(end.micros() - duration.unwrap_or(0)).max(start);
        fields.push(("answer", answer.to_rfc3339()));
        fields.push(("billable_seconds", (duration.unwrap_or(0) / 1_000_000).to_string()));
    }
    let caller = get("src_user");
    fields.extend(caller.clone().map(|c| ("caller", c)));
    fields.extend(get("dst_user").map(|c| ("callee", c)));
    fields.extend(get("sip_code").map(|c| ("hangup_cause", format!("sip:{c}"))));
    let identifiers = CdrIdentifiers { account_code: get("accountcode"), caller_id: caller, trunk: get("src_ip") };
    Ok(NativeCdr { id, identifiers, fields })
}

/// A db_text row's fields: `:` separates them, `\:` `\\` `\n` `\r` `\t` escape.
fn dbtext_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => fields.last_mut().expect("one field").push('\n'),
                Some('r') => fields.last_mut().expect("one field").push('\r'),
                Some('t') => fields.last_mut().expect("one field").push('\t'),
                Some('0') => {}
                Some(other) => fields.last_mut().expect("one field").push(other),
                None => {}
            },
            ':' => fields.push(String::new()),
            other => fields.last_mut().expect("one field").push(other),
        }
    }
    fields
}

/// A file of switch CDRs, read record by record; a bad record rejects only itself.
pub struct SwitchTable<R: Read> {
    format: SwitchFormat,
    /// A file read through a column mapping instead of a switch's own format.
    mapped: Option<Box<MappingReader>>,
    /// Where the format's local times are.
    zone: LocalZone,
    inner: Inner<R>,
    /// Kamailio: the column names, from the file's header.
    header: Vec<String>,
    io_failure: Option<String>,
}

enum Inner<R: Read> {
    Csv { reader: csv::Reader<R>, record: csv::StringRecord },
    Lines { reader: std::io::BufReader<R>, line: u64, bytes: u64, buffer: String },
}

/// The longest line of a line-based file (a mod_json_cdr document with every variable is
/// a few tens of kilobytes): past it the file is not what its format says.
pub const SWITCH_LINE_BYTES_MAX: usize = 1 << 20;

impl<R: Read> SwitchTable<R> {
    /// Opens a file in `format`, its local times in `zone`. `Tollbook` is not read here
    /// (see `csv_file::cdr_table`).
    pub fn open(input: R, format: SwitchFormat, zone: LocalZone) -> Result<SwitchTable<R>, DomainError> {
        let inner = match format {
            SwitchFormat::FreeswitchJson | SwitchFormat::KamailioDbText => Inner::Lines {
                reader: std::io::BufReader::with_capacity(1 << 16, input),
                line: 0,
                bytes: 0,
                buffer: String::new(),
            },
            SwitchFormat::FreeswitchCsv | SwitchFormat::AsteriskCsv | SwitchFormat::KamailioCsv => Inner::Csv {
                reader: csv::ReaderBuilder::new()
                    .has_headers(format == SwitchFormat::KamailioCsv)
                    .flexible(true)
                    .from_reader(input),
                record: csv::StringRecord::new(),
            },
            SwitchFormat::Tollbook => return Err(invalid("format", "tollbook's own CSV is read as a CDR table")),
        };
        let mut table = SwitchTable { format, zone, mapped: None, inner, header: Vec::new(), io_failure: None };
        match &mut table.inner {
            Inner::Csv { reader, .. } if format == SwitchFormat::KamailioCsv => {
                let header = reader.headers().map_err(|e| invalid("header", e.to_string()))?;
                table.header = header.iter().map(|h| h.trim().to_owned()).collect();
            }
            Inner::Lines { reader, line, bytes, buffer } if format == SwitchFormat::KamailioDbText => {
                use std::io::BufRead;
                let read = reader.read_line(buffer).map_err(|e| invalid("header", e.to_string()))?;
                *line += 1;
                *bytes += read as u64;
                // `id(int,auto) start_time(int) ...`: a column's name is before its type.
                table.header = buffer.split_whitespace().map(|c| c.split('(').next().unwrap_or(c).to_owned()).collect();
                buffer.clear();
            }
            _ => {}
        }
        if matches!(format, SwitchFormat::KamailioCsv | SwitchFormat::KamailioDbText) {
            for required in ["start_time", "callid"] {
                if !table.header.iter().any(|h| h == required) {
                    return Err(invalid("header", format!("the header has no `{required}` column")));
                }
            }
        }
        Ok(table)
    }

    /// Opens a CSV file read through a column mapping; `zone`, when given, replaces the
    /// mapping's time zone (a ready-made mapping does not know the switch's).
    pub fn open_mapped(input: R, mapping: CsvMapping, zone: Option<LocalZone>) -> Result<SwitchTable<R>, DomainError> {
        let delimiter = u8::try_from(mapping.delimiter)
            .map_err(|_| invalid("delimiter", "one ASCII character other than a quote or a line break"))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(mapping.header)
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(input);
        let header = if mapping.header {
            Some(reader.headers().map_err(|e| invalid("header", format!("unreadable header row: {e}")))?.clone())
        } else {
            None
        };
        let mapped = MappingReader::new(mapping, header.as_ref(), zone)?;
        Ok(SwitchTable {
            // Not read: `mapped` decides how a record is read.
            format: SwitchFormat::Tollbook,
            // Not read either: the mapping's reader has its zone.
            zone: LocalZone::default(),
            mapped: Some(Box::new(mapped)),
            inner: Inner::Csv { reader, record: csv::StringRecord::new() },
            header: Vec::new(),
            io_failure: None,
        })
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.inner {
            Inner::Csv { reader, .. } => reader.position().byte(),
            Inner::Lines { bytes, .. } => *bytes,
        }
    }

    pub fn io_failure(&self) -> Option<&str> {
        self.io_failure.as_deref()
    }

    /// The next record: its line, its id when it could be read that far, and the CDR.
    pub fn next_cdr(&mut self) -> Option<(u64, Option<String>, Result<NativeCdr, DomainError>)> {
        let (format, zone) = (self.format, self.zone);
        match &mut self.inner {
            Inner::Csv { reader, record } => match reader.read_record(record) {
                Ok(false) => None,
                Err(error) if matches!(error.kind(), csv::ErrorKind::Io(_)) => {
                    self.io_failure = Some(error.to_string());
                    None
                }
                Err(error) => {
                    let line = error.position().map_or(0, |p| p.line());
                    Some((line, None, Err(invalid("line", format!("not valid CSV: {error}")))))
                }
                Ok(true) if self.mapped.is_some() => {
                    let mapped = self.mapped.as_ref().expect("checked");
                    let line = record.position().map_or(0, |p| p.line());
                    let parsed = mapped.row(record);
                    let id = parsed.as_ref().map(|cdr| cdr.id.clone()).ok().or_else(|| mapped.id_of(record));
                    Some((line, id, parsed))
                }
                Ok(true) => {
                    let line = record.position().map_or(0, |p| p.line());
                    let parsed = match format {
                        SwitchFormat::FreeswitchCsv => freeswitch_csv_row(record, &zone),
                        SwitchFormat::AsteriskCsv => asterisk_csv_row(record, &zone),
                        _ => {
                            let header = &self.header;
                            let get = |name: &str| {
                                header
                                    .iter()
                                    .position(|h| h == name)
                                    .and_then(|i| record.get(i))
                                    .map(|v| v.trim().to_owned())
                                    .filter(|v| !v.is_empty())
                            };
                            kamailio_row(&get, &zone)
                        }
                    };
                    let id = match &parsed {
                        Ok(cdr) => Some(cdr.id.clone()),
                        Err(_) => match format {
                            SwitchFormat::FreeswitchCsv => record.get(10).map(str::to_owned),
                            SwitchFormat::AsteriskCsv => record.get(16).map(str::to_owned),
                            _ => self
                                .header
                                .iter()
                                .position(|h| h == "callid")
                                .and_then(|i| record.get(i))
                                .map(str::to_owned),
                        },
                    };
                    Some((line, id, parsed))
                }
            },
            Inner::Lines { reader, line, bytes, buffer } => {
                use std::io::BufRead;
                loop {
                    buffer.clear();
                    let read = match reader.by_ref().take(SWITCH_LINE_BYTES_MAX as u64 + 1).read_line(buffer) {
                        Ok(0) => return None,
                        Ok(read) => read,
                        Err(error) => {
                            self.io_failure = Some(error.to_string());
                            return None;
                        }
                    };
                    *line += 1;
                    *bytes += read as u64;
                    if read > SWITCH_LINE_BYTES_MAX {
                        self.io_failure = Some(format!("line {line} is longer than {SWITCH_LINE_BYTES_MAX} bytes"));
                        return None;
                    }
                    let text = buffer.trim_end_matches(['\n', '\r']);
                    if text.trim().is_empty() {
                        continue;
                    }
                    return Some(match format {
                        SwitchFormat::FreeswitchJson => match serde_json::from_str::<serde_json::Value>(text) {
                            Err(error) => (*line, None, Err(invalid("line", format!("not a JSON document: {error}")))),
                            Ok(document) => {
                                let id = document["variables"]["uuid"].as_str().map(str::to_owned);
                                (*line, id, freeswitch_json(&document))
                            }
                        },
                        _ => {
                            let values = dbtext_fields(text);
                            let header = &self.header;
                            let get = |name: &str| {
                                header
                                    .iter()
                                    .position(|h| h == name)
                                    .and_then(|i| values.get(i))
                                    .map(|v| v.trim().to_owned())
                                    .filter(|v| !v.is_empty())
                            };
                            let parsed = kamailio_row(&get, &zone);
                            (*line, get("callid"), parsed)
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(format: SwitchFormat, text: &str) -> Vec<(u64, Option<String>, Result<NativeCdr, DomainError>)> {
        let mut table = SwitchTable::open(text.as_bytes(), format, LocalZone::default()).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = table.next_cdr() {
            rows.push(row);
        }
        assert_eq!(table.io_failure(), None);
        assert_eq!(table.bytes_read(), text.len() as u64);
        rows
    }

    fn charged(cdr: NativeCdr) -> CdrInput {
        cdr.into_input("C-1").unwrap()
    }

    /// A document as mod_json_cdr POSTs it (FreeSWITCH documentation, "mod_json_cdr":
    /// `core-uuid`, `switchname`, `channel_data`, `variables` with values URL-encoded by
    /// default (`encode-values`), `app_log`, `callflow` with the `caller_profile`).
    const FREESWITCH_DOCUMENT: &str = r#"{"core-uuid":"3b4c8e0a-1f2b-4c5d-8e9f-0a1b2c3d4e5f","switchname":"fs1",
        "channel_data":{"state":"CS_REPORTING","direction":"inbound"},
        "variables":{"uuid":"a1b2c3d4-0000-4000-8000-000000000001","direction":"inbound",
            "accountcode":"1001","sip_gateway_name":"carrier1","caller_id_number":"%2B4940111",
            "destination_number":"4930123456","start_epoch":"1777888800","answer_epoch":"1777888802",
            "end_epoch":"1777888867","start_uepoch":"1777888800000000","answer_uepoch":"1777888802250000",
            "end_uepoch":"1777888867500000","start_stamp":"2026-05-04%2010%3A00%3A00",
            "duration":"67","billsec":"65","hangup_cause":"ORIGINATOR_CANCEL","hangup_cause_q850":"16",
            "sip_hangup_disposition":"recv_bye"},
        "app_log":{"applications":[{"app_name":"bridge","app_data":"sofia/gateway/carrier1/4930123456"}]},
        "callflow":[{"profile_index":"1","caller_profile":{"caller_id_number":"+4940111","destination_number":"4930123456"}}]}"#;

    #[test]
    fn a_mod_json_cdr_document_is_read() {
        let document: serde_json::Value = serde_json::from_str(FREESWITCH_DOCUMENT).unwrap();
        let cdr = freeswitch_json(&document).unwrap();
        assert_eq!(cdr.id, "a1b2c3d4-0000-4000-8000-000000000001");
        assert_eq!(
            cdr.identifiers,
            CdrIdentifiers {
                account_code: Some("1001".into()),
                caller_id: Some("+4940111".into()),
                trunk: Some("carrier1".into())
            }
        );
        let input = charged(cdr);
        assert_eq!(input.caller, "+4940111", "URL-encoded values are decoded");
        assert_eq!(input.callee, "4930123456");
        assert_eq!(input.start, Timestamp::from_seconds(1_777_888_800));
        assert_eq!(input.answer, Some(Timestamp::from_micros(1_777_888_802_250_000)));
        assert_eq!(input.billable_seconds, 65);
        assert_eq!((input.hangup_cause, input.hangup_cause_raw.as_deref()), (16, Some("ORIGINATOR_CANCEL")));
        assert!(input.charged());
    }

    #[test]
    fn an_unanswered_freeswitch_call_and_a_broken_document() {
        let mut document: serde_json::Value = serde_json::from_str(FREESWITCH_DOCUMENT).unwrap();
        for name in ["answer_epoch", "answer_uepoch", "billsec"] {
            document["variables"][name] = serde_json::json!("0");
        }
        document["variables"]["hangup_cause"] = serde_json::json!("NO_ANSWER");
        let input = charged(freeswitch_json(&document).unwrap());
        assert_eq!((input.answer, input.billable_seconds, input.hangup_cause), (None, 0, 19));
        let no_uuid = serde_json::json!({"variables": {"start_epoch": "1"}});
        assert_eq!(freeswitch_json(&no_uuid).unwrap_err().field(), Some("variables.uuid"));
        assert_eq!(freeswitch_json(&serde_json::json!({})).unwrap_err().field(), Some("variables"));
        // One document a line, as a file of them.
        let file = format!("{}\nnot json\n", FREESWITCH_DOCUMENT.replace('\n', " "));
        let rows = one(SwitchFormat::FreeswitchJson, &file);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.as_deref(), Some("a1b2c3d4-0000-4000-8000-000000000001"));
        assert_eq!((rows[1].0, rows[1].2.as_ref().unwrap_err().field()), (2, Some("line")));
    }

    /// mod_cdr_csv's default template, `example` in the cdr_csv.conf.xml FreeSWITCH
    /// ships: `"${caller_id_name}","${caller_id_number}","${destination_number}",
    /// "${context}","${start_stamp}","${answer_stamp}","${end_stamp}","${duration}",
    /// "${billsec}","${hangup_cause}","${uuid}","${bleg_uuid}","${accountcode}",
    /// "${read_codec}","${write_codec}"`, times in the switch's local time.
    #[test]
    fn mod_cdr_csv_rows_are_read_in_the_switch_local_time() {
        let file = "\"Alice\",\"4940111\",\"4930123456\",\"default\",\"2026-05-04 12:00:00\",\"2026-05-04 12:00:02\",\
                    \"2026-05-04 12:01:07\",\"67\",\"65\",\"NORMAL_CLEARING\",\"fs-csv-1\",\"\",\"1001\",\"PCMA\",\"PCMA\"\n\
                    \"Bob\",\"4940222\",\"4930999\",\"default\",\"2026-05-04 12:05:00\",\"\",\
                    \"2026-05-04 12:05:20\",\"20\",\"0\",\"NO_ANSWER\",\"fs-csv-2\",\"\",\"1001\",\"PCMA\",\"PCMA\"\n";
        let mut table =
            SwitchTable::open(file.as_bytes(), SwitchFormat::FreeswitchCsv, UtcOffset::parse("+02:00").unwrap().into())
                .unwrap();
        let (line, id, first) = table.next_cdr().unwrap();
        assert_eq!((line, id.as_deref()), (1, Some("fs-csv-1")));
        let first = first.unwrap();
        assert_eq!(first.identifiers.account_code.as_deref(), Some("1001"));
        let first = charged(first);
        assert_eq!(first.start, Timestamp::from_seconds(1_777_888_800), "12:00 at +02:00 is 10:00 UTC");
        assert_eq!(first.billable_seconds, 65);
        let second = charged(table.next_cdr().unwrap().2.unwrap());
        assert_eq!((second.answer, second.hangup_cause), (None, 19));
        assert!(table.next_cdr().is_none());
    }

    /// Asterisk's Master.csv (cdr_csv; the column list is in the Asterisk documentation,
    /// "CDR Fields", and cdr_csv.c): accountcode, src, dst, dcontext, clid, channel,
    /// dstchannel, lastapp, lastdata, start, answer, end, duration, billsec, disposition,
    /// amaflags, then uniqueid and userfield when `loguniqueid` / `loguserfield` are on.
    #[test]
    fn master_csv_rows_are_read_with_their_dispositions() {
        let file = "\"1001\",\"4940111\",\"4930123456\",\"default\",\"\"\"Alice\"\" <4940111>\",\"SIP/carrier1-0000002a\",\
                    \"SIP/out-0000002b\",\"Dial\",\"SIP/out/4930123456,30\",\"2026-05-04 10:00:00\",\"2026-05-04 10:00:02\",\
                    \"2026-05-04 10:01:07\",67,65,\"ANSWERED\",\"DOCUMENTATION\",\"1777888800.42\",\"\"\n\
                    \"1001\",\"4940111\",\"4930999\",\"default\",\"\",\"PJSIP/carrier1-00000002\",\"\",\"Dial\",\"\",\
                    \"2026-05-04 10:05:00\",\"\",\"2026-05-04 10:05:30\",30,0,\"NO ANSWER\",\"DOCUMENTATION\"\n\
                    \"1001\",\"4940111\",\"4930999\",\"default\",\"\",\"SIP/x-1\",\"\",\"Dial\",\"\",\"soon\",\"\",\"later\",1,0,\"BUSY\",\"DOCUMENTATION\",\"u-3\",\"\"\n";
        let rows = one(SwitchFormat::AsteriskCsv, file);
        let (_, id, first) = &rows[0];
        assert_eq!(id.as_deref(), Some("1777888800.42"));
        let first = first.clone().unwrap();
        assert_eq!(
            first.identifiers,
            CdrIdentifiers {
                account_code: Some("1001".into()),
                caller_id: Some("4940111".into()),
                trunk: Some("carrier1".into())
            }
        );
        let first = charged(first);
        assert_eq!(
            (first.billable_seconds, first.hangup_cause, first.hangup_cause_raw.as_deref()),
            (65, 16, Some("ANSWERED"))
        );
        // Without `loguniqueid` the row's id is a digest of the row: the same row, the same id.
        let second = rows[1].2.clone().unwrap();
        assert!(second.id.starts_with("ast-"), "{}", second.id);
        assert_eq!(second.identifiers.trunk.as_deref(), Some("carrier1"));
        assert_eq!(one(SwitchFormat::AsteriskCsv, file)[1].2.as_ref().unwrap().id, second.id);
        let second = charged(second);
        assert_eq!((second.answer, second.hangup_cause), (None, 19));
        let (line, id, bad) = &rows[2];
        assert_eq!((*line, id.as_deref(), bad.as_ref().unwrap_err().field()), (3, Some("u-3"), Some("start")));
    }

    /// Kamailio's dialog CDRs (acc module README, "Call Data Record generation": the
    /// `start_time`, `end_time` and `duration` the module always writes, plus the
    /// `cdr_extra` columns) in the db_text table `acc_cdrs`, whose header Kamailio ships as
    /// `id(int,auto) start_time(int) end_time(int) duration(double)` (utils/kamctl/dbtext).
    #[test]
    fn kamailio_acc_cdrs_are_read_from_db_text_and_csv() {
        let file = "id(int,auto) start_time(int) end_time(int) duration(double) callid(string) src_user(string) \
                    dst_user(string) src_ip(string) sip_code(string)\n\
                    1:1777888800:1777888865:65.250:a84b4c76e66710\\:1@pc33.example.com:4940111:4930123456:192.0.2.10:200\n\
                    2:1777889100:1777889100:0.000:b1@pc33.example.com:4940111:4930999:192.0.2.10:486\n";
        let rows = one(SwitchFormat::KamailioDbText, file);
        let (line, id, first) = &rows[0];
        assert_eq!((*line, id.as_deref()), (2, Some("a84b4c76e66710:1@pc33.example.com")));
        let first = first.clone().unwrap();
        assert_eq!(first.identifiers.trunk.as_deref(), Some("192.0.2.10"));
        let first = charged(first);
        assert_eq!((first.billable_seconds, first.hangup_cause, first.callee.as_str()), (65, 16, "4930123456"));
        let busy = charged(rows[1].2.clone().unwrap());
        assert_eq!((busy.answer, busy.hangup_cause), (None, 17));

        let csv = "start_time,end_time,duration,callid,src_user,dst_user,src_ip,sip_code\n\
                   2026-05-04 10:00:00,2026-05-04 10:01:05,65,k-1,4940111,4930123456,192.0.2.10,200\n";
        let rows = one(SwitchFormat::KamailioCsv, csv);
        assert_eq!(charged(rows[0].2.clone().unwrap()).billable_seconds, 65);
        let no_callid =
            SwitchTable::open("start_time,end_time\n".as_bytes(), SwitchFormat::KamailioCsv, LocalZone::default());
        assert_eq!(no_callid.err().and_then(|e| e.field()), Some("header"));
    }

    /// Every record of `file` in `format` with its times in `zone`.
    fn in_zone(
        format: SwitchFormat,
        zone: &str,
        file: &str,
    ) -> Vec<(u64, Option<String>, Result<NativeCdr, DomainError>)> {
        let mut table =
            SwitchTable::open(file.as_bytes(), format, LocalZone::parse("time_zone", zone).unwrap()).unwrap();
        std::iter::from_fn(|| table.next_cdr()).collect()
    }

    fn times(cdr: &CdrInput) -> (String, Option<String>, String) {
        (cdr.start.to_rfc3339(), cdr.answer.map(|a| a.to_rfc3339()), cdr.end.to_rfc3339())
    }

    /// Master.csv in Berlin's local time: Asterisk writes the switch's local time unless
    /// `usegmtime=yes` (the `[csv]` section of Asterisk's configs/samples/cdr.conf.sample:
    /// `usegmtime=yes ; log date/time in GMT.  Default is "no"`). Berlin (tzdata
    /// Europe/Berlin) goes from +01:00 to +02:00 at 02:00 on 29 March 2026 and back at
    /// 03:00 on 25 October 2026.
    #[test]
    fn master_csv_in_a_named_zone_follows_its_clock_changes() {
        let row = |start: &str, answer: &str, end: &str, billsec: u32, id: &str| {
            format!(
                "\"1001\",\"4940111\",\"4930123456\",\"default\",\"\",\"SIP/carrier1-0000002a\",\"SIP/out-0000002b\",\
                 \"Dial\",\"SIP/out/4930123456,30\",\"{start}\",\"{answer}\",\"{end}\",0,{billsec},\"ANSWERED\",\
                 \"DOCUMENTATION\",\"{id}\",\"\"\n"
            )
        };
        let file = [
            row("2026-01-15 12:00:00", "2026-01-15 12:00:02", "2026-01-15 12:01:02", 60, "winter"),
            row("2026-07-01 12:00:00", "2026-07-01 12:00:02", "2026-07-01 12:01:02", 60, "summer"),
            // Across the spring change: a minute of talk, from before 02:00 to after 03:00.
            row("2026-03-29 01:59:30", "2026-03-29 03:00:00", "2026-03-29 03:01:00", 60, "spring"),
            // Across the autumn change: answered at 02:50 summer time, ended at 02:10 winter time.
            row("2026-10-25 02:50:00", "2026-10-25 02:50:05", "2026-10-25 02:10:00", 1195, "autumn"),
            // Wholly inside the repeated hour: the earlier instants.
            row("2026-10-25 02:10:00", "2026-10-25 02:10:05", "2026-10-25 02:20:00", 595, "fold"),
            row("2026-03-29 02:30:00", "2026-03-29 03:30:05", "2026-03-29 03:31:00", 55, "gap-start"),
            row("2026-03-29 01:50:00", "2026-03-29 01:50:05", "2026-03-29 02:01:00", 655, "gap-end"),
        ]
        .concat();
        let rows = in_zone(SwitchFormat::AsteriskCsv, "Europe/Berlin", &file);
        let read = |index: usize| charged(rows[index].2.clone().unwrap());
        let z = |text: &str| text.to_owned();
        assert_eq!(
            times(&read(0)),
            (z("2026-01-15T11:00:00Z"), Some(z("2026-01-15T11:00:02Z")), z("2026-01-15T11:01:02Z"))
        );
        assert_eq!(
            times(&read(1)),
            (z("2026-07-01T10:00:00Z"), Some(z("2026-07-01T10:00:02Z")), z("2026-07-01T10:01:02Z"))
        );
        assert_eq!(
            times(&read(2)),
            (z("2026-03-29T00:59:30Z"), Some(z("2026-03-29T01:00:00Z")), z("2026-03-29T01:01:00Z"))
        );
        let autumn = read(3);
        assert_eq!(
            times(&autumn),
            (z("2026-10-25T00:50:00Z"), Some(z("2026-10-25T00:50:05Z")), z("2026-10-25T01:10:00Z")),
            "the end's earlier instant is before the answer: the later one"
        );
        assert_eq!(autumn.billable_seconds, 1195);
        assert_eq!(
            times(&read(4)),
            (z("2026-10-25T00:10:00Z"), Some(z("2026-10-25T00:10:05Z")), z("2026-10-25T00:20:00Z"))
        );
        let skipped = "is not a time in Europe/Berlin: its clocks skipped it, going from +01:00 to +02:00";
        let (line, id, error) = &rows[5];
        let error = error.clone().unwrap_err();
        assert_eq!((*line, id.as_deref(), error.field()), (6, Some("gap-start"), Some("start")));
        assert_eq!(error.to_string(), format!("start: `2026-03-29 02:30:00` (column 10) {skipped}"));
        let (line, id, error) = &rows[6];
        let error = error.clone().unwrap_err();
        assert_eq!((*line, id.as_deref(), error.field()), (7, Some("gap-end"), Some("end")));
        assert_eq!(error.to_string(), format!("end: `2026-03-29 02:01:00` (column 12) {skipped}"));
        // With no zone given, the times are UTC, as before.
        let utc = one(SwitchFormat::AsteriskCsv, &file);
        assert_eq!(charged(utc[0].2.clone().unwrap()).start.to_rfc3339(), "2026-01-15T12:00:00Z");
        assert_eq!(charged(utc[5].2.clone().unwrap()).start.to_rfc3339(), "2026-03-29T02:30:00Z");
    }

    /// mod_cdr_csv's default template (`example` in the cdr_csv.conf.xml FreeSWITCH ships)
    /// writes `${start_stamp}`, `${answer_stamp}` and `${end_stamp}`: the "date and time"
    /// forms of `start_epoch` and the others (FreeSWITCH documentation, "Switch core
    /// variables"), which switch_channel.c formats as `%Y-%m-%d %T` in the switch's local
    /// time (`switch_time_exp_lt`). New York
    /// (tzdata America/New_York) skips 02:00–03:00 on 8 March 2026 and repeats 01:00–02:00
    /// on 1 November 2026.
    #[test]
    fn mod_cdr_csv_in_a_named_zone_follows_its_clock_changes() {
        let row = |start: &str, answer: &str, end: &str, billsec: u32, uuid: &str| {
            format!(
                "\"Alice\",\"4940111\",\"4930123456\",\"default\",\"{start}\",\"{answer}\",\"{end}\",\"0\",\
                 \"{billsec}\",\"NORMAL_CLEARING\",\"{uuid}\",\"\",\"1001\",\"PCMA\",\"PCMA\"\n"
            )
        };
        let file = [
            row("2026-03-08 01:59:00", "2026-03-08 01:59:10", "2026-03-08 03:00:10", 60, "fs-spring"),
            row("2026-11-01 01:40:00", "2026-11-01 01:40:02", "2026-11-01 01:10:00", 1798, "fs-autumn"),
            row("2026-03-08 01:50:00", "2026-03-08 02:15:00", "2026-03-08 03:20:00", 300, "fs-gap"),
            row("2026-11-01 01:30:00", "", "2026-11-01 01:30:20", 0, "fs-unanswered"),
        ]
        .concat();
        let rows = in_zone(SwitchFormat::FreeswitchCsv, "America/New_York", &file);
        let read = |index: usize| charged(rows[index].2.clone().unwrap());
        let z = |text: &str| text.to_owned();
        assert_eq!(
            times(&read(0)),
            (z("2026-03-08T06:59:00Z"), Some(z("2026-03-08T06:59:10Z")), z("2026-03-08T07:00:10Z"))
        );
        assert_eq!(
            times(&read(1)),
            (z("2026-11-01T05:40:00Z"), Some(z("2026-11-01T05:40:02Z")), z("2026-11-01T06:10:00Z")),
            "answered in daylight time, ended after the clocks went back"
        );
        let (line, id, error) = &rows[2];
        let error = error.clone().unwrap_err();
        assert_eq!((*line, id.as_deref(), error.field()), (3, Some("fs-gap"), Some("answer_stamp")));
        assert_eq!(
            error.to_string(),
            "answer_stamp: `2026-03-08 02:15:00` (column 6) is not a time in America/New_York: its clocks skipped it, \
             going from -05:00 to -04:00"
        );
        assert_eq!(
            times(&read(3)),
            (z("2026-11-01T05:30:00Z"), None, z("2026-11-01T05:30:20Z")),
            "the earlier instants"
        );
    }

    /// Kamailio's dialog CDRs with formatted times (the acc module README, "Call Data Record
    /// generation": `start_time` and `end_time` are the dialog's start and end; written as
    /// `YYYY-MM-DD HH:MM:SS` when the table's columns are datetimes, in the database server's
    /// local time), Berlin's.
    #[test]
    fn kamailio_formatted_times_in_a_named_zone() {
        let csv = "start_time,end_time,duration,callid,src_user,dst_user,src_ip,sip_code\n\
                   2026-10-25 02:50:00,2026-10-25 02:10:00,1200,k-autumn,4940111,4930123456,192.0.2.10,200\n\
                   2026-03-29 02:30:00,2026-03-29 03:31:00,60,k-gap,4940111,4930123456,192.0.2.10,200\n";
        let rows = in_zone(SwitchFormat::KamailioCsv, "Europe/Berlin", csv);
        let autumn = charged(rows[0].2.clone().unwrap());
        assert_eq!(
            (autumn.start.to_rfc3339(), autumn.end.to_rfc3339(), autumn.billable_seconds),
            ("2026-10-25T00:50:00Z".to_owned(), "2026-10-25T01:10:00Z".to_owned(), 1200)
        );
        let (line, id, error) = &rows[1];
        let error = error.clone().unwrap_err();
        assert_eq!((*line, id.as_deref(), error.field()), (3, Some("k-gap"), Some("start_time")));
        assert_eq!(
            error.to_string(),
            "start_time: `2026-03-29 02:30:00` is not a time in Europe/Berlin: its clocks skipped it, going from +01:00 \
             to +02:00"
        );
    }

    #[test]
    fn offsets_and_epochs() {
        assert_eq!(UtcOffset::parse("+01:00").unwrap().seconds, 3600);
        assert_eq!(UtcOffset::parse("-0530").unwrap().seconds, -19800);
        assert_eq!(UtcOffset::parse("UTC").unwrap().seconds, 0);
        for bad in ["01:00", "+1", "+25:00", "CET"] {
            assert_eq!(UtcOffset::parse(bad).unwrap_err().field(), Some("utc_offset"), "{bad}");
        }
        assert_eq!(epoch_seconds("1.5"), Some(Timestamp::from_micros(1_500_000)));
        assert_eq!(epoch_seconds("x"), None);
        assert_eq!(asterisk_peer("SIP/carrier1-0000002a"), Some("carrier1"));
        assert_eq!(asterisk_peer("Local/100@default-00000001;1"), Some("100@default"));
        assert_eq!(percent_decoded("%2B49%20x%zz"), "+49 x%zz");
    }
}
