//! Login links to the customer portal: an operator, or a partner for its own book, asks
//! for a URL that signs the account's holder in to the portal once, without a password.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Caller, LinkState, Scope};
use crate::error::ApiError;
use crate::openapi::{AdminReadErrors, ReadErrors};
use crate::service::login_links;
use crate::state::AppState;
use crate::write::visible_account;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(show, revoke))
}

#[derive(Serialize, ToSchema)]
pub struct LoginLinkOut {
    #[schema(example = "ok")]
    status: &'static str,
    id: Uuid,
    /// Open it in a browser to be signed in to the portal. It works once.
    url: String,
    expires_at: DateTime<Utc>,
    /// `issued`, `used` or `revoked`.
    #[schema(example = "issued")]
    state: &'static str,
    account: String,
    #[schema(example = json!({"self": "/api/v1/login-links/0f8fad5b-d9cb-469f-a165-70867728950e", "account": "/api/v1/accounts/C-1001"}))]
    links: BTreeMap<&'static str, String>,
}

fn state_name(state: LinkState) -> &'static str {
    match state {
        LinkState::Issued => "issued",
        LinkState::Used => "used",
        LinkState::Revoked => "revoked",
    }
}

fn link_links(id: Uuid, number: &str) -> BTreeMap<&'static str, String> {
    [("self", format!("/api/v1/login-links/{id}")), ("account", format!("/api/v1/accounts/{number}"))]
        .into_iter()
        .collect()
}

/// Make a login link to the portal for an account: for a customer, by the operator or
/// the customer's own partner; for a partner, by the operator or the partner itself. The
/// link is single-use and expires (`--login-link-lifetime`, 15 minutes by default).
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{number}/login-link",
    operation_id = "create_login_link",
    tag = "portal",
    params(("number" = String, Path, description = "The account number", example = "C-1001")),
    responses((status = 201, description = "A new link", body = LoginLinkOut), AdminReadErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<(StatusCode, Json<LoginLinkOut>), ApiError> {
    caller.require_writer()?;
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let (link, token) = state.auth.issue_login_link(&caller.actor, &account).await?;
    let url = login_links::link_url(state.auth.portal.public_url.as_deref(), &headers, &token);
    let out = LoginLinkOut {
        status: "ok",
        id: link.id,
        url,
        expires_at: link.expires_at,
        state: state_name(link.state),
        links: link_links(link.id, &number),
        account: number,
    };
    Ok((StatusCode::CREATED, Json(out)))
}

/// The link's record, if the caller may make links for its account.
fn visible_link(state: &AppState, caller: &Caller, id: &str) -> Result<crate::auth::LoginLinkRecord, ApiError> {
    let not_found = || ApiError::not_found("login_link_not_found", "no such login link");
    if matches!(caller.scope, Scope::Customer(_)) {
        return Err(not_found());
    }
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let link = state.auth.login_link(id)?.ok_or_else(not_found)?;
    let account = state.ledger.account_by_id(link.account).filter(|a| caller.sees(a)).ok_or_else(not_found)?;
    debug_assert_eq!(account.number, link.account_number);
    Ok(link)
}

/// A login link's state (never its URL: that was shown once).
#[utoipa::path(
    get,
    path = "/api/v1/login-links/{id}",
    operation_id = "show_login_link",
    tag = "portal",
    params(("id" = Uuid, Path, description = "The link's id")),
    responses((status = 200, description = "The link", body = LoginLinkOut), ReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LoginLinkOut>, ApiError> {
    let link = visible_link(&state, &caller, &id)?;
    Ok(Json(LoginLinkOut {
        status: "ok",
        id: link.id,
        url: String::new(),
        expires_at: link.expires_at,
        state: state_name(link.state),
        links: link_links(link.id, &link.account_number),
        account: link.account_number,
    }))
}

/// Revoke an unused login link: opening it then shows that it was revoked.
#[utoipa::path(
    delete,
    path = "/api/v1/login-links/{id}",
    operation_id = "revoke_login_link",
    tag = "portal",
    params(("id" = Uuid, Path, description = "The link's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 410, description = "Already used or revoked", body = crate::error::ErrorBody),
        AdminReadErrors
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_writer()?;
    let link = visible_link(&state, &caller, &id)?;
    state.auth.revoke_login_link(link.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
