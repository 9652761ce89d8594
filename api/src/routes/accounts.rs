//! Accounts: register, show, change status, credit limit and tariff.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::{AccountId, AccountKind, AccountStatus, Amount, Command, Currency, OpenAccount, TariffId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::account_links;
use crate::auth::{Caller, Scope};
use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{IdempotencyKey, MinPosition, ReadErrors, WriteErrors};
use crate::query;
use crate::server::AppState;
use crate::write::{Write, WriteBody, managed_account, respond, visible_account};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(show))
        .routes(routes!(change_status))
        .routes(routes!(change_credit_limit))
        .routes(routes!(assign_tariff))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The operator's own account number: unique ledger-wide, 1 to 128 printable ASCII
    /// characters without spaces.
    #[schema(example = "C-1001")]
    number: String,
    #[schema(example = "Customer One Ltd")]
    name: String,
    #[schema(schema_with = crate::openapi::account_kind)]
    kind: AccountKind,
    /// The partner's account number, for a partner's customer. A partner registering a
    /// customer may leave it out: the customer is its own.
    partner: Option<String>,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    /// How far the balance may go below zero; 0 when absent.
    #[schema(schema_with = crate::openapi::amount_in)]
    credit_limit: Option<Amount>,
}

/// Register a partner or a customer. The ledger makes the account's id. A partner may
/// register customers of its own only.
#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    operation_id = "register_account",
    tag = "accounts",
    params(IdempotencyKey),
    request_body = RegisterRequest,
    responses((status = 201, description = "Registered", body = WriteBody), WriteErrors)
)]
pub async fn register(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<RegisterRequest>,
) -> Result<Response, ApiError> {
    let partner = match write.caller.scope {
        Scope::Partner(own) => {
            if request.kind != AccountKind::Customer {
                return Err(ApiError::forbidden("a partner registers customers only").with_field("kind"));
            }
            if let Some(number) = &request.partner
                && visible_account(&state, &write.caller, "partner", number)?.id != own
            {
                return Err(ApiError::forbidden("a partner registers its own customers only").with_field("partner"));
            }
            Some(own)
        }
        _ => request
            .partner
            .as_deref()
            .map(|p| visible_account(&state, &write.caller, "partner", p))
            .transpose()?
            .map(|a| a.id),
    };
    let meta = write.meta(&request, None)?;
    // A retry must name the same account id for the ledger to recognise it as a repeat, so
    // with an idempotency key the id derives from the key and the request's digest. The
    // digest is part of it so that a key reused for another registration (maybe in another
    // book, which knows nothing of the first) can never give two accounts one id.
    let account = match &meta.idempotency {
        Some(idempotency) => {
            let mut hasher = Sha256::new();
            hasher.update(b"tollbook account id\n");
            hasher.update(idempotency.key.as_bytes());
            hasher.update(b"\n");
            hasher.update(idempotency.request_digest);
            let digest = hasher.finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            AccountId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
        }
        None => AccountId::new(),
    };
    let open = OpenAccount {
        account,
        number: request.number.clone(),
        name: request.name,
        kind: request.kind,
        partner,
        currency: request.currency,
        credit_limit: request.credit_limit.unwrap_or(Amount::ZERO),
    };
    let outcome = state.ledger.open_account(open, meta).await?;
    Ok(respond(&state, StatusCode::CREATED, outcome, account_links(&request.number)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    min_position: Option<u64>,
}

/// An account as the read models know it.
#[derive(Serialize, ToSchema)]
pub struct AccountDetails {
    #[schema(example = "C-1001")]
    number: String,
    #[schema(value_type = uuid::Uuid)]
    id: AccountId,
    name: String,
    #[schema(schema_with = crate::openapi::account_kind)]
    kind: AccountKind,
    /// The partner's account number, for a partner's customer.
    partner: Option<String>,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    #[schema(schema_with = crate::openapi::account_status)]
    status: AccountStatus,
    #[schema(schema_with = crate::openapi::amount_out)]
    balance: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    credit_limit: Amount,
    /// `balance + credit_limit`: what may still be spent.
    #[schema(schema_with = crate::openapi::amount_out)]
    available: Amount,
    #[schema(value_type = Option<uuid::Uuid>)]
    tariff: Option<TariffId>,
    #[schema(schema_with = crate::openapi::timestamp)]
    opened_at: Timestamp,
}

#[derive(Serialize, ToSchema)]
pub struct AccountOut {
    #[schema(example = "ok")]
    status: &'static str,
    account: AccountDetails,
    /// The global log position the read models reflected when answering.
    position: u64,
    links: BTreeMap<&'static str, String>,
}

/// An account's details: balance, credit limit, what is available, status, kind, partner,
/// currency and links to what concerns it.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}",
    operation_id = "show_account",
    tag = "accounts",
    params(("number" = String, Path, description = "The account number"), MinPosition),
    responses((status = 200, description = "The account", body = AccountOut), ReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AccountOut>, ApiError> {
    let query: ShowQuery = query::parse(raw.as_deref())?;
    // Scope first, from the ledger's index: a foreign account is not looked up further.
    let account = visible_account(&state, &caller, "number", &number)?;
    let (view, position) = super::read_account(&state, &account, query.min_position).await?;
    let partner = view.partner.and_then(|id| state.ledger.account_by_id(id)).map(|p| p.number);
    let mut links = account_links(&number);
    if let Some(partner) = &partner {
        links.insert("partner", format!("/api/v1/accounts/{partner}"));
    }
    let available = view.available();
    let account = AccountDetails {
        number: view.number,
        id: view.id,
        name: view.name,
        kind: view.kind,
        partner,
        currency: view.currency,
        status: view.status,
        balance: view.balance,
        credit_limit: view.credit_limit,
        available,
        tariff: view.tariff,
        opened_at: view.opened_at,
    };
    Ok(Json(AccountOut { status: "ok", account, position, links }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    #[schema(schema_with = crate::openapi::account_status)]
    status: AccountStatus,
    reason: Option<String>,
}

/// Activate, suspend or close an account. Suspended accounts still take payments and
/// charges; closed ones take nothing but reversals.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{number}/status",
    operation_id = "change_account_status",
    tag = "accounts",
    params(("number" = String, Path, description = "The account number"), IdempotencyKey),
    request_body = StatusRequest,
    responses((status = 200, description = "Changed (or already so: no events)", body = WriteBody), WriteErrors)
)]
pub async fn change_status(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<StatusRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state, &write.caller, "number", &number)?.id;
    let meta = write.meta(&request, None)?;
    let command = Command::ChangeStatus { account, status: request.status, reason: request.reason };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state, StatusCode::OK, outcome, account_links(&number)))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditLimitRequest {
    /// How far the balance may go below zero through fund moves and manual charges.
    #[schema(schema_with = crate::openapi::amount_in)]
    credit_limit: Amount,
}

/// Set an account's credit limit.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{number}/credit-limit",
    operation_id = "change_credit_limit",
    tag = "accounts",
    params(("number" = String, Path, description = "The account number"), IdempotencyKey),
    request_body = CreditLimitRequest,
    responses((status = 200, description = "Changed", body = WriteBody), WriteErrors)
)]
pub async fn change_credit_limit(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<CreditLimitRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state, &write.caller, "number", &number)?.id;
    let meta = write.meta(&request, None)?;
    let command = Command::ChangeCreditLimit { account, credit_limit: request.credit_limit };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state, StatusCode::OK, outcome, account_links(&number)))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TariffRequest {
    /// The id of a published tariff; absent (or empty in a form) removes the assignment.
    #[schema(value_type = Option<uuid::Uuid>)]
    tariff: Option<String>,
}

/// Assign the tariff that rates an account's calls (or remove it).
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{number}/tariff",
    operation_id = "assign_tariff",
    tag = "accounts",
    params(("number" = String, Path, description = "The account number"), IdempotencyKey),
    request_body = TariffRequest,
    responses((status = 200, description = "Assigned", body = WriteBody), WriteErrors)
)]
pub async fn assign_tariff(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<TariffRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state, &write.caller, "number", &number)?.id;
    let tariff = request
        .tariff
        .as_deref()
        .map(|text| {
            TariffId::parse(text)
                .ok_or_else(|| ApiError::bad_request("invalid_field", "tariff", "tariff: expected a tariff id (UUID)"))
        })
        .transpose()?;
    let meta = write.meta(&request, None)?;
    let outcome = state.ledger.execute(Command::AssignTariff { account, tariff }, meta).await?;
    Ok(respond(&state, StatusCode::OK, outcome, account_links(&number)))
}
