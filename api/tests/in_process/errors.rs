//! Every failure answers in the API's one error shape, with the status `error.rs` picks.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::app::{ADMIN_KEY, Answer, App};

#[track_caller]
fn refused(answer: &Answer, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["field"].as_str(), field, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_statuses_and_one_body_shape() {
    let app = App::open().await;
    app.open_account("P1", "partner", None).await;
    app.open_account("C1", "customer", Some("P1")).await;
    app.admin(Method::POST, "/api/v1/payments", Some(json!({"account": "P1", "amount": "10"}))).await;
    let admin = Some(ADMIN_KEY);

    // Unknown paths: 404 after authentication, 401 before it (the API's shape stays hidden).
    let answer = app.call(admin, Method::GET, "/api/v1/no-such-thing", None).await;
    refused(&answer, StatusCode::NOT_FOUND, "not_found", None);
    let answer = app.call(None, Method::GET, "/api/v1/no-such-thing", None).await;
    refused(&answer, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert_eq!(answer.header(header::WWW_AUTHENTICATE), Some("Bearer"));

    let answer = app.call(admin, Method::DELETE, "/api/v1/transfers", None).await;
    refused(&answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);

    let text = Request::post("/api/v1/payments")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("account=P1"))
        .unwrap();
    let answer = app.send(text).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", answer.text());
    assert_eq!(answer.json()["error"], "unsupported_media_type");

    let huge = Request::post("/api/v1/payments")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(vec![b' '; 2 * 1024 * 1024]))
        .unwrap();
    let answer = app.send(huge).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.text());
    assert_eq!(answer.json()["error"], "payload_too_large");

    // Bad input names its field, whether serde or the ledger found it.
    let answer =
        app.call(admin, Method::POST, "/api/v1/payments", Some(json!({"account": "P1", "amount": "ten"}))).await;
    refused(&answer, StatusCode::BAD_REQUEST, "invalid_body", Some("amount"));
    let body = json!({"account": "P1", "amount": "1", "bogus": true});
    let answer = app.call(admin, Method::POST, "/api/v1/payments", Some(body)).await;
    refused(&answer, StatusCode::BAD_REQUEST, "invalid_body", Some("bogus"));
    let answer = app.call(admin, Method::GET, "/api/v1/accounts/P1?min_position=999999", None).await;
    refused(&answer, StatusCode::BAD_REQUEST, "invalid_query", Some("min_position"));

    let answer = app.call(admin, Method::POST, "/api/v1/payments", Some(json!({"account": "X9", "amount": "1"}))).await;
    refused(&answer, StatusCode::NOT_FOUND, "account_not_found", Some("account"));

    // A rule of the ledger: 422, the account named by its number, never its id.
    let body = json!({"from": "P1", "to": "C1", "amount": "11"});
    let answer = app.call(admin, Method::POST, "/api/v1/transfers", Some(body)).await;
    refused(&answer, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds", None);
    let message = answer.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("P1"), "{message}");

    // The same key with another body: 409.
    let keyed = |amount: &str| {
        Request::post("/api/v1/payments")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", "pay-once")
            .body(Body::from(json!({"account": "C1", "amount": amount}).to_string()))
            .unwrap()
    };
    assert_eq!(app.send(keyed("1")).await.status, StatusCode::CREATED);
    let repeat = app.send(keyed("1")).await;
    assert_eq!(repeat.status, StatusCode::CREATED, "{}", repeat.text());
    assert_eq!(repeat.json()["repeated"], true);
    let answer = app.send(keyed("2")).await;
    refused(&answer, StatusCode::CONFLICT, "idempotency_key_reused", None);
    app.close().await;
}

/// `Metrics::install` once per process: two servers open at once in one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_process() {
    let (one, two) = tokio::join!(App::open(), App::open());
    for app in [&one, &two] {
        let answer = app.call(None, Method::GET, "/health", None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    one.open_account("A1", "customer", None).await;
    let answer = two.call(Some(ADMIN_KEY), Method::GET, "/api/v1/accounts/A1", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "each server has its own ledger");
    one.close().await;
    two.close().await;
}
