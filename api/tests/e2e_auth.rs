//! Every endpoint against every kind of wrong credential, on the real binary: no
//! credential, a wrong token, an expired token, a token used from a non-allowed address
//! (answered `address_not_allowed`), a revoked token, sessions opened with a revoked and
//! with an expired token, another partner's token and a customer's token. Each answer is
//! checked for its status and for not carrying anything of the tenant it was aimed at.

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, Server, send};
use reqwest::{Method, StatusCode};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The tenant under attack: partner P1 and its customer C1, with distinctive data.
const P1_NAME: &str = "Partner One Confidential";
const C1_NAME: &str = "Customer One Confidential";
const C1_PAYMENT: &str = "987.65432";

struct Setup {
    client: reqwest::Client,
    server: Server,
}

impl Setup {
    async fn call(
        &self,
        credential: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.server.url(path));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        send(request).await
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, body) = self.call(Some(ADMIN_KEY), method, path, Some(&body)).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn token_for(&self, user: &str, extra: Value) -> (String, String) {
        let mut request = json!({"user": user, "description": "e2e"});
        request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let body = self.admin(Method::POST, "/api/v1/tokens", request).await;
        (body["token"].as_str().unwrap().to_owned(), body["details"]["id"].as_str().unwrap().to_owned())
    }
}

