//! CDRs in the switches' own formats, tied to accounts by the identifiers the operator
//! assigns, over HTTP and through `tollbook import cdrs --format`, on the real binary.
//! The samples follow each switch's documentation, cited where they appear.

mod common;

use common::{ADMIN_KEY, Api, Server, send, tollbook};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

impl Api {
    async fn text(&self, path: &str, content_type: &str, body: &str) -> (StatusCode, Value) {
        self.post_raw(ADMIN_KEY, path, content_type, body.to_owned()).await
    }
}

fn dec(value: &Value) -> Decimal {
    value.to_string().trim_matches('"').parse().unwrap_or_else(|_| panic!("not a decimal: {value}"))
}

/// Two customers of the operator on one tariff (0.10 a minute in 60/60 to 49), a partner
/// with a customer of its own; C1 known by account code 1001 and trunk carrier1, C3 by two
/// calling numbers.
async fn ledger(api: &Api) {
    for (number, kind, partner) in
        [("C1", "customer", None), ("C3", "customer", None), ("P1", "partner", None), ("C2", "customer", Some("P1"))]
    {
        api.open_account(number, kind, partner).await;
    }
    api.retail_tariff(&["C1", "C3"]).await;
    let identifiers = json!({"account_codes": ["1001"], "trunks": ["carrier1"]});
    api.ok(ADMIN_KEY, Method::POST, "/api/v1/accounts/C1/switch-identifiers", Some(identifiers)).await;
    // As a form: one text, separated by commas.
    let (status, set) = send(
        api.client
            .post(api.server.url("/api/v1/accounts/C3/switch-identifiers"))
            .bearer_auth(ADMIN_KEY)
            .form(&[("caller_ids", "4940333, 4940334")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
}

/// A document as FreeSWITCH's mod_json_cdr posts it (FreeSWITCH documentation,
/// "mod_json_cdr"): `variables` URL-encoded (`encode-values` is on by default).
fn freeswitch_document(uuid: &str, accountcode: &str, caller: &str) -> Value {
    json!({
        "core-uuid": "3b4c8e0a-1f2b-4c5d-8e9f-0a1b2c3d4e5f", "switchname": "fs1",
        "channel_data": {"state": "CS_REPORTING", "direction": "inbound"},
        "variables": {
            "uuid": uuid, "direction": "inbound", "accountcode": accountcode,
            "caller_id_number": caller, "destination_number": "4930123456",
            "start_epoch": "1777888800", "answer_epoch": "1777888802", "end_epoch": "1777888867",
            "start_stamp": "2026-05-04%2010%3A00%3A00", "duration": "67", "billsec": "65",
            "hangup_cause": "ORIGINATOR_CANCEL", "hangup_cause_q850": "16", "sip_hangup_disposition": "recv_bye"
        },
        "callflow": [{"caller_profile": {"caller_id_number": caller, "destination_number": "4930123456"}}]
    })
}

/// Asterisk's Master.csv (cdr_csv; columns as the Asterisk documentation lists them, with
/// loguniqueid on), written in the switch's local time, here UTC+02:00: the first row is
/// C1's by its channel's peer, the second C3's by its caller id, the third nobody's.
const MASTER_CSV: &str = concat!(
    r#""","4940111","4930123456","default","""Alice"" <4940111>","SIP/carrier1-0000002a","SIP/out-0000002b","Dial","SIP/out/4930123456,30","2026-05-04 12:00:00","2026-05-04 12:00:02","2026-05-04 12:01:07",67,65,"ANSWERED","DOCUMENTATION","1777888800.42","""#,
    "\n",
    r#""","4940333","4930123456","default","","SIP/other-0000002c","","Dial","","2026-05-04 12:02:00","2026-05-04 12:02:01","2026-05-04 12:03:06",66,65,"ANSWERED","DOCUMENTATION","1777888920.43","""#,
    "\n",
    r#""7777","4940777","4930123456","default","","SIP/other-0000002d","","Dial","","2026-05-04 12:04:00","","2026-05-04 12:04:30",30,0,"NO ANSWER","DOCUMENTATION","1777889040.44","""#,
    "\n",
);

/// Kamailio's dialog CDRs in its db_text table acc_cdrs (acc module README, "Call Data
/// Record generation"; the header Kamailio ships in utils/kamctl/dbtext plus the
/// cdr_extra columns of docs/kamailio.md).
const KAMAILIO_DBTEXT: &str = concat!(
    "id(int,auto) start_time(int) end_time(int) duration(double) callid(string) src_user(string) ",
    "dst_user(string) src_ip(string) sip_code(string)\n",
    "1:1777888800:1777888865:65.250:k1\\:x@pc33.example.com:4940334:4930123456:192.0.2.10:200\n",
);

/// mod_cdr_csv's default template (`example` in the cdr_csv.conf.xml FreeSWITCH ships), no
/// header, local times.
const FREESWITCH_CSV: &str = concat!(
    r#""Alice","4940111","4930123456","default","2026-05-04 10:00:00","2026-05-04 10:00:02","2026-05-04 10:01:07","67","65","NORMAL_CLEARING","fs-csv-1","","1001","PCMA","PCMA""#,
    "\n",
    r#""Eve","4940666","4930123456","default","2026-05-04 10:05:00","2026-05-04 10:05:01","2026-05-04 10:06:06","66","65","MEDIA_TIMEOUT","fs-csv-2","","6666","PCMA","PCMA""#,
    "\n",
);

/// Master.csv written in Berlin's local time (Asterisk's default, `usegmtime=no`: the
/// `[csv]` section of configs/samples/cdr.conf.sample, `usegmtime=yes ; log date/time in
/// GMT.  Default is "no"`): a summer call; a call answered at 02:50 summer time and ended at
/// 02:10 winter time on 25 October 2026, when Berlin's clocks went back from 03:00 to
/// 02:00; a call started at 02:30 on 29 March 2026, a time Berlin's clocks skipped.
const BERLIN_MASTER_CSV: &str = concat!(
    r#""1001","4940111","4930123456","default","","SIP/carrier1-0000002a","SIP/out-0000002b","Dial","SIP/out/4930123456,30","2026-07-01 12:00:00","2026-07-01 12:00:02","2026-07-01 12:01:02",62,60,"ANSWERED","DOCUMENTATION","berlin-summer","""#,
    "\n",
    r#""1001","4940111","4930123456","default","","SIP/carrier1-0000002c","SIP/out-0000002d","Dial","SIP/out/4930123456,30","2026-10-25 02:50:00","2026-10-25 02:50:05","2026-10-25 02:10:00",1200,1195,"ANSWERED","DOCUMENTATION","berlin-autumn","""#,
    "\n",
    r#""1001","4940111","4930123456","default","","SIP/carrier1-0000002e","SIP/out-0000002f","Dial","SIP/out/4930123456,30","2026-03-29 02:30:00","2026-03-29 03:30:05","2026-03-29 03:31:00",60,55,"ANSWERED","DOCUMENTATION","berlin-gap","""#,
    "\n",
);

/// Kamailio's dialog CDRs as a CSV of the acc_cdrs columns with formatted times (acc
/// module README, "Call Data Record generation"; the cdr_extra columns of
/// docs/kamailio.md), in Berlin's local time across the autumn change.
const BERLIN_KAMAILIO_CSV: &str = "start_time,end_time,duration,callid,src_user,dst_user,src_ip,sip_code\n\
    2026-10-25 02:50:00,2026-10-25 02:10:00,1200,k-autumn@pc33.example.com,4940334,4930123456,192.0.2.10,200\n";

/// mod_cdr_csv's default template (`example` in the cdr_csv.conf.xml FreeSWITCH ships),
/// whose `*_stamp` times switch_channel.c writes as `%Y-%m-%d %T` in the switch's local
/// time: New York's, across its clock changes of 2026 (forward at 02:00 on 8 March, back
/// at 02:00 on 1 November).
const NEW_YORK_FREESWITCH_CSV: &str = concat!(
    r#""Alice","4940111","4930123456","default","2026-11-01 01:40:00","2026-11-01 01:40:02","2026-11-01 01:10:00","1800","1798","NORMAL_CLEARING","fs-ny-autumn","","1001","PCMA","PCMA""#,
    "\n",
    r#""Alice","4940111","4930123456","default","2026-03-08 01:50:00","2026-03-08 02:15:00","2026-03-08 03:20:00","1800","300","NORMAL_CLEARING","fs-ny-gap","","1001","PCMA","PCMA""#,
    "\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_cdrs_are_charged_to_the_account_their_identifiers_name() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    ledger(&api).await;

    // The identifiers read back; an identifier belongs to one account; only the operator sets them.
    let shown = api.ok(ADMIN_KEY, Method::GET, "/api/v1/accounts/C3/switch-identifiers", None).await;
    assert_eq!(shown["caller_ids"], json!(["4940333", "4940334"]), "{shown}");
    let taken = json!({"trunks": ["carrier1"]});
    let (status, error) =
        api.call(ADMIN_KEY, Method::POST, "/api/v1/accounts/C3/switch-identifiers", Some(taken)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::CONFLICT, Some("switch_identifier_taken")), "{error}");
    let user = json!({"login": "p1", "role": "partner", "account": "P1"});
    api.ok(ADMIN_KEY, Method::POST, "/api/v1/users", Some(user)).await;
    let token = api.ok(ADMIN_KEY, Method::POST, "/api/v1/tokens", Some(json!({"user": "p1"}))).await;
    let p1 = token["token"].as_str().unwrap().to_owned();
    let own = json!({"account_codes": ["2002"]});
    let (status, _) = api.call(&p1, Method::POST, "/api/v1/accounts/C2/switch-identifiers", Some(own)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // FreeSWITCH posts one document a call; a retry is a duplicate, not a second charge.
    let document = freeswitch_document("a1b2c3d4-0000-4000-8000-000000000001", "1001", "%2B4940111");
    let (status, answer) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdrs/freeswitch", Some(document.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(dec(&answer["results"][0]["customer_cost"]), dec(&json!("0.20")));
    let (status, again) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdrs/freeswitch", Some(document)).await;
    assert_eq!((status, &again["results"][0]["result"]), (StatusCode::OK, &json!("duplicate")), "{again}");
    let position = answer["position"].as_u64().unwrap();
    let path = format!("/api/v1/cdrs/a1b2c3d4-0000-4000-8000-000000000001?min_position={position}");
    let cdr = api.ok(ADMIN_KEY, Method::GET, &path, None).await;
    assert_eq!(cdr["cdr"]["account"], "C1");
    assert_eq!(cdr["cdr"]["caller"], "+4940111", "values are URL-decoded");
    assert_eq!(cdr["cdr"]["hangup_cause_raw"], "ORIGINATOR_CANCEL");

    // No account holds the call's identifiers: refused, naming each value.
    let stranger = freeswitch_document("a1b2c3d4-0000-4000-8000-000000000002", "9999", "4940999");
    let (status, error) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdrs/freeswitch", Some(stranger)).await;
    assert_eq!(
        (status, error["error"].as_str(), error["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("account_not_identified"), Some("account")),
        "{error}"
    );
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("account_code `9999`") && message.contains("caller_id `4940999`"), "{message}");
    // A partner does not learn which of the operator's accounts holds an identifier.
    let foreign = freeswitch_document("x-9", "1001", "1");
    let (status, error) = api.call(&p1, Method::POST, "/api/v1/cdrs/freeswitch", Some(foreign)).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("account_not_identified")));

    let (status, answer) = api.text("/api/v1/cdrs/asterisk?utc_offset=%2B02:00", "text/csv", MASTER_CSV).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let summary = (&answer["summary"]["charged"], &answer["summary"]["rejected"]);
    assert_eq!(summary, (&json!(2), &json!(1)), "{answer}");
    let rejected = &answer["results"][2];
    assert_eq!((rejected["line"].as_u64(), rejected["id"].as_str()), (Some(3), Some("1777889040.44")), "{rejected}");
    assert_eq!(rejected["error"]["error"], "account_not_identified");
    assert!(rejected["error"]["message"].as_str().unwrap().contains("account_code `7777`"), "{rejected}");
    let position = answer["position"].as_u64().unwrap();
    let path = format!("/api/v1/cdrs/1777888800.42?min_position={position}");
    let first = api.ok(ADMIN_KEY, Method::GET, &path, None).await;
    assert_eq!(first["cdr"]["account"], "C1");
    assert_eq!(first["cdr"]["start"], "2026-05-04T10:00:00Z", "12:00 at +02:00");
    let second = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdrs/1777888920.43", None).await;
    assert_eq!(second["cdr"]["account"], "C3");

    let (status, answer) = api.text("/api/v1/cdrs/kamailio", "text/plain", KAMAILIO_DBTEXT).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(1)), "{answer}");
    assert_eq!(dec(&answer["results"][0]["customer_cost"]), dec(&json!("0.20")));
    let position = answer["position"].as_u64().unwrap();
    let path = format!("/api/v1/cdrs/k1:x@pc33.example.com?min_position={position}");
    let kamailio = api.ok(ADMIN_KEY, Method::GET, &path, None).await;
    assert_eq!(kamailio["cdr"]["account"], "C3");

    // The identifiers are events: they replay. After a restart C1 still holds 1001.
    let Api { server, client } = api;
    server.stop();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client, server };
    let shown = api.ok(ADMIN_KEY, Method::GET, "/api/v1/accounts/C1/switch-identifiers", None).await;
    assert_eq!((&shown["account_codes"], &shown["trunks"]), (&json!(["1001"]), &json!(["carrier1"])), "{shown}");
    let document = freeswitch_document("a1b2c3d4-0000-4000-8000-000000000003", "1001", "4940111");
    let (status, _) = api.call(ADMIN_KEY, Method::POST, "/api/v1/cdrs/freeswitch", Some(document)).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// `tollbook import cdrs --format`: a switch's files, each row tied to its account, the
