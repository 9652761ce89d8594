//! Alerts: an account's thresholds (ledger commands: crossing them is decided by the
//! domain's rules) and the operator's message templates (configuration of how alerts read,
//! kept outside the log; see docs/architecture.md, "Notifications").

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::{Amount, Command};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::account_links;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::ApiError;
use crate::notify::template::{self, AlertTemplates, VARIABLES};
use crate::openapi::{AdminReadErrors, AdminWriteErrors, IdempotencyKey, ReadErrors, WriteErrors};
use crate::state::AppState;
use crate::write::{Write, managed_account, respond, visible_account};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show_thresholds, set_thresholds)).routes(routes!(show_templates, set_templates))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsRequest {
    /// Alert once each time the balance goes from at or above this to below it; absent
    /// turns the alert off.
    #[schema(schema_with = crate::openapi::amount_in_or_null)]
    balance_below: Option<Amount>,
    /// Alert for each call whose cost is above this; absent turns the alert off.
    #[schema(schema_with = crate::openapi::amount_in_or_null)]
    call_cost_above: Option<Amount>,
}

/// Set an account's alert thresholds. Reaching the credit limit always alerts. Alerts are
/// `AlertRaised` events, sent by the live stream and webhooks.
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{number}/alerts",
    operation_id = "set_alert_thresholds",
    tag = "alerts",
    params(("number" = String, Path, description = "The account number", example = "C-1001"), IdempotencyKey),
    request_body = ThresholdsRequest,
    responses((status = 200, description = "Set (or already so: no events)", body = crate::write::WriteBody), WriteErrors)
)]
pub async fn set_thresholds(
    State(state): State<AppState>,
    write: Write,
    Path(number): Path<String>,
    Body(request): Body<ThresholdsRequest>,
) -> Result<Response, ApiError> {
    let account = managed_account(&state.ledger, &write.caller, "number", &number)?.id;
    let meta = write.meta(&request, None)?;
    let command = Command::ConfigureAlerts {
        account,
        balance_below: request.balance_below,
        call_cost_above: request.call_cost_above,
    };
    let outcome = state.ledger.execute(command, meta).await?;
    Ok(respond(&state.ledger, StatusCode::OK, outcome, account_links(&number)))
}

#[derive(Serialize, ToSchema)]
pub struct ThresholdsOut {
    #[schema(example = "ok")]
    status: &'static str,
    #[schema(example = "C-1001")]
    account: String,
    /// Null: no balance alert.
    #[schema(schema_with = crate::openapi::amount_out_or_null, required = true)]
    balance_below: Option<Amount>,
    /// Null: no call cost alert.
    #[schema(schema_with = crate::openapi::amount_out_or_null, required = true)]
    call_cost_above: Option<Amount>,
    #[schema(example = crate::openapi::account_links_example)]
    links: BTreeMap<&'static str, String>,
}

/// An account's alert thresholds, as the ledger holds them now.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/alerts",
    operation_id = "show_alert_thresholds",
    tag = "alerts",
    params(("number" = String, Path, description = "The account number", example = "C-1001")),
    responses((status = 200, description = "The thresholds; null is off", body = ThresholdsOut), ReadErrors)
)]
pub async fn show_thresholds(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
) -> Result<Json<ThresholdsOut>, ApiError> {
    // From the ledger's account index, which the writers update before they answer:
    // thresholds just set read back at once, and no copy of the book is made.
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    Ok(Json(ThresholdsOut {
        status: "ok",
        account: number.clone(),
        balance_below: account.alert_balance_below.map(|a| a.canonical(account.currency)),
        call_cost_above: account.alert_call_cost_above.map(|a| a.canonical(account.currency)),
        links: account_links(&number),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatesRequest {
    /// The message of `credit_limit_reached` alerts; absent: the default.
    #[schema(example = "{account_name} ({account_number}) is past its credit limit of {credit_limit}")]
    credit_limit_reached: Option<String>,
    /// The message of `balance_below` alerts; absent: the default.
    #[schema(example = "{account_name}: balance {balance} is below {threshold}")]
    balance_below: Option<String>,
    /// The message of `call_cost_above` alerts; absent: the default.
    #[schema(example = "{account_number}: call to {destination} ({duration}) cost {cost}")]
    call_cost_above: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TemplatesOut {
    #[schema(example = "ok")]
    status: &'static str,
    credit_limit_reached: String,
    balance_below: String,
    call_cost_above: String,
    /// The variables a template may use (`{name}`), with what each becomes; `{{` and `}}`
    /// are literal braces.
    #[schema(example = crate::openapi::template_variables_example)]
    variables: BTreeMap<&'static str, &'static str>,
}

fn templates_out(templates: AlertTemplates) -> TemplatesOut {
    TemplatesOut {
        status: "ok",
        credit_limit_reached: templates.credit_limit_reached,
        balance_below: templates.balance_below,
        call_cost_above: templates.call_cost_above,
        variables: VARIABLES.into_iter().collect(),
    }
}

/// The alert message templates (operator only).
#[utoipa::path(
    get,
    path = "/api/v1/alert-templates",
    operation_id = "show_alert_templates",
    tag = "alerts",
    responses((status = 200, description = "The templates and their variables", body = TemplatesOut), AdminReadErrors)
)]
pub async fn show_templates(State(state): State<AppState>, caller: Caller) -> Result<Json<TemplatesOut>, ApiError> {
    caller.require_admin()?;
    Ok(Json(templates_out(state.notify.store.alert_templates()?)))
}

/// Set the alert message templates (operator only). They apply to every alert rendered
/// from now on, old alerts included: the events keep the facts, the template only says how
/// they read.
#[utoipa::path(
    post,
    path = "/api/v1/alert-templates",
    operation_id = "set_alert_templates",
    tag = "alerts",
    request_body = TemplatesRequest,
    responses((status = 200, description = "Set", body = TemplatesOut), AdminWriteErrors)
)]
pub async fn set_templates(
    State(state): State<AppState>,
    caller: Caller,
    Body(request): Body<TemplatesRequest>,
) -> Result<Json<TemplatesOut>, ApiError> {
    caller.require_admin()?;
    let defaults = AlertTemplates::default();
    let checked = |field: &'static str, given: Option<String>, default: String| match given {
        None => Ok(default),
        Some(text) => template::validate(&text)
            .map(|()| text)
            .map_err(|e| ApiError::bad_request("invalid_template", field, format!("{field}: {}", e.0))),
    };
    let templates = AlertTemplates {
        credit_limit_reached: checked(
            "credit_limit_reached",
            request.credit_limit_reached,
            defaults.credit_limit_reached,
        )?,
        balance_below: checked("balance_below", request.balance_below, defaults.balance_below)?,
        call_cost_above: checked("call_cost_above", request.call_cost_above, defaults.call_cost_above)?,
    };
    state.notify.store.set_alert_templates(&templates).await?;
    Ok(Json(templates_out(templates)))
}
