//! Recurring charges: plans (the operator's, and each partner's for its own customers)
//! and subscriptions of customers to them. The fees themselves are charged by the
//! scheduler (`commands::billing`), not by a request; see docs/billing-cycle.md.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use commands::billing::{PlanEntry, SubscriptionEntry};
use domain::billing::{BillingPeriod, Plan};
use domain::{Amount, BookId, Command, Currency, Payload, PlanId, SubscriptionId, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Scope};
use crate::body::Body;
use crate::error::ApiError;
use crate::openapi::{IdempotencyKey, ReadErrors, WriteErrors};
use crate::query;
use crate::state::AppState;
use crate::write::{Write, WriteBody, managed_account, parse_time, respond, visible_account};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_plan, list_plans))
        .routes(routes!(show_plan))
        .routes(routes!(create_subscription, list_subscriptions))
        .routes(routes!(show_subscription))
        .routes(routes!(end_subscription))
}

/// The book a caller sells its plans in.
fn own_book(caller: &Caller) -> Result<BookId, ApiError> {
    match caller.scope {
        Scope::Admin => Ok(BookId::OPERATOR),
        Scope::Partner(partner) => Ok(BookId::of_partner(partner)),
        Scope::Customer(_) => Err(ApiError::forbidden("a customer's access is read only")),
    }
}

/// Whether `caller` may see a plan of `book`: the operator every plan; a partner its own
/// and the operator's (whose prices it pays); a customer those of its own book.
fn sees_plan(state: &AppState, caller: &Caller, book: BookId) -> bool {
    match caller.scope {
        Scope::Admin => true,
        Scope::Partner(partner) => book == BookId::of_partner(partner) || book == BookId::OPERATOR,
        Scope::Customer(customer) => state.ledger.account_by_id(customer).is_some_and(|a| a.book == book),
    }
}

fn plan_not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found("plan_not_found", format!("plan {id} not found")).with_field("plan")
}

fn subscription_not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found("subscription_not_found", format!("subscription {id} not found")).with_field("id")
}

fn parse_plan_id(field: &'static str, text: &str) -> Result<PlanId, ApiError> {
    PlanId::parse(text).ok_or_else(|| ApiError::bad_request("invalid_field", field, "expected a plan id (UUID)"))
}

fn visible_plan(state: &AppState, caller: &Caller, id: PlanId) -> Result<PlanEntry, ApiError> {
    let entry = state.ledger.billing_catalog().plan(id).cloned();
    entry.filter(|entry| sees_plan(state, caller, entry.book)).ok_or_else(|| plan_not_found(id))
}

/// A subscription the caller may see (it sees the account), else 404 alike.
fn visible_subscription(state: &AppState, caller: &Caller, text: &str) -> Result<SubscriptionEntry, ApiError> {
    let entry = SubscriptionId::parse(text).and_then(|id| state.ledger.billing_catalog().subscription(id).cloned());
    let seen = |entry: &SubscriptionEntry| {
        state.ledger.account_by_id(entry.subscription.account).is_some_and(|account| caller.sees(&account))
    };
    entry.filter(seen).ok_or_else(|| subscription_not_found(text))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    #[schema(example = "DID rental")]
    name: String,
    /// The fee of one whole period, greater than zero.
    #[schema(schema_with = crate::openapi::amount_in)]
    price: Amount,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    /// `monthly`, `weekly` or `daily` (calendar periods in UTC).
    #[schema(value_type = String, example = "monthly")]
    period: BillingPeriod,
    /// A partner's plan: the operator plan whose price the partner pays for each
    /// subscription to this one (required for a partner; the operator's plans have none).
    wholesale_plan: Option<String>,
}

