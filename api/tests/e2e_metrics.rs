//! Metrics as the real binary serves them: on their own address only, with the read
//! models' lag.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Server, send};

/// The value of an unlabelled gauge in Prometheus text.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_read_models_lag_in_events_and_seconds() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY, "--metrics-listen", "127.0.0.1:0"]).await;
    let client = reqwest::Client::new();
    for number in ["LAG-P1", "LAG-P2"] {
        let body = serde_json::json!({"number": number, "name": "n", "kind": "partner", "currency": "EUR"});
        let (status, _) = send(client.post(server.url("/api/v1/accounts")).bearer_auth(ADMIN_KEY).json(&body)).await;
        assert!(status.is_success());
    }
    // The projector follows within moments: scrape until it has caught up.
    let started = Instant::now();
    let metrics = loop {
        let metrics = server.metrics().await;
        let (lag_events, lag_seconds) =
            (gauge(&metrics, "tollbook_read_models_lag_events"), gauge(&metrics, "tollbook_read_models_lag_seconds"));
        let lag_events = lag_events.unwrap_or_else(|| panic!("no lag in events: {metrics}"));
        let lag_seconds = lag_seconds.unwrap_or_else(|| panic!("no lag in seconds: {metrics}"));
        // Events are seconds old at most in this test, whether applied yet or not.
        assert!((0.0..5.0).contains(&lag_seconds), "lag of {lag_seconds} s");
        assert!(lag_events >= 0.0);
        if lag_events == 0.0 {
            assert_eq!(lag_seconds, 0.0, "no events waiting, no age");
            break metrics;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still {lag_events} events behind: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let head = gauge(&metrics, "tollbook_log_head_position").expect("head position");
    assert!(head >= 2.0, "two accounts opened, head at {head}");
    assert_eq!(gauge(&metrics, "tollbook_read_models_position"), Some(head));
    assert!(metrics.contains("# HELP tollbook_read_models_lag_seconds"), "{metrics}");
}

/// Issue 14, defect 11: `/metrics` answered anyone on the API's address. Metrics are now
/// served only on `--metrics-listen`, and not at all without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_their_own_address_only() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY, "--metrics-listen", "127.0.0.1:0"]).await;
    let client = reqwest::Client::new();
    let metrics_base = server.metrics_base.clone().expect("the metrics address is printed");
    assert_ne!(metrics_base, server.base, "a port of its own");
    let metrics = server.metrics().await;
    assert!(metrics.contains("# HELP tollbook_read_models_lag_events"), "{metrics}");
    let on_api = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), reqwest::StatusCode::NOT_FOUND);
    assert!(!on_api.text().await.unwrap().contains("tollbook_"), "no metrics on the API's address");
    let (status, index) = send(client.get(server.url("/api/v1")).bearer_auth(ADMIN_KEY)).await;
    assert!(status.is_success() && index["links"].get("metrics").is_none(), "{index}");
    // The metrics address serves metrics and nothing of the API.
    let api_there = client.get(format!("{metrics_base}/api/v1/me")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(api_there.status(), reqwest::StatusCode::NOT_FOUND);
    drop(server);

    // Without the flag, no metrics anywhere.
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    assert_eq!(server.metrics_base, None);
    let on_api = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), reqwest::StatusCode::NOT_FOUND);
}
