//! The portal's handlers: each reads what the page needs through the same scope checks
//! as the API (a foreign account answers 404) and renders one template.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{Datelike, NaiveDate, Utc};
use domain::event::Category;
use domain::{AccountKind, Amount, Timestamp};
use serde::{Deserialize, Serialize};

use super::templates::{self, Frame, render_page};
use super::{PortalState, Visitor, chart, clear_session_cookie, set_session_cookie};
use crate::auth::PeerIp;
use crate::error::ApiError;
use crate::service;
use crate::service::invoices::DocumentFormat;
use crate::service::transfers::{FundMove, move_funds};
use crate::write::{command_meta, visible_account};

/// Rows on one page of a portal list.
const ROWS_PER_PAGE: usize = 50;
/// Customers offered in the fund move form's list.
const FORM_CUSTOMERS_MAX: usize = projections::PAGE_SIZE_MAX;
/// Pages of events read at most to fill one page of payments and fund moves.
const ACTIVITY_SCAN_PAGES_MAX: usize = 20;
/// Points of a balance chart at most: one a day up to this, then fewer, wider steps.
const CHART_POINTS_MAX: i64 = 62;
const DAY_MICROS: i64 = 86_400_000_000;
/// Longest period a statement page draws or a calls page lists, in days.
const PERIOD_DAYS_MAX: i64 = 3660;

/// An error shown as a page, with the status the API would give.
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

