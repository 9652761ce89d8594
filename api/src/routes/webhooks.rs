//! Webhooks: an operator or a partner registers a URL and the events it wants; each event
//! is POSTed there, signed, retried, in log order (see `crate::notify::delivery`). The
//! secret that signs them is shown once, in the answer that creates the subscription.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use domain::{AccountId, BookId};
use ring::rand::SecureRandom;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Links, page_size};
use crate::auth::{Caller, Scope};
use crate::body::Body;
use crate::error::ApiError;
use crate::notify::delivery::literal_ip;
use crate::notify::filter::split_kinds;
use crate::notify::store::DeliveryRecord;
use crate::notify::{AddressPolicy, Audience, EventFilter, WEBHOOKS_MAX, WebhookRecord};
use crate::openapi::{AdminReadErrors, AdminWriteErrors};
use crate::query;
use crate::state::AppState;

/// Subscriptions one partner may hold.
pub const WEBHOOKS_PER_PARTNER_MAX: usize = 20;
/// Longest URL accepted.
pub const URL_BYTES_MAX: usize = 2048;
/// How long creating a webhook waits for its host name to resolve.
pub const URL_RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Secrets start with this, so that they are recognisable in configuration files.
pub const SECRET_PREFIX: &str = "whsec_";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(show, remove)).routes(routes!(deliveries))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where to POST: an `http` or `https` URL. Redirects are not followed.
    #[schema(example = "https://crm.example.com/hooks/tollbook")]
    url: String,
    /// The event kinds to deliver (`PaymentReceived`, `AlertRaised`, …): a JSON array or
    /// one string separated by commas. Every kind when absent.
    #[serde(default, deserialize_with = "kinds")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["AlertRaised", "PaymentReceived"]))]
    kinds: Vec<String>,
    /// Only this book's events: `operator`, or a partner's account number.
    book: Option<String>,
    /// Only the events of this account (by number).
    account: Option<String>,
    description: Option<String>,
    /// The first global log position to deliver; from now on when absent. Earlier events
    /// can be replayed to a new subscription this way.
    #[serde(default, deserialize_with = "optional_position")]
    #[schema(value_type = Option<u64>)]
    from: Option<u64>,
}

fn optional_position<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    crate::body::u64_from_text(deserializer).map(Some)
}

fn kinds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Option::<Given>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(Given::List(list)) => list,
        Some(Given::Text(text)) => split_kinds(&text),
    })
}

#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    id: Uuid,
    url: String,
    description: Option<String>,
    /// The kinds delivered; empty: every kind.
    kinds: Vec<String>,
    /// `operator` or a partner's account number, when filtered by book.
    book: Option<String>,
    /// The account number, when filtered by account.
    account: Option<String>,
    created_at: DateTime<Utc>,
    created_by: String,
    /// The first position it was to deliver.
    from: u64,
    /// The next position it will look at: everything before has been delivered, failed or
    /// was not wanted.
    next_position: Option<u64>,
    #[schema(example = json!({"self": "/api/v1/webhooks/0f8fad5b-d9cb-469f-a165-70867728950e", "deliveries": "/api/v1/webhooks/0f8fad5b-d9cb-469f-a165-70867728950e/deliveries"}))]
    links: BTreeMap<&'static str, String>,
}

fn book_name(state: &AppState, book: BookId) -> String {
    if book == BookId::OPERATOR {
        return book.to_string();
    }
    state.ledger.account_by_id(AccountId(book.0)).map_or_else(|| book.to_string(), |partner| partner.number)
}

fn webhook_out(state: &AppState, record: &WebhookRecord) -> Result<WebhookOut, ApiError> {
    let mut links = Links::new();
    links.insert("self", format!("/api/v1/webhooks/{}", record.id));
    links.insert("deliveries", format!("/api/v1/webhooks/{}/deliveries", record.id));
    Ok(WebhookOut {
        id: record.id,
        url: record.url.clone(),
        description: record.description.clone(),
        kinds: record.filter.kinds.iter().cloned().collect(),
        book: record.filter.book.map(|book| book_name(state, book)),
        account: record
            .filter
            .account
            .map(|id| state.ledger.account_by_id(id).map_or_else(|| id.to_string(), |a| a.number)),
        created_at: record.created_at,
        created_by: record.created_by.clone(),
        from: record.from,
        next_position: state.notify.store.cursor(record.id)?,
        links,
    })
}

