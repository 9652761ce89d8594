//! Tariffs: publish one (the operator for everyone, a partner for its own customers),
//! publish a new version from an effective time on, list and show them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use commands::TariffHistory;
use domain::rating::{Rate, Rounding, RoundingMode, Tariff};
use domain::{Amount, BookId, Currency, TariffId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Scope};
use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{IdempotencyKey, ReadErrors, WriteErrors};
use crate::state::AppState;
use crate::write::{Write, WriteBody, parse_time, respond_with_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(show)).routes(routes!(create_version))
}

/// Whether `caller` may see `history`: the operator sees every tariff; a partner the
/// tariffs of its own book and the one that prices its own calls; a customer the one
/// that prices its calls. Wholesale price lists are other partners' business.
fn sees(state: &AppState, caller: &Caller, history: &TariffHistory) -> bool {
    let id = history.current().id;
    let assigned_to = |account| state.ledger.account_by_id(account).is_some_and(|a| a.tariff == Some(id));
    match caller.scope {
        Scope::Admin => true,
        Scope::Partner(partner) => history.book == BookId::of_partner(partner) || assigned_to(partner),
        Scope::Customer(customer) => assigned_to(customer),
    }
}

/// The tariff `id` if the caller may see it; 404 alike for unknown and foreign ones.
pub fn visible_tariff(state: &AppState, caller: &Caller, id: TariffId) -> Result<TariffHistory, ApiError> {
    state
        .ledger
        .tariff(id)
        .filter(|history| sees(state, caller, history))
        .ok_or_else(|| ApiError::not_found("tariff_not_found", format!("tariff {id} not found")).with_field("tariff"))
}

/// The book a caller publishes its tariffs in.
fn own_book(caller: &Caller) -> Result<BookId, ApiError> {
    match caller.scope {
        Scope::Admin => Ok(BookId::OPERATOR),
        Scope::Partner(partner) => Ok(BookId::of_partner(partner)),
        Scope::Customer(_) => Err(ApiError::forbidden("a customer's access is read only")),
    }
}

/// One rate of a tariff, keyed by destination prefix (the longest matching prefix wins).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateIn {
    #[schema(example = "4930")]
    prefix: String,
    #[schema(schema_with = crate::openapi::amount_in)]
    price_per_minute: Amount,
    #[schema(schema_with = crate::openapi::amount_in)]
    #[serde(default)]
    connect_fee: Option<Amount>,
    /// Calls shorter than this bill this long; 0 by default.
    #[serde(default, deserialize_with = "crate::body::optional_u32_from_text")]
    minimum_seconds: Option<u32>,
    /// The first billing increment, 60 by default (60/60, 30/6, 1/1, …).
    #[serde(default, deserialize_with = "crate::body::optional_u32_from_text")]
    first_increment_seconds: Option<u32>,
    /// Every further increment, 60 by default.
    #[serde(default, deserialize_with = "crate::body::optional_u32_from_text")]
    next_increment_seconds: Option<u32>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TariffRequest {
    #[schema(example = "Retail 2027")]
    name: String,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    /// When this version starts to price calls (by the call's start); now when absent.
    /// A new version must start after the current one and not in the past.
    effective_from: Option<String>,
    /// Decimals of a call's cost after rounding; 4 by default.
    #[serde(default, deserialize_with = "crate::body::optional_u32_from_text")]
    rounding_decimals: Option<u32>,
    /// `up` (default: never under-bill), `half_up`, `half_even` or `down`.
    #[schema(value_type = Option<String>, example = "up")]
    rounding_mode: Option<RoundingMode>,
    /// The rates: a JSON array of rates, or (in a form, or as JSON text) a CSV table with
    /// the header `prefix,price_per_minute,connect_fee,minimum_seconds,first_increment_seconds,next_increment_seconds`.
    #[schema(value_type = Vec<RateIn>)]
    rates: serde_json::Value,
}

