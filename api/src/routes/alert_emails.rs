//! Alert e-mail: the addresses an account's alerts are e-mailed to, and the log of those
//! e-mails. Configuration like the alert templates (kept in `<data>/notify`, not in the
//! event log); the sending is `crate::notify::mail`'s.
//!
//! Who may set them follows who may see the account: the operator any account's, a partner
//! its own and its customers', a customer its own (where its alerts go is its business).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Links, page_size};
use crate::auth::Caller;
use crate::body::Body;
use crate::error::ApiError;
use crate::notify::mail::{ADDRESS_BYTES_MAX, ADDRESSES_PER_ACCOUNT_MAX};
use crate::notify::store::MailDeliveryRecord;
use crate::openapi::{AdminReadErrors, AdminWriteErrors};
use crate::query;
use crate::state::AppState;
use crate::write::visible_account;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, set)).routes(routes!(deliveries))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertEmailsRequest {
    /// Where the account's alerts are e-mailed, replacing the addresses set before: a JSON
    /// array, or one string separated by commas (forms). Empty: no e-mail. At most 10.
    #[serde(deserialize_with = "addresses")]
    #[schema(value_type = Vec<String>, example = json!(["billing@customer.example", "Ops Team <ops@customer.example>"]))]
    addresses: Vec<String>,
}

fn addresses<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Given::deserialize(deserializer)? {
        Given::List(list) => list,
        Given::Text(text) => text.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct AlertEmailsOut {
    #[schema(example = "ok")]
    status: &'static str,
    #[schema(example = "C-1001")]
    account: String,
    #[schema(example = json!(["billing@customer.example"]))]
    addresses: Vec<String>,
    /// False when the server has no SMTP relay set up (`--smtp-host`): the addresses are
    /// kept, and nothing is sent until it has.
    sending: bool,
    #[schema(example = json!({"self": "/api/v1/accounts/C-1001/alert-emails", "deliveries": "/api/v1/accounts/C-1001/alert-emails/deliveries", "account": "/api/v1/accounts/C-1001", "alerts": "/api/v1/accounts/C-1001/alerts"}))]
    links: BTreeMap<&'static str, String>,
}

fn links(number: &str) -> Links {
    let base = format!("/api/v1/accounts/{number}");
    BTreeMap::from([
        ("self", format!("{base}/alert-emails")),
        ("deliveries", format!("{base}/alert-emails/deliveries")),
        ("alerts", format!("{base}/alerts")),
        ("account", base),
    ])
}

/// Checks each address, and names the one at fault (`addresses[1]`). An address is a
/// mailbox (`a@example.com`, or with a display name); repeats are refused rather than
/// quietly merged, since a typo often makes one.
fn checked(given: Vec<String>) -> Result<Vec<String>, ApiError> {
    if given.len() > ADDRESSES_PER_ACCOUNT_MAX {
        return Err(ApiError::bad_request(
            "too_many_addresses",
            "addresses",
            format!("addresses: at most {ADDRESSES_PER_ACCOUNT_MAX}, {} given", given.len()),
        ));
    }
    let mut addresses: Vec<String> = Vec::with_capacity(given.len());
    let mut seen: Vec<String> = Vec::with_capacity(given.len());
    for (index, text) in given.into_iter().enumerate() {
        let field = format!("addresses[{index}]");
        let invalid =
            |why: String| ApiError::bad_request("invalid_email_address", field.clone(), format!("{field}: {why}"));
        let text = text.trim().to_owned();
        if text.len() > ADDRESS_BYTES_MAX {
            return Err(invalid(format!("longer than {ADDRESS_BYTES_MAX} bytes")));
        }
        let mailbox: lettre::message::Mailbox = text.parse().map_err(|_| {
            invalid(format!(
                "`{}` is not an e-mail address (name@domain, or Name <name@domain>)",
                text.chars().take(64).collect::<String>()
            ))
        })?;
        let email = mailbox.email.to_string().to_lowercase();
        if let Some(first) = seen.iter().position(|s| *s == email) {
            return Err(invalid(format!("{email} is addresses[{first}] already")));
        }
        seen.push(email);
        addresses.push(mailbox.to_string());
    }
    Ok(addresses)
}

/// The addresses an account's alerts are e-mailed to.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/alert-emails",
    operation_id = "show_alert_emails",
    tag = "alerts",
    params(("number" = String, Path, description = "The account number", example = "C-1001")),
    responses((status = 200, description = "The addresses", body = AlertEmailsOut), AdminReadErrors)
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
) -> Result<Json<AlertEmailsOut>, ApiError> {
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let addresses = state.notify.store.mail_addresses(account.id.0)?;
    Ok(Json(AlertEmailsOut {
        status: "ok",
        account: number.clone(),
        addresses,
        sending: state.notify.mail_enabled(),
        links: links(&number),
    }))
}

