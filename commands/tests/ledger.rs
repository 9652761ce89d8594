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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_are_decided_one_after_another_and_refusals_touch_no_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(ledger_in(dir.path()).await);
    let partner = AccountId::new();
    let customer = AccountId::new();
    ledger.execute(open_partner(partner, "P-1", "0"), meta()).await.unwrap();
    ledger.execute(open_customer(customer, Some(partner), "C-1", "0"), meta()).await.unwrap();
    ledger
        .execute(
            Command::ReceivePayment { account: customer, amount: amount("10"), method: None, reference: None },
            meta(),
        )
        .await
        .unwrap();
    // 50 moves of 1 each race for 10 of balance: they land in shared batches, and
    // exactly 10 may pass.
    let moves: Vec<_> = (0..50)
        .map(|_| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let back = Command::MoveFunds { from: customer, to: partner, amount: amount("1"), note: None };
                ledger.execute(back, meta()).await
            })
        })
        .collect();
    let mut accepted = 0;
    let mut refused = 0;
    for m in moves {
        match m.await.unwrap() {
            Ok(outcome) => {
                accepted += 1;
                assert!(outcome.balances[0].balance >= amount("0"));
            }
            Err(CommandError::Domain(DomainError::InsufficientFunds { .. })) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted, refused), (10, 40));
    let state = ledger.book_state(BookId::of_partner(partner)).await.unwrap();
    assert_eq!(state.accounts[&customer].balance, amount("0"));
    assert_eq!(state.accounts[&partner].balance, amount("10"));
}

#[tokio::test]
async fn a_fund_move_across_books_is_refused_before_any_writer() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_in(dir.path()).await;
    let partner_a = AccountId::new();
    let partner_b = AccountId::new();
    let customer_b = AccountId::new();
    ledger.execute(open_partner(partner_a, "PA", "0"), meta()).await.unwrap();
    ledger.execute(open_partner(partner_b, "PB", "0"), meta()).await.unwrap();
    ledger.execute(open_customer(customer_b, Some(partner_b), "CB", "0"), meta()).await.unwrap();
    let across = Command::MoveFunds { from: partner_a, to: customer_b, amount: amount("1"), note: None };
    let refused = ledger.execute(across, meta()).await;
    assert!(matches!(refused, Err(CommandError::Domain(DomainError::NotOwnCustomer { .. }))), "{refused:?}");
}

#[tokio::test]
async fn reversal_by_position_moves_the_money_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_in(dir.path()).await;
    let customer = AccountId::new();
    ledger.execute(open_customer(customer, None, "C-1", "0"), meta()).await.unwrap();
    let paid = ledger
        .execute(
            Command::ReceivePayment { account: customer, amount: amount("7"), method: None, reference: None },
            meta(),
        )
        .await
        .unwrap();
    let position = paid.position().unwrap();
    let reversed = ledger.reverse(position, Some("chargeback".into()), meta()).await.unwrap();
    assert_eq!(reversed.balances[0].balance, amount("0"));
    let twice = ledger.reverse(position, None, meta()).await;
    assert!(matches!(twice, Err(CommandError::Domain(DomainError::AlreadyReversed(_)))), "{twice:?}");
    let nowhere = ledger.reverse(999, None, meta()).await;
    assert!(matches!(nowhere, Err(CommandError::UnknownPosition(999))), "{nowhere:?}");
}

#[tokio::test]
async fn a_retried_registration_returns_the_first_account() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_in(dir.path()).await;
    let partner = AccountId::new();
    let first = ledger.execute(open_partner(partner, "P-1", "0"), with_key("reg-1", 7)).await.unwrap();
    // The retry was built anew, with a new id, but the same key and request.
    let retry = ledger.execute(open_partner(AccountId::new(), "P-1", "0"), with_key("reg-1", 7)).await.unwrap();
    assert!(retry.repeated);
    assert_eq!(retry.events, first.events);
    let other_key = ledger.execute(open_partner(AccountId::new(), "P-1", "0"), with_key("reg-2", 7)).await;
    assert!(matches!(other_key, Err(CommandError::Domain(DomainError::DuplicateAccountNumber(_)))), "{other_key:?}");
    assert_eq!(ledger.account_count(), 1);
}
