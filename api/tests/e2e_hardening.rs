//! End to end, on the real binary: the defences of a public endpoint. CSV exports that a
//! spreadsheet cannot be tricked into running, connections that cannot be held open by a
//! slow sender, bodies refused by their declared size, a bound on open connections, and
//! webhooks that cannot be pointed into the operator's network.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{ADMIN_KEY, Server, send};

const FORMULA_CALLER: &str = "=HYPERLINK(\"http://evil.example\",\"x\")";
const FORMULA_ID: &str = "=1+2";
const FORMULA_ACCOUNT: &str = "@C1";
const PERIOD: &str = "from=2000-01-01&to=2100-01-01";

async fn call(server: &Server, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path)).bearer_auth(ADMIN_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

async fn ok(server: &Server, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = call(server, method, path, body).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

async fn text(server: &Server, path: &str) -> String {
    let response = reqwest::Client::new().get(server.url(path)).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    response.text().await.unwrap()
}

/// The CSV's rows as maps from column name to cell.
fn rows(csv_text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|record| headers.iter().map(str::to_owned).zip(record.unwrap().iter().map(str::to_owned)).collect())
        .collect()
}

fn decimal(cell: &str) -> Decimal {
    cell.parse().unwrap_or_else(|_| panic!("`{cell}` is not a number"))
}

/// Defect 5: free-text cells that a spreadsheet would run as formulas are written with a
/// leading quote (and quoted) in every CSV the server and the command line write; the
/// number columns stay numbers, a credit's `-5` included; an export reads back as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_neutralise_formulas_and_keep_numbers_numeric() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let account = json!({"number": FORMULA_ACCOUNT, "name": "Formula", "kind": "customer", "currency": "EUR"});
    ok(&server, Method::POST, "/api/v1/accounts", Some(account)).await;
    let cdr = json!({"id": FORMULA_ID, "account": FORMULA_ACCOUNT, "caller": FORMULA_CALLER, "callee": "+4930123",
        "start": "2026-03-01T10:00:00Z", "answer": "2026-03-01T10:00:00Z", "end": "2026-03-01T10:01:00Z",
        "cost": "0.50"});
    ok(&server, Method::POST, "/api/v1/cdrs", Some(cdr)).await;
    let credit = json!({"account": FORMULA_ACCOUNT, "amount": "-5.00", "reason": "-goodwill"});
    let last = ok(&server, Method::POST, "/api/v1/adjustments", Some(credit)).await;
    let position = last["events"][0]["position"].as_u64().unwrap();

    // The CDR export.
    let export = text(&server, &format!("/api/v1/accounts/{FORMULA_ACCOUNT}/cdrs?format=csv&{PERIOD}")).await;
    assert!(export.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\""), "{export}");
    let cdrs = rows(&export);
    assert_eq!(cdrs.len(), 1, "{export}");
    let row = &cdrs[0];
    assert_eq!(row["id"], format!("'{FORMULA_ID}"));
    assert_eq!(row["account"], format!("'{FORMULA_ACCOUNT}"));
    assert_eq!(row["caller"], format!("'{FORMULA_CALLER}"));
    assert_eq!(row["callee"], "'+4930123");
    assert_eq!(decimal(&row["cost"]), Decimal::new(50, 2));
    assert_eq!(row["billable_seconds"], "60");
    row["position"].parse::<u64>().unwrap();
    // Read back, the export is the same CDR: a duplicate, not a new one with a quoted id.
    let upload = reqwest::Client::new()
        .post(server.url("/api/v1/cdrs"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/csv")
        .body(export.clone());
    let (status, answer) = send(upload).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((&answer["summary"]["duplicate"], &answer["summary"]["charged"]), (&json!(1), &json!(0)), "{answer}");

    // The statement: the credit's line and the adjustments figure are negative numbers.
    let path = format!("/api/v1/accounts/{FORMULA_ACCOUNT}/statement?format=csv&{PERIOD}&min_position={position}");
    let statement = rows(&text(&server, &path).await);
    let line = statement.iter().find(|r| r["record"] == "line" && r["name"] == "adjustments").unwrap();
    assert_eq!(decimal(&line["amount"]), Decimal::new(-500, 2), "{line:?}");
    let figure = statement.iter().find(|r| r["record"] == "figure" && r["name"] == "adjustments").unwrap();
    assert_eq!(decimal(&figure["amount"]), Decimal::new(-500, 2), "{figure:?}");

    // A reconciliation file naming formula ids and accounts, one cost that differs.
    let file = format!(
        "id,account,callee,start,end,cost\n\
         \"{FORMULA_ID}\",{FORMULA_ACCOUNT},4930123,2026-03-01T10:00:00Z,2026-03-01T10:01:00Z,0.60\n\
         -evil,{FORMULA_ACCOUNT},4930123,2026-03-02T10:00:00Z,2026-03-02T10:01:00Z,1.25\n"
    );
    let reconcile = reqwest::Client::new()
        .post(server.url(&format!("/api/v1/reconciliations?{PERIOD}&format=csv")))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/csv")
        .body(file.clone());
    let response = reconcile.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report = response.text().await.unwrap();
    let check_report = |report: &str| {
        let differences = rows(report);
        let missing = differences.iter().find(|r| r["difference"] == "missing_in_ledger").unwrap();
        assert_eq!((missing["id"].as_str(), missing["account"].as_str()), ("'-evil", "'@C1"), "{report}");
        assert_eq!(decimal(&missing["file_cost"]), Decimal::new(125, 2));
        let differs = differences.iter().find(|r| r["difference"] == "cost_differs").unwrap();
        assert_eq!(differs["id"], format!("'{FORMULA_ID}"), "{report}");
        assert_eq!(
            (decimal(&differs["file_cost"]), decimal(&differs["ledger_cost"])),
            (Decimal::new(60, 2), Decimal::new(50, 2))
        );
        differs["line"].parse::<u64>().unwrap();
    };
    check_report(&report);
    server.stop();

    // The command line's reconciliation report, and an import's rejected rows.
    let file_path = data.path().join("outside.csv");
    std::fs::write(&file_path, &file).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollbook"))
        .args(["reconcile", "cdrs", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv", "--data"])
        .arg(data.path())
        .arg(&file_path)
        .env_remove("TOLLBOOK_STORE")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the file and the ledger differ");
    check_report(&String::from_utf8(output.stdout).unwrap());
    let import_path = data.path().join("import.csv");
    std::fs::write(
        &import_path,
        "id,account,callee,start,end\n=bad,@nobody,1,2026-03-01T10:00:00Z,2026-03-01T10:01:00Z\n",
    )
    .unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tollbook"))
        .args(["import", "cdrs", "--data"])
        .arg(data.path())
        .arg(&import_path)
        .env_remove("TOLLBOOK_STORE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let rejects = std::fs::read_to_string(data.path().join("import.csv.rejects.csv")).unwrap();
    let rejected = rows(&rejects);
    assert_eq!((rejected[0]["id"].as_str(), rejected[0]["line"].as_str()), ("'=bad", "2"), "{rejects}");
}

/// Reads what the server sends until it closes the connection, for at most `wait`; `None`
/// when it was still open then.
async fn read_until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf, wait: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// Sends `bytes` one a second, until done or the connection fails.
fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        for (sent, byte) in bytes.iter().enumerate() {
            if writer.write_all(&[*byte]).await.is_err() {
                return sent;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        bytes.len()
    })
}

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Defect 10a: headers sent a byte a second are cut after the header read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_at_a_time_are_cut_after_the_header_read_timeout() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY, "--header-read-timeout", "2s"]).await;
    let (mut reader, writer) = TcpStream::connect(address(&server)).await.unwrap().into_split();
    let head = b"GET /health HTTP/1.1\r\nHost: tollbook\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n".to_vec();
    let started = Instant::now();
    let sender = trickle(writer, head);
    let answer = read_until_closed(&mut reader, Duration::from_secs(10)).await;
    assert!(answer.is_some(), "still open after 10 s");
    assert!(started.elapsed() < Duration::from_secs(6), "closed after {:?}", started.elapsed());
    assert!(!answer.unwrap().contains("200 OK"), "the request was never whole");
    sender.abort();
}

