//! API tokens: long-lived credentials the operator makes for a user, for integrations.
//! The secret is shown once, in the answer that creates it, and stored only as a digest.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::Links;
use crate::auth::{Caller, TokenRecord};
use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{AdminReadErrors, AdminWriteErrors};
use crate::query;
use crate::state::AppState;

/// Tokens one user may hold at once.
pub const TOKENS_PER_USER_MAX: usize = 100;
/// Networks in one token's allowlist.
pub const ALLOWED_IPS_MAX: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(show, revoke))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The login of the user the token acts for.
    #[schema(example = "reseller-one")]
    user: String,
    #[schema(example = "CRM integration")]
    description: Option<String>,
    /// When the token stops working (RFC 3339, in the future); never when absent.
    expires_at: Option<String>,
    /// The networks the token may be used from, as CIDRs (a bare address is one host): a
    /// JSON array, or one string separated by commas or spaces (as forms send it). A
    /// request from elsewhere is answered 401. Any address when absent.
    #[serde(default, deserialize_with = "networks")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["203.0.113.0/24", "2001:db8::/32"]))]
    allowed_ips: Option<Vec<IpNet>>,
}

/// CIDRs from a JSON array or from one separated string.
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<IpNet>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<String>),
        Text(String),
    }
    let texts: Vec<String> = match Option::<Given>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(Given::List(list)) => list,
        Some(Given::Text(text)) => text.split([',', ' ']).filter(|part| !part.is_empty()).map(str::to_owned).collect(),
    };
    texts
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
                serde::de::Error::custom(format!("`{}` is not a CIDR", text.chars().take(64).collect::<String>()))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    id: Uuid,
    /// The login of the user the token acts for.
    user: String,
    description: Option<String>,
    /// The token's first characters, to tell tokens apart; never the whole secret.
    #[schema(example = "tbk_Xy3q")]
    prefix: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = Vec<String>)]
    allowed_ips: Vec<IpNet>,
    #[schema(example = json!({"self": "/api/v1/tokens/0f8fad5b-d9cb-469f-a165-70867728950e", "user": "/api/v1/users/reseller-one"}))]
    links: BTreeMap<&'static str, String>,
}

impl TokenOut {
    fn from_record(record: &TokenRecord) -> Self {
        let mut links = Links::new();
        links.insert("self", format!("/api/v1/tokens/{}", record.id));
        links.insert("user", format!("/api/v1/users/{}", record.login));
        TokenOut {
            id: record.id,
            user: record.login.clone(),
            description: record.description.clone(),
            prefix: record.prefix.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            allowed_ips: record.allowed_ips.clone(),
            links,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct NewTokenResponse {
    #[schema(example = "ok")]
    status: &'static str,
    /// The secret: send it as a credential. It is shown this once and cannot be recovered.
    #[schema(example = "tbk_Xy3q…")]
    token: String,
    details: TokenOut,
}

fn token_not_found() -> ApiError {
    ApiError::not_found("token_not_found", "no such token")
}

/// Create an API token for a user. The answer holds the secret, once.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "create_token",
    tag = "auth",
    request_body = TokenRequest,
    responses((status = 201, description = "Created; `token` is shown only here", body = NewTokenResponse), AdminWriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<TokenRequest>,
) -> Result<(StatusCode, Json<NewTokenResponse>), ApiError> {
    caller.require_admin()?;
    let store = &state.auth.store;
    let Some(user) = store.user(&request.user)? else {
        return Err(
            ApiError::not_found("user_not_found", format!("user `{}` not found", request.user)).with_field("user")
        );
    };
    if let Some(description) = &request.description {
        domain::ids::validate_text("description", description)?;
    }
    let expires_at = request
        .expires_at
        .as_deref()
        .map(|text| {
            DateTime::parse_from_rfc3339(text.trim())
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .filter(|t| *t > Utc::now())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_field", "expires_at", "expires_at: expected a future RFC 3339 time")
                })
        })
        .transpose()?;
    let allowed_ips = request.allowed_ips.unwrap_or_default();
    if allowed_ips.len() > ALLOWED_IPS_MAX {
        return Err(ApiError::bad_request(
            "invalid_field",
            "allowed_ips",
            format!("at most {ALLOWED_IPS_MAX} networks"),
        ));
    }
    if store.tokens_of(Some(&request.user))?.len() >= TOKENS_PER_USER_MAX {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_tokens",
            format!("a user holds at most {TOKENS_PER_USER_MAX} tokens; revoke one first"),
        )
        .with_field("user"));
    }
    let created = state.auth.create_token(&user, request.description, expires_at, allowed_ips).await?;
    let body = NewTokenResponse { status: "ok", token: created.token, details: TokenOut::from_record(&created.record) };
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this user's tokens.
    user: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    #[schema(example = "ok")]
    status: &'static str,
    tokens: Vec<TokenOut>,
}

/// List API tokens (never their secrets), oldest first. A user holds at most 100, so the
/// list of one user is one page.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    operation_id = "list_tokens",
    tag = "auth",
    params(ListQuery),
    responses((status = 200, description = "The tokens", body = TokenList), AdminReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<TokenList>, ApiError> {
    caller.require_admin()?;
    let query: ListQuery = query::parse(raw.as_deref())?;
    let tokens = state.auth.store.tokens_of(query.user.as_deref())?;
    Ok(Json(TokenList { status: "ok", tokens: tokens.iter().map(TokenOut::from_record).collect() }))
}

fn token_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| token_not_found())
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    #[schema(example = "ok")]
    status: &'static str,
    details: TokenOut,
}

/// One API token (never its secret).
#[utoipa::path(
    get,
    path = "/api/v1/tokens/{id}",
    operation_id = "show_token",
    tag = "auth",
    params(("id" = Uuid, Path, description = "The token's id")),
    responses((status = 200, description = "The token", body = TokenResponse), AdminReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TokenResponse>, ApiError> {
    caller.require_admin()?;
    let record = state.auth.store.token(token_id(&id)?)?.ok_or_else(token_not_found)?;
    Ok(Json(TokenResponse { status: "ok", details: TokenOut::from_record(&record) }))
}

/// Revoke an API token: it stops working at once, and so does every session opened with
/// it (their access tokens are refused, their refresh tokens refresh nothing).
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    operation_id = "revoke_token",
    tag = "auth",
    params(("id" = Uuid, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"), AdminReadErrors)
)]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if state.auth.store.remove_token(token_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(token_not_found())
    }
}
