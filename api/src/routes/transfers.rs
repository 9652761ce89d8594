//! Fund moves between a partner and its own customers, either way.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use domain::{Amount, Command};
use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::error::ApiError;
use crate::server::AppState;
use crate::write::{Write, account_id, parse_time, respond};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    from: String,
    to: String,
    amount: Amount,
    occurred_at: Option<String>,
    note: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<TransferRequest>,
) -> Result<Response, ApiError> {
    let from = account_id(&state, "from", &request.from)?;
    let to = account_id(&state, "to", &request.to)?;
    let occurred_at = parse_time("occurred_at", request.occurred_at.as_deref())?;
    let meta = write.meta(&request, occurred_at)?;
    let command = Command::MoveFunds { from, to, amount: request.amount, note: request.note };
    let outcome = state.ledger.execute(command, meta).await?;
    let links =
        [("from", format!("/api/v1/accounts/{}", request.from)), ("to", format!("/api/v1/accounts/{}", request.to))]
            .into_iter()
            .collect();
    Ok(respond(&state, StatusCode::CREATED, outcome, links))
}
