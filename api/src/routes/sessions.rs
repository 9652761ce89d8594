//! Sessions: sign in with a login and a password (or an API token), get a short-lived
//! signed access token and a refresh token; refresh rotates the pair; logout ends it.
//! Also who the caller is (`/me`) and the public key that verifies access tokens.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::Links;
use crate::auth::jwt::Jwks;
use crate::auth::{Caller, Issued, KeptSessions, PeerIp, Role, Scope, Secret};
use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{AuthenticatedErrors, OwnPasswordErrors, SessionErrors};
use crate::state::AppState;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(jwks))
        .routes(routes!(change_own_password))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "reseller-one")]
    login: String,
    /// The user's password; or give `token` instead.
    password: Option<String>,
    /// One of the user's API tokens, instead of a password. The session keeps the token's
    /// IP allowlist.
    token: Option<String>,
    /// With `password`: set this as the user's new password while signing in. Required
    /// when the password was set by an admin or a partner (sign-in answers 403
    /// `password_change_required` until it is given). The user's other sessions end.
    #[schema(min_length = 10, max_length = 1024)]
    new_password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionUser {
    login: String,
    role: Role,
    account: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    #[schema(example = "ok")]
    status: &'static str,
    session_id: Uuid,
    /// A JWT signed with Ed25519 (`EdDSA`); send it as a credential until `expires_at`.
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// When the access token expires.
    expires_at: DateTime<Utc>,
    /// Swap it for a new pair at `/api/v1/sessions/refresh`; it works once.
    refresh_token: String,
    /// When the session ends unless refreshed before.
    refresh_expires_at: DateTime<Utc>,
    user: SessionUser,
    #[schema(example = json!({"self": "/api/v1/sessions/0f8fad5b-d9cb-469f-a165-70867728950e", "refresh": "/api/v1/sessions/refresh", "me": "/api/v1/me", "jwks": "/.well-known/jwks.json", "account": "/api/v1/accounts/C-1001"}))]
    links: BTreeMap<&'static str, String>,
}

impl SessionOut {
    fn from_issued(issued: Issued) -> Self {
        let mut links = Links::new();
        links.insert("self", format!("/api/v1/sessions/{}", issued.session.id));
        links.insert("refresh", "/api/v1/sessions/refresh".to_owned());
        links.insert("me", "/api/v1/me".to_owned());
        links.insert("jwks", JWKS_PATH.to_owned());
        if let Some(number) = &issued.user.account_number {
            links.insert("account", format!("/api/v1/accounts/{number}"));
        }
        SessionOut {
            status: "ok",
            session_id: issued.session.id,
            access_token: issued.access_token,
            token_type: "Bearer",
            expires_at: issued.access_expires_at,
            refresh_token: issued.refresh_token,
            refresh_expires_at: issued.session.expires_at,
            user: SessionUser { login: issued.user.login, role: issued.user.role, account: issued.user.account_number },
            links,
        }
    }
}

/// Sign in with a login and a password, or a login and one of the user's API tokens. No
/// credential header is needed; the secret is in the body.
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    operation_id = "login",
    tag = "auth",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 201, description = "Signed in", body = SessionOut),
        (status = 403, description = "`password_change_required`: the password was set by an admin or a partner; sign in again with `new_password`", body = crate::error::ErrorBody),
        SessionErrors,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    PeerIp(peer): PeerIp,
    Body(request): Body<LoginRequest>,
) -> Result<(StatusCode, Json<SessionOut>), ApiError> {
    let secret = match (request.password, request.token) {
        (Some(password), None) => Secret::Password { password, new_password: request.new_password },
        (None, Some(_)) if request.new_password.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "new_password",
                "a new password is set by signing in with the current `password`",
            ));
        }
        (None, Some(token)) => Secret::ApiToken(token),
        _ => {
            return Err(ApiError::bad_request("invalid_body", "password", "give either `password` or `token`"));
        }
    };
    let issued = state.auth.login(&request.login, secret, peer).await?;
    Ok((StatusCode::CREATED, Json(SessionOut::from_issued(issued))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

/// Swap a refresh token for a new access token and refresh token. The old refresh token
/// and the old access token stop working.
#[utoipa::path(
    post,
    path = "/api/v1/sessions/refresh",
    operation_id = "refresh_session",
    tag = "auth",
    security(()),
    request_body = RefreshRequest,
    responses((status = 201, description = "A new pair", body = SessionOut), SessionErrors)
)]
pub async fn refresh(
    State(state): State<AppState>,
    PeerIp(peer): PeerIp,
    Body(request): Body<RefreshRequest>,
) -> Result<(StatusCode, Json<SessionOut>), ApiError> {
    let issued = state.auth.refresh(&request.refresh_token, peer).await?;
    Ok((StatusCode::CREATED, Json(SessionOut::from_issued(issued))))
}

