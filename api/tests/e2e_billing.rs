//! Recurring charges on the real binary: plans and subscriptions over the API, fees
//! that fell due before the server started are caught up at once, pro-rated, with the
//! partner's share; a restart charges nothing twice; a fee past the credit limit is a
//! `fee_refused` alert in the audit trail.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Server, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ARGS: [&str; 4] = ["--admin-key", ADMIN_KEY, "--billing-interval", "1s"];

async fn call(
    server: &Server,
    credential: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path)).bearer_auth(credential);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

async fn ok(server: &Server, credential: &str, method: Method, path: &str, body: Value) -> Value {
    let (status, answer) = call(server, credential, method, path, Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

async fn balance(server: &Server, number: &str) -> String {
    let (_, body) = call(server, ADMIN_KEY, Method::GET, &format!("/api/v1/accounts/{number}"), None).await;
    body["account"]["balance"].to_string()
}

/// Waits until `check` holds, for up to half a minute.
async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fees_are_caught_up_pro_rated_once_and_a_refused_one_is_an_alert() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &ARGS).await;
    for account in [
        json!({"number": "P1", "name": "P", "kind": "partner", "currency": "EUR", "credit_limit": "1000"}),
        json!({"number": "C1", "name": "C", "kind": "customer", "currency": "EUR", "partner": "P1", "credit_limit": "1000"}),
        json!({"number": "C2", "name": "D", "kind": "customer", "currency": "EUR"}),
    ] {
        ok(&server, ADMIN_KEY, Method::POST, "/api/v1/accounts", account).await;
    }
    ok(&server, ADMIN_KEY, Method::POST, "/api/v1/users", json!({"login": "pat", "role": "partner", "account": "P1"}))
        .await;
    ok(&server, ADMIN_KEY, Method::POST, "/api/v1/users", json!({"login": "cat", "role": "customer", "account": "C1"}))
        .await;
    let pat = ok(&server, ADMIN_KEY, Method::POST, "/api/v1/tokens", json!({"user": "pat"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cat = ok(&server, ADMIN_KEY, Method::POST, "/api/v1/tokens", json!({"user": "cat"})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let wholesale = json!({"name": "Line wholesale", "price": "12", "currency": "EUR", "period": "monthly"});
    let answer = ok(&server, ADMIN_KEY, Method::POST, "/api/v1/plans", wholesale).await;
    let wholesale_id = answer["links"]["plan"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    // A partner's plan names the operator plan it pays for; a customer sells nothing.
    let retail = json!({"name": "Line", "price": "30", "currency": "EUR", "period": "monthly"});
    let (status, answer) = call(&server, &pat, Method::POST, "/api/v1/plans", Some(retail.clone())).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("wholesale_plan")), "{answer}");
    let (status, _) = call(&server, &cat, Method::POST, "/api/v1/plans", Some(retail.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut retail = retail;
    retail["wholesale_plan"] = json!(wholesale_id);
    let answer = ok(&server, &pat, Method::POST, "/api/v1/plans", retail).await;
    let retail_id = answer["links"]["plan"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let (status, plan) = call(&server, &cat, Method::GET, &format!("/api/v1/plans/{retail_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert!(plan["plan"]["wholesale_price"].is_null(), "a customer does not see its partner's cost: {plan}");
    // The operator's customer cannot take the partner's plan: not in its book.
    let foreign = json!({"account": "C2", "plan": retail_id, "starts_at": "2026-01-01"});
    let (status, answer) = call(&server, ADMIN_KEY, Method::POST, "/api/v1/subscriptions", Some(foreign)).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::NOT_FOUND, Some("plan_not_found")), "{answer}");

    // Subscribed from 15 January to 1 March: 17/31 of January and all of February.
    let subscription = json!({"account": "C1", "plan": retail_id, "starts_at": "2026-01-15", "ends_at": "2026-03-01"});
    let answer = ok(&server, &pat, Method::POST, "/api/v1/subscriptions", subscription).await;
    let c1_subscription = answer["links"]["subscription"].as_str().unwrap().to_owned();
    // C2 has no funds and no credit: its fee is refused, on the record.
    let c2_plan = json!({"account": "C2", "plan": wholesale_id, "starts_at": "2026-01-01", "ends_at": "2026-02-01"});
    let answer = ok(&server, ADMIN_KEY, Method::POST, "/api/v1/subscriptions", c2_plan).await;
    let c2_subscription = answer["links"]["subscription"].as_str().unwrap().to_owned();

    let settled = |path: String, until: &'static str| {
        let server = &server;
        async move || {
            let (_, body) = call(server, ADMIN_KEY, Method::GET, &path, None).await;
            body["subscription"]["settled_until"].as_str().is_some_and(|s| s.starts_with(until))
        }
    };
    eventually("C1's fees are settled", settled(c1_subscription.clone(), "2026-03-01")).await;
    eventually("C2's fee is settled", settled(c2_subscription.clone(), "2026-02-01")).await;
    // 30 * 17/31 = 16.45 and 30; the partner pays 12 * 17/31 = 6.58 and 12.
    eventually("the balances show the fees", async || {
        balance(&server, "C1").await == "-46.45" && balance(&server, "P1").await == "-18.58"
    })
    .await;
    let (_, events) = call(&server, ADMIN_KEY, Method::GET, "/api/v1/accounts/C1/events", None).await;
    let fees: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "ChargePosted").collect();
    assert_eq!(fees.len(), 2, "{events}");
    assert_eq!(fees[0]["occurred_at"], "2026-01-15T00:00:00Z", "dated at what it covers: {events}");
    let (_, events) = call(&server, ADMIN_KEY, Method::GET, "/api/v1/accounts/C2/events", None).await;
    let alerts = events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "AlertRaised:fee_refused");
    assert_eq!(alerts.count(), 1, "{events}");
    assert_eq!(balance(&server, "C2").await, "0.00");

    // Ending inside a charged period would need a refund: refused, nothing changes.
    let (status, answer) =
        call(&server, &pat, Method::POST, &format!("{c1_subscription}/end"), Some(json!({"ends_at": "2026-02-10"})))
            .await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("period_already_charged")));

    // A restart, and a few runs of the scheduler: nothing is charged again.
    server.stop();
    let server = Server::start(data.path(), &ARGS).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!((balance(&server, "C1").await, balance(&server, "P1").await), ("-46.45".into(), "-18.58".into()));
    let (_, events) = call(&server, ADMIN_KEY, Method::GET, "/api/v1/accounts/C1/events", None).await;
    assert_eq!(events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "ChargePosted").count(), 2);
}
