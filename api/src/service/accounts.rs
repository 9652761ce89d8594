//! Reading an account through the read models, for a caller that has already been
//! shown the account (`write::visible_account`).

use commands::{AccountRef, Ledger};
use projections::ReadModels;

use crate::error::ApiError;

/// Waits until the read models reflect `position`, a client's `min_position`: read your
/// own writes. A position the log has not reached was never the answer of a write, and
/// waiting for it could only end, after the whole wait, in a 503 that retrying does not
/// cure; so it is refused at once as bad input.
pub async fn wait_for_position(ledger: &Ledger, models: &ReadModels, position: u64) -> Result<u64, ApiError> {
    let head = ledger.store().head().await.map_err(|e| ApiError::internal(&e))?;
    if position >= head {
        return Err(ApiError::bad_request(
            "invalid_query",
            "min_position",
            format!("min_position: {position} is past the end of the log (next position {head})"),
        ));
    }
    Ok(models.wait_for(position, projections::models::WAIT_FOR_POSITION_MAX).await?)
}

/// Reads an account's view from the read models, first waiting until they reflect
/// `min_position` when the caller gave one (read your writes). `account` comes from the
/// ledger and has passed the caller's scope. Also gives the position the models reflected
/// before the read: the view reflects at least that much.
pub async fn read_account(
    ledger: &Ledger,
    models: &ReadModels,
    account: &AccountRef,
    min_position: Option<u64>,
) -> Result<(projections::AccountView, u64), ApiError> {
    if let Some(position) = min_position {
        wait_for_position(ledger, models, position).await?;
    }
    let snapshot = models.snapshot();
    if let Some(view) = snapshot.account(account.id) {
        return Ok((view, snapshot.position()));
    }
    // The ledger has the account but the read models have not seen it yet: a client that
    // just registered it should find it, so wait for them to catch up with the log.
    let head = ledger.store().head().await.map_err(|e| ApiError::internal(&e))?;
    models.wait_for(head.saturating_sub(1), projections::models::WAIT_FOR_POSITION_MAX).await?;
    let snapshot = models.snapshot();
    let view = snapshot
        .account(account.id)
        .ok_or_else(|| ApiError::not_found("account_not_found", format!("account `{}` not found", account.number)))?;
    Ok((view, snapshot.position()))
}
