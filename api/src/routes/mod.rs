//! The `/api/v1` routes, one module per resource family, each with its handlers, its
//! request and response types and their OpenAPI annotations. Every handler of a protected
//! resource takes a `Caller` (or a `Write`, which holds one) even when it does not use it:
//! that extractor is the authentication gate, so a handler without it would be open to
//! anyone.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::body::BODY_BYTES_MAX;
use crate::error::ApiError;
use crate::openapi::{ApiDoc, AuthenticatedErrors};
use crate::state::AppState;

mod accounts;
mod adjustments;
mod alert_emails;
mod alerts;
mod audit;
mod cdr_mappings;
mod cdrs;
mod charges;
mod invoices;
mod login_links;
mod operations;
mod payments;
mod plans;
mod reconciliations;
mod reversals;
mod sessions;
mod statements;
mod stream;
mod switches;
mod tariffs;
mod tokens;
mod transfers;
mod users;
mod webhooks;

pub use operations::metrics_app;

pub use crate::links::{Links, account_links};

pub const API_ROOT: &str = "/api/v1";
/// Items in one page of a list, when the client does not say.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Items in one page of a list at most; a larger `limit` is refused (400).
pub const PAGE_SIZE_MAX: usize = 1000;

/// Every route, with the OpenAPI document describing them.
pub fn router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa::{Modify, OpenApi};
    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(index))
        .merge(accounts::router())
        .merge(statements::router())
        .merge(audit::router())
        .merge(cdrs::router())
        .merge(reconciliations::router())
        .merge(tariffs::router())
        .merge(payments::router())
        .merge(adjustments::router())
        .merge(charges::router())
        .merge(transfers::router())
        .merge(login_links::router())
        .merge(reversals::router())
        .merge(users::router())
        .merge(tokens::router())
        .merge(sessions::router())
        .merge(operations::router())
        .merge(alerts::router())
        .merge(alert_emails::router())
        .merge(stream::router())
        .merge(webhooks::router())
        .merge(switches::router())
        .merge(cdr_mappings::router())
        .merge(plans::router())
        .merge(invoices::router())
        .split_for_parts();
    crate::openapi::Conventions.modify(&mut openapi);
    let api = api
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX));
    (api, openapi)
}

#[derive(Serialize, ToSchema)]
pub struct IndexOut {
    #[schema(example = "ok")]
    status: &'static str,
    /// The resources, by name; `{…}` marks a path parameter, `{?…}` query parameters.
    #[schema(example = json!({"self": "/api/v1", "accounts": "/api/v1/accounts{?status,kind,partner,cursor,limit}", "account": "/api/v1/accounts/{number}{?min_position}"}))]
    links: BTreeMap<&'static str, String>,
}

