//! The portal's pages as typed templates. The HTML lives in `api/templates/portal/`, and
//! askama compiles it into the binary: a template that names a missing field does not
//! build, and nothing is read from disk at run time. Values are escaped for HTML unless
//! marked `safe` (only the server-drawn chart is).

use askama::Template;

/// What every signed-in page shows around its content.
pub struct Frame {
    pub own_number: String,
    pub own_name: String,
    pub csrf: String,
    /// The account whose pages these are.
    pub viewing: String,
    /// The navigation entry to mark current.
    pub section: &'static str,
}

/// Renders a page; a template that fails to render (it cannot, short of a formatting
/// error) shows as an empty page rather than a panic.
pub fn render_page<T: Template>(page: &T) -> String {
    page.render().unwrap_or_else(|error| {
        tracing::error!(%error, "a portal template failed to render");
        String::new()
    })
}

#[derive(Template)]
#[template(path = "portal/reload.html")]
pub struct Reload {
    pub target: String,
}

#[derive(Template)]
#[template(path = "portal/login.html")]
pub struct Login {
    pub frame: Option<Frame>,
    pub error: Option<String>,
    pub login: String,
    /// The password was right but set by someone else: ask for a new one as well.
    pub must_change: bool,
}

#[derive(Template)]
#[template(path = "portal/password.html")]
pub struct PasswordPage {
    pub frame: Option<Frame>,
    pub csrf: String,
    pub error: Option<String>,
    pub notice: Option<String>,
    /// The session was opened by a login link: there is no user, so no password.
    pub has_user: bool,
}

#[derive(Template)]
#[template(path = "portal/error.html")]
pub struct Error {
    pub frame: Option<Frame>,
    pub title: String,
    pub message: String,
    pub hint: Option<String>,
}

pub struct AccountBox {
    pub number: String,
    pub name: String,
    pub kind: &'static str,
    pub partner: Option<String>,
    pub status: String,
    pub currency: String,
    pub balance: String,
    pub negative: bool,
    pub credit_limit: String,
    pub available: String,
    pub opened_at: String,
}

pub struct CustomerRow {
    pub number: String,
    pub name: String,
    pub status: String,
    pub balance: String,
    pub negative: bool,
    pub available: String,
}

pub struct Choice {
    pub number: String,
    pub name: String,
}

pub struct MoveForm {
    pub csrf: String,
    pub idempotency_key: String,
    pub customers: Vec<Choice>,
    /// What was entered, shown again after a refusal so that nothing is typed twice.
    pub direction: String,
    pub customer: String,
    pub amount: String,
    pub note: String,
}

#[derive(Template)]
#[template(path = "portal/overview.html")]
pub struct Overview {
    pub frame: Option<Frame>,
    pub account: AccountBox,
    pub notice: Option<String>,
    pub chart: String,
    pub move_form: Option<MoveForm>,
    pub form_error: Option<String>,
    pub is_partner_home: bool,
    pub customers: Vec<CustomerRow>,
    pub next_customers: Option<String>,
}

pub struct Figure {
    pub name: &'static str,
    pub label: &'static str,
    /// How it enters the sum: `+`, `−`, `=` or nothing.
    pub sign: &'static str,
    pub amount: String,
    /// The postings behind it.
    pub href: Option<String>,
    pub total: bool,
}

#[derive(Template)]
#[template(path = "portal/statement.html")]
pub struct StatementPage {
    pub frame: Option<Frame>,
    pub number: String,
    pub currency: String,
    pub month: String,
    pub from_date: String,
    pub to_date: String,
    pub period_label: String,
    pub figures: Vec<Figure>,
    pub charges_sum: String,
    pub closing_sum: String,
    pub csv_href: String,
    pub chart: String,
}

pub struct LineRow {
    pub event_href: String,
    pub occurred_at: String,
    pub category: &'static str,
    pub amount: String,
}

#[derive(Template)]
#[template(path = "portal/lines.html")]
pub struct LinesPage {
    pub frame: Option<Frame>,
    pub heading: String,
    pub period_label: String,
    pub currency: String,
    pub back_href: String,
    pub rows: Vec<LineRow>,
    pub page_sum: String,
    pub next_href: Option<String>,
}

pub struct EventView {
    pub position: u64,
    /// Business time: the rows of a page are ordered by it.
    pub sort_key: domain::Timestamp,
    pub kind: String,
    /// The other account of a fund move, a payment's method and reference, a note.
    pub details: String,
    pub occurred_at: String,
    pub recorded_at: String,
    pub postings: String,
}

#[derive(Template)]
#[template(path = "portal/activity.html")]
pub struct ActivityPage {
    pub frame: Option<Frame>,
    pub currency: String,
    pub money_only: bool,
    pub all_href: String,
    pub money_href: String,
    pub rows: Vec<EventView>,
    pub next_href: Option<String>,
}

pub struct CallView {
    pub id: String,
    pub start: String,
    /// The customer's number, on a partner's list (its customers' calls).
    pub customer: String,
    pub caller: String,
    pub callee: String,
    /// The billed duration as h:mm:ss.
    pub duration: String,
    /// The hang-up cause by name, with its Q.850 code.
    pub hangup: String,
    pub cost: String,
}

/// One invoice or credit note in the portal's list.
pub struct InvoiceView {
    pub number: String,
    pub kind: &'static str,
    pub month: String,
    pub issued: String,
    pub total: String,
    pub currency: String,
    pub pdf_href: String,
    pub html_href: String,
}

#[derive(Template)]
#[template(path = "portal/invoices.html")]
pub struct InvoicesPage {
    pub frame: Option<Frame>,
    pub number: String,
    pub rows: Vec<InvoiceView>,
}

#[derive(Template)]
#[template(path = "portal/calls.html")]
pub struct CallsPage {
    pub frame: Option<Frame>,
    pub number: String,
    pub currency: String,
    pub from_date: String,
    pub to_date: String,
    pub answered: String,
    pub prefix: String,
    pub rows: Vec<CallView>,
    pub next_href: Option<String>,
    /// A partner's list holds its customers' calls: say whose.
    pub show_customer: bool,
    pub total_duration: String,
    pub total_cost: String,
}
