//! The JSON API and the portal reach one service layer: a fund move, a statement's CSV
//! and an invoice's files come out the same whichever front end asked.

use axum::http::{Method, StatusCode, header};
use chrono::{Datelike, Months};
use serde_json::json;

use crate::app::{ADMIN_KEY, App};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fund_move_takes_one_path_from_either_front_end() {
    let app = App::open().await;
    app.open_account("P1", "partner", None).await;
    app.open_account("C1", "customer", Some("P1")).await;
    app.admin(Method::POST, "/api/v1/payments", Some(json!({"account": "P1", "amount": "100"}))).await;
    let p1 = app.token("p1-user", "partner", "P1", json!({})).await;
    let (session, csrf) = app.portal_session("P1").await;

    let body = json!({"from": "P1", "to": "C1", "amount": "30", "note": "by the API"});
    let answer = app.call(Some(&p1), Method::POST, "/api/v1/transfers", Some(body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
    assert_eq!(answer.json()["events"][0]["type"], "FundsMoved");

    let form = [
        ("csrf", csrf.as_str()),
        ("idempotency_key", "form-1"),
        ("direction", "to_customer"),
        ("customer", "C1"),
        ("amount", "20"),
        ("note", "by the portal"),
    ];
    let answer = app.post_form(&session, "/portal/accounts/P1/transfers", &form).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    let location = answer.header(header::LOCATION).unwrap().to_owned();
    let position: u64 = location.split("moved=").nth(1).unwrap().parse().unwrap();
    // A double submit of the form moves once.
    let again = app.post_form(&session, "/portal/accounts/P1/transfers", &form).await;
    assert_eq!(again.header(header::LOCATION), Some(location.as_str()));
    assert_eq!(app.balance("P1", position).await, "50.00");
    assert_eq!(app.balance("C1", position).await, "50.00");

    // The same refusal, in the same words, from both.
    let body = json!({"from": "P1", "to": "C1", "amount": "80"});
    let answer = app.call(Some(&p1), Method::POST, "/api/v1/transfers", Some(body)).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.text());
    let message = answer.json()["message"].as_str().unwrap().to_owned();
    let form = [("csrf", csrf.as_str()), ("direction", "to_customer"), ("customer", "C1"), ("amount", "80")];
    let page = app.post_form(&session, "/portal/accounts/P1/transfers", &form).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text().contains(&message), "the page says `{message}`: {}", page.text());

    // Both moves are in C1's log, once each.
    let events = app.admin(Method::GET, &format!("/api/v1/accounts/C1/events?min_position={position}"), None).await;
    let moved: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "FundsMoved")
        .map(|e| e["postings"][0]["amount"].to_string())
        .collect();
    assert_eq!(moved, ["30.00", "20.00"], "{events}");
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_and_an_invoice_are_the_same_files_from_either_front_end() {
    let app = App::open().await;
    app.open_account("D1", "customer", None).await;
    app.open_account("D2", "customer", None).await;
    let today = chrono::Utc::now().date_naive();
    let this_month = today.with_day(1).unwrap();
    let last_month = this_month.checked_sub_months(Months::new(1)).unwrap();
    let on = |day: u32| last_month.with_day(day).unwrap().to_string();
    app.admin(Method::POST, "/api/v1/payments", Some(json!({"account": "D1", "amount": "40", "occurred_at": on(2)})))
        .await;
    let charge = json!({"account": "D1", "amount": "12.5", "description": "line", "occurred_at": on(3)});
    let last = app.admin(Method::POST, "/api/v1/charges", Some(charge)).await;
    let position = last["position"].as_u64().unwrap();
    app.balance("D1", position).await;

    let (from, to) = (last_month.to_string(), this_month.to_string());
    let (d1, _) = app.portal_session("D1").await;
    let api = app
        .call(
            Some(ADMIN_KEY),
            Method::GET,
            &format!("/api/v1/accounts/D1/statement?from={from}&to={to}&format=csv"),
            None,
        )
        .await;
    let portal = app.page(&d1, &format!("/portal/accounts/D1/statement.csv?from={from}&to={to}")).await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.text());
    assert_eq!(portal.status, StatusCode::OK, "{}", portal.text());
    assert!(api.text().contains("figure,closing_balance,27.5"), "{}", api.text());
    assert_eq!(api.body, portal.body);
    for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        assert_eq!(api.header(name.clone()), portal.header(name.clone()), "{name}");
    }

    let period = last_month.format("%Y-%m").to_string();
    let run = app.admin(Method::POST, "/api/v1/invoice-runs", Some(json!({"period": period}))).await;
    let number = run["invoices"][0]["number"].as_str().unwrap().to_owned();
    for (file, content_type) in [("invoice.pdf", "application/pdf"), ("invoice.html", "text/html; charset=utf-8")] {
        let api = app.call(Some(ADMIN_KEY), Method::GET, &format!("/api/v1/invoices/{number}/{file}"), None).await;
        let portal = app.page(&d1, &format!("/portal/invoices/{number}/{file}")).await;
        assert_eq!(api.status, StatusCode::OK, "{file}: {}", api.text());
        assert_eq!(api.header(header::CONTENT_TYPE), Some(content_type));
        assert_eq!(portal.status, StatusCode::OK, "{file}");
        assert_eq!(api.body, portal.body, "{file}");
        for name in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
            assert_eq!(api.header(name.clone()), portal.header(name.clone()), "{file}: {name}");
        }
    }
    // Another customer's session does not find it.
    let (d2, _) = app.portal_session("D2").await;
    let answer = app.page(&d2, &format!("/portal/invoices/{number}/invoice.pdf")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    app.close().await;
}
