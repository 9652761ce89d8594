//! An idempotent repeat is answered only to a caller that may read its result. Another
//! tenant that sends the same key and body as a write of partner P1's hears exactly what
//! it would have heard without the key, on every write that takes a key: nothing of P1's
//! book comes back, and nothing changes in it. (Was `e2e_repeats.rs`: nothing in it needs
//! a process.)

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::app::{ADMIN_KEY, App};

struct Setup {
    app: App,
}

impl Setup {
    async fn call(&self, credential: &str, path: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {credential}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let answer = self.app.send(request.body(Body::from(body.to_string())).unwrap()).await;
        (answer.status, answer.json())
    }

    async fn get(&self, credential: &str, path: &str) -> Value {
        let answer = self.app.call(Some(credential), Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        answer.json()
    }

    async fn ok(&self, credential: &str, path: &str, key: Option<&str>, body: Value) -> Value {
        let (status, answer) = self.call(credential, path, key, &body).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    async fn token_for(&self, login: &str, role: &str, account: &str) -> String {
        self.app.token(login, role, account, json!({})).await
    }
}

/// What a client can tell apart in an answer: its status, its error code, and whether it
/// says it repeats an earlier request.
fn outline(status: StatusCode, body: &Value) -> (u16, Value, Value) {
    (status.as_u16(), body["error"].clone(), body["repeated"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_answered_only_to_a_caller_that_may_read_its_result() {
    let setup = Setup { app: App::open().await };
    for number in ["P1", "P2"] {
        let partner =
            json!({"number": number, "name": format!("Partner {number}"), "kind": "partner", "currency": "EUR"});
        setup.ok(ADMIN_KEY, "/api/v1/accounts", None, partner).await;
    }
    setup.ok(ADMIN_KEY, "/api/v1/payments", None, json!({"account": "P1", "amount": "500"})).await;
    let p1 = setup.token_for("p1-user", "partner", "P1").await;
    let p2 = setup.token_for("p2-user", "partner", "P2").await;

    // P1's writes, each under a key. A partner leaves out `partner` when it registers a
    // customer of its own, so P2 can send the very same registration body.
    let registration =
        json!({"number": "C1", "name": "Customer One", "kind": "customer", "currency": "EUR", "credit_limit": "77"});
    let first = setup.ok(&p1, "/api/v1/accounts", Some("reg-1"), registration.clone()).await;
    assert_eq!(first["repeated"], false, "{first}");
    let repeat = setup.ok(&p1, "/api/v1/accounts", Some("reg-1"), registration.clone()).await;
    assert_eq!(repeat["repeated"], true, "P1 itself still gets its repeat: {repeat}");
    let charge = json!({"account": "C1", "amount": "3.25", "description": "setup"});
    let charged = setup.ok(&p1, "/api/v1/charges", Some("charge-1"), charge.clone()).await;
    let cdr = json!({"id": "call-1", "account": "C1", "callee": "4930", "start": "2026-03-01T10:00:00Z",
        "answer": "2026-03-01T10:00:00Z", "end": "2026-03-01T10:01:00Z", "cost": "0.5", "partner_cost": "0.2"});
    let tariff = json!({"name": "P1 retail", "currency": "EUR", "rates": [{"prefix": "1", "price_per_minute": "1"}]});
    let writes: Vec<(&str, &str, Value)> = vec![
        ("/api/v1/accounts", "reg-1", registration),
        ("/api/v1/payments", "pay-1", json!({"account": "C1", "amount": "10", "reference": "p1"})),
        ("/api/v1/transfers", "move-1", json!({"from": "P1", "to": "C1", "amount": "50"})),
        ("/api/v1/charges", "charge-1", charge),
        ("/api/v1/adjustments", "adj-1", json!({"account": "C1", "amount": "-1.5", "reason": "goodwill"})),
        ("/api/v1/reversals", "rev-1", json!({"position": charged["position"]})),
        ("/api/v1/cdrs", "cdr-1", cdr),
        ("/api/v1/tariffs", "tariff-1", tariff),
    ];
    let mut last_position = 0;
    for (path, key, body) in &writes {
        let answer = setup.ok(&p1, path, Some(key), body.clone()).await;
        last_position = last_position.max(answer["position"].as_u64().unwrap_or(0));
    }
    let c1 = format!("/api/v1/accounts/C1?min_position={last_position}");
    let before = setup.get(ADMIN_KEY, &c1).await["account"].clone();

    for (path, key, body) in &writes {
        let (status, with_key) = setup.call(&p2, path, Some(key), body).await;
        assert_ne!(with_key["repeated"], true, "P2 got P1's repeat on {path}: {with_key}");
        let text = with_key.to_string();
        for secret in ["Customer One", "\"77", "balances"] {
            assert!(!text.contains(secret) || path.ends_with("tariffs"), "{path} shows `{secret}` to P2: {text}");
        }
        // The same request without a key: whatever P2 hears there, it hears with the key.
        let (status_without, without_key) = setup.call(&p2, path, None, body).await;
        assert_eq!(
            outline(status, &with_key),
            outline(status_without, &without_key),
            "{path}: with P1's key {with_key}, without a key {without_key}"
        );
    }
    let (status, registration) = setup.call(&p2, "/api/v1/accounts", Some("reg-1"), &writes[0].2).await;
    assert_eq!(
        (status, registration["error"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate_account_number")),
        "the number is taken, as it is without the key: {registration}"
    );

    let after = setup.get(ADMIN_KEY, &c1).await["account"].clone();
    for field in ["balance", "credit_limit", "status", "name", "partner"] {
        assert_eq!(before[field], after[field], "nothing P2 sent changed P1's customer: {before} {after}");
    }
    let balance: Decimal = before["balance"].to_string().parse().unwrap();
    assert_eq!(balance, Decimal::new(61, 0), "10 + 50 - 3.25 + 3.25 (reversed) + 1.5 (a credit) - 0.5 (the call)");
    setup.app.close().await;
}