/// The resources of the API, as links.
#[utoipa::path(
    get,
    path = "/api/v1",
    operation_id = "index",
    tag = "operations",
    responses((status = 200, description = "Links to the resources", body = IndexOut), AuthenticatedErrors)
)]
pub async fn index(_caller: Caller) -> Json<IndexOut> {
    let links = [
        ("self", API_ROOT),
        ("me", "/api/v1/me"),
        ("accounts", "/api/v1/accounts{?status,kind,partner,cursor,limit}"),
        ("account", "/api/v1/accounts/{number}{?min_position}"),
        ("account_status", "/api/v1/accounts/{number}/status"),
        ("account_credit_limit", "/api/v1/accounts/{number}/credit-limit"),
        ("account_tariff", "/api/v1/accounts/{number}/tariff"),
        ("account_alerts", "/api/v1/accounts/{number}/alerts"),
        ("account_alert_emails", "/api/v1/accounts/{number}/alert-emails"),
        ("account_alert_email_deliveries", "/api/v1/accounts/{number}/alert-emails/deliveries{?after,limit}"),
        ("alert_templates", "/api/v1/alert-templates"),
        ("stream", "/api/v1/stream{?from,book,account,kinds}"),
        ("webhooks", "/api/v1/webhooks"),
        ("webhook", "/api/v1/webhooks/{id}"),
        ("webhook_deliveries", "/api/v1/webhooks/{id}/deliveries{?after,limit}"),
        ("statement", "/api/v1/accounts/{number}/statement{?from,to,as_of,min_position,format}"),
        ("statement_lines", "/api/v1/accounts/{number}/statement/lines{?from,to,category,cursor,limit}"),
        ("account_events", "/api/v1/accounts/{number}/events{?after,limit}"),
        (
            "account_cdrs",
            "/api/v1/accounts/{number}/cdrs{?from,to,answered,hangup_cause,destination,cursor,limit,format}",
        ),
        ("account_cdr", "/api/v1/accounts/{number}/cdrs/{id}"),
        ("cdrs", "/api/v1/cdrs"),
        ("cdr_mappings", "/api/v1/cdr-mappings"),
        ("cdr_mapping", "/api/v1/cdr-mappings/{name}{?partner}"),
        ("cdrs_mapped", "/api/v1/cdrs/mapped{?mapping,partner,utc_offset,time_zone}"),
        ("reconciliations", "/api/v1/reconciliations{?from,to,format}"),
        ("tariffs", "/api/v1/tariffs"),
        ("tariff", "/api/v1/tariffs/{id}"),
        ("login_link", "/api/v1/accounts/{number}/login-link"),
        ("payments", "/api/v1/payments"),
        ("adjustments", "/api/v1/adjustments"),
        ("charges", "/api/v1/charges"),
        ("plans", "/api/v1/plans"),
        ("subscriptions", "/api/v1/subscriptions{?account}"),
        ("invoice_runs", "/api/v1/invoice-runs"),
        ("tax_rules", "/api/v1/tax-rules"),
        ("account_invoices", "/api/v1/accounts/{number}/invoices"),
        ("invoice", "/api/v1/invoices/{invoice}"),
        ("invoice_pdf", "/api/v1/invoices/{invoice}/invoice.pdf"),
        ("invoice_html", "/api/v1/invoices/{invoice}/invoice.html"),
        ("credit_notes", "/api/v1/invoices/{invoice}/credit-notes"),
        ("transfers", "/api/v1/transfers"),
        ("reversals", "/api/v1/reversals"),
        ("users", "/api/v1/users{?after,limit}"),
        ("user", "/api/v1/users/{login}"),
        ("tokens", "/api/v1/tokens{?user}"),
        ("token", "/api/v1/tokens/{id}"),
        ("sessions", "/api/v1/sessions"),
        ("session_refresh", "/api/v1/sessions/refresh"),
        ("session", "/api/v1/sessions/{id}"),
        ("jwks", sessions::JWKS_PATH),
        ("openapi", crate::openapi::OPENAPI_PATH),
        ("docs", crate::openapi::DOCS_PATH),
        ("health", "/health"),
        ("cdr", "/api/v1/cdrs/{id}{?min_position}"),
        ("hangup_causes", "/api/v1/hangup-causes"),
        ("switch_identifiers", "/api/v1/accounts/{number}/switch-identifiers"),
        ("cdrs_freeswitch", "/api/v1/cdrs/freeswitch"),
        ("cdrs_asterisk", "/api/v1/cdrs/asterisk{?utc_offset,time_zone}"),
        ("cdrs_kamailio", "/api/v1/cdrs/kamailio{?utc_offset,time_zone}"),
    ];
    Json(IndexOut { status: "ok", links: links.into_iter().map(|(name, path)| (name, path.to_owned())).collect() })
}

/// Unknown paths under the API answer in the API's error format, after authentication
/// so that the API's shape is not shown to strangers.
async fn not_found(_caller: Caller) -> ApiError {
    ApiError::not_found("not_found", "no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// A `limit` within bounds.
pub fn page_size(limit: u64) -> Result<usize, ApiError> {
    match usize::try_from(limit) {
        Ok(limit) if (1..=PAGE_SIZE_MAX).contains(&limit) => Ok(limit),
        _ => Err(ApiError::bad_request("invalid_query", "limit", format!("limit: 1 to {PAGE_SIZE_MAX}"))),
    }
}

/// Whether a read answers in CSV: `format=csv` (or `json`) decides; without it, an
/// `Accept` header that prefers `text/csv` over JSON.
pub fn csv_requested(format: Option<&str>, headers: &axum::http::HeaderMap) -> Result<bool, ApiError> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(_) => Err(ApiError::bad_request("invalid_query", "format", "format: `json` or `csv`")),
        None => {
            let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let position = |media: &str| accept.to_ascii_lowercase().find(media);
            Ok(match (position("text/csv"), position("application/json")) {
                (Some(csv), Some(json)) => csv < json,
                (Some(_), None) => true,
                _ => false,
            })
        }
    }
}
