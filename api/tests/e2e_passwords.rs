//! Passwords on the real binary: a user changes its own (the API and the portal), an admin
//! or a partner sets a temporary one that must be changed at the next sign-in, and every
//! change ends the user's other sessions: their access and refresh tokens, and their
//! portal cookies, stop working at once.

mod common;

use common::{ADMIN_KEY, Server, send};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const FIRST: &str = "first password 1";
const SECOND: &str = "second password 2";
const TEMPORARY: &str = "temporary password";

async fn call(
    server: &Server,
    credential: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

async fn admin(server: &Server, method: Method, path: &str, body: Value) -> Value {
    let (status, answer) = call(server, Some(ADMIN_KEY), method, path, Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// A partner P1 with customer C1 (user `ann`) and partner user `pat`; an operator's
/// customer C2 with user `bob`.
async fn setup(server: &Server) {
    let accounts = [
        json!({"number": "P1", "name": "P", "kind": "partner", "currency": "EUR"}),
        json!({"number": "C1", "name": "C", "kind": "customer", "currency": "EUR", "partner": "P1"}),
        json!({"number": "C2", "name": "D", "kind": "customer", "currency": "EUR"}),
    ];
    for account in accounts {
        admin(server, Method::POST, "/api/v1/accounts", account).await;
    }
    let users = [("ann", "customer", "C1"), ("pat", "partner", "P1"), ("bob", "customer", "C2")];
    for (login, role, account) in users {
        let user = json!({"login": login, "password": FIRST, "role": role, "account": account});
        admin(server, Method::POST, "/api/v1/users", user).await;
    }
}

async fn login(server: &Server, body: Value) -> (StatusCode, Value) {
    call(server, None, Method::POST, "/api/v1/sessions", Some(body)).await
}

/// A session's access and refresh tokens.
async fn session(server: &Server, user: &str, password: &str) -> (String, String) {
    let (status, answer) = login(server, json!({"login": user, "password": password})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    (answer["access_token"].as_str().unwrap().to_owned(), answer["refresh_token"].as_str().unwrap().to_owned())
}

async fn me(server: &Server, access: &str) -> StatusCode {
    call(server, Some(access), Method::GET, "/api/v1/me", None).await.0
}

async fn refresh(server: &Server, refresh_token: &str) -> StatusCode {
    let body = json!({"refresh_token": refresh_token});
    call(server, None, Method::POST, "/api/v1/sessions/refresh", Some(body)).await.0
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Signs in to the portal with a form: the status and the cookie (`name=value`), if set.
async fn portal_login(server: &Server, form: &[(&str, &str)]) -> (StatusCode, Option<String>, String) {
    let response = no_redirects().post(server.url("/portal/login")).form(form).send().await.unwrap();
    let status = response.status();
    let cookie = response.headers().get(SET_COOKIE).map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned());
    (status, cookie, response.text().await.unwrap())
}

async fn portal_page(server: &Server, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = no_redirects().get(server.url(path)).header(COOKIE, cookie).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_changes_its_own_password_and_its_other_sessions_end() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    setup(&server).await;
    let (this_access, this_refresh) = session(&server, "ann", FIRST).await;
    let (other_access, other_refresh) = session(&server, "ann", FIRST).await;
    let (bob_access, _) = session(&server, "bob", FIRST).await;
    let (status, _, _) = portal_login(&server, &[("login", "ann"), ("password", FIRST)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, portal_cookie, _) = portal_login(&server, &[("login", "ann"), ("password", FIRST)]).await;
    let portal_cookie = portal_cookie.expect("a portal session");
    assert_eq!(portal_page(&server, &portal_cookie, "/portal/accounts/C1").await.0, StatusCode::OK);
    // An API token is a credential of its own: it outlives the change.
    let token = admin(&server, Method::POST, "/api/v1/tokens", json!({"user": "ann"})).await;
    let api_token = token["token"].as_str().unwrap().to_owned();

    let path = "/api/v1/me/password";
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, answer) =
        call(&server, Some(&this_access), Method::PUT, path, Some(change("wrong one!", SECOND))).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::FORBIDDEN, Some("current_password_wrong")), "{answer}");
    assert_eq!(answer["field"], "current_password");
    let (status, answer) = call(&server, Some(&this_access), Method::PUT, path, Some(change(FIRST, "short"))).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("new_password")), "{answer}");
    let (status, answer) = call(&server, Some(&this_access), Method::PUT, path, Some(change(FIRST, FIRST))).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("password_unchanged")), "{answer}");
    let (status, answer) = call(&server, Some(ADMIN_KEY), Method::PUT, path, Some(change(FIRST, SECOND))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the admin key has no password: {answer}");
    // Nothing so far changed anything.
    assert_eq!(me(&server, &other_access).await, StatusCode::OK);

    let (status, answer) = call(&server, Some(&this_access), Method::PUT, path, Some(change(FIRST, SECOND))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    assert_eq!(me(&server, &this_access).await, StatusCode::OK, "the session the change came from stays");
    assert_eq!(refresh(&server, &this_refresh).await, StatusCode::CREATED);
    assert_eq!(me(&server, &other_access).await, StatusCode::UNAUTHORIZED, "another session's token stops working");
    assert_eq!(refresh(&server, &other_refresh).await, StatusCode::UNAUTHORIZED, "and cannot be refreshed");
    let (status, _) = portal_page(&server, &portal_cookie, "/portal/accounts/C1").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the portal session ended: to the sign-in page");
    assert_eq!(me(&server, &bob_access).await, StatusCode::OK, "another user's session is not touched");
    assert_eq!(me(&server, &api_token).await, StatusCode::OK);

    let (status, _) = login(&server, json!({"login": "ann", "password": FIRST})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password no longer opens a session");
    session(&server, "ann", SECOND).await;
    let (_, user) = call(&server, Some(ADMIN_KEY), Method::GET, "/api/v1/users/ann", None).await;
    assert_eq!(user["user"]["password_must_change"], false);
    assert!(user["user"]["password_changed_at"].is_string(), "{user}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_password_ends_every_session_and_must_be_changed_at_sign_in() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    setup(&server).await;
    let (ann_access, ann_refresh) = session(&server, "ann", FIRST).await;

    let path = "/api/v1/users/ann/password";
    let (status, answer) = call(&server, Some(ADMIN_KEY), Method::PUT, path, Some(json!({"password": "short"}))).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("password")), "{answer}");
    let answer = admin(&server, Method::PUT, path, json!({"password": TEMPORARY})).await;
    assert_eq!(answer["user"]["password_must_change"], true, "{answer}");
    assert_eq!(me(&server, &ann_access).await, StatusCode::UNAUTHORIZED, "every session of the user ends");
    assert_eq!(refresh(&server, &ann_refresh).await, StatusCode::UNAUTHORIZED);

    // The temporary password is right but opens nothing until changed; a wrong one is
    // still just wrong.
    let (status, answer) = login(&server, json!({"login": "ann", "password": TEMPORARY})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(
        (answer["error"].as_str(), answer["field"].as_str()),
        (Some("password_change_required"), Some("new_password"))
    );
    let (status, answer) = login(&server, json!({"login": "ann", "password": FIRST})).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_credentials")));
    let (status, answer) = login(&server, json!({"login": "ann", "password": FIRST, "new_password": SECOND})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a wrong password sets nothing: {answer}");
    let (status, answer) =
        login(&server, json!({"login": "ann", "password": TEMPORARY, "new_password": TEMPORARY})).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("password_unchanged")));
    let (status, answer) =
        login(&server, json!({"login": "ann", "password": TEMPORARY, "new_password": "short"})).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("new_password")), "{answer}");
    let (status, answer) = login(&server, json!({"login": "ann", "token": "tbk_x", "new_password": SECOND})).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("new_password")), "{answer}");
    // The portal asks for the new password the same way.
    let (status, cookie, html) = portal_login(&server, &[("login", "ann"), ("password", TEMPORARY)]).await;
    assert_eq!((status, cookie), (StatusCode::FORBIDDEN, None));
    assert!(html.contains("name=\"new_password\""), "the sign-in page asks for a new password: {html}");

    let (status, answer) = login(&server, json!({"login": "ann", "password": TEMPORARY, "new_password": SECOND})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(me(&server, answer["access_token"].as_str().unwrap()).await, StatusCode::OK);
    let (status, _) = login(&server, json!({"login": "ann", "password": TEMPORARY})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the temporary password is gone");
    session(&server, "ann", SECOND).await;
    let (_, user) = call(&server, Some(ADMIN_KEY), Method::GET, "/api/v1/users/ann", None).await;
    assert_eq!(user["user"]["password_must_change"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_sets_temporary_passwords_for_its_customers_users_only() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    setup(&server).await;
    let (pat, _) = session(&server, "pat", FIRST).await;
    let (ann, _) = session(&server, "ann", FIRST).await;
    let (bob, _) = session(&server, "bob", FIRST).await;
    let body = || Some(json!({"password": TEMPORARY}));

    let (status, answer) = call(&server, Some(&pat), Method::PUT, "/api/v1/users/ann/password", body()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user"]["password_must_change"], true);
    assert_eq!(me(&server, &ann).await, StatusCode::UNAUTHORIZED);
    let (status, answer) = login(&server, json!({"login": "ann", "password": TEMPORARY})).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::FORBIDDEN, Some("password_change_required")));

    // Another tenant's user, the partner's own user and a user that does not exist all
    // answer alike; nothing changes for them.
    for login_name in ["bob", "pat", "nobody"] {
        let path = format!("/api/v1/users/{login_name}/password");
        let (status, answer) = call(&server, Some(&pat), Method::PUT, &path, body()).await;
        assert_eq!((status, answer["error"].as_str()), (StatusCode::NOT_FOUND, Some("user_not_found")), "{login_name}");
    }
    assert_eq!(me(&server, &bob).await, StatusCode::OK);
    assert_eq!(me(&server, &pat).await, StatusCode::OK);
    session(&server, "bob", FIRST).await;
    // A customer sets no one's password.
    let (status, _) = call(&server, Some(&bob), Method::PUT, "/api/v1/users/bob/password", body()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_changes_the_password_and_keeps_only_its_own_session() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    setup(&server).await;
    let (api_access, _) = session(&server, "ann", FIRST).await;
    let (_, other_cookie, _) = portal_login(&server, &[("login", "ann"), ("password", FIRST)]).await;
    let (_, cookie, _) = portal_login(&server, &[("login", "ann"), ("password", FIRST)]).await;
    let (other_cookie, cookie) = (other_cookie.unwrap(), cookie.unwrap());

    let (status, html) = portal_page(&server, &cookie, "/portal/password").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let csrf = csrf_of(&html);
    let post = |form: Vec<(&'static str, String)>| {
        no_redirects().post(server.url("/portal/password")).header(COOKIE, cookie.clone()).form(&form).send()
    };
    let form = |csrf: &str, current: &str, new: &str, repeat: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("current_password", current.to_owned()),
            ("new_password", new.to_owned()),
            ("repeat_password", repeat.to_owned()),
        ]
    };
    let response = post(form("not the token", FIRST, SECOND, SECOND)).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a form without the session's CSRF token");
    let response = post(form(&csrf, FIRST, SECOND, "something else")).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("differ"));
    let response = post(form(&csrf, "wrong password", SECOND, SECOND)).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("current password does not match"));
    assert_eq!(me(&server, &api_access).await, StatusCode::OK, "nothing changed yet");

    let response = post(form(&csrf, FIRST, SECOND, SECOND)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("has been changed"));
    assert_eq!(portal_page(&server, &cookie, "/portal/accounts/C1").await.0, StatusCode::OK, "this session stays");
    assert_eq!(portal_page(&server, &other_cookie, "/portal/accounts/C1").await.0, StatusCode::SEE_OTHER);
    assert_eq!(me(&server, &api_access).await, StatusCode::UNAUTHORIZED, "the API session ended too");
    session(&server, "ann", SECOND).await;
}
