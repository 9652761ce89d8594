//! The invoice run and credit notes, as the routes, the portal and the CLI share them:
//! read each account's statement for the period from the read models (the figures the
//! statement route answers with), hand the drafts to the ledger, whose issuers' books
//! number and record them. No rule lives here: which book issues, the numbering, the
//! tax and the refusal of a second invoice are the domain's.

pub mod render;

use commands::{InvoiceDraft, InvoiceRun, Ledger};
use domain::invoice::{self, Figures};
use domain::{AccountKind, BookId, CommandMeta, InvoiceId, IssueCreditNote, IssueInvoice, Timestamp};
use projections::{AccountFilter, ReadModels};

use crate::error::ApiError;

/// Which accounts a run invoices: every issuer's (the operator's run) or one issuer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunScope {
    All,
    Issuer(BookId),
}

/// The statement figures of one account for `[from, to)`, from one snapshot of the read
/// models, with the position they reflect.
pub fn figures_of(statement: &projections::Statement) -> Figures {
    Figures {
        opening_balance: statement.opening_balance,
        payments: statement.payments,
        adjustments: statement.adjustments,
        call_charges: statement.call_charges,
        other_charges: statement.other_charges,
        total_charges: statement.total_charges,
        transfers_in: statement.transfers_in,
        transfers_out: statement.transfers_out,
        closing_balance: statement.closing_balance,
    }
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
    let snapshot = models.snapshot();
    let mut drafts = Vec::new();
    let filter = match scope {
        RunScope::All => AccountFilter::default(),
        // A partner's book holds the partner too, which the operator invoices.
        RunScope::Issuer(book) if book != BookId::OPERATOR => {
            AccountFilter { book: Some(book), kind: Some(AccountKind::Customer), ..AccountFilter::default() }
        }
        // The operator's customers are in its book; its partners each open their own.
        RunScope::Issuer(_) => AccountFilter::default(),
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = snapshot.accounts(&filter, cursor.as_deref(), projections::PAGE_SIZE_MAX)?;
        for view in &page.items {
            if view.opened_at >= to {
                continue;
            }
            let Ok((issuer, subject)) = ledger.invoice_subject(view.id, &view.name) else { continue };
            if let RunScope::Issuer(book) = scope
                && issuer != book
            {
                continue;
            }
            let statement = snapshot.statement(view.id, from, to, None).await?;
            let figures = figures_of(&statement);
            if !figures.has_movement() {
                continue;
            }
            drafts.push(InvoiceDraft {
                issuer,
                issue: IssueInvoice {
                    invoice: InvoiceId::new(),
                    subject,
                    period_from: from,
                    period_to: to,
                    figures,
                    statement_position: statement.position,
                },
            });
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
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
        figures: figures_of(&statement),
        statement_position: statement.position,
        reason,
    };
    Ok(ledger.issue_credit_note(issue, meta).await?)
}
