//! Invoices on the real sled store in a temp dir, with the real read models: whatever
//! the order of runs (all issuers, one issuer, months in any order) and restarts,
//! - each issuer's invoice numbers run 1, 2, 3, ... in its book with no gap;
//! - each account is invoiced at most once per period, and a repeated run changes nothing;
//! - an invoice's figures are the statement of its period;
//! - after late entries, an invoice and its credit notes add up to the corrected
//!   statement, figure by figure and total by total.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use commands::{EventStore, Ledger, SledStore};
use domain::invoice::{self, Figures, Totals};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, Command, CommandMeta, DomainError, InvoiceId, IssueCreditNote, Payload, Timestamp};
use projections::ReadModels;
use proptest::prelude::*;

const MONTHS: [&str; 3] = ["2026-09", "2026-10", "2026-11"];

struct World {
    store: Arc<dyn EventStore>,
    ledger: Ledger,
    models: ReadModels,
    projector: projections::Projector,
}

async fn open(dir: &std::path::Path) -> World {
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.join("events")).unwrap());
    let models = ReadModels::open(&dir.join("views"), store.clone()).unwrap();
    let projector = projections::spawn_projector(models.clone(), store.clone());
    let ledger = Ledger::open(store.clone()).await.unwrap();
    World { store, ledger, models, projector }
}

impl World {
    async fn close(self) {
        self.ledger.shutdown().await;
        self.caught_up().await;
        self.projector.stop().await.unwrap();
    }

    async fn caught_up(&self) {
        let head = self.store.head().await.unwrap();
        if head > 1 {
            self.models.wait_for(head - 1, Duration::from_secs(30)).await.unwrap();
        }
    }

    /// An invoice run, as the API and the CLI make it.
    async fn run(&self, issuer: Option<BookId>, month: &str) -> commands::InvoiceRun {
        self.caught_up().await;
        let (from, to) = invoice::month(month).unwrap();
        let drafts = self.models.snapshot().invoice_drafts(issuer, from, to).await.unwrap();
        let run = self.ledger.issue_invoices(drafts, at(to)).await.unwrap();
        assert!(run.failed.is_empty(), "{:?}", run.failed);
        run
    }

    async fn figures(&self, account: AccountId, from: Timestamp, to: Timestamp) -> Figures {
        self.caught_up().await;
        let statement = self.models.statement(account, from, to, None).await.unwrap();
        projections::invoices::figures_of(&statement).normalized()
    }
}

fn at(now: Timestamp) -> CommandMeta {
    CommandMeta { occurred_at: now, recorded_at: now, ..meta() }
}

#[derive(Clone, Debug)]
struct Entry {
    account: usize,
    /// 0: payment, 1: charge, 2: adjustment.
    kind: u8,
    cents: i64,
    /// Days after 2026-09-01 (the three months and a few days either side).
    day: i64,
}

#[derive(Clone, Debug)]
enum Step {
    /// A run of one month, for every issuer (None) or for one (the operator: 0, a
    /// partner: 1 + its index).
    Run(usize, Option<usize>),
    Restart,
}

fn entry(accounts: usize) -> impl Strategy<Value = Entry> {
    (0..accounts, 0u8..3, 1i64..50_000, -5i64..95).prop_map(|(account, kind, cents, day)| Entry {
        account,
        kind,
        cents,
        day,
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..MONTHS.len(), proptest::option::of(0usize..3)).prop_map(|(m, i)| Step::Run(m, i)),
        1 => Just(Step::Restart),
    ]
}

/// Accounts: two partners (0, 1), a customer of each (2, 3), two operator customers
/// (4, 5), each with a credit limit wide enough for every charge.
const ACCOUNTS: usize = 6;

