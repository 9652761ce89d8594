//! Column mappings over the real server on loopback: saved per operator or partner,
//! refused with the field when they cannot read a file, used by `POST
//! /api/v1/cdrs/mapped` and by `tollbook import cdrs --mapping`, and the ready-made
//! Asterisk `cdr_custom` one.

mod common;

use common::{ADMIN_KEY, Api, Server, send, tollbook};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

impl Api {
    async fn csv(&self, credential: &str, path: &str, body: &str) -> (StatusCode, Value) {
        self.post_raw(credential, path, "text/csv", body.to_owned()).await
    }
}

fn dec(value: &Value) -> Decimal {
    value.to_string().trim_matches('"').parse().unwrap_or_else(|_| panic!("not a decimal: {value}"))
}

/// C1 (account code 1001, trunk carrier1) and C3 (calling number 4940333) are the
/// operator's; P1 is a partner with C2 (account code 2002); P2 another partner. One tariff,
/// 0.10 a minute in 60/60 to 49, for every customer and for P1 (the wholesale price of C2's calls).
async fn ledger(api: &Api) {
    for (number, kind, partner) in [
        ("C1", "customer", None),
        ("C3", "customer", None),
        ("P1", "partner", None),
        ("P2", "partner", None),
        ("C2", "customer", Some("P1")),
    ] {
        api.open_account(number, kind, partner).await;
    }
    api.retail_tariff(&["C1", "C3", "P1", "C2"]).await;
    for (account, identifiers) in [
        ("C1", json!({"account_codes": ["1001"], "trunks": ["carrier1"]})),
        ("C3", json!({"caller_ids": ["4940333"]})),
        ("C2", json!({"account_codes": ["2002"]})),
    ] {
        let path = format!("/api/v1/accounts/{account}/switch-identifiers");
        api.ok(ADMIN_KEY, Method::POST, &path, Some(identifiers)).await;
    }
}

/// A switch tollbook has no format for: `;` between columns, a header row in its own
/// order, day-first local times at UTC+01:00, extra columns tollbook does not read.
const CARRIER_MAPPING: &str = r#"{"name": "carrier-x", "delimiter": ";", "time_format": "%d/%m/%Y %H:%M:%S",
    "time_zone": "+01:00", "id": "call_id", "account_code": "acct", "caller": "from", "callee": "to",
    "start": "setup", "answer": "connect", "end": "release", "billable_seconds": "billsec", "hangup_cause": "cause"}"#;

const CARRIER_CSV: &str = "call_id;setup;connect;release;from;to;acct;billsec;cause;codec\n\
    cx-1;04/05/2026 11:00:00;04/05/2026 11:00:02;04/05/2026 11:01:07;4940111;4930123456;1001;65;16;PCMA\n\
    cx-2;04/05/2026 11:02:00;04/05/2026 11:02:01;04/05/2026 11:03:06;4940333;4930123456;;65;NORMAL_CLEARING;PCMA\n\
    cx-3;2026-05-04 11:04:00;;04/05/2026 11:04:30;4940111;4930123456;1001;0;17;PCMA\n\
    cx-4;04/05/2026 11:05:00;;04/05/2026 11:05:30;4940999;4930123456;9999;0;19;PCMA\n";

