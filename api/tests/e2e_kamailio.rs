//! A real Kamailio in the test: a SIP call placed through it as a proxy with dialog
//! accounting on (`acc` with `cdr_enable`, CDRs in a db_text table), its CDR posted to
//! tollbook as Kamailio wrote it, and charged.
//!
//! The SIP user agents are this test's own UDP sockets (caller and callee): Debian's
//! `sipsak` (0.9.8.1 on bookworm) crashes in its usrloc and invite modes on this machine,
//! and its invite cycle never sends a BYE, so no dialog would end. Kamailio and the SIP
//! transactions through it are real: INVITE, 100, 200, ACK, BYE, 200.
//!
//! `scripts/test` installs Debian's `kamailio`; without it on the PATH the test says so and
//! checks nothing.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::{ADMIN_KEY, Server, send};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Kamailio's configuration: a proxy that relays every new call to the callee socket,
/// stays in the path (Record-Route) and writes one CDR per dialog to db_text.
fn config(dir: &Path, proxy_port: u16, callee_port: u16) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:127.0.0.1:{proxy_port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "db_text.so"
loadmodule "dialog.so"
loadmodule "acc.so"
modparam("acc", "cdr_enable", 1)
modparam("acc", "cdr_start_on_confirmed", 1)
modparam("acc", "cdrs_table", "acc_cdrs")
modparam("acc", "db_url", "text://{db}")
modparam("acc", "cdr_extra", "callid=$dlg(callid);src_user=$dlg_var(src_user);dst_user=$dlg_var(dst_user);src_ip=$dlg_var(src_ip);sip_code=$dlg_var(sip_code)")
request_route {{
  if (has_totag()) {{
    if (loose_route()) {{ t_relay(); exit; }}
    sl_send_reply("404", "Not here");
    exit;
  }}
  if (is_method("INVITE")) {{
    dlg_manage();
    $dlg_var(src_user) = $fU;
    $dlg_var(dst_user) = $rU;
    $dlg_var(src_ip) = $si;
    record_route();
    t_on_reply("REPLY");
    $du = "sip:127.0.0.1:{callee_port}";
    t_relay();
    exit;
  }}
  sl_send_reply("405", "Not allowed");
}}
onreply_route[REPLY] {{
  if ($rs >= 200) {{ $dlg_var(sip_code) = $rs; }}
}}
"#,
        db = dir.join("db").display()
    )
}

/// The table Kamailio ships (utils/kamctl/dbtext/kamailio/acc_cdrs) with the `cdr_extra`
/// columns of docs/kamailio.md, and db_text's `version` table.
fn tables(dir: &Path) {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("version"), "table_name(string) table_version(int)\nacc_cdrs:2\n").unwrap();
    std::fs::write(
        db.join("acc_cdrs"),
        "id(int,auto) start_time(int) end_time(int) duration(double) callid(string,null) src_user(string,null) \
         dst_user(string,null) src_ip(string,null) sip_code(string,null)\n",
    )
    .unwrap();
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn header<'m>(message: &'m str, name: &str) -> Vec<&'m str> {
    message.lines().filter(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase()))).collect()
}

