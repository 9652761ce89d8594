//! One invoice rendered as PDF (and as HTML), the target being under 50 ms a PDF, with
//! the renderer of the `tollbook` library.

use criterion::{Criterion, criterion_group, criterion_main};
use domain::invoice::{Figures, TaxRule, Totals};
use domain::{Amount, Currency, Timestamp};

use tollbook::invoicing::render;

fn document() -> render::Document {
    let amount = |text: &str| text.parse::<Amount>().unwrap();
    render::Document {
        credit_note: false,
        number: "P-1-INV-004211".into(),
        issued_at: Timestamp::parse("2026-12-01").unwrap(),
        issuer_name: "Reseller One".into(),
        tax: TaxRule { rate: "21".parse().unwrap(), name: "VAT".into(), tax_id: Some("NL001234567B01".into()) },
        account_number: "C-1001".into(),
        account_name: "Customer 1001".into(),
        currency: Currency::parse("EUR").unwrap(),
        period_from: Timestamp::parse("2026-11-01").unwrap(),
        period_to: Timestamp::parse("2026-12-01").unwrap(),
        corrects: None,
        reason: None,
        figures: Figures {
            opening_balance: amount("120.5"),
            payments: amount("50"),
            call_charges: amount("31.12345"),
            other_charges: amount("12"),
            total_charges: amount("43.12345"),
            closing_balance: amount("127.37655"),
            ..Figures::default()
        },
        totals: Totals { net: amount("43.12"), tax: amount("9.06"), gross: amount("52.18") },
    }
}

fn bench(c: &mut Criterion) {
    let document = document();
    c.bench_function("invoice_pdf", |b| b.iter(|| render::pdf(std::hint::black_box(&document))));
    c.bench_function("invoice_html", |b| b.iter(|| render::html(std::hint::black_box(&document))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
