//! Readers and the projector at once: 64 tasks move funds inside one book through the
//! ledger while readers list the book. A fund move takes from one account of the book
//! what it gives another, so every listing, taken from one snapshot, must add up to the
//! book's total at the position it reflects — never one side of a move without the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use commands::Ledger;
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, Amount, Command};
use eventlog::{EventStore, SledStore};
use projections::{AccountFilter, ReadModels, spawn_projector};

const CUSTOMERS: usize = 15;
const MOVERS: usize = 64;
const MOVES_PER_MOVER: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_conserves_the_book_total_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path().join("events")).unwrap());
    let ledger = Arc::new(Ledger::open(store.clone()).await.unwrap());
    let partner = AccountId::new();
    ledger.execute(open_partner(partner, "P", "0"), meta()).await.unwrap();
    let customers: Vec<AccountId> = (0..CUSTOMERS).map(|_| AccountId::new()).collect();
    for (n, customer) in customers.iter().enumerate() {
        ledger.execute(open_customer(*customer, Some(partner), &format!("C{n}"), "0"), meta()).await.unwrap();
    }
    let total = amount("100000.00");
    let pay = Command::ReceivePayment { account: partner, amount: total, method: None, reference: None };
    let paid = ledger.execute(pay, meta()).await.unwrap().position().unwrap();

    let models = ReadModels::open(&dir.path().join("views"), store.clone()).unwrap();
    let projector = spawn_projector(models.clone(), store.clone());
    models.wait_for(paid, Duration::from_secs(5)).await.unwrap();

    let moving = Arc::new(AtomicBool::new(true));
    let mut movers = Vec::new();
    for mover in 0..MOVERS {
        let (ledger, customers) = (ledger.clone(), customers.clone());
        movers.push(tokio::spawn(async move {
            for n in 0..MOVES_PER_MOVER {
                let customer = customers[(mover * 7 + n) % CUSTOMERS];
                // Out to a customer, or back to the partner: refusals (not enough funds)
                // change nothing and are fine.
                let (from, to) = if (mover + n) % 3 == 0 { (customer, partner) } else { (partner, customer) };
                let amount = Amount(rust_decimal::Decimal::from(1 + ((mover * 13 + n * 5) % 97) as i64));
                let _ = ledger.execute(Command::MoveFunds { from, to, amount, note: None }, meta()).await;
            }
        }));
    }
    let listings = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (models, moving, listings) = (models.clone(), moving.clone(), listings.clone());
        readers.push(tokio::spawn(async move {
            let book = AccountFilter { partner: Some(partner), ..AccountFilter::default() };
            let mut positions = Vec::new();
            while moving.load(Ordering::Relaxed) {
                let snapshot = models.snapshot();
                let page = snapshot.accounts(&book, None, 100).unwrap();
                assert_eq!(page.items.len(), CUSTOMERS + 1);
                let sum: Amount = page.items.iter().map(|v| v.balance).sum();
                assert_eq!(sum, total, "a listing at position {} does not conserve the book", snapshot.position());
                positions.push(snapshot.position());
                listings.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            positions
        }));
    }
    for mover in movers {
        mover.await.unwrap();
    }
    let head = store.head().await.unwrap() - 1;
    models.wait_for(head, Duration::from_secs(10)).await.unwrap();
    moving.store(false, Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for reader in readers {
        seen.extend(reader.await.unwrap());
    }
    projector.stop().await.unwrap();
    // The readers saw the book at many positions while it moved, not once at the end.
    assert!(listings.load(Ordering::Relaxed) > 20, "only {} listings", listings.load(Ordering::Relaxed));
    assert!(seen.len() > 3, "listings saw only positions {seen:?}");
    let moves = store.read_all(paid + 1, 4096).await.unwrap().len();
    assert!(moves > MOVERS * MOVES_PER_MOVER / 2, "only {moves} fund moves went through");
}
