//! What every write endpoint shares: the command's metadata (actor, times, idempotency)
//! and the rendering of its outcome.

use std::collections::BTreeMap;

use axum::Json;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use commands::{AccountRef, CommandOutcome, Ledger};
use domain::{Amount, CommandMeta, EventId, Idempotency, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::{Auth, Caller, SwitchCaller};
use crate::error::ApiError;

/// The header a client sends to make a write safe to retry.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The request-level context of a write: who asks, and how to recognise a repeat.
pub struct Write {
    pub caller: Caller,
    idempotency_key: Option<String>,
    method: Method,
    path: String,
}

impl<S> FromRequestParts<S> for Write
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Write::by(caller, parts)
    }
}

/// A [`Write`] to a switch's intake route, whose caller may also present HTTP Basic
/// credentials ([`crate::auth::SwitchCaller`]).
pub struct SwitchWrite(pub Write);

impl<S> FromRequestParts<S> for SwitchWrite
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let SwitchCaller(caller) = SwitchCaller::from_request_parts(parts, state).await?;
        Write::by(caller, parts).map(SwitchWrite)
    }
}

impl Write {
    fn by(caller: Caller, parts: &Parts) -> Result<Write, ApiError> {
        caller.require_writer()?;
        let idempotency_key = match parts.headers.get(IDEMPOTENCY_KEY_HEADER) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        ApiError::bad_request("invalid_header", "Idempotency-Key", "the Idempotency-Key must be ASCII")
                    })?
                    .to_owned(),
            ),
        };
        // The original URI: the digest must not change if the router is ever nested.
        let path = parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.path(), |u| u.0.path()).to_owned();
        Ok(Write { caller, idempotency_key, method: parts.method.clone(), path })
    }

    /// The command's metadata. The idempotency digest covers the method, the path and the
    /// parsed request, so the same key with the same request in another content type still
    /// counts as a repeat, and with another request as a conflict.
    pub fn meta<R: Serialize>(&self, request: &R, occurred_at: Option<Timestamp>) -> Result<CommandMeta, ApiError> {
        let idempotency = self.idempotency_key.as_deref().map(|key| (key, &self.method, self.path.as_str()));
        command_meta(&self.caller, idempotency, request, occurred_at)
    }
}

/// A command's metadata for `caller`; with an idempotency key, the method and path of the
/// request it came with. Shared with the portal's forms, which carry their own key.
pub fn command_meta<R: Serialize>(
    caller: &Caller,
    idempotency: Option<(&str, &Method, &str)>,
    request: &R,
    occurred_at: Option<Timestamp>,
) -> Result<CommandMeta, ApiError> {
    let now = Timestamp::from_micros(chrono::Utc::now().timestamp_micros());
    let idempotency = match idempotency {
        None => None,
        Some((key, method, path)) => {
            let canonical = serde_json::to_vec(request).map_err(|e| ApiError::internal(&e))?;
            let mut hasher = Sha256::new();
            hasher.update(method.as_str().as_bytes());
            hasher.update(b" ");
            hasher.update(path.as_bytes());
            hasher.update(b"\n");
            hasher.update(&canonical);
            Some(Idempotency { key: key.to_owned(), request_digest: hasher.finalize().into() })
        }
    };
    Ok(CommandMeta {
        occurred_at: occurred_at.unwrap_or(now),
        recorded_at: now,
        actor: caller.actor.clone(),
        idempotency,
    })
}

/// Parses an optional business time given as RFC 3339 or `YYYY-MM-DD`.
pub fn parse_time(field: &'static str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse(t).ok_or_else(|| {
            ApiError::bad_request("invalid_field", field, format!("{field}: expected RFC 3339 or YYYY-MM-DD"))
        })
    })
    .transpose()
}

/// An event a write produced.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventOut {
    /// The event's type, such as `PaymentReceived` or `FundsMoved`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Its position in the global log: what a reversal names.
    position: u64,
    #[schema(value_type = uuid::Uuid)]
    event_id: EventId,
}