/// rows no account holds in the rejects file with their lines and ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_files_import_with_their_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    ledger(&api).await;
    api.server.stop();

    let path = dir.path().join("Master-fs.csv");
    std::fs::write(&path, FREESWITCH_CSV).unwrap();
    let file = path.to_str().unwrap();
    let (ok, out, err) =
        tollbook(&["import", "cdrs", file, "--format", "freeswitch-csv", "--utc-offset", "UTC"], &data);
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 charged, 0 already in, 1 rejected"), "{out}");
    let rejects = std::fs::read_to_string(dir.path().join("Master-fs.csv.rejects.csv")).unwrap();
    assert!(rejects.contains("2,fs-csv-2,account_not_identified,account,"), "{rejects}");
    assert!(rejects.contains("account_code `6666`"), "{rejects}");

    // One mod_json_cdr document a line.
    let lines = format!(
        "{}\n{}\n",
        freeswitch_document("json-1", "1001", "4940111"),
        freeswitch_document("json-2", "", "4940334")
    );
    let path = dir.path().join("cdrs.jsonl");
    std::fs::write(&path, lines).unwrap();
    let file = path.to_str().unwrap();
    let (ok, out, err) = tollbook(&["import", "cdrs", file, "--format", "freeswitch-json"], &data);
    assert!(ok && out.contains("2 charged"), "{out}{err}");
    // The same file again is all duplicates.
    let (ok, out, err) = tollbook(&["import", "cdrs", file, "--format", "freeswitch-json"], &data);
    assert!(ok && out.contains("0 charged, 2 already in"), "{out}{err}");

    // Asterisk and Kamailio files the same way.
    let path = dir.path().join("Master.csv");
    std::fs::write(&path, MASTER_CSV).unwrap();
    let file = path.to_str().unwrap();
    let (ok, out, err) =
        tollbook(&["import", "cdrs", file, "--format", "asterisk-csv", "--utc-offset", "+02:00"], &data);
    assert!(ok && out.contains("2 charged, 0 already in, 1 rejected"), "{out}{err}");
    let path = dir.path().join("acc_cdrs");
    std::fs::write(&path, KAMAILIO_DBTEXT).unwrap();
    let (ok, out, err) = tollbook(&["import", "cdrs", path.to_str().unwrap(), "--format", "kamailio-dbtext"], &data);
    assert!(ok && out.contains("1 charged"), "{out}{err}");

    let (ok, _, err) = tollbook(&["import", "cdrs", file, "--format", "cisco"], &data);
    assert!(!ok && err.contains("--format: `cisco` is not one of tollbook, freeswitch-json"), "{err}");
}