/// Log out: the session's access and refresh tokens stop working. A user ends its own
/// sessions; the operator any.
#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{id}",
    operation_id = "logout",
    tag = "auth",
    params(("id" = Uuid, Path, description = "The `session_id` from signing in")),
    responses(
        (status = 204, description = "Logged out"),
        (status = 404, description = "No such session, or another user's", body = crate::error::ErrorBody),
        AuthenticatedErrors,
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("session_not_found", "no such session"))?;
    state.auth.logout(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct MeOut {
    #[schema(example = "ok")]
    status: &'static str,
    role: Role,
    /// The user's login; none for the admin key.
    login: Option<String>,
    /// The account number a partner or customer acts for.
    account: Option<String>,
    #[schema(example = json!({"api": "/api/v1", "account": "/api/v1/accounts/C-1001"}))]
    links: BTreeMap<&'static str, String>,
}

/// Who the credential stands for.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    operation_id = "me",
    tag = "auth",
    responses((status = 200, description = "The caller", body = MeOut), AuthenticatedErrors)
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Json<MeOut> {
    let (role, account) = match caller.scope {
        Scope::Admin => (Role::Admin, None),
        Scope::Partner(id) => (Role::Partner, Some(id)),
        Scope::Customer(id) => (Role::Customer, Some(id)),
    };
    let account = account.and_then(|id| state.ledger.account_by_id(id)).map(|a| a.number);
    let mut links = Links::new();
    links.insert("api", super::API_ROOT.to_owned());
    if let Some(number) = &account {
        links.insert("account", format!("/api/v1/accounts/{number}"));
    }
    Json(MeOut { status: "ok", role, login: caller.login, account, links })
}

/// The public key that verifies access tokens, as a JSON Web Key Set: other services check
/// tokens with it without asking the ledger.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    operation_id = "jwks",
    tag = "auth",
    security(()),
    responses((status = 200, description = "The key set", body = Jwks))
)]
pub async fn jwks(State(state): State<AppState>) -> Json<Jwks> {
    Json(state.auth.jwks())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnPasswordRequest {
    /// The password the user signs in with now.
    current_password: String,
    /// 10 to 1024 characters, not the current one.
    #[schema(min_length = 10, max_length = 1024)]
    new_password: String,
}

/// Change the caller's own password. Every other session of the user ends (API sessions
/// and portal sessions); the session the request came with, if it is one, stays. API
/// tokens are credentials of their own and keep working. A wrong current password is
/// counted against the login like a wrong sign-in.
#[utoipa::path(
    put,
    path = "/api/v1/me/password",
    operation_id = "change_own_password",
    tag = "auth",
    request_body = OwnPasswordRequest,
    responses((status = 204, description = "Changed"), OwnPasswordErrors)
)]
pub async fn change_own_password(
    State(state): State<AppState>,
    caller: Caller,
    PeerIp(peer): PeerIp,
    Body(request): Body<OwnPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let keep = KeptSessions { session: caller.session, portal_session: None };
    state.auth.change_own_password(&caller, request.current_password, request.new_password, peer, keep).await?;
    Ok(StatusCode::NO_CONTENT)
}