/// An account's balance right after the write.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BalanceOut {
    /// The account number.
    account: String,
    #[schema(schema_with = crate::openapi::amount_out)]
    balance: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    credit_limit: Amount,
    /// `balance + credit_limit`: what may still be spent.
    #[schema(schema_with = crate::openapi::amount_out)]
    available: Amount,
}

/// The answer to every ledger write: what it recorded, the balances it left and where in
/// the log it stands, so that the client can read its own write.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WriteBody {
    #[schema(example = "ok")]
    status: &'static str,
    /// The id of what the write created, where it has one that the next requests need
    /// (a tariff's).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    id: Option<String>,
    /// True when this answers a repeat of an earlier request (same `Idempotency-Key` and
    /// body): `events` and `position` are the first request's and nothing new was recorded.
    repeated: bool,
    /// The global position to pass as `min_position` to read what this write did; null
    /// when the write changed nothing.
    position: Option<u64>,
    events: Vec<EventOut>,
    balances: Vec<BalanceOut>,
    /// Related resources.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(example = crate::openapi::account_links_example)]
    links: BTreeMap<&'static str, String>,
}

/// Renders an accepted command: its events, the balances after it and its position.
pub fn respond(
    ledger: &Ledger,
    status: StatusCode,
    outcome: CommandOutcome,
    links: BTreeMap<&'static str, String>,
) -> Response {
    respond_with_id(ledger, status, outcome, None, links)
}

/// [`respond`], naming what the write created by its `id`.
pub fn respond_with_id(
    ledger: &Ledger,
    status: StatusCode,
    outcome: CommandOutcome,
    id: Option<String>,
    links: BTreeMap<&'static str, String>,
) -> Response {
    let events = outcome
        .events
        .iter()
        .map(|e| EventOut {
            kind: e.event.payload.type_name(),
            position: e.position,
            event_id: e.event.envelope.event_id,
        })
        .collect();
    let balances = outcome
        .balances
        .iter()
        .map(|b| {
            // The index always knows an account a command just touched; the id is a fallback.
            let account = ledger.account_by_id(b.account);
            // The same canonical form as the account view and statements show (the book's
            // state sums amounts as they were recorded, with whatever places they had).
            let shown = |amount: Amount| account.as_ref().map_or(amount.normalized(), |a| amount.canonical(a.currency));
            BalanceOut {
                balance: shown(b.balance),
                credit_limit: shown(b.credit_limit),
                available: shown(b.available),
                account: account.map_or_else(|| b.account.to_string(), |a| a.number),
            }
        })
        .collect();
    let body = WriteBody {
        status: "ok",
        id,
        repeated: outcome.repeated,
        position: outcome.position(),
        events,
        balances,
        links,
    };
    (status, Json(body)).into_response()
}

/// The account a request names, if the caller may see it. An account the caller may not
/// see answers exactly like one that does not exist.
pub fn visible_account(
    ledger: &Ledger,
    caller: &Caller,
    field: &'static str,
    number: &str,
) -> Result<AccountRef, ApiError> {
    ledger.account(number).filter(|account| caller.sees(account)).ok_or_else(|| {
        ApiError::not_found("account_not_found", format!("account `{number}` not found")).with_field(field)
    })
}

/// The account a request names, if the caller may post to it or change it: 404 when the
/// caller may not see it, 403 when it may see it but not manage it (a partner's own account).
pub fn managed_account(
    ledger: &Ledger,
    caller: &Caller,
    field: &'static str,
    number: &str,
) -> Result<AccountRef, ApiError> {
    let account = visible_account(ledger, caller, field, number)?;
    if caller.manages(&account) {
        Ok(account)
    } else {
        Err(ApiError::forbidden(format!("account `{number}` is managed by the operator")).with_field(field))
    }
}
