//! Accounts: register, show, change status and credit limit.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::{AccountId, AccountKind, AccountStatus, Amount, Command, Currency, OpenAccount};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::account_links;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::ApiError;
use crate::query;
use crate::server::AppState;
use crate::write::{Write, account_id, respond};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    number: String,
    name: String,
    kind: AccountKind,
    /// The partner's account number, for a partner's customer.
    partner: Option<String>,
    currency: Currency,
    credit_limit: Option<Amount>,
}

pub async fn register(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<RegisterRequest>,
) -> Result<Response, ApiError> {
    let partner = request.partner.as_deref().map(|p| account_id(&state, "partner", p)).transpose()?;
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

#[derive(Serialize)]
struct AccountOut {
    status: &'static str,
    account: projections::AccountView,
    available: Amount,
    /// The global position the read model reflected when answering.
    position: u64,
    links: BTreeMap<&'static str, String>,
}

pub async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<impl Serialize>, ApiError> {
    let query: ShowQuery = query::parse(raw.as_deref())?;
    let (view, position) = super::read_account(&state, &number, query.min_position).await?;
    let available = view.available();
    Ok(Json(AccountOut { status: "ok", account: view, available, position, links: account_links(&number) }))
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    status: AccountStatus,
    reason: Option<String>,
}

pub async fn change_status(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<StatusRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&state, "number", &number)?;
    let meta = write.meta(&request, None)?;
    let command = Command::ChangeStatus { account, status: request.status, reason: request.reason };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state, StatusCode::OK, outcome, account_links(&number)))
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreditLimitRequest {
    credit_limit: Amount,
}

pub async fn change_credit_limit(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<CreditLimitRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&state, "number", &number)?;
    let meta = write.meta(&request, None)?;
    let command = Command::ChangeCreditLimit { account, credit_limit: request.credit_limit };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state, StatusCode::OK, outcome, account_links(&number)))
}