/// Defect 10a: a body sent a byte a second is answered 408 and the connection closed once
/// the body read timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_a_byte_at_a_time_is_cut_after_the_body_read_timeout() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY, "--body-read-timeout", "2s"]).await;
    let (mut reader, mut writer) = TcpStream::connect(address(&server)).await.unwrap().into_split();
    let body = json!({"number": "C-slow", "name": "a slow client", "kind": "customer", "currency": "EUR"}).to_string();
    let head = format!(
        "POST /api/v1/accounts HTTP/1.1\r\nHost: tollbook\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let sender = trickle(writer, body.into_bytes());
    let answer = read_until_closed(&mut reader, Duration::from_secs(10)).await.expect("still open after 10 s");
    assert!(started.elapsed() < Duration::from_secs(6), "closed after {:?}", started.elapsed());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    sender.abort();
}

/// Defect 10a: a declared Content-Length over the limit is answered 413 at once, without
/// the client sending any of the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_far_over_the_limit_is_refused_before_the_body_is_sent() {
    // Each declared length is more than twice its endpoint's limit (1 MiB, 32 MiB).
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    for (path, content_type, length) in [
        ("/api/v1/payments", "application/json", 10_000_000u64),
        ("/api/v1/cdrs", "text/csv", 100_000_000),
        ("/api/v1/reconciliations?from=2000-01-01&to=2100-01-01", "text/csv", 100_000_000),
    ] {
        let (mut reader, mut writer) = TcpStream::connect(address(&server)).await.unwrap().into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: tollbook\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut reader, Duration::from_secs(5)).await.expect("no answer without the body");
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("payload_too_large"), "{path}: {answer}");
    }
}

