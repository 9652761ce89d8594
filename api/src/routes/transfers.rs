//! Fund moves between a partner and its own customers, either way.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use domain::Amount;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{IdempotencyKey, WriteErrors};
use crate::service::transfers::{FundMove, move_funds};
use crate::state::AppState;
use crate::write::{Write, WriteBody, parse_time, respond};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The account the money leaves: the partner, or one of its customers.
    #[schema(example = "P-100")]
    pub from: String,
    /// The account the money reaches: one of the partner's customers, or the partner.
    #[schema(example = "C-1001")]
    pub to: String,
    /// Greater than zero; refused (422) past the `from` account's credit limit.
    #[schema(schema_with = crate::openapi::amount_in)]
    pub amount: Amount,
    /// When the money moved (business time; RFC 3339 or YYYY-MM-DD); now when absent.
    #[schema(example = "2025-01-15T10:00:00Z")]
    pub occurred_at: Option<String>,
    pub note: Option<String>,
}

/// Move funds between a partner and one of its own customers, in either direction, in one
/// atomic event.
#[utoipa::path(
    post,
    path = "/api/v1/transfers",
    operation_id = "create_transfer",
    tag = "money",
    params(IdempotencyKey),
    request_body = TransferRequest,
    responses((status = 201, description = "Moved", body = WriteBody), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<TransferRequest>,
) -> Result<Response, ApiError> {
    let occurred_at = parse_time("occurred_at", request.occurred_at.as_deref())?;
    let meta = write.meta(&request, occurred_at)?;
    let fund_move =
        FundMove { from: request.from.clone(), to: request.to.clone(), amount: request.amount, note: request.note };
    let outcome = move_funds(&state.ledger, &write.caller, fund_move, meta).await?;
    let links =
        [("from", format!("/api/v1/accounts/{}", request.from)), ("to", format!("/api/v1/accounts/{}", request.to))]
            .into_iter()
            .collect();
    Ok(respond(&state.ledger, StatusCode::CREATED, outcome, links))
}
