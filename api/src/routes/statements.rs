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
    /// Report as the ledger knew it at this global position (a whole number) or ledger
    /// time (RFC 3339 or YYYY-MM-DD): events recorded later are left out.
    as_of: Option<String>,
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

fn as_of(text: &str) -> Result<projections::AsOf, ApiError> {
    match text.parse::<u64>() {
        Ok(position) => Ok(projections::AsOf::Position(position)),
        Err(_) => time("as_of", text).map(projections::AsOf::Time),
    }
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
    let (view, _) = super::read_account(&state, &number, query.min_position).await?;
    let as_of = query.as_of.as_deref().map(as_of).transpose()?;
    let statement = state.models.statement(view.id, from, to, as_of)?;
    Ok(Json(StatementOut { status: "ok", statement, links: account_links(&number) }))
}
