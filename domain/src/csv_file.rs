//! CSV files with a header row naming their columns (any order, unknown columns refused),
//! read row by row so that a bad row rejects only itself, and the ledger's CDR file format
//! (the columns of a CDR upload or export).
//!
//! Pure parsing: the caller hands over any `Read` (a file, an upload's bytes) and does the
//! I/O; a reader's failure ends the reading and is reported by [`CsvTable::io_failure`].
//! Here rather than in `commands` because the read side (reconciliation of an outside CDR
//! file) reads the same format, and it must not depend on the write side.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use crate::DomainError;
use crate::cdr::CdrInput;

/// A CSV file with a header row naming its columns, any order, any subset of `known`
/// that includes `required`.
pub struct CsvTable<R: Read> {
    reader: csv::Reader<R>,
    columns: HashMap<String, usize>,
    record: csv::StringRecord,
    io_failure: Option<String>,
}

impl<R: Read> CsvTable<R> {
    pub fn open(input: R, known: &[&str], required: &[&str]) -> Result<Self, DomainError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(input);
        let headers = reader.headers().map_err(|e| header_error(format!("unreadable header row: {e}")))?.clone();
        let mut columns = HashMap::new();
        for (index, name) in headers.iter().enumerate() {
            let name = name.trim_start_matches('\u{feff}').to_ascii_lowercase();
            if !known.contains(&name.as_str()) {
                let shown: String = name.chars().take(40).collect();
                return Err(header_error(format!("unknown column `{shown}`; known: {}", known.join(", "))));
            }
            if columns.insert(name.clone(), index).is_some() {
                return Err(header_error(format!("column `{name}` appears twice")));
            }
        }
        if let Some(missing) = required.iter().find(|name| !columns.contains_key(**name)) {
            return Err(header_error(format!("column `{missing}` is required")));
        }
        Ok(CsvTable { reader, columns, record: csv::StringRecord::new(), io_failure: None })
    }

    /// The next row, parsed with `parse` from its named fields, with its line number
    /// (the header is line 1). `None` at the end of the file.
    pub fn next_row<T>(
        &mut self,
        parse: impl FnOnce(RowFields<'_>) -> Result<T, DomainError>,
    ) -> Option<(u64, Result<T, DomainError>)> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some((line, parse(RowFields { record: &self.record, columns: &self.columns })))
            }
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                // A row that is not valid CSV (bad UTF-8, a broken quote) rejects itself;
                // an I/O failure ends the reading, and `io_failure` tells the file was cut.
                if matches!(error.kind(), csv::ErrorKind::Io(_)) {
                    self.io_failure = Some(error.to_string());
                    return None;
                }
                Some((
                    line,
                    Err(DomainError::InvalidField { field: "line", reason: format!("not valid CSV: {error}") }),
                ))
            }
        }
    }

    /// A field of the row read last, as written: names a row that could not be read
    /// (its `id`) in its rejection.
    pub fn last_field(&self, name: &str) -> Option<&str> {
        self.columns.get(name).and_then(|index| self.record.get(*index)).filter(|v| !v.is_empty()).map(restored_cell)
    }

    /// Why the reading ended before the end of the file, if it did.
    pub fn io_failure(&self) -> Option<&str> {
        self.io_failure.as_deref()
    }

    /// Bytes read so far, for progress.
    pub fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }
}

/// One row's fields by column name; an empty field counts as absent.
pub struct RowFields<'r> {
    record: &'r csv::StringRecord,
    columns: &'r HashMap<String, usize>,
}

impl<'r> RowFields<'r> {
    /// The field, with the quote of a [`neutralised_cell`] taken off: an export read back
    /// gives the text that was exported.
    pub fn get(&self, name: &str) -> Option<&'r str> {
        self.columns.get(name).and_then(|index| self.record.get(*index)).filter(|v| !v.is_empty()).map(restored_cell)
    }
}

