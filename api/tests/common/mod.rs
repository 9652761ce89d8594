//! Starting the real `tollbook` binary for end-to-end tests. Cargo builds the binary of
//! this package before its integration tests and names it in `CARGO_BIN_EXE_tollbook`,
//! which is why these tests live in `api/tests/` rather than in the `tests` package.

#![allow(dead_code, reason = "each test file uses a different part of the helpers")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

pub const ADMIN_KEY: &str = "test-key";
/// Long enough for a cold start of a debug build on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server; killed when the test ends, whether it passed or not.
pub struct Server {
    child: Child,
    pub base: String,
    /// Where metrics are served, when the server was started with `--metrics-listen`.
    pub metrics_base: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `tollbook serve` on a port the system picks (no race for a free port) and
    /// waits until `/health` answers 200.
    pub async fn start(data: &Path, extra_args: &[&str]) -> Server {
        Server::start_with_env(data, extra_args, &[]).await
    }

    /// As [`Server::start`], with environment variables (settings that have no flag,
    /// such as a password).
    pub async fn start_with_env(data: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollbook"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra_args)
            .env_remove("TOLLBOOK_STORE")
            .env_remove("TOLLBOOK_ADMIN_KEY")
            .env_remove("TOLLBOOK_SESSION_LIFETIME")
            .env_remove("TOLLBOOK_METRICS_LISTEN")
            .env("TOLLBOOK_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The server prints its bound addresses on stdout, the API's last: the metrics
        // address first when it serves one.
        let stdout = child.stdout.take().unwrap();
        let lines = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Ok::<_, std::io::Error>(lines);
                }
                let api = line.starts_with("tollbook listening on ");
                lines.push(line.trim().to_owned());
                if api {
                    // Kept open: the server may print more, and must not see a closed pipe.
                    std::mem::forget(reader);
                    return Ok(lines);
                }
            }
        });
        let lines = tokio::time::timeout(START_TIMEOUT, lines).await.expect("the server printed no address").unwrap();
        let lines = lines.unwrap();
        let address = |prefix: &str| lines.iter().find_map(|line| line.strip_prefix(prefix)).map(str::to_owned);
        let base = address("tollbook listening on ").unwrap_or_else(|| panic!("no API address: {lines:?}"));
        let metrics_base = address("tollbook metrics on ");
        let server = Server { child, base, metrics_base };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(server.url("/health")).send().await
                && response.status() == StatusCode::OK
            {
                return server;
            }
            assert!(started.elapsed() < START_TIMEOUT, "the server did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `/metrics` on the metrics address; the server must have been started with
    /// `--metrics-listen 127.0.0.1:0`.
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.metrics_base.as_deref().expect("started with --metrics-listen"))
    }

    /// The Prometheus text the metrics address serves.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(self.metrics_url()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Stops the server the way an operator would (SIGTERM) and waits for it.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

/// A request with a credential (or none), answered as status and JSON (or the text).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Runs a `tollbook` subcommand on a data directory: whether it succeeded, its stdout and
/// its stderr.
pub fn tollbook(args: &[&str], data: &Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tollbook"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("TOLLBOOK_STORE")
        .env("TOLLBOOK_LOG", "warn")
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// A client of one test server, with the calls most end-to-end tests make. A test file
/// adds what only it needs in an `impl Api` of its own.
pub struct Api {
    pub client: reqwest::Client,
    pub server: Server,
}

impl Api {
    pub fn new(server: Server) -> Api {
        Api { client: reqwest::Client::new(), server }
    }

    /// A JSON request (or none) with `credential` as its bearer.
    pub async fn call(
        &self,
        credential: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.server.url(path)).bearer_auth(credential);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// [`Api::call`], which must succeed.
    pub async fn ok(&self, credential: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(credential, method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// POSTs `body` as it is, with its content type: a CSV file, a switch's document.
    pub async fn post_raw(
        &self,
        credential: &str,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let request = self
            .client
            .post(self.server.url(path))
            .bearer_auth(credential)
            .header("content-type", content_type)
            .body(body);
        send(request).await
    }

    /// Opens an EUR account, as the admin.
    pub async fn open_account(&self, number: &str, kind: &str, partner: Option<&str>) {
        let body =
            serde_json::json!({"number": number, "name": number, "kind": kind, "partner": partner, "currency": "EUR"});
        self.ok(ADMIN_KEY, reqwest::Method::POST, "/api/v1/accounts", Some(body)).await;
    }

    /// Publishes the retail tariff the CDR tests rate with (0.10 EUR a minute to `49`,
    /// from 2026-01-01) and assigns it to `accounts`.
    pub async fn retail_tariff(&self, accounts: &[&str]) {
        let body = serde_json::json!({"name": "Retail", "currency": "EUR", "effective_from": "2026-01-01",
                                      "rates": [{"prefix": "49", "price_per_minute": "0.10"}]});
        let tariff = self.ok(ADMIN_KEY, reqwest::Method::POST, "/api/v1/tariffs", Some(body)).await;
        let id = tariff["links"]["tariff"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        for account in accounts {
            let path = format!("/api/v1/accounts/{account}/tariff");
            self.ok(ADMIN_KEY, reqwest::Method::POST, &path, Some(serde_json::json!({"tariff": id}))).await;
        }
    }

    /// A user with `role` on `account`, made by the admin, and an API token of it.
    pub async fn token(&self, login: &str, role: &str, account: &str) -> String {
        let user = serde_json::json!({"login": login, "role": role, "account": account});
        self.ok(ADMIN_KEY, reqwest::Method::POST, "/api/v1/users", Some(user)).await;
        let body =
            self.ok(ADMIN_KEY, reqwest::Method::POST, "/api/v1/tokens", Some(serde_json::json!({"user": login}))).await;
        body["token"].as_str().unwrap().to_owned()
    }
}
