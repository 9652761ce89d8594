//! Invoices on the write side: issuing them in bulk through the issuers' book writers,
//! and the ledger-wide catalog that finds an issued document by id, number or account.
//!
//! An invoice's number is taken by its issuer's book writer when it decides the
//! invoice, and recorded in the same atomic append as the invoice: a crash either keeps
//! both or neither, so numbers have no gap and none is used twice. The writer answers a
//! second invoice for an account and period as a repeat of the first, so an invoice run
//! that is repeated, or rerun after a crash, issues each invoice once.
//!
//! The figures come from the read models (the statement of the period), which this
//! crate does not know: the caller (the API, the CLI) reads them and hands over the
//! drafts.

use std::collections::HashMap;

use domain::invoice::InvoiceDraft;
use domain::{
    AccountId, Amount, BookId, Command, CommandMeta, Currency, InvoiceId, InvoiceSubject, IssueCreditNote,
    IssueInvoice, Payload, RecordedEvent, Timestamp,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::error::CommandError;
use crate::ledger::{AccountRef, Ledger};
use crate::writer::{BULK_COMMANDS_MAX, CommandOutcome};

/// Invoices one run issues at most: a run for more is refused rather than queueing
/// without bound (the standard data set's 10,000 accounts fit many times over).
pub const INVOICES_PER_RUN_MAX: usize = 200_000;

/// An invoice or a credit note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DocumentKind {
    Invoice,
    CreditNote,
}

impl DocumentKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DocumentKind::Invoice => "invoice",
            DocumentKind::CreditNote => "credit_note",
        }
    }
}

/// An issued document as the catalog lists it; the document itself is its event,
/// read back from the log at `position`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocumentEntry {
    pub id: InvoiceId,
    pub kind: DocumentKind,
    pub number: String,
    /// The issuing book.
    pub issuer: BookId,
    pub account: AccountId,
    /// For a credit note, the invoice it corrects.
    pub invoice: Option<InvoiceId>,
    pub period_from: Timestamp,
    pub period_to: Timestamp,
    pub currency: Currency,
    /// Tax-inclusive total (a credit note's is the correction).
    pub gross: Amount,
    pub issued_at: Timestamp,
    pub position: u64,
}

/// Every issued invoice and credit note, ledger-wide.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct InvoiceCatalog {
    documents: HashMap<InvoiceId, DocumentEntry>,
    by_number: HashMap<String, InvoiceId>,
    /// Per account, its documents in the order they were issued.
    by_account: HashMap<AccountId, Vec<InvoiceId>>,
}

impl InvoiceCatalog {
    pub(crate) fn apply<'a>(&mut self, events: impl IntoIterator<Item = &'a RecordedEvent>) {
        for recorded in events {
            let envelope = &recorded.event.envelope;
            let entry = match &recorded.event.payload {
                Payload::InvoiceIssued(e) => DocumentEntry {
                    id: e.invoice,
                    kind: DocumentKind::Invoice,
                    number: e.number.clone(),
                    issuer: envelope.book,
                    account: e.account,
                    invoice: None,
                    period_from: e.period_from,
                    period_to: e.period_to,
                    currency: e.currency,
                    gross: e.totals.gross,
                    issued_at: envelope.recorded_at,
                    position: recorded.position,
                },
                Payload::CreditNoteIssued(e) => {
                    let Some(invoice) = self.documents.get(&e.invoice) else { continue };
                    DocumentEntry {
                        id: e.credit_note,
                        kind: DocumentKind::CreditNote,
                        number: e.number.clone(),
                        issuer: envelope.book,
                        account: e.account,
                        invoice: Some(e.invoice),
                        period_from: invoice.period_from,
                        period_to: invoice.period_to,
                        currency: e.currency,
                        gross: e.totals.gross,
                        issued_at: envelope.recorded_at,
                        position: recorded.position,
                    }
                }
                _ => continue,
            };
            if self.documents.contains_key(&entry.id) {
                continue;
            }
            self.by_number.insert(entry.number.clone(), entry.id);
            self.by_account.entry(entry.account).or_default().push(entry.id);
            self.documents.insert(entry.id, entry);
        }
    }

    pub(crate) fn concerns(event: &domain::Event) -> bool {
        matches!(event.payload, Payload::InvoiceIssued(_) | Payload::CreditNoteIssued(_))
    }

    pub fn get(&self, id: InvoiceId) -> Option<&DocumentEntry> {
        self.documents.get(&id)
    }

    pub fn by_number(&self, number: &str) -> Option<&DocumentEntry> {
        self.by_number.get(number).and_then(|id| self.documents.get(id))
    }

    /// An account's documents, oldest first.
    pub fn of_account(&self, account: AccountId) -> Vec<&DocumentEntry> {
        self.by_account
            .get(&account)
            .map_or_else(Vec::new, |ids| ids.iter().filter_map(|id| self.documents.get(id)).collect())
    }

    /// Every document, oldest first.
    pub fn all(&self) -> Vec<&DocumentEntry> {
        let mut all: Vec<&DocumentEntry> = self.documents.values().collect();
        all.sort_unstable_by_key(|d| d.position);
        all
    }
}

