//! End to end: the real `tollbook serve` binary over HTTP, as a client sees it.

use std::str::FromStr;

use reqwest::StatusCode;
use reqwest::multipart::Form;
use rust_decimal::Decimal;
use serde_json::{Value, json};

mod common;

use common::ADMIN_KEY;

/// A server with its data directory, both gone when the test ends.
struct Server {
    _server: common::Server,
    base: String,
    _data: tempfile::TempDir,
}

async fn start() -> Server {
    let data = tempfile::tempdir().unwrap();
    let server = common::Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    Server { base: server.base.clone(), _server: server, _data: data }
}

/// The three body encodings every write accepts.
#[derive(Clone, Copy, Debug)]
enum Encoding {
    Json,
    Form,
    Multipart,
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `fields` (all strings, as forms have them) in the given encoding.
    async fn post(
        &self,
        path: &str,
        encoding: Encoding,
        fields: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.post(self.url(path)).bearer_auth(ADMIN_KEY);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        request = match encoding {
            Encoding::Json => {
                let object: serde_json::Map<String, Value> =
                    fields.iter().map(|(k, v)| (k.to_string(), json_value(k, v))).collect();
                request.json(&object)
            }
            Encoding::Form => request.form(fields),
            Encoding::Multipart => {
                let form = fields.iter().fold(Form::new(), |form, (k, v)| form.text(k.to_string(), v.to_string()));
                request.multipart(form)
            }
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).header("X-Auth-Token", ADMIN_KEY).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// In JSON bodies amounts go as JSON numbers, the way most clients send them.
fn json_value(key: &str, value: &str) -> Value {
    if matches!(key, "amount" | "credit_limit") { Value::Number(value.parse().unwrap()) } else { json!(value) }
}

fn decimal(value: &Value) -> Decimal {
    Decimal::from_str(&value.to_string()).unwrap_or_else(|_| panic!("not a decimal: {value}"))
}

fn balance_of<'a>(body: &'a Value, number: &str) -> &'a Value {
    let balances = body["balances"].as_array().unwrap();
    &balances.iter().find(|b| b["account"] == number).unwrap_or_else(|| panic!("no balance for {number}: {body}"))["balance"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_end_to_end() {
    let server = start().await;
    let api = Api { base: server.base.clone(), client: reqwest::Client::new() };

    // Credentials: none, wrong, and each accepted header.
    let response = api.client.get(api.url("/api/v1")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"], "unauthorized");
    let response = api.client.get(api.url("/api/v1")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = api.client.get(api.url("/api/v1")).header("token", ADMIN_KEY).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, index) = api.get("/api/v1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(index["links"]["payments"], "/api/v1/payments");

    // Register a partner (JSON) and its customer (form).
    let (status, body) = api
        .post(
            "/api/v1/accounts",
            Encoding::Json,
            &[("number", "P1"), ("name", "Reseller One"), ("kind", "partner"), ("currency", "USD")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["events"][0]["type"], "AccountOpened");
    let (status, body) = api
        .post(
            "/api/v1/accounts",
            Encoding::Form,
            &[
                ("number", "C1"),
                ("name", "Customer One"),
                ("kind", "customer"),
                ("partner", "P1"),
                ("currency", "USD"),
                ("credit_limit", "0"),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["links"]["self"], "/api/v1/accounts/C1");

    // Registration with an idempotency key repeats rather than failing as a duplicate.
    let customer2 =
        [("number", "C2"), ("name", "Customer Two"), ("kind", "customer"), ("partner", "P1"), ("currency", "USD")];
    let (status, first) = api.post("/api/v1/accounts", Encoding::Multipart, &customer2, Some("reg-c2")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = api.post("/api/v1/accounts", Encoding::Json, &customer2, Some("reg-c2")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["repeated"], true);
    assert_eq!(again["events"], first["events"]);
    let (status, body) = api.post("/api/v1/accounts", Encoding::Json, &customer2, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "duplicate_account_number");
    let customer3 =
        [("number", "C3"), ("name", "Customer Three"), ("kind", "customer"), ("partner", "P1"), ("currency", "USD")];
    let (status, body) = api.post("/api/v1/accounts", Encoding::Json, &customer3, Some("reg-c2")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "idempotency_key_reused");

    // A payment in each encoding; balances stay exact decimals.
    let payments =
        [(Encoding::Json, "10.10", "10.10"), (Encoding::Form, "5.05", "15.15"), (Encoding::Multipart, "1.25", "16.40")];
    for (encoding, amount, after) in payments {
        let (status, body) = api
            .post("/api/v1/payments", encoding, &[("account", "P1"), ("amount", amount), ("reference", "wire")], None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{encoding:?}: {body}");
        assert_eq!(body["events"][0]["type"], "PaymentReceived");
        assert_eq!(body["repeated"], false);
        assert_eq!(balance_of(&body, "P1").to_string(), after, "{encoding:?}: {body}");
        assert!(body["position"].as_u64().unwrap() > 0);
    }

    // A fund move partner -> customer in each encoding.
    let moves =
        [(Encoding::Json, "2.50", "2.50"), (Encoding::Form, "1.10", "3.60"), (Encoding::Multipart, "0.40", "4.00")];
    let mut last_position = 0;
    for (encoding, amount, after) in moves {
        let (status, body) =
            api.post("/api/v1/transfers", encoding, &[("from", "P1"), ("to", "C1"), ("amount", amount)], None).await;
        assert_eq!(status, StatusCode::CREATED, "{encoding:?}: {body}");
        assert_eq!(body["events"][0]["type"], "FundsMoved");
        assert_eq!(balance_of(&body, "C1").to_string(), after, "{encoding:?}: {body}");
        last_position = body["position"].as_u64().unwrap();
    }

    // The read model, waiting for the last write.
    let (status, body) = api.get(&format!("/api/v1/accounts/C1?min_position={last_position}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"]["balance"].to_string(), "4.00");
    assert_eq!(body["links"]["statement"], "/api/v1/accounts/C1/statement");

    // 415: a content type the API does not take.
    let response = api
        .client
        .post(api.url("/api/v1/payments"))
        .bearer_auth(ADMIN_KEY)
        .header("Content-Type", "text/plain")
        .body("account=P1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_media_type");

    // 413: a body over the limit.
    let huge = format!("{{\"account\":\"P1\",\"amount\":1,\"reference\":\"{}\"}}", "x".repeat(1024 * 1024 + 16));
    let response = api
        .client
        .post(api.url("/api/v1/payments"))
        .bearer_auth(ADMIN_KEY)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");

    // 400 naming the field: a malformed amount, in JSON and in a form.
    for encoding in [Encoding::Form, Encoding::Multipart] {
        let (status, body) =
            api.post("/api/v1/payments", encoding, &[("account", "P1"), ("amount", "ten")], None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_body");
        assert_eq!(body["field"], "amount");
    }
    let response = api
        .client
        .post(api.url("/api/v1/payments"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"account": "P1", "amount": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["field"], "amount", "{body}");
    let (status, body) = api.post("/api/v1/payments", Encoding::Json, &[("amount", "1")], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "account", "{body}");

    let (status, body) = api
        .post("/api/v1/payments", Encoding::Form, &[("account", "P1"), ("amount", "1"), ("amuont", "2")], None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "amuont", "{body}");

    // 422: more than the customer has.
    let (status, body) =
        api.post("/api/v1/transfers", Encoding::Json, &[("from", "C1"), ("to", "P1"), ("amount", "1000")], None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "insufficient_funds");

    // Idempotency: the same request again repeats, in any encoding; another body is a conflict.
    let fields = [("account", "C1"), ("amount", "3.33"), ("reference", "inv-7")];
    let (status, first) = api.post("/api/v1/payments", Encoding::Json, &fields, Some("pay-7")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["repeated"], false);
    let (status, again) = api.post("/api/v1/payments", Encoding::Form, &fields, Some("pay-7")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["repeated"], true);
    assert_eq!(again["events"], first["events"]);
    assert_eq!(again["position"], first["position"]);
    let other = [("account", "C1"), ("amount", "4.44"), ("reference", "inv-7")];
    let (status, body) = api.post("/api/v1/payments", Encoding::Json, &other, Some("pay-7")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "idempotency_key_reused");
    let last_position = first["position"].as_u64().unwrap();

    // A charge and an adjustment, then a reversal of the charge.
    let (status, charge) =
        api.post("/api/v1/charges", Encoding::Json, &[("account", "C1"), ("amount", "0.75")], None).await;
    assert_eq!(status, StatusCode::CREATED, "{charge}");
    let (status, body) =
        api.post("/api/v1/adjustments", Encoding::Form, &[("account", "C1"), ("amount", "0.05")], None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let charge_position = charge["position"].as_u64().unwrap().to_string();
    let (status, body) = api
        .post("/api/v1/reversals", Encoding::Form, &[("position", &charge_position), ("reason", "goodwill")], None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["events"][0]["type"], "EntryReversed");
    let last_position = body["position"].as_u64().unwrap().max(last_position);

    // A statement whose figures add up, after the last write.
    let (status, body) = api
        .get(&format!(
            "/api/v1/accounts/C1/statement?from=2000-01-01&to=2100-01-01T00:00:00Z&min_position={last_position}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = &body["statement"];
    let closing = decimal(&s["opening_balance"]) + decimal(&s["payments"]) + decimal(&s["transfers_in"])
        - decimal(&s["transfers_out"])
        - decimal(&s["total_charges"]);
    assert_eq!(closing, decimal(&s["closing_balance"]), "{s}");
    assert_eq!(
        decimal(&s["total_charges"]),
        decimal(&s["call_charges"]) + decimal(&s["other_charges"]) + decimal(&s["adjustments"])
    );
    assert_eq!(decimal(&s["transfers_in"]), Decimal::from_str("4.00").unwrap());
    assert_eq!(decimal(&s["payments"]), Decimal::from_str("3.33").unwrap());
    let (_, account) = api.get("/api/v1/accounts/C1").await;
    assert_eq!(decimal(&s["closing_balance"]), decimal(&account["account"]["balance"]), "{s} {account}");

    // A statement for a past period holds exactly what happened in it, by business time.
    let (status, body) = api
        .post(
            "/api/v1/payments",
            Encoding::Json,
            &[("account", "P1"), ("amount", "7.77"), ("occurred_at", "2020-06-15T12:00:00Z")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let position = body["position"].as_u64().unwrap();
    let (status, body) =
        api.get(&format!("/api/v1/accounts/P1/statement?from=2020-06-01&to=2020-07-01&min_position={position}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = &body["statement"];
    // Compared as decimals: the read model may render an empty opening as `-0`.
    assert_eq!(decimal(&s["opening_balance"]), Decimal::ZERO);
    assert_eq!(s["payments"].to_string(), "7.77");
    assert_eq!(s["closing_balance"].to_string(), "7.77");
    let (status, body) =
        api.get(&format!("/api/v1/accounts/P1/statement?from=2020-07-01&to=2100-01-01&min_position={position}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = &body["statement"];
    assert_eq!(s["opening_balance"].to_string(), "7.77");
    let closing = decimal(&s["opening_balance"]) + decimal(&s["payments"]) + decimal(&s["transfers_in"])
        - decimal(&s["transfers_out"])
        - decimal(&s["total_charges"]);
    assert_eq!(closing, decimal(&s["closing_balance"]), "{s}");
    assert_eq!(decimal(&s["payments"]), Decimal::from_str("16.40").unwrap());

    // Unknown methods and paths answer in the API's error format.
    let (status, body) = api.get("/api/v1/payments").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "method_not_allowed");
    let (status, body) = api.get("/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");

    // Bad statement queries name the parameter.
    let (status, body) = api.get("/api/v1/accounts/C1/statement?from=yesterday&to=2100-01-01").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "from");
    let (status, body) = api.get("/api/v1/accounts/NOPE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "account_not_found");
}
