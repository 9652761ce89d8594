//! Invoices and credit notes as the caller may see them, and as files: the JSON API's
//! `/api/v1/invoices/{invoice}/invoice.pdf|html` and the portal's downloads are one path.

use commands::{DocumentEntry, Ledger};
use domain::InvoiceId;

use super::Download;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::invoicing::render::{self, Document};

pub fn invoice_not_found(text: &str) -> ApiError {
    ApiError::not_found("invoice_not_found", format!("invoice `{text}` not found")).with_field("invoice")
}

/// The document `text` names (its id or its number), if the caller may see its account:
/// another tenant's answers like a missing one.
pub fn visible_document(ledger: &Ledger, caller: &Caller, text: &str) -> Result<DocumentEntry, ApiError> {
    let catalog = ledger.invoice_catalog();
    let entry = InvoiceId::parse(text).and_then(|id| catalog.get(id)).or_else(|| catalog.by_number(text)).cloned();
    drop(catalog);
    let seen = |entry: &DocumentEntry| ledger.account_by_id(entry.account).is_some_and(|a| caller.sees(&a));
    entry.filter(seen).ok_or_else(|| invoice_not_found(text))
}

/// Loads a document's events: its own and, for a credit note, its invoice's.
pub async fn document(ledger: &Ledger, entry: &DocumentEntry) -> Result<Document, ApiError> {
    let missing = || ApiError::internal_message(format!("the event of document {} is not in the log", entry.number));
    let (_, event) = ledger.document(entry.id).await?.ok_or_else(missing)?;
    let invoice = match entry.invoice {
        Some(invoice) => Some(ledger.document(invoice).await?.ok_or_else(missing)?.1),
        None => None,
    };
    Document::from_events(&event, invoice.as_ref()).ok_or_else(missing)
}

/// The forms a document is rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentFormat {
    /// A file to save and send on.
    Pdf,
    /// A page to read in the browser.
    Html,
}

/// The document `text` names, rendered, if the caller may see its account.
pub async fn document_file(
    ledger: &Ledger,
    caller: &Caller,
    text: &str,
    format: DocumentFormat,
) -> Result<Download, ApiError> {
    let entry = visible_document(ledger, caller, text)?;
    let document = document(ledger, &entry).await?;
    Ok(match format {
        DocumentFormat::Pdf => {
            Download::attachment("application/pdf", format!("{}.pdf", entry.number), render::pdf(&document))
        }
        DocumentFormat::Html => Download::inline("text/html; charset=utf-8", render::html(&document)),
    })
}
