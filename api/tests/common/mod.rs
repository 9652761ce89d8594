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
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollbook"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra_args)
            .env_remove("TOLLBOOK_STORE")
            .env_remove("TOLLBOOK_ADMIN_KEY")
            .env_remove("TOLLBOOK_SESSION_LIFETIME")
            .env("TOLLBOOK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The server prints its bound address as its first line on stdout.
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(START_TIMEOUT, line).await.expect("the server printed no address").unwrap();
        let line = line.unwrap();
        let base = line.trim().strip_prefix("tollbook listening on ").unwrap_or_else(|| panic!("{line}")).to_owned();
        let server = Server { child, base };
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
