//! Balance statements of an account for a period, from the read models.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use domain::Timestamp;
use serde::{Deserialize, Serialize};

use super::account_links;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::query;
use crate::server::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementQuery {
    from: String,
    to: String,
    /// The global position to report as of (events recorded later are left out).
    #[serde(default, deserialize_with = "query::optional_u64")]
    as_of: Option<u64>,
    /// Wait until the read models reflect this position (read your writes).
    #[serde(default, deserialize_with = "query::optional_u64")]
    min_position: Option<u64>,
}

#[derive(Serialize)]
struct StatementOut {
    status: &'static str,
    statement: projections::Statement,
    links: BTreeMap<&'static str, String>,
}

fn time(field: &'static str, text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse(text).ok_or_else(|| {
        ApiError::bad_request("invalid_query", field, format!("{field}: expected RFC 3339 or YYYY-MM-DD"))
    })
}

pub async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Path(number): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<impl Serialize>, ApiError> {
    let query: StatementQuery = query::parse(raw.as_deref())?;
    let from = time("from", &query.from)?;
    let to = time("to", &query.to)?;
    if let Some(position) = query.min_position {
        state.models.wait_for(position, projections::models::WAIT_FOR_POSITION_MAX).await?;
    }
    let view = state
        .models
        .account_by_number(&number)?
        .ok_or_else(|| ApiError::not_found("account_not_found", format!("account `{number}` not found")))?;
    let statement = state.models.statement(view.id, from, to, query.as_of)?;
    Ok(Json(StatementOut { status: "ok", statement, links: account_links(&number) }))
}
