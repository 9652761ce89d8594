//! Payments received from a customer or partner.

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
pub struct PaymentRequest {
    /// The paying account's number.
    #[schema(example = "C-1001")]
    account: String,
    /// Greater than zero.
    #[schema(schema_with = crate::openapi::amount_in)]
    amount: Amount,
    /// When the money was received (business time; RFC 3339 or YYYY-MM-DD); now when absent.
    #[schema(example = "2025-01-15T10:00:00Z")]
    occurred_at: Option<String>,
    #[schema(example = "wire")]
    method: Option<String>,
    /// The payment's reference in the payer's or bank's records.
    reference: Option<String>,
}

/// Record a payment: the balance goes up by the amount.
#[utoipa::path(
    post,
    path = "/api/v1/payments",
    operation_id = "create_payment",
    tag = "money",
    params(IdempotencyKey),
    request_body = PaymentRequest,
    responses((status = 201, description = "Recorded", body = WriteBody), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<PaymentRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state.ledger, &write.caller, "account", &request.account)?.id;
    let occurred_at = parse_time("occurred_at", request.occurred_at.as_deref())?;
    let meta = write.meta(&request, occurred_at)?;
    let command = Command::ReceivePayment {
        account,
        amount: request.amount,
        method: request.method,
        reference: request.reference,
    };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state.ledger, StatusCode::CREATED, outcome, account_links(&request.account)))
}