fn receive(socket: &UdpSocket) -> String {
    let mut buffer = vec![0u8; 65_535];
    let (length, _) = socket.recv_from(&mut buffer).expect("a SIP message in time");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

/// Places a call of about `talk` from 4940111 to 4930123456 through the proxy, the test
/// playing both ends; gives its Call-ID.
fn place_call(proxy_port: u16, caller: &UdpSocket, callee: &UdpSocket, talk: Duration) -> String {
    let proxy = format!("127.0.0.1:{proxy_port}");
    let caller_port = caller.local_addr().unwrap().port();
    let callee_port = callee.local_addr().unwrap().port();
    let call_id = format!("{}@127.0.0.1", uuid::Uuid::now_v7());
    let branch = || format!("z9hG4bK{}", uuid::Uuid::now_v7().simple());
    let invite = format!(
        "INVITE sip:4930123456@127.0.0.1:{proxy_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{caller_port};branch={};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:4940111@127.0.0.1>;tag=caller1\r\nTo: <sip:4930123456@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:4940111@127.0.0.1:{caller_port}>\r\nContent-Length: 0\r\n\r\n",
        branch()
    );
    caller.send_to(invite.as_bytes(), &proxy).unwrap();
    // The callee answers the INVITE the proxy relays.
    let relayed = receive(callee);
    assert!(relayed.starts_with("INVITE "), "{relayed}");
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for line in
        header(&relayed, "Via").into_iter().chain(header(&relayed, "Record-Route")).chain(header(&relayed, "From"))
    {
        ok += &format!("{line}\r\n");
    }
    ok += &format!(
        "{};tag=callee1\r\nCall-ID: {call_id}\r\n{}\r\nContact: <sip:4930123456@127.0.0.1:{callee_port}>\r\nContent-Length: 0\r\n\r\n",
        header(&relayed, "To")[0],
        header(&relayed, "CSeq")[0]
    );
    callee.send_to(ok.as_bytes(), format!("127.0.0.1:{proxy_port}")).unwrap();
    // The caller sees 100 Trying, then the 200 with the proxy's Record-Route.
    let answer = loop {
        let reply = receive(caller);
        if reply.starts_with("SIP/2.0 200") {
            break reply;
        }
        assert!(reply.starts_with("SIP/2.0 1"), "{reply}");
    };
    let mut routes: Vec<&str> =
        header(&answer, "Record-Route").into_iter().map(|l| l.split_once(':').unwrap().1.trim()).collect();
    routes.reverse();
    let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let in_dialog = |method: &str, cseq: &str| {
        format!(
            "{method} sip:4930123456@127.0.0.1:{callee_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{caller_port};branch={};rport\r\n\
             Max-Forwards: 70\r\n{route}From: <sip:4940111@127.0.0.1>;tag=caller1\r\nTo: <sip:4930123456@127.0.0.1>;tag=callee1\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n",
            branch()
        )
    };
    caller.send_to(in_dialog("ACK", "1 ACK").as_bytes(), &proxy).unwrap();
    assert!(receive(callee).starts_with("ACK "));
    std::thread::sleep(talk);
    caller.send_to(in_dialog("BYE", "2 BYE").as_bytes(), &proxy).unwrap();
    let bye = receive(callee);
    assert!(bye.starts_with("BYE "), "{bye}");
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for line in header(&bye, "Via").into_iter().chain(header(&bye, "From")).chain(header(&bye, "To")) {
        ok += &format!("{line}\r\n");
    }
    ok += &format!("Call-ID: {call_id}\r\n{}\r\nContent-Length: 0\r\n\r\n", header(&bye, "CSeq")[0]);
    callee.send_to(ok.as_bytes(), &proxy).unwrap();
    let done = receive(caller);
    assert!(done.starts_with("SIP/2.0 200"), "{done}");
    call_id
}

/// Stops Kamailio as its init script would (SIGTERM): db_text writes its tables then.
fn stop(mut kamailio: Child) {
    let _ = Command::new("kill").args(["-TERM", &kamailio.id().to_string()]).status();
    let _ = kamailio.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_kamailio_is_charged_from_its_own_cdr() {
    if Command::new("kamailio").arg("-v").output().is_err() {
        eprintln!("kamailio is not installed (scripts/test installs it): the real-switch test checks nothing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    tables(dir.path());
    let (proxy_port, callee) = (free_udp_port(), UdpSocket::bind("127.0.0.1:0").unwrap());
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    for socket in [&caller, &callee] {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let cfg = dir.path().join("kamailio.cfg");
    std::fs::write(&cfg, config(dir.path(), proxy_port, callee.local_addr().unwrap().port())).unwrap();
    let check = Command::new("kamailio").args(["-c", "-f"]).arg(&cfg).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
    let kamailio = Command::new("kamailio")
        .args(["-DD", "-E", "-f"])
        .arg(&cfg)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // Listening once its port is taken.
    for _ in 0..100 {
        if UdpSocket::bind(("127.0.0.1", proxy_port)).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let call_id = tokio::task::spawn_blocking(move || place_call(proxy_port, &caller, &callee, Duration::from_secs(2)))
        .await
        .unwrap();
    stop(kamailio);
    let table = std::fs::read_to_string(dir.path().join("db").join("acc_cdrs")).unwrap();
    assert!(
        table.contains(&call_id.replace(':', "\\:")),
        "Kamailio wrote no CDR for {call_id}: {table}\n{}",
        std::fs::read_to_string(dir.path().join("kamailio.log")).unwrap_or_default()
    );

    // tollbook: the caller's number is the account's identifier.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(server.url(path)).bearer_auth(ADMIN_KEY).json(&body);
    let account = json!({"number": "C1", "name": "C1", "kind": "customer", "currency": "EUR"});
    assert_eq!(send(post("/api/v1/accounts", account)).await.0, StatusCode::CREATED);
    let tariff = json!({"name": "Retail", "currency": "EUR", "effective_from": "2026-01-01",
                        "rates": [{"prefix": "49", "price_per_minute": "0.10"}]});
    let (_, tariff) = send(post("/api/v1/tariffs", tariff)).await;
    let tariff_id = tariff["links"]["tariff"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    send(post("/api/v1/accounts/C1/tariff", json!({"tariff": tariff_id}))).await;
    let (status, _) = send(post("/api/v1/accounts/C1/switch-identifiers", json!({"caller_ids": ["4940111"]}))).await;
    assert_eq!(status, StatusCode::OK);
    let upload = client
        .post(server.url("/api/v1/cdrs/kamailio"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/plain")
        .body(table);
    let (status, answer) = send(upload).await;
    assert_eq!((status, &answer["summary"]["charged"]), (StatusCode::OK, &json!(1)), "{answer}");
    let result = &answer["results"][0];
    assert_eq!(result["id"], json!(call_id));
    // About 2 s of talk, billed as the tariff's first minute.
    assert_eq!(result["customer_cost"].to_string().trim_matches('"'), "0.10", "{answer}");
    let position = answer["position"].as_u64().unwrap();
    let path = format!("/api/v1/cdrs/{call_id}?min_position={position}");
    let (status, shown) = send(client.get(server.url(&path)).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let cdr = &shown["cdr"];
    assert_eq!(
        (&cdr["account"], &cdr["caller"], &cdr["callee"]),
        (&json!("C1"), &json!("4940111"), &json!("4930123456"))
    );
    assert_eq!((&cdr["hangup_cause"], &cdr["hangup_cause_raw"]), (&json!(16), &json!("sip:200")), "{cdr}");
    assert!(cdr["billable_seconds"].as_u64().unwrap() >= 1, "{cdr}");
}
