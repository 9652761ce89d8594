//! Invoices and credit notes: the figures of an account's statement for a billing
//! period, frozen in an event, with tax. Pure: the read side computes the statement, the
//! issuer's book numbers and records it (see docs/billing-cycle.md, "Invoices").
//!
//! **One rounding rule.** The statement's figures are kept exactly as the statement
//! gives them (a call may cost fractions of a cent). The invoice's three totals are
//! money a customer pays, so each is in the currency's minor unit: the tax-exclusive
//! total is the period's total charges rounded once to the minor unit; the tax is that
//! rounded total times the rate, rounded once to the minor unit; the tax-inclusive total
//! is their sum. Both roundings are half away from zero (0.005 EUR is 0.01), the rule of
//! the recurring fees. Tax is computed on the invoice total, never per line.
//!
//! **Credit notes** hold the difference between the corrected figures and those the
//! invoice stands at (the invoice plus its earlier credit notes), figure by figure and
//! total by total, so an invoice and its credit notes always add up to the corrected
//! figures: the corrected totals are computed whole by the same rule, and the credit
//! note's totals are the difference, not a rounding of the difference.

use chrono::{Datelike, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AccountId, validate_text};
use crate::money::{Amount, Currency};
use crate::time::Timestamp;

/// Decimal places a tax rate (a percentage) may have: 12.3456 %.
pub const TAX_RATE_SCALE_MAX: u32 = 4;
/// The longest tax name and tax id.
pub const TAX_TEXT_LENGTH_MAX: usize = 64;

/// The tax an issuer charges: a rate in percent, the tax's name (`VAT`, `GST`) and the
/// tax id printed on the invoice. An account may have its own (a reverse charge at 0 %).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaxRule {
    /// Percent: 21 is 21 %. An [`Amount`] for its exact encoding in the log (a bare
    /// `Decimal` serializes as text that the binary codec cannot read back).
    pub rate: Amount,
    pub name: String,
    pub tax_id: Option<String>,
}

impl TaxRule {
    /// What an issuer that set nothing charges: no tax.
    pub fn none() -> Self {
        TaxRule { rate: Amount::ZERO, name: "Tax".into(), tax_id: None }
    }

    /// The rule as recorded: a rate from 0 to 100 % with at most
    /// [`TAX_RATE_SCALE_MAX`] places, a name that is not empty.
    pub fn validated(self) -> Result<Self, DomainError> {
        if self.rate.0 < Decimal::ZERO || self.rate.0 > Decimal::ONE_HUNDRED {
            return Err(DomainError::InvalidField {
                field: "tax_rate",
                reason: "must be from 0 to 100 (percent)".into(),
            });
        }
        if self.rate.0.scale() > TAX_RATE_SCALE_MAX {
            return Err(DomainError::InvalidField {
                field: "tax_rate",
                reason: format!("at most {TAX_RATE_SCALE_MAX} decimal places"),
            });
        }
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > TAX_TEXT_LENGTH_MAX {
            return Err(DomainError::InvalidField {
                field: "tax_name",
                reason: format!("1 to {TAX_TEXT_LENGTH_MAX} characters"),
            });
        }
        validate_text("tax_name", &name)?;
        let tax_id = match self.tax_id.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
            Some(id) if id.chars().count() > TAX_TEXT_LENGTH_MAX => {
                return Err(DomainError::InvalidField {
                    field: "tax_id",
                    reason: format!("at most {TAX_TEXT_LENGTH_MAX} characters"),
                });
            }
            Some(id) => {
                validate_text("tax_id", &id)?;
                Some(id)
            }
            None => None,
        };
        Ok(TaxRule { rate: self.rate.normalized(), name, tax_id })
    }
}

/// An account's statement for the invoice's period, as the read models gave it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Figures {
    pub opening_balance: Amount,
    pub payments: Amount,
    pub adjustments: Amount,
    pub call_charges: Amount,
    pub other_charges: Amount,
    pub total_charges: Amount,
    pub transfers_in: Amount,
    pub transfers_out: Amount,
    pub closing_balance: Amount,
}