/// Set the addresses an account's alerts are e-mailed to (replacing the previous ones;
/// an empty list stops the e-mail). Each alert raised from now on goes to each address
/// once, its subject and text from the alert templates. The operator sets any account's,
/// a partner its own and its customers', a customer its own.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{number}/alert-emails",
    operation_id = "set_alert_emails",
    tag = "alerts",
    params(("number" = String, Path, description = "The account number", example = "C-1001")),
    request_body = AlertEmailsRequest,
    responses((status = 200, description = "Set", body = AlertEmailsOut), AdminWriteErrors)
)]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    Body(request): Body<AlertEmailsRequest>,
) -> Result<Json<AlertEmailsOut>, ApiError> {
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let addresses = checked(request.addresses)?;
    state.notify.store.set_mail_addresses(account.id.0, &addresses).await?;
    Ok(Json(AlertEmailsOut {
        status: "ok",
        account: number.clone(),
        addresses,
        sending: state.notify.mail_enabled(),
        links: links(&number),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// E-mails of alerts after this position (the last `position` of the previous page).
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    #[param(value_type = Option<u64>)]
    after: Option<u64>,
    /// About this many (1 to 1000, default 100); a page ends with an alert's last e-mail.
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    #[param(value_type = Option<u64>)]
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct MailDeliveryList {
    #[schema(example = "ok")]
    status: &'static str,
    /// In log order, one per alert and address; each with its attempts (time, the relay's
    /// reply code or the error, duration).
    deliveries: Vec<MailDeliveryRecord>,
    /// The `after` of the next page, when there may be one.
    next_after: Option<u64>,
}

/// The log of an account's alert e-mails, in log order: to whom, the subject, each
/// attempt and the outcome. The newest 10,000 are kept.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/alert-emails/deliveries",
    operation_id = "list_alert_email_deliveries",
    tag = "alerts",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), DeliveriesQuery),
    responses((status = 200, description = "The e-mails", body = MailDeliveryList), AdminReadErrors)
)]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<MailDeliveryList>, ApiError> {
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let query: DeliveriesQuery = query::parse(raw.as_deref())?;
    let limit = page_size(query.limit.unwrap_or(super::PAGE_SIZE_DEFAULT as u64))?;
    let deliveries = state.notify.store.mail_deliveries(account.id.0, query.after, limit)?;
    let next_after = (deliveries.len() >= limit).then(|| deliveries.last().map(|d| d.position)).flatten();
    Ok(Json(MailDeliveryList { status: "ok", deliveries, next_after }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_one_by_one_and_named() {
        let ok = checked(vec![" a@example.com ".into(), "Ops <ops@example.com>".into()]).unwrap();
        assert_eq!(ok, vec!["a@example.com", "Ops <ops@example.com>"]);
        let error = checked(vec!["a@example.com".into(), "not-an-address".into()]).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("addresses[1]"));
        assert_eq!(error.code, "invalid_email_address");
        let error = checked(vec!["a@example.com".into(), "A@Example.com".into()]).unwrap_err();
        assert!(error.message.contains("addresses[0]"), "{}", error.message);
        let error = checked(vec!["x@example.com".into(); ADDRESSES_PER_ACCOUNT_MAX + 1]).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("addresses"));
        assert!(checked(vec![]).unwrap().is_empty(), "none turns e-mail off");
    }
}