impl From<projections::ProjectionError> for PageError {
    fn from(error: projections::ProjectionError) -> Self {
        PageError(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let error = self.0;
        let (title, hint) = match error.code {
            "login_link_used" | "login_link_expired" | "login_link_revoked" | "login_link_invalid" => (
                "This login link cannot be used",
                Some(
                    "Login links work once and for a short time. Ask your provider for a new one, or sign in with your login and password.",
                ),
            ),
            _ => match error.status {
                StatusCode::NOT_FOUND => ("Not found", None),
                StatusCode::FORBIDDEN => ("Not allowed", None),
                StatusCode::BAD_REQUEST => ("Please check what you entered", None),
                StatusCode::UNPROCESSABLE_ENTITY => ("The ledger refused this", None),
                status if status.is_server_error() => ("Something went wrong", Some("Please try again in a moment.")),
                _ => ("This did not work", None),
            },
        };
        let page = templates::Error {
            frame: None,
            title: title.to_owned(),
            message: error.message.to_string(),
            hint: hint.map(str::to_owned),
        };
        (error.status, Html(render_page(&page))).into_response()
    }
}

type PageResult = Result<Response, PageError>;

/// An amount as people read money: at least two decimals.
pub fn money(amount: Amount) -> String {
    let mut value = amount.0;
    if value.scale() < 2 {
        value.rescale(2);
    }
    value.to_string()
}

/// A time as people read it: to the minute, in UTC.
fn when(time: Timestamp) -> String {
    chrono::DateTime::<Utc>::from_timestamp_micros(time.micros())
        .map_or_else(|| time.to_rfc3339(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

fn date(time: Timestamp) -> String {
    chrono::DateTime::<Utc>::from_timestamp_micros(time.micros())
        .map_or_else(String::new, |t| t.format("%Y-%m-%d").to_string())
}

/// A path segment, percent-encoded (account numbers may hold `/`, `?` or `#`).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn account_href(number: &str, page: &str) -> String {
    format!("/portal/accounts/{}{page}", segment(number))
}

fn with_query(path: String, pairs: &[(&str, String)]) -> String {
    let pairs: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    if pairs.is_empty() {
        return path;
    }
    format!("{path}?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

fn parse_query<T: for<'de> Deserialize<'de> + Default>(raw: Option<&str>) -> Result<T, PageError> {
    let pairs = strict_pairs(raw.unwrap_or("").as_bytes(), "invalid_query")?;
    serde_urlencoded::from_str(&pairs).map_err(|e| {
        PageError(ApiError::bad_request("invalid_query", "query", format!("the address is not valid: {e}")))
    })
}

/// A form the portal posts, its text decoded strictly as the API's forms are: a field
/// that is not UTF-8 is refused, never recorded as U+FFFD. A form of another shape reads
/// as empty, and the page says what is missing.
fn parse_form<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, PageError> {
    let pairs = strict_pairs(body, "invalid_body")?;
    Ok(serde_urlencoded::from_str(&pairs).unwrap_or_default())
}

/// URL-encoded text checked to be UTF-8 once decoded, encoded again for serde_urlencoded
/// (whose own decoding is lossy): valid text makes the round trip unchanged.
fn strict_pairs(encoded: &[u8], code: &'static str) -> Result<String, PageError> {
    let pairs = crate::body::url_encoded_pairs(encoded)
        .map_err(|e| PageError(ApiError::undeserializable(code, e.field, e.message)))?;
    serde_urlencoded::to_string(pairs).map_err(|e| PageError(ApiError::internal(&e)))
}

fn frame(visitor: &Visitor, state: &PortalState, viewing: &str, section: &'static str) -> Option<Frame> {
    let own_name =
        state.models.account(visitor.own.id).ok().flatten().map_or_else(|| visitor.own.number.clone(), |v| v.name);
    Some(Frame {
        own_number: visitor.own.number.clone(),
        own_name,
        csrf: visitor.session.csrf_token.clone(),
        viewing: viewing.to_owned(),
        section,
    })
}

/// The account a page is about, if the visitor may see it; else the page is not found.
async fn viewed(
    state: &PortalState,
    visitor: &Visitor,
    number: &str,
    min_position: Option<u64>,
) -> Result<(commands::AccountRef, projections::AccountView), PageError> {
    let account = visible_account(&state.ledger, &visitor.caller, "number", number)?;
    let (view, _) = service::accounts::read_account(&state.ledger, &state.models, &account, min_position).await?;
    Ok((account, view))
}

/// A period of whole days: `[from, to)`, from a month (`2026-12`) or two dates, by default
/// the current month.
struct Period {
    from: Timestamp,
    to: Timestamp,
    month: String,
}

fn midnight(date: NaiveDate) -> Timestamp {
    Timestamp::from_micros(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_micros())
}

fn month_period(year: i32, month: u32) -> Option<Period> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    Some(Period { from: midnight(first), to: midnight(next), month: format!("{year:04}-{month:02}") })
}

fn period(month: Option<&str>, from: Option<&str>, to: Option<&str>) -> Result<Period, PageError> {
    let bad =
        |field: &'static str, message: &'static str| PageError(ApiError::bad_request("invalid_query", field, message));
    let (from, to) = (from.filter(|t| !t.is_empty()), to.filter(|t| !t.is_empty()));
    if let (Some(from), Some(to)) = (from, to) {
        let from = Timestamp::parse(from).ok_or_else(|| bad("from", "The first day is not a date (YYYY-MM-DD)."))?;
        let to = Timestamp::parse(to).ok_or_else(|| bad("to", "The end is not a date (YYYY-MM-DD)."))?;
        if to <= from {
            return Err(bad("to", "The end must come after the first day."));
        }
        if to.micros() - from.micros() > PERIOD_DAYS_MAX * DAY_MICROS {
            return Err(bad("to", "The period is too long: ten years at most."));
        }
        return Ok(Period { from, to, month: String::new() });
    }
    if let Some(month) = month.filter(|m| !m.is_empty()) {
        let parsed = month
            .split_once('-')
            .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u32>().ok()?)))
            .and_then(|(y, m)| month_period(y, m));
        return parsed.ok_or_else(|| bad("month", "The month is not valid (YYYY-MM)."));
    }
    let today = Utc::now().date_naive();
    month_period(today.year(), today.month()).ok_or_else(|| bad("month", "no current month"))
}

/// The balance at points through `[from, to)`: the opening balance, then the closing
/// balance after each step (a day, or wider for long periods).
async fn balance_points(
    state: &PortalState,
    account: domain::AccountId,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<(Timestamp, Amount)>, PageError> {
    let span_days = ((to.micros() - from.micros()) + DAY_MICROS - 1) / DAY_MICROS;
    let step_days = ((span_days + CHART_POINTS_MAX - 1) / CHART_POINTS_MAX).max(1);
    // Every point from one snapshot: the chart is the account at one position.
    let snapshot = state.models.snapshot();
    let opening = snapshot.statement(account, from, from, None).await?.opening_balance;
    let mut points = vec![(from, opening)];
    let mut at = from.micros();
    while at < to.micros() {
        at = (at + step_days * DAY_MICROS).min(to.micros());
        let closing = snapshot.statement(account, from, Timestamp::from_micros(at), None).await?.closing_balance;
        points.push((Timestamp::from_micros(at), closing));
    }
    Ok(points)
}

// Signing in and out.

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    /// Sent when the page asked for it (a password someone else set); empty otherwise.
    #[serde(default)]
    new_password: String,
}

pub async fn login_form() -> Html<String> {
    Html(render_page(&templates::Login { frame: None, error: None, login: String::new(), must_change: false }))
}

fn signed_in(state: &PortalState, headers: &HeaderMap, login: crate::auth::PortalLogin) -> Response {
    let mut response = Redirect::to("/portal").into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_session_cookie(state, headers, &login.cookie));
    response
}

