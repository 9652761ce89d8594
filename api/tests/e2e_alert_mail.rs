//! End to end: alert e-mail from the real binary to a real SMTP server (Python's aiosmtpd,
//! `api/tests/smtp/smtp_server.py`) on loopback, with STARTTLS (a test CA's certificate)
//! and AUTH required. A balance crossing its threshold is e-mailed once to each address
//! the account has; a relay's 5xx is not retried, a 4xx is until the window ends; the
//! delivery log says so; a restart, graceful (in the middle of an alert's e-mails) or
//! kill -9, sends nothing twice.
//!
//! `scripts/test` installs aiosmtpd into `target/pyenv` and puts its `bin` first on the
//! PATH; without a `python3` there that can import it, the test says so and checks nothing
//! (as the real-switch test does without Kamailio).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;

use common::{ADMIN_KEY, Server, send};

/// How long the test waits for an e-mail or a log entry before it fails.
const WAIT: Duration = Duration::from_secs(60);
const SMTP_USER: &str = "mailer";
const SMTP_PASSWORD: &str = "s3cret-for-the-relay";

/// The SMTP server, and the messages it accepted (one JSON object each, in order).
struct Relay {
    child: Child,
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp")
}

impl Relay {
    /// None when aiosmtpd is not installed.
    fn start() -> Option<Relay> {
        let probe = Command::new("python3").args(["-c", "import aiosmtpd"]).output();
        if !probe.is_ok_and(|output| output.status.success()) {
            return None;
        }
        let dir = fixtures();
        let mut child = Command::new("python3")
            .arg(dir.join("smtp_server.py"))
            .args(["--user", SMTP_USER, "--password", SMTP_PASSWORD, "--cert"])
            .arg(dir.join("server.pem"))
            .arg("--key")
            .arg(dir.join("server.key"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let port = u16::try_from(first["port"].as_u64().unwrap()).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        Some(Relay { child, port, received })
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(started.elapsed() < WAIT, "{} e-mails arrived, {count} expected", received.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, credential: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(credential);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn write(&self, path: &str, body: Value) {
        let (status, body) = self.call(ADMIN_KEY, Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
    }

    /// An API token for a new user of `role` acting for `account`.
    async fn token(&self, login: &str, role: &str, account: &str) -> String {
        let user = json!({"login": login, "role": role, "account": account});
        let (status, body) = self.call(ADMIN_KEY, Method::POST, "/api/v1/users", Some(user)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self.call(ADMIN_KEY, Method::POST, "/api/v1/tokens", Some(json!({"user": login}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    async fn log(&self, credential: &str, number: &str) -> Vec<Value> {
        let path = format!("/api/v1/accounts/{number}/alert-emails/deliveries?limit=1000");
        let (status, body) = self.call(credential, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["deliveries"].as_array().unwrap().clone()
    }

    /// Waits until the account's log shows an e-mail to `to` being retried.
    async fn pending(&self, number: &str, to: &str) {
        let started = Instant::now();
        loop {
            let log = self.log(ADMIN_KEY, number).await;
            if log.iter().any(|d| d["to"] == to && d["status"] == "pending") {
                return;
            }
            assert!(started.elapsed() < WAIT, "no e-mail to {to} is being retried: {log:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the account's log holds `count` finished e-mails.
    async fn finished(&self, number: &str, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let log = self.log(ADMIN_KEY, number).await;
            if log.iter().filter(|d| d["status"] != "pending").count() >= count {
                return log;
            }
            assert!(started.elapsed() < WAIT, "the log has not {count} finished e-mails: {log:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn start(data: &std::path::Path, relay: &Relay) -> (Server, Api) {
    let port = relay.port.to_string();
    let ca = fixtures().join("ca.pem");
    let args = [
        "--admin-key",
        ADMIN_KEY,
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port,
        "--smtp-tls",
        "starttls",
        "--smtp-ca-file",
        ca.to_str().unwrap(),
        "--smtp-username",
        SMTP_USER,
        "--smtp-from",
        "Billing <billing@tollbook.test>",
        "--smtp-backoff-ms",
        "50",
        "--smtp-retry-for",
        "3s",
        "--smtp-timeout",
        "10s",
    ];
    let server = Server::start_with_env(data, &args, &[("TOLLBOOK_SMTP_PASSWORD", SMTP_PASSWORD)]).await;
    let api = Api { base: server.base.clone(), client: reqwest::Client::new() };
    (server, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_is_emailed_once_to_each_address_across_restarts() {
    let Some(relay) = Relay::start() else {
        eprintln!(
            "aiosmtpd is not installed (scripts/test installs it into target/pyenv): the e-mail test checks nothing"
        );
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (server, api) = start(data.path(), &relay).await;
    for (number, kind, partner) in
        [("P-1", "partner", None), ("C-1", "customer", Some("P-1")), ("D-1", "customer", None)]
    {
        let mut body = json!({"number": number, "name": format!("Name of {number}"), "kind": kind, "currency": "EUR"});
        if let Some(partner) = partner {
            body["partner"] = json!(partner);
        }
        api.write("/api/v1/accounts", body).await;
    }
    let partner = api.token("p1", "partner", "P-1").await;
    let customer = api.token("c1", "customer", "C-1").await;
    let post = Method::POST;

    // Bad input is refused, naming the field; another tenant's account is not found.
    let set = |number: &str| format!("/api/v1/accounts/{number}/alert-emails");
    let (status, body) = api.call(ADMIN_KEY, post.clone(), &set("C-404"), Some(json!({"addresses": []}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::NOT_FOUND, Some("number")), "{body}");
    let bad = json!({"addresses": ["ann@customer.example", "ann at customer"]});
    let (status, body) = api.call(ADMIN_KEY, post.clone(), &set("C-1"), Some(bad)).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("addresses[1]")), "{body}");
    assert_eq!(body["error"], "invalid_email_address");
    let (status, body) = api.call(ADMIN_KEY, post.clone(), &set("C-1"), Some(json!({"adresses": []}))).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("adresses")), "{body}");
    let (status, _) = api.call(&partner, post.clone(), &set("D-1"), Some(json!({"addresses": []}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a partner sets its own customers' addresses only");
    let (status, _) = api.call(&customer, Method::GET, &set("D-1"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) =
        api.call(&partner, post.clone(), &set("C-1"), Some(json!({"addresses": ["p1@partner.example"]}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The customer itself, with a form as every write takes: its own address, one the
    // relay refuses for good (550), and one it asks to try later (451) until the window ends.
    let response = api
        .client
        .post(format!("{}{}", api.base, set("C-1")))
        .bearer_auth(&customer)
        .form(&[("addresses", "Ann <ann@customer.example>, refused@customer.example, busy@customer.example")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, shown) = api.call(&customer, Method::GET, &set("C-1"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&shown["addresses"], &shown["sending"]),
        (&json!(["Ann <ann@customer.example>", "refused@customer.example", "busy@customer.example"]), &json!(true))
    );

    // 20 -> 8: down through 10, one alert.
    api.write("/api/v1/accounts/C-1/alerts", json!({"balance_below": "10"})).await;
    api.write("/api/v1/payments", json!({"account": "C-1", "amount": "20"})).await;
    api.write("/api/v1/charges", json!({"account": "C-1", "amount": "12"})).await;
    // A graceful restart while the relay still asks to try `busy` later: the alert is
    // taken up again after the restart, and Ann, whose e-mail went, does not get it twice.
    api.finished("C-1", 2).await;
    api.pending("C-1", "busy@customer.example").await;
    server.stop();
    let (server, api) = start(data.path(), &relay).await;
    let log = api.finished("C-1", 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(relay.received().len(), 1, "{:#?}", relay.received());
    let mail = &relay.wait_for(1).await[0];
    assert_eq!(mail["rcpt_tos"], json!(["ann@customer.example"]), "{mail:#}");
    assert_eq!(mail["to"], "Ann <ann@customer.example>");
    assert_eq!(mail["from"], "Billing <billing@tollbook.test>");
    assert_eq!(mail["mail_from"], "billing@tollbook.test");
    let subject = "Name of C-1 (C-1): balance 8.00 EUR is below 10.00 EUR";
    assert_eq!(mail["subject"], subject, "the subject is the alert template's message");
    assert_eq!(mail["content_type"], "text/plain");
    // Lines end in CRLF on the wire, as SMTP wants.
    let body = mail["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(body.starts_with(&format!("{subject}\n\n")), "{body}");
    for line in ["Alert:        balance_below", "Balance:      8.00 EUR", "Threshold:    10.00 EUR"] {
        assert!(body.contains(line), "{line} in {body}");
    }
    assert_eq!((&mail["login"], &mail["tls"]), (&json!(SMTP_USER), &json!(true)), "authenticated, over STARTTLS");

    // The log, as the customer sees it too: one entry per address.
    assert_eq!(api.log(&customer, "C-1").await.len(), 3);
    let outcome = |to: &str| {
        let entry = log.iter().find(|entry| entry["to"] == to).unwrap_or_else(|| panic!("{to} in {log:#?}"));
        (entry["status"].as_str().unwrap().to_owned(), entry["attempts"].as_array().unwrap().clone())
    };
    let (status, attempts) = outcome("Ann <ann@customer.example>");
    assert_eq!((status.as_str(), attempts.len()), ("delivered", 1));
    assert_eq!(attempts[0]["status_code"], 250);
    assert!(log.iter().all(|entry| entry["subject"] == subject && entry["alert"] == "balance_below"), "{log:#?}");
    let (status, attempts) = outcome("refused@customer.example");
    assert_eq!((status.as_str(), attempts.len()), ("failed", 1));
    assert_eq!(attempts[0]["status_code"], 550, "a permanent refusal is not retried");
    let (status, attempts) = outcome("busy@customer.example");
    assert_eq!(status, "failed");
    assert!(attempts.len() > 1 && attempts.iter().all(|a| a["status_code"] == 451), "retried: {attempts:#?}");
    let position = log[0]["position"].as_u64().unwrap();
    assert!(log.iter().all(|entry| entry["position"] == position), "one alert");

    // A kill -9 after the next alert's e-mail is durably recorded: not sent again either,
    // and the alert raised after the restart is sent once. (Killed between the relay's 250
    // and the durable record, the e-mail goes again, with the same Message-ID: the one
    // window SMTP leaves, written down in docs/billing-cycle.md. The log shows an outcome
    // a few milliseconds before it is durable; setting the addresses again returns only
    // once everything written before it is, which keeps the test off that window.)
    let addresses = json!({"addresses": ["ann@customer.example"]});
    api.write("/api/v1/accounts/C-1/alert-emails", addresses.clone()).await;
    api.write("/api/v1/payments", json!({"account": "C-1", "amount": "10"})).await;
    api.write("/api/v1/charges", json!({"account": "C-1", "amount": "10"})).await;
    relay.wait_for(2).await;
    api.finished("C-1", 4).await;
    api.write("/api/v1/accounts/C-1/alert-emails", addresses).await;
    drop(server);
    let (_server, api) = start(data.path(), &relay).await;
    api.write("/api/v1/payments", json!({"account": "C-1", "amount": "10"})).await;
    api.write("/api/v1/charges", json!({"account": "C-1", "amount": "10"})).await;
    let log = api.finished("C-1", 5).await;
    relay.wait_for(3).await;
    // Time for a repeat, were there one, to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = relay.received();
    let ids: Vec<&str> = received.iter().map(|m| m["message_id"].as_str().unwrap()).collect();
    let distinct: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!((distinct.len(), received.len()), (3, 3), "one e-mail per alert, none twice: {ids:?}");
    assert_eq!(log.len(), 5, "{log:#?}");
    assert!(log[3..].iter().all(|d| d["status"] == "delivered" && d["to"] == "ann@customer.example"), "{log:#?}");
}