impl TariffRequest {
    fn tariff(&self, id: TariffId) -> Result<Tariff, ApiError> {
        let rates = match &self.rates {
            serde_json::Value::String(csv) => commands::ingest::rates_from_csv(csv)?,
            array @ serde_json::Value::Array(_) => {
                let rates: Vec<RateIn> = serde_path_to_error::deserialize(array).map_err(|error| {
                    ApiError::undeserializable(
                        "invalid_body",
                        Some(format!("rates{}", path_suffix(&error.path().to_string()))),
                        error.inner().to_string(),
                    )
                })?;
                rates
                    .into_iter()
                    .map(|r| Rate {
                        prefix: r.prefix,
                        price_per_minute: r.price_per_minute,
                        connect_fee: r.connect_fee.unwrap_or(Amount::ZERO),
                        minimum_seconds: r.minimum_seconds.unwrap_or(0),
                        first_increment_seconds: r.first_increment_seconds.unwrap_or(60),
                        next_increment_seconds: r.next_increment_seconds.unwrap_or(60),
                    })
                    .collect()
            }
            _ => return Err(ApiError::bad_request("invalid_body", "rates", "rates: an array of rates or CSV text")),
        };
        let now = Timestamp::from_micros(chrono::Utc::now().timestamp_micros());
        Ok(Tariff {
            id,
            name: self.name.clone(),
            currency: self.currency,
            effective_from: parse_time("effective_from", self.effective_from.as_deref())?.unwrap_or(now),
            rounding: Rounding {
                decimals: self.rounding_decimals.unwrap_or(4),
                mode: self.rounding_mode.unwrap_or(RoundingMode::Up),
            },
            rates,
        })
    }
}

fn path_suffix(path: &str) -> String {
    if path == "." { String::new() } else { format!(".{path}") }
}

/// Publish a tariff. The operator's tariffs price partners' calls (wholesale) and may
/// price customers'; a partner's tariffs price its own customers' calls (retail).
#[utoipa::path(
    post,
    path = "/api/v1/tariffs",
    operation_id = "create_tariff",
    tag = "tariffs",
    params(IdempotencyKey),
    request_body = TariffRequest,
    responses((status = 201, description = "Published", body = WriteBody), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<TariffRequest>,
) -> Result<Response, ApiError> {
    let book = own_book(&write.caller)?;
    let id = TariffId::new();
    let tariff = request.tariff(id)?;
    let meta = write.meta(&request, None)?;
    let outcome = state.ledger.publish_tariff(book, tariff, meta).await?;
    // A retry with the same Idempotency-Key published nothing: its answer names the
    // first request's tariff, whose id is in the first request's events.
    let id = outcome
        .events
        .iter()
        .find_map(|e| match &e.event.payload {
            domain::Payload::TariffPublished(published) => Some(published.tariff.id),
            _ => None,
        })
        .unwrap_or(id);
    Ok(respond_with_id(&state.ledger, StatusCode::CREATED, outcome, Some(id.to_string()), tariff_links(id)))
}

/// Publish a new version of a tariff, pricing calls that start from its `effective_from` on.
#[utoipa::path(
    post,
    path = "/api/v1/tariffs/{id}/versions",
    operation_id = "create_tariff_version",
    tag = "tariffs",
    params(("id" = uuid::Uuid, Path, description = "The tariff's id"), IdempotencyKey),
    request_body = TariffRequest,
    responses((status = 201, description = "Published", body = WriteBody), WriteErrors)
)]
pub async fn create_version(
    State(state): State<AppState>,
    write: Write,
    Path(id): Path<String>,
    Body(request): Body<TariffRequest>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let history = visible_tariff(&state, &write.caller, id)?;
    if history.book != own_book(&write.caller)? {
        return Err(ApiError::forbidden("the tariff belongs to the operator").with_field("id"));
    }
    let tariff = request.tariff(id)?;
    let meta = write.meta(&request, None)?;
    let outcome = state.ledger.publish_tariff(history.book, tariff, meta).await?;
    Ok(respond_with_id(&state.ledger, StatusCode::CREATED, outcome, Some(id.to_string()), tariff_links(id)))
}

fn parse_id(text: &str) -> Result<TariffId, ApiError> {
    TariffId::parse(text).ok_or_else(|| ApiError::bad_request("invalid_field", "id", "id: expected a tariff id (UUID)"))
}

fn tariff_links(id: TariffId) -> BTreeMap<&'static str, String> {
    [("tariff", format!("/api/v1/tariffs/{id}"))].into_iter().collect()
}

#[derive(Serialize, ToSchema)]
pub struct RateOut {
    prefix: String,
    #[schema(schema_with = crate::openapi::amount_out)]
    price_per_minute: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    connect_fee: Amount,
    minimum_seconds: u32,
    first_increment_seconds: u32,
    next_increment_seconds: u32,
}