impl Figures {
    fn zip(&self, other: &Figures, op: impl Fn(Amount, Amount) -> Amount) -> Figures {
        Figures {
            opening_balance: op(self.opening_balance, other.opening_balance),
            payments: op(self.payments, other.payments),
            adjustments: op(self.adjustments, other.adjustments),
            call_charges: op(self.call_charges, other.call_charges),
            other_charges: op(self.other_charges, other.other_charges),
            total_charges: op(self.total_charges, other.total_charges),
            transfers_in: op(self.transfers_in, other.transfers_in),
            transfers_out: op(self.transfers_out, other.transfers_out),
            closing_balance: op(self.closing_balance, other.closing_balance),
        }
    }

    pub fn plus(&self, other: &Figures) -> Figures {
        self.zip(other, |a, b| (a + b).normalized())
    }

    pub fn minus(&self, other: &Figures) -> Figures {
        self.zip(other, |a, b| (a - b).normalized())
    }

    pub fn normalized(&self) -> Figures {
        self.zip(self, |a, _| a.normalized())
    }

    pub fn is_zero(&self) -> bool {
        self.amounts().iter().all(Amount::is_zero)
    }

    fn amounts(&self) -> [Amount; 9] {
        [
            self.opening_balance,
            self.payments,
            self.adjustments,
            self.call_charges,
            self.other_charges,
            self.total_charges,
            self.transfers_in,
            self.transfers_out,
            self.closing_balance,
        ]
    }

    /// Whether anything happened to the account in the period (its opening balance
    /// aside): an account without movement gets no invoice.
    pub fn has_movement(&self) -> bool {
        [self.payments, self.adjustments, self.call_charges, self.other_charges, self.transfers_in, self.transfers_out]
            .iter()
            .any(|a| !a.is_zero())
    }

    /// The statement's identities, checked where figures enter the ledger: figures that
    /// do not add up were not a statement.
    pub fn check(&self) -> Result<(), DomainError> {
        let total = self.call_charges + self.other_charges + self.adjustments;
        let closing =
            self.opening_balance + self.payments + self.transfers_in - self.transfers_out - self.total_charges;
        if total != self.total_charges || closing != self.closing_balance {
            return Err(DomainError::InvalidField {
                field: "figures",
                reason: "total_charges or closing_balance does not add up".into(),
            });
        }
        Ok(())
    }
}

/// What an invoice asks to be paid: tax-exclusive, the tax, tax-inclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Totals {
    pub net: Amount,
    pub tax: Amount,
    pub gross: Amount,
}

impl Totals {
    pub fn plus(&self, other: &Totals) -> Totals {
        Totals {
            net: (self.net + other.net).normalized(),
            tax: (self.tax + other.tax).normalized(),
            gross: (self.gross + other.gross).normalized(),
        }
    }

    pub fn minus(&self, other: &Totals) -> Totals {
        Totals {
            net: (self.net - other.net).normalized(),
            tax: (self.tax - other.tax).normalized(),
            gross: (self.gross - other.gross).normalized(),
        }
    }
}

/// The totals of `figures` under `tax`, by the one rounding rule (see the module).
pub fn totals(figures: &Figures, tax: &TaxRule, currency: Currency) -> Totals {
    let places = currency.minor_unit_places();
    let round = |value: Decimal| value.round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero);
    let net = round(figures.total_charges.0);
    let tax = round(net * tax.rate.0 / Decimal::ONE_HUNDRED);
    Totals { net: Amount(net).normalized(), tax: Amount(tax).normalized(), gross: Amount(net + tax).normalized() }
}

/// An invoice as its issuer's book remembers it: enough to refuse a second invoice for
/// the same account and period, and to compute a credit note against where the invoice
/// stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    pub number: String,
    /// The version of the `InvoiceIssued` event in the issuer's book.
    pub version: u64,
    pub account: AccountId,
    pub account_number: String,
    pub account_name: String,
    pub currency: Currency,
    pub period_from: Timestamp,
    pub period_to: Timestamp,
    pub tax: TaxRule,
    /// The invoice's figures plus those of its credit notes so far.
    pub figures: Figures,
    pub totals: Totals,
}

