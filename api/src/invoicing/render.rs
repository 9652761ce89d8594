//! An issued invoice or credit note as HTML and as PDF. Both are drawn from the event
//! alone (and, for a credit note, the invoice's event): what a document says never
//! depends on anything that can change after it was issued.
//!
//! The PDF is written with `pdf-writer` (the typst project's PDF writer: no browser, no
//! system library) in the standard Helvetica fonts every PDF reader has, so no font
//! file is embedded and the file stays a few kilobytes. Text outside Windows-1252 is
//! shown as `?` in the PDF (the HTML shows it as is).

use domain::event::{CreditNoteIssued, InvoiceIssued};
use domain::invoice::{Figures, TaxRule, Totals};
use domain::{Amount, Currency, Payload, RecordedEvent, Timestamp};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

/// What a document shows, from its event.
#[derive(Clone, Debug)]
pub struct Document {
    pub credit_note: bool,
    pub number: String,
    pub issued_at: Timestamp,
    pub issuer_name: String,
    pub tax: TaxRule,
    pub account_number: String,
    pub account_name: String,
    pub currency: Currency,
    pub period_from: Timestamp,
    pub period_to: Timestamp,
    /// A credit note: the number of the invoice it corrects, and why.
    pub corrects: Option<String>,
    pub reason: Option<String>,
    pub figures: Figures,
    pub totals: Totals,
}

impl Document {
    /// The document an event holds: an invoice's, or a credit note's with its invoice.
    pub fn from_events(event: &RecordedEvent, invoice: Option<&RecordedEvent>) -> Option<Document> {
        let issued_at = event.event.envelope.recorded_at;
        match (&event.event.payload, invoice.map(|i| &i.event.payload)) {
            (Payload::InvoiceIssued(e), _) => Some(Document::invoice(e, issued_at)),
            (Payload::CreditNoteIssued(note), Some(Payload::InvoiceIssued(invoice))) => {
                Some(Document::credit_note(note, invoice, issued_at))
            }
            _ => None,
        }
    }

    fn invoice(e: &InvoiceIssued, issued_at: Timestamp) -> Document {
        Document {
            credit_note: false,
            number: e.number.clone(),
            issued_at,
            issuer_name: e.issuer_name.clone(),
            tax: e.tax.clone(),
            account_number: e.account_number.clone(),
            account_name: e.account_name.clone(),
            currency: e.currency,
            period_from: e.period_from,
            period_to: e.period_to,
            corrects: None,
            reason: None,
            figures: e.figures,
            totals: e.totals,
        }
    }

    fn credit_note(note: &CreditNoteIssued, invoice: &InvoiceIssued, issued_at: Timestamp) -> Document {
        Document {
            credit_note: true,
            number: note.number.clone(),
            corrects: Some(invoice.number.clone()),
            reason: note.reason.clone(),
            figures: note.figures,
            totals: note.totals,
            ..Document::invoice(invoice, issued_at)
        }
    }

