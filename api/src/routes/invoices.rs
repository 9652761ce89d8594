//! Invoices and credit notes: invoice runs, tax rules, the documents as JSON, HTML and
//! PDF. The rules (who issues, numbering, tax, one invoice per account and period) are
//! the domain's; see docs/billing-cycle.md, "Invoices".

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use commands::{DocumentEntry, DocumentKind};
use domain::invoice::{Figures, TaxRule, Totals};
use domain::{AccountId, Amount, BookId, Currency, InvoiceId, Payload, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Scope};
use crate::body::Body;
use crate::error::ApiError;
use crate::invoicing::{self, RunScope};
use crate::openapi::{IdempotencyKey, ReadErrors, WriteErrors};
use crate::service::invoices::{DocumentFormat, document, document_file, invoice_not_found, visible_document};
use crate::state::AppState;
use crate::write::{Write, managed_account, respond_with_id, visible_account};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_run))
        .routes(routes!(configure_tax))
        .routes(routes!(list_account_invoices))
        .routes(routes!(show_invoice))
        .routes(routes!(invoice_pdf))
        .routes(routes!(invoice_html))
        .routes(routes!(create_credit_note))
}

fn now() -> Timestamp {
    Timestamp::from_micros(chrono::Utc::now().timestamp_micros())
}

/// The issuer a caller acts as: the operator's book, or a partner's own.
fn own_issuer(caller: &Caller) -> Result<BookId, ApiError> {
    match caller.scope {
        Scope::Admin => Ok(BookId::OPERATOR),
        Scope::Partner(partner) => Ok(BookId::of_partner(partner)),
        Scope::Customer(_) => Err(ApiError::forbidden("a customer's access is read only")),
    }
}