/// What a kind of caller gets from one endpoint.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The same for every credential (public endpoints).
    Always(u16),
    /// 401 for rejected credentials; these statuses for another partner and a customer.
    Protected { other_partner: u16, customer: u16 },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_wrong_credentials_and_foreign_tenants() {
    let data = tempfile::tempdir().unwrap();
    // The webhook below names a loopback URL, which webhooks reach only when allowed.
    let args = ["--admin-key", ADMIN_KEY, "--webhook-allow-private", "127.0.0.0/8"];
    let server = Server::start(data.path(), &args).await;
    let setup = Setup { client: reqwest::Client::new(), server };
    let accounts = "/api/v1/accounts";
    for (number, name, kind, partner) in [
        ("P1", P1_NAME, "partner", None),
        ("C1", C1_NAME, "customer", Some("P1")),
        ("C1b", "Customer One B", "customer", Some("P1")),
        ("P2", "Partner Two", "partner", None),
        ("C2", "Customer Two", "customer", Some("P2")),
    ] {
        let body = json!({"number": number, "name": name, "kind": kind, "partner": partner, "currency": "EUR"});
        setup.admin(Method::POST, accounts, body).await;
    }
    setup.admin(Method::POST, "/api/v1/payments", json!({"account": "P1", "amount": "500"})).await;
    let payment = setup.admin(Method::POST, "/api/v1/payments", json!({"account": "C1", "amount": C1_PAYMENT})).await;
    let c1_payment_position = payment["position"].as_u64().unwrap();
    let c1_id = {
        let body = setup
            .admin(Method::GET, &format!("/api/v1/accounts/C1?min_position={c1_payment_position}"), json!(null))
            .await;
        body["account"]["id"].as_str().unwrap().to_owned()
    };
    let users = "/api/v1/users";
    for (login, role, account) in
        [("p1-user", "partner", "P1"), ("p2-user", "partner", "P2"), ("c1b-user", "customer", "C1b")]
    {
        let body = json!({"login": login, "password": "correct horse battery", "role": role, "account": account});
        setup.admin(Method::POST, users, body).await;
    }

    // The credentials of the walk.
    let (p1_token, p1_token_id) = setup.token_for("p1-user", json!({})).await;
    let (p2_token, _) = setup.token_for("p2-user", json!({})).await;
    let (c1b_token, _) = setup.token_for("c1b-user", json!({})).await;
    let (outside_token, _) = setup.token_for("p1-user", json!({"allowed_ips": "10.0.0.0/8"})).await;
    let (loopback_token, _) = setup.token_for("p1-user", json!({"allowed_ips": ["127.0.0.0/8"]})).await;
    // Long enough for the set-up below on a busy machine; the walk waits for it to pass.
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(6);
    let expires_at = expiry.to_rfc3339();
    let (expiring_token, _) = setup.token_for("p1-user", json!({"expires_at": expires_at})).await;
    // P1's retail tariff and a call of C1's, both P1's business only.
    let tariff = json!({"name": format!("{P1_NAME} retail"), "currency": "EUR", "rates": [{"prefix": "1", "price_per_minute": "1"}]});
    let (status, body) = setup.call(Some(&p1_token), Method::POST, "/api/v1/tariffs", Some(&tariff)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let p1_tariff = body["links"]["tariff"].as_str().unwrap().to_owned();
    // P1's plan, paying an operator plan, and C1's subscription to it (starting far off,
    // so that no fee moves C1's balance during the walk).
    let plan = json!({"name": "wholesale line", "price": "2", "currency": "EUR", "period": "monthly"});
    let operator_plan =
        setup.admin(Method::POST, "/api/v1/plans", plan).await["links"]["plan"].as_str().unwrap().to_owned();
    let operator_plan_id = operator_plan.rsplit('/').next().unwrap().to_owned();
    let plan = json!({"name": "P1 line", "price": "5", "currency": "EUR", "period": "monthly", "wholesale_plan": operator_plan_id});
    let (status, body) = setup.call(Some(&p1_token), Method::POST, "/api/v1/plans", Some(&plan)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let p1_plan = body["links"]["plan"].as_str().unwrap().to_owned();
    let p1_plan_id = p1_plan.rsplit('/').next().unwrap().to_owned();
    let subscription = json!({"account": "C1", "plan": p1_plan_id, "starts_at": "2100-01-01"});
    let (status, body) = setup.call(Some(&p1_token), Method::POST, "/api/v1/subscriptions", Some(&subscription)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let c1_subscription = body["links"]["subscription"].as_str().unwrap().to_owned();
    let call = json!({"id": "c1-call", "account": "C1", "callee": "1555", "start": "2026-03-01T10:00:00Z",
        "answer": "2026-03-01T10:00:00Z", "end": "2026-03-01T10:01:00Z", "cost": "0.5", "partner_cost": "0.2"});
    let charged = setup.admin(Method::POST, "/api/v1/cdrs", call.clone()).await;
    let c1_balance = (Decimal::from_str(C1_PAYMENT).unwrap() - Decimal::new(5, 1)).to_string();
    setup.admin(Method::GET, &format!("/api/v1/accounts/C1?min_position={}", charged["position"]), json!(null)).await;
    let hook = json!({"url": "http://127.0.0.1:9/p1-hook", "account": "C1", "description": P1_NAME});
    let (status, body) = setup.call(Some(&p1_token), Method::POST, "/api/v1/webhooks", Some(&hook)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let p1_hook = format!("/api/v1/webhooks/{}", body["webhook"]["id"].as_str().unwrap());
    // A column mapping of P1's switch, saved by the operator.
    let mapping = json!({"name": "p1-map", "partner": "P1", "id": "call", "caller": "from", "callee": "to",
        "start": "start", "end": "end"});
    setup.admin(Method::POST, "/api/v1/cdr-mappings", mapping).await;
    let (status, body) = setup.call(Some(&p1_token), Method::POST, "/api/v1/accounts/C1/login-link", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let p1_link = format!("/api/v1/login-links/{}", body["id"].as_str().unwrap());
    let login = json!({"login": "p1-user", "password": "correct horse battery"});
    let (status, session) = setup.call(None, Method::POST, "/api/v1/sessions", Some(&login)).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let p1_session = session["session_id"].as_str().unwrap().to_owned();
    let p1_access = session["access_token"].as_str().unwrap().to_owned();
    // A token that is revoked, and the sessions opened with it and with the expiring
    // token before that: each ends with its credential.
    let (revoked_token, revoked_token_id) = setup.token_for("p1-user", json!({})).await;
    let mut token_sessions = Vec::new();
    for token in [&revoked_token, &expiring_token] {
        let login = json!({"login": "p1-user", "token": token});
        let (status, session) = setup.call(None, Method::POST, "/api/v1/sessions", Some(&login)).await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        token_sessions.push(session["access_token"].as_str().unwrap().to_owned());
    }
    for credential in [&revoked_token, &token_sessions[0], &token_sessions[1]] {
        let (status, body) = setup.call(Some(credential), Method::GET, "/api/v1/accounts/C1", None).await;
        assert_eq!(status, StatusCode::OK, "works before its token ends: {body}");
    }
    let (status, body) =
        setup.call(Some(ADMIN_KEY), Method::DELETE, &format!("/api/v1/tokens/{revoked_token_id}"), None).await;
    assert!(status.is_success(), "{body}");

    // Positive controls: P1's own credentials reach P1's book, from an allowed address too,
    // and the expiring token works before it expires.
    for credential in [&p1_token, &p1_access, &loopback_token, &expiring_token] {
        let (status, body) = setup.call(Some(credential), Method::GET, "/api/v1/accounts/C1", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["account"]["name"], C1_NAME);
    }
    let (status, body) = setup.call(Some(&c1b_token), Method::GET, "/api/v1/accounts/C1b", None).await;
    assert_eq!(status, StatusCode::OK, "a customer reads its own account: {body}");
    let until_expired = (expiry - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(until_expired).await;

    let rejected: [(&str, Option<&str>); 8] = [
        ("no credential", None),
        ("a wrong API token", Some("tbk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        ("a forged JWT", Some("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJwMS11c2VyIn0.AAAA")),
        ("an expired token", Some(&expiring_token)),
        ("a token from a non-allowed address", Some(&outside_token)),
        ("a revoked token", Some(&revoked_token)),
        ("a session of a revoked token", Some(&token_sessions[0])),
        ("a session of an expired token", Some(&token_sessions[1])),
    ];
    let statement = "/api/v1/accounts/C1/statement?from=2000-01-01&to=2100-01-01";
    let new_customer = json!({"number": "C9", "name": "x", "kind": "customer", "partner": "P1", "currency": "EUR"});
    let amount = |account: &str| json!({"account": account, "amount": "1"});
    let endpoints: Vec<(Method, String, Option<Value>, Expect)> = vec![
        // Public: the same answer whoever asks, and nothing of any tenant in it.
        (Method::GET, "/health".into(), None, Expect::Always(200)),
        (Method::GET, "/health/live".into(), None, Expect::Always(200)),
        (Method::GET, "/health/ready".into(), None, Expect::Always(200)),
        (Method::GET, "/api/v1/openapi.json".into(), None, Expect::Always(200)),
        (Method::GET, "/api/v1/docs/".into(), None, Expect::Always(200)),
        (Method::GET, "/.well-known/jwks.json".into(), None, Expect::Always(200)),
        (
            Method::POST,
            "/api/v1/sessions".into(),
            Some(json!({"login": "p1-user", "password": "guess guess"})),
            Expect::Always(401),
        ),
        (
            Method::POST,
            "/api/v1/sessions/refresh".into(),
            Some(json!({"refresh_token": "tbr_nothing"})),
            Expect::Always(401),
        ),
        // Protected.
        (Method::GET, "/api/v1".into(), None, Expect::Protected { other_partner: 200, customer: 200 }),
        (Method::GET, "/api/v1/me".into(), None, Expect::Protected { other_partner: 200, customer: 200 }),
        (Method::POST, accounts.into(), Some(new_customer), Expect::Protected { other_partner: 404, customer: 403 }),
        (Method::GET, "/api/v1/accounts/P1".into(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (Method::GET, "/api/v1/accounts/C1".into(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (Method::GET, statement.into(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (
            Method::POST,
            "/api/v1/accounts/C1/status".into(),
            Some(json!({"status": "suspended"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/accounts/C1/credit-limit".into(),
            Some(json!({"credit_limit": "1000"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/accounts/C1/tariff".into(),
            Some(json!({"tariff": "01a211ed-0000-7000-8000-000000000000"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/payments".into(),
            Some(amount("C1")),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/adjustments".into(),
            Some(amount("C1")),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/charges".into(),
            Some(amount("C1")),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/transfers".into(),
            Some(json!({"from": "P1", "to": "C1", "amount": "1"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/reversals".into(),
            Some(json!({"position": c1_payment_position})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::POST,
            users.into(),
            Some(json!({"login": "intruder", "password": "intruder password", "role": "admin"})),
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (Method::GET, users.into(), None, Expect::Protected { other_partner: 403, customer: 403 }),
        (Method::GET, "/api/v1/users/p1-user".into(), None, Expect::Protected { other_partner: 403, customer: 403 }),
        (Method::DELETE, "/api/v1/users/p1-user".into(), None, Expect::Protected { other_partner: 403, customer: 403 }),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"user": "p1-user"})),
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (
            Method::GET,
            "/api/v1/tokens?user=p1-user".into(),
            None,
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (
            Method::GET,
            format!("/api/v1/tokens/{p1_token_id}"),
            None,
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (
            Method::DELETE,
            format!("/api/v1/tokens/{p1_token_id}"),
            None,
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (
            Method::DELETE,
            format!("/api/v1/sessions/{p1_session}"),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        // Lists answer with the caller's own accounts only.
        (Method::GET, accounts.into(), None, Expect::Protected { other_partner: 200, customer: 200 }),
        (
            Method::GET,
            "/api/v1/accounts/C1/events".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::GET,
            "/api/v1/accounts/C1/statement/lines?from=2000-01-01&to=2100-01-01".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (Method::GET, "/api/v1/accounts/C1/cdrs".into(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (
            Method::GET,
            "/api/v1/accounts/C1/cdrs/c1-call".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::POST,
            "/api/v1/cdrs".into(),
            Some(json!({"id": "c1-call-2", "account": "C1", "callee": "1555", "start": "2026-03-01T10:00:00Z",
                "answer": "2026-03-01T10:00:00Z", "end": "2026-03-01T10:01:00Z", "cost": "0.5", "partner_cost": "0.2"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        // Switches: the operator ties accounts to the identifiers switches use; a CDR is
        // found by the switch's id alone only where the caller may see it; a switch's CDR
        // naming another book's identifier names no account for that caller.
        (
            Method::POST,
            "/api/v1/accounts/C1/switch-identifiers".into(),
            Some(json!({"account_codes": ["c1-code"]})),
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (
            Method::GET,
            "/api/v1/accounts/C1/switch-identifiers".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (Method::GET, "/api/v1/cdrs/c1-call".into(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (
            Method::POST,
            "/api/v1/cdrs/freeswitch".into(),
            Some(json!({"variables": {"uuid": "fs-walk-1", "accountcode": "c1-code", "destination_number": "1555",
                "caller_id_number": "100", "start_epoch": "1772359200", "answer_epoch": "1772359200",
                "end_epoch": "1772359260", "duration": "60", "billsec": "60", "hangup_cause": "NORMAL_CLEARING"}})),
            Expect::Protected { other_partner: 422, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/cdrs/asterisk".into(),
            Some(json!({})),
            Expect::Protected { other_partner: 415, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/cdrs/kamailio".into(),
            Some(json!({})),
            Expect::Protected { other_partner: 415, customer: 403 },
        ),
        (Method::GET, "/api/v1/hangup-causes".into(), None, Expect::Protected { other_partner: 200, customer: 200 }),
        // Column mappings: the operator saves and deletes them; a partner reads and uses its
        // own book's, never another's; customers have none.
        (
            Method::POST,
            "/api/v1/cdr-mappings".into(),
            Some(
                json!({"name": "walk", "partner": "P1", "id": 1, "caller": 2, "callee": 3, "start": 4, "end": 5, "header": false}),
            ),
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (Method::GET, "/api/v1/cdr-mappings".into(), None, Expect::Protected { other_partner: 200, customer: 403 }),
        (
            Method::GET,
            "/api/v1/cdr-mappings/p1-map?partner=P1".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::DELETE,
            "/api/v1/cdr-mappings/p1-map?partner=P1".into(),
            None,
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/cdrs/mapped?mapping=p1-map&partner=P1".into(),
            Some(json!({})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        // Another partner publishes tariffs of its own; it never sees P1's.
        (
            Method::POST,
            "/api/v1/tariffs".into(),
            Some(json!({"name": "P2 retail", "currency": "EUR", "rates": [{"prefix": "1", "price_per_minute": "2"}]})),
            Expect::Protected { other_partner: 201, customer: 403 },
        ),
        (Method::GET, "/api/v1/tariffs".into(), None, Expect::Protected { other_partner: 200, customer: 200 }),
        (Method::GET, p1_tariff.clone(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (
            Method::POST,
            format!("{p1_tariff}/versions"),
            Some(tariff.clone()),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        // Alerts: thresholds are the account's, templates the operator's.
        (
            Method::GET,
            "/api/v1/accounts/C1/alerts".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::POST,
            "/api/v1/accounts/C1/alerts".into(),
            Some(json!({"balance_below": "10"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (Method::GET, "/api/v1/alert-templates".into(), None, Expect::Protected { other_partner: 403, customer: 403 }),
        (
            Method::POST,
            "/api/v1/alert-templates".into(),
            Some(json!({"balance_below": "{account_name}"})),
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
        // Alert e-mail: C1's addresses are C1's, its partner's and the operator's to set;
        // to anyone else C1 does not exist.
        (
            Method::GET,
            "/api/v1/accounts/C1/alert-emails".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::POST,
            "/api/v1/accounts/C1/alert-emails".into(),
            Some(json!({"addresses": ["intruder@example.com"]})),
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::GET,
            "/api/v1/accounts/C1/alert-emails/deliveries".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        // The live stream and webhooks: another tenant's account or webhook does not exist.
        (
            Method::GET,
            "/api/v1/stream?account=C1".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::POST,
            "/api/v1/webhooks".into(),
            Some(hook.clone()),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (Method::GET, "/api/v1/webhooks".into(), None, Expect::Protected { other_partner: 200, customer: 403 }),
        (Method::GET, p1_hook.clone(), None, Expect::Protected { other_partner: 404, customer: 403 }),
        (Method::GET, format!("{p1_hook}/deliveries"), None, Expect::Protected { other_partner: 404, customer: 403 }),
        (Method::DELETE, p1_hook.clone(), None, Expect::Protected { other_partner: 404, customer: 403 }),
        // A reconciliation takes a CSV file: a JSON body is refused whoever sends it
        // (the scoped comparison is checked after the walk).
        (
            Method::POST,
            "/api/v1/reconciliations?from=2026-01-01&to=2027-01-01".into(),
            Some(json!({})),
            Expect::Protected { other_partner: 415, customer: 415 },
        ),
        // Portal login links: made by the operator or the account's partner only.
        (
            Method::POST,
            "/api/v1/accounts/C1/login-link".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (Method::GET, p1_link.clone(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (Method::DELETE, p1_link.clone(), None, Expect::Protected { other_partner: 404, customer: 403 }),
        // Passwords: a temporary one only for a user the caller manages; one's own only
        // with the current one.
        (
            Method::PUT,
            "/api/v1/users/p1-user/password".into(),
            Some(json!({"password": "intruder password"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        // Recurring charges: another partner sells plans of its own (paying the
        // operator's) but never sees P1's, nor C1's subscriptions; a customer reads the
        // plans it may subscribe to.
        (
            Method::POST,
            "/api/v1/plans".into(),
            Some(
                json!({"name": "P2 line", "price": "3", "currency": "EUR", "period": "monthly", "wholesale_plan": operator_plan_id}),
            ),
            Expect::Protected { other_partner: 201, customer: 403 },
        ),
        (Method::GET, "/api/v1/plans".into(), None, Expect::Protected { other_partner: 200, customer: 200 }),
        (Method::GET, p1_plan.clone(), None, Expect::Protected { other_partner: 404, customer: 200 }),
        (
            Method::POST,
            "/api/v1/subscriptions".into(),
            Some(subscription.clone()),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (Method::GET, "/api/v1/subscriptions".into(), None, Expect::Protected { other_partner: 200, customer: 200 }),
        (Method::GET, c1_subscription.clone(), None, Expect::Protected { other_partner: 404, customer: 404 }),
        (
            Method::POST,
            format!("{c1_subscription}/end"),
            Some(json!({"ends_at": "2100-02-01"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        // Invoices: another partner runs and taxes its own book's, and finds none of
        // P1's; a customer issues nothing. (No P1 invoice exists in this set-up, so the
        // documents' routes answer every outsider as e2e_invoices checks with real ones.)
        (
            Method::POST,
            "/api/v1/invoice-runs".into(),
            Some(json!({"period": "2026-11"})),
            Expect::Protected { other_partner: 200, customer: 403 },
        ),
        (
            Method::POST,
            "/api/v1/tax-rules".into(),
            Some(json!({"rate": "21", "name": "VAT"})),
            Expect::Protected { other_partner: 200, customer: 403 },
        ),
        (
            Method::GET,
            "/api/v1/accounts/C1/invoices".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::GET,
            "/api/v1/invoices/P1-INV-000001".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::GET,
            "/api/v1/invoices/P1-INV-000001/invoice.pdf".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::GET,
            "/api/v1/invoices/P1-INV-000001/invoice.html".into(),
            None,
            Expect::Protected { other_partner: 404, customer: 404 },
        ),
        (
            Method::POST,
            "/api/v1/invoices/P1-INV-000001/credit-notes".into(),
            Some(json!({"reason": "intruder"})),
            Expect::Protected { other_partner: 404, customer: 403 },
        ),
        (
            Method::PUT,
            "/api/v1/me/password".into(),
            Some(json!({"current_password": "not the password", "new_password": "intruder password"})),
            Expect::Protected { other_partner: 403, customer: 403 },
        ),
    ];
    assert_covers_every_operation(&setup, &endpoints).await;

    // What must never show up in an answer to someone outside P1's book.
    let foreign = [P1_NAME, C1_NAME, C1_PAYMENT, &c1_id, &p1_token, &p1_access, &p1_token_id, &p1_token[..8]];
    let check_clean = |who: &str, method: &Method, path: &str, body: &Value| {
        let text = body.to_string();
        for secret in foreign {
            assert!(!text.contains(secret), "{who}: {method} {path} shows `{secret}`: {text}");
        }
    };

    let mut walked = 0;
    for (method, path, body, expect) in &endpoints {
        for (who, credential) in &rejected {
            let (status, answer) = setup.call(*credential, method.clone(), path, body.as_ref()).await;
            let wanted = match expect {
                Expect::Always(status) => *status,
                Expect::Protected { .. } => 401,
            };
            assert_eq!(status.as_u16(), wanted, "{who}: {method} {path}: {answer}");
            if wanted == 401 && matches!(expect, Expect::Protected { .. }) {
                // A genuine token from elsewhere is told so (only its holder can see this);
                // anything else learns nothing about why.
                let code =
                    if credential == &Some(outside_token.as_str()) { "address_not_allowed" } else { "unauthorized" };
                assert_eq!(answer["error"], code, "{who}: {method} {path}");
            }
            check_clean(who, method, path, &answer);
            walked += 1;
        }
        for (who, credential, customer) in [("another partner", &p2_token, false), ("a customer", &c1b_token, true)] {
            let wanted = match (expect, customer) {
                (Expect::Always(status), _) => *status,
                (Expect::Protected { other_partner, .. }, false) => *other_partner,
                (Expect::Protected { customer, .. }, true) => *customer,
            };
            let (status, answer) = setup.call(Some(credential), method.clone(), path, body.as_ref()).await;
            assert_eq!(status.as_u16(), wanted, "{who}: {method} {path}: {answer}");
            check_clean(who, method, path, &answer);
            if status.as_u16() >= 400 && path.starts_with("/api/v1") && *path != "/api/v1/sessions" {
                assert_eq!(answer["status"], "error", "{who}: {method} {path}: {answer}");
            }
            walked += 1;
        }
    }
    assert_eq!(walked, endpoints.len() * (rejected.len() + 2));

    // Nothing the walk sent changed P1's book, and P1's own credentials still work.
    let (status, body) = setup.call(Some(&p1_access), Method::GET, "/api/v1/accounts/C1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["account"]["balance"].to_string(), c1_balance, "no call was charged by an intruder");
    assert_eq!(body["account"]["status"], "active");
    let (status, body) = setup.call(Some(ADMIN_KEY), Method::GET, "/api/v1/users/p1-user", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["password_must_change"], false, "no intruder set P1's password: {body}");
    let (_, body) = setup.call(Some(&p1_token), Method::GET, &c1_subscription, None).await;
    assert!(body["subscription"]["ends_at"].is_null(), "no intruder ended C1's subscription: {body}");
    let (_, body) = setup.call(Some(&p1_token), Method::GET, "/api/v1/subscriptions", None).await;
    assert_eq!(body["subscriptions"].as_array().map(Vec::len), Some(1), "no intruder subscribed C1: {body}");
    let (_, body) = setup.call(Some(ADMIN_KEY), Method::GET, "/api/v1/accounts/C1/alert-emails", None).await;
    assert_eq!(body["addresses"], json!([]), "no intruder set where C1's alerts go: {body}");
    assert!(body["user"]["password_changed_at"].is_null(), "{body}");
    let (status, _) = setup.call(Some(ADMIN_KEY), Method::GET, &format!("/api/v1/tokens/{p1_token_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = setup.call(Some(ADMIN_KEY), Method::GET, "/api/v1/accounts/C9", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no account was registered by an intruder");
    let (status, _) = setup.call(Some(ADMIN_KEY), Method::GET, "/api/v1/users/intruder", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no user was created by an intruder");
    // Reconciling a file that names C1's call: P1 matches it; P2 and a customer of P1's
    // find it missing from their ledger and see nothing of C1's.
    let file = "id,account,callee,start,answer,end,cost\n\
                c1-call,C1,1555,2026-03-01T10:00:00Z,2026-03-01T10:00:00Z,2026-03-01T10:01:00Z,0.5\n";
    for (credential, matched) in [(&p1_token, 1), (&p2_token, 0), (&c1b_token, 0)] {
        let request = setup
            .client
            .post(setup.server.url("/api/v1/reconciliations?from=2026-01-01&to=2027-01-01"))
            .bearer_auth(credential)
            .header("content-type", "text/csv")
            .body(file);
        let (status, report) = send(request).await;
        assert_eq!((status, &report["report"]["matched"]), (StatusCode::OK, &json!(matched)), "{report}");
        if matched == 0 {
            assert_eq!(report["report"]["missing_in_file"], json!([]), "{report}");
            assert_eq!(report["report"]["totals"]["ledger_calls"], 0, "{report}");
        }
    }
    let (status, body) = setup.call(Some(&p1_token), Method::GET, &p1_hook, None).await;
    assert_eq!(status, StatusCode::OK, "P1's webhook survived the walk: {body}");
    let (status, body) = setup.call(Some(&p1_token), Method::GET, &p1_link, None).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("issued")), "no one revoked P1's link: {body}");
    let (_, body) = setup.call(Some(&p1_token), Method::GET, "/api/v1/accounts/C1/alerts", None).await;
    assert_eq!(body["account"], "C1", "{body}");
    assert!(body["balance_below"].is_null(), "no threshold was set by an intruder: {body}");
}

/// Fails if the OpenAPI document lists an operation the walk does not call: a new
/// endpoint cannot escape the credential checks by being forgotten here.
async fn assert_covers_every_operation(setup: &Setup, endpoints: &[(Method, String, Option<Value>, Expect)]) {
    let (status, document) = setup.call(None, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let matches = |template: &str, path: &str| {
        let path = path.split('?').next().unwrap();
        let (template, path): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
        template.len() == path.len()
            && template.iter().zip(&path).all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
    };
    for (template, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let walked = endpoints.iter().any(|(m, path, _, _)| *m == method && matches(template, path));
            assert!(walked, "the walk misses {method} {template}");
        }
    }
}

/// What a partner may and may not do inside its own book, through a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_manages_its_customers_but_not_itself() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--admin-key", ADMIN_KEY]).await;
    let setup = Setup { client: reqwest::Client::new(), server };
    setup
        .admin(
            Method::POST,
            "/api/v1/accounts",
            json!({"number": "P1", "name": "P", "kind": "partner", "currency": "USD"}),
        )
        .await;
    let paid = setup.admin(Method::POST, "/api/v1/payments", json!({"account": "P1", "amount": "100"})).await;
    let operator_payment = paid["position"].as_u64().unwrap();
    setup.admin(Method::POST, "/api/v1/users", json!({"login": "p1", "role": "partner", "account": "P1"})).await;
    let (token, _) = setup.token_for("p1", json!({})).await;
    let partner = |method: Method, path: &str, body: Value| {
        let body = (!body.is_null()).then_some(body);
        let setup = &setup;
        let token = token.clone();
        let path = path.to_owned();
        async move { setup.call(Some(&token), method, &path, body.as_ref()).await }
    };

    // It registers customers of its own, and only customers.
    let (status, body) = partner(
        Method::POST,
        "/api/v1/accounts",
        json!({"number": "C1", "name": "C", "kind": "customer", "currency": "USD"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = partner(
        Method::POST,
        "/api/v1/accounts",
        json!({"number": "P9", "name": "P", "kind": "partner", "currency": "USD"}),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::FORBIDDEN, Some("kind")), "{body}");
    let (_, me) = partner(Method::GET, "/api/v1/me", Value::Null).await;
    assert_eq!((me["role"].as_str(), me["account"].as_str()), (Some("partner"), Some("P1")));
    let (status, details) = partner(Method::GET, "/api/v1/accounts/C1", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["account"]["partner"], "P1");
    assert_eq!(details["links"]["partner"], "/api/v1/accounts/P1");

    // Fund moves both ways, settings and money on its customer.
    let (status, body) =
        partner(Method::POST, "/api/v1/transfers", json!({"from": "P1", "to": "C1", "amount": "30"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        partner(Method::POST, "/api/v1/transfers", json!({"from": "C1", "to": "P1", "amount": "10"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let move_back = body["position"].as_u64().unwrap();
    let (status, body) = partner(Method::POST, "/api/v1/accounts/C1/credit-limit", json!({"credit_limit": "5"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balances"][0]["available"].to_string(), "25.00");
    let (status, body) = partner(Method::POST, "/api/v1/charges", json!({"account": "C1", "amount": "2.5"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = partner(Method::POST, "/api/v1/reversals", json!({"position": move_back})).await;
    assert_eq!(status, StatusCode::CREATED, "a partner reverses a move with its customer: {body}");
    let reversed_at = body["position"].as_u64().unwrap();

    // But not on itself: a partner paying itself would make money.
    for (path, body) in [
        ("/api/v1/payments", json!({"account": "P1", "amount": "1000"})),
        ("/api/v1/adjustments", json!({"account": "P1", "amount": "-1000"})),
        ("/api/v1/accounts/P1/credit-limit", json!({"credit_limit": "1000000"})),
        ("/api/v1/reversals", json!({"position": operator_payment})),
    ] {
        let (status, answer) = partner(Method::POST, path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
    }
    let (_, body) = partner(Method::GET, &format!("/api/v1/accounts/P1?min_position={reversed_at}"), Value::Null).await;
    // 100 paid by the operator, 30 out, 10 back, the 10 reversed.
    assert_eq!(body["account"]["balance"].to_string(), "70.00", "{body}");
    assert_eq!(body["account"]["credit_limit"].to_string(), "0.00");

    // A tariff by id; an unknown one is not found, a malformed id names the field.
    let unknown = "01a211ed-0000-7000-8000-000000000001";
    let (status, body) = partner(Method::POST, "/api/v1/accounts/C1/tariff", json!({"tariff": unknown})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("tariff_not_found")), "{body}");
    let rates = json!([{"prefix": "1", "price_per_minute": "0.1"}]);
    let (status, body) =
        partner(Method::POST, "/api/v1/tariffs", json!({"name": "R", "currency": "USD", "rates": rates})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let tariff = body["links"]["tariff"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let (status, body) = partner(Method::POST, "/api/v1/accounts/C1/tariff", json!({"tariff": tariff})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["type"], "TariffAssigned");
    let position = body["position"].as_u64().unwrap();
    let (status, body) = partner(Method::POST, "/api/v1/accounts/C1/tariff", json!({"tariff": "cheap"})).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("tariff")), "{body}");
    let (_, body) = partner(Method::GET, &format!("/api/v1/accounts/C1?min_position={position}"), Value::Null).await;
    assert_eq!(body["account"]["tariff"], tariff, "{body}");
}
