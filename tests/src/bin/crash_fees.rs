//! The victim of the recurring-fee crash test: catches up every fee due by NOW (seconds
//! since the Unix epoch) in short runs, as the server's scheduler does after a downtime,
//! then prints `caught up` and exits (after `charging` once its ledger is open). Killed at random moments while it works.
//! Usage: `crash_fees DATA_DIR NOW_SECONDS`.

use std::sync::Arc;

use commands::writer::WriterOptions;
use commands::{EventStore, Ledger, SledStore, charge_due_fees};
use domain::Timestamp;

/// Short runs, so that kills land between runs as well as inside them.
const FEES_PER_RUN: usize = 300;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().expect("DATA_DIR");
    let now: i64 = args.next().expect("NOW_SECONDS").parse().expect("NOW_SECONDS is a number");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(&data_dir).expect("open store"));
    // Book snapshots far more often than a server takes them, so that restarts load
    // books (and their fee keys) from snapshots that kills may have interrupted.
    let options = WriterOptions { snapshot_every_events_min: 64, ids_in_memory_max: 32, ..WriterOptions::default() };
    let ledger = Ledger::open_with(store, options).await.expect("open ledger");
    let now = Timestamp::from_micros(now * 1_000_000);
    // The test kills after this line, so that its kills land in the catch-up.
    println!("charging");
    std::io::Write::flush(&mut std::io::stdout()).expect("stdout");
    loop {
        let run = charge_due_fees(&ledger, now, FEES_PER_RUN).await;
        assert_eq!((run.refused, run.failed), (0, 0), "every fee is charged: {run:?}");
        if !run.more {
            break;
        }
    }
    ledger.shutdown().await;
    println!("caught up");
}
