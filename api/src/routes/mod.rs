//! The `/api/v1` routes, one module per resource family. Every handler takes a `Caller`
//! (or a `Write`, which holds one) even when it does not use it: that extractor is the
//! authentication gate, so a handler without it would be open to anyone.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::auth::Caller;
use crate::body::BODY_BYTES_MAX;
use crate::error::ApiError;
use crate::server::AppState;

mod accounts;
mod adjustments;
mod charges;
mod payments;
mod reversals;
mod statements;
mod transfers;

pub const API_ROOT: &str = "/api/v1";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(API_ROOT, get(index))
        .route("/api/v1/accounts", post(accounts::register))
        .route("/api/v1/accounts/{number}", get(accounts::show))
        .route("/api/v1/accounts/{number}/status", post(accounts::change_status))
        .route("/api/v1/accounts/{number}/credit-limit", post(accounts::change_credit_limit))
        .route("/api/v1/accounts/{number}/statement", get(statements::show))
        .route("/api/v1/payments", post(payments::create))
        .route("/api/v1/adjustments", post(adjustments::create))
        .route("/api/v1/charges", post(charges::create))
        .route("/api/v1/transfers", post(transfers::create))
        .route("/api/v1/reversals", post(reversals::create))
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
}

async fn index(_caller: Caller) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "links": {
            "self": API_ROOT,
            "accounts": "/api/v1/accounts",
            "account": "/api/v1/accounts/{number}",
            "account_status": "/api/v1/accounts/{number}/status",
            "account_credit_limit": "/api/v1/accounts/{number}/credit-limit",
            "statement": "/api/v1/accounts/{number}/statement{?from,to,as_of}",
            "payments": "/api/v1/payments",
            "adjustments": "/api/v1/adjustments",
            "charges": "/api/v1/charges",
            "transfers": "/api/v1/transfers",
            "reversals": "/api/v1/reversals",
            "health": "/health",
        }
    }))
}

/// Unknown paths under the API answer in the API's error format, after authentication
/// so that the API's shape is not shown to strangers.
async fn not_found(_caller: Caller) -> ApiError {
    ApiError::not_found("not_found", "no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// The links of an account, shared by every answer about one.
/// Reads an account's view from the read models, first waiting until they reflect
/// `min_position` when the caller gave one (read your writes). Also gives the position
/// the models reflected before the read: the view reflects at least that much.
pub async fn read_account(
    state: &AppState,
    number: &str,
    min_position: Option<u64>,
) -> Result<(projections::AccountView, u64), ApiError> {
    if let Some(position) = min_position {
        state.models.wait_for(position, projections::models::WAIT_FOR_POSITION_MAX).await?;
    }
    let position = state.models.position();
    let view = state
        .models
        .account_by_number(number)?
        .ok_or_else(|| ApiError::not_found("account_not_found", format!("account `{number}` not found")))?;
    Ok((view, position))
}

pub fn account_links(number: &str) -> std::collections::BTreeMap<&'static str, String> {
    let base = format!("/api/v1/accounts/{number}");
    [
        ("statement", format!("{base}/statement")),
        ("status", format!("{base}/status")),
        ("credit_limit", format!("{base}/credit-limit")),
        ("self", base),
    ]
    .into_iter()
    .collect()
}
