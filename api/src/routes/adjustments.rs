//! Adjustments: corrections of a balance, either way.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use domain::{Amount, Command};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::account_links;
use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{IdempotencyKey, WriteErrors};
use crate::state::AppState;
use crate::write::{Write, WriteBody, managed_account, parse_time, respond};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    #[schema(example = "C-1001")]
    account: String,
    /// Signed: positive is a debit (it adds to the charges), negative a credit.
    #[schema(schema_with = crate::openapi::adjustment_amount_in)]
    amount: Amount,
    /// When the correction applies (business time); now when absent.
    #[schema(example = "2025-01-15T10:00:00Z")]
    occurred_at: Option<String>,
    reason: Option<String>,
}

/// Post a signed adjustment: a positive amount is a debit (it adds to the account's
/// charges and lowers its balance), a negative one a credit (it raises the balance).
#[utoipa::path(
    post,
    path = "/api/v1/adjustments",
    operation_id = "create_adjustment",
    tag = "money",
    params(IdempotencyKey),
    request_body = AdjustmentRequest,
    responses((status = 201, description = "Recorded", body = WriteBody), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<AdjustmentRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state.ledger, &write.caller, "account", &request.account)?.id;
    let occurred_at = parse_time("occurred_at", request.occurred_at.as_deref())?;
    let meta = write.meta(&request, occurred_at)?;
    let command = Command::PostAdjustment { account, amount: request.amount, reason: request.reason };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state.ledger, StatusCode::CREATED, outcome, account_links(&request.account)))
}
