//! The write side end to end on the real sled store in a temp dir.

use std::sync::Arc;

use commands::{CommandError, EventStore, Ledger, SledStore};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, Command, DomainError, Idempotency};

async fn ledger_in(dir: &std::path::Path) -> Ledger {
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir).unwrap());
    Ledger::open(store).await.unwrap()
}

fn with_key(key: &str, digest: u8) -> domain::CommandMeta {
    domain::CommandMeta { idempotency: Some(Idempotency { key: key.into(), request_digest: [digest; 32] }), ..meta() }
}

#[tokio::test]
async fn partner_and_customer_move_funds_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let partner = AccountId::new();
    let customer = AccountId::new();
    {
        let ledger = ledger_in(dir.path()).await;
        ledger.execute(open_partner(partner, "P-1", "0"), meta()).await.unwrap();
        ledger.execute(open_customer(customer, Some(partner), "C-1", "5"), meta()).await.unwrap();
        let paid = ledger
            .execute(
                Command::ReceivePayment { account: partner, amount: amount("100.50"), method: None, reference: None },
                meta(),
            )
            .await
            .unwrap();
        assert_eq!(paid.balances[0].balance, amount("100.50"));
        let moved = ledger
            .execute(Command::MoveFunds { from: partner, to: customer, amount: amount("40.25"), note: None }, meta())
            .await
            .unwrap();
        assert_eq!(moved.balances[0].balance, amount("60.25"));
        assert_eq!(moved.balances[1].balance, amount("40.25"));
        let too_much = ledger
            .execute(Command::MoveFunds { from: customer, to: partner, amount: amount("45.26"), note: None }, meta())
            .await;
        assert!(matches!(too_much, Err(CommandError::Domain(DomainError::InsufficientFunds { .. }))), "{too_much:?}");
        ledger.shutdown().await;
    }
    let ledger = ledger_in(dir.path()).await;
    let state = ledger.book_state(BookId::of_partner(partner)).await.unwrap();
    assert_eq!(state.accounts[&partner].balance, amount("60.25"));
    assert_eq!(state.accounts[&customer].balance, amount("40.25"));
    assert_eq!(ledger.account("C-1").unwrap().book, BookId::of_partner(partner));
    assert_eq!(state.next_version, 4);
}

#[tokio::test]
async fn account_numbers_are_unique_across_books() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_in(dir.path()).await;
    let partner = AccountId::new();
    ledger.execute(open_partner(partner, "P-1", "0"), meta()).await.unwrap();
    ledger.execute(open_customer(AccountId::new(), Some(partner), "SAME", "0"), meta()).await.unwrap();
    let again = ledger.execute(open_customer(AccountId::new(), None, "SAME", "0"), meta()).await;
    assert!(matches!(again, Err(CommandError::Domain(DomainError::DuplicateAccountNumber(_)))), "{again:?}");
}

#[tokio::test]
async fn idempotency_key_replays_the_first_result_even_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let customer = AccountId::new();
    let pay = Command::ReceivePayment { account: customer, amount: amount("10"), method: None, reference: None };
    let first = {
        let ledger = ledger_in(dir.path()).await;
        ledger.execute(open_customer(customer, None, "C-9", "0"), meta()).await.unwrap();
        let first = ledger.execute(pay.clone(), with_key("k1", 1)).await.unwrap();
        let second = ledger.execute(pay.clone(), with_key("k1", 1)).await.unwrap();
        assert!(second.repeated);
        assert_eq!(first.events, second.events);
        ledger.shutdown().await;
        first
    };
    let ledger = ledger_in(dir.path()).await;
    let again = ledger.execute(pay.clone(), with_key("k1", 1)).await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.events, first.events);
    let conflict = ledger.execute(pay, with_key("k1", 2)).await;
    assert!(matches!(conflict, Err(CommandError::Domain(DomainError::IdempotencyKeyReused(_)))), "{conflict:?}");
    let state = ledger.book_state(BookId::OPERATOR).await.unwrap();
    assert_eq!(state.accounts[&customer].balance, amount("10"));
}
