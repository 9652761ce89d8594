//! `tollbook import` and `tollbook reconcile` on a real data directory, and the
//! reconciliation endpoint: an import is resumable and rejects only bad rows; the ledger
//! reconciled against its own export finds nothing; against an altered export it finds
//! exactly what was altered.

mod common;

use common::{ADMIN_KEY, Server, send, tollbook};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(server: &Server, method: Method, path: &str, body: Value) -> Value {
    let (status, answer) =
        send(reqwest::Client::new().request(method, server.url(path)).bearer_auth(ADMIN_KEY).json(&body)).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// `count` answered calls of C1 to Berlin, one a minute from 2026-07-01, `i` seconds long.
fn cdr_file(count: usize) -> String {
    let mut text = String::from("id,account,caller,callee,start,answer,end\n");
    for i in 0..count {
        let start =
            chrono::DateTime::parse_from_rfc3339("2026-07-01T00:00:00Z").unwrap() + chrono::Duration::minutes(i as i64);
        let answer = start + chrono::Duration::seconds(1);
        let end = answer + chrono::Duration::seconds(i as i64 % 50 + 1);
        text += &format!(
            "call-{i},C1,4940,4930{i:04},{},{},{}\n",
            start.to_rfc3339(),
            answer.to_rfc3339(),
            end.to_rfc3339()
        );
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_resume_and_reconciliation_finds_exactly_the_differences() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    call(
        &server,
        Method::POST,
        "/api/v1/accounts",
        json!({"number": "P1", "name": "P", "kind": "partner", "currency": "EUR"}),
    )
    .await;
    call(
        &server,
        Method::POST,
        "/api/v1/accounts",
        json!({"number": "C1", "name": "C", "kind": "customer", "partner": "P1", "currency": "EUR"}),
    )
    .await;
    let rates = json!([{"prefix": "49", "price_per_minute": "0.05", "first_increment_seconds": 1, "next_increment_seconds": 1}]);
    for account in ["P1", "C1"] {
        let tariff = json!({"name": account, "currency": "EUR", "effective_from": "2026-01-01", "rates": rates});
        let body = call(&server, Method::POST, "/api/v1/tariffs", tariff).await;
        let id = body["links"]["tariff"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        call(&server, Method::POST, &format!("/api/v1/accounts/{account}/tariff"), json!({"tariff": id})).await;
    }
    // While the server holds the data directory, an import is refused with the reason.
    std::fs::write(dir.path().join("early.csv"), cdr_file(1)).unwrap();
    let (ok, _, err) = tollbook(&["import", "cdrs", dir.path().join("early.csv").to_str().unwrap()], &data);
    assert!(!ok && err.contains("is in use by another process"), "{err}");
    server.stop();

    // 300 good rows and two bad ones; the bad ones go to the rejects file with their lines.
    let mut file = cdr_file(300);
    file += "bad-1,C1,4940,4930,not-a-time,,2026-07-01T00:00:00Z\n";
    file += "bad-2,NOPE,4940,4930,2026-07-01T00:00:00Z,,2026-07-01T00:00:05Z\n";
    let path = dir.path().join("cdrs.csv");
    std::fs::write(&path, &file).unwrap();
    let path_text = path.to_str().unwrap();
    let (ok, out, err) = tollbook(&["import", "cdrs", path_text], &data);
    assert!(ok, "{out}{err}");
    assert!(out.contains("302 rows") && out.contains("300 charged, 0 already in, 2 rejected"), "{out}");
    let rejects = std::fs::read_to_string(dir.path().join("cdrs.csv.rejects.csv")).unwrap();
    // A row that could not be read still names its id (it used to be left empty).
    assert!(
        rejects.contains("302,bad-1,invalid_field,start,") && rejects.contains("303,bad-2,account_not_found,account,"),
        "{rejects}"
    );
    // A rerun finds everything in.
    let (ok, out, err) = tollbook(&["import", "cdrs", path_text], &data);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 charged, 300 already in, 2 rejected"), "{out}");

    // Payments the same way, keyed by their ids.
    let payments = dir.path().join("payments.csv");
    std::fs::write(
        &payments,
        "id,account,amount,occurred_at,method\npay-1,C1,50,2026-07-02,wire\npay-2,C1,25.5,2026-07-03,card\n",
    )
    .unwrap();
    let (ok, out, err) = tollbook(&["import", "payments", payments.to_str().unwrap()], &data);
    assert!(ok && out.contains("2 recorded, 0 already in, 0 rejected"), "{out}{err}");
    let (ok, out, _) = tollbook(&["import", "payments", payments.to_str().unwrap()], &data);
    assert!(ok && out.contains("0 recorded, 2 already in"), "{out}");

    // The imported file itself (no costs in it) reconciles by presence.
    let period = ["--from", "2026-07-01", "--to", "2026-08-01"];
    let (ok, out, _) = tollbook(&[&["reconcile", "cdrs", path_text][..], &period].concat(), &data);
    assert!(!ok, "the two rows the ledger refused are missing in it: {out}");
    assert!(out.contains("matched 300, missing in the ledger 1, missing in the file 0, cost differs 0"), "{out}");

    // The server sees what was imported; its export reconciles clean.
    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    let account = call(&server, Method::GET, "/api/v1/accounts/C1", Value::Null).await;
    let statement =
        call(&server, Method::GET, "/api/v1/accounts/C1/statement?from=2026-07-01&to=2026-08-01", Value::Null).await;
    // In the canonical form: at least the currency's two places.
    assert_eq!(statement["statement"]["payments"].to_string(), "75.50", "{statement}");
    let export = reqwest::Client::new()
        .get(server.url("/api/v1/accounts/C1/cdrs?format=csv&from=2026-07-01&to=2026-08-01"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(export.lines().count(), 301);
    let export_path = dir.path().join("export.csv");
    std::fs::write(&export_path, &export).unwrap();
    let reconcile_api = |body: String| {
        let request = reqwest::Client::new()
            .post(server.url("/api/v1/reconciliations?from=2026-07-01&to=2026-08-01"))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "text/csv")
            .body(body);
        send(request)
    };
    let (status, report) = reconcile_api(export.clone()).await;
    assert_eq!((status, &report["clean"]), (StatusCode::OK, &json!(true)), "{report}");
    assert_eq!(report["report"]["matched"], 300);
    assert_eq!(report["report"]["totals"]["file_cost"], report["report"]["totals"]["ledger_cost"]);
    let decimal = |v: &Value| v.to_string().parse::<rust_decimal::Decimal>().unwrap();
    let charged = decimal(&report["report"]["totals"]["ledger_cost"]);
    assert!(charged > rust_decimal::Decimal::ZERO);
    assert_eq!(decimal(&account["account"]["balance"]), decimal(&json!(75.5)) - charged, "{account}");

    // Alter the export: drop call-7, change call-8's cost, add call-x.
    let mut altered: Vec<String> = export.lines().map(str::to_owned).collect();
    let columns: Vec<&str> = altered[0].split(',').collect();
    let cost_column = columns.iter().position(|c| *c == "cost").unwrap();
    altered.retain(|line| !line.starts_with("call-7,"));
    for line in altered.iter_mut().filter(|line| line.starts_with("call-8,")) {
        let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
        fields[cost_column] = "99".into();
        *line = fields.join(",");
    }
    altered.push("call-x,C1,4940,4930,2026-07-09T00:00:00Z,,2026-07-09T00:00:09Z".into());
    let altered = altered.join("\n") + "\n";
    let (status, report) = reconcile_api(altered.clone()).await;
    assert_eq!((status, &report["clean"]), (StatusCode::OK, &json!(false)));
    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().or(c["ledger"]["id"].as_str()).unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&report["report"]["missing_in_file"]), ["call-7"]);
    assert_eq!(ids(&report["report"]["missing_in_ledger"]), ["call-x"]);
    assert_eq!(ids(&report["report"]["cost_differs"]), ["call-8"]);
    assert_eq!(report["report"]["cost_differs"][0]["file"]["cost"], 99);
    assert_eq!(report["report"]["matched"], 298);
    server.stop();

    // The command line says the same, in each format.
    let altered_path = dir.path().join("altered.csv");
    std::fs::write(&altered_path, &altered).unwrap();
    let altered_text = altered_path.to_str().unwrap();
    let (ok, out, _) =
        tollbook(&[&["reconcile", "cdrs", altered_text, "--format", "csv"][..], &period].concat(), &data);
    assert!(!ok);
    let kinds: Vec<&str> = out.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(kinds, ["missing_in_ledger", "missing_in_file", "cost_differs"], "{out}");
    let (_, out, _) =
        tollbook(&[&["reconcile", "cdrs", altered_text, "--format", "json"][..], &period].concat(), &data);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["matched"], 298);
    let (ok, out, _) = tollbook(&[&["reconcile", "cdrs", export_path.to_str().unwrap()][..], &period].concat(), &data);
    assert!(ok && out.contains("no differences"), "{out}");
}
