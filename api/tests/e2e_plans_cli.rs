//! `tollbook plans` on a stopped server's data directory: publish the operator's and a
//! partner's plan, subscribe a customer, end the subscription, list; bad flags and
//! refused commands fail naming what is wrong and write nothing; the next start charges
//! the fees that fell due, once.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Api, Server, tollbook};
use reqwest::Method;
use serde_json::json;

/// The id a `plans` command printed after `word`.
fn printed_id(stdout: &str, word: &str) -> String {
    let line = stdout.lines().find(|l| l.starts_with(word)).unwrap_or_else(|| panic!("no `{word}` in {stdout}"));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

fn plans(args: &[&str], data: &std::path::Path) -> String {
    let mut all = vec!["plans"];
    all.extend(args);
    let (ok, stdout, stderr) = tollbook(&all, data);
    assert!(ok, "tollbook {all:?} failed: {stderr}");
    stdout
}

fn refused(args: &[&str], data: &std::path::Path) -> String {
    let mut all = vec!["plans"];
    all.extend(args);
    let (ok, stdout, stderr) = tollbook(&all, data);
    assert!(!ok, "tollbook {all:?} should fail: {stdout}");
    stderr
}

#[tokio::test]
async fn plans_from_the_command_line_are_charged_by_the_next_start() {
    let data = tempfile::tempdir().unwrap();
    let api = Api::new(Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await);
    api.open_account("P-1", "partner", None).await;
    api.open_account("C-1", "customer", Some("P-1")).await;
    for account in ["P-1", "C-1"] {
        let payment = json!({"account": account, "amount": "100"});
        api.ok(ADMIN_KEY, Method::POST, "/api/v1/payments", Some(payment)).await;
    }
    api.server.stop();
    let data = data.path();

    let wholesale = printed_id(
        &plans(
            &["publish", "--name", "Line, wholesale", "--price", "0.40", "--currency", "EUR", "--period", "daily"],
            data,
        ),
        "plan",
    );
    let retail = printed_id(
        &plans(
            &[
                "publish",
                "--name",
                "Line",
                "--price",
                "1.00",
                "--currency",
                "EUR",
                "--period",
                "daily",
                "--partner",
                "P-1",
                "--wholesale",
                &wholesale,
            ],
            data,
        ),
        "plan",
    );
    // Each mistake is named, and changes nothing.
    let stderr = refused(&["publish", "--name", "X", "--price", "1", "--currency", "EUR", "--period", "yearly"], data);
    assert!(stderr.contains("--period"), "{stderr}");
    let stderr = refused(
        &["publish", "--name", "X", "--price", "1", "--currency", "EUR", "--period", "daily", "--partner", "C-1"],
        data,
    );
    assert!(stderr.contains("C-1 is not a partner"), "{stderr}");
    let stderr = refused(&["subscribe", "--account", "C-9", "--plan", &retail], data);
    assert!(stderr.contains("no account C-9"), "{stderr}");
    // The operator's own plan is not sold to a partner's customer: the ledger refuses.
    let stderr = refused(&["subscribe", "--account", "C-1", "--plan", &wholesale], data);
    assert!(stderr.contains("refused:"), "{stderr}");

    let subscription = printed_id(
        &plans(&["subscribe", "--account", "C-1", "--plan", &retail, "--starts", "2026-01-01"], data),
        "subscription",
    );
    plans(&["end", "--subscription", &subscription, "--at", "2026-01-11"], data);
    let listed = plans(&["list"], data);
    assert_eq!(listed.matches("plan ").count(), 2, "{listed}");
    assert!(listed.contains("Line  1.00 EUR daily  sold by P-1"), "{listed}");
    assert!(listed.contains(&format!("subscription {subscription}  C-1  from 2026-01-01")), "{listed}");
    assert!(listed.contains("until 2026-01-11"), "{listed}");

    // The start catches up the ten days, once: 10 × 1.00 from the customer, 10 × 0.40
    // from the partner.
    let api = Api::new(Server::start(data, &["--admin-key", ADMIN_KEY, "--billing-interval", "1s"]).await);
    let path = format!("/api/v1/subscriptions/{subscription}");
    let started = Instant::now();
    loop {
        let body = api.ok(ADMIN_KEY, Method::GET, &path, None).await;
        if body["subscription"]["settled_until"].as_str().is_some_and(|s| s.starts_with("2026-01-11")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the fees are not settled: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let balance = async |number: &str| {
        let path = format!("/api/v1/accounts/{number}?min_position=1");
        api.ok(ADMIN_KEY, Method::GET, &path, None).await["account"]["balance"].to_string()
    };
    let started = Instant::now();
    while balance("C-1").await != "90.00" || balance("P-1").await != "96.00" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "C-1 {} P-1 {}",
            balance("C-1").await,
            balance("P-1").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