async fn set_up(ledger: &Ledger) -> Vec<AccountId> {
    let ids: Vec<AccountId> = (0..ACCOUNTS).map(|_| AccountId::new()).collect();
    let start = at(Timestamp::parse("2026-08-01").unwrap());
    ledger.execute(open_partner(ids[0], "P-0", "1000000"), start.clone()).await.unwrap();
    ledger.execute(open_partner(ids[1], "P-1", "1000000"), start.clone()).await.unwrap();
    ledger.execute(open_customer(ids[2], Some(ids[0]), "C-2", "1000000"), start.clone()).await.unwrap();
    ledger.execute(open_customer(ids[3], Some(ids[1]), "C-3", "1000000"), start.clone()).await.unwrap();
    ledger.execute(open_customer(ids[4], None, "C-4", "1000000"), start.clone()).await.unwrap();
    ledger.execute(open_customer(ids[5], None, "C-5", "1000000"), start.clone()).await.unwrap();
    let tax = |rate: &str| Some(invoice::TaxRule { rate: rate.parse().unwrap(), name: "VAT".into(), tax_id: None });
    ledger.configure_tax(BookId::OPERATOR, None, tax("21"), start.clone()).await.unwrap();
    ledger.configure_tax(BookId::of_partner(ids[0]), None, tax("7.5"), start.clone()).await.unwrap();
    let (_, subject) = ledger.invoice_subject(ids[5], "C-5").unwrap();
    ledger.configure_tax(BookId::OPERATOR, Some(subject), tax("0"), start).await.unwrap();
    ids
}

async fn post(ledger: &Ledger, ids: &[AccountId], entry: &Entry) {
    let account = ids[entry.account];
    let value = amount(&format!("{}.{:02}", entry.cents / 100, entry.cents % 100));
    let command = match entry.kind {
        0 => Command::ReceivePayment { account, amount: value, method: None, reference: None },
        1 => Command::PostCharge { account, amount: value, description: None },
        _ => Command::PostAdjustment { account, amount: value, reason: None },
    };
    let when = Timestamp::parse("2026-09-01").unwrap().add_seconds(entry.day * 86_400 + 3_600);
    ledger.execute(command, at(when)).await.unwrap();
}

/// Every invoice and credit note of the log, by book in stream order.
async fn documents(store: &Arc<dyn EventStore>) -> BTreeMap<BookId, Vec<Payload>> {
    let mut by_book: BTreeMap<BookId, Vec<Payload>> = BTreeMap::new();
    let mut from = 1;
    loop {
        let events = store.read_all(from, commands::READ_EVENTS_MAX).await.unwrap();
        let Some(last) = events.last() else { break };
        from = last.position + 1;
        for e in events {
            if matches!(e.event.payload, Payload::InvoiceIssued(_) | Payload::CreditNoteIssued(_)) {
                by_book.entry(e.event.envelope.book).or_default().push(e.event.payload);
            }
        }
    }
    by_book
}