fn issuer_name(state: &AppState, book: BookId) -> String {
    if book == BookId::OPERATOR {
        return "operator".to_owned();
    }
    state.ledger.account_by_id(AccountId(book.0)).map_or_else(|| book.to_string(), |a| a.number)
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The billing period, a month that has ended: `YYYY-MM`.
    #[schema(example = "2026-11")]
    period: String,
    /// The operator only: invoice only this issuer's accounts, `operator` or a partner's
    /// number. Without it, the operator's run invoices every issuer's; a partner's run is
    /// always its own customers'.
    #[schema(example = "operator")]
    issuer: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RunFailure {
    account: String,
    message: String,
}

#[derive(Serialize, ToSchema)]
pub struct RunInvoice {
    id: String,
    number: String,
    account: String,
}

#[derive(Serialize, ToSchema)]
pub struct RunOut {
    #[schema(example = "ok")]
    status: &'static str,
    #[schema(example = "2026-11")]
    period: String,
    /// Invoices issued by this run.
    issued: usize,
    /// Accounts that already had their invoice for the period: nothing issued again.
    already_invoiced: usize,
    /// Accounts whose invoice could not be issued now; a new run tries them again.
    failed: Vec<RunFailure>,
    invoices: Vec<RunInvoice>,
}

/// Run the invoices of a billing period: every account of the issuer(s) with movement in
/// the month gets one invoice, numbered in its issuer's sequence. Repeating the run (or
/// rerunning one that was cut short) issues only what is missing.
#[utoipa::path(
    post,
    path = "/api/v1/invoice-runs",
    operation_id = "create_invoice_run",
    tag = "invoices",
    request_body = RunRequest,
    responses((status = 200, description = "The run's outcome", body = RunOut), WriteErrors)
)]
pub async fn create_run(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<RunRequest>,
) -> Result<Json<RunOut>, ApiError> {
    let own = own_issuer(&write.caller)?;
    let scope = match (write.caller.scope, request.issuer.as_deref()) {
        (Scope::Admin, None) => RunScope::All,
        (Scope::Admin, Some("operator")) => RunScope::Issuer(BookId::OPERATOR),
        (Scope::Admin, Some(number)) => {
            let partner =
                state.ledger.account(number).filter(|a| a.kind == domain::AccountKind::Partner).ok_or_else(|| {
                    ApiError::not_found("account_not_found", format!("partner `{number}` not found"))
                        .with_field("issuer")
                })?;
            RunScope::Issuer(BookId::of_partner(partner.id))
        }
        (_, None) => RunScope::Issuer(own),
        (_, Some(_)) => {
            return Err(ApiError::bad_request("invalid_field", "issuer", "issuer: a partner runs its own invoices"));
        }
    };
    let (from, to) = invoicing::ended_month(&request.period, now())?;
    let meta = write.meta(&request, Some(to))?;
    // The run is idempotent by its nature (one invoice per account and period), not by
    // a key: a key would pin the first run's answer, and a rerun must complete one cut short.
    let meta = domain::CommandMeta { idempotency: None, ..meta };
    let run = invoicing::run(&state.ledger, &state.models, scope, from, to, meta).await?;
    let number = |id: AccountId| state.ledger.account_by_id(id).map_or_else(|| id.to_string(), |a| a.number);
    Ok(Json(RunOut {
        status: "ok",
        period: domain::invoice::month_name(from),
        issued: run.issued,
        already_invoiced: run.already,
        failed: run.failed.into_iter().map(|(a, message)| RunFailure { account: number(a), message }).collect(),
        invoices: run
            .invoices
            .into_iter()
            .map(|(a, id, invoice)| RunInvoice { id: id.to_string(), number: invoice, account: number(a) })
            .collect(),
    }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxRequest {
    /// An account the caller invoices, for a rule of its own (a reverse charge at 0 %);
    /// without it, the caller's rule as an issuer.
    #[schema(example = "C-1001")]
    account: Option<String>,
    /// Percent, 0 to 100, at most 4 decimal places.
    #[schema(schema_with = crate::openapi::amount_in)]
    rate: Amount,
    #[schema(example = "VAT")]
    name: String,
    /// The tax id printed on the invoices.
    #[schema(example = "NL001234567B01")]
    tax_id: Option<String>,
}

/// Set the tax the caller's invoices charge: its own rule as an issuer, or one account's.
/// Invoices already issued keep the rule they were issued under.
#[utoipa::path(
    post,
    path = "/api/v1/tax-rules",
    operation_id = "configure_tax",
    tag = "invoices",
    params(IdempotencyKey),
    request_body = TaxRequest,
    responses((status = 200, description = "Set", body = crate::write::WriteBody), WriteErrors)
)]
pub async fn configure_tax(
    State(state): State<AppState>,
    write: Write,
    Body(request): Body<TaxRequest>,
) -> Result<Response, ApiError> {
    let own = own_issuer(&write.caller)?;
    let subject = match request.account.as_deref() {
        None => None,
        Some(number) => {
            let account = managed_account(&state.ledger, &write.caller, "account", number)?;
            let (issuer, subject) = state.ledger.invoice_subject(account.id, "")?;
            if issuer != own {
                return Err(ApiError::forbidden("another issuer invoices this account").with_field("account"));
            }
            Some(subject)
        }
    };
    let tax = TaxRule { rate: request.rate, name: request.name.clone(), tax_id: request.tax_id.clone() };
    let meta = write.meta(&request, None)?;
    let outcome = state.ledger.configure_tax(own, subject, Some(tax), meta).await?;
    Ok(respond_with_id(&state.ledger, StatusCode::OK, outcome, None, BTreeMap::new()))
}

#[derive(Serialize, ToSchema)]
pub struct DocumentOut {
    id: String,
    /// `invoice` or `credit_note`.
    #[schema(example = "invoice")]
    kind: &'static str,
    #[schema(example = "INV-000042")]
    number: String,
    /// `operator`, or the number of the partner that issued it.
    issuer: String,
    account: String,
    /// A credit note: the number of the invoice it corrects.
    invoice: Option<String>,
    #[schema(schema_with = crate::openapi::timestamp)]
    period_from: Timestamp,
    #[schema(schema_with = crate::openapi::timestamp)]
    period_to: Timestamp,
    #[schema(schema_with = crate::openapi::currency)]
    currency: Currency,
    /// The tax-inclusive total (a credit note's: the correction).
    #[schema(schema_with = crate::openapi::amount_out)]
    total: Amount,
    #[schema(schema_with = crate::openapi::timestamp)]
    issued_at: Timestamp,
    /// The global log position of the document's event.
    position: u64,
    #[schema(example = json!({"self": "/api/v1/invoices/INV-000042", "pdf": "/api/v1/invoices/INV-000042/invoice.pdf", "html": "/api/v1/invoices/INV-000042/invoice.html"}))]
    links: BTreeMap<&'static str, String>,
}

pub fn document_out(state: &AppState, entry: &DocumentEntry) -> DocumentOut {
    let catalog_number = |id: InvoiceId| state.ledger.invoice_catalog().get(id).map(|d| d.number.clone());
    let account = state.ledger.account_by_id(entry.account).map_or_else(|| entry.account.to_string(), |a| a.number);
    let base = format!("/api/v1/invoices/{}", entry.number);
    DocumentOut {
        id: entry.id.to_string(),
        kind: entry.kind.as_str(),
        number: entry.number.clone(),
        issuer: issuer_name(state, entry.issuer),
        invoice: entry.invoice.and_then(catalog_number),
        period_from: entry.period_from,
        period_to: entry.period_to,
        currency: entry.currency,
        total: entry.gross.canonical(entry.currency),
        issued_at: entry.issued_at,
        position: entry.position,
        links: [
            ("pdf", format!("{base}/invoice.pdf")),
            ("html", format!("{base}/invoice.html")),
            ("account", format!("/api/v1/accounts/{account}")),
            ("self", base),
        ]
        .into_iter()
        .collect(),
        account,
    }
}

#[derive(Serialize, ToSchema)]
pub struct DocumentList {
    #[schema(example = "ok")]
    status: &'static str,
    /// The account's invoices and credit notes, oldest first.
    invoices: Vec<DocumentOut>,
}

/// An account's invoices and credit notes.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{number}/invoices",
    operation_id = "list_account_invoices",
    tag = "invoices",
    params(("number" = String, Path, description = "The account number", example = "C-1001")),
    responses((status = 200, description = "The documents", body = DocumentList), ReadErrors)
)]
pub async fn list_account_invoices(
    State(state): State<AppState>,
    caller: Caller,
    Path(number): Path<String>,
) -> Result<Json<DocumentList>, ApiError> {
    let account = visible_account(&state.ledger, &caller, "number", &number)?;
    let entries: Vec<DocumentEntry> =
        state.ledger.invoice_catalog().of_account(account.id).into_iter().cloned().collect();
    Ok(Json(DocumentList { status: "ok", invoices: entries.iter().map(|e| document_out(&state, e)).collect() }))
}