pub async fn login(
    State(state): State<PortalState>,
    PeerIp(peer): PeerIp,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    if super::sent_from_another_site(&headers, state.auth.portal.public_url.as_deref()) {
        return Err(ApiError::csrf_mismatch().into());
    }
    let form: LoginForm = parse_form(&body)?;
    let new_password = Some(form.new_password).filter(|p| !p.is_empty());
    match state.auth.portal_password_login(form.login.trim(), form.password, new_password, peer).await {
        Ok(login) => Ok(signed_in(&state, &headers, login)),
        // The right password, set by someone else; or a new one that will not do: ask
        // again, with a field for the new password.
        Err(error) if matches!(error.code, "password_change_required" | "password_unchanged" | "invalid_field") => {
            let message = match error.code {
                "password_change_required" => {
                    "Your password was set by your provider. Please choose a new one to sign in.".to_owned()
                }
                _ => error.message.to_string(),
            };
            let page = templates::Login { frame: None, error: Some(message), login: form.login, must_change: true };
            Ok((error.status, Html(render_page(&page))).into_response())
        }
        Err(error) if matches!(error.status, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS) => {
            let message = match error.retry_after_seconds {
                Some(seconds) => format!("Too many sign-in attempts. Please try again in {seconds} seconds."),
                None => "The login and password do not match an account of this portal.".to_owned(),
            };
            let page = templates::Login { frame: None, error: Some(message), login: form.login, must_change: false };
            let mut response = (error.status, Html(render_page(&page))).into_response();
            if let Some(seconds) = error.retry_after_seconds {
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            Ok(response)
        }
        Err(error) => Err(error.into()),
    }
}

/// Opening a login link: a session and on to the portal, or a page saying why not.
pub async fn open_link(State(state): State<PortalState>, headers: HeaderMap, Path(token): Path<String>) -> PageResult {
    let login = state.auth.open_login_link(&token).await?;
    Ok(signed_in(&state, &headers, login))
}

#[derive(Deserialize, Default)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(State(state): State<PortalState>, visitor: Visitor, body: Bytes) -> PageResult {
    let form: CsrfForm = parse_form(&body)?;
    visitor.check_csrf(&form.csrf)?;
    state.auth.portal_logout(&visitor.cookie).await?;
    let mut response = Redirect::to(super::LOGIN_PATH).into_response();
    response.headers_mut().insert(header::SET_COOKIE, clear_session_cookie());
    Ok(response)
}

// The visitor's own password.

fn password_page(
    state: &PortalState,
    visitor: &Visitor,
    error: Option<String>,
    notice: Option<String>,
) -> templates::PasswordPage {
    templates::PasswordPage {
        frame: frame(visitor, state, &visitor.own.number, "password"),
        csrf: visitor.session.csrf_token.clone(),
        error,
        notice,
        has_user: visitor.session.login.is_some(),
    }
}

pub async fn password_form(State(state): State<PortalState>, visitor: Visitor) -> Html<String> {
    Html(render_page(&password_page(&state, &visitor, None, None)))
}

#[derive(Deserialize, Default)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    repeat_password: String,
}

