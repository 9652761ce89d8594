//! The portal in a real headless Chromium, driven through chromedriver (WebDriver): what a
//! person does with a login link, a statement and the partner's fund move form; a
//! customer's invoice and its downloads; changing a password, and the temporary password
//! a partner sets. Needs Debian's `chromium` and `chromium-driver`, which `scripts/test`
//! installs; without them the test fails rather than pass unseen.

mod common;
mod portal_fixture;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::send;
use fantoccini::{Client, ClientBuilder, Locator};
use portal_fixture::*;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM_PATHS: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);
const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Option<Driver> {
    let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Driver { child, port })
}

async fn browser(driver: &Driver) -> Client {
    let binary = CHROMIUM_PATHS.iter().find(|p| std::path::Path::new(p).exists()).expect("chromium is installed");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            // Root in a container has no sandbox to offer; /dev/shm is small there.
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1000,1400", "--lang=en-US"],
            // The portal must work with JavaScript off: the pages run none of theirs.
            "prefs": {"profile.managed_default_content_settings.javascript": 2},
        }),
    );
    let started = Instant::now();
    loop {
        let builder = ClientBuilder::rustls()
            .expect("a TLS config")
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await;
        match builder {
            Ok(client) => return client,
            Err(error) => {
                assert!(started.elapsed() < DRIVER_START_TIMEOUT, "chromedriver did not start: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Clicks what `locator` finds and waits until the browser has left the page (the old
/// page's root goes stale), so that what is read next is the new page's.
async fn click_away(client: &Client, locator: Locator<'_>) {
    let old = client.find(Locator::Css("html")).await.unwrap();
    client.find(locator).await.unwrap().click().await.unwrap();
    let started = Instant::now();
    while old.tag_name().await.is_ok() {
        assert!(started.elapsed() < NAVIGATION_TIMEOUT, "the click led nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`click_away`] to another portal page, waiting for its content.
async fn click_through(client: &Client, locator: Locator<'_>) {
    click_away(client, locator).await;
    client.wait().for_element(Locator::Css("main")).await.unwrap();
}

/// Types into a field, replacing what it held.
async fn fill(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// A field's current value, as the browser holds it.
async fn value_of(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap().prop("value").await.unwrap().unwrap_or_default()
}

/// Fills the portal's sign-in form (the new password too, when given) and sends it.
async fn sign_in(client: &Client, book: &Book, login: &str, password: &str, new_password: Option<&str>) {
    if !client.current_url().await.unwrap().path().ends_with("/portal/login") {
        client.goto(&book.server.url("/portal/login")).await.unwrap();
    }
    fill(client, "#login", login).await;
    fill(client, "#password", password).await;
    if let Some(new_password) = new_password {
        fill(client, "#new_password", new_password).await;
    }
    click_through(client, Locator::Css("main form button[type=submit]")).await;
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// An API session of `login`: its access token.
async fn api_session(book: &Book, login: &str, password: &str) -> String {
    let request = book.client.post(book.server.url("/api/v1/sessions"));
    let (status, answer) = send(request.json(&json!({"login": login, "password": password}))).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

async fn me(book: &Book, access_token: &str) -> StatusCode {
    book.call(access_token, Method::GET, "/api/v1/me", Value::Null).await.0
}

/// A portal session opened by another browser: its cookie, `name=value`.
async fn portal_cookie(book: &Book, login: &str, password: &str) -> String {
    let form = [("login", login), ("password", password)];
    let response = no_redirects().post(book.server.url("/portal/login")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers().get(SET_COOKIE).expect("a portal session").to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// A portal page fetched with a session cookie (or none), not following redirects.
async fn fetch(url: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = no_redirects().get(url);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

fn dec(value: &Value) -> Decimal {
    value.to_string().trim_matches('"').parse().unwrap_or_else(|_| panic!("not a decimal: {value}"))
}

fn dec_text(text: &str) -> Decimal {
    text.parse().unwrap_or_else(|_| panic!("not a decimal: {text}"))
}

/// Last month as `YYYY-MM`, and a day of it as `YYYY-MM-DD`.
fn last_month() -> (String, impl Fn(u32) -> String) {
    use chrono::Datelike;
    let first =
        chrono::Utc::now().date_naive().with_day(1).unwrap().checked_sub_months(chrono::Months::new(1)).unwrap();
    (first.format("%Y-%m").to_string(), move |day| first.with_day(day).unwrap().to_string())
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_and_a_partner_use_the_portal_in_a_browser() {
    // The WebDriver client's TLS stack is built with two crypto providers in this
    // workspace (reqwest's ring, hyper-rustls' default aws-lc-rs): it must be told which.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Never skipped: `scripts/test` installs Chromium and chromedriver when missing.
    let driver = start_driver().expect("no chromedriver: apt-get install chromium chromium-driver (scripts/test does)");
    let data = tempfile::tempdir().unwrap();
    let mut book = book(data.path(), &[]).await;
    let client = browser(&driver).await;
    let (month, _, _) = this_month();

    // Pages' scripts really are off in this browser.
    client
        .goto("data:text/html,<p id=probe>off</p><script>document.getElementById('probe').textContent='on'</script>")
        .await
        .unwrap();
    assert_eq!(text(&client, "#probe").await, "off", "JavaScript is disabled for pages");

    // A customer opens its login link and lands on its overview.
    let link = book.link("C1").await;
    client.goto(&link).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/accounts/C1"));
    assert_eq!(text(&client, "#balance").await, format!("{C1_BALANCE} EUR"));
    assert_eq!(text(&client, "#credit-limit").await, "0.00 EUR");
    assert_eq!(text(&client, "#available").await, format!("{C1_BALANCE} EUR"));
    client.find(Locator::Css("svg[role=img]")).await.expect("the balance chart");

    // The statement: every figure, and the month picker's choice.
    click_through(&client, Locator::LinkText("Statement")).await;
    assert_eq!(
        client.find(Locator::Id("month")).await.unwrap().prop("value").await.unwrap().as_deref(),
        Some(month.as_str())
    );
    assert_eq!(text(&client, "#figure-opening_balance").await, "0.00");
    assert_eq!(text(&client, "#figure-payments").await, C1_PAYMENTS);
    assert_eq!(text(&client, "#figure-transfers_in").await, C1_TRANSFERS_IN);
    assert_eq!(text(&client, "#figure-other_charges").await, C1_OTHER_CHARGES);
    assert_eq!(text(&client, "#figure-total_charges").await, C1_OTHER_CHARGES);
    assert_eq!(text(&client, "#figure-closing_balance").await, C1_BALANCE);
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal-statement.png");
    std::fs::write(&target, &png).unwrap();
    // `UPDATE_SCREENSHOTS=1` refreshes the README's picture.
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/portal-statement.png"), &png)
            .unwrap();
    }

    // At a phone's width nothing runs off the side of the page (wide tables scroll alone).
    client.set_window_size(390, 844).await.unwrap();
    let overflow = client
        .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
        .await
        .unwrap();
    assert_eq!(overflow.as_i64(), Some(0), "the statement page is wider than a phone");
    client.set_window_size(1000, 1400).await.unwrap();

    // Follow a figure to the postings behind it, and a posting to its event.
    click_through(&client, Locator::Css("#figure-payments a")).await;
    assert_eq!(text(&client, "#lines-sum").await, C1_PAYMENTS);
    click_through(&client, Locator::Css("#lines tbody a")).await;
    let event = text(&client, "#events tbody tr").await;
    assert!(event.contains("Payment") && event.contains(C1_PAYMENTS), "{event}");
    // In a customer's words: no event types, no log positions (issue 19).
    assert!(!event.contains("PaymentReceived") && !event.contains('#'), "{event}");

    // Another customer's pages are not there.
    client.goto(&book.server.url("/portal/accounts/C2")).await.unwrap();
    assert_eq!(text(&client, "h1").await, "Not found");
    assert!(!client.source().await.unwrap().contains("Customer Two"));

    // The link does not work twice.
    client.goto(&link).await.unwrap();
    assert_eq!(text(&client, "h1").await, "This login link cannot be used");
    assert!(text(&client, "main").await.contains("already been used"));

    // The partner follows its link from another site, as from a webmail: the browser
    // withholds the SameSite=Strict cookie from that navigation, and the portal reloads
    // itself once to get it.
    let partner_link = book.link("P1").await;
    client.goto(&format!("data:text/html,<a id=mail href='{partner_link}'>Sign in</a>")).await.unwrap();
    click_through(&client, Locator::Id("mail")).await;
    client.wait().for_element(Locator::Id("balance")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/accounts/P1"));

    // The partner moves funds to a customer through the form.
    assert_eq!(text(&client, "#balance").await, format!("{P1_BALANCE} EUR"));
    client.find(Locator::Css("#customer option[value=C2]")).await.unwrap().click().await.unwrap();
    client.find(Locator::Id("amount")).await.unwrap().send_keys("12.5").await.unwrap();
    client.find(Locator::Id("note")).await.unwrap().send_keys("from the browser").await.unwrap();
    click_through(&client, Locator::Id("move-submit")).await;
    assert!(text(&client, ".notice").await.starts_with("Funds moved"));
    assert_eq!(text(&client, "#balance").await, "447.50 EUR");
    assert_eq!(text(&client, "[data-customer-balance=C2]").await, "19.50");

    // And back, choosing the other direction.
    client.find(Locator::Css("#customer option[value=C2]")).await.unwrap().click().await.unwrap();
    client.find(Locator::Css("input[value=from_customer]")).await.unwrap().click().await.unwrap();
    client.find(Locator::Id("amount")).await.unwrap().send_keys("2.5").await.unwrap();
    click_through(&client, Locator::Id("move-submit")).await;
    assert_eq!(text(&client, "#balance").await, "450.00 EUR");
    assert_eq!(text(&client, "[data-customer-balance=C2]").await, "17.00");

    // Too much is refused on the page, naming the account by its number, and the form
    // keeps what was entered (issue 19).
    client.find(Locator::Css("#customer option[value=C2]")).await.unwrap().click().await.unwrap();
    client.find(Locator::Css("input[value=from_customer]")).await.unwrap().click().await.unwrap();
    client.find(Locator::Id("amount")).await.unwrap().send_keys("1000").await.unwrap();
    client.find(Locator::Id("note")).await.unwrap().send_keys("too much").await.unwrap();
    click_through(&client, Locator::Id("move-submit")).await;
    let refusal = text(&client, "#move-error").await;
    assert!(refusal.starts_with("account C2 has ") && refusal.ends_with("1000.00 requested"), "{refusal}");
    let value = async |css: &str, property: &str| {
        client.find(Locator::Css(css)).await.unwrap().prop(property).await.unwrap().unwrap_or_default()
    };
    assert_eq!(value("#amount", "value").await, "1000");
    assert_eq!(value("#note", "value").await, "too much");
    assert_eq!(value("#customer", "value").await, "C2");
    assert_eq!(value("input[value=from_customer]", "checked").await, "true");
    assert_eq!(text(&client, "#balance").await, "450.00 EUR", "nothing moved");
    let png = client.screenshot().await.unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal-partner.png"), &png).unwrap();
    // `UPDATE_SCREENSHOTS=1` refreshes docs/portal.md's picture of a refused move.
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/portal-partner.png"), &png)
            .unwrap();
    }

    // Signing out ends the session: the pages lead to the login page.
    click_through(&client, Locator::Css("header button")).await;
    client.goto(&book.server.url("/portal/accounts/P1")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/login"));
    client.find(Locator::Id("password")).await.expect("the login page");

    // Last month's invoice of D1, the operator's customer, issued through the API with the
    // operator's tax (issue 18), then read in the portal by D1's user.
    let (billed, day) = last_month();
    book.admin(Method::POST, "/api/v1/tax-rules", json!({"rate": "21", "name": "VAT", "tax_id": "NL001"})).await;
    book.admin(Method::POST, "/api/v1/payments", json!({"account": "D1", "amount": "50", "occurred_at": day(2)})).await;
    let charge = json!({"account": "D1", "amount": "10.005", "description": "Line rental", "occurred_at": day(5)});
    book.admin(Method::POST, "/api/v1/charges", charge).await;
    let run = book.admin(Method::POST, "/api/v1/invoice-runs", json!({"period": billed, "issuer": "operator"})).await;
    assert_eq!((run["issued"].as_u64(), run["invoices"][0]["account"].as_str()), (Some(1), Some("D1")), "{run}");
    let number = run["invoices"][0]["number"].as_str().unwrap().to_owned();
    let invoice = book.admin(Method::GET, &format!("/api/v1/invoices/{number}"), Value::Null).await;
    let (totals, period) = (&invoice["totals"], &invoice["invoice"]);
    let (period_from, period_to) = (period["period_from"].as_str().unwrap(), period["period_to"].as_str().unwrap());
    assert_eq!(&period_from[..10], day(1), "{invoice}");
    // The figures below are worth checking only if the tax is not nothing.
    assert!(dec(&totals["tax"]) > Decimal::ZERO && dec(&totals["gross"]) > dec(&totals["net"]), "{invoice}");
    let first_password = "dee first password";
    let dee = json!({"login": "dee", "password": first_password, "role": "customer", "account": "D1"});
    book.admin(Method::POST, "/api/v1/users", dee).await;

    sign_in(&client, &book, "dee", first_password, None).await;
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/accounts/D1"));
    click_through(&client, Locator::LinkText("Invoices")).await;
    let rows = client.find_all(Locator::Css("#invoices tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "one invoice");
    let mut cells = Vec::new();
    for cell in rows[0].find_all(Locator::Css("td")).await.unwrap() {
        cells.push(cell.text().await.unwrap().trim().to_owned());
    }
    assert_eq!(cells[..3], [number.as_str(), "Invoice", billed.as_str()], "number, kind, period: {cells:?}");
    let issued_at = period["issued_at"].as_str().unwrap();
    assert!(cells[3].starts_with(&issued_at[..10]), "issued {issued_at}: {cells:?}");
    let gross = cells[4].strip_suffix(" EUR").unwrap_or_else(|| panic!("a total in EUR: {cells:?}"));
    assert_eq!(dec_text(gross), dec(&totals["gross"]), "the total including tax, as the API has it");
    // The page is short: a short window, so that the picture is not mostly blank.
    client.set_window_size(1000, 360).await.unwrap();
    let png = client.screenshot().await.unwrap();
    client.set_window_size(1000, 1400).await.unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal-invoices.png"), &png).unwrap();
    // `UPDATE_SCREENSHOTS=1` refreshes docs/portal.md's picture of the invoices page.
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/portal-invoices.png"), &png)
            .unwrap();
    }

    // The PDF link answers the browser's session with the PDF, and no one without it.
    let pdf_href = client.find(Locator::LinkText("PDF")).await.unwrap().prop("href").await.unwrap().unwrap();
    let cookie = client.get_named_cookie("tollbook_portal").await.unwrap();
    let cookie = format!("{}={}", cookie.name(), cookie.value());
    let response = fetch(&pdf_href, Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::OK, "{pdf_href}");
    assert_eq!(response.headers().get(CONTENT_TYPE).unwrap(), "application/pdf");
    assert!(response.bytes().await.unwrap().starts_with(b"%PDF-"), "a PDF");
    assert_eq!(fetch(&pdf_href, None).await.status(), StatusCode::SEE_OTHER, "to the sign-in page");

    // The HTML: its number, period and totals with tax, as the API reports them.
    click_away(&client, Locator::LinkText("HTML")).await;
    assert_eq!(client.title().await.unwrap(), format!("Invoice {number}"));
    let heading = async |name: &str| {
        client
            .find(Locator::XPath(&format!("//table[@class='heading']//tr[th='{name}']/td")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let line = async |label: &str| {
        let xpath = format!("//table[@class='lines']//tr[td[1]='{label}']/td[2]");
        let cell = client.find(Locator::XPath(&xpath)).await.unwrap_or_else(|e| panic!("{label}: {e}"));
        dec_text(cell.text().await.unwrap().trim())
    };
    assert_eq!(heading("Number").await, number);
    assert_eq!(heading("Period").await, format!("{} to {} (exclusive)", &period_from[..10], &period_to[..10]));
    assert_eq!(heading("Tax id").await, "NL001");
    assert_eq!(line("Total excluding tax").await, dec(&totals["net"]));
    let tax = format!("{} {}%", invoice["tax"]["name"].as_str().unwrap(), invoice["tax"]["rate"].as_str().unwrap());
    assert_eq!(line(&tax).await, dec(&totals["tax"]));
    assert_eq!(line("Total including tax").await, dec(&totals["gross"]));
    client.back().await.unwrap();
    client.wait().for_element(Locator::Id("invoices")).await.unwrap();

    // The user changes its password in the portal. It has two other sessions: one in the
    // API and one in another browser.
    let second_password = "dee second password";
    let other_access = api_session(&book, "dee", first_password).await;
    let other_cookie = portal_cookie(&book, "dee", first_password).await;
    let account_url = book.server.url("/portal/accounts/D1");
    assert_eq!(fetch(&account_url, Some(&other_cookie)).await.status(), StatusCode::OK);
    click_through(&client, Locator::LinkText("Password")).await;
    let submit = Locator::Css("main form button[type=submit]");
    fill(&client, "#current_password", "not my password").await;
    fill(&client, "#new_password", second_password).await;
    fill(&client, "#repeat_password", second_password).await;
    click_through(&client, submit).await;
    assert_eq!(text(&client, ".error").await, "the current password does not match");
    // What was typed is not written back: every field of this form is a password, and a
    // password never goes into a page (the sign-in form keeps the login, not the password).
    for field in ["#current_password", "#new_password", "#repeat_password"] {
        assert_eq!(value_of(&client, field).await, "", "{field}");
    }
    assert!(!client.source().await.unwrap().contains(second_password), "no password in the page");
    fill(&client, "#current_password", first_password).await;
    fill(&client, "#new_password", second_password).await;
    fill(&client, "#repeat_password", "dee other password").await;
    click_through(&client, submit).await;
    assert_eq!(text(&client, ".error").await, "The two new passwords differ.");
    // Neither refusal changed anything.
    assert_eq!(me(&book, &other_access).await, StatusCode::OK);
    assert_eq!(fetch(&account_url, Some(&other_cookie)).await.status(), StatusCode::OK);

    fill(&client, "#current_password", first_password).await;
    fill(&client, "#new_password", second_password).await;
    fill(&client, "#repeat_password", second_password).await;
    click_through(&client, submit).await;
    assert_eq!(text(&client, ".notice").await, "Your password has been changed; you were signed out everywhere else.");
    assert!(client.find(Locator::Css(".error")).await.is_err(), "no error with the notice");
    // This session stays; the other two end.
    client.goto(&account_url).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().as_str(), account_url);
    client.find(Locator::Id("balance")).await.expect("still signed in");
    assert_eq!(me(&book, &other_access).await, StatusCode::UNAUTHORIZED, "the API session ended");
    let other = fetch(&account_url, Some(&other_cookie)).await;
    assert_eq!(other.status(), StatusCode::SEE_OTHER, "the other browser's session ended");
    assert_eq!(other.headers().get("location").unwrap(), "/portal/login");
    // The old password no longer signs in; the new one does.
    click_through(&client, Locator::Css("header button")).await;
    sign_in(&client, &book, "dee", first_password, None).await;
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/login"));
    assert_eq!(text(&client, ".error").await, "The login and password do not match an account of this portal.");
    sign_in(&client, &book, "dee", second_password, None).await;
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/accounts/D1"));
    click_through(&client, Locator::Css("header button")).await;

    // A temporary password, set by the user's partner: signing in with it leads nowhere
    // but to choosing a new one.
    let partner_password = "the partner password";
    let pat = json!({"login": "pat", "password": partner_password, "role": "partner", "account": "P1"});
    book.admin(Method::POST, "/api/v1/users", pat).await;
    let pat = api_session(&book, "pat", partner_password).await;
    let temporary = "a temporary password";
    let (status, answer) =
        book.call(&pat, Method::PUT, "/api/v1/users/c2-user/password", json!({"password": temporary})).await;
    assert_eq!((status, answer["user"]["password_must_change"].as_bool()), (StatusCode::OK, Some(true)), "{answer}");
    sign_in(&client, &book, "c2-user", temporary, None).await;
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/login"));
    assert_eq!(
        text(&client, ".error").await,
        "Your password was set by your provider. Please choose a new one to sign in."
    );
    assert_eq!(value_of(&client, "#login").await, "c2-user", "the login is kept");
    client.find(Locator::Id("new_password")).await.expect("a field for the new password");
    for page in ["/portal/accounts/C2", "/portal/accounts/C2/invoices", "/portal/password"] {
        client.goto(&book.server.url(page)).await.unwrap();
        assert!(client.current_url().await.unwrap().path().ends_with("/portal/login"), "{page}: not signed in");
    }
    let chosen = "c2 own password 1";
    sign_in(&client, &book, "c2-user", temporary, None).await;
    sign_in(&client, &book, "c2-user", temporary, Some(chosen)).await;
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/accounts/C2"));
    client.find(Locator::Id("balance")).await.expect("the overview");
    click_through(&client, Locator::Css("header button")).await;
    sign_in(&client, &book, "c2-user", temporary, None).await;
    assert_eq!(text(&client, ".error").await, "The login and password do not match an account of this portal.");
    sign_in(&client, &book, "c2-user", chosen, None).await;
    assert!(client.current_url().await.unwrap().path().ends_with("/portal/accounts/C2"));
    client.close().await.unwrap();
}
