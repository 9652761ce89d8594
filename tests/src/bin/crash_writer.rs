//! The victim of the crash test: writes commands to a ledger in a loop from several
//! concurrent callers and appends one line per acknowledged event to an ack file, until
//! it is killed. Usage: `crash_writer DATA_DIR ACK_FILE`. With `CRASH_SEGMENT_BYTES_MAX`
//! set, the log's segments are that small, so that kills also land amid the closing of
//! segments and the writing of their index files.
//!
//! An ack line is `book event_id position version` and is written (one `write` call,
//! O_APPEND) only after the ledger answered the command, i.e. after the flush. The
//! kill may land anywhere: mid-batch, mid-flush, mid-line of the ack file.

use std::io::Write;
use std::sync::Arc;

use commands::writer::WriterOptions;
use commands::{CommandError, EventStore, Ledger, SledStore};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, Command, CommandMeta, Idempotency};
use eventlog::SledOptions;

/// Names the segment size in bytes, if not the default.
const SEGMENT_BYTES_MAX_VAR: &str = "CRASH_SEGMENT_BYTES_MAX";
const BOOKS: usize = 3;
const CALLERS_PER_BOOK: usize = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().expect("DATA_DIR");
    let ack_path = args.next().expect("ACK_FILE");
    let mut sled_options = SledOptions::default();
    if let Ok(bytes) = std::env::var(SEGMENT_BYTES_MAX_VAR) {
        sled_options.segment_bytes_max = bytes.parse().expect("CRASH_SEGMENT_BYTES_MAX is a number of bytes");
    }
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open_with(&data_dir, sled_options).expect("open store"));
    // Book snapshots far more often than a server takes them, so that kills land while
    // one is being saved and restarts load books from them; and ids moved into id runs
    // (and runs merged) at nearly every snapshot, so that kills land amid those too.
    let options = WriterOptions { snapshot_every_events_min: 64, ids_in_memory_max: 32, ..WriterOptions::default() };
    let ledger = Arc::new(Ledger::open_with(store, options).await.expect("open ledger"));
    let acks = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new().create(true).append(true).open(&ack_path).expect("open ack file"),
    ));

    let mut callers = Vec::new();
    for b in 0..BOOKS {
        let (partner, customer) = ensure_book(&ledger, b).await;
        for c in 0..CALLERS_PER_BOOK {
            let ledger = ledger.clone();
            let acks = acks.clone();
            callers.push(tokio::spawn(async move {
                let run = std::process::id();
                for n in 0u64.. {
                    let command = match n % 3 {
                        0 => Command::ReceivePayment {
                            account: customer,
                            amount: amount("1.25"),
                            method: None,
                            reference: None,
                        },
                        1 => Command::MoveFunds { from: partner, to: customer, amount: amount("0.5"), note: None },
                        _ => Command::MoveFunds { from: customer, to: partner, amount: amount("0.25"), note: None },
                    };
                    // Unique keys make every acknowledged command identifiable in the log.
                    let key = format!("r{run}-b{b}-c{c}-n{n}");
                    let meta =
                        CommandMeta { idempotency: Some(Idempotency { key, request_digest: [1; 32] }), ..meta() };
                    match ledger.execute(command, meta).await {
                        Ok(outcome) => {
                            let mut lines = String::new();
                            for e in &outcome.events {
                                let envelope = &e.event.envelope;
                                lines.push_str(&format!(
                                    "{} {} {} {}\n",
                                    envelope.book, envelope.event_id, e.position, envelope.version
                                ));
                            }
                            acks.lock().unwrap().write_all(lines.as_bytes()).expect("ack write");
                        }
                        Err(CommandError::Domain(_)) => {}
                        Err(other) => panic!("technical failure: {other}"),
                    }
                }
            }));
        }
    }
    for caller in callers {
        caller.await.expect("caller");
    }
}

/// Opens book `b`'s partner and customer unless an earlier run did, and funds the partner.
async fn ensure_book(ledger: &Ledger, b: usize) -> (AccountId, AccountId) {
    let partner_number = format!("P{b}");
    let customer_number = format!("C{b}");
    let partner = match ledger.account(&partner_number) {
        Some(found) => found.id,
        None => {
            let id = AccountId::new();
            ledger.execute(open_partner(id, &partner_number, "0"), meta()).await.expect("open partner");
            let funding =
                Command::ReceivePayment { account: id, amount: amount("1000000"), method: None, reference: None };
            ledger.execute(funding, meta()).await.expect("fund partner");
            id
        }
    };
    let customer = match ledger.account(&customer_number) {
        Some(found) => found.id,
        None => {
            let id = AccountId::new();
            ledger
                .execute(open_customer(id, Some(partner), &customer_number, "0"), meta())
                .await
                .expect("open customer");
            id
        }
    };
    (partner, customer)
}