/// Changes the signed-in user's password through the same rule as the API: every other
/// session of the user ends, this one stays.
pub async fn change_password(
    State(state): State<PortalState>,
    PeerIp(peer): PeerIp,
    visitor: Visitor,
    body: Bytes,
) -> PageResult {
    let form: PasswordForm = parse_form(&body)?;
    visitor.check_csrf(&form.csrf)?;
    if form.new_password != form.repeat_password {
        let page = password_page(&state, &visitor, Some("The two new passwords differ.".to_owned()), None);
        return Ok((StatusCode::BAD_REQUEST, Html(render_page(&page))).into_response());
    }
    let keep = crate::auth::KeptSessions { session: None, portal_session: Some(visitor.session.id) };
    let changed =
        state.auth.change_own_password(&visitor.caller, form.current_password, form.new_password, peer, keep).await;
    match changed {
        Ok(()) => {
            let notice = "Your password has been changed; you were signed out everywhere else.".to_owned();
            Ok(Html(render_page(&password_page(&state, &visitor, None, Some(notice)))).into_response())
        }
        Err(error) if error.status.is_client_error() && error.code != "forbidden" => {
            let page = password_page(&state, &visitor, Some(error.message.to_string()), None);
            Ok((error.status, Html(render_page(&page))).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

pub async fn home(visitor: Visitor) -> Redirect {
    Redirect::to(&account_href(&visitor.own.number, ""))
}

pub async fn not_found() -> PageError {
    PageError(ApiError::not_found("not_found", "There is no such page."))
}

// The overview, and the partner's fund moves.

#[derive(Deserialize, Default)]
struct OverviewQuery {
    min_position: Option<u64>,
    moved: Option<u64>,
    customers_after: Option<String>,
}

pub async fn overview(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let query: OverviewQuery = parse_query(raw.as_deref())?;
    let notice = query.moved.map(|_| "Funds moved.".to_owned());
    let page = overview_page(&state, &visitor, &number, &query, notice, None).await?;
    Ok(Html(render_page(&page)).into_response())
}

async fn overview_page(
    state: &PortalState,
    visitor: &Visitor,
    number: &str,
    query: &OverviewQuery,
    notice: Option<String>,
    form_error: Option<String>,
) -> Result<templates::Overview, PageError> {
    let (account, view) = viewed(state, visitor, number, query.min_position).await?;
    let partner = view.partner.and_then(|id| state.ledger.account_by_id(id)).map(|p| p.number);
    let today = midnight(Utc::now().date_naive());
    let chart_from = Timestamp::from_micros(today.micros() - 29 * DAY_MICROS);
    let chart_to = Timestamp::from_micros(today.micros() + DAY_MICROS);
    let points = balance_points(state, view.id, chart_from, chart_to).await?;
    let is_partner_home = visitor.is_partner() && account.id == visitor.own.id;
    let (mut customers, mut next_customers, mut move_form) = (Vec::new(), None, None);
    if is_partner_home {
        let filter = projections::AccountFilter { partner: Some(account.id), ..Default::default() };
        let page = state.models.accounts(&filter, query.customers_after.as_deref(), ROWS_PER_PAGE)?;
        customers = page
            .items
            .iter()
            .filter(|c| c.id != account.id)
            .map(|c| templates::CustomerRow {
                number: c.number.clone(),
                name: c.name.clone(),
                status: format!("{:?}", c.status).to_lowercase(),
                balance: money(c.balance),
                negative: c.balance.is_negative(),
                available: money(c.available()),
            })
            .collect();
        next_customers =
            page.next_cursor.map(|cursor| with_query(account_href(number, ""), &[("customers_after", cursor)]));
        let everyone = state.models.accounts(&filter, None, FORM_CUSTOMERS_MAX)?;
        move_form = Some(templates::MoveForm {
            csrf: visitor.session.csrf_token.clone(),
            idempotency_key: uuid::Uuid::now_v7().to_string(),
            customers: everyone
                .items
                .into_iter()
                .filter(|c| c.id != account.id && c.kind == AccountKind::Customer)
                .map(|c| templates::Choice { number: c.number, name: c.name })
                .collect(),
            direction: "to_customer".into(),
            customer: String::new(),
            amount: String::new(),
            note: String::new(),
        });
    }
    let account_box = templates::AccountBox {
        number: view.number.clone(),
        name: view.name.clone(),
        kind: match view.kind {
            AccountKind::Partner => "Partner",
            AccountKind::Customer => "Customer",
        },
        partner,
        status: format!("{:?}", view.status).to_lowercase(),
        currency: view.currency.as_str().to_owned(),
        balance: money(view.balance),
        negative: view.balance.is_negative(),
        credit_limit: money(view.credit_limit),
        available: money(view.available()),
        opened_at: date(view.opened_at),
    };
    Ok(templates::Overview {
        frame: frame(visitor, state, number, "overview"),
        chart: chart::balance_svg(&points, view.currency.as_str(), "chart-title"),
        account: account_box,
        notice,
        move_form,
        form_error,
        is_partner_home,
        customers,
        next_customers,
    })
}

#[derive(Deserialize, Serialize, Default)]
struct TransferForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    note: String,
}

/// A partner moves funds to or from one of its customers, through the service that
/// `POST /api/v1/transfers` calls too. The form's idempotency key makes a double submit move once.
pub async fn transfer(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(number): Path<String>,
    body: Bytes,
) -> PageResult {
    let form: TransferForm = parse_form(&body)?;
    visitor.check_csrf(&form.csrf)?;
    // The form belongs to the partner's own page; any other account's is not there.
    if !visitor.is_partner() || number != visitor.own.number {
        return Err(PageError(ApiError::not_found("not_found", "There is no such page.")));
    }
    let outcome = async {
        let amount = Amount::parse_input(&form.amount, domain::money::INPUT_SCALE_MAX_DEFAULT)
            .map_err(|e| ApiError::from(e).with_field("amount"))?;
        let own = visitor.own.number.clone();
        let (from, to) = match form.direction.as_str() {
            "to_customer" => (own, form.customer.clone()),
            "from_customer" => (form.customer.clone(), own),
            _ => return Err(ApiError::bad_request("invalid_field", "direction", "Choose a direction.")),
        };
        let note = Some(form.note.trim().to_owned()).filter(|n| !n.is_empty());
        let request = FundMove { from, to, amount, note };
        let key = Some(format!("portal:{}", form.idempotency_key)).filter(|_| !form.idempotency_key.is_empty());
        let path = format!("/portal/accounts/{number}/transfers");
        let idempotency = key.as_deref().map(|key| (key, &Method::POST, path.as_str()));
        let meta = command_meta(&visitor.caller, idempotency, &request, None)?;
        move_funds(&state.ledger, &visitor.caller, request, meta).await
    }
    .await;
    match outcome {
        Ok(outcome) => {
            let position = outcome.position().unwrap_or_else(|| state.models.position());
            let target = with_query(
                account_href(&number, ""),
                &[("min_position", position.to_string()), ("moved", position.to_string())],
            );
            Ok(Redirect::to(&target).into_response())
        }
        Err(error) if error.status.is_client_error() => {
            let status = error.status;
            let message = error.message.to_string();
            let mut page =
                overview_page(&state, &visitor, &number, &OverviewQuery::default(), None, Some(message)).await?;
            if let Some(entered) = page.move_form.as_mut() {
                entered.direction = form.direction.clone();
                entered.customer = form.customer.clone();
                entered.amount = form.amount.clone();
                entered.note = form.note.clone();
            }
            Ok((status, Html(render_page(&page))).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

// The statement and what is behind its figures.

#[derive(Deserialize, Default)]
struct PeriodQuery {
    month: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub async fn statement(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let query: PeriodQuery = parse_query(raw.as_deref())?;
    let period = period(query.month.as_deref(), query.from.as_deref(), query.to.as_deref())?;
    let (_, view) = viewed(&state, &visitor, &number, None).await?;
    let s = state.models.statement(view.id, period.from, period.to, None).await?;
    let range = [("from", date(period.from)), ("to", date(period.to))];
    let lines_href = |category: Option<Category>, from: Timestamp, to: Timestamp| {
        let mut pairs = vec![("from", from.to_rfc3339()), ("to", to.to_rfc3339())];
        if let Some(category) = category {
            pairs.push(("category", category.as_str().to_owned()));
        }
        Some(with_query(account_href(&number, "/lines"), &pairs))
    };
    let history = view.first_occurred_at.unwrap_or(period.from).min(period.from);
    let figure = |name, label, sign, amount: Amount, href, total| templates::Figure {
        name,
        label,
        sign,
        amount: money(amount),
        href,
        total,
    };
    let period_lines = |c| lines_href(Some(c), period.from, period.to);
    let figures = vec![
        figure(
            "opening_balance",
            "Opening balance",
            "",
            s.opening_balance,
            lines_href(None, history, period.from),
            false,
        ),
        figure("payments", "Payments", "+", s.payments, period_lines(Category::Payments), false),
        figure("transfers_in", "Transfers in", "+", s.transfers_in, period_lines(Category::TransfersIn), false),
        figure("transfers_out", "Transfers out", "−", s.transfers_out, period_lines(Category::TransfersOut), false),
        figure("call_charges", "Call charges", "−", s.call_charges, period_lines(Category::CallCharges), false),
        figure("other_charges", "Other charges", "−", s.other_charges, period_lines(Category::OtherCharges), false),
        figure("adjustments", "Adjustments", "−", s.adjustments, period_lines(Category::Adjustments), false),
        figure("total_charges", "Total charges", "", s.total_charges, None, false),
        figure(
            "closing_balance",
            "Closing balance",
            "=",
            s.closing_balance,
            lines_href(None, history, period.to),
            true,
        ),
    ];
    let charges_sum = format!(
        "{} = {} + {} + {}",
        money(s.total_charges),
        money(s.call_charges),
        money(s.other_charges),
        money(s.adjustments)
    );
    let closing_sum = format!(
        "{} = {} + {} + {} − {} − {}",
        money(s.closing_balance),
        money(s.opening_balance),
        money(s.payments),
        money(s.transfers_in),
        money(s.transfers_out),
        money(s.total_charges)
    );
    // The chart stops at tomorrow: the days still to come have no balance yet.
    let tomorrow = Timestamp::from_micros(midnight(Utc::now().date_naive()).micros() + DAY_MICROS);
    let chart_to = period.to.min(tomorrow).max(period.from);
    let points = balance_points(&state, view.id, period.from, chart_to).await?;
    let last_day = Timestamp::from_micros(period.to.micros() - DAY_MICROS);
    let page = templates::StatementPage {
        frame: frame(&visitor, &state, &number, "statement"),
        number: number.clone(),
        currency: view.currency.as_str().to_owned(),
        month: period.month.clone(),
        from_date: date(period.from),
        to_date: date(period.to),
        period_label: format!("{} to {} (inclusive)", date(period.from), date(last_day)),
        figures,
        charges_sum,
        closing_sum,
        csv_href: with_query(account_href(&number, "/statement.csv"), &range),
        chart: chart::balance_svg(&points, view.currency.as_str(), "chart-title"),
    };
    Ok(Html(render_page(&page)).into_response())
}

/// The statement as CSV, for the page's download button: the API's own export.
pub async fn statement_csv(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let query: PeriodQuery = parse_query(raw.as_deref())?;
    let period = period(query.month.as_deref(), query.from.as_deref(), query.to.as_deref())?;
    let (_, view) = viewed(&state, &visitor, &number, None).await?;
    let statement = state.models.statement(view.id, period.from, period.to, None).await?;
    Ok(service::statements::csv(&state.models, statement).into_response())
}

#[derive(Deserialize, Default)]
struct LinesQuery {
    from: Option<String>,
    to: Option<String>,
    category: Option<String>,
    cursor: Option<String>,
}

fn category_named(name: &str) -> Option<Category> {
    Category::ALL.into_iter().find(|c| c.as_str() == name)
}

fn category_label(category: Category) -> &'static str {
    match category {
        Category::Payments => "Payments",
        Category::Adjustments => "Adjustments",
        Category::CallCharges => "Call charges",
        Category::OtherCharges => "Other charges",
        Category::TransfersIn => "Transfers in",
        Category::TransfersOut => "Transfers out",
    }
}

/// The postings behind one statement figure.
pub async fn lines(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let query: LinesQuery = parse_query(raw.as_deref())?;
    let bad =
        |field: &'static str| PageError(ApiError::bad_request("invalid_query", field, format!("{field} is not valid")));
    let from = query.from.as_deref().and_then(Timestamp::parse).ok_or_else(|| bad("from"))?;
    let to = query.to.as_deref().and_then(Timestamp::parse).ok_or_else(|| bad("to"))?;
    let category = match query.category.as_deref().filter(|c| !c.is_empty()) {
        Some(name) => Some(category_named(name).ok_or_else(|| bad("category"))?),
        None => None,
    };
    let (_, view) = viewed(&state, &visitor, &number, None).await?;
    let page = state.models.statement_lines(view.id, from, to, category, query.cursor.as_deref(), ROWS_PER_PAGE)?;
    // One category: its amounts add up to the figure. Every category: their effect on
    // the balance adds up to the change between two balances.
    let page_sum: Amount = page
        .items
        .iter()
        .map(|l| if category.is_some() { l.amount } else { l.category.balance_effect(l.amount) })
        .sum();
    let rows = page
        .items
        .iter()
        .map(|l| templates::LineRow {
            event_href: format!(
                "{}#event-{}",
                with_query(
                    account_href(&number, "/activity"),
                    &[("all", "1".into()), ("after", l.position.saturating_sub(1).to_string())]
                ),
                l.position
            ),
            occurred_at: when(l.occurred_at),
            category: category_label(l.category),
            amount: money(l.amount),
        })
        .collect();
    let base = [
        ("from", from.to_rfc3339()),
        ("to", to.to_rfc3339()),
        ("category", category.map_or_else(String::new, |c| c.as_str().to_owned())),
    ];
    let next_href = page.next_cursor.map(|cursor| {
        let mut pairs = base.to_vec();
        pairs.push(("cursor", cursor));
        with_query(account_href(&number, "/lines"), &pairs)
    });
    let heading = match category {
        Some(category) => format!("{} of {number}", category_label(category)),
        None => format!("Every posting of {number}"),
    };
    let page = templates::LinesPage {
        frame: frame(&visitor, &state, &number, "statement"),
        heading,
        period_label: format!("{} to {} (exclusive)", when(from), when(to)),
        currency: view.currency.as_str().to_owned(),
        back_href: with_query(account_href(&number, "/statement"), &[("from", date(from)), ("to", date(to))]),
        rows,
        page_sum: if category.is_some() {
            money(page_sum)
        } else {
            format!("{} (effect on the balance)", money(page_sum))
        },
        next_href,
    };
    Ok(Html(render_page(&page)).into_response())
}

// Payments and fund moves, and every event.

#[derive(Deserialize, Default)]
struct ActivityQuery {
    after: Option<u64>,
    all: Option<String>,
}

pub async fn activity(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let query: ActivityQuery = parse_query(raw.as_deref())?;
    let money_only = query.all.as_deref().is_none_or(str::is_empty);
    let (_, view) = viewed(&state, &visitor, &number, None).await?;
    let is_money = |row: &projections::EventRow| {
        row.postings
            .iter()
            .any(|(c, _)| matches!(c, Category::Payments | Category::TransfersIn | Category::TransfersOut))
    };
    let mut rows = Vec::new();
    let mut after = query.after.unwrap_or(0);
    // Where the next page starts; none once the account's events are all shown. The scan
    // is bounded: a page of a sparse filter may come out short, with a next link.
    let mut next = None;
    'scan: for _ in 0..ACTIVITY_SCAN_PAGES_MAX {
        let page = state.models.account_events(view.id, after, ROWS_PER_PAGE).await?;
        let more = page.next_cursor.is_some();
        for (position, row) in page.items {
            after = position;
            if money_only && !is_money(&row) {
                continue;
            }
            let postings = row
                .postings
                .iter()
                .map(|(c, a)| format!("{} {}", category_label(*c), money(*a)))
                .collect::<Vec<_>>()
                .join("; ");
            // A fund move names the other side; a payment its method and reference.
            let other = row.counterparty.and_then(|id| state.ledger.account_by_id(id)).map(|other| {
                let incoming = row.postings.iter().any(|(c, _)| *c == Category::TransfersIn);
                format!("{} {}", if incoming { "from" } else { "to" }, other.number)
            });
            let details = other.into_iter().chain(row.remarks.iter().cloned()).collect::<Vec<_>>().join(" · ");
            rows.push(templates::EventView {
                position,
                sort_key: row.occurred_at,
                details,
                kind: activity_label(&row.kind),
                occurred_at: when(row.occurred_at),
                recorded_at: when(row.recorded_at),
                postings,
            });
            if rows.len() == ROWS_PER_PAGE {
                next = Some(after);
                break 'scan;
            }
        }
        next = more.then_some(after);
        if !more {
            break;
        }
    }
    // By business time, as a statement reads (the pages follow the log, so a late entry
    // dated earlier sorts into the page it arrived with).
    rows.sort_by_key(|row| row.sort_key);
    let all = if money_only { String::new() } else { "1".to_owned() };
    let next_href = next.map(|after| {
        with_query(account_href(&number, "/activity"), &[("all", all.clone()), ("after", after.to_string())])
    });
    let page = templates::ActivityPage {
        frame: frame(&visitor, &state, &number, "activity"),
        currency: view.currency.as_str().to_owned(),
        money_only,
        all_href: with_query(account_href(&number, "/activity"), &[("all", "1".into())]),
        money_href: account_href(&number, "/activity"),
        rows,
        next_href,
    };
    Ok(Html(render_page(&page)).into_response())
}

// Calls.

#[derive(Deserialize, Default)]
struct CallsQuery {
    month: Option<String>,
    from: Option<String>,
    to: Option<String>,
    answered: Option<String>,
    prefix: Option<String>,
    cursor: Option<String>,
}

pub async fn calls(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let query: CallsQuery = parse_query(raw.as_deref())?;
    let period = period(query.month.as_deref(), query.from.as_deref(), query.to.as_deref())?;
    let (_, view) = viewed(&state, &visitor, &number, None).await?;
    let answered = match query.answered.as_deref().unwrap_or("") {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    let prefix = query.prefix.clone().unwrap_or_default().trim().to_owned();
    let filter = projections::CdrFilter {
        answered,
        hangup_cause: None,
        destination_prefix: Some(prefix.clone()).filter(|p| !p.is_empty()),
    };
    let page =
        state.models.cdrs(view.id, period.from, period.to, &filter, query.cursor.as_deref(), ROWS_PER_PAGE).await?;
    let is_partner_view = view.kind == AccountKind::Partner;
    // A partner's own calls list shows what the calls cost it (wholesale).
    let cost_of = |row: &projections::CdrRow| {
        if is_partner_view { row.partner_cost.unwrap_or(row.customer_cost) } else { row.customer_cost }
    };
    // One scale for the whole column (0.1900 under 0.2094, not 0.19), so the figures line up.
    let scale = page.items.iter().map(|row| cost_of(row).0.normalize().scale()).max().unwrap_or(0).max(2);
    let total_cost = page.items.iter().fold(Amount::ZERO, |sum, row| sum + cost_of(row));
    let total_seconds: u64 = page.items.iter().map(|row| u64::from(row.cdr.billed_seconds)).sum();
    let rows = page
        .items
        .iter()
        .map(|row| templates::CallView {
            id: row.cdr.id.clone(),
            start: when(row.cdr.start),
            customer: state.ledger.account_by_id(row.account).map_or_else(String::new, |account| account.number),
            caller: row.cdr.caller.clone(),
            callee: row.cdr.callee.clone(),
            duration: duration(u64::from(row.cdr.billed_seconds)),
            hangup: hangup_cause(row.cdr.hangup_cause),
            cost: money_at(cost_of(row), scale),
        })
        .collect();
    let answered_text = query.answered.clone().unwrap_or_default();
    let next_href = page.next_cursor.map(|cursor| {
        with_query(
            account_href(&number, "/calls"),
            &[
                ("from", date(period.from)),
                ("to", date(period.to)),
                ("answered", answered_text.clone()),
                ("prefix", prefix.clone()),
                ("cursor", cursor),
            ],
        )
    });
    let page = templates::CallsPage {
        frame: frame(&visitor, &state, &number, "calls"),
        number: number.clone(),
        currency: view.currency.as_str().to_owned(),
        from_date: date(period.from),
        to_date: date(period.to),
        answered: answered_text,
        prefix,
        rows,
        next_href,
        show_customer: is_partner_view,
        total_duration: duration(total_seconds),
        total_cost: money_at(total_cost, scale),
    };
    Ok(Html(render_page(&page)).into_response())
}

/// The visitor's account's invoices and credit notes, with their downloads.
pub async fn invoices(State(state): State<PortalState>, visitor: Visitor, Path(number): Path<String>) -> PageResult {
    let (account, _) = viewed(&state, &visitor, &number, None).await?;
    let entries: Vec<commands::DocumentEntry> =
        state.ledger.invoice_catalog().of_account(account.id).into_iter().cloned().collect();
    let rows = entries
        .iter()
        .rev()
        .map(|d| {
            let base = format!("/portal/invoices/{}", segment(&d.number));
            templates::InvoiceView {
                number: d.number.clone(),
                kind: if d.kind == commands::DocumentKind::Invoice { "Invoice" } else { "Credit note" },
                month: domain::invoice::month_name(d.period_from),
                issued: when(d.issued_at),
                total: money(d.gross.canonical(d.currency)),
                currency: d.currency.as_str().to_owned(),
                pdf_href: format!("{base}/invoice.pdf"),
                html_href: format!("{base}/invoice.html"),
            }
        })
        .collect();
    let page = templates::InvoicesPage { frame: frame(&visitor, &state, &number, "invoices"), number, rows };
    Ok(Html(render_page(&page)).into_response())
}

/// An invoice's PDF, for a visitor who may see its account (else not found).
pub async fn invoice_pdf(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(invoice): Path<String>,
) -> PageResult {
    let file = service::invoices::document_file(&state.ledger, &visitor.caller, &invoice, DocumentFormat::Pdf).await?;
    Ok(file.into_response())
}

/// An invoice's HTML page, for a visitor who may see its account (else not found).
pub async fn invoice_html(
    State(state): State<PortalState>,
    visitor: Visitor,
    Path(invoice): Path<String>,
) -> PageResult {
    let file = service::invoices::document_file(&state.ledger, &visitor.caller, &invoice, DocumentFormat::Html).await?;
    Ok(file.into_response())
}

/// An amount with exactly `scale` decimal places.
fn money_at(amount: Amount, scale: u32) -> String {
    let mut value = amount.0;
    value.rescale(scale);
    value.to_string()
}

/// A duration as people read it: h:mm:ss (4200 s is 1:10:00).
fn duration(seconds: u64) -> String {
    format!("{}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// A hang-up cause by its name, with the Q.850 code a switch's log shows.
fn hangup_cause(code: u16) -> String {
    match domain::rating_engine::q850_name(code) {
        Some(name) => {
            let words = name.replace('_', " ");
            let mut letters = words.chars();
            let first = letters.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
            format!("{first}{} ({code})", letters.as_str())
        }
        None => format!("Cause {code}"),
    }
}

/// What an event is, in the words of a customer's statement rather than the ledger's
/// event types.
fn activity_label(kind: &str) -> String {
    let label = match kind {
        "AccountOpened" => "Account opened",
        "AccountStatusChanged" => "Account status changed",
        "CreditLimitChanged" => "Credit limit changed",
        "TariffAssigned" => "Tariff changed",
        "PaymentReceived" => "Payment",
        "AdjustmentPosted" => "Adjustment",
        "ChargePosted" => "Charge",
        "CallCharged" => "Call",
        "FundsMoved" => "Fund move",
        "EntryReversed" => "Correction",
        "TariffPublished" => "Tariff published",
        "AlertsConfigured" => "Alerts changed",
        "AlertRaised" => "Alert",
        // A kind added later reads as words until it gets its own label.
        other => {
            return other.chars().fold(String::new(), |mut words, c| {
                if c.is_uppercase() && !words.is_empty() {
                    words.push(' ');
                    words.extend(c.to_lowercase());
                } else {
                    words.push(c);
                }
                words
            });
        }
    };
    label.to_owned()
}