    fn title(&self) -> &'static str {
        if self.credit_note { "Credit note" } else { "Invoice" }
    }

    fn money(&self, amount: Amount) -> String {
        amount.canonical(self.currency).to_string()
    }

    fn rate(&self) -> String {
        format!("{} {}%", self.tax.name, self.tax.rate.normalized())
    }

    /// The lines of the summary: (label, amount, emphasised).
    fn lines(&self) -> Vec<(String, String, bool)> {
        let f = &self.figures;
        let t = &self.totals;
        let mut lines = vec![
            ("Opening balance".to_owned(), self.money(f.opening_balance), false),
            ("Payments".to_owned(), self.money(f.payments), false),
            ("Transfers in".to_owned(), self.money(f.transfers_in), false),
            ("Transfers out".to_owned(), self.money(f.transfers_out), false),
            ("Call charges".to_owned(), self.money(f.call_charges), false),
            ("Other charges".to_owned(), self.money(f.other_charges), false),
            ("Adjustments".to_owned(), self.money(f.adjustments), false),
            ("Total charges".to_owned(), self.money(f.total_charges), false),
            ("Closing balance".to_owned(), self.money(f.closing_balance), false),
        ];
        lines.push(("Total excluding tax".to_owned(), self.money(t.net), true));
        lines.push((self.rate(), self.money(t.tax), false));
        lines.push(("Total including tax".to_owned(), self.money(t.gross), true));
        lines
    }

    fn headings(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("Number", self.number.clone()),
            ("Issued", self.issued_at.to_rfc3339().get(..10).unwrap_or_default().to_owned()),
            ("Issuer", self.issuer_name.clone()),
            ("Tax id", self.tax.tax_id.clone().unwrap_or_else(|| "-".to_owned())),
            ("Account", format!("{} ({})", self.account_name, self.account_number)),
            ("Period", format!("{} to {} (exclusive)", day(self.period_from), day(self.period_to))),
            ("Currency", self.currency.to_string()),
        ];
        if let Some(invoice) = &self.corrects {
            rows.push(("Corrects invoice", invoice.clone()));
        }
        if let Some(reason) = &self.reason {
            rows.push(("Reason", reason.clone()));
        }
        rows
    }
}

fn day(at: Timestamp) -> String {
    at.to_rfc3339().get(..10).unwrap_or_default().to_owned()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The document as one HTML page with its own style, fit to print.
pub fn html(document: &Document) -> String {
    let title = format!("{} {}", document.title(), document.number);
    let mut page = String::with_capacity(4096);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    page.push_str(&format!("<title>{}</title>", escape(&title)));
    page.push_str(
        "<style>body{font-family:Helvetica,Arial,sans-serif;max-width:44em;margin:2em auto;color:#222}\
         table{border-collapse:collapse;width:100%}td,th{padding:.3em .5em;text-align:left}\
         td.amount{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:bold;\
         border-top:1px solid #888}</style></head><body>",
    );
    page.push_str(&format!("<h1>{}</h1>\n<table class=\"heading\">", escape(&title)));
    for (name, value) in document.headings() {
        page.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&value)));
    }
    page.push_str("</table>\n<h2>Summary</h2>\n<table class=\"lines\">");
    for (label, amount, total) in document.lines() {
        let class = if total { " class=\"total\"" } else { "" };
        page.push_str(&format!(
            "<tr{class}><td>{}</td><td class=\"amount\">{}</td></tr>",
            escape(&label),
            escape(&amount)
        ));
    }
    page.push_str("</table>\n");
    if document.credit_note {
        page.push_str("<p>Each amount is the correction to the invoice; the invoice and its credit notes add up to the corrected figures.</p>\n");
    }
    page.push_str("</body></html>\n");
    page
}

/// Windows-1252 bytes of `text` for the standard fonts; anything else is `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            '€' => 0x80,
            '–' => 0x96,
            '—' => 0x97,
            _ => b'?',
        })
        .collect()
}

/// The width of an amount in Helvetica, in thousandths of the font size: digits are
/// 556, the point and comma 278, the minus 333.
fn amount_width(text: &str) -> f32 {
    text.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                556.0
            } else if c == '-' {
                333.0
            } else {
                278.0
            }
        })
        .sum()
}

const PAGE_WIDTH_PT: f32 = 595.0;
const PAGE_HEIGHT_PT: f32 = 842.0;
const MARGIN_PT: f32 = 56.0;