/// Asterisk `cdr_custom` with the `Master.csv` mapping of the shipped sample
/// (configs/samples/cdr_custom.conf.sample: `${CSV_QUOTE(${CDR(clid)})},
/// ${CSV_QUOTE(${CDR(src)})},${CSV_QUOTE(${CDR(dst)})},...,${CSV_QUOTE(${CDR(uniqueid)})},
/// ${CSV_QUOTE(${CDR(userfield)})},${CDR(sequence)}`), times in the switch's local time,
/// here UTC+02:00.
const CDR_CUSTOM: &str = concat!(
    r#""""Alice"" <4940111>","4940111","4930123456","default","SIP/carrier1-0000002a","SIP/out-0000002b","Dial","SIP/out/4930123456,30","2026-05-04 12:10:00","2026-05-04 12:10:02","2026-05-04 12:11:07","67","65","ANSWERED","DOCUMENTATION","","1777889400.51","",51"#,
    "\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_mapping_reads_any_switch_csv_within_its_book() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    ledger(&api).await;
    let p1 = api.token("p1", "partner", "P1").await;
    let p2 = api.token("p2", "partner", "P2").await;
    let c1 = api.token("c1", "customer", "C1").await;

    // A mapping that cannot read a file is refused, naming the field; nothing is kept.
    let carrier: Value = serde_json::from_str(CARRIER_MAPPING).unwrap();
    let refused = |change: &dyn Fn(&mut Value)| {
        let mut body = carrier.clone();
        change(&mut body);
        body
    };
    for (body, field, says) in [
        (refused(&|b| drop(b.as_object_mut().unwrap().remove("start"))), "start", "is required"),
        (refused(&|b| b["caller"] = json!("acct")), "caller", "column `acct` is already the `account_code` column"),
        (refused(&|b| b["time_format"] = json!("%d/%m/%Y")), "time_format", "does not give a whole date and time"),
        (refused(&|b| b["time_format"] = json!("dd/mm/yyyy")), "time_format", "strftime"),
        (refused(&|b| b["time_zone"] = json!("CET")), "time_zone", "CET"),
        (refused(&|b| b["id"] = json!(0)), "id", "counted from 1"),
    ] {
        let (status, error) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdr-mappings", Some(body)).await;
        assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{error}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    let listed = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdr-mappings", None).await;
    assert_eq!(listed["mappings"].as_array().unwrap().len(), 1, "only the ready-made one: {listed}");

    let saved = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdr-mappings", Some(carrier.clone())).await;
    assert_eq!(saved.0, StatusCode::CREATED, "{}", saved.1);
    assert_eq!(saved.1["mapping"]["owner"], "operator");
    assert_eq!(saved.1["mapping"]["columns"]["start"], "setup");
    let (status, error) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdr-mappings", Some(carrier.clone())).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::CONFLICT, Some("cdr_mapping_exists")));
    let builtin_name = json!({"name": "asterisk-cdr-custom", "id": 1, "caller": 2, "callee": 3, "start": 4, "end": 5});
    let (status, _) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdr-mappings", Some(builtin_name)).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The upload: each row tied by its account code or calling number; a row that does not
    // read or that no account holds is rejected alone, with its line, id and value.
    let (status, answer) = api.csv(ADMIN_KEY, "/api/v1/cdrs/mapped?mapping=carrier-x", CARRIER_CSV).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((&answer["summary"]["charged"], &answer["summary"]["rejected"]), (&json!(2), &json!(2)), "{answer}");
    assert_eq!(dec(&answer["results"][0]["customer_cost"]), dec(&json!("0.20")));
    let unreadable = &answer["results"][2];
    assert_eq!((unreadable["line"].as_u64(), unreadable["id"].as_str()), (Some(4), Some("cx-3")), "{unreadable}");
    assert_eq!(unreadable["error"]["field"], "start");
    let message = unreadable["error"]["message"].as_str().unwrap();
    assert!(message.contains("`2026-05-04 11:04:00` is not %d/%m/%Y %H:%M:%S"), "{message}");
    let stranger = &answer["results"][3];
    assert_eq!(
        (stranger["line"].as_u64(), stranger["error"]["error"].as_str()),
        (Some(5), Some("account_not_identified"))
    );
    let position = answer["position"].as_u64().unwrap();
    let first = api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/cdrs/cx-1?min_position={position}"), None).await;
    assert_eq!(
        (first["cdr"]["account"].as_str(), first["cdr"]["start"].as_str()),
        (Some("C1"), Some("2026-05-04T10:00:00Z"))
    );
    let second = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdrs/cx-2", None).await;
    assert_eq!(second["cdr"]["account"], "C3");
    // The same file again: every charged row a duplicate.
    let (_, again) = api.csv(ADMIN_KEY, "/api/v1/cdrs/mapped?mapping=carrier-x", CARRIER_CSV).await;
    assert_eq!(again["summary"]["duplicate"], json!(2), "{again}");
    // A header without a column the mapping names refuses the file whole.
    let (status, error) = api.csv(ADMIN_KEY, "/api/v1/cdrs/mapped?mapping=carrier-x", "call_id;setup\nx;y\n").await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("header")), "{error}");

    // A partner's mapping, saved by the operator as a form: P1 reads and uses it, P2 and
    // the operator's other callers do not see it; P1 does not see the operator's.
    let form = [
        ("name", "p1-switch"),
        ("partner", "P1"),
        ("header", "false"),
        ("time_format", "epoch"),
        ("id", "1"),
        ("account_code", "2"),
        ("callee", "3"),
        ("start", "4"),
        ("duration", "5"),
        ("billable_seconds", "6"),
    ];
    let (status, saved) =
        send(api.client.post(api.server.url("/api/v1/cdr-mappings")).bearer_auth(ADMIN_KEY).form(&form)).await;
    assert_eq!((status, saved["mapping"]["owner"].as_str()), (StatusCode::CREATED, Some("P1")), "{saved}");
    let (status, _) = api.call(&p1, Method::POST, "/api/v1/cdr-mappings", Some(carrier.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the operator saves mappings, as it sets identifiers");
    let own = api.ok(&p1, Method::GET, "/api/v1/cdr-mappings", None).await;
    let names: Vec<&str> = own["mappings"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["p1-switch", "asterisk-cdr-custom"], "{own}");
    let (status, _) = api.call(&p1, Method::GET, "/api/v1/cdr-mappings/carrier-x", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(&p2, Method::GET, "/api/v1/cdr-mappings/p1-switch?partner=P1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another partner's mapping is not there");
    let (status, _) =
        api.csv(&p2, "/api/v1/cdrs/mapped?mapping=p1-switch", "p-1,2002,4930123456,1777888800,67,65\n").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(&c1, Method::GET, "/api/v1/cdr-mappings", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let all = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdr-mappings", None).await;
    assert_eq!(all["mappings"].as_array().unwrap().len(), 3, "{all}");
    let (status, answer) =
        api.csv(&p1, "/api/v1/cdrs/mapped?mapping=p1-switch", "p-1,2002,4930123456,1777888800,67,65\n").await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(1)), "{answer}");
    // Read your write: the read models answer once they hold the upload's position.
    let position = answer["position"].as_u64().expect("the upload's position");
    let charged = api.ok(&p1, Method::GET, &format!("/api/v1/cdrs/p-1?min_position={position}"), None).await;
    assert_eq!(
        (charged["cdr"]["account"].as_str(), charged["cdr"]["billable_seconds"].as_u64()),
        (Some("C2"), Some(65))
    );
    let shown = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdr-mappings/p1-switch?partner=P1", None).await;
    assert_eq!(shown["mapping"]["columns"]["id"], 1, "{shown}");

    // The ready-made cdr_custom mapping, with the switch's offset given on the upload.
    let (status, answer) =
        api.csv(ADMIN_KEY, "/api/v1/cdrs/mapped?mapping=asterisk-cdr-custom&utc_offset=%2B02:00", CDR_CUSTOM).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(1)), "{answer}");
    let position = answer["position"].as_u64().unwrap();
    let custom =
        api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/cdrs/1777889400.51?min_position={position}"), None).await;
    assert_eq!(
        (custom["cdr"]["account"].as_str(), custom["cdr"]["start"].as_str()),
        (Some("C1"), Some("2026-05-04T10:10:00Z")),
        "by its channel's peer"
    );

    // Deleted: gone for its book; the CDRs it read stay.
    let (status, _) = api.call(&p1, Method::DELETE, "/api/v1/cdr-mappings/p1-switch", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.call(ADMIN_KEY, Method::DELETE, "/api/v1/cdr-mappings/p1-switch?partner=P1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, error) =
        api.csv(&p1, "/api/v1/cdrs/mapped?mapping=p1-switch", "p-2,2002,4930123456,1777888800,67,65\n").await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::NOT_FOUND, Some("cdr_mapping_not_found")));
    api.ok(&p1, Method::GET, "/api/v1/cdrs/p-1", None).await;
    let (status, _) = api.call(ADMIN_KEY, Method::DELETE, "/api/v1/cdr-mappings/asterisk-cdr-custom", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Saved durably: after a restart the operator's mapping is still there.
    let Api { server, client } = api;
    server.stop();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client, server };
    api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdr-mappings/carrier-x", None).await;
}

