//! Input that must be refused, and figures that must read the same whichever way they
//! were computed, on the real `tollbook` binary:
//! - text that is not UTF-8 is refused (400 `invalid_body` / `invalid_query`) in forms,
//!   query strings and CSV uploads, and never makes two requests look alike to the
//!   idempotency check;
//! - an input amount has at most 5 decimal places as written, trailing zeros included;
//! - every amount is shown in one canonical form (at least the currency's minor-unit
//!   places, no trailing zeros beyond), the same in the write answer, the account view and
//!   the statement, before and after a replay; and `verify` passes on a healthy directory.

mod common;

use common::{ADMIN_KEY, Server, send, tollbook};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_json(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    send(client().post(server.url(path)).bearer_auth(ADMIN_KEY).json(&body)).await
}

/// A form body sent exactly as given: reqwest's `form()` would encode it for us.
async fn post_form(server: &Server, path: &str, body: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = client()
        .post(server.url(path))
        .bearer_auth(ADMIN_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    send(request).await
}

async fn get(server: &Server, path: &str) -> (StatusCode, Value) {
    send(client().get(server.url(path)).bearer_auth(ADMIN_KEY)).await
}

/// Opens a customer of the operator's and gives the position its write answered.
async fn open_customer(server: &Server, number: &str) -> u64 {
    let body = json!({"number": number, "name": "Customer", "kind": "customer", "currency": "EUR"});
    let (status, answer) = post_json(server, "/api/v1/accounts", body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["position"].as_u64().unwrap()
}

/// `reference=%FF` and then `reference=%FE` under one key were both read as U+FFFD: the
/// first was recorded with a character the client never sent, the second answered as
/// its repeat. Both are refused now and the ledger is unchanged; two different valid
/// forms under one key are a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_utf8_is_refused_and_never_collides_under_one_key() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let opened = open_customer(&server, "C1").await;
    let (_, before) = get(&server, &format!("/api/v1/accounts/C1/events?min_position={opened}")).await;
    assert_eq!(before["events"].as_array().map(Vec::len), Some(1), "the opening: {before}");

    for reference in ["%FF", "%FE"] {
        let body = format!("account=C1&amount=10&reference={reference}");
        let (status, answer) = post_form(&server, "/api/v1/payments", &body, Some("pay-1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reference}: {answer}");
        assert_eq!((answer["error"].as_str(), answer["field"].as_str()), (Some("invalid_body"), Some("reference")));
    }
    let (_, after) = get(&server, "/api/v1/accounts/C1/events").await;
    assert_eq!(after["events"], before["events"], "nothing was recorded");
    let (_, account) = get(&server, "/api/v1/accounts/C1").await;
    assert_eq!(account["account"]["balance"].to_string(), "0.00");

    // Two different valid forms under one key: the second is a conflict, not a repeat.
    let (status, first) =
        post_form(&server, "/api/v1/payments", "account=C1&amount=10&reference=K%C3%B6ln", Some("pay-2")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) =
        post_form(&server, "/api/v1/payments", "account=C1&amount=10&reference=K%C3%B6ln", Some("pay-2")).await;
    assert_eq!((status, &again["repeated"]), (StatusCode::CREATED, &json!(true)), "{again}");
    let (status, other) =
        post_form(&server, "/api/v1/payments", "account=C1&amount=10&reference=Koln", Some("pay-2")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{other}");
    assert_eq!(other["error"], "idempotency_key_reused");

    // Query strings and CSV uploads are held to the same rule.
    let (status, answer) = get(&server, "/api/v1/accounts/C1/cdrs?destination=49%FF").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!((answer["error"].as_str(), answer["field"].as_str()), (Some("invalid_query"), Some("destination")));
    let csv = b"id,account,callee,start,end,cost\nc\xe9-1,C1,4930,2026-07-01T00:00:00Z,2026-07-01T00:01:00Z,0.10\n";
    let upload = client().post(server.url("/api/v1/cdrs")).bearer_auth(ADMIN_KEY).header("Content-Type", "text/csv");
    let (status, answer) = send(upload.body(csv.to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "invalid_body");
    let paid = first["position"].as_u64().unwrap();
    let (_, account) = get(&server, &format!("/api/v1/accounts/C1?min_position={paid}")).await;
    assert_eq!(account["account"]["balance"].to_string(), "10.00", "one payment, no CDR");
    server.stop();
}

/// At most 5 decimal places as written, in JSON numbers, JSON strings and forms alike;
/// `1.0000000000000000000000000000` once went through and balances printed 28 places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_with_more_than_five_places_are_refused_in_every_format() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    open_customer(&server, "C1").await;
    let padded = "1.0000000000000000000000000000";
    let number: Value = serde_json::from_str(&format!(r#"{{"account":"C1","amount":{padded}}}"#)).unwrap();
    let bodies = [number, json!({"account": "C1", "amount": padded}), json!({"account": "C1", "amount": "1.000000"})];
    for body in bodies {
        let (status, answer) = post_json(&server, "/api/v1/payments", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!((answer["error"].as_str(), answer["field"].as_str()), (Some("invalid_amount"), Some("amount")));
    }
    let (status, answer) = post_form(&server, "/api/v1/payments", &format!("account=C1&amount={padded}"), None).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_amount")), "{answer}");
    // A CDR's cost has its own limit (8 places), counted the same way.
    let cdr = json!({"id": "c-1", "account": "C1", "callee": "4930", "start": "2026-07-01T00:00:00Z",
                     "answer": "2026-07-01T00:00:00Z", "end": "2026-07-01T00:01:00Z", "cost": "0.100000000"});
    let (status, answer) = post_json(&server, "/api/v1/cdrs", cdr).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("cost")), "{answer}");

    let (status, answer) = post_json(&server, "/api/v1/payments", json!({"account": "C1", "amount": "1.00000"})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["balances"][0]["balance"].to_string(), "1.00");
    server.stop();
}

/// Eight customers, each with a payment, a charge of 25.50 and its reversal: the live
/// models held `other_charges` as `0.00`, a replay as `0`, and `verify` reported "read
/// models differ from a fresh replay" on a healthy directory. Now the write answer, the
/// account view and the statement show one form, a replay changes no answer, and verify
/// passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_and_replay_changes_no_answer_after_charges_and_reversals() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let numbers: Vec<String> = (1..=8).map(|i| format!("C{i}")).collect();
    let mut last = 0;
    for number in &numbers {
        open_customer(&server, number).await;
        let (_, paid) = post_json(&server, "/api/v1/payments", json!({"account": number, "amount": 100})).await;
        assert_eq!(paid["balances"][0]["balance"].to_string(), "100.00", "{paid}");
        let (status, charged) =
            post_json(&server, "/api/v1/charges", json!({"account": number, "amount": "25.50"})).await;
        assert_eq!(status, StatusCode::CREATED, "{charged}");
        let position = charged["position"].as_u64().unwrap();
        let (status, reversed) = post_json(&server, "/api/v1/reversals", json!({"position": position})).await;
        assert_eq!(status, StatusCode::CREATED, "{reversed}");
        assert_eq!(reversed["balances"][0]["balance"].to_string(), "100.00", "{reversed}");
        last = reversed["position"].as_u64().unwrap();
    }
    let statement_path =
        |number: &str| format!("/api/v1/accounts/{number}/statement?from=2000-01-01&to=2100-01-01&min_position={last}");
    let mut statements = Vec::new();
    for number in &numbers {
        let (status, answer) = get(&server, &statement_path(number)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let statement = &answer["statement"];
        assert_eq!(statement["other_charges"].to_string(), "0.00", "{statement}");
        assert_eq!(statement["closing_balance"].to_string(), "100.00", "{statement}");
        let (_, account) = get(&server, &format!("/api/v1/accounts/{number}")).await;
        assert_eq!(account["account"]["balance"].to_string(), "100.00", "the view shows what the write answered");
        statements.push(statement.clone());
    }
    server.stop();

    let (clean, out, err) = tollbook(&["verify"], data.path());
    let report = out + &err;
    assert!(clean, "verify found differences on a healthy directory:\n{report}");
    let (replayed, out, err) = tollbook(&["replay"], data.path());
    let report = out + &err;
    assert!(replayed, "{report}");

    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    for (number, before) in numbers.iter().zip(&statements) {
        let (_, answer) = get(&server, &statement_path(number)).await;
        assert_eq!(answer["statement"].to_string(), before.to_string(), "{number}'s statement changed after replay");
    }
    server.stop();
}
