//! CDRs as switches write them: every hang-up cause, a CDR by the switch's id alone, on
//! the real binary.

mod common;

use common::{ADMIN_KEY, Api, Server, send};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

impl Api {
    async fn start(data: &std::path::Path) -> Api {
        let server = Server::start(data, &["--admin-key", ADMIN_KEY]).await;
        Api::new(server)
    }
}

fn dec(value: &Value) -> Decimal {
    value.to_string().trim_matches('"').parse().unwrap_or_else(|_| panic!("not a decimal: {value}"))
}

/// An answered call of 65 billable seconds to Berlin.
fn answered(id: &str, account: &str, cause: Option<&str>) -> Value {
    let mut cdr = json!({
        "id": id, "account": account, "caller": "4940111", "callee": "4930123456",
        "start": "2026-05-04T10:00:00Z", "answer": "2026-05-04T10:00:02Z", "end": "2026-05-04T10:01:07Z",
        "billable_seconds": 65,
    });
    if let Some(cause) = cause {
        cdr["hangup_cause"] = json!(cause);
    }
    cdr
}

/// Regression: a CDR whose cause was a FreeSWITCH name (`ORIGINATOR_CANCEL`, ...), the
/// cause 0 or anything unknown was rejected, so an answered call went unbilled, and the
/// rejected row showed `"id":null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_is_billed_whatever_its_hangup_cause() {
    let data = tempfile::tempdir().unwrap();
    let api = Api::start(data.path()).await;
    api.open_account("C1", "customer", None).await;
    let tariff = api
        .ok(
            ADMIN_KEY,
            Method::POST,
            "/api/v1/tariffs",
            Some(json!({"name": "Retail", "currency": "EUR", "effective_from": "2026-01-01",
                        "rates": [{"prefix": "49", "price_per_minute": "0.10"}]})),
        )
        .await;
    let tariff_id = tariff["links"]["tariff"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    api.ok(ADMIN_KEY, Method::POST, "/api/v1/accounts/C1/tariff", Some(json!({"tariff": tariff_id}))).await;

    // (id, cause sent, Q.850 code, raw kept, flag)
    type Case = (&'static str, Option<&'static str>, u64, Option<&'static str>, Option<&'static str>);
    let cases: [Case; 10] = [
        ("fs-cancel", Some("ORIGINATOR_CANCEL"), 16, Some("ORIGINATOR_CANCEL"), None),
        ("fs-tempfail", Some("NORMAL_TEMPORARY_FAILURE"), 41, Some("NORMAL_TEMPORARY_FAILURE"), None),
        ("fs-timer", Some("RECOVERY_ON_TIMER_EXPIRE"), 102, Some("RECOVERY_ON_TIMER_EXPIRE"), None),
        ("fs-circuit", Some("NORMAL_CIRCUIT_CONGESTION"), 34, Some("NORMAL_CIRCUIT_CONGESTION"), None),
        ("fs-switch", Some("SWITCH_CONGESTION"), 42, Some("SWITCH_CONGESTION"), None),
        ("fs-media", Some("MEDIA_TIMEOUT"), 16, Some("MEDIA_TIMEOUT"), None),
        ("fs-allotted", Some("ALLOTTED_TIMEOUT"), 16, Some("ALLOTTED_TIMEOUT"), None),
        ("q850-zero", Some("0"), 0, None, None),
        ("unknown", Some("SOMETHING_NEW_9"), 0, Some("SOMETHING_NEW_9"), Some("unrecognised")),
        ("missing", None, 16, None, Some("missing")),
    ];
    let mut batch: Vec<Value> = cases.iter().map(|(id, cause, ..)| answered(id, "C1", *cause)).collect();
    let mut broken = answered("broken-1", "C1", Some("NORMAL_CLEARING"));
    broken["start"] = json!("yesterday");
    batch.push(broken);
    let (status, answer) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdrs", Some(json!(batch))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["summary"]["charged"], json!(cases.len()), "{answer}");
    let results = answer["results"].as_array().unwrap();
    for (result, (id, ..)) in results.iter().zip(&cases) {
        assert_eq!(result["result"], "charged", "{id}: {result}");
        // 65 s in 60/60 increments at 0.10 a minute.
        assert_eq!(dec(&result["customer_cost"]), dec(&json!("0.20")), "{id}: {result}");
    }
    let rejected = &results[cases.len()];
    assert_eq!(rejected["result"], "rejected");
    assert_eq!(rejected["id"], "broken-1", "a rejected row names its id: {rejected}");
    assert_eq!(rejected["error"]["field"], "start");

    // The CDR keeps the cause as the switch wrote it, and says what was odd about it.
    let position = answer["position"].as_u64().unwrap();
    for (id, _, code, raw, flag) in &cases {
        let shown = api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/cdrs/{id}?min_position={position}"), None).await;
        let cdr = &shown["cdr"];
        assert_eq!(cdr["hangup_cause"], json!(code), "{id}: {cdr}");
        assert_eq!(cdr["hangup_cause_raw"].as_str(), *raw, "{id}: {cdr}");
        assert_eq!(cdr["hangup_cause_flag"].as_str(), *flag, "{id}: {cdr}");
        assert_eq!(cdr["answered"], true, "{id}");
        assert_eq!(dec(&cdr["customer_cost"]), dec(&json!("0.20")), "{id}");
    }
    let unspecified =
        api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/cdrs/q850-zero?min_position={position}"), None).await;
    assert_eq!(unspecified["cdr"]["hangup_cause_name"], "unspecified");

    // One CDR alone, with a cause no table knows: charged (201), in CSV too.
    let (status, one) =
        api.call(ADMIN_KEY, Method::POST, "/api/v1/cdrs", Some(answered("one-1", "C1", Some("sip:999")))).await;
    assert_eq!((status, dec(&one["results"][0]["customer_cost"])), (StatusCode::CREATED, dec(&json!("0.20"))), "{one}");
    let csv = "id,account,callee,start,answer,end,billable_seconds,hangup_cause\n\
               csv-1,C1,4930555,2026-05-05T09:00:00Z,2026-05-05T09:00:01Z,2026-05-05T09:01:06Z,65,ORIGINATOR_CANCEL\n\
               csv-2,C1,4930555,2026-05-05T09:10:00Z,2026-05-05T09:10:01Z,2026-05-05T09:11:06Z,65,0\n\
               csv-bad,C1,4930555,later,,2026-05-05T09:10:09Z,,16\n";
    let request =
        api.client.post(api.server.url("/api/v1/cdrs")).bearer_auth(ADMIN_KEY).header("content-type", "text/csv");
    let (status, answer) = send(request.body(csv)).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(2)), "{answer}");
    assert_eq!(answer["results"][2]["id"], "csv-bad", "{answer}");

    // The filter reads a FreeSWITCH name too.
    let listed = api
        .ok(
            ADMIN_KEY,
            Method::GET,
            &format!("/api/v1/accounts/C1/cdrs?hangup_cause=NORMAL_TEMPORARY_FAILURE&min_position={position}"),
            None,
        )
        .await;
    let ids: Vec<&str> = listed["cdrs"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fs-tempfail"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hangup_cause_table_is_listed() {
    let data = tempfile::tempdir().unwrap();
    let api = Api::start(data.path()).await;
    let (status, _) = send(api.client.get(api.server.url("/api/v1/hangup-causes"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let table = api.ok(ADMIN_KEY, Method::GET, "/api/v1/hangup-causes", None).await;
    let q850 = table["q850"].as_array().unwrap();
    assert_eq!(q850.len(), 128);
    assert_eq!((&q850[0]["code"], &q850[0]["name"]), (&json!(0), &json!("unspecified")));
    assert_eq!((&q850[127]["code"], &q850[127]["name"]), (&json!(127), &json!("interworking")));
    assert_eq!(q850[34]["freeswitch"], "NORMAL_CIRCUIT_CONGESTION");
    let freeswitch = table["freeswitch"].as_array().unwrap();
    for name in ["ORIGINATOR_CANCEL", "MEDIA_TIMEOUT", "ALLOTTED_TIMEOUT", "REJECT_ALL"] {
        assert!(freeswitch.iter().any(|c| c["name"] == name), "{name}");
    }
    let dispositions: Vec<&str> =
        table["asterisk"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(dispositions, ["ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION"]);
    let busy = table["sip"].as_array().unwrap().iter().find(|m| m["status"] == 486).unwrap();
    assert_eq!(busy["q850"], 17);
}

/// `GET /api/v1/cdrs/{id}`: the operator sees every book's CDR, a partner its book's, a
/// customer its own; another tenant's CDR is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdr_by_the_switch_id_alone_is_scoped_to_the_caller() {
    let data = tempfile::tempdir().unwrap();
    let api = Api::start(data.path()).await;
    api.open_account("P1", "partner", None).await;
    api.open_account("C1", "customer", Some("P1")).await;
    api.open_account("C1B", "customer", Some("P1")).await;
    api.open_account("P2", "partner", None).await;
    api.open_account("C2", "customer", Some("P2")).await;
    let p1 = api.token("p1", "partner", "P1").await;
    let p2 = api.token("p2", "partner", "P2").await;
    let c1 = api.token("c1", "customer", "C1").await;
    let c1b = api.token("c1b", "customer", "C1B").await;

    let rated = |id: &str, account: &str| {
        let mut cdr = answered(id, account, Some("16"));
        cdr["cost"] = json!("0.50");
        cdr["partner_cost"] = json!("0.20");
        cdr
    };
    let batch = json!([rated("x-1", "C1"), rated("y-1", "C2"), rated("same", "C1"), rated("same", "C2")]);
    let posted = api.ok(ADMIN_KEY, Method::POST, "/api/v1/cdrs", Some(batch)).await;
    assert_eq!(posted["summary"]["charged"], 4, "{posted}");
    let position = posted["position"].as_u64().unwrap();
    let get = |credential: String, id: &'static str| {
        let api = &api;
        async move { api.call(&credential, Method::GET, &format!("/api/v1/cdrs/{id}?min_position={position}"), None).await }
    };

    // Read your writes: the first read after the post waits for it.
    let (status, shown) = get(ADMIN_KEY.to_owned(), "x-1").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["cdr"]["account"], "C1");
    assert_eq!(shown["links"]["account"], "/api/v1/accounts/C1");
    assert_eq!(dec(&shown["cdr"]["partner_cost"]), dec(&json!("0.20")));
    assert_eq!(get(ADMIN_KEY.to_owned(), "y-1").await.0, StatusCode::OK);

    let (status, shown) = get(p1.clone(), "x-1").await;
    assert_eq!((status, &shown["cdr"]["id"]), (StatusCode::OK, &json!("x-1")), "{shown}");
    let (status, error) = get(p1.clone(), "y-1").await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::NOT_FOUND, Some("cdr_not_found")), "{error}");
    assert_eq!(get(p2.clone(), "x-1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(p2.clone(), "y-1").await.0, StatusCode::OK);

    // A customer sees its own call, without its partner's wholesale cost; not its sibling's.
    let (status, shown) = get(c1.clone(), "x-1").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert!(shown["cdr"].get("partner_cost").is_none(), "{shown}");
    assert_eq!(get(c1b.clone(), "x-1").await.0, StatusCode::NOT_FOUND);

    // Ids are unique per book: the operator who holds one in two books is told which.
    let (status, error) = get(ADMIN_KEY.to_owned(), "same").await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::CONFLICT, Some("cdr_id_ambiguous")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("`C1`"), "{error}");
    let (status, shown) = get(p1.clone(), "same").await;
    assert_eq!((status, &shown["cdr"]["account"]), (StatusCode::OK, &json!("C1")), "{shown}");

    let (status, error) = get(ADMIN_KEY.to_owned(), "never-posted").await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::NOT_FOUND, Some("id")), "{error}");
}
