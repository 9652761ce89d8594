//! Property tests of the write side over random command sequences, refused ones
//! included, on the real sled store:
//! - fund moves conserve money; no fund move or manual charge takes a balance below
//!   `-credit_limit`; a refused command changes nothing;
//! - folding the stored events with `evolve` gives the state the writer held;
//! - an idempotency key applied twice has one effect;
//! - every book's chain verifies, and flipping any byte of a stored event is detected.

use std::sync::Arc;

use commands::{ChainVerifier, CommandError, EventStore, Ledger, SledStore, verify_book};
use domain::rating::{CallDirection, RatedCdr};
use domain::testing::{meta, open_customer, open_partner};
use domain::{
    AccountId, AccountKind, Amount, BookId, BookState, ChargeCall, Command, CommandMeta, Idempotency, Timestamp, evolve,
};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// One step of a scenario, over account slots: 0 is the partner, 1..=3 its customers.
#[derive(Clone, Debug)]
enum Op {
    Pay {
        slot: usize,
        cents: i64,
    },
    Charge {
        slot: usize,
        cents: i64,
    },
    Adjust {
        slot: usize,
        cents: i64,
    },
    Move {
        from: usize,
        to: usize,
        cents: i64,
    },
    Call {
        slot: usize,
        cdr: u8,
        cents: i64,
    },
    Reverse {
        nth_event: usize,
    },
    /// Repeats the previous op with its idempotency key (same request).
    RepeatLast,
    /// Sends another request under the previous op's key.
    ReuseKeyDifferently {
        cents: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0usize..4;
    let cents = -500i64..20_000;
    prop_oneof![
        2 => (slot.clone(), cents.clone()).prop_map(|(slot, cents)| Op::Pay { slot, cents }),
        1 => (slot.clone(), cents.clone()).prop_map(|(slot, cents)| Op::Charge { slot, cents }),
        1 => (slot.clone(), cents.clone()).prop_map(|(slot, cents)| Op::Adjust { slot, cents }),
        3 => (slot.clone(), slot.clone(), cents.clone()).prop_map(|(from, to, cents)| Op::Move { from, to, cents }),
        1 => (1usize..4, 0u8..6, 0i64..5_000).prop_map(|(slot, cdr, cents)| Op::Call { slot, cdr, cents }),
        1 => (0usize..64).prop_map(|nth_event| Op::Reverse { nth_event }),
        1 => Just(Op::RepeatLast),
        1 => (1i64..100).prop_map(|cents| Op::ReuseKeyDifferently { cents }),
    ]
}

fn cents(value: i64) -> Amount {
    Amount(Decimal::new(value, 2))
}

fn cdr(id: u8) -> RatedCdr {
    let start = Timestamp::from_seconds(1_767_225_600);
    RatedCdr {
        id: format!("cdr-{id}"),
        caller: "100".into(),
        callee: "200".into(),
        start,
        answer: Some(start),
        end: start.add_seconds(30),
        billable_seconds: 30,
        hangup_cause: 16,
        direction: CallDirection::Outbound,
        billed_seconds: 30,
        matched_prefix: None,
        customer_tariff: None,
        partner_tariff: None,
        hangup_cause_raw: None,
        hangup_cause_flag: None,
    }
}

fn keyed(key: usize, digest: u8) -> CommandMeta {
    CommandMeta { idempotency: Some(Idempotency { key: format!("key-{key}"), request_digest: [digest; 32] }), ..meta() }
}

fn total(state: &BookState) -> Amount {
    state.accounts.values().map(|a| a.balance).sum()
}

async fn run_scenario(credit_limits: Vec<i64>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let ledger = Ledger::open(store.clone() as Arc<dyn EventStore>).await.unwrap();
    let partner = AccountId::new();
    let book = BookId::of_partner(partner);
    let mut slots = vec![partner];
    ledger.execute(open_partner(partner, "P", &credit_limits[0].to_string()), meta()).await.unwrap();
    for (i, limit) in credit_limits[1..].iter().enumerate() {
        let customer = AccountId::new();
        ledger
            .execute(open_customer(customer, Some(partner), &format!("C{i}"), &limit.to_string()), meta())
            .await
            .unwrap();
        slots.push(customer);
    }

    let mut last: Option<(Command, CommandMeta)> = None;
    let mut next_key = 0usize;
    for op in ops {
        let (command, command_meta) = match op {
            Op::Pay { slot, cents: c } => (
                Command::ReceivePayment { account: slots[slot], amount: cents(c), method: None, reference: None },
                None,
            ),
            Op::Charge { slot, cents: c } => {
                (Command::PostCharge { account: slots[slot], amount: cents(c), description: None }, None)
            }
            Op::Adjust { slot, cents: c } => {
                (Command::PostAdjustment { account: slots[slot], amount: cents(c), reason: None }, None)
            }
            Op::Move { from, to, cents: c } => {
                (Command::MoveFunds { from: slots[from], to: slots[to], amount: cents(c), note: None }, None)
            }
            Op::Call { slot, cdr: id, cents: c } => (
                Command::ChargeCall(ChargeCall {
                    account: slots[slot],
                    cdr: cdr(id),
                    customer_cost: cents(c),
                    partner_cost: Some(cents(c / 2)),
                }),
                None,
            ),
            Op::Reverse { nth_event } => {
                let events = store.read_stream(book, 0, 4096).await.unwrap();
                let target = &events[nth_event % events.len()];
                match ledger.reverse(target.position, None, meta()).await {
                    Ok(_) | Err(CommandError::Domain(_)) => {}
                    Err(other) => return Err(TestCaseError::fail(format!("technical failure: {other}"))),
                }
                continue;
            }
            Op::RepeatLast => match &last {
                Some((command, meta)) => (command.clone(), Some(meta.clone())),
                None => continue,
            },
            Op::ReuseKeyDifferently { cents: c } => match &last {
                Some((_, meta)) => {
                    let other =
                        Command::ReceivePayment { account: partner, amount: cents(c), method: None, reference: None };
                    let mut reused = meta.clone();
                    reused.idempotency.as_mut().unwrap().request_digest[0] ^= 0xff;
                    let before = ledger.book_state(book).await.unwrap();
                    let answer = ledger.execute(other, reused).await;
                    prop_assert!(
                        matches!(&answer, Err(CommandError::Domain(e)) if e.code() == "idempotency_key_reused"),
                        "key reuse answered {answer:?}"
                    );
                    prop_assert_eq!(ledger.book_state(book).await.unwrap(), before);
                    continue;
                }
                None => continue,
            },
        };
        let is_repeat = command_meta.is_some();
        let command_meta = command_meta.unwrap_or_else(|| {
            next_key += 1;
            keyed(next_key, next_key as u8)
        });
        let before = ledger.book_state(book).await.unwrap();
        let answer = ledger.execute(command.clone(), command_meta.clone()).await;
        let after = ledger.book_state(book).await.unwrap();
        match answer {
            Err(CommandError::Domain(_)) => {
                prop_assert_eq!(&after, &before, "a refused command changed the state");
            }
            Err(other) => return Err(TestCaseError::fail(format!("technical failure: {other}"))),
            Ok(outcome) if is_repeat => {
                prop_assert!(outcome.repeated);
                prop_assert_eq!(&after, &before, "a repeated request had a second effect");
            }
            Ok(outcome) => {
                if let Command::MoveFunds { from, .. } = &command {
                    prop_assert_eq!(total(&after), total(&before), "a fund move created or destroyed money");
                    let source = &after.accounts[from];
                    prop_assert!(source.balance >= -source.credit_limit, "a fund move overdrew {source:?}");
                }
                if let Command::PostCharge { account, .. } = &command {
                    let charged = &after.accounts[account];
                    prop_assert!(charged.balance >= -charged.credit_limit, "a charge overdrew {charged:?}");
                }
                // A key is bound only by a request that changed the ledger; a repeated CDR or
                // a no-op (status already set) leaves it free.
                if !outcome.events.is_empty() && !outcome.repeated {
                    last = Some((command, command_meta));
                }
            }
        }
    }

    // Folding the stored events gives the writer's state.
    let live = ledger.book_state(book).await.unwrap();
    let stored = store.read_stream(book, 0, 4096).await.unwrap();
    let mut folded = BookState::new(book);
    for recorded in &stored {
        evolve(&mut folded, &recorded.event);
    }
    prop_assert_eq!(&folded, &live);
    prop_assert!(live.accounts.values().any(|a| a.kind == AccountKind::Partner));

    // The chain verifies as stored ...
    prop_assert_eq!(verify_book(&*store, book).await.unwrap(), Ok(stored.len() as u64));
    ledger.shutdown().await;
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_the_ledgers_invariants(
        credit_limits in proptest::collection::vec(0i64..50, 4),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        runtime().block_on(run_scenario(credit_limits, ops))?;
    }

    #[test]
    fn flipping_any_byte_of_a_stored_event_is_detected(
        pays in proptest::collection::vec(1i64..10_000, 1..8),
        pick in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(SledStore::open(dir.path()).unwrap());
            let ledger = Ledger::open(store.clone() as Arc<dyn EventStore>).await.unwrap();
            let customer = AccountId::new();
            ledger.execute(open_customer(customer, None, "C", "0"), meta()).await.unwrap();
            for p in &pays {
                let pay = Command::ReceivePayment { account: customer, amount: cents(*p), method: None, reference: None };
                ledger.execute(pay, meta()).await.unwrap();
            }
            let stored = store.read_stream(BookId::OPERATOR, 0, 4096).await.unwrap();
            let target = pick.index(stored.len());
            let mut verifier = ChainVerifier::default();
            for (i, recorded) in stored.iter().enumerate() {
                let mut bytes = store.read_raw(recorded.position).await.unwrap().unwrap();
                if i == target {
                    let at = byte.index(bytes.len());
                    bytes[at] ^= flip;
                    prop_assert!(verifier.check(recorded.position, &bytes).is_err(), "flip at byte {at} went unseen");
                    return Ok(());
                }
                prop_assert!(verifier.check(recorded.position, &bytes).is_ok());
            }
            unreachable!("the target is one of the stored events")
        })?;
    }
}
