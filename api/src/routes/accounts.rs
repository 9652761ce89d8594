//! Accounts: register, show, change status, credit limit and tariff.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::{
    AccountId, AccountKind, AccountStatus, Amount, Command, Currency, DomainError, OpenAccount, TariffId, Timestamp,
};
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
use crate::state::AppState;
use crate::write::{Write, WriteBody, managed_account, respond, visible_account};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
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
    #[schema(schema_with = crate::openapi::amount_in_or_null)]
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
                && visible_account(&state.ledger, &write.caller, "partner", number)?.id != own
            {
                return Err(ApiError::forbidden("a partner registers its own customers only").with_field("partner"));
            }
            Some(own)
        }
        _ => request
            .partner
            .as_deref()
            .map(|p| visible_account(&state.ledger, &write.caller, "partner", p))
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
    // Account numbers are unique ledger-wide, so a key and body that repeat a registration
    // made in another tenant's book reach that book and are answered there. The answer
    // holds that account's balances: a caller that may not see it hears what it would
    // have heard without the key, that the number is taken.
    if outcome.repeated && state.ledger.account(&request.number).is_none_or(|account| !write.caller.sees(&account)) {
        return Err(DomainError::DuplicateAccountNumber(request.number).into());
    }
    Ok(respond(&state.ledger, StatusCode::CREATED, outcome, account_links(&request.number)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `active`, `suspended` or `closed`.
    #[param(value_type = Option<String>)]
    status: Option<AccountStatus>,
    /// `partner` or `customer`.
    #[param(value_type = Option<String>)]
    kind: Option<AccountKind>,
    /// A partner's number: the partner and its customers.
    partner: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (100 by default).
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    limit: Option<u64>,
    /// Wait until the read models reflect this position (read your writes).
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    min_position: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct AccountListOut {
    #[schema(example = "ok")]
    status: &'static str,
    /// Oldest first.
    accounts: Vec<AccountDetails>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
    /// The global log position the read models reflected when answering.
    position: u64,
}

/// The accounts the caller may see, oldest first, filtered: the operator sees every
/// account, a partner itself and its customers, a customer itself.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    operation_id = "list_accounts",
    tag = "accounts",
    params(ListQuery),
    responses((status = 200, description = "A page of accounts", body = AccountListOut), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<AccountListOut>, ApiError> {
    let query: ListQuery = query::parse(raw.as_deref())?;
    let limit = super::page_size(query.limit.unwrap_or(super::PAGE_SIZE_DEFAULT as u64))?;
    let partner = query
        .partner
        .as_deref()
        .map(|number| visible_account(&state.ledger, &caller, "partner", number))
        .transpose()?;
    if let Some(partner) = &partner
        && partner.kind != AccountKind::Partner
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "partner",
            format!("`{}` is not a partner", partner.number),
        ));
    }
    if let Some(position) = query.min_position {
        crate::service::accounts::wait_for_position(&state.ledger, &state.models, position).await?;
    }
    // One snapshot for the whole page: every row at the position the answer reports.
    let snapshot = state.models.snapshot();
    let position = snapshot.position();
    let mut filter = projections::AccountFilter {
        partner: partner.map(|p| p.id),
        status: query.status,
        book: None,
        kind: query.kind,
    };
    let page = match caller.scope {
        Scope::Admin => snapshot.accounts(&filter, query.cursor.as_deref(), limit)?,
        Scope::Partner(own) => {
            filter.partner = Some(own);
            snapshot.accounts(&filter, query.cursor.as_deref(), limit)?
        }
        // A customer's list is itself, if it passes the filters.
        Scope::Customer(own) => {
            let view = snapshot.account(own).filter(|v| {
                query.cursor.is_none()
                    && filter.status.is_none_or(|s| v.status == s)
                    && filter.kind.is_none_or(|k| v.kind == k)
                    && filter.partner.is_none_or(|p| v.partner == Some(p))
            });
            projections::Page { items: view.into_iter().collect(), next_cursor: None }
        }
    };
    let accounts = page.items.into_iter().map(|view| details(&state, view)).collect();
    Ok(Json(AccountListOut { status: "ok", accounts, next_cursor: page.next_cursor, position }))
}

fn details(state: &AppState, view: projections::AccountView) -> AccountDetails {
    let partner = view.partner.and_then(|id| state.ledger.account_by_id(id)).map(|p| p.number);
    let available = view.available();
    AccountDetails {
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
    }
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
    #[schema(example = crate::openapi::account_links_example)]
    links: BTreeMap<&'static str, String>,
}

/// An account's details: balance, credit limit, what is available, status, kind, partner,
/// currency and links to what concerns it.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}",
    operation_id = "show_account",
    tag = "accounts",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), MinPosition),
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
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let (view, position) =
        crate::service::accounts::read_account(&state.ledger, &state.models, &account, query.min_position).await?;
    let account = details(&state, view);
    let mut links = account_links(&number);
    if let Some(partner) = &account.partner {
        links.insert("partner", format!("/api/v1/accounts/{partner}"));
    }
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
    params(("number" = String, Path, description = "The account number", example = "C-1001"), IdempotencyKey),
    request_body = StatusRequest,
    responses((status = 200, description = "Changed (or already so: no events)", body = WriteBody), WriteErrors)
)]
pub async fn change_status(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<StatusRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state.ledger, &write.caller, "number", &number)?.id;
    let meta = write.meta(&request, None)?;
    let command = Command::ChangeStatus { account, status: request.status, reason: request.reason };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state.ledger, StatusCode::OK, outcome, account_links(&number)))
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
    params(("number" = String, Path, description = "The account number", example = "C-1001"), IdempotencyKey),
    request_body = CreditLimitRequest,
    responses((status = 200, description = "Changed", body = WriteBody), WriteErrors)
)]
pub async fn change_credit_limit(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<CreditLimitRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state.ledger, &write.caller, "number", &number)?.id;
    let meta = write.meta(&request, None)?;
    let command = Command::ChangeCreditLimit { account, credit_limit: request.credit_limit };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state.ledger, StatusCode::OK, outcome, account_links(&number)))
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
    params(("number" = String, Path, description = "The account number", example = "C-1001"), IdempotencyKey),
    request_body = TariffRequest,
    responses((status = 200, description = "Assigned", body = WriteBody), WriteErrors)
)]
pub async fn assign_tariff(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<TariffRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state.ledger, &write.caller, "number", &number)?.id;
    let tariff = request
        .tariff
        .as_deref()
        .map(|text| {
            TariffId::parse(text)
                .ok_or_else(|| ApiError::bad_request("invalid_field", "tariff", "tariff: expected a tariff id (UUID)"))
        })
        .transpose()?;
    if let Some(id) = tariff {
        super::tariffs::visible_tariff(&state, &write.caller, id)?;
    }
    let meta = write.meta(&request, None)?;
    let outcome = state.ledger.assign_tariff(account, tariff, meta).await?;
    Ok(respond(&state.ledger, StatusCode::OK, outcome, account_links(&number)))
}
