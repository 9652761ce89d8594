//! The portal over HTTP without a browser: login links (single use, expiry, tampering,
//! revocation, surviving a restart), who may make them, the session cookie's attributes,
//! tenant isolation, CSRF, the pages' figures and the statement's CSV export.

mod common;
mod portal_fixture;

use std::time::Duration;

use common::{ADMIN_KEY, Server};
use portal_fixture::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Opens a link; the status, the session cookie (`name=value`) if one was set, and the body.
async fn open(url: &str) -> (StatusCode, Option<String>, String) {
    let response = no_redirects().get(url).send().await.unwrap();
    let status = response.status();
    let cookie = response.headers().get(SET_COOKIE).map(|c| c.to_str().unwrap().to_owned());
    (status, cookie, response.text().await.unwrap())
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn page(server: &Server, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = no_redirects().get(server.url(path)).header(COOKIE, cookie).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// An attribute's value as the browser reads it.
fn unescape(html: &str) -> String {
    html.replace("&#38;", "&").replace("&amp;", "&")
}

/// The text of the `dd` or `td` with `id`, tags stripped.
fn text_of(html: &str, id: &str) -> String {
    let start = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &html[start..];
    let content = &rest[rest.find('>').unwrap() + 1..];
    let end = ["</td>", "</dd>"].iter().filter_map(|close| content.find(close)).min().unwrap_or(content.len());
    let mut text = String::new();
    let mut in_tag = false;
    for c in content[..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_link_opens_one_session_and_survives_nothing_else() {
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &[]).await;
    let url = book.link("C1").await;
    assert!(url.starts_with(&book.server.url("/portal/login/")), "{url}");

    let (status, cookie, _) = open(&url).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set_cookie = cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/portal"] {
        assert!(set_cookie.contains(attribute), "{set_cookie} lacks {attribute}");
    }
    assert!(!set_cookie.contains("Secure"), "a plain HTTP request gets no Secure cookie: {set_cookie}");
    let session = cookie_pair(&set_cookie);

    // The session reaches C1's overview with the right figures.
    let (status, html) = page(&book.server, &session, "/portal").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let (status, html) = page(&book.server, &session, "/portal/accounts/C1").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(text_of(&html, "balance"), format!("{C1_BALANCE} EUR"));
    assert_eq!(text_of(&html, "available"), format!("{C1_BALANCE} EUR"));
    assert!(html.contains("<svg"), "the chart is drawn on the server");

    // A second use: a clear page, 410, no cookie.
    let (status, cookie, body) = open(&url).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(cookie.is_none());
    assert!(body.contains("already been used"), "{body}");

    // Altered: one character changed, or a made-up token.
    let mut altered = url.clone().into_bytes();
    let last = altered.len() - 3;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let (status, cookie, body) = open(&String::from_utf8(altered).unwrap()).await;
    assert_eq!((status, cookie), (StatusCode::BAD_REQUEST, None));
    assert!(body.contains("cannot be used"), "{body}");
    let (status, cookie, _) = open(&book.server.url("/portal/login/not-a-token")).await;
    assert_eq!((status, cookie), (StatusCode::BAD_REQUEST, None));

    // Revoked before use.
    let (status, answer) = book.call(ADMIN_KEY, Method::POST, "/api/v1/accounts/C1/login-link", Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let revoked_url = answer["url"].as_str().unwrap().to_owned();
    let id = answer["id"].as_str().unwrap().to_owned();
    let (status, _) = book.call(ADMIN_KEY, Method::DELETE, &format!("/api/v1/login-links/{id}"), Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, cookie, body) = open(&revoked_url).await;
    assert_eq!((status, cookie), (StatusCode::GONE, None));
    assert!(body.contains("revoked"), "{body}");
    let (_, shown) = book.call(ADMIN_KEY, Method::GET, &format!("/api/v1/login-links/{id}"), Value::Null).await;
    assert_eq!(shown["state"], "revoked");

    // Single use survives a restart; so do unused links and sessions.
    let unused = book.link("C1").await;
    let Book { server, .. } = book;
    server.stop();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let moved = |u: &str| u.replacen(&u[..u.find("/portal").unwrap()], &server.base, 1);
    let (status, cookie, _) = open(&moved(&url)).await;
    assert_eq!((status, cookie), (StatusCode::GONE, None), "a used link stays used after a restart");
    let (status, cookie, _) = open(&moved(&unused)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "an unused link still works after a restart");
    assert!(cookie.is_some());
    let (status, _) = page(&server, &session, "/portal/accounts/C1").await;
    assert_eq!(status, StatusCode::OK, "a session survives a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &["--login-link-lifetime", "1s"]).await;
    let url = book.link("C1").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, cookie, body) = open(&url).await;
    assert_eq!((status, cookie), (StatusCode::GONE, None));
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_make_a_link_and_what_a_session_reaches() {
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &["--public-url", "https://billing.example.com/"]).await;
    for (login, role, account) in [("p1-user", "partner", "P1"), ("c1-user", "customer", "C1")] {
        let body = json!({"login": login, "password": PASSWORD, "role": role, "account": account});
        book.admin(Method::POST, "/api/v1/users", body).await;
    }
    let session_of = |login: &'static str| {
        let client = book.client.clone();
        let url = book.server.url("/api/v1/sessions");
        async move {
            let answer: Value = client
                .post(url)
                .json(&json!({"login": login, "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["access_token"].as_str().unwrap().to_owned()
        }
    };
    let p1 = session_of("p1-user").await;
    let c1 = session_of("c1-user").await;
    let make = |number: &str| format!("/api/v1/accounts/{number}/login-link");
    // A partner: for its customers and itself; another book's customer does not exist.
    for number in ["C1", "P1"] {
        let (status, answer) = book.call(&p1, Method::POST, &make(number), Value::Null).await;
        assert_eq!(status, StatusCode::CREATED, "{number}: {answer}");
        assert!(answer["url"].as_str().unwrap().starts_with("https://billing.example.com/portal/login/"), "{answer}");
    }
    let (status, _) = book.call(&p1, Method::POST, &make("D1"), Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A customer makes none, not even for itself.
    let (status, _) = book.call(&c1, Method::POST, &make("C1"), Value::Null).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = book.call("", Method::POST, &make("C1"), Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // With an https public URL the cookie is Secure.
    let link = book.link("C1").await;
    let local = link.replacen("https://billing.example.com", &book.server.base, 1);
    let (_, cookie, _) = open(&local).await;
    let set_cookie = cookie.unwrap();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
    let c1_session = cookie_pair(&set_cookie);

    // C1's session: its own pages, never C2's, D1's or P1's (404, like a missing page).
    for path in ["/portal/accounts/C1", "/portal/accounts/C1/statement", "/portal/accounts/C1/calls"] {
        let (status, html) = page(&book.server, &c1_session, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
    }
    for path in [
        "/portal/accounts/C2",
        "/portal/accounts/C2/statement",
        "/portal/accounts/D1/activity",
        "/portal/accounts/P1",
        "/portal/accounts/NOPE",
        "/portal/accounts/C2/statement.csv",
    ] {
        let (status, html) = page(&book.server, &c1_session, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!html.contains("Customer Two") && !html.contains("Direct Customer"), "{path} leaks a name");
    }
    // No session: to the login page. A customer's session cannot post a fund move.
    let (status, _) = page(&book.server, "tollbook_portal=tbp_forged", "/portal/accounts/C1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = page(&book.server, "", "/portal/accounts/C1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_csrf_and_partner_fund_moves() {
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &[]).await;
    let client = no_redirects();
    let login = |password: &'static str| {
        client.post(book.server.url("/portal/login")).form(&[("login", "c2-user"), ("password", password)]).send()
    };
    let wrong = login("wrong password!").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    // Another site's form cannot sign the visitor in (login CSRF), whichever header the
    // browser tells it by; this site's own form can.
    let foreign = [("sec-fetch-site", "cross-site"), ("origin", "https://evil.example"), ("origin", "null")];
    for (name, value) in foreign {
        let form = [("login", "c2-user"), ("password", PASSWORD)];
        let sent = client.post(book.server.url("/portal/login")).header(name, value).form(&form).send().await.unwrap();
        assert_eq!(sent.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(sent.headers().get(SET_COOKIE).is_none());
    }
    let own_origin = book.server.url("");
    let own_origin = own_origin.trim_end_matches('/');
    let form = [("login", "c2-user"), ("password", PASSWORD)];
    let same = client.post(book.server.url("/portal/login")).header("origin", own_origin).form(&form).send();
    assert_eq!(same.await.unwrap().status(), StatusCode::SEE_OTHER);
    let right = login(PASSWORD).await.unwrap();
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    let c2_session = cookie_pair(right.headers()[SET_COOKIE].to_str().unwrap());
    let (status, html) = page(&book.server, &c2_session, "/portal/accounts/C2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&html, "balance"), "7.00 EUR");

    // The partner, signed in by link.
    let (_, cookie, _) = open(&book.link("P1").await).await;
    let p1_session = cookie_pair(&cookie.unwrap());
    let (status, html) = page(&book.server, &p1_session, "/portal/accounts/P1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&html, "balance"), format!("{P1_BALANCE} EUR"));
    assert!(html.contains("data-customer-balance=\"C1\">134.75<"), "the customers with balances");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let key = html.split("name=\"idempotency_key\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // A partner sees its customer's pages.
    let (status, _) = page(&book.server, &p1_session, "/portal/accounts/C1/statement").await;
    assert_eq!(status, StatusCode::OK);

    let post = |form: Vec<(&'static str, String)>, session: String| {
        client.post(book.server.url("/portal/accounts/P1/transfers")).header(COOKIE, session).form(&form).send()
    };
    let form = |csrf: &str, direction: &str, amount: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("idempotency_key", key.clone()),
            ("direction", direction.to_owned()),
            ("customer", "C2".to_owned()),
            ("amount", amount.to_owned()),
            ("note", "top-up".to_owned()),
        ]
    };
    // Without the session's CSRF token: refused, nothing moved.
    let refused = post(form("forged", "to_customer", "10"), p1_session.clone()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // The form moves funds, once even if submitted twice.
    for _ in 0..2 {
        let moved = post(form(&csrf, "to_customer", "10"), p1_session.clone()).await.unwrap();
        assert_eq!(moved.status(), StatusCode::SEE_OTHER);
        let (status, html) = page(&book.server, &p1_session, moved.headers()[LOCATION].to_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Funds moved"), "{html}");
        assert_eq!(text_of(&html, "balance"), "450.00 EUR");
    }
    // Back the other way, with a fresh key; too much is refused on the page, 422.
    let back = form(&csrf, "from_customer", "3")
        .into_iter()
        .map(|(k, v)| if k == "idempotency_key" { (k, "another".to_owned()) } else { (k, v) })
        .collect();
    let moved = post(back, p1_session.clone()).await.unwrap();
    assert_eq!(moved.status(), StatusCode::SEE_OTHER);
    let too_much = form(&csrf, "to_customer", "100000")
        .into_iter()
        .map(|(k, v)| if k == "idempotency_key" { (k, "a-third".to_owned()) } else { (k, v) })
        .collect();
    let refused = post(too_much, p1_session.clone()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refusal = refused.text().await.unwrap();
    assert!(refusal.contains("id=\"move-error\""), "{refusal}");
    // The account by its number, not its internal id (issue 19).
    assert!(refusal.contains("account P1 has 453.00 available, 100000.00 requested"), "{refusal}");
    // A note that is not UTF-8 is refused, not recorded as U+FFFD.
    let not_utf8 = format!("csrf={csrf}&idempotency_key=a-fourth&direction=to_customer&customer=C2&amount=1&note=%FF");
    let refused = client
        .post(book.server.url("/portal/accounts/P1/transfers"))
        .header(COOKIE, p1_session.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(not_utf8)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let (status, html) = page(&book.server, &c2_session, "/portal/accounts/C2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&html, "balance"), "14.00 EUR", "7 + 10 - 3");

    // A customer's session has no fund move form to post to.
    let csrf_c2 = html.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let response = client
        .post(book.server.url("/portal/accounts/C2/transfers"))
        .header(COOKIE, c2_session.clone())
        .form(&[("csrf", csrf_c2.as_str()), ("direction", "from_customer"), ("customer", "C2"), ("amount", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Signing out ends the session.
    let out = client
        .post(book.server.url("/portal/logout"))
        .header(COOKIE, c2_session.clone())
        .form(&[("csrf", csrf_c2.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let (status, _) = page(&book.server, &c2_session, "/portal/accounts/C2").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "signed out: to the login page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_page_and_its_csv_add_up() {
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &[]).await;
    let (month, from, to) = this_month();
    let (_, cookie, _) = open(&book.link("C1").await).await;
    let session = cookie_pair(&cookie.unwrap());
    let (status, html) = page(&book.server, &session, &format!("/portal/accounts/C1/statement?month={month}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    for (figure, amount) in [
        ("opening_balance", "0.00"),
        ("payments", C1_PAYMENTS),
        ("transfers_in", C1_TRANSFERS_IN),
        ("other_charges", C1_OTHER_CHARGES),
        ("total_charges", C1_OTHER_CHARGES),
        ("closing_balance", C1_BALANCE),
    ] {
        assert_eq!(text_of(&html, &format!("figure-{figure}")), amount, "{figure}");
    }
    // A free range gives the same figures for the same days; a range that ends before it
    // starts is refused with a page saying so.
    let (status, range) =
        page(&book.server, &session, &format!("/portal/accounts/C1/statement?from={from}&to={to}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&range, "figure-closing_balance"), C1_BALANCE);
    let (status, refused) =
        page(&book.server, &session, &format!("/portal/accounts/C1/statement?from={to}&to={from}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused.contains("must come after"), "{refused}");
    // Before any money moved, nothing: the opening balance of this month is the closing of
    // the last.
    let (status, earlier) = page(&book.server, &session, "/portal/accounts/C1/statement?month=2001-02").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text_of(&earlier, "figure-closing_balance"), "0.00");

    // The payments figure links to its postings, which add up to it.
    let href = html.split("id=\"figure-payments\"><a href=\"").nth(1).unwrap().split('"').next().unwrap();
    let (status, lines) = page(&book.server, &session, &unescape(href)).await;
    assert_eq!(status, StatusCode::OK, "{lines}");
    assert_eq!(text_of(&lines, "lines-sum"), C1_PAYMENTS);

    // The CSV: by format=csv and by Accept, figures first, then the lines.
    let path = format!("/api/v1/accounts/C1/statement?from={from}&to={to}");
    for request in [
        book.client.get(book.server.url(&format!("{path}&format=csv"))),
        book.client.get(book.server.url(&path)).header("accept", "text/csv"),
    ] {
        let response = request.bearer_auth(ADMIN_KEY).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let text = response.text().await.unwrap();
        let rows: Vec<Vec<String>> = csv::Reader::from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        let figure = |name: &str| {
            rows.iter()
                .find(|r| r[0] == "figure" && r[1] == name)
                .map(|r| r[2].parse::<rust_decimal::Decimal>().unwrap())
        };
        assert_eq!(figure("closing_balance"), Some(C1_BALANCE.parse().unwrap()), "{text}");
        let lines: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "line").collect();
        assert_eq!(lines.len(), 3, "{text}");
        for category in ["payments", "transfers_in", "other_charges"] {
            let sum: rust_decimal::Decimal =
                lines.iter().filter(|r| r[1] == category).map(|r| r[2].parse::<rust_decimal::Decimal>().unwrap()).sum();
            assert_eq!(Some(sum), figure(category), "{category}");
        }
    }
    // JSON stays the default; an unknown format is a 400.
    let (status, json) = book.call(ADMIN_KEY, Method::GET, &path, Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["statement"]["closing_balance"].to_string(), C1_BALANCE);
    let (status, _) = book.call(ADMIN_KEY, Method::GET, &format!("{path}&format=xml"), Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The portal's download button gives the same file.
    let (status, csv_text) =
        page(&book.server, &session, &format!("/portal/accounts/C1/statement.csv?from={from}&to={to}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(csv_text.starts_with("record,name,amount,currency,position,occurred_at\n"), "{csv_text}");
    assert!(csv_text.contains(&format!("figure,closing_balance,{C1_BALANCE},EUR,")), "{csv_text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_csv_longer_than_a_chunk_streams_every_line_and_honours_as_of() {
    const PAYMENTS: usize = 1_234;
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &[]).await;
    // More postings than one chunk of the stream holds, posted a few at a time.
    let mut positions = Vec::new();
    for chunk in (0..PAYMENTS).collect::<Vec<_>>().chunks(32) {
        let requests = chunk.iter().map(|_| {
            let request = book
                .client
                .post(book.server.url("/api/v1/payments"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"account": "D1", "amount": "0.01"}));
            common::send(request)
        });
        for (status, answer) in futures::future::join_all(requests).await {
            assert_eq!(status, StatusCode::CREATED, "{answer}");
            positions.push(answer["position"].as_u64().unwrap());
        }
    }
    positions.sort_unstable();
    book.position = *positions.last().unwrap();
    book.settle().await;
    let csv_of = |query: String| {
        let request = book
            .client
            .get(book.server.url(&format!("/api/v1/accounts/D1/statement?from=2000-01-01&to=2100-01-01{query}")))
            .bearer_auth(ADMIN_KEY)
            .header("accept", "text/csv");
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            let rows: Vec<Vec<String>> = csv::Reader::from_reader(text.as_bytes())
                .records()
                .map(|r| r.unwrap().iter().map(str::to_owned).collect())
                .collect();
            rows
        }
    };
    let check = |rows: &[Vec<String>], expected_lines: usize| {
        let lines: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "line").collect();
        assert_eq!(lines.len(), expected_lines);
        let sum: rust_decimal::Decimal = lines.iter().map(|r| r[2].parse::<rust_decimal::Decimal>().unwrap()).sum();
        let figure = rows.iter().find(|r| r[0] == "figure" && r[1] == "payments").unwrap();
        assert_eq!(figure[2].parse::<rust_decimal::Decimal>().unwrap(), sum, "the lines add up to the figure");
        let statement_position: u64 = figure[4].parse().unwrap();
        assert!(lines.iter().all(|r| r[4].parse::<u64>().unwrap() <= statement_position));
    };
    check(&csv_of(String::new()).await, PAYMENTS);
    // As the ledger knew it halfway: only what was recorded by then, figures and lines alike.
    let halfway = positions[PAYMENTS / 2];
    let earlier = positions.iter().filter(|p| **p <= halfway).count();
    check(&csv_of(format!("&as_of={halfway}")).await, earlier);
}

/// The values of the cells marked `data-{name}` on a page, in order.
fn cells(html: &str, name: &str) -> Vec<String> {
    let marker = format!("data-{name}>");
    html.split(&marker).skip(1).map(|rest| unescape(&rest[..rest.find('<').unwrap()])).collect()
}

/// Issue 19: the calls page spoke to developers: durations in raw seconds (4200), hang-up
/// causes as bare numbers, costs at mixed scales in one column (0.19 next to 0.2094), no
/// totals, and a partner's list of its customers' calls without saying whose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_page_reads_like_a_bill() {
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &[]).await;
    let calls = json!([
        {"id": "long-1", "account": "C1", "callee": "4930123456", "start": "2026-03-02T10:00:00Z",
         "answer": "2026-03-02T10:00:00Z", "end": "2026-03-02T11:10:00Z", "cost": "0.19", "partner_cost": "0.1"},
        {"id": "short-2", "account": "C1", "callee": "4989123456", "start": "2026-03-03T10:00:00Z",
         "answer": "2026-03-03T10:00:00Z", "end": "2026-03-03T10:00:59Z", "cost": "0.2094", "partner_cost": "0.12"},
        {"id": "busy-3", "account": "C1", "callee": "4940123456", "start": "2026-03-04T10:00:00Z",
         "end": "2026-03-04T10:00:10Z", "hangup_cause": "17", "cost": "0", "partner_cost": "0"},
    ]);
    let answer = book.admin(Method::POST, "/api/v1/cdrs", calls).await;
    assert_eq!(answer["summary"]["charged"], 3, "{answer}");
    book.settle().await;
    let period = "from=2026-03-01&to=2026-04-01";

    let (_, cookie, _) = open(&book.link("C1").await).await;
    let c1_session = cookie_pair(&cookie.unwrap());
    let (status, html) = page(&book.server, &c1_session, &format!("/portal/accounts/C1/calls?{period}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cells(&html, "duration"), ["1:10:00", "0:00:59", "0:00:00"]);
    assert_eq!(cells(&html, "hangup"), ["Normal clearing (16)", "Normal clearing (16)", "User busy (17)"]);
    assert_eq!(cells(&html, "cost"), ["0.1900", "0.2094", "0.0000"]);
    assert_eq!(text_of(&html, "total-duration"), "1:10:59");
    assert_eq!(text_of(&html, "total-cost"), "0.3994");
    assert!(cells(&html, "customer").is_empty(), "a customer's own calls need no customer column");
    // The statement and the activity speak a customer's words: no event types, no log
    // positions.
    for path in ["/portal/accounts/C1/statement", "/portal/accounts/C1/activity?all=1"] {
        let (status, html) = page(&book.server, &c1_session, path).await;
        assert_eq!(status, StatusCode::OK);
        let main = &html[html.find("<main").unwrap()..];
        for developer_word in ["position", "PaymentReceived", "FundsMoved", "CallCharged", ">#"] {
            assert!(!main.contains(developer_word), "{path}: {developer_word}");
        }
    }
    // Payments with their method and reference, fund moves with the other side, by date:
    // a payment entered last but dated before everything else comes first.
    let payment = json!({"account": "C1", "amount": "3", "method": "wire", "reference": "INV-7",
                         "occurred_at": "2026-01-05"});
    book.admin(Method::POST, "/api/v1/payments", payment).await;
    book.settle().await;
    let (_, html) = page(&book.server, &c1_session, "/portal/accounts/C1/activity").await;
    let (kinds, details) = (cells(&html, "kind"), cells(&html, "details"));
    assert_eq!(kinds.first().map(String::as_str), Some("Payment"), "{kinds:?}");
    assert_eq!(details.first().map(String::as_str), Some("wire · INV-7"), "{details:?}");
    let fund_move = kinds.iter().position(|kind| kind == "Fund move").expect("the fund move from P1");
    assert_eq!(details[fund_move], "from P1");
    let (_, html) = page(&book.server, &c1_session, "/portal/accounts/C1/activity?all=1").await;
    assert!(cells(&html, "details").contains(&"DID".to_owned()), "the charge's description: {html}");

    // The partner's list holds its customers' calls, at what they cost the partner.
    let (_, cookie, _) = open(&book.link("P1").await).await;
    let p1_session = cookie_pair(&cookie.unwrap());
    let (status, html) = page(&book.server, &p1_session, &format!("/portal/accounts/P1/calls?{period}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cells(&html, "customer"), ["C1", "C1", "C1"]);
    assert_eq!(cells(&html, "cost"), ["0.10", "0.12", "0.00"]);
    assert_eq!(text_of(&html, "total-cost"), "0.22");
}
