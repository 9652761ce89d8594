//! The Prometheus recorder and the request counters behind `/metrics` (served by
//! `routes::operations` on the metrics address).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const REQUESTS: &str = "tollbook_http_requests_total";
const LATENCY: &str = "tollbook_http_request_duration_seconds";
/// Latency buckets: fine below 10 ms, where a healthy ledger answers.
const LATENCY_BUCKETS_SECONDS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// `metrics` has one global recorder per process, and installing a second one fails: the
/// first installation is kept, and every server opened in the process (tests open many)
/// renders from it.
static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process-wide metrics recorder and what `/metrics` renders.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// The process's recorder, installed by the first call. Servers opened in one process
    /// share its counters.
    pub fn install() -> Result<Self, Box<dyn std::error::Error>> {
        let installed = RECORDER.get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.to_owned()), &LATENCY_BUCKETS_SECONDS)
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|error| format!("the metrics recorder could not be installed: {error}"))?;
            describe();
            Ok(handle)
        });
        let handle = installed.clone()?;
        Ok(Metrics { handle })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "HTTP requests answered, by method, route and status");
    metrics::describe_histogram!(LATENCY, metrics::Unit::Seconds, "HTTP request latency, by method and route");
    metrics::describe_gauge!("tollbook_read_models_lag_events", "Durable events the read models have not applied yet");
    metrics::describe_gauge!(
        "tollbook_read_models_lag_seconds",
        "Age in seconds of the oldest durable event the read models have not applied (0 when caught up)"
    );
}

/// Counts every request and times it, by route template.
pub async fn metrics_layer(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method.to_string()), ("route", route)];
    metrics::histogram!(LATENCY, &labels).record(started.elapsed().as_secs_f64());
    let [method, route] = labels;
    metrics::counter!(REQUESTS, &[method, route, ("status", status)]).increment(1);
    response
}
