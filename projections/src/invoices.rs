//! The drafts of an invoice run: which accounts an issuer invoices for a period, each
//! with its statement for the period, read from one snapshot of the models. The
//! statement is the one `/api/v1/accounts/{number}/statement` answers with, so an
//! invoice's figures are its period's statement by construction. The issuers' books
//! number and record them (`commands`).

use domain::invoice::{self, Figures, InvoiceDraft};
use domain::{BookId, InvoiceId, InvoiceSubject, IssueInvoice, Timestamp};

use crate::error::ProjectionError;
use crate::models::{AccountFilter, PAGE_SIZE_MAX, Snapshot, Statement};

/// The figures of a statement.
pub fn figures_of(statement: &Statement) -> Figures {
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

impl Snapshot {
    /// One draft per account that `issuer` invoices (every issuer's when none) with
    /// movement in `[from, to)`, in account order. (Not by the account's opening date:
    /// entries may be dated before it.)
    pub async fn invoice_drafts(
        &self,
        issuer: Option<BookId>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<InvoiceDraft>, ProjectionError> {
        // A partner's customers are in its book; the operator's customers are in its
        // book and its partners each in their own, so the operator's run walks them all.
        let filter = match issuer {
            Some(book) if book != BookId::OPERATOR => AccountFilter { book: Some(book), ..AccountFilter::default() },
            _ => AccountFilter::default(),
        };
        let mut drafts = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.accounts(&filter, cursor.as_deref(), PAGE_SIZE_MAX)?;
            for view in &page.items {
                let account_issuer = invoice::issuer_of(view.kind, view.book);
                if issuer.is_some_and(|book| book != account_issuer) {
                    continue;
                }
                let statement = self.statement(view.id, from, to, None).await?;
                let figures = figures_of(&statement);
                if !figures.has_movement() {
                    continue;
                }
                let subject = InvoiceSubject {
                    account: view.id,
                    number: view.number.clone(),
                    name: view.name.clone(),
                    kind: view.kind,
                    currency: view.currency,
                };
                drafts.push(InvoiceDraft {
                    issuer: account_issuer,
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
                None => return Ok(drafts),
            }
        }
    }
}
