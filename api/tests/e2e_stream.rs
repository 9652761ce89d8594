//! End to end: the live event stream over a real WebSocket client against the real binary:
//! resume without gap or repeat, filters, tenant scope, and alerts with their messages.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod common;

use common::{ADMIN_KEY, send};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for one message before it fails.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

struct Ledger {
    server: common::Server,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Ledger {
    async fn start() -> Ledger {
        let data = tempfile::tempdir().unwrap();
        let server = common::Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
        Ledger { server, client: reqwest::Client::new(), _data: data }
    }

    /// A write as the operator; answers the positions of the events it recorded.
    async fn write(&self, path: &str, body: Value) -> Vec<u64> {
        let (status, body) = send(self.client.post(self.server.url(path)).bearer_auth(ADMIN_KEY).json(&body)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body["events"].as_array().unwrap().iter().map(|e| e["position"].as_u64().unwrap()).collect()
    }

    async fn register(&self, number: &str, kind: &str, partner: Option<&str>) -> Vec<u64> {
        let mut body = json!({"number": number, "name": format!("Name of {number}"), "kind": kind, "currency": "EUR"});
        if let Some(partner) = partner {
            body["partner"] = json!(partner);
        }
        self.write("/api/v1/accounts", body).await
    }

    async fn pay(&self, account: &str, amount: &str) -> u64 {
        self.write("/api/v1/payments", json!({"account": account, "amount": amount})).await[0]
    }

    /// An API token for a new user of `role` acting for `account`.
    async fn token_for(&self, login: &str, role: &str, account: &str) -> String {
        let user = json!({"login": login, "role": role, "account": account});
        let (status, body) =
            send(self.client.post(self.server.url("/api/v1/users")).bearer_auth(ADMIN_KEY).json(&user)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = send(
            self.client.post(self.server.url("/api/v1/tokens")).bearer_auth(ADMIN_KEY).json(&json!({"user": login})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    fn ws_url(&self, query: &str) -> String {
        format!("{}/api/v1/stream{query}", self.server.base.replace("http://", "ws://"))
    }

    /// Opens a stream with `credential` in the `Authorization` header; answers the
    /// socket and the `from` of its first message.
    async fn connect(&self, credential: &str, query: &str) -> (Socket, u64) {
        let mut request = self.ws_url(query).into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {credential}").parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let hello = next_json(&mut socket).await;
        assert_eq!(hello["status"], "subscribed", "{hello}");
        (socket, hello["from"].as_u64().unwrap())
    }

    /// The HTTP status a refused handshake answered.
    async fn refused(&self, credential: Option<&str>, query: &str) -> StatusCode {
        let mut request = self.ws_url(query).into_client_request().unwrap();
        if let Some(credential) = credential {
            request.headers_mut().insert("x-auth-token", credential.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                StatusCode::from_u16(response.status().as_u16()).unwrap()
            }
            Ok(_) => panic!("the handshake for {query} was accepted"),
            Err(other) => panic!("{other}"),
        }
    }
}

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(MESSAGE_TIMEOUT, socket.next())
            .await
            .expect("no message in time")
            .expect("the stream ended")
            .expect("the stream failed");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads events until one at `last` arrives; answers every event read, in order.
async fn events_until(socket: &mut Socket, last: u64) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let message = next_json(socket).await;
        let position = message["position"].as_u64().unwrap_or_else(|| panic!("not an event: {message}"));
        assert!(position <= last, "passed {last} without seeing it: {message}");
        events.push(message);
        if position == last {
            return events;
        }
    }
}

fn positions(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["position"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_resumed_stream_has_no_gap_and_no_repeat() {
    let ledger = Ledger::start().await;
    let mut written: Vec<u64> = ledger.register("C-1", "customer", None).await;
    for i in 0..10 {
        written.push(ledger.pay("C-1", &format!("{}.5", i + 1)).await);
    }
    // From the start of the log, read up to the sixth payment, then hang up.
    let (mut socket, from) = ledger.connect(ADMIN_KEY, "?from=1").await;
    assert_eq!(from, 1);
    let mut received = positions(&events_until(&mut socket, written[6]).await);
    socket.close(None).await.unwrap();
    drop(socket);
    // Written while nobody listened.
    for _ in 0..10 {
        written.push(ledger.pay("C-1", "1").await);
    }
    let resume_from = received.last().unwrap() + 1;
    let (mut socket, from) = ledger.connect(ADMIN_KEY, &format!("?from={resume_from}")).await;
    assert_eq!(from, resume_from);
    // Live events after the catch-up arrive on the same stream.
    written.push(ledger.pay("C-1", "2").await);
    let resumed = events_until(&mut socket, *written.last().unwrap()).await;
    received.extend(positions(&resumed));
    assert_eq!(received, written, "every event once, in log order");
    let last = resumed.last().unwrap();
    assert_eq!(last["event"]["type"], "PaymentReceived");
    assert_eq!(last["event"]["accounts"], json!(["C-1"]));
    assert_eq!(last["event"]["data"]["amount"], json!(2));

    // Without `from`: only what comes next.
    let (mut socket, from) = ledger.connect(ADMIN_KEY, "").await;
    assert!(from > *written.last().unwrap());
    let next = ledger.pay("C-1", "3").await;
    assert_eq!(positions(&events_until(&mut socket, next).await), vec![next]);
}

#[tokio::test]
async fn filters_by_account_book_and_kind() {
    let ledger = Ledger::start().await;
    ledger.register("P-1", "partner", None).await;
    ledger.register("C-1", "customer", Some("P-1")).await;
    ledger.register("D-1", "customer", None).await;
    let (mut by_account, _) = ledger.connect(ADMIN_KEY, "?from=1&account=C-1&kinds=PaymentReceived").await;
    let (mut by_book, _) = ledger.connect(ADMIN_KEY, "?from=1&book=P-1&kinds=PaymentReceived,ChargePosted").await;
    let (mut operator_book, _) = ledger.connect(ADMIN_KEY, "?from=1&book=operator").await;
    let c1_payment = ledger.pay("C-1", "10").await;
    let d1_payment = ledger.pay("D-1", "10").await;
    let p1_payment = ledger.pay("P-1", "10").await;
    let c1_charge = ledger.write("/api/v1/charges", json!({"account": "C-1", "amount": "1"})).await[0];
    let c1_last = ledger.pay("C-1", "1").await;

    assert_eq!(positions(&events_until(&mut by_account, c1_last).await), vec![c1_payment, c1_last]);
    let book_events = events_until(&mut by_book, c1_last).await;
    assert_eq!(positions(&book_events), vec![c1_payment, p1_payment, c1_charge, c1_last]);
    let operator_events = events_until(&mut operator_book, d1_payment).await;
    assert!(operator_events.iter().all(|e| e["event"]["book"] == "operator"), "{operator_events:?}");
    assert_eq!(operator_events.len(), 2, "D-1 opened and paid: {operator_events:?}");

    assert_eq!(ledger.refused(Some(ADMIN_KEY), "?kinds=PaymentRecieved").await, StatusCode::BAD_REQUEST);
    assert_eq!(ledger.refused(Some(ADMIN_KEY), "?account=NOPE").await, StatusCode::NOT_FOUND);
    assert_eq!(ledger.refused(Some(ADMIN_KEY), "?book=C-1").await, StatusCode::NOT_FOUND, "not a partner");
    assert_eq!(ledger.refused(Some(ADMIN_KEY), "?from=x").await, StatusCode::BAD_REQUEST);
    assert_eq!(ledger.refused(None, "").await, StatusCode::UNAUTHORIZED);
    assert_eq!(ledger.refused(Some("tbk_wrong"), "").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_tenant_never_receives_another_tenants_events() {
    let ledger = Ledger::start().await;
    let mut p1_book: BTreeSet<u64> = BTreeSet::new();
    p1_book.extend(ledger.register("P-1", "partner", None).await);
    p1_book.extend(ledger.register("C-1", "customer", Some("P-1")).await);
    p1_book.extend(ledger.register("C-2", "customer", Some("P-1")).await);
    let mut foreign: BTreeSet<u64> = BTreeSet::new();
    foreign.extend(ledger.register("P-2", "partner", None).await);
    foreign.extend(ledger.register("E-1", "customer", Some("P-2")).await);
    foreign.extend(ledger.register("D-1", "customer", None).await);
    let partner = ledger.token_for("p1", "partner", "P-1").await;
    let customer = ledger.token_for("c1", "customer", "C-1").await;

    let (mut as_partner, _) = ledger.connect(&partner, "?from=1").await;
    let (mut as_customer, _) = ledger.connect(&customer, "?from=1").await;
    // A browser's way in: the credential as a subprotocol, next to `tollbook`.
    let mut request = ledger.ws_url("?from=1&account=C-1").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", format!("tollbook, tollbook.token.{customer}").parse().unwrap());
    let (mut as_browser, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "tollbook");
    assert_eq!(next_json(&mut as_browser).await["status"], "subscribed");

    let c1_own: Vec<u64> = vec![ledger.pay("C-1", "5").await];
    foreign.insert(ledger.pay("D-1", "5").await);
    foreign.insert(ledger.pay("E-1", "5").await);
    foreign.insert(ledger.pay("P-2", "5").await);
    let p1_paid = ledger.pay("P-1", "50").await;
    let c2_paid = ledger.pay("C-2", "5").await;
    let moved = ledger.write("/api/v1/transfers", json!({"from": "P-1", "to": "C-1", "amount": "7"})).await[0];
    let last = ledger.pay("C-1", "1").await;
    p1_book.extend([c1_own[0], p1_paid, c2_paid, moved, last]);

    let partner_saw: BTreeSet<u64> = positions(&events_until(&mut as_partner, last).await).into_iter().collect();
    assert_eq!(partner_saw, p1_book, "the partner sees its whole book and nothing else");
    let customer_events = events_until(&mut as_customer, last).await;
    let customer_saw: BTreeSet<u64> = positions(&customer_events).into_iter().collect();
    assert!(customer_saw.is_disjoint(&foreign));
    assert!(!customer_saw.contains(&p1_paid) && !customer_saw.contains(&c2_paid), "not its partner's, not C-2's");
    assert!(customer_saw.contains(&c1_own[0]) && customer_saw.contains(&moved), "its own, and the move to it");
    assert!(customer_events.iter().all(|e| e["event"]["accounts"].as_array().unwrap().contains(&json!("C-1"))));
    let browser_saw = positions(&events_until(&mut as_browser, last).await);
    assert_eq!(browser_saw.into_iter().collect::<BTreeSet<_>>(), customer_saw);

    // Filters never widen the scope: a foreign account or book does not exist.
    assert_eq!(ledger.refused(Some(&partner), "?account=D-1").await, StatusCode::NOT_FOUND);
    assert_eq!(ledger.refused(Some(&partner), "?book=P-2").await, StatusCode::NOT_FOUND);
    assert_eq!(ledger.refused(Some(&partner), "?book=operator").await, StatusCode::NOT_FOUND);
    assert_eq!(ledger.refused(Some(&customer), "?account=C-2").await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn alerts_arrive_with_the_operators_message() {
    let ledger = Ledger::start().await;
    ledger.register("C-1", "customer", None).await;
    ledger.pay("C-1", "20").await;
    let template =
        json!({"balance_below": "{account_name} ({account_number}) fell to {balance}, under {threshold} [{alert}]"});
    let (status, body) =
        send(ledger.client.post(ledger.server.url("/api/v1/alert-templates")).bearer_auth(ADMIN_KEY).json(&template))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let broken = json!({"balance_below": "{balanse}"});
    let (status, body) =
        send(ledger.client.post(ledger.server.url("/api/v1/alert-templates")).bearer_auth(ADMIN_KEY).json(&broken))
            .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("balance_below")), "{body}");
    // Thresholds as a form, like every write.
    let response = ledger
        .client
        .post(ledger.server.url("/api/v1/accounts/C-1/alerts"))
        .bearer_auth(ADMIN_KEY)
        .form(&[("balance_below", "10"), ("call_cost_above", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, shown) =
        send(ledger.client.get(ledger.server.url("/api/v1/accounts/C-1/alerts")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(
        (status, shown["balance_below"].to_string().as_str(), &shown["call_cost_above"]),
        (StatusCode::OK, "10.00", &Value::Null),
        "amounts in their canonical form"
    );

    let (mut alerts, _) = ledger.connect(ADMIN_KEY, "?kinds=AlertRaised").await;
    let charge = |amount: &'static str| json!({"account": "C-1", "amount": amount});
    // 20 -> 12 -> 8 (down through 10) -> 5 -> 25 -> 9 (down again): two alerts.
    let mut crossings = Vec::new();
    for (path, body) in [
        ("/api/v1/charges", charge("8")),
        ("/api/v1/charges", charge("4")),
        ("/api/v1/charges", charge("3")),
        ("/api/v1/payments", charge("20")),
        ("/api/v1/charges", charge("16")),
    ] {
        let events = ledger.write(path, body).await;
        crossings.extend(events.into_iter().skip(1));
    }
    assert_eq!(crossings.len(), 2, "one alert per crossing down");
    let received = events_until(&mut alerts, crossings[1]).await;
    assert_eq!(positions(&received), crossings);
    assert_eq!(received[0]["event"]["message"], "Name of C-1 (C-1) fell to 8.00 EUR, under 10.00 EUR [balance_below]");
    assert_eq!(received[1]["event"]["message"], "Name of C-1 (C-1) fell to 9.00 EUR, under 10.00 EUR [balance_below]");
    assert_eq!(received[1]["event"]["data"]["alert"], json!({"balance_below": {"threshold": 10}}));
}

#[tokio::test]
async fn stopping_the_server_closes_open_streams_with_going_away() {
    let ledger = Ledger::start().await;
    let (mut socket, _) = ledger.connect(ADMIN_KEY, "").await;
    let Ledger { server, _data: data, .. } = ledger;
    let stopped = tokio::task::spawn_blocking(move || server.stop());
    // Read while the server stops: once its process is gone, the kernel may answer our
    // unread bytes with a reset that discards the close frame it had sent.
    let closed = loop {
        match tokio::time::timeout(MESSAGE_TIMEOUT, socket.next()).await.expect("no close in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), stopped).await.expect("SIGTERM did not stop the server").unwrap();
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1001), "going away");
    drop(data);
}

#[tokio::test]
async fn a_revoked_credential_receives_nothing_more() {
    let ledger = Ledger::start().await;
    ledger.register("C-1", "customer", None).await;
    let token = ledger.token_for("c1", "customer", "C-1").await;
    let (mut socket, _) = ledger.connect(&token, "").await;
    let before = ledger.pay("C-1", "1").await;
    assert_eq!(positions(&events_until(&mut socket, before).await), vec![before]);
    let (status, _) = send(ledger.client.delete(ledger.server.url("/api/v1/users/c1")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // The stream checks its credential at most a second before it sends an event.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ledger.pay("C-1", "2").await;
    let closed = loop {
        match tokio::time::timeout(MESSAGE_TIMEOUT, socket.next()).await.expect("no close in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(Message::Ping(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1008), "policy violation");
}

/// A costly call, posted as a CDR, alerts once with the call's destination, its billed
/// duration as mm:ss and its cost with the currency; a cheap one does not; and the
/// customer's own stream shows the alert but never the partner's wholesale cost.
#[tokio::test]
async fn a_costly_call_alerts_with_destination_duration_and_cost() {
    let ledger = Ledger::start().await;
    ledger.register("P-1", "partner", None).await;
    ledger.register("C-1", "customer", Some("P-1")).await;
    ledger.write("/api/v1/accounts/C-1/alerts", json!({"call_cost_above": "1.50"})).await;
    ledger.pay("C-1", "100").await;
    ledger.pay("P-1", "100").await;
    let customer = ledger.token_for("c1", "customer", "C-1").await;
    let (mut alerts, _) = ledger.connect(ADMIN_KEY, "?kinds=AlertRaised").await;
    let (mut own, _) = ledger.connect(&customer, "?kinds=CallCharged,AlertRaised").await;
    let call = |id: &str, cost: &str| {
        json!({"id": id, "account": "C-1", "callee": "4930123456", "start": "2026-05-04T10:00:00Z",
               "answer": "2026-05-04T10:00:00Z", "end": "2026-05-04T10:12:34Z", "cost": cost, "partner_cost": "0.42"})
    };
    for (id, cost) in [("cheap", "1.50"), ("costly", "2.75")] {
        let (status, body) =
            send(ledger.client.post(ledger.server.url("/api/v1/cdrs")).bearer_auth(ADMIN_KEY).json(&call(id, cost)))
                .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let alert = next_json(&mut alerts).await;
    assert_eq!(alert["event"]["type"], "AlertRaised", "{alert}");
    assert_eq!(
        alert["event"]["message"], "Name of C-1 (C-1): a call to 4930123456 lasting 12:34 cost 2.75 EUR, over 1.50 EUR",
        "{alert}"
    );
    // The customer sees both charges and the alert, with no wholesale cost anywhere.
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_json(&mut own).await);
    }
    let kinds: Vec<&str> = seen.iter().map(|m| m["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["CallCharged", "CallCharged", "AlertRaised"]);
    // By field and by value, not by substring: a timestamp such as `…:40.428765Z` holds
    // the text `0.42` and is no leak.
    for message in &seen {
        let mut fields = Vec::new();
        leaves(message, "", &mut fields);
        for (path, value) in fields {
            assert!(!path.contains("partner_cost"), "{path} in {message}");
            assert_ne!(value, "0.42", "the wholesale cost at {path} in {message}");
        }
    }
}

/// Every leaf of a JSON value with its path: strings as they are, numbers as written.
fn leaves(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(key, v)| leaves(v, &format!("{path}.{key}"), out)),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| leaves(v, &format!("{path}[{i}]"), out)),
        Value::String(text) => out.push((path.to_owned(), text.clone())),
        other => out.push((path.to_owned(), other.to_string())),
    }
}