#[derive(Serialize, ToSchema)]
pub struct FiguresOut {
    #[schema(schema_with = crate::openapi::amount_out)]
    opening_balance: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    payments: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    adjustments: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    call_charges: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    other_charges: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    total_charges: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    transfers_in: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    transfers_out: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    closing_balance: Amount,
}

fn figures_out(f: &Figures, currency: Currency) -> FiguresOut {
    let c = |a: Amount| a.canonical(currency);
    FiguresOut {
        opening_balance: c(f.opening_balance),
        payments: c(f.payments),
        adjustments: c(f.adjustments),
        call_charges: c(f.call_charges),
        other_charges: c(f.other_charges),
        total_charges: c(f.total_charges),
        transfers_in: c(f.transfers_in),
        transfers_out: c(f.transfers_out),
        closing_balance: c(f.closing_balance),
    }
}

#[derive(Serialize, ToSchema)]
pub struct TotalsOut {
    /// Tax-exclusive: the total charges rounded to the currency's minor unit.
    #[schema(schema_with = crate::openapi::amount_out)]
    net: Amount,
    #[schema(schema_with = crate::openapi::amount_out)]
    tax: Amount,
    /// Tax-inclusive.
    #[schema(schema_with = crate::openapi::amount_out)]
    gross: Amount,
}

fn totals_out(t: &Totals, currency: Currency) -> TotalsOut {
    TotalsOut { net: t.net.canonical(currency), tax: t.tax.canonical(currency), gross: t.gross.canonical(currency) }
}

