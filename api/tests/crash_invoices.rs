//! kill -9 during an invoice run: `tollbook invoices run` is killed at random moments
//! while it issues (after it logs that it is issuing), then run again to the end. Each
//! issuer's numbers must run from 1 without a gap, no account may have two invoices for
//! the month, and every account with movement must have its one.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::{EventStore, SledStore};
use domain::{BookId, Payload};

const KILL_CYCLES: u64 = 8;
/// How long after the run says it is issuing each kill comes.
const KILL_DELAYS_MS: [u64; 8] = [0, 60, 120, 170, 220, 280, 360, 480];

fn tollbook(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollbook"));
    command.args(args).env_remove("TOLLBOOK_STORE").env("TOLLBOOK_LOG", "info");
    command
}

/// The sequence numbers of the month's invoices per issuing book, and the accounts
/// invoiced (each once, or the test fails here).
async fn invoices(data: &std::path::Path) -> (BTreeMap<BookId, Vec<u64>>, usize) {
    let store: Arc<dyn EventStore> =
        Arc::new(SledStore::open(data.join("events")).expect("the log reopens after a kill"));
    let mut by_book: BTreeMap<BookId, Vec<u64>> = BTreeMap::new();
    let mut accounts = HashSet::new();
    let mut from = 1;
    loop {
        let events = store.read_all(from, commands::READ_EVENTS_MAX).await.unwrap();
        let Some(last) = events.last() else { break };
        from = last.position + 1;
        for event in events {
            if let Payload::InvoiceIssued(e) = &event.event.payload {
                assert!(accounts.insert((e.account, e.period_from)), "{} invoiced twice", e.account_number);
                by_book.entry(event.event.envelope.book).or_default().push(e.sequence);
            }
        }
    }
    for (book, sequences) in &by_book {
        assert_eq!(*sequences, (1..=sequences.len() as u64).collect::<Vec<_>>(), "a gap in book {book}'s numbers");
    }
    (by_book, accounts.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_way_leaves_no_gap_and_no_double_invoice_and_a_rerun_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let made = tollbook(&[
        "dataset",
        "--data",
        data_arg,
        "--events",
        "30000",
        "--partners",
        "8",
        "--customers",
        "150",
        "--from",
        "2026-10-01",
        "--to",
        "2026-12-01",
    ])
    .env("TOLLBOOK_LOG", "warn")
    .status()
    .unwrap();
    assert!(made.success(), "the data set");

    let mut cut_mid_run = 0;
    for cycle in 0..KILL_CYCLES {
        let mut child = tollbook(&["invoices", "run", "--period", "2026-11", "--data", data_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the run to start issuing, then kill it a moment later: its writers load
        // their books and append one batch each, so the moments spread over that.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let started = Instant::now();
        let mut issuing = false;
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains("issuing invoices") {
                issuing = true;
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "the run never started issuing");
        }
        if issuing {
            std::thread::sleep(Duration::from_millis(KILL_DELAYS_MS[cycle as usize % KILL_DELAYS_MS.len()]));
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let (by_book, count) = invoices(&data).await;
        let issued: usize = by_book.values().map(Vec::len).sum();
        assert_eq!(issued, count);
        eprintln!("cycle {cycle}: {issued} invoices durable after the kill");
        if issued > 0 && issuing {
            cut_mid_run += 1;
        }
    }
    let finish = tollbook(&["invoices", "run", "--period", "2026-11", "--data", data_arg]).output().unwrap();
    assert!(finish.status.success(), "{}", String::from_utf8_lossy(&finish.stderr));
    let (by_book, total) = invoices(&data).await;
    assert!(total > 1000, "the data set's accounts are invoiced: {total}");
    assert!(by_book.len() > 1, "the operator and the partners each number their own");
    // Once complete, another run issues nothing.
    let again = tollbook(&["invoices", "run", "--period", "2026-11", "--data", data_arg]).output().unwrap();
    let stdout = String::from_utf8(again.stdout).unwrap();
    assert!(again.status.success() && stdout.trim().is_empty(), "a complete run issues nothing more: {stdout}");
    assert_eq!(invoices(&data).await.1, total);
    eprintln!("{cut_mid_run} of {KILL_CYCLES} kills came after some invoices were durable");
    assert!(cut_mid_run > 0, "no kill came in the middle of a run: the delays need tuning");
}
