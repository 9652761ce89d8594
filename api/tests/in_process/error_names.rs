//! Issue 19: the ledger's refusals named accounts by their internal UUID ("account
//! 01a24853-… has 10 available, 100 requested"), which means nothing to the people who
//! read them. They name the account by its number. (Was `e2e_error_names.rs`: nothing
//! in it needs a process.)

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::app::{ADMIN_KEY, App};

/// A refusal's status, code and message.
async fn refused(app: &App, path: &str, body: Value) -> (StatusCode, String, String) {
    let answer = app.call(Some(ADMIN_KEY), Method::POST, path, Some(body)).await;
    let body = answer.json();
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    (answer.status, text("error"), text("message"))
}

fn call(account: &str) -> Value {
    json!({
        "id": format!("call-{account}"),
        "account": account,
        "callee": "4930123456",
        "start": "2026-07-01T10:00:00Z",
        "answer": "2026-07-01T10:00:05Z",
        "end": "2026-07-01T10:02:05Z",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_accounts_by_their_number() {
    let app = App::open().await;
    let accounts = [
        json!({"number": "P-1", "name": "Reseller One", "kind": "partner", "currency": "EUR"}),
        json!({"number": "C-1", "name": "Customer One", "kind": "customer", "partner": "P-1", "currency": "EUR"}),
        json!({"number": "P-2", "name": "Reseller Two", "kind": "partner", "currency": "EUR"}),
        json!({"number": "C-2", "name": "Customer Two", "kind": "customer", "partner": "P-2", "currency": "EUR"}),
    ];
    for account in accounts {
        app.admin(Method::POST, "/api/v1/accounts", Some(account)).await;
    }
    app.admin(Method::POST, "/api/v1/payments", Some(json!({"account": "C-1", "amount": "10"}))).await;

    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let too_much = json!({"from": "C-1", "to": "P-1", "amount": "100"});
    assert_eq!(
        refused(&app, "/api/v1/transfers", too_much).await,
        (unprocessable, "insufficient_funds".into(), "account C-1 has 10.00 available, 100.00 requested".into())
    );
    let another_partners = json!({"from": "P-1", "to": "C-2", "amount": "1"});
    assert_eq!(
        refused(&app, "/api/v1/transfers", another_partners).await,
        (unprocessable, "not_own_customer".into(), "account C-2 is not a customer of partner P-1".into())
    );
    assert_eq!(
        refused(&app, "/api/v1/cdrs", call("P-1")).await,
        (unprocessable, "not_a_customer".into(), "account P-1 is a partner; this needs a customer".into())
    );
    assert_eq!(
        refused(&app, "/api/v1/cdrs", call("C-1")).await,
        (
            unprocessable,
            "no_tariff".into(),
            "the customer account C-1 has no tariff in force when the call started".into()
        )
    );
    app.close().await;
}

/// Issue 19: `curl --data-binary @missing.csv` sends an empty body, which was answered
/// "column `id` is required"; it is answered as what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_csv_body_is_called_empty() {
    let app = App::open().await;
    for path in ["/api/v1/cdrs", "/api/v1/reconciliations?from=2026-07-01&to=2026-08-01"] {
        let request = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
            .header(header::CONTENT_TYPE, "text/csv")
            .body(Body::empty())
            .unwrap();
        let answer = app.send(request).await;
        let body = answer.json();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!((body["error"].as_str(), body["field"].as_str()), (Some("invalid_body"), Some("body")), "{body}");
        assert!(body["message"].as_str().unwrap().starts_with("the CSV body is empty"), "{path}: {body}");
    }
    app.close().await;
}
