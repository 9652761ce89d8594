//! Reversals: undo a money-moving event, named by its global log position.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::body::{Body, u64_from_text};
use crate::error::ApiError;
use crate::server::AppState;
use crate::write::{Write, respond};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReversalRequest {
    #[serde(deserialize_with = "u64_from_text")]
    position: u64,
    reason: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<ReversalRequest>,
) -> Result<Response, ApiError> {
    let meta = write.meta(&request, None)?;
    let outcome = state.ledger.reverse(request.position, request.reason, meta).await?;
    Ok(respond(&state, StatusCode::CREATED, outcome, BTreeMap::new()))
}
