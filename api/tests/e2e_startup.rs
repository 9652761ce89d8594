//! Starting `tollbook serve` as a new operator would: what it says when it cannot start
//! (no admin key, a port taken) and how its logs look in a file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

mod common;

use common::{ADMIN_KEY, Server, send};

/// `tollbook serve` with these arguments and no admin key in the environment, run to its
/// end (it is expected to refuse to start): whether it succeeded, its stdout and stderr.
fn serve_refused(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollbook"))
        .args(["serve", "--data"])
        .arg(data)
        .args(args)
        .env_remove("TOLLBOOK_ADMIN_KEY")
        .env_remove("TOLLBOOK_STORE")
        .env_remove("TOLLBOOK_LISTEN")
        .env("TOLLBOOK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts after all would never end: give it a minute, then kill it.
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// Issue 19: without an admin key, `serve` started and answered 401 to everything, with a
/// log line a new user would not see. It now refuses to start, saying how to set one,
/// and creates nothing in the data directory.
#[test]
fn serve_without_an_admin_key_refuses_to_start_and_says_how_to_set_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (succeeded, stdout, stderr) = serve_refused(&data, &["--listen", "127.0.0.1:0"]);
    assert!(!succeeded, "it started: {stdout} {stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    for expected in ["no admin key", "TOLLBOOK_ADMIN_KEY=", "--admin-key"] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    assert!(!data.exists(), "a refused start left a data directory behind");

    // An empty key is no key.
    let (succeeded, _, stderr) = serve_refused(&data, &["--listen", "127.0.0.1:0", "--admin-key", ""]);
    assert!(!succeeded);
    assert!(stderr.contains("no admin key"), "{stderr}");
}

/// Issue 19: where an admin user exists, the server starts without an admin key (the
/// operator may have retired it), and that admin signs in; the old key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_an_admin_key_starts_when_an_admin_user_can_sign_in() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let password = "a long admin password";
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let request = client.post(server.url("/api/v1/users")).bearer_auth(ADMIN_KEY);
    let (status, body) = send(request.json(&json!({"login": "root", "password": password, "role": "admin"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.stop();

    let server = Server::start(data.path(), &[]).await;
    let (status, _) = send(client.get(server.url("/api/v1")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let request = client.post(server.url("/api/v1/sessions"));
    let (status, session) = send(request.json(&json!({"login": "root", "password": password}))).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let access = session["access_token"].as_str().unwrap();
    let (status, body) = send(client.get(server.url("/api/v1/accounts")).bearer_auth(access)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Issue 19: "Address already in use (os error 98)" did not say which address.
#[test]
fn a_taken_address_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let (succeeded, _, stderr) = serve_refused(data.path(), &["--listen", &address, "--admin-key", ADMIN_KEY]);
    assert!(!succeeded);
    assert!(stderr.contains(&format!("cannot listen on {address} (--listen)")), "{stderr}");

    let args = ["--listen", "127.0.0.1:0", "--metrics-listen", &address, "--admin-key", ADMIN_KEY];
    let (succeeded, _, stderr) = serve_refused(data.path(), &args);
    assert!(!succeeded);
    assert!(stderr.contains(&format!("cannot listen on {address} (--metrics-listen)")), "{stderr}");
}

/// `tollbook serve` on a fresh data directory, logging to `log_path`: the child and the base
/// URL it printed once it listened.
fn serve_logging_to(data: &std::path::Path, log_path: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollbook"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.join("db"))
        .env("TOLLBOOK_ADMIN_KEY", ADMIN_KEY)
        .env_remove("TOLLBOOK_STORE")
        .env_remove("TOLLBOOK_LOG_FORMAT")
        // What would turn colours off anyway must not make the colour test pass.
        .env_remove("NO_COLOR")
        .env("TOLLBOOK_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log_path).unwrap())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(base) = line.trim().strip_prefix("tollbook listening on ") {
            return (child, base.to_owned());
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server printed no address");
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().unwrap()
}

/// Issue 19: logs written to a file carried ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_a_file_carry_no_colour_codes() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("tollbook.log");
    let (mut child, base) = {
        let (data, log_path) = (data.path().to_owned(), log_path.clone());
        tokio::task::spawn_blocking(move || serve_logging_to(&data, &log_path)).await.unwrap()
    };
    let (status, _) = send(reqwest::Client::new().get(format!("{base}/api/v1")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK);
    terminate(&mut child);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("tollbook is ready"), "{log}");
    assert!(log.contains("tollbook stopped"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log file: {log:?}");
}

/// SIGTERM the moment the server says it listens stops it cleanly. The handler used to be
/// installed only when a task first polled it, and a SIGTERM before that killed the process
/// without closing the store or logging that it stopped.
#[test]
fn sigterm_right_after_listening_stops_cleanly() {
    for _ in 0..5 {
        let data = tempfile::tempdir().unwrap();
        let log_path = data.path().join("tollbook.log");
        let (mut child, _) = serve_logging_to(data.path(), &log_path);
        let exit = terminate(&mut child);
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(exit.success(), "{exit}: {log}");
        assert!(log.contains("tollbook stopped"), "{log}");
    }
}

/// The server's memory comes in 4 KiB pages: with transparent huge pages, reads right
/// after a burst of writes took 6-28 ms while the kernel cleared 2 MiB pages at first
/// touch (docs/benchmarks.md, "Reads right after a burst of writes").
#[test]
fn the_server_runs_without_transparent_huge_pages() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("tollbook.log");
    let (mut child, _) = serve_logging_to(data.path(), &log_path);
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    terminate(&mut child);
    // Reported since Linux 5.0.
    let thp = status.lines().find_map(|line| line.strip_prefix("THP_enabled:")).map(str::trim);
    assert_eq!(thp, Some("0"), "{status}");
}