/// What an invoice run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvoiceRun {
    /// Invoices issued now.
    pub issued: usize,
    /// Accounts already invoiced for the period: nothing issued.
    pub already: usize,
    /// Drafts refused or not decided (a closed writer, a storage failure), with why.
    pub failed: Vec<(AccountId, String)>,
    /// The invoices issued now, by account.
    pub invoices: Vec<(AccountId, InvoiceId, String)>,
}

/// The book that issues `account`'s invoices.
pub fn issuer_of(account: &AccountRef) -> BookId {
    domain::invoice::issuer_of(account.kind, account.book)
}

impl Ledger {
    /// The issued invoices and credit notes, as far as the writers have committed.
    pub fn invoice_catalog(&self) -> std::sync::RwLockReadGuard<'_, InvoiceCatalog> {
        self.invoices.read().expect("invoices lock")
    }

    /// An account as an invoice names it, with the book that issues its invoices.
    pub fn invoice_subject(&self, account: AccountId, name: &str) -> Result<(BookId, InvoiceSubject), CommandError> {
        let found = self.account_by_id(account).ok_or(domain::DomainError::AccountNotFound(account))?;
        let subject = InvoiceSubject {
            account,
            number: found.number.clone(),
            name: name.to_owned(),
            kind: found.kind,
            currency: found.currency,
        };
        Ok((issuer_of(&found), subject))
    }

    /// Sets an issuer's tax rule, or an account's (in the book that issues its invoices).
    pub async fn configure_tax(
        &self,
        issuer: BookId,
        subject: Option<InvoiceSubject>,
        tax: Option<domain::invoice::TaxRule>,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        self.execute_in(issuer, Command::ConfigureTax { account: subject, tax }, meta).await
    }

    /// Issues `drafts` through their issuers' writers, all books at once, each book's in
    /// the order given. An account already invoiced for the period is counted, not
    /// invoiced again.
    pub async fn issue_invoices(
        &self,
        drafts: Vec<InvoiceDraft>,
        meta: CommandMeta,
    ) -> Result<InvoiceRun, CommandError> {
        if drafts.len() > INVOICES_PER_RUN_MAX {
            return Err(domain::DomainError::InvalidField {
                field: "period",
                reason: format!("a run issues at most {INVOICES_PER_RUN_MAX} invoices"),
            }
            .into());
        }
        let mut by_book: HashMap<BookId, Vec<IssueInvoice>> = HashMap::new();
        for draft in drafts {
            by_book.entry(draft.issuer).or_default().push(draft.issue);
        }
        let mut run = InvoiceRun::default();
        let mut answers = FuturesUnordered::new();
        for (book, issues) in by_book {
            let handle = self.writer(book).await?;
            let mut issues = issues.into_iter().peekable();
            while issues.peek().is_some() {
                let chunk: Vec<IssueInvoice> = issues.by_ref().take(BULK_COMMANDS_MAX).collect();
                let accounts: Vec<AccountId> = chunk.iter().map(|i| i.subject.account).collect();
                let items = chunk.into_iter().map(|i| (Command::IssueInvoice(Box::new(i)), meta.clone())).collect();
                let answer = handle.submit_many(items);
                answers.push(async move { (accounts, answer.await) });
            }
        }
        while let Some((accounts, outcomes)) = answers.next().await {
            for (account, outcome) in accounts.into_iter().zip(outcomes) {
                match outcome {
                    Ok(outcome) if outcome.repeated => run.already += 1,
                    Ok(outcome) => {
                        run.issued += 1;
                        if let Some(Payload::InvoiceIssued(e)) = outcome.events.first().map(|e| &e.event.payload) {
                            run.invoices.push((account, e.invoice, e.number.clone()));
                        }
                    }
                    Err(error) => run.failed.push((account, error.to_string())),
                }
            }
        }
        Ok(run)
    }

    /// Issues a credit note in the book that issued the invoice.
    pub async fn issue_credit_note(
        &self,
        issue: IssueCreditNote,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        let issuer = self
            .invoice_catalog()
            .get(issue.invoice)
            .filter(|d| d.kind == DocumentKind::Invoice)
            .map(|d| d.issuer)
            .ok_or(domain::DomainError::InvoiceNotFound(issue.invoice))?;
        self.execute_in(issuer, Command::IssueCreditNote(Box::new(issue)), meta).await
    }

    /// The event of an issued document, read back from the log.
    pub async fn document(&self, id: InvoiceId) -> Result<Option<(DocumentEntry, RecordedEvent)>, CommandError> {
        let Some(entry) = self.invoice_catalog().get(id).cloned() else { return Ok(None) };
        let found = self.store().read_all(entry.position, 1).await?;
        Ok(found.into_iter().find(|e| e.position == entry.position).map(|event| (entry, event)))
    }
}
