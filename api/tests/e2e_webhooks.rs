//! End to end: webhooks from the real binary to a real HTTP receiver on loopback. Kill -9
//! and restart during deliveries, a receiver that fails for a while, one that always
//! fails, one too slow to answer, and tenants.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{ADMIN_KEY, send};

/// How long a test waits for deliveries before it fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Fast retries, so that the tests do not wait for production backoff; and the receivers
/// are on loopback, which webhooks may reach only when the operator allows it.
const FAST_RETRIES: [&str; 8] = [
    "--webhook-backoff-ms",
    "50",
    "--webhook-retry-for",
    "60s",
    "--webhook-timeout",
    "5s",
    "--webhook-allow-private",
    LOOPBACK,
];
const LOOPBACK: &str = "127.0.0.0/8";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    body: Value,
    raw: Bytes,
    signature: String,
    answered: u16,
}

impl Received {
    fn position(&self) -> u64 {
        self.body["position"].as_u64().unwrap()
    }

    /// Checks `X-Tollbook-Signature` as a receiver would.
    fn signed_with(&self, secret: &str) -> bool {
        let Some((t, v1)) = self.signature.split_once(",v1=") else { return false };
        let Some(t) = t.strip_prefix("t=") else { return false };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let mut message = format!("{t}.").into_bytes();
        message.extend_from_slice(&self.raw);
        let fresh = t.parse::<i64>().is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
        fresh && hex::decode(v1).is_ok_and(|tag| ring::hmac::verify(&key, &message, &tag).is_ok())
    }
}

#[derive(Default)]
struct Behaviour {
    /// Answer 500 to this many requests first.
    fail_first: usize,
    /// Answer 500 to every delivery of a payment of this amount.
    fail_amount: Option<String>,
    /// Wait this long before answering.
    delay: Duration,
    /// Once this many requests were answered 200, answer no more (hang).
    hang_after: Option<usize>,
}

