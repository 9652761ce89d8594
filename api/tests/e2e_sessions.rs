//! Sessions, API tokens and the public key, on the real binary: sign in with a password or
//! an API token, refresh (the old pair stops working), log out, expiry, revocation (of the
//! token and of the sessions it opened), verification with the published key, and keys
//! that survive a restart.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, Server, send};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

async fn call(
    server: &Server,
    credential: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path));
    if let Some(credential) = credential {
        // The third accepted header, so that all three are exercised somewhere.
        request = request.header("X-Auth-Token", credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

async fn setup_users(server: &Server) {
    let admin = Some(ADMIN_KEY);
    let body = json!({"number": "C1", "name": "C", "kind": "customer", "currency": "EUR"});
    assert_eq!(call(server, admin, Method::POST, "/api/v1/accounts", Some(body)).await.0, StatusCode::CREATED);
    let body = json!({"login": "ann", "password": PASSWORD, "role": "customer", "account": "C1"});
    let (status, answer) = call(server, admin, Method::POST, "/api/v1/users", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["user"]["has_password"], true);
    assert!(!answer.to_string().contains(PASSWORD), "the password is never shown");
}

async fn login(server: &Server, body: Value) -> (StatusCode, Value) {
    call(server, None, Method::POST, "/api/v1/sessions", Some(body)).await
}

async fn me(server: &Server, credential: &str) -> StatusCode {
    call(server, Some(credential), Method::GET, "/api/v1/me", None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_refresh_rotate_and_logout_revokes() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    setup_users(&server).await;

    let (status, body) = login(&server, json!({"login": "ann", "password": "wrong password"})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_credentials")));
    let (status, _) = login(&server, json!({"login": "nobody", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = login(&server, json!({"login": "ann"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, first) = login(&server, json!({"login": "ann", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    for field in ["access_token", "refresh_token", "expires_at", "session_id"] {
        assert!(first[field].is_string(), "{field}: {first}");
    }
    assert_eq!(first["token_type"], "Bearer");
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(me(&server, access).await, StatusCode::OK);
    let (_, who) = call(&server, Some(access), Method::GET, "/api/v1/me", None).await;
    assert_eq!(
        (who["login"].as_str(), who["role"].as_str(), who["account"].as_str()),
        (Some("ann"), Some("customer"), Some("C1"))
    );

    // The default lifetime is two days.
    let expires_at = chrono::DateTime::parse_from_rfc3339(first["expires_at"].as_str().unwrap()).unwrap();
    let lifetime = expires_at.signed_duration_since(chrono::Utc::now());
    assert!((lifetime - chrono::Duration::days(2)).num_seconds().abs() < 60, "{lifetime}");

    // Another service verifies the token with the published key alone.
    let (status, jwks) = call(&server, None, Method::GET, "/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let key = &jwks["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    let decoding = DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["tollbook"]);
    let claims = jsonwebtoken::decode::<Value>(access, &decoding, &validation).unwrap().claims;
    assert_eq!(claims["sub"], "ann");
    assert_eq!(claims["sid"], first["session_id"]);
    assert_eq!(jsonwebtoken::decode_header(access).unwrap().kid.as_deref(), key["kid"].as_str());

    // Refresh rotates the pair: the old refresh token and the old access token stop working.
    let (status, second) =
        call(&server, None, Method::POST, "/api/v1/sessions/refresh", Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["session_id"], first["session_id"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let (status, _) =
        call(&server, None, Method::POST, "/api/v1/sessions/refresh", Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a refresh token works once");
    assert_eq!(me(&server, access).await, StatusCode::UNAUTHORIZED, "the replaced access token");
    let access = second["access_token"].as_str().unwrap().to_owned();
    let refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(me(&server, &access).await, StatusCode::OK);

    // Keys and sessions survive a restart.
    server.stop();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    assert_eq!(me(&server, &access).await, StatusCode::OK, "an access token from before the restart");
    let (_, jwks_again) = call(&server, None, Method::GET, "/.well-known/jwks.json", None).await;
    assert_eq!(jwks_again, jwks, "the same key after a restart");

    // Logout revokes both tokens; another user's session is not found.
    let session = second["session_id"].as_str().unwrap();
    let (status, _) = call(&server, Some(&access), Method::DELETE, &format!("/api/v1/sessions/{session}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me(&server, &access).await, StatusCode::UNAUTHORIZED, "after logout");
    let (status, _) =
        call(&server, None, Method::POST, "/api/v1/sessions/refresh", Some(json!({"refresh_token": refresh}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "refresh after logout");

    // A session opened with an API token; revoking the token stops the token at once.
    let body = json!({"user": "ann", "description": "portal", "allowed_ips": "127.0.0.1, 10.0.0.0/8"});
    let (status, created) = call(&server, Some(ADMIN_KEY), Method::POST, "/api/v1/tokens", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("tbk_"));
    assert_eq!(created["details"]["allowed_ips"], json!(["127.0.0.1/32", "10.0.0.0/8"]));
    let (status, listed) = call(&server, Some(ADMIN_KEY), Method::GET, "/api/v1/tokens?user=ann", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(token), "a token's secret is shown once only");
    assert_eq!(me(&server, token).await, StatusCode::OK);
    let (status, by_token) = login(&server, json!({"login": "ann", "token": token})).await;
    assert_eq!(status, StatusCode::CREATED, "{by_token}");
    let (status, _) = login(&server, json!({"login": "someone-else", "token": token})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a token signs in its own user only");
    let id = created["details"]["id"].as_str().unwrap();
    let (status, _) = call(&server, Some(ADMIN_KEY), Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me(&server, token).await, StatusCode::UNAUTHORIZED, "a revoked token");
    let (status, _) = login(&server, json!({"login": "ann", "token": token})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token opens no session");
    let by_token_access = by_token["access_token"].as_str().unwrap();
    assert_eq!(me(&server, by_token_access).await, StatusCode::UNAUTHORIZED, "nor keeps one open");

    // Removing the user ends everything of theirs.
    let (status, by_password) = login(&server, json!({"login": "ann", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED, "{by_password}");
    let by_password_access = by_password["access_token"].as_str().unwrap();
    assert_eq!(me(&server, by_password_access).await, StatusCode::OK);
    let (status, _) = call(&server, Some(ADMIN_KEY), Method::DELETE, "/api/v1/users/ann", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me(&server, by_password_access).await, StatusCode::UNAUTHORIZED);
    let (status, _) = login(&server, json!({"login": "ann", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_expires_with_its_configured_lifetime_and_refresh_renews_it() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY, "--session-lifetime", "1s"]).await;
    setup_users(&server).await;
    let (status, session) = login(&server, json!({"login": "ann", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let access = session["access_token"].as_str().unwrap();
    assert_eq!(me(&server, access).await, StatusCode::OK);
    // `exp` is in whole seconds: two seconds are past it whatever the rounding.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(me(&server, access).await, StatusCode::UNAUTHORIZED, "an expired access token");
    let refresh = json!({"refresh_token": session["refresh_token"]});
    let (status, renewed) = call(&server, None, Method::POST, "/api/v1/sessions/refresh", Some(refresh)).await;
    assert_eq!(status, StatusCode::CREATED, "{renewed}");
    assert_eq!(me(&server, renewed["access_token"].as_str().unwrap()).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_validated_and_listed_a_page_at_a_time() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let admin = Some(ADMIN_KEY);
    let body = json!({"number": "P1", "name": "P", "kind": "partner", "currency": "EUR"});
    assert_eq!(call(&server, admin, Method::POST, "/api/v1/accounts", Some(body)).await.0, StatusCode::CREATED);
    for (body, field) in [
        (json!({"login": "x", "role": "customer", "account": "P1"}), "account"),
        (json!({"login": "x", "role": "partner"}), "account"),
        (json!({"login": "x", "role": "admin", "account": "P1"}), "account"),
        (json!({"login": "x", "role": "admin", "password": "short"}), "password"),
        (json!({"login": "has space", "role": "admin"}), "login"),
        (json!({"login": "x", "role": "root"}), "role"),
    ] {
        let (status, answer) = call(&server, admin, Method::POST, "/api/v1/users", Some(body.clone())).await;
        assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}: {answer}");
    }
    for login in ["u1", "u2", "u3"] {
        let body = json!({"login": login, "role": "partner", "account": "P1"});
        assert_eq!(call(&server, admin, Method::POST, "/api/v1/users", Some(body)).await.0, StatusCode::CREATED);
    }
    let body = json!({"login": "u2", "role": "admin"});
    let (status, answer) = call(&server, admin, Method::POST, "/api/v1/users", Some(body)).await;
    assert_eq!((status, answer["error"].as_str()), (StatusCode::CONFLICT, Some("duplicate_login")));
    let (_, page) = call(&server, admin, Method::GET, "/api/v1/users?limit=2", None).await;
    let logins: Vec<&str> = page["users"].as_array().unwrap().iter().map(|u| u["login"].as_str().unwrap()).collect();
    assert_eq!(logins, ["u1", "u2"]);
    assert_eq!(page["next"], "u2");
    let (_, page) = call(&server, admin, Method::GET, "/api/v1/users?limit=2&after=u2", None).await;
    assert_eq!(page["users"][0]["login"], "u3");
    assert!(page.get("next").is_none(), "{page}");
    let (status, answer) = call(&server, admin, Method::GET, "/api/v1/users?limit=100000", None).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")), "page size limit");
    let body = json!({"user": "u1", "expires_at": "2001-01-01T00:00:00Z"});
    let (status, answer) = call(&server, admin, Method::POST, "/api/v1/tokens", Some(body)).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("expires_at")), "{answer}");
    let body = json!({"user": "u1", "allowed_ips": "10.0.0.0/33"});
    let (status, answer) = call(&server, admin, Method::POST, "/api/v1/tokens", Some(body)).await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("allowed_ips")), "{answer}");
}