#[derive(Serialize, ToSchema)]
pub struct TariffVersionOut {
    name: String,
    #[schema(schema_with = crate::openapi::timestamp)]
    effective_from: Timestamp,
    rounding_decimals: u32,
    #[schema(value_type = String, example = "up")]
    rounding_mode: RoundingMode,
    /// Number of rates.
    rate_count: usize,
    /// The rates; left out of lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    rates: Option<Vec<RateOut>>,
}

#[derive(Serialize, ToSchema)]
pub struct TariffOut {
    #[schema(value_type = uuid::Uuid)]
    id: TariffId,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    /// `operator`, or the number of the partner whose retail tariff it is.
    owner: String,
    /// Every version, oldest first.
    versions: Vec<TariffVersionOut>,
    #[schema(example = json!({"tariff": "/api/v1/tariffs/0f8fad5b-d9cb-469f-a165-70867728950e", "versions": "/api/v1/tariffs/0f8fad5b-d9cb-469f-a165-70867728950e/versions"}))]
    links: BTreeMap<&'static str, String>,
}

fn render(state: &AppState, history: &TariffHistory, with_rates: bool) -> TariffOut {
    let current = history.current();
    let owner = if history.book == BookId::OPERATOR {
        "operator".to_owned()
    } else {
        state
            .ledger
            .account_by_id(domain::AccountId(history.book.0))
            .map_or_else(|| history.book.to_string(), |a| a.number)
    };
    let versions = history
        .versions
        .iter()
        .map(|v| TariffVersionOut {
            name: v.tariff.name.clone(),
            effective_from: v.tariff.effective_from,
            rounding_decimals: v.tariff.rounding.decimals,
            rounding_mode: v.tariff.rounding.mode,
            rate_count: v.tariff.rates.len(),
            rates: with_rates.then(|| {
                v.tariff
                    .rates
                    .iter()
                    .map(|r| RateOut {
                        prefix: r.prefix.clone(),
                        price_per_minute: r.price_per_minute,
                        connect_fee: r.connect_fee,
                        minimum_seconds: r.minimum_seconds,
                        first_increment_seconds: r.first_increment_seconds,
                        next_increment_seconds: r.next_increment_seconds,
                    })
                    .collect()
            }),
        })
        .collect();
    let mut links = tariff_links(current.id);
    links.insert("versions", format!("/api/v1/tariffs/{}/versions", current.id));
    TariffOut { id: current.id, currency: current.currency, owner, versions, links }
}

#[derive(Serialize, ToSchema)]
pub struct TariffListOut {
    #[schema(example = "ok")]
    status: &'static str,
    /// The tariffs the caller may see, by name; their rates are left out.
    tariffs: Vec<TariffOut>,
}

/// The tariffs the caller may see.
#[utoipa::path(
    get,
    path = "/api/v1/tariffs",
    operation_id = "list_tariffs",
    tag = "tariffs",
    responses((status = 200, description = "The tariffs", body = TariffListOut), ReadErrors)
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Json<TariffListOut> {
    let mut tariffs: Vec<TariffOut> = state
        .ledger
        .tariffs(|history| sees(&state, &caller, history))
        .iter()
        .map(|history| render(&state, history, false))
        .collect();
    tariffs.sort_by(|a, b| {
        let name = |t: &TariffOut| t.versions.last().map(|v| v.name.clone()).unwrap_or_default();
        name(a).cmp(&name(b)).then(a.id.0.cmp(&b.id.0))
    });
    Json(TariffListOut { status: "ok", tariffs })
}

#[derive(Serialize, ToSchema)]
pub struct TariffShowOut {
    #[schema(example = "ok")]
    status: &'static str,
    tariff: TariffOut,
}

/// A tariff with every version and its rates.
#[utoipa::path(
    get,
    path = "/api/v1/tariffs/{id}",
    operation_id = "show_tariff",
    tag = "tariffs",
    params(("id" = uuid::Uuid, Path, description = "The tariff's id")),
    responses((status = 200, description = "The tariff", body = TariffShowOut), ReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TariffShowOut>, ApiError> {
    let history = visible_tariff(&state, &caller, parse_id(&id)?)?;
    Ok(Json(TariffShowOut { status: "ok", tariff: render(&state, &history, true) }))
}
