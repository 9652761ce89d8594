//! Reconciliation: an outside CDR file against the ledger's CDRs of a period.

use axum::Json;
use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use domain::Timestamp;
use projections::AccountFilter;
use projections::reconcile::{self, Report};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cdrs::CDR_UPLOAD_BYTES_MAX;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::openapi::UploadErrors;
use crate::query;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).layer(axum::extract::DefaultBodyLimit::max(CDR_UPLOAD_BYTES_MAX))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReconcileQuery {
    /// The period's start (inclusive) by call start: RFC 3339 or YYYY-MM-DD.
    from: String,
    /// The period's end (exclusive).
    to: String,
    /// `json` (default) or `csv` (one line per difference); or send `Accept: text/csv`.
    format: Option<String>,
    /// Wait until the read models reflect this position (read your writes).
    #[serde(default, deserialize_with = "query::optional_u64")]
    min_position: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ReconciliationOut {
    #[schema(example = "ok")]
    status: &'static str,
    /// True when nothing differs.
    clean: bool,
    /// matched, missing_in_ledger, missing_in_file, cost_differs (both sides' costs),
    /// outside_period, repeated_in_file, unreadable rows and totals.
    #[schema(value_type = Object)]
    report: Report,
}

/// Compare a CDR file (the CSV columns of a CDR upload, as `text/csv` or a multipart
/// file; `cost` and `partner_cost` are compared when present) with the CDRs the ledger
/// charged to the caller's customer accounts in `[from, to)`. Nothing is written.
#[utoipa::path(
    post,
    path = "/api/v1/reconciliations",
    operation_id = "reconcile_cdrs",
    tag = "cdrs",
    params(ReconcileQuery),
    request_body(content((String = "text/csv"), (String = "multipart/form-data"))),
    responses(
        (status = 200, description = "The report", content((ReconciliationOut = "application/json"), (String = "text/csv"))),
        UploadErrors
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let query: ReconcileQuery = query::parse(raw.as_deref())?;
    let time = |field: &'static str, text: &str| {
        Timestamp::parse(text).ok_or_else(|| {
            ApiError::bad_request("invalid_query", field, format!("{field}: expected RFC 3339 or YYYY-MM-DD"))
        })
    };
    let (from, to) = (time("from", &query.from)?, time("to", &query.to)?);
    if from > to {
        return Err(ApiError::bad_request("invalid_query", "to", "to: must not be before `from`"));
    }
    let csv = super::csv_requested(query.format.as_deref(), request.headers())?;
    let file = super::cdrs::read_file_body(request, &state, false).await?;
    let (calls, unreadable) = reconcile::file_calls(file.as_ref()).map_err(ApiError::from)?;
    if let Some(position) = query.min_position {
        crate::service::accounts::wait_for_position(&state.ledger, &state.models, position).await?;
    }
    // The ledger's side at one position, whatever the file's size.
    let snapshot = state.models.snapshot();
    let accounts = match caller.scope {
        Scope::Admin => reconcile::customer_accounts(&snapshot, &AccountFilter::default())?,
        Scope::Partner(partner) => {
            reconcile::customer_accounts(&snapshot, &AccountFilter { partner: Some(partner), ..Default::default() })?
        }
        Scope::Customer(own) => snapshot.account(own).map(|v| vec![(v.id, v.number)]).unwrap_or_default(),
    };
    // Rows naming accounts the caller may not see compare as missing in the ledger,
    // exactly like rows of accounts that do not exist.
    let ledger = reconcile::ledger_calls(&snapshot, &accounts, from, to).await?;
    // Matching a large file is CPU work: off the async workers.
    let report = tokio::task::spawn_blocking(move || {
        let mut report = reconcile::reconcile(from, to, calls, ledger);
        report.unreadable = unreadable;
        report
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    if csv {
        let body = crate::import::report_csv(&report);
        return Ok((StatusCode::OK, [(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(ReconciliationOut { status: "ok", clean: report.is_clean(), report }).into_response())
}