/// What a book remembers of the invoices it issued: the last number of each sequence,
/// its tax rules, and its invoices by (account, period start).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoicing {
    /// The last invoice number issued (the next is one more): numbers run from 1 with no
    /// gap because each is taken in the same atomic append as its invoice.
    pub invoices_issued: u64,
    pub credit_notes_issued: u64,
    /// The issuer's own tax rule, if it set one.
    pub tax: Option<TaxRule>,
    /// Accounts with a rule of their own.
    pub tax_of: std::collections::HashMap<AccountId, TaxRule>,
    pub by_period: std::collections::HashMap<(AccountId, Timestamp), crate::ids::InvoiceId>,
    pub invoices: std::collections::HashMap<crate::ids::InvoiceId, InvoiceRecord>,
}

impl Invoicing {
    /// The rule an invoice of `account` is issued under.
    pub fn tax_for(&self, account: AccountId) -> TaxRule {
        self.tax_of.get(&account).or(self.tax.as_ref()).cloned().unwrap_or_else(TaxRule::none)
    }
}

/// The book that issues an account's invoices: a customer's own book (the operator's,
/// or its partner's); the operator's for a partner (whose account opens its own book).
pub fn issuer_of(kind: crate::account::AccountKind, book: crate::ids::BookId) -> crate::ids::BookId {
    match kind {
        crate::account::AccountKind::Partner => crate::ids::BookId::OPERATOR,
        crate::account::AccountKind::Customer => book,
    }
}

/// One account's invoice for a period, ready for its issuer's book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceDraft {
    pub issuer: crate::ids::BookId,
    pub issue: crate::command::IssueInvoice,
}

/// The billing period `YYYY-MM`: `[first of the month, first of the next)`, in UTC.
pub fn month(text: &str) -> Result<(Timestamp, Timestamp), DomainError> {
    let bad = || DomainError::InvalidField { field: "period", reason: "expected a month as YYYY-MM".into() };
    let (year, month) = text.trim().split_once('-').ok_or_else(bad)?;
    if year.len() != 4 || month.len() != 2 {
        return Err(bad());
    }
    let year: i32 = year.parse().map_err(|_| bad())?;
    let month: u32 = month.parse().map_err(|_| bad())?;
    let first = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    }
    .ok_or_else(bad)?;
    let at = |date: NaiveDate| {
        Timestamp::from_micros(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_micros())
    };
    Ok((at(first), at(next)))
}

/// `YYYY-MM` of a period's start.
pub fn month_name(from: Timestamp) -> String {
    from.to_rfc3339().get(..7).unwrap_or_default().to_owned()
}