/// The switches' own formats take a time zone as the column mappings do (`time_zone`,
/// `--time-zone`): local times in an IANA zone at the offset in force at each time, a time
/// its clocks skipped rejecting its row with the line and column, a time they showed twice
/// the earlier instant unless that is before the call's answer; a zone that is not one is
/// refused before anything is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_formats_read_local_times_in_a_named_zone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    ledger(&api).await;

    for endpoint in ["asterisk", "kamailio"] {
        for query in ["time_zone=CET", "time_zone=Europe/Berlim", "time_zone=UTC&utc_offset=%2B01:00"] {
            let path = format!("/api/v1/cdrs/{endpoint}?{query}");
            let body = if endpoint == "asterisk" { BERLIN_MASTER_CSV } else { BERLIN_KAMAILIO_CSV };
            let (status, answer) = api.text(&path, "text/csv", body).await;
            assert_eq!(
                (status, answer["error"].as_str(), answer["field"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_query"), Some("time_zone")),
                "{path}: {answer}"
            );
        }
    }
    let (status, _) = api.call(ADMIN_KEY, Method::GET, "/api/v1/cdrs/berlin-summer", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused upload charged nothing");

    let (status, answer) =
        api.text("/api/v1/cdrs/asterisk?time_zone=Europe/Berlin", "text/csv", BERLIN_MASTER_CSV).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((&answer["summary"]["charged"], &answer["summary"]["rejected"]), (&json!(2), &json!(1)), "{answer}");
    let gap = &answer["results"][2];
    assert_eq!((gap["line"].as_u64(), gap["id"].as_str()), (Some(3), Some("berlin-gap")), "{gap}");
    assert_eq!(
        (gap["error"]["error"].as_str(), gap["error"]["field"].as_str()),
        (Some("invalid_field"), Some("start"))
    );
    assert_eq!(
        gap["error"]["message"],
        "start: `2026-03-29 02:30:00` (column 10) is not a time in Europe/Berlin: its clocks skipped it, going from \
         +01:00 to +02:00"
    );
    let position = answer["position"].as_u64().unwrap();
    let cdr = |id: &str| format!("/api/v1/cdrs/{id}?min_position={position}");
    let summer = api.ok(ADMIN_KEY, Method::GET, &cdr("berlin-summer"), None).await;
    assert_eq!(summer["cdr"]["start"], "2026-07-01T10:00:00Z", "12:00 at +02:00 in July");
    let autumn = api.ok(ADMIN_KEY, Method::GET, &cdr("berlin-autumn"), None).await;
    let times = |cdr: &Value| (cdr["cdr"]["start"].clone(), cdr["cdr"]["answer"].clone(), cdr["cdr"]["end"].clone());
    assert_eq!(
        times(&autumn),
        (json!("2026-10-25T00:50:00Z"), json!("2026-10-25T00:50:05Z"), json!("2026-10-25T01:10:00Z")),
        "the start and answer at +02:00; the end at +01:00, its earlier instant being before the answer"
    );

    let (status, answer) =
        api.text("/api/v1/cdrs/kamailio?time_zone=Europe/Berlin", "text/csv", BERLIN_KAMAILIO_CSV).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(1)), "{answer}");
    let position = answer["position"].as_u64().unwrap();
    let path = format!("/api/v1/cdrs/k-autumn@pc33.example.com?min_position={position}");
    let kamailio = api.ok(ADMIN_KEY, Method::GET, &path, None).await;
    assert_eq!(
        (kamailio["cdr"]["start"].clone(), kamailio["cdr"]["end"].clone()),
        (json!("2026-10-25T00:50:00Z"), json!("2026-10-25T01:10:00Z")),
        "{kamailio}"
    );
    api.server.stop();

    // The import: the same rules through `--time-zone`.
    let path = dir.path().join("Master-ny.csv");
    std::fs::write(&path, NEW_YORK_FREESWITCH_CSV).unwrap();
    let file = path.to_str().unwrap();
    let (ok, _, err) = tollbook(&["import", "cdrs", file, "--format", "freeswitch-csv", "--time-zone", "EST"], &data);
    assert!(!ok && err.contains("--time-zone: time_zone: `EST` is neither an IANA time zone"), "{err}");
    let (ok, _, err) = tollbook(&["import", "cdrs", file, "--time-zone", "America/New_York"], &data);
    assert!(!ok && err.contains("--time-zone is for a switch's --format or a --mapping"), "{err}");
    let (ok, out, err) =
        tollbook(&["import", "cdrs", file, "--format", "freeswitch-csv", "--time-zone", "America/New_York"], &data);
    assert!(ok && out.contains("1 charged, 0 already in, 1 rejected"), "{out}{err}");
    let rejects = std::fs::read_to_string(dir.path().join("Master-ny.csv.rejects.csv")).unwrap();
    assert!(rejects.contains("2,fs-ny-gap,invalid_field,answer_stamp,"), "{rejects}");
    assert!(
        rejects.contains("`2026-03-08 02:15:00` (column 6) is not a time in America/New_York: its clocks skipped it"),
        "{rejects}"
    );
    let path = dir.path().join("Master-berlin.csv");
    std::fs::write(&path, BERLIN_MASTER_CSV.replace("berlin-", "cli-berlin-")).unwrap();
    let (ok, out, err) = tollbook(
        &["import", "cdrs", path.to_str().unwrap(), "--format", "asterisk-csv", "--time-zone", "Europe/Berlin"],
        &data,
    );
    assert!(ok && out.contains("2 charged, 0 already in, 1 rejected"), "{out}{err}");

    let api = Api { client: reqwest::Client::new(), server: Server::start(&data, &["--admin-key", ADMIN_KEY]).await };
    let autumn = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdrs/fs-ny-autumn", None).await;
    assert_eq!(
        times(&autumn),
        (json!("2026-11-01T05:40:00Z"), json!("2026-11-01T05:40:02Z"), json!("2026-11-01T06:10:00Z")),
        "answered at -04:00, ended after the clocks went back, at -05:00"
    );
    let autumn = api.ok(ADMIN_KEY, Method::GET, "/api/v1/cdrs/cli-berlin-autumn", None).await;
    assert_eq!(times(&autumn).2, json!("2026-10-25T01:10:00Z"));
}