/// Publish a plan: the operator's in its own book, a partner's for its own customers.
/// Plans never change; a new price is a new plan.
#[utoipa::path(
    post,
    path = "/api/v1/plans",
    operation_id = "create_plan",
    tag = "billing",
    params(IdempotencyKey),
    request_body = PlanRequest,
    responses((status = 201, description = "Published", body = WriteBody), WriteErrors)
)]
pub async fn create_plan(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<PlanRequest>,
) -> Result<Response, ApiError> {
    let book = own_book(&write.caller)?;
    let wholesale = match request.wholesale_plan.as_deref() {
        None => None,
        Some(text) => {
            let id = parse_plan_id("wholesale_plan", text)?;
            visible_plan(&state, &write.caller, id).map_err(|_| plan_not_found(id).with_field("wholesale_plan"))?;
            Some(id)
        }
    };
    let id = PlanId::new();
    let plan = Plan {
        id,
        name: request.name.clone(),
        price: request.price,
        currency: request.currency,
        period: request.period,
        wholesale: None,
    };
    let meta = write.meta(&request, None)?;
    let outcome = state.ledger.publish_plan(book, plan, wholesale, meta).await?;
    // A retry with the same Idempotency-Key answers the first request's plan.
    let id = outcome
        .events
        .iter()
        .find_map(|e| match &e.event.payload {
            Payload::PlanPublished(published) => Some(published.plan.id),
            _ => None,
        })
        .unwrap_or(id);
    Ok(respond(
        &state.ledger,
        StatusCode::CREATED,
        outcome,
        [("plan", format!("/api/v1/plans/{id}"))].into_iter().collect(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct PlanOut {
    #[schema(value_type = uuid::Uuid)]
    id: PlanId,
    name: String,
    #[schema(schema_with = crate::openapi::amount_out)]
    price: Amount,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    #[schema(value_type = String, example = "monthly")]
    period: BillingPeriod,
    /// `operator`, or the number of the partner that sells it.
    owner: String,
    /// A partner's plan: the operator plan whose price the partner pays per subscription,
    /// and that price. Shown to the operator and the partner only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    wholesale_plan: Option<PlanId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::openapi::amount_out_or_null)]
    wholesale_price: Option<Amount>,
    #[schema(example = json!({"self": "/api/v1/plans/0f8fad5b-d9cb-469f-a165-70867728950e"}))]
    links: BTreeMap<&'static str, String>,
}

fn owner(state: &AppState, book: BookId) -> String {
    if book == BookId::OPERATOR {
        return "operator".to_owned();
    }
    state.ledger.account_by_id(domain::AccountId(book.0)).map_or_else(|| book.to_string(), |a| a.number)
}

fn plan_out(state: &AppState, caller: &Caller, entry: &PlanEntry) -> PlanOut {
    let plan = &entry.plan;
    // A customer does not see what its partner pays the operator.
    let wholesale = plan.wholesale.as_ref().filter(|_| !matches!(caller.scope, Scope::Customer(_)));
    PlanOut {
        id: plan.id,
        name: plan.name.clone(),
        price: plan.price.canonical(plan.currency),
        currency: plan.currency,
        period: plan.period,
        owner: owner(state, entry.book),
        wholesale_plan: wholesale.map(|w| w.plan),
        wholesale_price: wholesale.map(|w| w.price.canonical(plan.currency)),
        links: [("self", format!("/api/v1/plans/{}", plan.id))].into_iter().collect(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct PlanList {
    #[schema(example = "ok")]
    status: &'static str,
    /// The plans the caller may see, by name.
    plans: Vec<PlanOut>,
}

/// The plans the caller may see: the operator every plan, a partner its own and the
/// operator's, a customer those it may subscribe to.
#[utoipa::path(
    get,
    path = "/api/v1/plans",
    operation_id = "list_plans",
    tag = "billing",
    responses((status = 200, description = "The plans", body = PlanList), ReadErrors)
)]
pub async fn list_plans(State(state): State<AppState>, caller: Caller) -> Json<PlanList> {
    let entries: Vec<PlanEntry> =
        state.ledger.billing_catalog().plans().filter(|e| sees_plan(&state, &caller, e.book)).cloned().collect();
    let mut plans: Vec<PlanOut> = entries.iter().map(|e| plan_out(&state, &caller, e)).collect();
    plans.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Json(PlanList { status: "ok", plans })
}

#[derive(Serialize, ToSchema)]
pub struct PlanShow {
    #[schema(example = "ok")]
    status: &'static str,
    plan: PlanOut,
}

/// One plan.
#[utoipa::path(
    get,
    path = "/api/v1/plans/{id}",
    operation_id = "show_plan",
    tag = "billing",
    params(("id" = uuid::Uuid, Path, description = "The plan's id")),
    responses((status = 200, description = "The plan", body = PlanShow), ReadErrors)
)]
pub async fn show_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PlanShow>, ApiError> {
    let id = PlanId::parse(&id).ok_or_else(|| plan_not_found(&id))?;
    let entry = visible_plan(&state, &caller, id)?;
    Ok(Json(PlanShow { status: "ok", plan: plan_out(&state, &caller, &entry) }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// A customer account, of the operator or of the partner that sells the plan.
    #[schema(example = "C-1001")]
    account: String,
    /// A plan of the account's book: the operator's for its own customers, the partner's
    /// for a partner's customers.
    plan: String,
    /// When the subscription starts (RFC 3339 or a date); now when absent. A start in the
    /// past is charged from then on, at once.
    #[schema(example = "2026-01-15")]
    starts_at: Option<String>,
    /// When it ends (exclusive); open-ended when absent.
    ends_at: Option<String>,
}

/// Subscribe a customer to a plan. Each period's fee is charged when it falls due, once
/// (pro-rated for a partial first or last period).
#[utoipa::path(
    post,
    path = "/api/v1/subscriptions",
    operation_id = "create_subscription",
    tag = "billing",
    params(IdempotencyKey),
    request_body = SubscriptionRequest,
    responses((status = 201, description = "Subscribed", body = WriteBody), WriteErrors)
)]
pub async fn create_subscription(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<SubscriptionRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state.ledger, &write.caller, "account", &request.account)?;
    let plan = parse_plan_id("plan", &request.plan)?;
    // A plan the caller cannot see is no plan at all; one of another book is the
    // domain's to refuse (plan_not_found), alike.
    visible_plan(&state, &write.caller, plan)?;
    let now = Timestamp::from_micros(chrono::Utc::now().timestamp_micros());
    let starts_at = parse_time("starts_at", request.starts_at.as_deref())?.unwrap_or(now);
    let ends_at = parse_time("ends_at", request.ends_at.as_deref())?;
    let meta = write.meta(&request, None)?;
    let subscription = SubscriptionId::new();
    let command = Command::StartSubscription { subscription, account: account.id, plan, starts_at, ends_at };
    let outcome = state.ledger.execute(command, meta).await?;
    let subscription = outcome
        .events
        .iter()
        .find_map(|e| match &e.event.payload {
            Payload::SubscriptionStarted(started) => Some(started.subscription),
            _ => None,
        })
        .unwrap_or(subscription);
    let links = [("subscription", format!("/api/v1/subscriptions/{subscription}"))].into_iter().collect();
    Ok(respond(&state.ledger, StatusCode::CREATED, outcome, links))
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionOut {
    #[schema(value_type = uuid::Uuid)]
    id: SubscriptionId,
    account: String,
    #[schema(value_type = uuid::Uuid)]
    plan: PlanId,
    #[schema(schema_with = crate::openapi::timestamp)]
    starts_at: Timestamp,
    #[schema(schema_with = crate::openapi::timestamp_or_null)]
    ends_at: Option<Timestamp>,
    /// Every period before this one is settled: its fee charged, or refused on the record
    /// (a `fee_refused` alert). Absent while no period is.
    #[schema(schema_with = crate::openapi::timestamp_or_null)]
    settled_until: Option<Timestamp>,
    #[schema(example = json!({"self": "/api/v1/subscriptions/0f8fad5b-d9cb-469f-a165-70867728950e", "plan": "/api/v1/plans/0f8fad5b-d9cb-469f-a165-70867728950e", "account": "/api/v1/accounts/C-1001"}))]
    links: BTreeMap<&'static str, String>,
}

fn subscription_out(state: &AppState, entry: &SubscriptionEntry) -> SubscriptionOut {
    let sub = &entry.subscription;
    let account =
        state.ledger.account_by_id(sub.account).map_or_else(|| sub.account.to_string(), |account| account.number);
    let links = [
        ("self", format!("/api/v1/subscriptions/{}", sub.id)),
        ("plan", format!("/api/v1/plans/{}", sub.plan)),
        ("account", format!("/api/v1/accounts/{account}")),
    ]
    .into_iter()
    .collect();
    SubscriptionOut {
        id: sub.id,
        account,
        plan: sub.plan,
        starts_at: sub.starts_at,
        ends_at: sub.ends_at,
        settled_until: entry.settled_until,
        links,
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SubscriptionQuery {
    /// Only this account's subscriptions.
    account: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    #[schema(example = "ok")]
    status: &'static str,
    subscriptions: Vec<SubscriptionOut>,
}

/// The subscriptions of the accounts the caller may see, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/subscriptions",
    operation_id = "list_subscriptions",
    tag = "billing",
    params(SubscriptionQuery),
    responses((status = 200, description = "The subscriptions", body = SubscriptionList), ReadErrors)
)]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<SubscriptionList>, ApiError> {
    let query: SubscriptionQuery = query::parse(raw.as_deref())?;
    let only = query
        .account
        .as_deref()
        .map(|number| visible_account(&state.ledger, &caller, "account", number))
        .transpose()?;
    let mut entries: Vec<SubscriptionEntry> = state
        .ledger
        .billing_catalog()
        .subscriptions()
        .filter(|entry| only.as_ref().is_none_or(|account| account.id == entry.subscription.account))
        .cloned()
        .collect();
    entries.retain(|entry| state.ledger.account_by_id(entry.subscription.account).is_some_and(|a| caller.sees(&a)));
    entries.sort_by_key(|entry| entry.subscription.id);
    let subscriptions = entries.iter().map(|entry| subscription_out(&state, entry)).collect();
    Ok(Json(SubscriptionList { status: "ok", subscriptions }))
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionShow {
    #[schema(example = "ok")]
    status: &'static str,
    subscription: SubscriptionOut,
}

/// One subscription.
#[utoipa::path(
    get,
    path = "/api/v1/subscriptions/{id}",
    operation_id = "show_subscription",
    tag = "billing",
    params(("id" = uuid::Uuid, Path, description = "The subscription's id")),
    responses((status = 200, description = "The subscription", body = SubscriptionShow), ReadErrors)
)]
pub async fn show_subscription(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionShow>, ApiError> {
    let entry = visible_subscription(&state, &caller, &id)?;
    Ok(Json(SubscriptionShow { status: "ok", subscription: subscription_out(&state, &entry) }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    /// When the subscription ends (exclusive). Not before the end of the periods already
    /// charged (422 `period_already_charged`), and only sooner than a set end.
    #[schema(example = "2026-07-01")]
    ends_at: String,
}

/// End a subscription, or end it sooner. The last period is charged pro-rated.
#[utoipa::path(
    post,
    path = "/api/v1/subscriptions/{id}/end",
    operation_id = "end_subscription",
    tag = "billing",
    params(("id" = uuid::Uuid, Path, description = "The subscription's id"), IdempotencyKey),
    request_body = EndRequest,
    responses((status = 201, description = "Recorded", body = WriteBody), WriteErrors)
)]
pub async fn end_subscription(
    State(state): State<AppState>,
    write: Write,
    Path(id): Path<String>,
    Body(request): Body<EndRequest>,
) -> Result<Response, ApiError> {
    let entry = visible_subscription(&state, &write.caller, &id)?;
    let account = state.ledger.account_by_id(entry.subscription.account).ok_or_else(|| subscription_not_found(&id))?;
    managed_account(&state.ledger, &write.caller, "id", &account.number)?;
    let ends_at = parse_time("ends_at", Some(&request.ends_at))?
        .ok_or_else(|| ApiError::bad_request("invalid_field", "ends_at", "ends_at is required"))?;
    let meta = write.meta(&request, None)?;
    let command = Command::EndSubscription { subscription: entry.subscription.id, account: account.id, ends_at };
    let outcome = state.ledger.execute(command, meta).await?;
    let links = [("subscription", format!("/api/v1/subscriptions/{}", entry.subscription.id))].into_iter().collect();
    Ok(respond(&state.ledger, StatusCode::CREATED, outcome, links))
}