/// Sends one keep-alive request and reads its whole answer (`Content-Length` bytes).
async fn health_on(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: tollbook\r\n\r\n").await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// Defect 10a: at `--connections-max`, a further connection waits (it is not accepted)
/// until an open one closes; then it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_wait_until_one_closes() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        data.path(),
        &["--admin-key", ADMIN_KEY, "--connections-max", "2", "--header-read-timeout", "60s"],
    )
    .await;
    // The start-up health check's connection is closed; let the server see it go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut first = TcpStream::connect(address(&server)).await.unwrap();
    let mut second = TcpStream::connect(address(&server)).await.unwrap();
    assert!(health_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(health_on(&mut second).await.starts_with("HTTP/1.1 200"));
    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = TcpStream::connect(address(&server)).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(1500), health_on(&mut third)).await;
    assert!(waiting.is_err(), "a third connection was served over the bound of two");
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
            let n = third.read(&mut buffer).await.unwrap();
            assert!(n > 0);
            received.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&received).into_owned()
    })
    .await
    .expect("the waiting connection was not served after one closed");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    drop(second);
}

/// A receiver of webhook POSTs on loopback: counts what it gets.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn subscribe(server: &Server, url: &str) -> (StatusCode, Value) {
    call(server, Method::POST, "/api/v1/webhooks", Some(json!({"url": url, "kinds": "PaymentReceived"}))).await
}

/// Defect 10b: webhooks to loopback, private, link-local and metadata addresses, literal
/// or by name, are refused when created, unless the operator allowed the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_internal_addresses_are_refused_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let (receiver_url, _) = receiver().await;
    for url in [
        receiver_url.as_str(),
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5:2113/",
        "http://192.168.1.1/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://[fd00::1]/",
        "http://2130706433/",
        "http://0.0.0.0:9/",
        "http://localhost:9/",
    ] {
        let (status, body) = subscribe(&server, url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(
            (body["error"].as_str(), body["field"].as_str()),
            (Some("webhook_address_not_allowed"), Some("url"))
        );
    }
    // A public address is accepted (nothing is delivered to it: no payment follows).
    let (status, body) = subscribe(&server, "http://93.184.216.34/hook").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    drop(server);

    // Allowed ranges (a list, as the environment gives it): those open, no other.
    let data = tempfile::tempdir().unwrap();
    let args = ["--admin-key", ADMIN_KEY, "--webhook-allow-private", "192.168.0.0/16,127.0.0.0/8"];
    let server = Server::start(data.path(), &args).await;
    let (receiver_url, mut received) = receiver().await;
    let (status, body) = subscribe(&server, &receiver_url).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = subscribe(&server, "http://10.0.0.5:2113/").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = subscribe(&server, "http://169.254.169.254/").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let account = json!({"number": "C1", "name": "C1", "kind": "customer", "currency": "EUR"});
    ok(&server, Method::POST, "/api/v1/accounts", Some(account)).await;
    let paid = ok(&server, Method::POST, "/api/v1/payments", Some(json!({"account": "C1", "amount": "7"}))).await;
    let delivery = tokio::time::timeout(Duration::from_secs(30), received.recv()).await.expect("not delivered");
    assert_eq!(delivery.unwrap()["position"], paid["events"][0]["position"]);
}
