//! Every CSV file the server and the command line write goes through here: CDR exports,
//! statements, reconciliation reports, an import's rejected rows.
//!
//! Such files are opened in spreadsheets, where a cell that starts with `=`, `+`, `-`,
//! `@`, a tab or a carriage return is a formula: a caller of `=HYPERLINK(...)` would run
//! in the finance department's spreadsheet. A text column's cells pass
//! [`commands::ingest::neutralised_cell`] (a leading `'`) and are always quoted; a
//! number column's cells are written as they are, so that `-5.00` stays a number. Which
//! is which is decided by the column, never by the cell's content.

use std::borrow::Cow;

use commands::ingest::neutralised_cell;

/// What a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Anything that can come from a client or a file, and labels: neutralised.
    Text,
    /// Amounts, counts, positions and codes the server formats itself: as they are.
    Number,
}

/// One CSV record, ending in `\n`, its fields written as their columns say. A field
/// beyond `columns` counts as text.
pub fn csv_line<S: AsRef<str>>(columns: &[Column], fields: &[S]) -> String {
    let mut line = String::new();
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            line.push(',');
        }
        let field = field.as_ref();
        match columns.get(index).copied().unwrap_or(Column::Text) {
            Column::Number => push_field(&mut line, field, false),
            Column::Text => match neutralised_cell(field) {
                // A neutralised cell is quoted too, as the OWASP advice has it.
                Cow::Owned(cell) => push_field(&mut line, &cell, true),
                Cow::Borrowed(cell) => push_field(&mut line, cell, false),
            },
        }
    }
    line.push('\n');
    line
}

/// `field`, quoted when asked or when CSV needs it (a comma, a quote, a line break, or
/// spaces at either end, which readers that trim would lose).
fn push_field(line: &mut String, field: &str, quote: bool) {
    let needs_quotes = quote
        || field.contains([',', '"', '\n', '\r'])
        || field.starts_with(char::is_whitespace)
        || field.ends_with(char::is_whitespace);
    if needs_quotes {
        line.push('"');
        line.push_str(&field.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::Column::{Number, Text};
    use super::csv_line;

    #[test]
    fn text_is_neutralised_and_numbers_stay_numbers() {
        let line = csv_line(
            &[Text, Text, Number, Text, Text],
            &["=HYPERLINK(\"http://evil.example\",\"x\")", "+4930", "-5.00", "a,b", "plain"],
        );
        assert_eq!(line, "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",\"'+4930\",-5.00,\"a,b\",plain\n");
        // What the csv crate reads back is the neutralised text, and the number.
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[0], "'=HYPERLINK(\"http://evil.example\",\"x\")");
        assert_eq!(&record[2], "-5.00");
        assert_eq!(&record[3], "a,b");
    }
}