fn check_numbering(by_book: &BTreeMap<BookId, Vec<Payload>>) {
    let mut seen = HashSet::new();
    for documents in by_book.values() {
        let invoices: Vec<u64> = documents
            .iter()
            .filter_map(|p| match p {
                Payload::InvoiceIssued(e) => {
                    assert!(
                        seen.insert((e.account, e.period_from)),
                        "a second invoice for {} {:?}",
                        e.account_number,
                        e.period_from
                    );
                    Some(e.sequence)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            invoices,
            (1..=invoices.len() as u64).collect::<Vec<_>>(),
            "invoice numbers run from 1 without a gap"
        );
        let notes: Vec<u64> = documents
            .iter()
            .filter_map(|p| match p {
                Payload::CreditNoteIssued(e) => Some(e.sequence),
                _ => None,
            })
            .collect();
        assert_eq!(notes, (1..=notes.len() as u64).collect::<Vec<_>>(), "credit notes have their own sequence");
    }
}

/// An invoice as issued: account, period, figures and totals.
type Issued = (AccountId, Timestamp, Timestamp, Figures, Totals);

async fn scenario(entries: Vec<Entry>, steps: Vec<Step>, late: Vec<Entry>) {
    let dir = tempfile::tempdir().unwrap();
    let mut world = open(dir.path()).await;
    let ids = set_up(&world.ledger).await;
    for entry in &entries {
        post(&world.ledger, &ids, entry).await;
    }
    let issuer = |index: usize| if index == 0 { BookId::OPERATOR } else { BookId::of_partner(ids[index - 1]) };
    for step in &steps {
        match step {
            Step::Run(month, scope) => {
                world.run(scope.map(issuer), MONTHS[*month]).await;
            }
            Step::Restart => {
                world.close().await;
                world = open(dir.path()).await;
            }
        }
    }
    // Complete every month; then a repeated run changes nothing at all.
    for month in MONTHS {
        world.run(None, month).await;
    }
    let head = world.store.head().await.unwrap();
    for month in MONTHS {
        let again = world.run(None, month).await;
        assert_eq!(again.issued, 0);
    }
    assert_eq!(world.store.head().await.unwrap(), head, "a repeated run appends nothing");

    let by_book = documents(&world.store).await;
    check_numbering(&by_book);
    // Every invoice holds its period's statement; every account with movement has one.
    let mut invoices: HashMap<InvoiceId, Issued> = HashMap::new();
    for payload in by_book.values().flatten() {
        if let Payload::InvoiceIssued(e) = payload {
            assert_eq!(e.figures, world.figures(e.account, e.period_from, e.period_to).await, "{}", e.number);
            assert_eq!(e.totals, invoice::totals(&e.figures, &e.tax, e.currency));
            invoices.insert(e.invoice, (e.account, e.period_from, e.period_to, e.figures, e.totals));
        }
    }
    for month in MONTHS {
        let (from, to) = invoice::month(month).unwrap();
        for id in &ids {
            let moved = world.figures(*id, from, to).await.has_movement();
            let invoiced = invoices.values().any(|(a, f, ..)| a == id && *f == from);
            assert_eq!(moved, invoiced, "an account is invoiced exactly when it moved in the month");
        }
    }

    // Late entries, then a credit note for every invoice whose period changed.
    for entry in &late {
        post(&world.ledger, &ids, entry).await;
    }
    world.caught_up().await;
    for (id, (account, from, to, ..)) in &invoices {
        let statement = world.models.statement(*account, *from, *to, None).await.unwrap();
        let issue = IssueCreditNote {
            credit_note: InvoiceId::new(),
            invoice: *id,
            figures: projections::invoices::figures_of(&statement),
            statement_position: statement.position,
            reason: None,
        };
        match world.ledger.issue_credit_note(issue, at(*to)).await {
            Ok(_) => {}
            Err(commands::CommandError::Domain(DomainError::InvoiceUnchanged(_))) => {
                assert_eq!(world.figures(*account, *from, *to).await, invoices[id].3, "unchanged means unchanged");
            }
            Err(other) => panic!("credit note refused: {other}"),
        }
    }
    let by_book = documents(&world.store).await;
    check_numbering(&by_book);
    let mut standing: HashMap<InvoiceId, (Figures, Totals)> =
        invoices.iter().map(|(id, (.., figures, totals))| (*id, (*figures, *totals))).collect();
    let mut rules = HashMap::new();
    for payload in by_book.values().flatten() {
        match payload {
            Payload::InvoiceIssued(e) => {
                rules.insert(e.invoice, (e.tax.clone(), e.currency));
            }
            Payload::CreditNoteIssued(e) => {
                let (figures, totals) = standing.get_mut(&e.invoice).unwrap();
                *figures = figures.plus(&e.figures);
                *totals = totals.plus(&e.totals);
            }
            _ => {}
        }
    }
    for (id, (account, from, to, ..)) in &invoices {
        let corrected = world.figures(*account, *from, *to).await;
        let (figures, totals) = &standing[id];
        assert_eq!(*figures, corrected, "the invoice and its credit notes add up to the corrected figures");
        let (tax, currency) = &rules[id];
        assert_eq!(*totals, invoice::totals(&corrected, tax, *currency), "and so do their totals");
    }
    world.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn invoices_are_numbered_without_gaps_hold_their_statement_and_credit_notes_add_up(
        entries in proptest::collection::vec(entry(ACCOUNTS), 0..40),
        steps in proptest::collection::vec(step(), 0..8),
        late in proptest::collection::vec(entry(ACCOUNTS), 0..10),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(scenario(entries, steps, late));
    }
}
