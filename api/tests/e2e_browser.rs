//! The portal in a real headless Chromium, driven through chromedriver (WebDriver): what a
//! person does with a login link, a statement and the partner's fund move form. Needs
//! Debian's `chromium` and `chromium-driver`, which `scripts/test` installs; without
//! them the test fails rather than pass unseen.

mod common;
mod portal_fixture;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use portal_fixture::*;
use serde_json::json;

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
async fn click_through(client: &Client, locator: Locator<'_>) {
    let old = client.find(Locator::Css("html")).await.unwrap();
    client.find(locator).await.unwrap().click().await.unwrap();
    let started = Instant::now();
    while old.tag_name().await.is_ok() {
        assert!(started.elapsed() < NAVIGATION_TIMEOUT, "the click led nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.wait().for_element(Locator::Css("main")).await.unwrap();
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
    client.close().await.unwrap();
}
