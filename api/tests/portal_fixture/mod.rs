//! A small book for the portal's tests: a partner with two customers and an operator's
//! customer, with money moved so that every statement figure has something behind it.

#![allow(dead_code, reason = "each portal test uses a different part of the fixture")]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{ADMIN_KEY, Server, send};

pub const PASSWORD: &str = "correct horse battery";

/// C1's figures this month: 100.25 paid, 40 in from P1, 5.50 charged.
pub const C1_PAYMENTS: &str = "100.25";
pub const C1_TRANSFERS_IN: &str = "40.00";
pub const C1_OTHER_CHARGES: &str = "5.50";
pub const C1_BALANCE: &str = "134.75";
/// P1: 500 paid, 40 out to C1.
pub const P1_BALANCE: &str = "460.00";

pub struct Book {
    pub server: Server,
    pub client: reqwest::Client,
    /// The global position after the last write, for reading one's writes.
    pub position: u64,
}

impl Book {
    pub async fn call(&self, credential: &str, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.server.url(path)).bearer_auth(credential);
        if !body.is_null() {
            request = request.json(&body);
        }
        send(request).await
    }

    pub async fn admin(&mut self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(ADMIN_KEY, method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        if let Some(position) = answer["position"].as_u64() {
            self.position = self.position.max(position);
        }
        answer
    }

    /// A fresh login link for `number`, made by the admin.
    pub async fn link(&mut self, number: &str) -> String {
        let answer = self.admin(Method::POST, &format!("/api/v1/accounts/{number}/login-link"), Value::Null).await;
        answer["url"].as_str().unwrap().to_owned()
    }

    /// Waits until the read models reflect every write so far.
    pub async fn settle(&mut self) {
        let position = self.position;
        self.admin(Method::GET, &format!("/api/v1/accounts/P1?min_position={position}"), Value::Null).await;
    }
}

/// Starts a server and books P1 (partner) with C1 and C2, and D1 (the operator's).
pub async fn book(data: &std::path::Path, extra_args: &[&str]) -> Book {
    let mut args = vec!["--admin-key", ADMIN_KEY];
    args.extend_from_slice(extra_args);
    let server = Server::start(data, &args).await;
    let mut book = Book { server, client: reqwest::Client::new(), position: 0 };
    for (number, name, kind, partner) in [
        ("P1", "Partner One", "partner", None),
        ("C1", "Customer One", "customer", Some("P1")),
        ("C2", "Customer Two", "customer", Some("P1")),
        ("D1", "Direct Customer", "customer", None),
    ] {
        let body = json!({"number": number, "name": name, "kind": kind, "partner": partner, "currency": "EUR"});
        book.admin(Method::POST, "/api/v1/accounts", body).await;
    }
    book.admin(Method::POST, "/api/v1/payments", json!({"account": "P1", "amount": "500"})).await;
    book.admin(Method::POST, "/api/v1/payments", json!({"account": "C1", "amount": C1_PAYMENTS})).await;
    book.admin(Method::POST, "/api/v1/transfers", json!({"from": "P1", "to": "C1", "amount": "40"})).await;
    book.admin(Method::POST, "/api/v1/charges", json!({"account": "C1", "amount": "5.5", "description": "DID"})).await;
    book.admin(Method::POST, "/api/v1/payments", json!({"account": "C2", "amount": "7"})).await;
    let user = json!({"login": "c2-user", "password": PASSWORD, "role": "customer", "account": "C2"});
    book.admin(Method::POST, "/api/v1/users", user).await;
    book.settle().await;
    book
}

/// This month as `YYYY-MM` and its statement period's bounds.
pub fn this_month() -> (String, String, String) {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    let first = today.with_day(1).unwrap();
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap();
    (first.format("%Y-%m").to_string(), first.to_string(), next.to_string())
}
