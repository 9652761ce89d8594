//! Issue 19: the ledger's refusals named accounts by their internal UUID ("account
//! 01a24853-… has 10 available, 100 requested"), which means nothing to the people who
//! read them. Over HTTP, they name the account by its number.

use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{ADMIN_KEY, Server, send};

async fn post(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    send(reqwest::Client::new().post(server.url(path)).bearer_auth(ADMIN_KEY).json(&body)).await
}

/// A refusal's status, code and message.
async fn refused(server: &Server, path: &str, body: Value) -> (StatusCode, String, String) {
    let (status, answer) = post(server, path, body).await;
    let text = |field: &str| answer[field].as_str().unwrap_or_default().to_owned();
    (status, text("error"), text("message"))
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
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let accounts = [
        json!({"number": "P-1", "name": "Reseller One", "kind": "partner", "currency": "EUR"}),
        json!({"number": "C-1", "name": "Customer One", "kind": "customer", "partner": "P-1", "currency": "EUR"}),
        json!({"number": "P-2", "name": "Reseller Two", "kind": "partner", "currency": "EUR"}),
        json!({"number": "C-2", "name": "Customer Two", "kind": "customer", "partner": "P-2", "currency": "EUR"}),
    ];
    for account in accounts {
        let (status, body) = post(&server, "/api/v1/accounts", account).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = post(&server, "/api/v1/payments", json!({"account": "C-1", "amount": "10"})).await;
    assert!(status.is_success(), "{body}");

    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let too_much = json!({"from": "C-1", "to": "P-1", "amount": "100"});
    assert_eq!(
        refused(&server, "/api/v1/transfers", too_much).await,
        (unprocessable, "insufficient_funds".into(), "account C-1 has 10.00 available, 100.00 requested".into())
    );
    let another_partners = json!({"from": "P-1", "to": "C-2", "amount": "1"});
    assert_eq!(
        refused(&server, "/api/v1/transfers", another_partners).await,
        (unprocessable, "not_own_customer".into(), "account C-2 is not a customer of partner P-1".into())
    );
    assert_eq!(
        refused(&server, "/api/v1/cdrs", call("P-1")).await,
        (unprocessable, "not_a_customer".into(), "account P-1 is a partner; this needs a customer".into())
    );
    assert_eq!(
        refused(&server, "/api/v1/cdrs", call("C-1")).await,
        (
            unprocessable,
            "no_tariff".into(),
            "the customer account C-1 has no tariff in force when the call started".into()
        )
    );
}

/// Issue 19: `curl --data-binary @missing.csv` sends an empty body, which was answered
/// "column `id` is required"; it is answered as what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_csv_body_is_called_empty() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let client = reqwest::Client::new();
    for path in ["/api/v1/cdrs", "/api/v1/reconciliations?from=2026-07-01&to=2026-08-01"] {
        let request = client.post(server.url(path)).bearer_auth(ADMIN_KEY).header("content-type", "text/csv");
        let (status, body) = send(request.body("")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!((body["error"].as_str(), body["field"].as_str()), (Some("invalid_body"), Some("body")), "{body}");
        assert!(body["message"].as_str().unwrap().starts_with("the CSV body is empty"), "{path}: {body}");
    }
}