/// `tollbook import cdrs --mapping`: the operator's saved mapping and the ready-made one,
/// rows that do not read in the rejects file with their lines, ids and values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_reads_a_file_through_a_saved_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    ledger(&api).await;
    let carrier: Value = serde_json::from_str(CARRIER_MAPPING).unwrap();
    api.ok(ADMIN_KEY, Method::POST, "/api/v1/cdr-mappings", Some(carrier)).await;
    api.server.stop();

    let path = dir.path().join("carrier.csv");
    std::fs::write(&path, CARRIER_CSV).unwrap();
    let file = path.to_str().unwrap();
    let (ok, out, err) = tollbook(&["import", "cdrs", file, "--mapping", "carrier-x"], &data);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 charged, 0 already in, 2 rejected"), "{out}");
    let rejects = std::fs::read_to_string(dir.path().join("carrier.csv.rejects.csv")).unwrap();
    assert!(rejects.contains("4,cx-3,invalid_field,start,"), "{rejects}");
    assert!(rejects.contains("`2026-05-04 11:04:00` is not %d/%m/%Y %H:%M:%S"), "{rejects}");
    assert!(rejects.contains("5,cx-4,account_not_identified,account,"), "{rejects}");
    let (ok, out, err) = tollbook(&["import", "cdrs", file, "--mapping", "carrier-x"], &data);
    assert!(ok && out.contains("0 charged, 2 already in"), "{out}{err}");

    let path = dir.path().join("cdr-custom.csv");
    std::fs::write(&path, CDR_CUSTOM).unwrap();
    let custom = path.to_str().unwrap();
    let (ok, out, err) =
        tollbook(&["import", "cdrs", custom, "--mapping", "asterisk-cdr-custom", "--utc-offset", "+02:00"], &data);
    assert!(ok && out.contains("1 charged"), "{out}{err}");

    let (ok, _, err) = tollbook(&["import", "cdrs", file, "--mapping", "nope"], &data);
    assert!(!ok && err.contains("no column mapping `nope`"), "{err}");
    let (ok, _, err) = tollbook(&["import", "cdrs", file, "--mapping", "carrier-x", "--partner", "C1"], &data);
    assert!(!ok && err.contains("`C1` is not a partner"), "{err}");
    let (ok, _, err) = tollbook(&["import", "cdrs", file, "--mapping", "carrier-x", "--format", "asterisk-csv"], &data);
    assert!(!ok && err.contains("cannot be used with"), "{err}");

    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    let cdr = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdrs/1777889400.51", None).await;
    assert_eq!(cdr["cdr"]["start"], "2026-05-04T10:10:00Z");
    let cdr = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdrs/cx-1", None).await;
    assert_eq!(cdr["cdr"]["account"], "C1");
}

