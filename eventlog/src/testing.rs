//! Fixtures for benchmarks and tests of other crates: a large book written straight
//! into a store in big batches, decided by the real decider and sealed by the real
//! chain, without the book writer's per-command round trips.

use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, BookState, ChargeCall, Command, CommandMeta, Decision, Idempotency, Timestamp};
use domain::{decide, rating::CallDirection, rating::RatedCdr, seal};

use crate::chain::{self, EncodedEvent};
use crate::store::{EventStore, ExpectedVersion};

const APPEND_BATCH_EVENTS: usize = 4096;

/// The accounts of a synthetic book.
pub struct SyntheticBook {
    pub book: BookId,
    pub partner: AccountId,
    pub customer: AccountId,
}

/// Appends a book of about `events` events: payments, rated calls and fund moves in
/// turn, one command in ten with an idempotency key, business times spread evenly over
/// `days` days from 2026-01-01.
pub async fn append_synthetic_book(store: &dyn EventStore, events: u64, days: i64) -> SyntheticBook {
    let partner = AccountId::new();
    let customer = AccountId::new();
    let book = BookId::of_partner(partner);
    let mut state = BookState::new(book);
    let mut pending: Vec<EncodedEvent> = Vec::new();
    // Popped from the end: the partner opens first.
    let mut opening = vec![open_customer(customer, Some(partner), "C", "0"), open_partner(partner, "P", "0")];
    let start_seconds = 1_767_225_600;
    let spread_seconds = days.max(1) * 86_400;
    let mut n: u64 = 0;
    while state.next_version < events {
        let occurred_at = Timestamp::from_seconds(start_seconds + (n as i64 * spread_seconds) / events as i64);
        // Openings first, then a payment, a call and a move in turn.
        let command = opening.pop().unwrap_or_else(|| match (n - 2) % 3 {
            0 => Command::ReceivePayment { account: partner, amount: amount("3"), method: None, reference: None },
            1 => sample_call(customer, format!("cdr-{n}"), occurred_at),
            _ => Command::MoveFunds { from: partner, to: customer, amount: amount("1"), note: None },
        });
        n += 1;
        let idempotency = n.is_multiple_of(10).then(|| Idempotency { key: format!("k{n}"), request_digest: [3; 32] });
        let command_meta = CommandMeta { occurred_at, idempotency, ..meta() };
        let Decision::Accept(payloads) = decide(&state, &command, &command_meta).expect("synthetic commands pass")
        else {
            unreachable!("fresh commands are never repeats")
        };
        let mut bytes = Vec::new();
        let sealed = seal(&mut state, payloads, &command_meta, |envelope, payload| {
            let (encoded, hash) = chain::encode(envelope, payload);
            bytes.push(encoded);
            hash
        });
        pending.extend(sealed.into_iter().zip(bytes).map(|(event, bytes)| EncodedEvent { event, bytes }));
        if pending.len() >= APPEND_BATCH_EVENTS {
            flush_pending(store, book, &state, &mut pending).await;
        }
    }
    flush_pending(store, book, &state, &mut pending).await;
    SyntheticBook { book, partner, customer }
}

/// An answered 61-second call to Berlin that started at `start`, billed as two minutes:
/// 0.024 to the customer, 0.012 wholesale to its partner.
pub fn sample_call(customer: AccountId, cdr_id: String, start: Timestamp) -> Command {
    Command::ChargeCall(ChargeCall {
        account: customer,
        cdr: RatedCdr {
            id: cdr_id,
            caller: "15550001".into(),
            callee: "4930123456".into(),
            start,
            answer: Some(start),
            end: start.add_seconds(61),
            billable_seconds: 61,
            hangup_cause: 16,
            direction: CallDirection::Outbound,
            billed_seconds: 120,
            matched_prefix: Some("4930".into()),
            customer_tariff: None,
            partner_tariff: None,
            hangup_cause_raw: None,
            hangup_cause_flag: None,
        },
        customer_cost: amount("0.024"),
        partner_cost: Some(amount("0.012")),
    })
}

async fn flush_pending(store: &dyn EventStore, book: BookId, state: &BookState, pending: &mut Vec<EncodedEvent>) {
    if pending.is_empty() {
        return;
    }
    let expected = ExpectedVersion::before(state.next_version - pending.len() as u64);
    store.append(book, expected, pending).await.expect("append");
    pending.clear();
}

/// CPU seconds the whole process has used (user + system, every thread), from
/// /proc/self/stat: benchmarks divide it by their work, a figure this VM's drift in
/// speed moves less than throughput.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// CPU seconds the calling thread has used (user + system), from /proc/thread-self/stat.
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/thread-self/stat")
}

fn cpu_seconds_of(stat: &str) -> f64 {
    let stat = std::fs::read_to_string(stat).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}