#[derive(Clone, Default)]
struct Receiver {
    behaviour: Arc<Mutex<Behaviour>>,
    received: Arc<Mutex<Vec<Received>>>,
    url: String,
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, raw: Bytes) -> AxumStatus {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let (delay, status) = {
        let mut behaviour = receiver.behaviour.lock().unwrap();
        let amount = body["event"]["data"]["amount"].to_string();
        let status = if behaviour.fail_first > 0 {
            behaviour.fail_first -= 1;
            AxumStatus::INTERNAL_SERVER_ERROR
        } else if behaviour.fail_amount.as_ref() == Some(&amount) {
            AxumStatus::INTERNAL_SERVER_ERROR
        } else {
            AxumStatus::OK
        };
        let answered = receiver.received.lock().unwrap().iter().filter(|r| r.answered == 200).count();
        let hang = behaviour.hang_after.is_some_and(|limit| answered >= limit);
        (if hang { Duration::from_secs(300) } else { behaviour.delay }, status)
    };
    tokio::time::sleep(delay).await;
    let signature = headers.get("x-tollbook-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    receiver.received.lock().unwrap().push(Received { body, raw, signature, answered: status.as_u16() });
    status
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = Receiver { behaviour: Arc::new(Mutex::new(behaviour)), ..Receiver::default() };
        receiver.url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The positions answered 200, in the order they arrived.
    fn delivered(&self) -> Vec<u64> {
        self.received().iter().filter(|r| r.answered == 200).map(Received::position).collect()
    }

    /// Waits until every one of `positions` has been answered 200.
    async fn wait_for(&self, positions: &[u64]) {
        let started = Instant::now();
        loop {
            let delivered: BTreeSet<u64> = self.delivered().into_iter().collect();
            if positions.iter().all(|p| delivered.contains(p)) {
                return;
            }
            assert!(started.elapsed() < DELIVERY_TIMEOUT, "missing deliveries: have {delivered:?}, want {positions:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(server: &common::Server) -> Api {
        Api { base: server.base.clone(), client: reqwest::Client::new() }
    }

    async fn call(
        &self,
        credential: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(credential);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn write(&self, path: &str, body: Value) -> Vec<u64> {
        let (status, body) = self.call(ADMIN_KEY, reqwest::Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body["events"].as_array().unwrap().iter().map(|e| e["position"].as_u64().unwrap()).collect()
    }

    async fn register(&self, number: &str, partner: Option<&str>) {
        let kind = if number.starts_with('P') { "partner" } else { "customer" };
        let mut body = json!({"number": number, "name": number, "kind": kind, "currency": "EUR"});
        if let Some(partner) = partner {
            body["partner"] = json!(partner);
        }
        self.write("/api/v1/accounts", body).await;
    }

    async fn pay(&self, account: &str, amount: &str) -> u64 {
        self.write("/api/v1/payments", json!({"account": account, "amount": amount})).await[0]
    }

    /// Subscribes `url`; answers the id and the secret.
    async fn subscribe(&self, credential: &str, body: Value) -> (String, String) {
        let (status, answer) = self.call(credential, reqwest::Method::POST, "/api/v1/webhooks", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        (answer["webhook"]["id"].as_str().unwrap().to_owned(), answer["secret"].as_str().unwrap().to_owned())
    }

    async fn deliveries(&self, id: &str) -> Vec<Value> {
        let path = format!("/api/v1/webhooks/{id}/deliveries?limit=1000");
        let (status, body) = self.call(ADMIN_KEY, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["deliveries"].as_array().unwrap().clone()
    }

    /// Waits until the delivery log holds `count` finished deliveries.
    async fn finished_deliveries(&self, id: &str, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let log = self.deliveries(id).await;
            if log.iter().filter(|d| d["status"] != "pending").count() >= count {
                return log;
            }
            assert!(started.elapsed() < DELIVERY_TIMEOUT, "the log has not finished: {log:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// First occurrences, in arrival order: what a receiver that drops repeats would keep.
fn first_occurrences(positions: &[u64]) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    positions.iter().copied().filter(|p| seen.insert(*p)).collect()
}

#[tokio::test]
async fn kill_and_restart_during_deliveries_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["--admin-key", ADMIN_KEY].into_iter().chain(FAST_RETRIES).collect();
    let server = common::Server::start(data.path(), &args).await;
    let api = Api::new(&server);
    // The receiver stops answering after ten deliveries, so that the server dies with a
    // delivery under way and thirty more to go.
    let receiver = Receiver::start(Behaviour { hang_after: Some(10), ..Behaviour::default() }).await;
    let (id, secret) = api.subscribe(ADMIN_KEY, json!({"url": receiver.url, "kinds": "PaymentReceived"})).await;
    api.register("C-1", None).await;
    let mut payments = Vec::new();
    for i in 1..=40 {
        payments.push(api.pay("C-1", &i.to_string()).await);
    }
    receiver.wait_for(&payments[..10]).await;
    drop(server); // SIGKILL: no shutdown, no flush.
    assert_eq!(receiver.delivered(), payments[..10], "the crash came during the eleventh delivery");
    receiver.behaviour.lock().unwrap().hang_after = None;

    let server = common::Server::start(data.path(), &args).await;
    let api = Api::new(&server);
    for i in 41..=50 {
        payments.push(api.pay("C-1", &i.to_string()).await);
    }
    receiver.wait_for(&payments).await;

    let received = receiver.received();
    assert!(received.iter().all(|r| r.signed_with(&secret)), "every delivery is signed with the secret");
    assert!(received.iter().all(|r| r.body["subscription"] == json!(id)));
    let delivered = receiver.delivered();
    assert_eq!(first_occurrences(&delivered), payments, "at least once, in log order, only what was asked");
    // A repeat comes only from the restart: the worker resumes from its last saved cursor.
    let repeats = delivered.len() - payments.len();
    assert!(repeats <= payments.len(), "{repeats} repeats");
    let log = api.finished_deliveries(&id, payments.len()).await;
    let logged: Vec<u64> = log.iter().map(|d| d["position"].as_u64().unwrap()).collect();
    assert_eq!(logged, payments);
    assert!(
        log.iter()
            .all(|d| d["status"] == "delivered"
                && d["attempts"].as_array().unwrap().last().unwrap()["status_code"] == 200)
    );
}

#[tokio::test]
async fn a_receiver_failing_for_a_while_gets_everything_after_it_recovers() {
    let data = tempfile::tempdir().unwrap();
    let args: Vec<&str> =
        ["--admin-key", ADMIN_KEY, "--metrics-listen", "127.0.0.1:0"].into_iter().chain(FAST_RETRIES).collect();
    let server = common::Server::start(data.path(), &args).await;
    let api = Api::new(&server);
    let receiver = Receiver::start(Behaviour { fail_first: 6, ..Behaviour::default() }).await;
    let (id, secret) = api.subscribe(ADMIN_KEY, json!({"url": receiver.url, "kinds": ["PaymentReceived"]})).await;
    api.register("C-1", None).await;
    let mut payments = Vec::new();
    for i in 1..=5 {
        payments.push(api.pay("C-1", &i.to_string()).await);
    }
    receiver.wait_for(&payments).await;
    assert_eq!(receiver.delivered(), payments, "in order, each once");
    let received = receiver.received();
    assert_eq!(received.iter().filter(|r| r.answered == 500).count(), 6);
    assert!(received.iter().all(|r| r.signed_with(&secret)));
    let log = api.finished_deliveries(&id, 5).await;
    let first_attempts: Vec<&Value> = log[0]["attempts"].as_array().unwrap().iter().collect();
    assert_eq!(first_attempts.len(), 7, "six failures, then success: {log:?}");
    assert!(first_attempts[..6].iter().all(|a| a["status_code"] == 500 && a["error"].is_string()));
    assert_eq!(first_attempts[6]["status_code"], 200);
    assert!(log.iter().all(|d| d["status"] == "delivered"));
    let metrics = server.metrics().await;
    assert!(metrics.contains("tollbook_webhook_deliveries_total{status=\"delivered\"} 5"), "{metrics}");
    assert!(metrics.contains("tollbook_webhook_attempts_total 11"), "{metrics}");
}

#[tokio::test]
async fn a_failing_delivery_is_marked_failed_and_a_slow_receiver_delays_no_one() {
    let data = tempfile::tempdir().unwrap();
    let args = [
        "--admin-key",
        ADMIN_KEY,
        "--webhook-backoff-ms",
        "100",
        "--webhook-retry-for",
        "2s",
        "--webhook-timeout",
        "1s",
        "--webhook-allow-private",
        LOOPBACK,
    ];
    let server = common::Server::start(data.path(), &args).await;
    let api = Api::new(&server);
    let picky = Receiver::start(Behaviour { fail_amount: Some("13".into()), ..Behaviour::default() }).await;
    let slow = Receiver::start(Behaviour { delay: Duration::from_secs(30), ..Behaviour::default() }).await;
    let prompt = Receiver::start(Behaviour::default()).await;
    let kinds = json!(["PaymentReceived"]);
    let (picky_id, _) = api.subscribe(ADMIN_KEY, json!({"url": picky.url, "kinds": kinds})).await;
    let (slow_id, _) = api.subscribe(ADMIN_KEY, json!({"url": slow.url, "kinds": kinds})).await;
    api.subscribe(ADMIN_KEY, json!({"url": prompt.url, "kinds": kinds})).await;
    api.register("C-1", None).await;
    let posted = Instant::now();
    let payments = vec![api.pay("C-1", "13").await, api.pay("C-1", "1").await];
    prompt.wait_for(&payments).await;
    assert!(posted.elapsed() < Duration::from_secs(10), "the slow receiver held up another: {:?}", posted.elapsed());

    // The picky receiver refuses the first: failed after the retry window, then the next.
    let log = api.finished_deliveries(&picky_id, 2).await;
    assert_eq!(log[0]["status"], "failed", "{log:?}");
    assert_eq!(log[0]["position"].as_u64(), Some(payments[0]));
    let attempts = log[0]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3 && attempts.iter().all(|a| a["status_code"] == 500), "{attempts:?}");
    assert_eq!(log[1]["status"], "delivered");
    assert_eq!(picky.delivered(), vec![payments[1]]);

    // The slow one times out: failed with no status code, and it moves on too.
    let log = api.finished_deliveries(&slow_id, 1).await;
    assert_eq!(log[0]["status"], "failed");
    let attempt = &log[0]["attempts"][0];
    assert!(attempt["status_code"].is_null() && attempt["error"].as_str().unwrap().contains("no answer"), "{attempt}");
}

#[tokio::test]
async fn webhooks_belong_to_their_tenant() {
    let data = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["--admin-key", ADMIN_KEY].into_iter().chain(FAST_RETRIES).collect();
    let server = common::Server::start(data.path(), &args).await;
    let api = Api::new(&server);
    api.register("P-1", None).await;
    api.register("C-1", Some("P-1")).await;
    api.register("D-1", None).await;
    let mut tokens = Vec::new();
    for (login, role, account) in [("p1", "partner", "P-1"), ("c1", "customer", "C-1")] {
        let user = json!({"login": login, "role": role, "account": account});
        let (status, _) = api.call(ADMIN_KEY, reqwest::Method::POST, "/api/v1/users", Some(user)).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, token) =
            api.call(ADMIN_KEY, reqwest::Method::POST, "/api/v1/tokens", Some(json!({"user": login}))).await;
        tokens.push(token["token"].as_str().unwrap().to_owned());
    }
    let (partner, customer) = (&tokens[0], &tokens[1]);
    let partners_receiver = Receiver::start(Behaviour::default()).await;
    let operators_receiver = Receiver::start(Behaviour::default()).await;
    let (partner_hook, _) = api.subscribe(partner, json!({"url": partners_receiver.url})).await;
    let (operator_hook, _) = api.subscribe(ADMIN_KEY, json!({"url": operators_receiver.url})).await;

    let post = reqwest::Method::POST;
    let (status, _) =
        api.call(customer, post.clone(), "/api/v1/webhooks", Some(json!({"url": partners_receiver.url}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let foreign_filter = json!({"url": partners_receiver.url, "account": "D-1"});
    let (status, _) = api.call(partner, post.clone(), "/api/v1/webhooks", Some(foreign_filter)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let bad_url = json!({"url": "ftp://example.com/x"});
    let (status, body) = api.call(partner, post.clone(), "/api/v1/webhooks", Some(bad_url)).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")));
    let (_, list) = api.call(partner, reqwest::Method::GET, "/api/v1/webhooks", None).await;
    let listed: Vec<&str> = list["webhooks"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![partner_hook.as_str()]);
    assert!(list["webhooks"][0].get("secret").is_none(), "the secret is shown once");
    let (status, _) = api.call(partner, reqwest::Method::GET, &format!("/api/v1/webhooks/{operator_hook}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        api.call(partner, reqwest::Method::DELETE, &format!("/api/v1/webhooks/{operator_hook}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let operators = api.pay("D-1", "5").await;
    let partners = api.pay("C-1", "5").await;
    operators_receiver.wait_for(&[operators, partners]).await;
    partners_receiver.wait_for(&[partners]).await;
    assert!(!partners_receiver.delivered().contains(&operators), "the operator's book is not the partner's");

    let (status, _) =
        api.call(partner, reqwest::Method::DELETE, &format!("/api/v1/webhooks/{partner_hook}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(partner, reqwest::Method::GET, &format!("/api/v1/webhooks/{partner_hook}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let after = api.pay("C-1", "1").await;
    operators_receiver.wait_for(&[after]).await;
    assert!(!partners_receiver.delivered().contains(&after), "a deleted webhook delivers nothing more");

    // A partner holds at most 20 webhooks, however many registrations race for them.
    let attempts = (0..26)
        .map(|_| api.call(partner, post.clone(), "/api/v1/webhooks", Some(json!({"url": partners_receiver.url}))));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts).await.into_iter().map(|(s, _)| s).collect();
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, refused), (20, 6), "{statuses:?}");
    let (_, list) = api.call(partner, reqwest::Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 20);
}
