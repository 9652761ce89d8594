//! Who is refused, and how: credentials, scopes, address allowlists, and the portal's
//! session, CSRF and tenant checks.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::app::{ADMIN_KEY, App};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_whom_it_must() {
    let app = App::open().await;
    app.open_account("P1", "partner", None).await;
    app.open_account("C1", "customer", Some("P1")).await;
    app.open_account("P2", "partner", None).await;
    app.open_account("C2", "customer", Some("P2")).await;
    let p1 = app.token("p1-user", "partner", "P1", json!({})).await;
    let c1 = app.token("c1-user", "customer", "C1", json!({})).await;
    let p1_office = app.token("p1-office", "partner", "P1", json!({"allowed_ips": ["10.0.0.0/8"]})).await;

    for credential in [None, Some("wrong-key"), Some("tbk_not-a-token")] {
        let answer = app.call(credential, Method::GET, "/api/v1/accounts/C1", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{credential:?}: {}", answer.text());
        assert_eq!(answer.json()["error"], "unauthorized");
    }
    // The other headers a credential may come in.
    for name in ["x-auth-token", "token"] {
        let request = Request::get("/api/v1/accounts/C1").header(name, ADMIN_KEY).body(Body::empty()).unwrap();
        assert_eq!(app.send(request).await.status, StatusCode::OK, "{name}");
    }

    // Another tenant's account answers as a missing one; a customer reads but never writes.
    let answer = app.call(Some(&p1), Method::GET, "/api/v1/accounts/C2", None).await;
    assert_eq!((answer.status, answer.json()["error"].as_str()), (StatusCode::NOT_FOUND, Some("account_not_found")));
    assert_eq!(app.call(Some(&p1), Method::GET, "/api/v1/accounts/C1", None).await.status, StatusCode::OK);
    assert_eq!(app.call(Some(&c1), Method::GET, "/api/v1/accounts/C1", None).await.status, StatusCode::OK);
    let answer = app.call(Some(&c1), Method::GET, "/api/v1/accounts/P1", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());
    let payment = json!({"account": "C1", "amount": "1"});
    let answer = app.call(Some(&c1), Method::POST, "/api/v1/payments", Some(payment)).await;
    assert_eq!((answer.status, answer.json()["error"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let answer = app.call(Some(&p1), Method::GET, "/api/v1/users", None).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "only the operator lists users: {}", answer.text());

    // An allowlisted token, by the TCP peer the server sees.
    let from = |ip: [u8; 4]| {
        let request = Request::get("/api/v1/accounts/C1")
            .header(header::AUTHORIZATION, format!("Bearer {p1_office}"))
            .body(Body::empty())
            .unwrap();
        (Some(SocketAddr::from((ip, 5000))), request)
    };
    let (peer, request) = from([10, 1, 2, 3]);
    assert_eq!(app.send_from(peer, request).await.status, StatusCode::OK);
    let (peer, request) = from([192, 0, 2, 7]);
    let answer = app.send_from(peer, request).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    assert_eq!(answer.json()["error"], "address_not_allowed");
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_refuses_whom_it_must() {
    let app = App::open().await;
    app.open_account("P1", "partner", None).await;
    app.open_account("C1", "customer", Some("P1")).await;
    app.open_account("C2", "customer", Some("P1")).await;

    // No session: to the login page; from another site, a page that reloads with the
    // SameSite cookie.
    let answer = app.page("", "/portal/accounts/C1").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.header(header::LOCATION), Some("/portal/login"));
    let cross_site =
        Request::get("/portal/accounts/C1").header("sec-fetch-site", "cross-site").body(Body::empty()).unwrap();
    let answer = app.send(cross_site).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.text().contains("http-equiv=\"refresh\""), "{}", answer.text());
    let answer = app.page("tollbook_portal=tbp_forged", "/portal/accounts/C1").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "a cookie the store does not know");

    // A customer's session: its own pages only, and no fund moves.
    let (c1, c1_csrf) = app.portal_session("C1").await;
    for path in ["/portal/accounts/C2", "/portal/accounts/P1", "/portal/accounts/C2/statement.csv"] {
        let answer = app.page(&c1, path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}: {}", answer.text());
        assert!(answer.header(header::CONTENT_TYPE).unwrap().starts_with("text/html"), "{path}");
    }
    let form = [("csrf", c1_csrf.as_str()), ("direction", "from_customer"), ("customer", "C1"), ("amount", "1")];
    let answer = app.post_form(&c1, "/portal/accounts/C1/transfers", &form).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text());

    // A partner's form with another session's CSRF token is refused before anything moves.
    let (p1, _) = app.portal_session("P1").await;
    let form = [("csrf", c1_csrf.as_str()), ("direction", "to_customer"), ("customer", "C1"), ("amount", "1")];
    let answer = app.post_form(&p1, "/portal/accounts/P1/transfers", &form).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    app.close().await;
}
