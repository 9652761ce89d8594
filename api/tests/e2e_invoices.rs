//! Invoices on the real binary over HTTP: a run for a month, numbered per issuer, its
//! figures those of the statement, tax by the issuer's rule or the account's; a repeated
//! run issues nothing; the documents listed and downloaded as PDF and HTML within each
//! role's scope; a credit note after a late charge; bad input refused with its field.

mod common;

use common::{ADMIN_KEY, Api, Server};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn dec(value: &Value) -> Decimal {
    value.to_string().trim_matches('"').parse().unwrap_or_else(|_| panic!("not a decimal: {value}"))
}

impl Api {
    async fn post(&self, credential: &str, path: &str, body: Value) -> Value {
        self.ok(credential, Method::POST, path, Some(body)).await
    }

    async fn get(&self, credential: &str, path: &str) -> Value {
        self.ok(credential, Method::GET, path, None).await
    }

    async fn raw(&self, credential: &str, path: &str) -> (StatusCode, String, Vec<u8>) {
        let response = self.client.get(self.server.url(path)).bearer_auth(credential).send().await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, content_type, response.bytes().await.unwrap().to_vec())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_is_invoiced_once_per_account_with_tax_and_corrected_by_a_credit_note() {
    let data = tempfile::tempdir().unwrap();
    let api = Api::new(Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await);
    api.open_account("P1", "partner", None).await;
    api.open_account("C1", "customer", Some("P1")).await;
    api.open_account("C2", "customer", None).await;
    api.open_account("C3", "customer", None).await;
    api.open_account("C4", "customer", None).await;
    let pat = api.token("pat", "partner", "P1").await;
    let cat = api.token("cat", "customer", "C1").await;
    let dan = api.token("dan", "customer", "C2").await;

    for (account, amount) in [("P1", "100"), ("C2", "50"), ("C3", "50")] {
        let body = json!({"account": account, "amount": amount, "occurred_at": "2026-11-02"});
        api.post(ADMIN_KEY, "/api/v1/payments", body).await;
    }
    // October's payment is C4's only movement before November: no invoice for it.
    api.post(ADMIN_KEY, "/api/v1/payments", json!({"account": "C4", "amount": "5", "occurred_at": "2026-10-02"})).await;
    api.post(ADMIN_KEY, "/api/v1/charges", json!({"account": "C2", "amount": "10.005", "occurred_at": "2026-11-05"}))
        .await;
    api.post(ADMIN_KEY, "/api/v1/charges", json!({"account": "C3", "amount": "20", "occurred_at": "2026-11-06"})).await;
    api.post(
        pat.as_str(),
        "/api/v1/transfers",
        json!({"from": "P1", "to": "C1", "amount": "30", "occurred_at": "2026-11-03"}),
    )
    .await;
    api.post(pat.as_str(), "/api/v1/charges", json!({"account": "C1", "amount": "7", "occurred_at": "2026-11-04"}))
        .await;

    // Tax: the operator's 21 % VAT, a reverse charge at 0 % for C3, the partner's 20 %.
    api.post(ADMIN_KEY, "/api/v1/tax-rules", json!({"rate": 21, "name": "VAT", "tax_id": "NL001"})).await;
    api.post(ADMIN_KEY, "/api/v1/tax-rules", json!({"account": "C3", "rate": "0", "name": "VAT reverse charge"})).await;
    api.post(pat.as_str(), "/api/v1/tax-rules", json!({"rate": "20", "name": "VAT", "tax_id": "DE002"})).await;

    // Bad input changes nothing and names its field.
    for (body, field) in [
        (json!({"period": "2026-13"}), "period"),
        (json!({"period": "2099-01"}), "period"),
        (json!({"period": "2026-11", "bogus": 1}), "bogus"),
    ] {
        let (status, answer) = api.call(ADMIN_KEY, Method::POST, "/api/v1/invoice-runs", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["field"].as_str(), Some(field), "{answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, answer) =
        api.call(ADMIN_KEY, Method::POST, "/api/v1/tax-rules", Some(json!({"rate": "101", "name": "VAT"}))).await;
    assert_eq!(
        (status, answer["error"].as_str(), answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_field"), Some("tax_rate"))
    );
    let (status, _) =
        api.call(cat.as_str(), Method::POST, "/api/v1/invoice-runs", Some(json!({"period": "2026-11"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The partner runs its own customers' invoices; the operator's run does the rest.
    let run = api.post(pat.as_str(), "/api/v1/invoice-runs", json!({"period": "2026-11"})).await;
    assert_eq!((run["issued"].as_u64(), run["already_invoiced"].as_u64()), (Some(1), Some(0)), "{run}");
    assert_eq!(run["invoices"][0]["number"], "P1-INV-000001");
    let run = api.post(ADMIN_KEY, "/api/v1/invoice-runs", json!({"period": "2026-11"})).await;
    assert_eq!((run["issued"].as_u64(), run["already_invoiced"].as_u64()), (Some(3), Some(1)), "{run}");
    let mut numbers: Vec<&str> =
        run["invoices"].as_array().unwrap().iter().map(|i| i["number"].as_str().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, ["INV-000001", "INV-000002", "INV-000003"], "one sequence per issuer, from 1, no gap");
    let again = api.post(ADMIN_KEY, "/api/v1/invoice-runs", json!({"period": "2026-11"})).await;
    assert_eq!((again["issued"].as_u64(), again["already_invoiced"].as_u64()), (Some(0), Some(4)), "{again}");

    // C2's invoice: the statement's figures, 21 % on the rounded total.
    let list = api.get(ADMIN_KEY, "/api/v1/accounts/C2/invoices").await;
    let listed = list["invoices"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{list}");
    let number = listed[0]["number"].as_str().unwrap().to_owned();
    let invoice = api.get(ADMIN_KEY, &format!("/api/v1/invoices/{number}")).await;
    let statement =
        api.get(ADMIN_KEY, "/api/v1/accounts/C2/statement?from=2026-11-01&to=2026-12-01").await["statement"].clone();
    for figure in ["opening_balance", "payments", "call_charges", "other_charges", "total_charges", "closing_balance"] {
        assert_eq!(dec(&invoice["figures"][figure]), dec(&statement[figure]), "{figure}: {invoice}");
    }
    let totals = &invoice["totals"];
    assert_eq!(
        (dec(&totals["net"]), dec(&totals["tax"]), dec(&totals["gross"])),
        (Decimal::new(1001, 2), Decimal::new(210, 2), Decimal::new(1211, 2))
    );
    assert_eq!(invoice["tax"]["tax_id"], "NL001");
    // By id as well as by number.
    let id = invoice["invoice"]["id"].as_str().unwrap().to_owned();
    assert_eq!(api.get(ADMIN_KEY, &format!("/api/v1/invoices/{id}")).await["invoice"]["number"], number.as_str());
    let c3 =
        api.get(ADMIN_KEY, "/api/v1/accounts/C3/invoices").await["invoices"][0]["number"].as_str().unwrap().to_owned();
    let c3 = api.get(ADMIN_KEY, &format!("/api/v1/invoices/{c3}")).await;
    assert_eq!((dec(&c3["totals"]["tax"]), dec(&c3["totals"]["gross"])), (Decimal::ZERO, Decimal::new(20, 0)), "{c3}");
    assert!(api.get(ADMIN_KEY, "/api/v1/accounts/C4/invoices").await["invoices"].as_array().unwrap().is_empty());

    // Downloads: a PDF and an HTML page, for those who may see them.
    let (status, content_type, pdf) = api.raw(dan.as_str(), &format!("/api/v1/invoices/{number}/invoice.pdf")).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/pdf"));
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    let (status, content_type, html) = api.raw(dan.as_str(), &format!("/api/v1/invoices/{number}/invoice.html")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains(&number) && html.contains("12.11"), "{html}");
    // Another tenant's invoice is not there at all, in every form.
    for path in [
        format!("/api/v1/invoices/{number}"),
        format!("/api/v1/invoices/{number}/invoice.pdf"),
        format!("/api/v1/invoices/{number}/invoice.html"),
        "/api/v1/accounts/C2/invoices".to_owned(),
    ] {
        let (status, answer) = api.call(cat.as_str(), Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        let (status, _) = api.call(pat.as_str(), Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let own = api.get(cat.as_str(), "/api/v1/accounts/C1/invoices").await;
    assert_eq!(own["invoices"][0]["number"], "P1-INV-000001");
    assert_eq!(api.get(pat.as_str(), "/api/v1/invoices/P1-INV-000001").await["invoice"]["account"], "C1");
    // The partner sees the operator's invoice of itself.
    let partner_own = api.get(pat.as_str(), "/api/v1/accounts/P1/invoices").await;
    assert_eq!(partner_own["invoices"].as_array().unwrap().len(), 1, "{partner_own}");

    // A late charge of November: the invoice is not edited; a credit note corrects it.
    let (status, answer) =
        api.call(ADMIN_KEY, Method::POST, &format!("/api/v1/invoices/{number}/credit-notes"), Some(json!({}))).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invoice_unchanged")),
        "{answer}"
    );
    api.post(ADMIN_KEY, "/api/v1/charges", json!({"account": "C2", "amount": "5", "occurred_at": "2026-11-20"})).await;
    let note =
        api.post(ADMIN_KEY, &format!("/api/v1/invoices/{number}/credit-notes"), json!({"reason": "late charge"})).await;
    let note_number = note["id"].as_str().unwrap().to_owned();
    assert_eq!(note_number, "CN-000001");
    let note = api.get(ADMIN_KEY, &format!("/api/v1/invoices/{note_number}")).await;
    assert_eq!(note["invoice"]["invoice"].as_str(), Some(number.as_str()));
    assert_eq!(note["reason"], "late charge");
    let corrected =
        api.get(ADMIN_KEY, "/api/v1/accounts/C2/statement?from=2026-11-01&to=2026-12-01").await["statement"].clone();
    for figure in ["total_charges", "closing_balance", "other_charges"] {
        let sum = dec(&invoice["figures"][figure]) + dec(&note["figures"][figure]);
        assert_eq!(sum, dec(&corrected[figure]), "{figure}");
    }
    // 15.005 → 15.01, tax 3.15, 18.16: the note adds 5.00, 1.05, 6.05.
    assert_eq!(dec(&invoice["totals"]["gross"]) + dec(&note["totals"]["gross"]), Decimal::new(1816, 2));
    assert_eq!(api.get(dan.as_str(), "/api/v1/accounts/C2/invoices").await["invoices"].as_array().unwrap().len(), 2);
    let (status, _, pdf) = api.raw(dan.as_str(), &format!("/api/v1/invoices/{note_number}/invoice.pdf")).await;
    assert!(status == StatusCode::OK && pdf.starts_with(b"%PDF"));
    // Only the issuer corrects, and a credit note is not corrected itself.
    let (status, _) =
        api.call(pat.as_str(), Method::POST, &format!("/api/v1/invoices/{number}/credit-notes"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = api
        .call(ADMIN_KEY, Method::POST, &format!("/api/v1/invoices/{note_number}/credit-notes"), Some(json!({})))
        .await;
    assert_eq!((status, answer["field"].as_str()), (StatusCode::BAD_REQUEST, Some("invoice")));

    // The portal: C2's Invoices page lists both documents with their downloads, which
    // work with the portal's session cookie; C1's invoice is not there for C2.
    let link =
        api.post(ADMIN_KEY, "/api/v1/accounts/C2/login-link", Value::Null).await["url"].as_str().unwrap().to_owned();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let opened = browser.get(&link).send().await.unwrap();
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let get = |path: String| browser.get(api.server.url(&path)).header("cookie", cookie.clone()).send();
    let page = get("/portal/accounts/C2/invoices".to_owned()).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(&number) && html.contains("CN-000001"), "{html}");
    assert!(html.contains(&format!("/portal/invoices/{number}/invoice.pdf")), "{html}");
    let pdf = get(format!("/portal/invoices/{number}/invoice.pdf")).await.unwrap();
    assert_eq!(pdf.status(), StatusCode::OK);
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF"));
    let html = get(format!("/portal/invoices/{number}/invoice.html")).await.unwrap();
    assert!(html.status() == StatusCode::OK && html.text().await.unwrap().contains("12.11"));
    assert_eq!(
        get("/portal/invoices/P1-INV-000001/invoice.pdf".to_owned()).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get("/portal/accounts/C1/invoices".to_owned()).await.unwrap().status(), StatusCode::NOT_FOUND);
    api.server.stop();
}
