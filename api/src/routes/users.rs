//! Users: people and systems that sign in, each bound to a role (and, for a partner or a
//! customer, to its account). Only the operator manages them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Links, PAGE_SIZE_DEFAULT, page_size};
use crate::auth::{Caller, Role, Scope, UserRecord, hash_password_off_thread, validate_password};
use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{AdminReadErrors, AdminWriteErrors};
use crate::query;
use crate::state::AppState;
use crate::write::visible_account;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, remove))
        .routes(routes!(set_temporary_password))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    /// 1 to 128 printable ASCII characters without spaces.
    #[schema(example = "reseller-one")]
    login: String,
    /// At least 10 characters. Without one, the user signs in with API tokens only.
    #[schema(min_length = 10, max_length = 1024)]
    password: Option<String>,
    role: Role,
    /// The account a partner or customer user acts for: a partner account for the
    /// `partner` role, a customer account for `customer`; none for `admin`.
    account: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    login: String,
    role: Role,
    /// The account number the user acts for.
    account: Option<String>,
    /// Whether the user can sign in with a password.
    has_password: bool,
    /// The password was set by an admin or a partner and must be changed at the next
    /// sign-in.
    password_must_change: bool,
    /// When the password was last set; absent when not since the user was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    password_changed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    #[schema(example = json!({"self": "/api/v1/users/reseller-one", "tokens": "/api/v1/tokens?user=reseller-one", "account": "/api/v1/accounts/P-100"}))]
    links: BTreeMap<&'static str, String>,
}