/// The number printed on an invoice (`INV`) or a credit note (`CN`): the operator's
/// are `INV-000042`; a partner's carry its account number first, `P-1-INV-000042`, so
/// that a number names one document ledger-wide.
pub fn document_number(issuer: Option<&str>, kind: &str, sequence: u64) -> String {
    match issuer {
        Some(prefix) => format!("{prefix}-{kind}-{sequence:06}"),
        None => format!("{kind}-{sequence:06}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(text: &str) -> Amount {
        text.parse().unwrap()
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn charges(total: &str) -> Figures {
        Figures {
            call_charges: amount(total),
            total_charges: amount(total),
            closing_balance: -amount(total),
            ..Figures::default()
        }
    }

    fn rule(rate: &str) -> TaxRule {
        TaxRule { rate: rate.parse().unwrap(), name: "VAT".into(), tax_id: None }
    }

    #[test]
    fn tax_is_computed_on_the_rounded_total_half_away_from_zero() {
        // 10.005 rounds to 10.01; 21 % of 10.01 is 2.1021, 2.10.
        let t = totals(&charges("10.005"), &rule("21"), eur());
        assert_eq!((t.net, t.tax, t.gross), (amount("10.01"), amount("2.1"), amount("12.11")));
        // 0.5 % of 1.00 = 0.005, half away from zero: 0.01.
        let t = totals(&charges("1"), &rule("0.5"), eur());
        assert_eq!(t.tax, amount("0.01"));
        // A credit (negative total) rounds the other way, symmetrically.
        let t = totals(&charges("-1"), &rule("0.5"), eur());
        assert_eq!(t.tax, amount("-0.01"));
        let yen = Currency::parse("JPY").unwrap();
        assert_eq!(totals(&charges("100.5"), &rule("10"), yen).gross, amount("111"));
    }

    #[test]
    fn tax_rules_are_checked() {
        assert!(rule("21").validated().is_ok());
        assert!(rule("0").validated().is_ok());
        assert!(rule("-1").validated().is_err());
        assert!(rule("100.5").validated().is_err());
        assert!(rule("1.23456").validated().is_err());
        assert!(TaxRule { name: " ".into(), ..rule("1") }.validated().is_err());
    }

    #[test]
    fn months_and_numbers() {
        let (from, to) = month("2026-12").unwrap();
        assert_eq!((from, to), (Timestamp::parse("2026-12-01").unwrap(), Timestamp::parse("2027-01-01").unwrap()));
        assert_eq!(month_name(from), "2026-12");
        assert!(month("2026-13").is_err());
        assert!(month("2026-1").is_err());
        assert!(month("nonsense").is_err());
        assert_eq!(document_number(None, "INV", 42), "INV-000042");
        assert_eq!(document_number(Some("P-1"), "CN", 1), "P-1-CN-000001");
    }

    #[test]
    fn figures_must_add_up() {
        assert!(charges("5").check().is_ok());
        let wrong = Figures { closing_balance: amount("1"), ..charges("5") };
        assert!(wrong.check().is_err());
        let corrected = charges("7");
        let delta = corrected.minus(&charges("5"));
        assert_eq!(charges("5").plus(&delta), corrected.normalized());
    }
}

/// Given/when/then for the invoice commands.
#[cfg(test)]
mod decide_tests {
    use super::*;
    use crate::account::AccountKind;
    use crate::command::{Command, InvoiceSubject, IssueCreditNote, IssueInvoice};
    use crate::decide::{Decision, decide};
    use crate::event::Payload;
    use crate::ids::{BookId, InvoiceId};
    use crate::testing::{amount, given, meta, open_customer, open_partner};

    fn subject(account: AccountId, number: &str, kind: AccountKind) -> InvoiceSubject {
        InvoiceSubject {
            account,
            number: number.into(),
            name: number.into(),
            kind,
            currency: Currency::parse("EUR").unwrap(),
        }
    }

    fn figures(charges: &str) -> Figures {
        Figures {
            other_charges: amount(charges),
            total_charges: amount(charges),
            closing_balance: -amount(charges),
            ..Figures::default()
        }
    }

    fn issue(subject: InvoiceSubject, month_text: &str, charges: &str) -> Command {
        let (period_from, period_to) = month(month_text).unwrap();
        Command::IssueInvoice(Box::new(IssueInvoice {
            invoice: InvoiceId::new(),
            subject,
            period_from,
            period_to,
            figures: figures(charges),
            statement_position: 1,
        }))
    }

    fn issued(events: &[crate::event::Event]) -> (u64, String, Totals) {
        match &events[0].payload {
            Payload::InvoiceIssued(e) => (e.sequence, e.number.clone(), e.totals),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers_run_per_book_and_a_second_invoice_of_a_period_is_the_first() {
        let (a, b) = (AccountId::new(), AccountId::new());
        let mut book = given(BookId::OPERATOR, &[open_customer(a, None, "A", "0"), open_customer(b, None, "B", "0")]);
        let rule = TaxRule { rate: amount("21"), name: "VAT".into(), tax_id: None };
        book.apply(&Command::ConfigureTax { account: None, tax: Some(rule) }).unwrap();
        let first = book.apply(&issue(subject(a, "A", AccountKind::Customer), "2026-10", "10.005")).unwrap();
        assert_eq!(
            issued(&first),
            (1, "INV-000001".into(), Totals { net: amount("10.01"), tax: amount("2.1"), gross: amount("12.11") })
        );
        let second = book.apply(&issue(subject(b, "B", AccountKind::Customer), "2026-10", "1")).unwrap();
        assert_eq!(issued(&second).0, 2);
        let again = issue(subject(a, "A", AccountKind::Customer), "2026-10", "99");
        assert!(
            matches!(decide(&book.state, &again, &meta()), Ok(Decision::Repeat { first_version, events: 1 }) if first_version == first[0].envelope.version)
        );
        let next_month = book.apply(&issue(subject(a, "A", AccountKind::Customer), "2026-11", "1")).unwrap();
        assert_eq!(issued(&next_month).0, 3);
    }

    #[test]
    fn a_partner_numbers_its_own_and_the_operator_invoices_the_partner() {
        let (partner, customer) = (AccountId::new(), AccountId::new());
        let mut partner_book = given(
            BookId::of_partner(partner),
            &[open_partner(partner, "P-1", "0"), open_customer(customer, Some(partner), "C-1", "0")],
        );
        let events =
            partner_book.apply(&issue(subject(customer, "C-1", AccountKind::Customer), "2026-10", "5")).unwrap();
        assert_eq!(issued(&events).1, "P-1-INV-000001");
        // A partner does not invoice itself, nor an account of another book.
        partner_book
            .then_error(&issue(subject(partner, "P-1", AccountKind::Partner), "2026-10", "5"), "not_a_customer");
        let mut operator = given(BookId::OPERATOR, &[]);
        let events = operator.apply(&issue(subject(partner, "P-1", AccountKind::Partner), "2026-10", "5")).unwrap();
        assert_eq!(issued(&events).1, "INV-000001");
        operator.then_error(
            &issue(subject(AccountId::new(), "X", AccountKind::Customer), "2026-10", "5"),
            "account_not_found",
        );
    }

    #[test]
    fn figures_that_do_not_add_up_are_refused() {
        let a = AccountId::new();
        let book = given(BookId::OPERATOR, &[open_customer(a, None, "A", "0")]);
        let mut bad = issue(subject(a, "A", AccountKind::Customer), "2026-10", "5");
        if let Command::IssueInvoice(issue) = &mut bad {
            issue.figures.closing_balance = amount("1");
        }
        book.then_error(&bad, "invalid_field").then_error(
            &Command::ConfigureTax {
                account: None,
                tax: Some(TaxRule { rate: amount("-1"), name: "VAT".into(), tax_id: None }),
            },
            "invalid_field",
        );
    }

    #[test]
    fn a_credit_note_carries_the_difference_and_the_sums_hold() {
        let a = AccountId::new();
        let mut book = given(BookId::OPERATOR, &[open_customer(a, None, "A", "0")]);
        book.apply(&Command::ConfigureTax {
            account: None,
            tax: Some(TaxRule { rate: amount("21"), name: "VAT".into(), tax_id: None }),
        })
        .unwrap();
        let events = book.apply(&issue(subject(a, "A", AccountKind::Customer), "2026-10", "10.004")).unwrap();
        let Payload::InvoiceIssued(invoice) = &events[0].payload else { panic!() };
        let correct = |charges: &str| {
            Command::IssueCreditNote(Box::new(IssueCreditNote {
                credit_note: InvoiceId::new(),
                invoice: invoice.invoice,
                figures: figures(charges),
                statement_position: 2,
                reason: None,
            }))
        };
        book = book.then_error(&correct("10.004"), "invoice_unchanged");
        let notes = book.apply(&correct("10.006")).unwrap();
        let Payload::CreditNoteIssued(note) = &notes[0].payload else { panic!() };
        assert_eq!(note.number, "CN-000001");
        let corrected = figures("10.006");
        assert_eq!(invoice.figures.plus(&note.figures), corrected.normalized());
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(invoice.totals.plus(&note.totals), totals(&corrected, &invoice.tax, eur));
        // 10.00 → 10.01: the note's tax is 2.10 - 2.10 = 0, its net 0.01, gross 0.01.
        assert_eq!(note.totals, Totals { net: amount("0.01"), tax: Amount::ZERO, gross: amount("0.01") });
        let second = book.apply(&correct("20")).unwrap();
        let Payload::CreditNoteIssued(second) = &second[0].payload else { panic!() };
        assert_eq!(second.sequence, 2);
        book.then_error(
            &Command::IssueCreditNote(Box::new(IssueCreditNote {
                credit_note: InvoiceId::new(),
                invoice: InvoiceId::new(),
                figures: figures("1"),
                statement_position: 2,
                reason: None,
            })),
            "invoice_not_found",
        );
    }
}
