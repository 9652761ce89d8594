//! Charges other than calls (fees, subscriptions).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use domain::{Amount, Command};
use serde::{Deserialize, Serialize};

use super::account_links;
use crate::body::Body;
use crate::error::ApiError;
use crate::server::AppState;
use crate::write::{Write, account_id, parse_time, respond};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    account: String,
    amount: Amount,
    /// When the charge applies (business time); now when absent.
    occurred_at: Option<String>,
    description: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<ChargeRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&state, "account", &request.account)?;
    let occurred_at = parse_time("occurred_at", request.occurred_at.as_deref())?;
    let meta = write.meta(&request, occurred_at)?;
    let command = Command::PostCharge { account, amount: request.amount, description: request.description };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state, StatusCode::CREATED, outcome, account_links(&request.account)))
}