/// The document as a one-page A4 PDF.
pub fn pdf(document: &Document) -> Vec<u8> {
    let catalog_id = Ref::new(1);
    let pages_id = Ref::new(2);
    let page_id = Ref::new(3);
    let regular_id = Ref::new(4);
    let bold_id = Ref::new(5);
    let content_id = Ref::new(6);
    let info_id = Ref::new(7);
    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(pages_id);
    pdf.pages(pages_id).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH_PT, PAGE_HEIGHT_PT));
    page.parent(pages_id);
    page.contents(content_id);
    page.resources().fonts().pair(Name(b"F1"), regular_id).pair(Name(b"F2"), bold_id);
    page.finish();
    pdf.type1_font(regular_id).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold_id).base_font(Name(b"Helvetica-Bold")).encoding_predefined(Name(b"WinAnsiEncoding"));
    let title = format!("{} {}", document.title(), document.number);
    pdf.document_info(info_id).title(TextStr(&title)).producer(TextStr("tollbook"));

    let mut content = Content::new();
    let mut y = PAGE_HEIGHT_PT - MARGIN_PT;
    let text = |content: &mut Content, font: &[u8], size: f32, x: f32, y: f32, value: &str| {
        content.begin_text();
        content.set_font(Name(font), size);
        content.next_line(x, y);
        content.show(Str(&win_ansi(value)));
        content.end_text();
    };
    text(&mut content, b"F2", 20.0, MARGIN_PT, y, &title);
    y -= 36.0;
    for (name, value) in document.headings() {
        text(&mut content, b"F2", 10.0, MARGIN_PT, y, name);
        text(&mut content, b"F1", 10.0, MARGIN_PT + 110.0, y, &value);
        y -= 15.0;
    }
    y -= 16.0;
    text(&mut content, b"F2", 13.0, MARGIN_PT, y, "Summary");
    y -= 20.0;
    let right = PAGE_WIDTH_PT - MARGIN_PT;
    for (label, amount, total) in document.lines() {
        let font: &[u8] = if total { b"F2" } else { b"F1" };
        if total {
            content.set_line_width(0.5);
            content.move_to(MARGIN_PT, y + 12.0);
            content.line_to(right, y + 12.0);
            content.stroke();
        }
        text(&mut content, font, 10.0, MARGIN_PT, y, &label);
        text(&mut content, font, 10.0, right - amount_width(&amount) * 10.0 / 1000.0, y, &amount);
        y -= 17.0;
    }
    if document.credit_note {
        y -= 10.0;
        text(
            &mut content,
            b"F1",
            9.0,
            MARGIN_PT,
            y,
            "Each amount is the correction to the invoice; the invoice and its credit notes add up to the corrected figures.",
        );
    }
    pdf.stream(content_id, &content.finish());
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Document {
        let amount = |text: &str| text.parse::<Amount>().unwrap();
        Document {
            credit_note: false,
            number: "INV-000001".into(),
            issued_at: Timestamp::parse("2026-12-01").unwrap(),
            issuer_name: "Operator & Co <b>".into(),
            tax: TaxRule { rate: "21".parse().unwrap(), name: "VAT".into(), tax_id: Some("NL123".into()) },
            account_number: "C-1".into(),
            account_name: "Zoë".into(),
            currency: Currency::parse("EUR").unwrap(),
            period_from: Timestamp::parse("2026-11-01").unwrap(),
            period_to: Timestamp::parse("2026-12-01").unwrap(),
            corrects: None,
            reason: None,
            figures: Figures { call_charges: amount("10"), total_charges: amount("10"), ..Figures::default() },
            totals: Totals { net: amount("10"), tax: amount("2.1"), gross: amount("12.1") },
        }
    }

    #[test]
    fn html_escapes_and_shows_the_totals() {
        let page = html(&document());
        assert!(page.contains("Operator &amp; Co &lt;b&gt;"));
        assert!(page.contains("12.10"));
        assert!(page.contains("VAT 21%"));
    }

    #[test]
    fn pdf_is_a_pdf() {
        let bytes = pdf(&document());
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(bytes.ends_with(b"%%EOF\n") || bytes.ends_with(b"%%EOF"));
        assert_eq!(win_ansi("Zoë €"), vec![b'Z', b'o', 0xeb, b' ', 0x80]);
    }
}