#[derive(Serialize, ToSchema)]
pub struct NewWebhookResponse {
    #[schema(example = "ok")]
    status: &'static str,
    /// Signs every delivery (`X-Tollbook-Signature`). Shown this once.
    #[schema(example = "whsec_3q…")]
    secret: String,
    webhook: WebhookOut,
}

fn require_operator_or_partner(caller: &Caller) -> Result<(), ApiError> {
    match caller.scope {
        Scope::Admin | Scope::Partner(_) => Ok(()),
        Scope::Customer(_) => Err(ApiError::forbidden("webhooks are for the operator and partners")),
    }
}

/// The URL to store: http or https, with a host that is not (and does not resolve to) an
/// address webhooks may not reach (see `crate::notify::address`).
async fn checked_url(text: &str, policy: &AddressPolicy) -> Result<String, ApiError> {
    let invalid = |why: &str| ApiError::bad_request("invalid_field", "url", format!("url: {why}"));
    if text.len() > URL_BYTES_MAX {
        return Err(invalid(&format!("longer than {URL_BYTES_MAX} bytes")));
    }
    let url = reqwest::Url::parse(text.trim()).map_err(|e| invalid(&e.to_string()))?;
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(invalid("an http or https URL with a host is required"));
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("an http or https URL with a host is required"));
    }
    let not_allowed = |address: std::net::IpAddr| {
        ApiError::bad_request(
            "webhook_address_not_allowed",
            "url",
            format!(
                "url: {address} is a loopback, private, link-local or otherwise internal address; the operator \
                 can allow a range with --webhook-allow-private"
            ),
        )
    };
    let text = url.to_string();
    if let Some(address) = literal_ip(&text) {
        return if policy.permits(address) { Ok(text) } else { Err(not_allowed(address)) };
    }
    // A name that does not resolve now is accepted: it may later, and every delivery's
    // connection filters what it resolves to then.
    let resolved = tokio::time::timeout(URL_RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    if let Ok(Ok(addresses)) = resolved
        && let Some(refused) = addresses.map(|a| a.ip()).find(|ip| !policy.permits(*ip))
    {
        return Err(not_allowed(refused));
    }
    Ok(text)
}

/// Subscribe a URL to the ledger's events (operator and partners). A partner gets its own
/// book's events only, whatever the filters say. The answer holds the signing secret, once.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    operation_id = "create_webhook",
    tag = "events",
    request_body = WebhookRequest,
    responses((status = 201, description = "Created; `secret` is shown only here", body = NewWebhookResponse), AdminWriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<WebhookRequest>,
) -> Result<(StatusCode, Json<NewWebhookResponse>), ApiError> {
    require_operator_or_partner(&caller)?;
    let url = checked_url(&request.url, &state.notify.policy).await?;
    if let Some(description) = &request.description {
        domain::ids::validate_text("description", description)?;
    }
    let filter = EventFilter::parse(
        &state.ledger,
        &caller,
        request.book.as_deref(),
        request.account.as_deref(),
        &request.kinds,
    )?;
    let audience = Audience::of(&caller);
    let _registering = state.notify.registering.lock().await;
    let existing = state.notify.store.webhooks()?;
    let limit = match audience {
        Audience::All => WEBHOOKS_MAX,
        _ => WEBHOOKS_PER_PARTNER_MAX,
    };
    let held = existing.iter().filter(|w| audience == Audience::All || w.audience == audience).count();
    if existing.len() >= WEBHOOKS_MAX || held >= limit {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("at most {limit} webhooks; delete one first"),
        ));
    }
    let from = match request.from {
        Some(from) => from,
        None => state.ledger.store().head().await.map_err(|e| ApiError::internal(&e))?,
    };
    let mut random = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| ApiError::internal_message("no randomness".into()))?;
    let record = WebhookRecord {
        id: Uuid::now_v7(),
        url,
        description: request.description,
        audience,
        filter,
        secret: format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)),
        created_at: Utc::now(),
        created_by: caller.actor.clone(),
        from,
    };
    state.notify.store.insert_webhook(&record).await?;
    state.notify.start(record.clone());
    let body =
        NewWebhookResponse { status: "ok", secret: record.secret.clone(), webhook: webhook_out(&state, &record)? };
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    #[schema(example = "ok")]
    status: &'static str,
    webhooks: Vec<WebhookOut>,
}

