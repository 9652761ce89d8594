//! A statement as CSV: the figures, then every posting behind them. The JSON API's
//! `?format=csv` and the portal's download button give the same file.

use axum::body::Bytes;
use futures::StreamExt;
use projections::ReadModels;

use super::Download;
use crate::csv_out::{Column, csv_line};

/// Postings read from the read models per chunk of a CSV statement.
const CSV_LINES_PER_CHUNK: usize = projections::PAGE_SIZE_MAX;

/// A statement as CSV, streamed: the figures first, then the postings behind them a page
/// at a time, so that an account with millions of postings never sits in memory. Lines
/// recorded after the statement's position are left out, so the lines always add up to
/// the figures, even with `as_of` or while new events arrive.
pub fn csv(models: &ReadModels, statement: projections::Statement) -> Download {
    let file_name = format!(
        "statement-{}-{}-{}.csv",
        statement.number,
        statement.from.to_rfc3339().get(..10).unwrap_or(""),
        statement.to.to_rfc3339().get(..10).unwrap_or("")
    );
    let head = statement_csv_head(&statement);
    let models = models.clone();
    // (the next page's cursor, whether the lines are done)
    let lines = futures::stream::try_unfold((None::<String>, false), move |(cursor, done)| {
        let models = models.clone();
        let statement = statement.clone();
        async move {
            if done {
                return Ok(None);
            }
            let page = models
                .statement_lines(
                    statement.account,
                    statement.from,
                    statement.to,
                    None,
                    cursor.as_deref(),
                    CSV_LINES_PER_CHUNK,
                )
                .map_err(std::io::Error::other)?;
            let mut text = String::new();
            for line in page.items.iter().filter(|l| l.position <= statement.position) {
                text.push_str(&csv_line(
                    &STATEMENT_CSV_COLUMNS,
                    &[
                        "line",
                        line.category.as_str(),
                        &line.amount.to_string(),
                        statement.currency.as_str(),
                        &line.position.to_string(),
                        &line.occurred_at.to_rfc3339(),
                    ],
                ));
            }
            let bytes = text.into_bytes();
            let done = page.next_cursor.is_none();
            Ok::<_, std::io::Error>(Some((Bytes::from(bytes), (page.next_cursor, done))))
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(lines);
    Download::attachment("text/csv; charset=utf-8", file_name, axum::body::Body::from_stream(body))
}

/// The header row, the period and the figures.
fn statement_csv_head(s: &projections::Statement) -> Bytes {
    let currency = s.currency.as_str();
    let position = s.position.to_string();
    let mut rows: Vec<[String; 6]> = vec![
        ["record", "name", "amount", "currency", "position", "occurred_at"].map(str::to_owned),
        ["period".into(), "from".into(), String::new(), currency.into(), String::new(), s.from.to_rfc3339()],
        ["period".into(), "to".into(), String::new(), currency.into(), String::new(), s.to.to_rfc3339()],
    ];
    let figures = [
        ("opening_balance", s.opening_balance),
        ("payments", s.payments),
        ("transfers_in", s.transfers_in),
        ("transfers_out", s.transfers_out),
        ("call_charges", s.call_charges),
        ("other_charges", s.other_charges),
        ("adjustments", s.adjustments),
        ("total_charges", s.total_charges),
        ("closing_balance", s.closing_balance),
    ];
    for (name, amount) in figures {
        rows.push(["figure".into(), name.into(), amount.to_string(), currency.into(), position.clone(), String::new()]);
    }
    let mut text = csv_line(&[Column::Text; 6], &rows[0]);
    for row in &rows[1..] {
        text.push_str(&csv_line(&STATEMENT_CSV_COLUMNS, row));
    }
    Bytes::from(text)
}

/// record, name, amount, currency, position, occurred_at: every CSV goes through
/// [`csv_line`], and the amounts stay numbers (a credit is `-5.00`, not text).
const STATEMENT_CSV_COLUMNS: [Column; 6] =
    [Column::Text, Column::Text, Column::Number, Column::Text, Column::Number, Column::Text];
