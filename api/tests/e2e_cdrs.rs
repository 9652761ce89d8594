//! Tariffs, CDR ingestion in every body format, CDR reads and exports, the audit trail
//! and account lists, on the real binary.

mod common;

use common::{ADMIN_KEY, Api, Server, send};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

impl Api {
    async fn raw(&self, credential: &str, path: &str, content_type: &str, body: String) -> (StatusCode, Value) {
        self.post_raw(credential, path, content_type, body).await
    }
}

fn dec(value: &Value) -> Decimal {
    value.to_string().trim_matches('"').parse().unwrap_or_else(|_| panic!("not a decimal: {value}"))
}

fn cdr(id: &str, account: &str, callee: &str, talk_seconds: Option<i64>) -> Value {
    let start = chrono::DateTime::parse_from_rfc3339("2026-05-04T10:00:00Z").unwrap();
    let answer = start + chrono::Duration::seconds(2);
    let end = answer + chrono::Duration::seconds(talk_seconds.unwrap_or(0));
    let mut cdr = json!({
        "id": id, "account": account, "caller": "4940111", "callee": callee,
        "start": start.to_rfc3339(), "end": end.to_rfc3339(),
    });
    if talk_seconds.is_some() {
        cdr["answer"] = json!(answer.to_rfc3339());
    }
    cdr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tariffs_rate_cdrs_in_every_format_and_the_ledger_shows_them() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    for (number, kind, partner) in [
        ("P1", "partner", None),
        ("C1", "customer", Some("P1")),
        ("P2", "partner", None),
        ("C2", "customer", Some("P2")),
    ] {
        let body = json!({"number": number, "name": number, "kind": kind, "partner": partner, "currency": "EUR"});
        api.ok(ADMIN_KEY, Method::POST, "/api/v1/accounts", Some(body)).await;
    }
    let p1 = api.token("p1", "partner", "P1").await;
    let p2 = api.token("p2", "partner", "P2").await;
    let c1 = api.token("c1", "customer", "C1").await;

    // The operator's wholesale tariff for P1, as JSON; P1's retail tariff for C1, as a
    // form carrying the rates as CSV.
    let wholesale = api
        .ok(
            ADMIN_KEY,
            Method::POST,
            "/api/v1/tariffs",
            Some(json!({
                "name": "Wholesale P1", "currency": "EUR", "effective_from": "2026-01-01",
                "rates": [
                    {"prefix": "49", "price_per_minute": "0.04"},
                    {"prefix": "4930", "price_per_minute": "0.02", "connect_fee": "0.01"}
                ]
            })),
        )
        .await;
    let wholesale_id = wholesale["links"]["tariff"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let form = [
        ("name", "Retail"),
        ("currency", "EUR"),
        ("effective_from", "2026-01-01"),
        ("rounding_decimals", "2"),
        ("rounding_mode", "half_up"),
        (
            "rates",
            "prefix,price_per_minute,first_increment_seconds,next_increment_seconds,minimum_seconds\n\
             49,0.10,30,6,0\n4930,0.08,1,1,10\n",
        ),
    ];
    let (status, retail) = send(api.client.post(api.server.url("/api/v1/tariffs")).bearer_auth(&p1).form(&form)).await;
    assert_eq!(status, StatusCode::CREATED, "{retail}");
    let retail_id = retail["links"]["tariff"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let (status, body) =
        api.call(&p1, Method::POST, "/api/v1/accounts/P1/tariff", Some(json!({"tariff": wholesale_id}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a partner does not pick its own wholesale price: {body}");
    api.ok(ADMIN_KEY, Method::POST, "/api/v1/accounts/P1/tariff", Some(json!({"tariff": wholesale_id}))).await;
    api.ok(&p1, Method::POST, "/api/v1/accounts/C1/tariff", Some(json!({"tariff": retail_id}))).await;
    let (status, body) =
        api.call(&p2, Method::POST, "/api/v1/accounts/C2/tariff", Some(json!({"tariff": retail_id}))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("tariff_not_found")), "{body}");

    // Tariffs are visible to their owners and to the accounts they price only.
    let listed = |body: &Value| -> Vec<String> {
        body["tariffs"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
    };
    let all = api.ok(ADMIN_KEY, Method::GET, "/api/v1/tariffs", None).await;
    assert_eq!(listed(&all).len(), 2);
    let for_p1 = api.ok(&p1, Method::GET, "/api/v1/tariffs", None).await;
    assert_eq!(listed(&for_p1).len(), 2, "its own retail list and its wholesale tariff: {for_p1}");
    let for_p2 = api.ok(&p2, Method::GET, "/api/v1/tariffs", None).await;
    assert!(listed(&for_p2).is_empty(), "{for_p2}");
    let for_c1 = api.ok(&c1, Method::GET, "/api/v1/tariffs", None).await;
    assert_eq!(listed(&for_c1), vec![retail_id.clone()]);
    let (status, _) = api.call(&p2, Method::GET, &format!("/api/v1/tariffs/{retail_id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let shown = api.ok(&c1, Method::GET, &format!("/api/v1/tariffs/{retail_id}"), None).await;
    assert_eq!(shown["tariff"]["versions"][0]["rates"][1]["minimum_seconds"], 10, "{shown}");
    assert_eq!(shown["tariff"]["owner"], "P1");

    // A batch: charged with both costs, zero-cost, rejected rows that reject only themselves.
    let mut bad_start = cdr("bad-1", "C1", "4930", Some(5));
    bad_start["start"] = json!("yesterday");
    let batch = json!([
        cdr("a-1", "C1", "4930123", Some(65)),
        cdr("a-2", "C1", "4989123", Some(65)),
        {"id": "a-3", "account": "C1", "callee": "4989", "start": "2026-05-04T11:00:00Z",
         "end": "2026-05-04T11:00:20Z", "hangup_cause": "sip:486"},
        bad_start,
        cdr("a-4", "C2", "4930", Some(5)),
        cdr("a-5", "C1", "3312345", Some(5)),
        cdr("a-1", "C1", "4930123", Some(65)),
    ]);
    let (status, answer) = api.call(&p1, Method::POST, "/api/v1/cdrs", Some(batch.clone())).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let summary = (&answer["summary"]["charged"], &answer["summary"]["duplicate"], &answer["summary"]["rejected"]);
    assert_eq!(summary, (&json!(3), &json!(1), &json!(3)), "{answer}");
    // 65 s to 4930: retail 1/1 at 0.08 = 0.0866… → 0.09; wholesale 60/60 + 0.01 fee = 0.05.
    assert_eq!(
        (dec(&results[0]["customer_cost"]), dec(&results[0]["partner_cost"])),
        (dec(&json!("0.09")), dec(&json!("0.05")))
    );
    // 65 s to 49: retail 30/6 bills 66 s at 0.10 = 0.11; wholesale 120 s at 0.04 = 0.08.
    assert_eq!(
        (dec(&results[1]["customer_cost"]), dec(&results[1]["partner_cost"])),
        (dec(&json!("0.11")), dec(&json!("0.08")))
    );
    assert_eq!((results[2]["result"].as_str(), dec(&results[2]["customer_cost"])), (Some("charged"), Decimal::ZERO));
    assert_eq!(
        (results[3]["error"]["error"].as_str(), results[3]["error"]["field"].as_str()),
        (Some("invalid_field"), Some("start"))
    );
    assert_eq!(
        (results[4]["error"]["error"].as_str(), results[4]["error"]["field"].as_str()),
        (Some("account_not_found"), Some("account"))
    );
    assert_eq!(results[5]["error"]["error"], "no_matching_rate");
    assert_eq!((results[6]["result"].as_str(), &results[6]["position"]), (Some("duplicate"), &results[0]["position"]));

    // The same batch again charges nothing new.
    let (_, again) = api.call(&p1, Method::POST, "/api/v1/cdrs", Some(batch)).await;
    assert_eq!((&again["summary"]["charged"], &again["summary"]["duplicate"]), (&json!(0), &json!(4)), "{again}");

    // CSV, a multipart file, a form and one JSON object.
    let csv = "id,account,callee,start,answer,end,hangup_cause\n\
               b-1,C1,4930555,2026-05-05T09:00:00Z,2026-05-05T09:00:01Z,2026-05-05T09:00:31Z,16\n\
               b-2,C1,4930555,2026-05-05T09:10:00Z,,2026-05-05T09:10:09Z,NO_ANSWER\n";
    let (status, answer) = api.raw(&p1, "/api/v1/cdrs", "text/csv", csv.to_owned()).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(2)), "{answer}");
    assert_eq!(answer["results"][1]["line"], 3);
    let file = reqwest::multipart::Part::text(csv.replace("b-", "m-")).file_name("cdrs.csv");
    let (status, answer) = send(
        api.client
            .post(api.server.url("/api/v1/cdrs"))
            .bearer_auth(&p1)
            .multipart(reqwest::multipart::Form::new().part("file", file)),
    )
    .await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(2)), "{answer}");
    let one = [
        ("id", "f-1"),
        ("account", "C1"),
        ("callee", "4930"),
        ("start", "2026-05-06T00:00:00Z"),
        ("answer", "2026-05-06T00:00:00Z"),
        ("end", "2026-05-06T00:00:12Z"),
    ];
    let (status, answer) = send(api.client.post(api.server.url("/api/v1/cdrs")).bearer_auth(&p1).form(&one)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = send(api.client.post(api.server.url("/api/v1/cdrs")).bearer_auth(&p1).form(&one)).await;
    assert_eq!((status, answer["results"][0]["result"].as_str()), (StatusCode::OK, Some("duplicate")), "{answer}");
    let (status, answer) = api.call(&p1, Method::POST, "/api/v1/cdrs", Some(cdr("j-1", "C1", "4989", Some(1)))).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = api.call(&p1, Method::POST, "/api/v1/cdrs", Some(cdr("j-2", "C1", "33", Some(1)))).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("no_matching_rate")),
        "{answer}"
    );
    // One CDR with an Idempotency-Key: the same CDR again is a repeat, another is a conflict.
    let keyed = |body: Value| {
        api.client.post(api.server.url("/api/v1/cdrs")).bearer_auth(&p1).header("idempotency-key", "k-1").json(&body)
    };
    let (status, answer) = send(keyed(cdr("k-1", "C1", "4989", Some(3)))).await;
    assert_eq!(status, StatusCode::CREATED);
    // The last write the list below must reflect (reads are at the position they wait for).
    let last_position = answer["position"].as_u64().unwrap();
    let (status, answer) = send(keyed(cdr("k-1", "C1", "4989", Some(3)))).await;
    assert_eq!((status, answer["results"][0]["result"].as_str()), (StatusCode::OK, Some("duplicate")), "{answer}");
    let (status, answer) = send(keyed(cdr("k-1", "C1", "4989", Some(4)))).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")), "{answer}");
    let (status, answer) = api.call(&c1, Method::POST, "/api/v1/cdrs", Some(cdr("j-3", "C1", "49", Some(1)))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "customers do not post their own calls: {answer}");

    // The CDR list: filters, pages, and the costs adding up to the statement's call charges.
    let list = |query: &str| format!("/api/v1/accounts/C1/cdrs?min_position={last_position}&{query}");
    let all = api.ok(&p1, Method::GET, &list("limit=1000"), None).await;
    let cdrs = all["cdrs"].as_array().unwrap();
    assert_eq!(cdrs.len(), 10, "{all}");
    let unanswered = api.ok(&p1, Method::GET, &list("answered=false"), None).await;
    assert_eq!(unanswered["cdrs"].as_array().unwrap().len(), 3);
    let busy = api.ok(&p1, Method::GET, &list("hangup_cause=sip:486"), None).await;
    assert_eq!(busy["cdrs"][0]["id"], "a-3");
    assert_eq!(busy["cdrs"][0]["hangup_cause_name"], "user_busy");
    let berlin = api.ok(&p1, Method::GET, &list("destination=4930"), None).await;
    assert_eq!(berlin["cdrs"].as_array().unwrap().len(), 6);
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api.ok(&p1, Method::GET, &list(&format!("limit=2{cursor}")), None).await;
        paged.extend(page["cdrs"].as_array().unwrap().iter().map(|c| c["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, cdrs.iter().map(|c| c["id"].clone()).collect::<Vec<_>>());
    let retail_sum: Decimal = cdrs.iter().map(|c| dec(&c["customer_cost"])).sum();
    let wholesale_sum: Decimal = cdrs.iter().map(|c| dec(&c["partner_cost"])).sum();
    let period = "from=2026-05-01&to=2026-06-01";
    let statement = api.ok(&p1, Method::GET, &format!("/api/v1/accounts/C1/statement?{period}"), None).await;
    assert_eq!(dec(&statement["statement"]["call_charges"]), retail_sum);
    let partner_statement =
        api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/accounts/P1/statement?{period}"), None).await;
    assert_eq!(dec(&partner_statement["statement"]["call_charges"]), wholesale_sum);
    let partner_cdrs = api.ok(&p1, Method::GET, "/api/v1/accounts/P1/cdrs?limit=1000", None).await;
    assert_eq!(partner_cdrs["cdrs"].as_array().unwrap().len(), 10, "a partner's list holds the calls it paid for");

    // CSV export: the same CDRs, read back with the same costs.
    let response = api
        .client
        .get(api.server.url("/api/v1/accounts/C1/cdrs"))
        .bearer_auth(&p1)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let cost_column = headers.iter().position(|h| h == "cost").unwrap();
    let exported: Decimal = reader.records().map(|r| r.unwrap()[cost_column].parse::<Decimal>().unwrap()).sum();
    assert_eq!(exported, retail_sum);
    assert_eq!(text.lines().count(), 11, "{text}");

    // One CDR: the customer sees its cost but never its partner's; other tenants see nothing.
    let own = api.ok(&c1, Method::GET, "/api/v1/accounts/C1/cdrs/a-1", None).await;
    assert_eq!(dec(&own["cdr"]["customer_cost"]), dec(&json!("0.09")));
    assert!(own["cdr"].get("partner_cost").is_none(), "{own}");
    assert_eq!(own["cdr"]["billed_seconds"], 65);
    assert_eq!(own["cdr"]["matched_prefix"], "4930");
    let listed_by_customer = api.ok(&c1, Method::GET, "/api/v1/accounts/C1/cdrs", None).await;
    assert!(!listed_by_customer.to_string().contains("partner_cost"));
    let (status, _) = api.call(&p2, Method::GET, "/api/v1/accounts/C1/cdrs/a-1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(&p1, Method::GET, "/api/v1/accounts/C1/cdrs/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The audit trail and the lines behind the statement's call charges.
    let events = api.ok(&c1, Method::GET, "/api/v1/accounts/C1/events?limit=1000", None).await;
    let charged: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["type"] == "CallCharged").collect();
    assert_eq!(charged.len(), 10);
    assert!(charged.iter().all(|e| e["hash"].as_str().unwrap().len() == 64));
    let lines = api
        .ok(&c1, Method::GET, &format!("/api/v1/accounts/C1/statement/lines?{period}&category=call_charges"), None)
        .await;
    let lines_sum: Decimal = lines["lines"].as_array().unwrap().iter().map(|l| dec(&l["amount"])).sum();
    assert_eq!(lines_sum, retail_sum, "{lines}");

    // A new tariff version takes effect from a future time only.
    let version = json!({"name": "Retail", "currency": "EUR", "effective_from": "2026-02-01", "rates": [{"prefix": "49", "price_per_minute": "1"}]});
    let path = format!("/api/v1/tariffs/{retail_id}/versions");
    let (status, body) = api.call(&p1, Method::POST, &path, Some(version.clone())).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("tariff_version_not_later")),
        "{body}"
    );
    let mut future = version;
    future["effective_from"] = json!("2099-01-01");
    let (status, body) = api.call(&p1, Method::POST, &path, Some(future.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) =
        api.call(ADMIN_KEY, Method::POST, &format!("/api/v1/tariffs/{wholesale_id}/versions"), Some(future)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .call(
            &p1,
            Method::POST,
            &format!("/api/v1/tariffs/{wholesale_id}/versions"),
            Some(json!({"name": "x", "currency": "EUR", "rates": []})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a partner cannot change the operator's tariff");

    // Account lists, by scope and filters.
    let numbers = |body: &Value| -> Vec<String> {
        body["accounts"].as_array().unwrap().iter().map(|a| a["number"].as_str().unwrap().to_owned()).collect()
    };
    let of_p1 = api.ok(ADMIN_KEY, Method::GET, "/api/v1/accounts?partner=P1", None).await;
    assert_eq!(numbers(&of_p1), ["P1", "C1"]);
    let customers = api.ok(ADMIN_KEY, Method::GET, "/api/v1/accounts?kind=customer&limit=1", None).await;
    assert_eq!(numbers(&customers), ["C1"]);
    let next = customers["next_cursor"].as_str().unwrap();
    let rest = api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/accounts?kind=customer&cursor={next}"), None).await;
    assert_eq!(numbers(&rest), ["C2"]);
    let seen_by_p2 = api.ok(&p2, Method::GET, "/api/v1/accounts", None).await;
    assert_eq!(numbers(&seen_by_p2), ["P2", "C2"]);
    let seen_by_c1 = api.ok(&c1, Method::GET, "/api/v1/accounts?status=active", None).await;
    assert_eq!(numbers(&seen_by_c1), ["C1"]);
    let (status, body) = api.call(&p2, Method::GET, "/api/v1/accounts?partner=P1", None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::NOT_FOUND, Some("partner")));
    let (status, body) = api.call(ADMIN_KEY, Method::GET, "/api/v1/accounts?status=gone", None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("status")), "{body}");
}