/// FreeSWITCH's mod_json_cdr can send only HTTP Basic credentials (its `cred` param, as
/// libcurl's CURLOPT_USERPWD, `auth-scheme` basic by default: mod_json_cdr.c). The switch
/// intake routes take them with an API token as the password and its user's login as the
/// user, with the token's scope; no other route does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_posts_with_basic_credentials_holding_an_api_token() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let api = Api { client: reqwest::Client::new(), server };
    ledger(&api).await;
    api.retail_tariff(&["P1", "C2"]).await;
    api.ok(ADMIN_KEY, Method::POST, "/api/v1/accounts/C2/switch-identifiers", Some(json!({"account_codes": ["2002"]})))
        .await;
    api.ok(ADMIN_KEY, Method::POST, "/api/v1/users", Some(json!({"login": "fs-switch1", "role": "admin"}))).await;
    let token = api.ok(ADMIN_KEY, Method::POST, "/api/v1/tokens", Some(json!({"user": "fs-switch1"}))).await;
    let switch = token["token"].as_str().unwrap().to_owned();
    let reseller = api.token("fs-p1", "partner", "P1").await;
    let customer = api.token("c1-user", "customer", "C1").await;
    let post = |path: &str, user: &str, password: &str, body: Value| {
        api.client.post(api.server.url(path)).basic_auth(user, Some(password)).json(&body)
    };
    let freeswitch = "/api/v1/cdrs/freeswitch?uuid=ignored";

    let (status, answer) = send(post(freeswitch, "fs-switch1", &switch, freeswitch_document("b-1", "1001", "1"))).await;
    assert_eq!((status, &answer["results"][0]["result"]), (StatusCode::CREATED, &json!("charged")), "{answer}");
    let position = answer["position"].as_u64().unwrap();
    let cdr = api.ok(ADMIN_KEY, Method::GET, &format!("/api/v1/cdrs/b-1?min_position={position}"), None).await;
    assert_eq!(cdr["cdr"]["account"], "C1");

    // The partner's token: its own customer's calls, not the operator's.
    let (status, answer) = send(post(freeswitch, "fs-p1", &reseller, freeswitch_document("b-2", "2002", "1"))).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, error) = send(post(freeswitch, "fs-p1", &reseller, freeswitch_document("b-3", "1001", "1"))).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("account_not_identified")));
    let (status, error) = send(post(freeswitch, "c1-user", &customer, freeswitch_document("b-4", "1001", "1"))).await;
    assert_eq!((status, error["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{error}");

    // Wrong credentials: 401 with the usual body, offering Basic.
    let document = freeswitch_document("b-5", "1001", "1");
    for (user, password, case) in [
        ("fs-p1", switch.as_str(), "another user's login beside the token"),
        ("", switch.as_str(), "no login"),
        ("fs-switch1", "tbk_not-a-token", "a token that does not exist"),
        ("admin", ADMIN_KEY, "the admin key"),
        ("fs-switch1", "a password", "not a token"),
    ] {
        let response = post(freeswitch, user, password, document.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        let offered: Vec<_> =
            response.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert!(offered.iter().any(|v| v.starts_with("Basic realm=")), "{case}: {offered:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!((body["status"].as_str(), body["error"].as_str()), (Some("error"), Some("unauthorized")), "{case}");
    }
    let garbled = api.client.post(api.server.url(freeswitch)).header("authorization", "Basic %%%").json(&document);
    assert_eq!(send(garbled).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = send(api.client.post(api.server.url(freeswitch)).json(&document)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The other switch routes take it too; nothing else does.
    let request = api
        .client
        .post(api.server.url("/api/v1/cdrs/asterisk?utc_offset=%2B02:00"))
        .basic_auth("fs-switch1", Some(&switch))
        .header("content-type", "text/csv")
        .body(MASTER_CSV);
    let (status, answer) = send(request).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(2)), "{answer}");
    let elsewhere = [
        (Method::GET, "/api/v1/accounts"),
        (Method::GET, "/api/v1/me"),
        (Method::POST, "/api/v1/cdrs"),
        (Method::GET, "/api/v1/cdrs/b-1"),
    ];
    for (method, path) in elsewhere {
        let request = api.client.request(method.clone(), api.server.url(path)).basic_auth("fs-switch1", Some(&switch));
        let response = request.json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let offered: Vec<_> =
            response.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(offered, ["Bearer"], "{path}");
    }
    // The same token as a bearer still does what its user may.
    let (status, _) = api.call(&switch, Method::GET, "/api/v1/cdrs/b-1", None).await;
    assert_eq!(status, StatusCode::OK);
}
