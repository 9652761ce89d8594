//! Operations: health (live and ready) and Prometheus metrics (the recorder and the
//! request counters are `crate::metrics`). None of these needs a credential, and none
//! shows tenant data: metrics are labelled by route template
//! (`/api/v1/accounts/{number}`), never by account.
//! Metrics are served on their own address (`--metrics-listen`), never on the API's:
//! request rates, flush latencies and account counts are the operator's business.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Read models further behind the log than this are not ready to answer reads.
pub const READY_LAG_EVENTS_MAX: u64 = 100_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(live)).routes(routes!(ready))
}

/// What the metrics address serves: `/metrics`, and 404 for anything else.
pub fn metrics_app(state: AppState) -> axum::Router {
    axum::Router::new().route(METRICS_PATH, axum::routing::get(metrics)).with_state(state)
}

/// Where the metrics address serves them.
pub const METRICS_PATH: &str = "/metrics";

#[derive(Serialize, ToSchema)]
pub struct HealthOut {
    /// `ok`, or `unavailable` when not ready.
    #[schema(example = "ok")]
    status: &'static str,
    /// Accounts the ledger holds.
    accounts: usize,
    /// The global position the read models have reached.
    read_models_position: u64,
    /// Events the read models are behind the log.
    read_models_lag_events: u64,
}

async fn readiness(state: &AppState) -> (StatusCode, HealthOut) {
    let position = state.models.position();
    let head = state.ledger.store().head().await.ok();
    let lag = head.map_or(u64::MAX, |head| head.saturating_sub(1).saturating_sub(position));
    let ready = head.is_some() && !state.projector_stopped() && lag <= READY_LAG_EVENTS_MAX;
    let body = HealthOut {
        status: if ready { "ok" } else { "unavailable" },
        accounts: state.ledger.account_count(),
        read_models_position: position,
        read_models_lag_events: lag,
    };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

/// Ready to serve: the store answers, the read models follow the log and are not far
/// behind. 503 otherwise.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = HealthOut),
        (status = 503, description = "Not ready", body = HealthOut)
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthOut>) {
    let (status, body) = readiness(&state).await;
    (status, Json(body))
}

/// The same as `/health`, under the name orchestrators expect for readiness.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "health_ready",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = HealthOut),
        (status = 503, description = "Not ready", body = HealthOut)
    )
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<HealthOut>) {
    health(State(state)).await
}

#[derive(Serialize, ToSchema)]
pub struct LiveOut {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up and answering.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "health_live",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Alive", body = LiveOut))
)]
pub async fn live() -> Json<LiveOut> {
    Json(LiveOut { status: "ok" })
}

/// Prometheus metrics: requests by route and status, latency histograms, the ledger's
/// durable appends and flushes (events per flush is the writers' batch size), read-model
/// position and lag. On the metrics address only, so not in the API's OpenAPI document.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let position = state.models.position();
    metrics::gauge!("tollbook_accounts").set(state.ledger.account_count() as f64);
    metrics::gauge!("tollbook_read_models_position").set(position as f64);
    if let Ok(head) = state.ledger.store().head().await {
        metrics::gauge!("tollbook_log_head_position").set(head.saturating_sub(1) as f64);
    }
    if let Ok(lag) = state.models.lag(&**state.ledger.store()).await {
        metrics::gauge!("tollbook_read_models_lag_events").set(lag.events as f64);
        metrics::gauge!("tollbook_read_models_lag_seconds").set(lag.seconds as f64);
    }
    if let Some(sled) = &state.sled_stats {
        // The store counts; these mirror its counters. Events per flush is the book
        // writers' batch size, as group commit makes it.
        let stats = sled.stats();
        metrics::counter!("tollbook_store_appends_total").absolute(stats.appends);
        metrics::counter!("tollbook_store_events_total").absolute(stats.events);
        metrics::counter!("tollbook_store_flushes_total").absolute(stats.flushes);
        metrics::counter!("tollbook_store_flush_microseconds_total").absolute(stats.flush_micros_total);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
