//! Signing in as an attacker would try it, on the real binary: sessions that must end with
//! the credential that opened them, guessing passwords (throttled per login and per
//! address, without locking out anyone else), allowlisted tokens used from elsewhere, and
//! many sign-ins and webhook changes at once (the auth and notification stores' flushes).
//!
//! Some tests send from 127.0.0.2 as well as 127.0.0.1: on Linux the whole of 127/8 is
//! the loopback interface, so a client socket bound there reaches the server from a
//! second address.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Server, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const OTHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A client sending from `address`.
fn client_from(address: IpAddr) -> reqwest::Client {
    reqwest::Client::builder().local_address(address).build().unwrap()
}

struct Api {
    server: Server,
    client: reqwest::Client,
    /// After the server: dropped once it is stopped.
    _data: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        Api::start_with(&[]).await
    }

    async fn start_with(extra_args: &[&str]) -> Api {
        let data = tempfile::tempdir().unwrap();
        let args: Vec<&str> = ["--admin-key", ADMIN_KEY].into_iter().chain(extra_args.iter().copied()).collect();
        let server = Server::start(data.path(), &args).await;
        Api { server, client: reqwest::Client::new(), _data: data }
    }

    async fn call(
        &self,
        credential: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(&self.client, credential, method, path, body).await
    }

    async fn call_with(
        &self,
        client: &reqwest::Client,
        credential: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = client.request(method, self.server.url(path));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(Some(ADMIN_KEY), method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// A customer account and a user of it with a password.
    async fn customer_user(&self, login: &str, number: &str) {
        let account = json!({"number": number, "name": "n", "kind": "customer", "currency": "EUR"});
        self.admin(Method::POST, "/api/v1/accounts", account).await;
        let user = json!({"login": login, "password": PASSWORD, "role": "customer", "account": number});
        self.admin(Method::POST, "/api/v1/users", user).await;
    }

    /// A new API token for `user`: its secret and id.
    async fn token(&self, user: &str, extra: Value) -> (String, String) {
        let mut body = json!({"user": user});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let answer = self.admin(Method::POST, "/api/v1/tokens", body).await;
        (answer["token"].as_str().unwrap().to_owned(), answer["details"]["id"].as_str().unwrap().to_owned())
    }

    async fn login_with(&self, client: &reqwest::Client, body: Value) -> (StatusCode, Value) {
        self.call_with(client, None, Method::POST, "/api/v1/sessions", Some(body)).await
    }

    async fn login(&self, body: Value) -> (StatusCode, Value) {
        self.login_with(&self.client, body).await
    }

    /// Signs in and gives the session's access and refresh tokens.
    async fn session(&self, body: Value) -> (String, String) {
        let (status, answer) = self.login(body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        (answer["access_token"].as_str().unwrap().to_owned(), answer["refresh_token"].as_str().unwrap().to_owned())
    }

    async fn me(&self, credential: &str) -> (StatusCode, Value) {
        self.call(Some(credential), Method::GET, "/api/v1/me", None).await
    }

    async fn refresh_with(&self, client: &reqwest::Client, refresh_token: &str) -> (StatusCode, Value) {
        let body = json!({"refresh_token": refresh_token});
        self.call_with(client, None, Method::POST, "/api/v1/sessions/refresh", Some(body)).await
    }

    async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.refresh_with(&self.client, refresh_token).await
    }
}

/// Issue 14, defect 2: a session opened with an API token used to keep reading and
/// refreshing after the token was revoked or expired. Now it ends with the token, and
/// every session ends with its user (removed, or made again with another role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_with_the_credential_that_opened_it() {
    let api = Api::start().await;
    api.customer_user("ann", "C1").await;

    // Revoked: the session's access token and refresh token stop at once.
    let (token, token_id) = api.token("ann", json!({})).await;
    let (access, refresh) = api.session(json!({"login": "ann", "token": token})).await;
    let (password_access, _) = api.session(json!({"login": "ann", "password": PASSWORD})).await;
    assert_eq!(api.me(&access).await.0, StatusCode::OK);
    let (status, _) = api.call(Some(ADMIN_KEY), Method::DELETE, &format!("/api/v1/tokens/{token_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.me(&access).await.0, StatusCode::UNAUTHORIZED, "a session opened with a revoked token");
    let (status, answer) = api.refresh(&refresh).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "its refresh: {answer}");
    assert_eq!(api.me(&password_access).await.0, StatusCode::OK, "a password session of the user goes on");

    // Expired: a session opened with a token that expires in two seconds ends with it,
    // and so does its refresh, though sessions last far longer.
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (token, _) = api.token("ann", json!({"expires_at": expires_at})).await;
    let (status, opened) = api.login(json!({"login": "ann", "token": token})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let refresh_expires_at = chrono::DateTime::parse_from_rfc3339(opened["refresh_expires_at"].as_str().unwrap());
    assert!(refresh_expires_at.unwrap() <= chrono::DateTime::parse_from_rfc3339(&expires_at).unwrap());
    let (first_access, refresh) =
        (opened["access_token"].as_str().unwrap().to_owned(), opened["refresh_token"].as_str().unwrap().to_owned());
    assert_eq!(api.me(&first_access).await.0, StatusCode::OK);
    let (status, renewed) = api.refresh(&refresh).await;
    assert_eq!(status, StatusCode::CREATED, "before expiry: {renewed}");
    let (access, refresh) =
        (renewed["access_token"].as_str().unwrap().to_owned(), renewed["refresh_token"].as_str().unwrap().to_owned());
    assert_eq!(api.me(&access).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(api.me(&token).await.0, StatusCode::UNAUTHORIZED, "the expired token itself");
    assert_eq!(api.me(&access).await.0, StatusCode::UNAUTHORIZED, "a session opened with an expired token");
    assert_eq!(api.refresh(&refresh).await.0, StatusCode::UNAUTHORIZED, "its refresh");

    // The user made again under the same login with another role: nothing of the old
    // user's works for the new one, password sessions and token sessions alike.
    let (token, _) = api.token("ann", json!({})).await;
    let (token_access, token_refresh) = api.session(json!({"login": "ann", "token": token})).await;
    let (password_access, password_refresh) = api.session(json!({"login": "ann", "password": PASSWORD})).await;
    let partner = json!({"number": "P1", "name": "n", "kind": "partner", "currency": "EUR"});
    api.admin(Method::POST, "/api/v1/accounts", partner).await;
    let (status, _) = api.call(Some(ADMIN_KEY), Method::DELETE, "/api/v1/users/ann", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let again = json!({"login": "ann", "password": PASSWORD, "role": "partner", "account": "P1"});
    api.admin(Method::POST, "/api/v1/users", again).await;
    for (what, credential) in
        [("token", &token), ("token session", &token_access), ("password session", &password_access)]
    {
        assert_eq!(api.me(credential).await.0, StatusCode::UNAUTHORIZED, "{what} of the removed user");
    }
    for refresh in [&token_refresh, &password_refresh] {
        assert_eq!(api.refresh(refresh).await.0, StatusCode::UNAUTHORIZED);
    }
    let (access, _) = api.session(json!({"login": "ann", "password": PASSWORD})).await;
    let (status, who) = api.me(&access).await;
    assert_eq!((status, who["role"].as_str()), (StatusCode::OK, Some("partner")), "the new user signs in");
}

/// Issue 14, defect 3: wrong passwords were answered 401 for ever. Now a login is
/// throttled after its burst of failures: 429 with `Retry-After`, even for the right
/// password while it lasts, and for the portal's form too; another user signs in at once,
/// from another address and from the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_throttle_that_login_and_no_one_else() {
    let api = Api::start().await;
    api.customer_user("ann", "C1").await;
    api.customer_user("bob", "C2").await;
    let mut throttled = None;
    for attempt in 0..32 {
        let response = api
            .client
            .post(api.server.url("/api/v1/sessions"))
            .json(&json!({"login": "ann", "password": format!("wrong guess {attempt}")}))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::UNAUTHORIZED => assert!(throttled.is_none(), "a 401 after a 429, at attempt {attempt}"),
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "too_many_attempts", "{body}");
                throttled.get_or_insert(attempt);
            }
            other => panic!("attempt {attempt}: {other}"),
        }
    }
    let first = throttled.expect("30 wrong passwords were never throttled");
    assert!((5..=20).contains(&first), "throttled from attempt {first}");

    // While throttled, the right password is refused too: otherwise a guesser would
    // still learn which guess is right. It costs no hash either way.
    let (status, answer) = api.login(json!({"login": "ann", "password": PASSWORD})).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts")));
    let form = api
        .client
        .post(api.server.url("/portal/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("login=ann&password={}", PASSWORD.replace(' ', "+")))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::TOO_MANY_REQUESTS, "the portal's form shares the count");
    assert!(form.headers().contains_key("retry-after"));

    // Nobody else is held back: bob, from another address and from the guesser's.
    let elsewhere = client_from(OTHER_ADDRESS);
    let (status, answer) = api.login_with(&elsewhere, json!({"login": "bob", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, answer) = api.login(json!({"login": "bob", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// One address guessing many logins is throttled as an address: the logins it has not
/// tried yet are refused to it, and still open to everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_spraying_logins_is_throttled_as_an_address() {
    let api = Api::start().await;
    api.customer_user("bob", "C2").await;
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(api.login(json!({"login": format!("user{i}"), "password": "wrong guess"})).await.0);
    }
    assert!(statuses[..30].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    // A slow machine may see one failure come back (one per 5 s) before the block starts.
    let first = statuses.iter().position(|s| *s == StatusCode::TOO_MANY_REQUESTS).expect("never throttled");
    assert!(first <= 32, "{statuses:?}");
    assert!(statuses[first..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert_eq!(api.login(json!({"login": "bob", "password": PASSWORD})).await.0, StatusCode::TOO_MANY_REQUESTS);
    let elsewhere = client_from(OTHER_ADDRESS);
    let (status, answer) = api.login_with(&elsewhere, json!({"login": "bob", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// Issue 14, defect 3: 40 wrong logins at once from one address took every password
/// check, and another user's right password got 503. Now one address holds a bounded
/// share of them: the other user signs in, every time, while the flood lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_logins_from_one_address_refuses_no_one_elsewhere() {
    let api = Api::start().await;
    api.customer_user("ann", "C1").await;
    api.customer_user("bob", "C2").await;
    let flood = futures::future::join_all((0..40).map(|i| {
        let request = api
            .client
            .post(api.server.url("/api/v1/sessions"))
            .json(&json!({"login": "ann", "password": format!("wrong guess {i}")}));
        async move { request.send().await.unwrap().status() }
    }));
    let honest = async {
        let elsewhere = client_from(OTHER_ADDRESS);
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(api.login_with(&elsewhere, json!({"login": "bob", "password": PASSWORD})).await.0);
        }
        statuses
    };
    let (flooded, honest) = tokio::join!(flood, honest);
    assert!(honest.iter().all(|s| *s == StatusCode::CREATED), "bob's logins during the flood: {honest:?}");
    assert!(flooded.iter().all(|s| matches!(s.as_u16(), 401 | 429)), "{flooded:?}");
    assert!(flooded.contains(&StatusCode::TOO_MANY_REQUESTS), "{flooded:?}");
}

/// Issue 14, defect 10d: an allowlisted token used from elsewhere said "the login and
/// secret do not match" at login and a bare `unauthorized` on a request. Both now say
/// `address_not_allowed`, and so does a session it opened, used or refreshed elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlisted_token_from_a_refused_address_says_so() {
    let api = Api::start().await;
    api.customer_user("ann", "C1").await;
    let (faraway, _) = api.token("ann", json!({"allowed_ips": ["10.0.0.0/8"]})).await;
    let (status, answer) = api.me(&faraway).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("address_not_allowed")), "{answer}");
    let (status, answer) = api.login(json!({"login": "ann", "token": faraway})).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("address_not_allowed")), "{answer}");
    // The token of another login, a wrong token: still the plain refusal, telling nothing.
    let (status, answer) = api.login(json!({"login": "someone", "token": faraway})).await;
    assert_eq!(answer["error"], "invalid_credentials", "{status} {answer}");
    let (status, answer) = api.me("tbk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(answer["error"], "unauthorized", "{status} {answer}");

    // A session opened where the token is allowed keeps the restriction.
    let (second_only, _) = api.token("ann", json!({"allowed_ips": "127.0.0.2/32"})).await;
    let elsewhere = client_from(OTHER_ADDRESS);
    let (status, opened) = api.login_with(&elsewhere, json!({"login": "ann", "token": second_only})).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let access = opened["access_token"].as_str().unwrap();
    let refresh = opened["refresh_token"].as_str().unwrap();
    let (status, answer) = api.me(access).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("address_not_allowed")), "{answer}");
    let (status, answer) = api.refresh(refresh).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("address_not_allowed")), "{answer}");
    let (status, answer) = api.call_with(&elsewhere, Some(access), Method::GET, "/api/v1/me", None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = api.refresh_with(&elsewhere, refresh).await;
    assert_eq!(status, StatusCode::CREATED, "the refused refresh did not use the refresh token up: {answer}");
}

/// Issue 14, defect 10c: the auth and notification stores flushed with sled's
/// `flush_async`, which deadlocks when called concurrently. 64 sign-ins and 32 webhook
/// changes at once must all finish, quickly, and all be there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_logins_and_webhook_changes_at_once_all_complete() {
    const LOGINS: usize = 64;
    const WEBHOOKS: usize = 32;
    // The webhooks point at a closed loopback port: nothing is delivered anywhere else.
    let api = Api::start_with(&["--webhook-allow-private", "127.0.0.0/8"]).await;
    api.customer_user("ann", "C1").await;
    let (token, _) = api.token("ann", json!({})).await;
    let started = Instant::now();
    let logins = futures::future::join_all((0..LOGINS).map(|_| api.login(json!({"login": "ann", "token": token}))));
    // Each webhook task creates one, and every other one deletes its own right away.
    let webhooks = futures::future::join_all((0..WEBHOOKS).map(|i| {
        let api = &api;
        async move {
            let body = json!({"url": format!("http://127.0.0.1:9/hook-{i}"), "description": format!("hook {i}")});
            let (status, created) = api.call(Some(ADMIN_KEY), Method::POST, "/api/v1/webhooks", Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            let id = created["webhook"]["id"].as_str().unwrap().to_owned();
            if i % 2 == 0 {
                let (status, answer) =
                    api.call(Some(ADMIN_KEY), Method::DELETE, &format!("/api/v1/webhooks/{id}"), None).await;
                assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
                None
            } else {
                Some(id)
            }
        }
    }));
    let (logins, kept) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(logins, webhooks) })
        .await
        .expect("64 logins and 32 webhook changes did not finish within a minute");
    eprintln!("{LOGINS} logins and {WEBHOOKS} webhook changes took {:?}", started.elapsed());

    let mut sessions = std::collections::HashSet::new();
    for (status, answer) in &logins {
        assert_eq!(*status, StatusCode::CREATED, "{answer}");
        assert_eq!(api.me(answer["access_token"].as_str().unwrap()).await.0, StatusCode::OK);
        sessions.insert(answer["session_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sessions.len(), LOGINS, "every login its own session");
    let mut kept: Vec<String> = kept.into_iter().flatten().collect();
    kept.sort();
    let (status, listed) = api.call(Some(ADMIN_KEY), Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut listed: Vec<String> =
        listed["webhooks"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_owned()).collect();
    listed.sort();
    assert_eq!(listed, kept, "exactly the webhooks not deleted remain");
    assert_eq!(kept.len(), WEBHOOKS / 2);
}