/// The caller's webhooks (the operator: every one), oldest first, never their secrets.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    operation_id = "list_webhooks",
    tag = "events",
    responses((status = 200, description = "The webhooks", body = WebhookList), AdminReadErrors)
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<WebhookList>, ApiError> {
    require_operator_or_partner(&caller)?;
    let audience = Audience::of(&caller);
    let webhooks = state
        .notify
        .store
        .webhooks()?
        .iter()
        .filter(|w| audience == Audience::All || w.audience == audience)
        .map(|w| webhook_out(&state, w))
        .collect::<Result<_, _>>()?;
    Ok(Json(WebhookList { status: "ok", webhooks }))
}

fn webhook_not_found() -> ApiError {
    ApiError::not_found("webhook_not_found", "no such webhook")
}

/// The webhook `id` if the caller may see it; another partner's answers as a missing one.
fn visible_webhook(state: &AppState, caller: &Caller, id: &str) -> Result<WebhookRecord, ApiError> {
    require_operator_or_partner(caller)?;
    let id = Uuid::parse_str(id).map_err(|_| webhook_not_found())?;
    let audience = Audience::of(caller);
    state
        .notify
        .store
        .webhook(id)?
        .filter(|w| audience == Audience::All || w.audience == audience)
        .ok_or_else(webhook_not_found)
}

#[derive(Serialize, ToSchema)]
pub struct WebhookResponse {
    #[schema(example = "ok")]
    status: &'static str,
    webhook: WebhookOut,
}

/// One webhook, with how far its deliveries have come.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    operation_id = "show_webhook",
    tag = "events",
    params(("id" = Uuid, Path, description = "The webhook's id")),
    responses((status = 200, description = "The webhook", body = WebhookResponse), AdminReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookResponse>, ApiError> {
    let record = visible_webhook(&state, &caller, &id)?;
    Ok(Json(WebhookResponse { status: "ok", webhook: webhook_out(&state, &record)? }))
}

/// Delete a webhook: deliveries stop at once, and its delivery log goes with it.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "events",
    params(("id" = Uuid, Path, description = "The webhook's id")),
    responses((status = 204, description = "Deleted"), AdminReadErrors)
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let record = visible_webhook(&state, &caller, &id)?;
    state.notify.stop(record.id);
    if state.notify.store.remove_webhook(record.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(webhook_not_found())
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// Deliveries of events after this position (the last `position` of the previous page).
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    #[param(value_type = Option<u64>)]
    after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    #[param(value_type = Option<u64>)]
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    #[schema(example = "ok")]
    status: &'static str,
    /// In log order; each with its attempts (time, status code or error, duration).
    deliveries: Vec<DeliveryRecord>,
    /// The `after` of the next page, when there may be one.
    next_after: Option<u64>,
}

/// A webhook's delivery log, in log order: each event's attempts and outcome. The newest
/// 10,000 deliveries are kept.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    operation_id = "list_webhook_deliveries",
    tag = "events",
    params(("id" = Uuid, Path, description = "The webhook's id"), DeliveriesQuery),
    responses((status = 200, description = "The deliveries", body = DeliveryList), AdminReadErrors)
)]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeliveryList>, ApiError> {
    let record = visible_webhook(&state, &caller, &id)?;
    let query: DeliveriesQuery = query::parse(raw.as_deref())?;
    let limit = page_size(query.limit.unwrap_or(super::PAGE_SIZE_DEFAULT as u64))?;
    let deliveries = state.notify.store.deliveries(record.id, query.after, limit)?;
    let next_after = (deliveries.len() == limit).then(|| deliveries.last().map(|d| d.position)).flatten();
    Ok(Json(DeliveryList { status: "ok", deliveries, next_after }))
}
