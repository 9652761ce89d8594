//! Reversals: undo a money-moving event, named by its global log position.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use commands::{CommandError, StoreError};
use domain::{Command, Payload, RecordedEvent};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::body::{Body, u64_from_text};
use crate::error::ApiError;
use crate::openapi::{IdempotencyKey, WriteErrors};
use crate::state::AppState;
use crate::write::{Write, WriteBody, respond};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalRequest {
    /// The global log position of the event to reverse, as its write answered it.
    #[serde(deserialize_with = "u64_from_text")]
    #[schema(value_type = u64, example = 42)]
    position: u64,
    reason: Option<String>,
}

/// Reverse a money-moving event: the same amount moves back in the same category. Nothing
/// is edited; the reversal is a new event. A partner may reverse entries on its customers
/// and fund moves with them.
#[utoipa::path(
    post,
    path = "/api/v1/reversals",
    operation_id = "create_reversal",
    tag = "money",
    params(IdempotencyKey),
    request_body = ReversalRequest,
    responses((status = 201, description = "Reversed", body = WriteBody), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<ReversalRequest>,
) -> Result<Response, ApiError> {
    let target = event_at(&state, request.position)
        .await?
        .filter(|target| may_see(&state, &write.caller, target))
        .ok_or(CommandError::UnknownPosition(request.position))?;
    if !may_reverse(&state, &write.caller, &target) {
        return Err(ApiError::forbidden("this entry is the operator's to reverse").with_field("position"));
    }
    let meta = write.meta(&request, None)?;
    let command = Command::ReverseEntry { target: Box::new(target.event), reason: request.reason };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state.ledger, StatusCode::CREATED, outcome, BTreeMap::new()))
}

async fn event_at(state: &AppState, position: u64) -> Result<Option<RecordedEvent>, ApiError> {
    match state.ledger.store().read_all(position, 1).await {
        // KurrentDB cannot start a read at a position it never handed out: no such event.
        Err(StoreError::InvalidPosition(_)) => Ok(None),
        Err(error) => Err(ApiError::internal(&error)),
        Ok(events) => Ok(events.into_iter().find(|e| e.position == position)),
    }
}

/// An event is in sight when every account it touches is, and it touches one at all
/// (events of no account, such as published tariffs, are the operator's).
fn may_see(state: &AppState, caller: &Caller, target: &RecordedEvent) -> bool {
    let accounts = target.event.payload.accounts();
    !accounts.is_empty()
        && accounts.iter().all(|id| state.ledger.account_by_id(*id).is_some_and(|account| caller.sees(&account)))
}

/// A partner reverses what it could have posted: entries on its customers, and fund moves
/// between it and them. An entry on its own account alone (a payment the operator
/// recorded, the wholesale side of a call) is the operator's.
fn may_reverse(state: &AppState, caller: &Caller, target: &RecordedEvent) -> bool {
    matches!(target.event.payload, Payload::FundsMoved(_))
        || target
            .event
            .payload
            .accounts()
            .iter()
            .all(|id| state.ledger.account_by_id(*id).is_some_and(|account| caller.manages(&account)))
}
