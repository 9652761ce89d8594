//! The audit trail: an account's events in log order with their hashes, and the
//! postings behind each figure of a statement.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use domain::event::Category;
use domain::{Amount, EventId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::page_size;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::ReadErrors;
use crate::query;
use crate::state::AppState;
use crate::write::{parse_time, visible_account};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events)).routes(routes!(lines))
}

fn category_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([
            "payments",
            "adjustments",
            "call_charges",
            "other_charges",
            "transfers_in",
            "transfers_out",
        ]))
        .description(Some("The statement figure a posting counts in"))
        .build()
}

#[derive(Serialize, ToSchema)]
pub struct PostingOut {
    #[schema(schema_with = category_schema)]
    category: Category,
    #[schema(schema_with = crate::openapi::amount_out)]
    amount: Amount,
}

/// An event as the account's audit trail shows it; `postings` are this account's.
#[derive(Serialize, ToSchema)]
pub struct AuditEventOut {
    /// Its position in the global log.
    position: u64,
    #[schema(value_type = uuid::Uuid)]
    event_id: EventId,
    /// `operator`, or the id of the partner whose book holds it.
    book: String,
    /// Its version within the book: the book's chain runs through versions 0, 1, 2, …
    version: u64,
    #[serde(rename = "type")]
    kind: String,
    #[schema(schema_with = crate::openapi::timestamp)]
    occurred_at: Timestamp,
    #[schema(schema_with = crate::openapi::timestamp)]
    recorded_at: Timestamp,
    /// SHA-256 of the stored event, which covers the previous event's hash (hex).
    hash: String,
    postings: Vec<PostingOut>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events after this global position (the last `position` of the previous page).
    #[serde(default, deserialize_with = "query::optional_u64")]
    after: Option<u64>,
    /// Page size, 1 to 1000 (100 by default).
    #[serde(default, deserialize_with = "query::optional_u64")]
    limit: Option<u64>,
    /// Wait until the read models reflect this position (read your writes).
    #[serde(default, deserialize_with = "query::optional_u64")]
    min_position: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditOut {
    #[schema(example = "ok")]
    status: &'static str,
    events: Vec<AuditEventOut>,
    /// Pass as `after` for the next page; null on the last.
    next_after: Option<u64>,
    #[schema(example = json!({"account": "/api/v1/accounts/C-1001"}))]
    links: BTreeMap<&'static str, String>,
}

/// An account's audit trail: every event that concerns it, in log order, with its hash.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/events",
    operation_id = "list_account_events",
    tag = "statements",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), EventsQuery),
    responses((status = 200, description = "A page of events", body = AuditOut), ReadErrors)
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditOut>, ApiError> {
    let query: EventsQuery = query::parse(raw.as_deref())?;
    let limit = page_size(query.limit.unwrap_or(super::PAGE_SIZE_DEFAULT as u64))?;
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    if let Some(position) = query.min_position {
        crate::service::accounts::wait_for_position(&state.ledger, &state.models, position).await?;
    }
    let page = state.models.account_events(account.id, query.after.unwrap_or(0), limit).await?;
    let next_after = page.next_cursor.as_ref().and_then(|_| page.items.last().map(|(position, _)| *position));
    let events = page
        .items
        .into_iter()
        .map(|(position, row)| AuditEventOut {
            position,
            event_id: row.event_id,
            book: row.book.to_string(),
            version: row.version,
            kind: row.kind,
            occurred_at: row.occurred_at,
            recorded_at: row.recorded_at,
            hash: hex::encode(row.hash),
            postings: row.postings.into_iter().map(|(category, amount)| PostingOut { category, amount }).collect(),
        })
        .collect();
    let links = [("account", format!("/api/v1/accounts/{number}"))].into_iter().collect();
    Ok(Json(AuditOut { status: "ok", events, next_after, links }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LinesQuery {
    /// The period's start (inclusive), by business time: RFC 3339 or YYYY-MM-DD.
    from: String,
    /// The period's end (exclusive).
    to: String,
    /// One figure only: `payments`, `adjustments`, `call_charges`, `other_charges`,
    /// `transfers_in` or `transfers_out`.
    #[param(value_type = Option<String>)]
    category: Option<Category>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (100 by default).
    #[serde(default, deserialize_with = "query::optional_u64")]
    limit: Option<u64>,
    #[serde(default, deserialize_with = "query::optional_u64")]
    min_position: Option<u64>,
}

/// A posting behind a statement figure.
#[derive(Serialize, ToSchema)]
pub struct LineOut {
    /// The global position of the event that made it: see the account's events.
    position: u64,
    #[schema(schema_with = crate::openapi::timestamp)]
    occurred_at: Timestamp,
    #[schema(schema_with = category_schema)]
    category: Category,
    #[schema(schema_with = crate::openapi::amount_out)]
    amount: Amount,
}

#[derive(Serialize, ToSchema)]
pub struct LinesOut {
    #[schema(example = "ok")]
    status: &'static str,
    lines: Vec<LineOut>,
    next_cursor: Option<String>,
    #[schema(example = json!({"statement": "/api/v1/accounts/C-1001/statement", "events": "/api/v1/accounts/C-1001/events"}))]
    links: BTreeMap<&'static str, String>,
}

/// The postings behind a statement's figures for `[from, to)`, by business time: the
/// figure `category` of the statement is the sum of its lines' amounts.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/statement/lines",
    operation_id = "list_statement_lines",
    tag = "statements",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), LinesQuery),
    responses((status = 200, description = "A page of lines", body = LinesOut), ReadErrors)
)]
pub async fn lines(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<LinesOut>, ApiError> {
    let query: LinesQuery = query::parse(raw.as_deref())?;
    let limit = page_size(query.limit.unwrap_or(super::PAGE_SIZE_DEFAULT as u64))?;
    let time = |field: &'static str, text: &str| {
        parse_time(field, Some(text)).map(|t| t.expect("given")).map_err(|e| ApiError { code: "invalid_query", ..e })
    };
    let (from, to) = (time("from", &query.from)?, time("to", &query.to)?);
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    if let Some(position) = query.min_position {
        crate::service::accounts::wait_for_position(&state.ledger, &state.models, position).await?;
    }
    let page = state.models.statement_lines(account.id, from, to, query.category, query.cursor.as_deref(), limit)?;
    let lines = page
        .items
        .into_iter()
        .map(|l| LineOut { position: l.position, occurred_at: l.occurred_at, category: l.category, amount: l.amount })
        .collect();
    let links = [
        ("statement", format!("/api/v1/accounts/{number}/statement")),
        ("events", format!("/api/v1/accounts/{number}/events")),
    ]
    .into_iter()
    .collect();
    Ok(Json(LinesOut { status: "ok", lines, next_cursor: page.next_cursor, links }))
}