/// A switch in Berlin writing its local time (tzdata Europe/Berlin: +01:00 in winter,
/// +02:00 from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday of
/// October): the mapping names the zone, and each time is read at the offset of its day.
const BERLIN_MAPPING: &str = r#"{"name": "berlin", "time_zone": "Europe/Berlin", "id": "call_id",
    "account_code": "acct", "callee": "to", "start": "setup", "answer": "connect", "end": "release"}"#;

const BERLIN_CSV: &str = "call_id,setup,connect,release,to,acct\n\
    b-winter,2026-03-28 12:00:00,2026-03-28 12:00:05,2026-03-28 12:01:05,4930123456,1001\n\
    b-summer,2026-03-30 12:00:00,2026-03-30 12:00:05,2026-03-30 12:01:05,4930123456,1001\n\
    b-gap,2026-03-29 02:30:00,2026-03-29 02:30:05,2026-03-29 03:31:05,4930123456,1001\n\
    b-fold,2026-10-25 02:50:00,2026-10-25 02:50:05,2026-10-25 02:10:05,4930123456,1001\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_in_a_named_zone_reads_local_times_across_the_clock_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    ledger(&api).await;

    let mut mapping: Value = serde_json::from_str(BERLIN_MAPPING).unwrap();
    for (zone, says) in [("Europe/Berlim", "Europe/Berlim"), ("CET", "IANA time zone such as Europe/Berlin")] {
        mapping["time_zone"] = json!(zone);
        let (status, error) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdr-mappings", Some(mapping.clone())).await;
        assert_eq!(
            (status, error["error"].as_str(), error["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_field"), Some("time_zone")),
            "{error}"
        );
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    let (status, _) = api.call(ADMIN_KEY, Method::GET, "/api/v1/cdr-mappings/berlin", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused mapping is not kept");
    // As a form, like every write.
    let form: Vec<(String, String)> = serde_json::from_str::<serde_json::Map<String, Value>>(BERLIN_MAPPING)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
        .collect();
    let request = api.client.post(api.server.url("/api/v1/cdr-mappings")).bearer_auth(ADMIN_KEY).form(&form);
    let (status, saved) = send(request).await;
    assert_eq!((status, saved["mapping"]["time_zone"].as_str()), (StatusCode::CREATED, Some("Europe/Berlin")));

    let (status, answer) = api.csv(ADMIN_KEY, "/api/v1/cdrs/mapped?mapping=berlin", BERLIN_CSV).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let summary = (&answer["summary"]["charged"], &answer["summary"]["rejected"]);
    assert_eq!(summary, (&json!(3), &json!(1)), "{answer}");
    let gap = &answer["results"][2];
    assert_eq!((gap["line"].as_u64(), gap["id"].as_str()), (Some(4), Some("b-gap")), "{gap}");
    assert_eq!(
        (gap["error"]["error"].as_str(), gap["error"]["field"].as_str()),
        (Some("invalid_field"), Some("start"))
    );
    let message = gap["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`2026-03-29 02:30:00` (column `setup`) is not a time in Europe/Berlin"),
        "names the value, the column and the zone: {message}"
    );
    let position = answer["position"].as_u64().unwrap();
    for (id, start, end) in [
        ("b-winter", "2026-03-28T11:00:00Z", "2026-03-28T11:01:05Z"),
        ("b-summer", "2026-03-30T10:00:00Z", "2026-03-30T10:01:05Z"),
        // 02:50 summer time to 02:10 winter time: the end's earlier reading is before the start.
        ("b-fold", "2026-10-25T00:50:00Z", "2026-10-25T01:10:05Z"),
    ] {
        let cdr = api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/cdrs/{id}?min_position={position}"), None).await;
        assert_eq!((cdr["cdr"]["start"].as_str(), cdr["cdr"]["end"].as_str()), (Some(start), Some(end)), "{id}");
    }

    // The upload's zone replaces the mapping's; an offset and a zone together are refused.
    let new_york = "call_id,setup,connect,release,to,acct\n\
                    ny-1,2026-07-01 12:00:00,2026-07-01 12:00:05,2026-07-01 12:01:05,4930123456,1001\n";
    let path = "/api/v1/cdrs/mapped?mapping=berlin&time_zone=America/New_York";
    let (status, answer) = api.csv(ADMIN_KEY, path, new_york).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(1)), "{answer}");
    let position = answer["position"].as_u64().unwrap();
    let cdr = api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/cdrs/ny-1?min_position={position}"), None).await;
    assert_eq!(cdr["cdr"]["start"], "2026-07-01T16:00:00Z", "12:00 EDT");
    for (query, field) in [("time_zone=Moon/Base", "time_zone"), ("time_zone=UTC&utc_offset=%2B01:00", "time_zone")] {
        let (status, error) =
            api.csv(ADMIN_KEY, &format!("/api/v1/cdrs/mapped?mapping=berlin&{query}"), new_york).await;
        assert_eq!(
            (status, error["error"].as_str(), error["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_query"), Some(field)),
            "{query}: {error}"
        );
    }
    api.server.stop();

    // The import takes the zone too.
    let path = dir.path().join("sydney.csv");
    std::fs::write(
        &path,
        "call_id,setup,connect,release,to,acct\n\
         syd-1,2026-01-15 12:00:00,2026-01-15 12:00:05,2026-01-15 12:01:05,4930123456,1001\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let (ok, _, err) = tollbook(&["import", "cdrs", file, "--mapping", "berlin", "--time-zone", "EST"], &data);
    assert!(!ok && err.contains("--time-zone: time_zone: `EST` is neither an IANA time zone"), "{err}");
    let (ok, out, err) =
        tollbook(&["import", "cdrs", file, "--mapping", "berlin", "--time-zone", "Australia/Sydney"], &data);
    assert!(ok && out.contains("1 charged"), "{out}{err}");
    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    let cdr = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdrs/syd-1", None).await;
    assert_eq!(cdr["cdr"]["start"], "2026-01-15T01:00:00Z", "12:00 AEDT, +11:00");
}
