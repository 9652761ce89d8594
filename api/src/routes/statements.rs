//! Balance statements of an account for a period, from the read models.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use domain::{Amount, Currency, Timestamp};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::account_links;
use crate::auth::Caller;
use crate::csv_out::{Column, csv_line};
use crate::error::ApiError;
use crate::openapi::ReadErrors;
use crate::query;
use crate::server::AppState;
use crate::write::visible_account;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StatementQuery {
    /// The period's start (inclusive), by business time: RFC 3339 or YYYY-MM-DD.
    from: String,
    /// The period's end (exclusive).
    to: String,
    /// Report as the ledger knew it at this global position (a whole number) or ledger
    /// time (RFC 3339 or YYYY-MM-DD): events recorded later are left out, so that an old
    /// statement can be reproduced exactly.
    as_of: Option<String>,
    /// Wait until the read models reflect this position (read your writes).
    #[serde(default, deserialize_with = "query::optional_u64")]
    min_position: Option<u64>,
    /// `json` (the default) or `csv`: the figures and every posting behind them, streamed.
    /// `Accept: text/csv` asks for CSV too.
    format: Option<String>,
}

/// The statement of one account for `[from, to)`.
/// `total_charges = call_charges + other_charges + adjustments` and
/// `closing_balance = opening_balance + payments + transfers_in - transfers_out - total_charges`.
#[derive(Serialize, ToSchema)]
pub struct StatementBody {
    number: String,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    #[schema(schema_with = crate::openapi::timestamp)]
    from: Timestamp,
    #[schema(schema_with = crate::openapi::timestamp)]
    to: Timestamp,
    #[schema(schema_with = crate::openapi::amount_out)]
    opening_balance: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    payments: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    adjustments: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    call_charges: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    other_charges: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    total_charges: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    transfers_in: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    transfers_out: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    closing_balance: Amount,
    /// The global log position this statement reflects.
    position: u64,
}

#[derive(Serialize, ToSchema)]
pub struct StatementOut {
    #[schema(example = "ok")]
    status: &'static str,
    statement: StatementBody,
    #[schema(example = crate::openapi::account_links_example)]
    links: BTreeMap<&'static str, String>,
}

fn time(field: &'static str, text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse(text).ok_or_else(|| {
        ApiError::bad_request("invalid_query", field, format!("{field}: expected RFC 3339 or YYYY-MM-DD"))
    })
}

fn as_of(text: &str) -> Result<projections::AsOf, ApiError> {
    match text.parse::<u64>() {
        Ok(position) => Ok(projections::AsOf::Position(position)),
        Err(_) => time("as_of", text).map(projections::AsOf::Time),
    }
}

/// An account's balance statement for the period `[from, to)` (by business time), in
/// which `total_charges = call_charges + other_charges + adjustments`, `closing_balance =
/// opening_balance + payments + transfers_in - transfers_out - total_charges`, and the
/// opening balance is the closing balance of any period that ends at `from`.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/statement",
    operation_id = "show_statement",
    tag = "statements",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), StatementQuery),
    responses(
        (status = 200, description = "The statement", body = StatementOut,
            content_type = "application/json"),
        (status = 200, description = "The statement as CSV: `record,name,amount,currency,position,occurred_at`; \
            `period` rows (from, to), `figure` rows (each figure, at the statement's position), then one \
            `line` row per posting behind the figures", body = String, content_type = "text/csv"),
        ReadErrors
    )
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query: StatementQuery = query::parse(raw.as_deref())?;
    let csv = super::csv_requested(query.format.as_deref(), &headers)?;
    let from = time("from", &query.from)?;
    let to = time("to", &query.to)?;
    let as_of = query.as_of.as_deref().map(as_of).transpose()?;
    let account = visible_account(&state, &caller, "number", &number)?;
    let (view, _) = super::read_account(&state, &account, query.min_position).await?;
    let s = state.models.statement(view.id, from, to, as_of).await?;
    if csv {
        return Ok(csv_response(&state, s));
    }
    let statement = StatementBody {
        number: s.number,
        currency: s.currency,
        from: s.from,
        to: s.to,
        opening_balance: s.opening_balance,
        payments: s.payments,
        adjustments: s.adjustments,
        call_charges: s.call_charges,
        other_charges: s.other_charges,
        total_charges: s.total_charges,
        transfers_in: s.transfers_in,
        transfers_out: s.transfers_out,
        closing_balance: s.closing_balance,
        position: s.position,
    };
    Ok(Json(StatementOut { status: "ok", statement, links: account_links(&number) }).into_response())
}

/// Postings read from the read models per chunk of a CSV statement.
const CSV_LINES_PER_CHUNK: usize = projections::PAGE_SIZE_MAX;

/// A statement as CSV, streamed: the figures first, then the postings behind them a page
/// at a time, so that an account with millions of postings never sits in memory. Lines
/// recorded after the statement's position are left out, so the lines always add up to
/// the figures, even with `as_of` or while new events arrive.
pub fn csv_response(state: &AppState, statement: projections::Statement) -> Response {
    let filename: String = format!(
        "statement-{}-{}-{}.csv",
        statement.number,
        statement.from.to_rfc3339().get(..10).unwrap_or(""),
        statement.to.to_rfc3339().get(..10).unwrap_or("")
    )
    .chars()
    .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
    .collect();
    let head = statement_csv_head(&statement);
    let models = state.models.clone();
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
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
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
