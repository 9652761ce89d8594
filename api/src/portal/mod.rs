//! The customer portal: server-rendered pages where a customer reads its balance,
//! statements, calls and payments, and a partner also sees its customers and moves funds
//! to and from them. Templates are compiled into the binary (askama); pages need no
//! script and load nothing from elsewhere.
//!
//! A browser session is a cookie (HttpOnly, SameSite=Strict, Secure over TLS) naming a
//! portal session in the auth store, opened by a login link or by login and password. The
//! session stands for an account, and becomes the same [`Caller`] the API uses, so the
//! portal sees exactly what the API would let that account see: a foreign account's
//! pages answer 404. Every form carries the session's CSRF token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::auth::{Auth, Caller, PortalSessionRecord, Scope};
use crate::error::ApiError;
use crate::service::login_links::{LOGIN_LINK_PATH, came_over_tls};

mod chart;
mod pages;
mod templates;

pub const LOGIN_PATH: &str = "/portal/login";
const COOKIE_NAME: &str = "tollbook_portal";

/// What the portal's pages read: the ledger (accounts by number, scope checks, fund
/// moves), the read models, and the auth store (sessions, passwords). Not the notifier,
/// the metrics or the projector, which are the server's.
#[derive(Clone)]
pub struct PortalState {
    pub ledger: Arc<commands::Ledger>,
    pub models: projections::ReadModels,
    pub auth: Arc<Auth>,
}

/// The portal's pages, in any application whose state gives a [`PortalState`].
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    PortalState: FromRef<S>,
{
    Router::new()
        .route("/portal", get(pages::home))
        .route("/portal/", get(pages::home))
        .route(LOGIN_PATH, get(pages::login_form).post(pages::login))
        .route(&format!("{LOGIN_LINK_PATH}/{{token}}"), get(pages::open_link))
        .route("/portal/logout", post(pages::logout))
        .route("/portal/accounts/{number}", get(pages::overview))
        .route("/portal/accounts/{number}/statement", get(pages::statement))
        .route("/portal/accounts/{number}/statement.csv", get(pages::statement_csv))
        .route("/portal/accounts/{number}/lines", get(pages::lines))
        .route("/portal/accounts/{number}/activity", get(pages::activity))
        .route("/portal/accounts/{number}/calls", get(pages::calls))
        .route("/portal/accounts/{number}/transfers", post(pages::transfer))
        .route("/portal/accounts/{number}/invoices", get(pages::invoices))
        .route("/portal/invoices/{invoice}/invoice.pdf", get(pages::invoice_pdf))
        .route("/portal/invoices/{invoice}/invoice.html", get(pages::invoice_html))
        .route("/portal/password", get(pages::password_form).post(pages::change_password))
        .route("/portal/{*rest}", get(pages::not_found))
        .layer(axum::middleware::map_response(page_headers))
}

/// Every portal answer: nothing cached (balances change, pages are personal), no referrer
/// (a login link's token must not leak to another site), nothing loaded from elsewhere.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// True when the browser says a form came from another site. The login form has no
/// session, so no CSRF token to check: the browser's own headers decide
/// (`Sec-Fetch-Site`, else `Origin` against `public_url` or the `Host` asked for), which
/// stops another site from signing a visitor in to an account of its choosing (login
/// CSRF). A client that sends neither header (not a browser) is not concerned.
pub fn sent_from_another_site(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return !matches!(site.trim(), "same-origin" | "none");
    }
    let Some(origin) = text(header::ORIGIN) else { return false };
    let authority = |url: &str| url.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or("").to_owned());
    let own = match public_url {
        Some(url) => authority(url),
        None => text(header::HOST).map(str::to_owned),
    };
    // `null` (a sandboxed or privacy-stripped origin) has no authority: another site.
    own.is_none_or(|own| authority(origin).is_none_or(|theirs| !theirs.eq_ignore_ascii_case(&own)))
}

/// The session cookie's value in a request, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session; `Secure` when configured, or the request or the
/// public URL is HTTPS (a browser would drop a Secure cookie over plain HTTP).
fn set_session_cookie(state: &PortalState, headers: &HeaderMap, value: &str) -> HeaderValue {
    let portal = &state.auth.portal;
    let secure = portal.secure_cookies
        || came_over_tls(headers)
        || portal.public_url.as_deref().is_some_and(|url| url.starts_with("https://"));
    let max_age = portal.session_lifetime.as_secs();
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).expect("a cookie of URL-safe characters")
}

fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE_NAME}=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0"))
        .expect("a constant cookie")
}

/// The signed-in visitor of a portal page: the API's caller for its account, and its session.
pub struct Visitor {
    pub caller: Caller,
    pub session: PortalSessionRecord,
    pub cookie: String,
    /// The account the session stands for.
    pub own: commands::AccountRef,
}

impl Visitor {
    pub fn is_partner(&self) -> bool {
        matches!(self.caller.scope, Scope::Partner(_))
    }

    /// Whether a form's CSRF token is this session's. Compared in constant time.
    pub fn check_csrf(&self, presented: &str) -> Result<(), ApiError> {
        let expected = self.session.csrf_token.as_bytes();
        let presented = presented.as_bytes();
        let same = expected.len() == presented.len()
            && expected.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same { Ok(()) } else { Err(ApiError::csrf_mismatch()) }
    }
}

/// A page that could not be shown to a visitor without a session: to the login page.
pub struct SignInFirst {
    /// The request came from another site (a link in an e-mail, say) and carried no
    /// cookie: a SameSite=Strict cookie is withheld from such a navigation, so reload once
    /// from here, where it is sent.
    cross_site: bool,
    /// The page asked for, to reload.
    target: String,
}

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        if self.cross_site {
            return Html(templates::render_page(&templates::Reload { target: self.target })).into_response();
        }
        Redirect::to(LOGIN_PATH).into_response()
    }
}

impl<S> FromRequestParts<S> for Visitor
where
    S: Send + Sync,
    PortalState: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let state = PortalState::from_ref(state);
        let cross_site = parts.headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site");
        let target = parts.uri.path_and_query().map_or("/portal", |p| p.as_str()).to_owned();
        let sign_in = || SignInFirst { cross_site, target: target.clone() }.into_response();
        let Some(cookie) = session_cookie(&parts.headers).map(str::to_owned) else { return Err(sign_in()) };
        let session = match state.auth.portal_session(&cookie) {
            Ok(Some(session)) => session,
            Ok(None) => return Err(sign_in()),
            Err(error) => return Err(pages::PageError(error).into_response()),
        };
        let Some(own) = state.ledger.account_by_id(session.account) else { return Err(sign_in()) };
        let scope = match own.kind {
            domain::AccountKind::Partner => Scope::Partner(own.id),
            domain::AccountKind::Customer => Scope::Customer(own.id),
        };
        let caller = Caller { actor: session.actor.clone(), scope, login: session.login.clone(), session: None };
        Ok(Visitor { caller, session, cookie, own })
    }
}
