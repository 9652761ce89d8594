//! Fund moves between a partner and its own customers: the one path of every fund move,
//! whether it came as `POST /api/v1/transfers` or as the portal's form.

use commands::{CommandOutcome, Ledger};
use domain::{Amount, Command, CommandMeta};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::write::visible_account;

/// A fund move as both front ends read it: accounts by number, as the caller names them.
/// Serialized for the portal's idempotency digest (the API digests its own request).
#[derive(serde::Serialize)]
pub struct FundMove {
    pub from: String,
    pub to: String,
    pub amount: Amount,
    pub note: Option<String>,
}

/// Moves funds for `caller`. `meta` carries the front end's idempotency key, if any.
pub async fn move_funds(
    ledger: &Ledger,
    caller: &Caller,
    request: FundMove,
    meta: CommandMeta,
) -> Result<CommandOutcome, ApiError> {
    caller.require_writer()?;
    // Both sides must be in the caller's sight; that the pair is a partner and its own
    // customer is the ledger's rule, and within a partner's book it always holds for a
    // move that involves the partner itself.
    let from = visible_account(ledger, caller, "from", &request.from)?.id;
    let to = visible_account(ledger, caller, "to", &request.to)?.id;
    let command = Command::MoveFunds { from, to, amount: request.amount, note: request.note };
    Ok(ledger.execute(command, meta).await?)
}