#[derive(Serialize, ToSchema)]
pub struct TaxOut {
    /// Percent.
    #[schema(value_type = String, example = "21")]
    rate: String,
    name: String,
    tax_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentShow {
    #[schema(example = "ok")]
    status: &'static str,
    invoice: DocumentOut,
    /// The statement's figures (a credit note's: the corrections).
    figures: FiguresOut,
    totals: TotalsOut,
    tax: TaxOut,
    /// The position of the statement the figures come from: the statement `as_of` it
    /// gives them again.
    statement_position: u64,
    reason: Option<String>,
}

/// One invoice or credit note, by its id or number, with its figures.
#[utoipa::path(
    get,
    path = "/api/v1/invoices/{invoice}",
    operation_id = "show_invoice",
    tag = "invoices",
    params(("invoice" = String, Path, description = "The invoice's (or credit note's) number or id", example = "INV-000042")),
    responses((status = 200, description = "The document", body = DocumentShow), ReadErrors)
)]
pub async fn show_invoice(
    State(state): State<AppState>,
    caller: Caller,
    Path(text): Path<String>,
) -> Result<Json<DocumentShow>, ApiError> {
    let entry = visible_document(&state.ledger, &caller, &text)?;
    let (_, event) = state.ledger.document(entry.id).await?.ok_or_else(|| invoice_not_found(&text))?;
    let (figures, totals, tax, statement_position, reason) = match event.event.payload {
        Payload::InvoiceIssued(e) => (e.figures, e.totals, e.tax, e.statement_position, None),
        Payload::CreditNoteIssued(e) => {
            let loaded = document(&state.ledger, &entry).await?;
            (e.figures, e.totals, loaded.tax, e.statement_position, e.reason)
        }
        _ => return Err(invoice_not_found(&text)),
    };
    Ok(Json(DocumentShow {
        status: "ok",
        figures: figures_out(&figures, entry.currency),
        totals: totals_out(&totals, entry.currency),
        tax: TaxOut { rate: tax.rate.normalized().to_string(), name: tax.name, tax_id: tax.tax_id },
        statement_position,
        reason,
        invoice: document_out(&state, &entry),
    }))
}

/// An invoice or credit note as a PDF file.
#[utoipa::path(
    get,
    path = "/api/v1/invoices/{invoice}/invoice.pdf",
    operation_id = "invoice_pdf",
    tag = "invoices",
    params(("invoice" = String, Path, description = "The invoice's (or credit note's) number or id")),
    responses((status = 200, description = "The PDF", body = String, content_type = "application/pdf"), ReadErrors)
)]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    caller: Caller,
    Path(text): Path<String>,
) -> Result<Response, ApiError> {
    let file = document_file(&state.ledger, &caller, &text, DocumentFormat::Pdf).await?;
    Ok(file.into_response())
}

/// An invoice or credit note as an HTML page.
#[utoipa::path(
    get,
    path = "/api/v1/invoices/{invoice}/invoice.html",
    operation_id = "invoice_html",
    tag = "invoices",
    params(("invoice" = String, Path, description = "The invoice's (or credit note's) number or id")),
    responses((status = 200, description = "The page", body = String, content_type = "text/html"), ReadErrors)
)]
pub async fn invoice_html(
    State(state): State<AppState>,
    caller: Caller,
    Path(text): Path<String>,
) -> Result<Response, ApiError> {
    let file = document_file(&state.ledger, &caller, &text, DocumentFormat::Html).await?;
    Ok(file.into_response())
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditNoteRequest {
    /// Why the invoice is corrected, printed on the credit note.
    #[schema(example = "late CDRs")]
    reason: Option<String>,
}

/// Correct an invoice to its period's statement as it stands now: a credit note for the
/// difference (422 `invoice_unchanged` when there is none). Only the invoice's issuer.
#[utoipa::path(
    post,
    path = "/api/v1/invoices/{invoice}/credit-notes",
    operation_id = "create_credit_note",
    tag = "invoices",
    params(("invoice" = String, Path, description = "The invoice's number or id"), IdempotencyKey),
    request_body = CreditNoteRequest,
    responses((status = 201, description = "Issued", body = crate::write::WriteBody), WriteErrors)
)]
pub async fn create_credit_note(
    State(state): State<AppState>,
    write: Write,
    Path(text): Path<String>,
    Body(request): Body<CreditNoteRequest>,
) -> Result<Response, ApiError> {
    let own = own_issuer(&write.caller)?;
    let entry = visible_document(&state.ledger, &write.caller, &text)?;
    if entry.kind != DocumentKind::Invoice {
        return Err(ApiError::bad_request(
            "invalid_field",
            "invoice",
            "invoice: a credit note is not corrected; correct its invoice",
        ));
    }
    if entry.issuer != own {
        return Err(ApiError::forbidden("only the invoice's issuer may correct it").with_field("invoice"));
    }
    let meta = write.meta(&request, None)?;
    let outcome = invoicing::correct(&state.ledger, &state.models, &entry, request.reason.clone(), meta).await?;
    let number = outcome.events.iter().find_map(|e| match &e.event.payload {
        Payload::CreditNoteIssued(note) => Some(note.number.clone()),
        _ => None,
    });
    let links = number.iter().map(|n| ("credit_note", format!("/api/v1/invoices/{n}"))).collect();
    Ok(respond_with_id(&state.ledger, StatusCode::CREATED, outcome, number, links))
}