/// The first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV
/// injection"): `=HYPERLINK(...)` in a caller would run in whoever opens an export.
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A free-text cell as every CSV the ledger writes holds it: a text that a spreadsheet
/// would take for a formula gets a leading `'` (shown as text, never evaluated). Texts
/// that already start with quotes before such a character get one more, so that
/// [`restored_cell`] gives back exactly what was written, whatever it was. Only text
/// columns go through here: a column of amounts keeps `-5.00` a number.
pub fn neutralised_cell(text: &str) -> Cow<'_, str> {
    if text.trim_start_matches('\'').starts_with(FORMULA_TRIGGERS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The inverse of [`neutralised_cell`], applied to every field read from a CSV file.
pub fn restored_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.trim_start_matches('\'').starts_with(FORMULA_TRIGGERS) => rest,
        _ => cell,
    }
}

fn header_error(reason: String) -> DomainError {
    DomainError::InvalidField { field: "header", reason }
}

/// Columns a CDR export adds after [`crate::cdr::CDR_FIELDS`]: what rating and the
/// ledger decided. A CDR file may carry them (an export read back); they are not input.
pub const CDR_EXPORT_EXTRA_FIELDS: [&str; 3] = ["billed_seconds", "matched_prefix", "position"];

/// A CDR file: the columns of [`crate::cdr::CDR_FIELDS`], and those of an export.
pub fn cdr_table<R: Read>(input: R) -> Result<CsvTable<R>, DomainError> {
    let known: Vec<&str> = crate::cdr::CDR_FIELDS.iter().chain(&CDR_EXPORT_EXTRA_FIELDS).copied().collect();
    CsvTable::open(input, &known, &["id", "account", "callee", "start", "end"])
}

pub fn next_cdr<R: Read>(table: &mut CsvTable<R>) -> Option<(u64, Result<CdrInput, DomainError>)> {
    table.next_row(|fields| CdrInput::from_fields(|name| fields.get(name)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formula_cells_are_neutralised_and_read_back_as_written() {
        for (text, written) in [
            ("=HYPERLINK(\"http://evil.example\",\"x\")", "'=HYPERLINK(\"http://evil.example\",\"x\")"),
            ("+4930123", "'+4930123"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'=already", "''=already"),
            ("4930123", "4930123"),
            ("'plain", "'plain"),
            ("", ""),
        ] {
            assert_eq!(super::neutralised_cell(text), written, "{text:?}");
            assert_eq!(super::restored_cell(written), text, "{written:?}");
        }
    }

    use super::*;

    #[test]
    fn a_cdr_file_reads_row_by_row_and_a_bad_row_rejects_only_itself() {
        let file = "ID,account,callee,start,end,answer\n\
                    a,C-1,4930,2026-01-01T00:00:00Z,2026-01-01T00:01:00Z,2026-01-01T00:00:01Z\n\
                    b,C-1,4930,not-a-time,2026-01-01T00:01:00Z,\n\
                    c,C-1,4930,2026-01-01T00:00:00Z,2026-01-01T00:00:30Z\n";
        let mut table = cdr_table(file.as_bytes()).unwrap();
        let rows: Vec<_> = std::iter::from_fn(|| next_cdr(&mut table)).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].1.as_ref().unwrap().billable_seconds, 59);
        assert_eq!(rows[1].0, 3);
        assert_eq!(rows[1].1.as_ref().unwrap_err().field(), Some("start"));
        assert_eq!(rows[2].1.as_ref().unwrap().answer, None);
    }

    #[test]
    fn headers_are_checked() {
        let unknown = cdr_table("id,account,callee,start,end,colour\n".as_bytes()).err().unwrap();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        let missing = cdr_table("id,account,start,end\n".as_bytes()).err().unwrap();
        assert!(missing.to_string().contains("callee"), "{missing}");
        assert_eq!(missing.field(), Some("header"));
    }
}
