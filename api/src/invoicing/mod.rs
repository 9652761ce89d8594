//! The invoice run and credit notes, as the routes, the portal and the CLI share them:
//! read each account's statement for the period from the read models (the figures the
//! statement route answers with), hand the drafts to the ledger, whose issuers' books
//! number and record them. No rule lives here: which book issues, the numbering, the
//! tax and the refusal of a second invoice are the domain's.

pub mod cli;
pub mod render;

use commands::{InvoiceRun, Ledger};
use domain::invoice;
use domain::{BookId, CommandMeta, InvoiceId, IssueCreditNote, Timestamp};
use projections::ReadModels;

use crate::error::ApiError;

/// Which accounts a run invoices: every issuer's (the operator's run) or one issuer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunScope {
    All,
    Issuer(BookId),
}

/// The period `YYYY-MM`, which must have ended by `now`: an invoice of a month still
/// under way would miss what the rest of it brings.
pub fn ended_month(text: &str, now: Timestamp) -> Result<(Timestamp, Timestamp), ApiError> {
    let (from, to) = invoice::month(text)?;
    if to > now {
        return Err(ApiError::bad_request("invalid_field", "period", "period: the month has not ended yet"));
    }
    Ok((from, to))
}

/// Waits until the read models hold everything the log holds now, so that the
/// statements are those of the whole ledger as of the run.
async fn caught_up(ledger: &Ledger, models: &ReadModels) -> Result<(), ApiError> {
    let head = ledger.store().head().await.map_err(|e| ApiError::internal(&e))?;
    if head > 1 {
        models.wait_for(head - 1, projections::models::WAIT_FOR_POSITION_MAX).await?;
    }
    Ok(())
}

/// Invoices every account of `scope` that moved in `[from, to)` and has no invoice for
/// the period yet. Repeating it issues nothing new; a run cut short (a crash) is
/// completed by running it again.
pub async fn run(
    ledger: &Ledger,
    models: &ReadModels,
    scope: RunScope,
    from: Timestamp,
    to: Timestamp,
    meta: CommandMeta,
) -> Result<InvoiceRun, ApiError> {
    caught_up(ledger, models).await?;
    let issuer = match scope {
        RunScope::All => None,
        RunScope::Issuer(book) => Some(book),
    };
    let drafts = models.snapshot().invoice_drafts(issuer, from, to).await?;
    tracing::info!(drafts = drafts.len(), period = %invoice::month_name(from), "issuing invoices");
    Ok(ledger.issue_invoices(drafts, meta).await?)
}

/// Corrects an invoice to its period's statement as it is now: a credit note for the
/// difference, or `invoice_unchanged` (422) when there is none.
pub async fn correct(
    ledger: &Ledger,
    models: &ReadModels,
    invoice: &commands::DocumentEntry,
    reason: Option<String>,
    meta: CommandMeta,
) -> Result<commands::CommandOutcome, ApiError> {
    caught_up(ledger, models).await?;
    let statement = models.statement(invoice.account, invoice.period_from, invoice.period_to, None).await?;
    let issue = IssueCreditNote {
        credit_note: InvoiceId::new(),
        invoice: invoice.id,
        figures: projections::invoices::figures_of(&statement),
        statement_position: statement.position,
        reason,
    };
    Ok(ledger.issue_credit_note(issue, meta).await?)
}
