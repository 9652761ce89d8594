//! Balance statements of an account for a period, from the read models.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use domain::{Amount, Currency, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::account_links;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::ReadErrors;
use crate::query;
use crate::service;
use crate::state::AppState;
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
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let (view, _) = service::accounts::read_account(&state.ledger, &state.models, &account, query.min_position).await?;
    let s = state.models.statement(view.id, from, to, as_of).await?;
    if csv {
        return Ok(service::statements::csv(&state.models, s).into_response());
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