impl UserOut {
    pub fn from_record(user: &UserRecord) -> Self {
        let mut links = Links::new();
        links.insert("self", format!("/api/v1/users/{}", user.login));
        links.insert("tokens", format!("/api/v1/tokens?user={}", user.login));
        if let Some(number) = &user.account_number {
            links.insert("account", format!("/api/v1/accounts/{number}"));
        }
        UserOut {
            login: user.login.clone(),
            role: user.role,
            account: user.account_number.clone(),
            has_password: user.password_hash.is_some(),
            password_must_change: user.password_must_change,
            password_changed_at: user.password_changed_at,
            created_at: user.created_at,
            links,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    #[schema(example = "ok")]
    status: &'static str,
    user: UserOut,
}

fn user_not_found(login: &str) -> ApiError {
    ApiError::not_found("user_not_found", format!("user `{login}` not found")).with_field("login")
}

/// Create a user. The password is stored only as an argon2id hash.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    operation_id = "create_user",
    tag = "auth",
    request_body = UserRequest,
    responses((status = 201, description = "Created", body = UserResponse), AdminWriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<UserRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    caller.require_admin()?;
    domain::ids::validate_identifier("login", &request.login)?;
    let account = match (request.role, request.account.as_deref()) {
        (Role::Admin, None) => None,
        (Role::Admin, Some(_)) => {
            return Err(ApiError::bad_request("invalid_field", "account", "an admin user has no account"));
        }
        (Role::Partner | Role::Customer, None) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "account",
                "a partner or customer user needs an account",
            ));
        }
        (role, Some(number)) => {
            let account = visible_account(&state.ledger, &caller, "account", number)?;
            let expected =
                if role == Role::Partner { domain::AccountKind::Partner } else { domain::AccountKind::Customer };
            if account.kind != expected {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "account",
                    format!("account `{number}` is a {}, not a {}", account.kind.as_str(), expected.as_str()),
                ));
            }
            Some(account)
        }
    };
    let password_hash = match request.password {
        None => None,
        Some(password) => {
            validate_password("password", &password)?;
            Some(hash_password_off_thread(password).await?)
        }
    };
    let user = UserRecord {
        id: Uuid::now_v7(),
        login: request.login,
        role: request.role,
        account: account.as_ref().map(|a| a.id),
        account_number: account.map(|a| a.number),
        password_hash,
        created_at: Utc::now(),
        password_must_change: false,
        password_changed_at: None,
    };
    if !state.auth.store.insert_user(&user).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "duplicate_login", format!("login `{}` is taken", user.login))
            .with_field("login"));
    }
    Ok((StatusCode::CREATED, Json(UserResponse { status: "ok", user: UserOut::from_record(&user) })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The cursor: the last login of the previous page (its `next`).
    after: Option<String>,
    /// Page size, 1 to 1000; 100 when absent.
    #[serde(default, deserialize_with = "query::optional_u64")]
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    #[schema(example = "ok")]
    status: &'static str,
    users: Vec<UserOut>,
    /// The `after` of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// List users in login order, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    operation_id = "list_users",
    tag = "auth",
    params(ListQuery),
    responses((status = 200, description = "A page of users", body = UserList), AdminReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<UserList>, ApiError> {
    caller.require_admin()?;
    let query: ListQuery = query::parse(raw.as_deref())?;
    let limit = page_size(query.limit.unwrap_or(PAGE_SIZE_DEFAULT as u64))?;
    // One more than asked tells whether there is a next page.
    let mut users = state.auth.store.users(query.after.as_deref(), limit + 1)?;
    let next = (users.len() > limit).then(|| {
        users.truncate(limit);
        users.last().map(|u| u.login.clone())
    });
    Ok(Json(UserList { status: "ok", users: users.iter().map(UserOut::from_record).collect(), next: next.flatten() }))
}

/// One user.
#[utoipa::path(
    get,
    path = "/api/v1/users/{login}",
    operation_id = "show_user",
    tag = "auth",
    params(("login" = String, Path, description = "The user's login", example = "alice")),
    responses((status = 200, description = "The user", body = UserResponse), AdminReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(login): Path<String>,
) -> Result<Json<UserResponse>, ApiError> {
    caller.require_admin()?;
    let user = state.auth.store.user(&login)?.ok_or_else(|| user_not_found(&login))?;
    Ok(Json(UserResponse { status: "ok", user: UserOut::from_record(&user) }))
}

/// Remove a user, with every API token and session of theirs: they stop working at once.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{login}",
    operation_id = "remove_user",
    tag = "auth",
    params(("login" = String, Path, description = "The user's login", example = "alice")),
    responses((status = 204, description = "Removed"), AdminReadErrors)
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(login): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if state.auth.store.remove_user(&login).await? { Ok(StatusCode::NO_CONTENT) } else { Err(user_not_found(&login)) }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemporaryPasswordRequest {
    /// 10 to 1024 characters. The user must change it at its next sign-in.
    #[schema(min_length = 10, max_length = 1024)]
    password: String,
}

/// Set a temporary password for a user: the operator for any user, a partner for the
/// users of its own customers. The user's sessions end at once, and sign-in with the new
/// password answers 403 `password_change_required` until the user gives a `new_password`.
/// Another partner's user, or any user the caller may not manage, answers 404.
#[utoipa::path(
    put,
    path = "/api/v1/users/{login}/password",
    operation_id = "set_temporary_password",
    tag = "auth",
    params(("login" = String, Path, description = "The user's login", example = "alice")),
    request_body = TemporaryPasswordRequest,
    responses((status = 200, description = "Set; the user as it now stands", body = UserResponse), AdminWriteErrors)
)]
pub async fn set_temporary_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(login): Path<String>,
    Body(request): Body<TemporaryPasswordRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    caller.require_writer()?;
    let user = state.auth.store.user(&login)?.filter(|user| may_set_password_of(&state, &caller, user));
    let user = user.ok_or_else(|| user_not_found(&login))?;
    if !state.auth.set_temporary_password(&user, request.password).await? {
        return Err(user_not_found(&login));
    }
    let user = state.auth.store.user(&login)?.ok_or_else(|| user_not_found(&login))?;
    Ok(Json(UserResponse { status: "ok", user: UserOut::from_record(&user) }))
}

/// The operator may set anyone's password; a partner only its customers' users (never a
/// partner user, its own included: that is the operator's to do).
fn may_set_password_of(state: &AppState, caller: &Caller, user: &UserRecord) -> bool {
    match caller.scope {
        Scope::Admin => true,
        Scope::Partner(_) => {
            user.role == Role::Customer
                && user
                    .account
                    .and_then(|id| state.ledger.account_by_id(id))
                    .is_some_and(|account| caller.manages(&account))
        }
        Scope::Customer(_) => false,
    }
}
