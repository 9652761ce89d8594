//! One ledger opened in process, and requests to its router.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tollbook::ServeArgs;
use tollbook::server::Running;
use tower::ServiceExt as _;

pub const ADMIN_KEY: &str = "in-process-admin-key";
pub const PASSWORD: &str = "correct horse battery";

/// An answer: its status, headers and body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A ledger in a temporary directory with the whole HTTP application over it.
pub struct App {
    running: Option<Running>,
    router: axum::Router,
    _data: tempfile::TempDir,
}

impl App {
    pub async fn open() -> App {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().to_str().unwrap().to_owned();
        // The environment must not choose another store or key for the test.
        let args = ServeArgs::from_flags([
            "--data",
            &data_dir,
            "--admin-key",
            ADMIN_KEY,
            "--store",
            &format!("sled:{data_dir}/events"),
        ])
        .unwrap();
        let running = Running::open(&args).await.unwrap();
        let router = running.app();
        App { running: Some(running), router, _data: data }
    }

    /// Drains the writers and the projector before the directory goes.
    pub async fn close(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// Sends one request, as if from `peer` (the TCP peer the server would see).
    pub async fn send_from(&self, peer: Option<SocketAddr>, mut request: Request<Body>) -> Answer {
        if let Some(peer) = peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        Answer { status: parts.status, headers: parts.headers, body }
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 40000));
        self.send_from(Some(loopback), request).await
    }

    /// A JSON request with a bearer credential (none: no `Authorization`).
    pub async fn call(&self, credential: Option<&str>, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(credential) = credential {
            request = request.header(header::AUTHORIZATION, format!("Bearer {credential}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    /// An admin request that must succeed; its JSON.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(Some(ADMIN_KEY), method, path, body).await;
        assert!(answer.status.is_success(), "{path}: {} {}", answer.status, answer.text());
        answer.json()
    }

    pub async fn open_account(&self, number: &str, kind: &str, partner: Option<&str>) {
        let body = json!({"number": number, "name": format!("{number} Ltd"), "kind": kind, "partner": partner, "currency": "EUR"});
        self.admin(Method::POST, "/api/v1/accounts", Some(body)).await;
    }

    /// A user for `account` with an API token; the token.
    pub async fn token(&self, login: &str, role: &str, account: &str, extra: Value) -> String {
        let user = json!({"login": login, "password": PASSWORD, "role": role, "account": account});
        self.admin(Method::POST, "/api/v1/users", Some(user)).await;
        let mut request = json!({"user": login, "description": "in process"});
        request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let answer = self.admin(Method::POST, "/api/v1/tokens", Some(request)).await;
        answer["token"].as_str().unwrap().to_owned()
    }

    /// An account's balance once the read models reflect `position`.
    pub async fn balance(&self, number: &str, position: u64) -> String {
        let account =
            self.admin(Method::GET, &format!("/api/v1/accounts/{number}?min_position={position}"), None).await;
        account["account"]["balance"].to_string().trim_matches('"').to_owned()
    }

    /// A portal session for `number` through a login link: the cookie (`name=value`) and
    /// the session's CSRF token, read from the overview page.
    pub async fn portal_session(&self, number: &str) -> (String, String) {
        let link = self.admin(Method::POST, &format!("/api/v1/accounts/{number}/login-link"), None).await;
        let url = link["url"].as_str().unwrap();
        let path = &url[url.find("/portal/").unwrap()..];
        let opened = self.send(Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.text());
        let cookie = opened.header(header::SET_COOKIE).unwrap().split(';').next().unwrap().to_owned();
        let page = self.page(&cookie, &format!("/portal/accounts/{number}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let html = page.text();
        let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        (cookie, csrf)
    }

    pub async fn page(&self, cookie: &str, path: &str) -> Answer {
        self.send(Request::get(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap()).await
    }

    pub async fn post_form(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = serde_urlencoded::to_string(form).unwrap();
        let request = Request::post(path)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }
}
