//! Book and ledger snapshots on the real sled store: a book loaded from its snapshot and
//! tail is the book folded from the start; a snapshot that does not fit is ignored; a
//! start reads only the log after the ledger's snapshot, and the catalogs it rebuilds
//! equal a fold of the whole log even when books became durable out of order; a CDR id
//! and an idempotency key keep their one effect across restarts.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use commands::ids::{IdKind, IdValue, SavedIndex};
use commands::snapshot::{book_snapshot_name, encode_book};
use commands::testing::sample_call;
use commands::writer::{SNAPSHOT_EVERY_EVENTS_MIN, WriterOptions, fold_book, load_book};
use commands::{
    Appended, CommandError, EncodedEvent, EventStore, ExpectedVersion, Ledger, PendingAppend, SledStore, StoreError,
};
use domain::testing::{amount, meta, open_customer, open_partner};
use domain::{AccountId, BookId, BookState, Command, CommandMeta, Decision, Idempotency, RecordedEvent, Timestamp};
use domain::{decide, seal};
use futures::stream::BoxStream;
use proptest::prelude::*;

/// A sled store that counts the events read from it, and can hide its snapshots (as a
/// store without them, KurrentDB, behaves).
struct Counting {
    inner: SledStore,
    snapshots: bool,
    read_all_events: AtomicU64,
    read_stream_events: AtomicU64,
}

impl Counting {
    fn new(inner: SledStore, snapshots: bool) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            snapshots,
            read_all_events: AtomicU64::new(0),
            read_stream_events: AtomicU64::new(0),
        })
    }
}

#[async_trait]
impl EventStore for Counting {
    async fn append(
        &self,
        book: BookId,
        expected: ExpectedVersion,
        events: &[EncodedEvent],
    ) -> Result<Appended, StoreError> {
        self.inner.append(book, expected, events).await
    }
    async fn append_pipelined(
        &self,
        book: BookId,
        expected: ExpectedVersion,
        events: &[EncodedEvent],
    ) -> Result<PendingAppend, StoreError> {
        self.inner.append_pipelined(book, expected, events).await
    }
    async fn read_stream(&self, book: BookId, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stream(book, from, max).await?;
        self.read_stream_events.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(events)
    }
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_all(from, max).await?;
        self.read_all_events.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(events)
    }
    fn subscribe_all(&self, from: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        self.inner.subscribe_all(from)
    }
    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.head().await
    }
    async fn read_raw(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.read_raw(position).await
    }
    fn keeps_snapshots(&self) -> bool {
        self.snapshots
    }
    async fn put_snapshot(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self.snapshots {
            true => self.inner.put_snapshot(name, bytes).await,
            false => Ok(()),
        }
    }
    async fn get_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.snapshots {
            true => self.inner.get_snapshot(name).await,
            false => Ok(None),
        }
    }
    async fn read_snapshot_ranges(
        &self,
        name: &str,
        ranges: &[(u64, usize)],
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        match self.snapshots {
            true => self.inner.read_snapshot_ranges(name, ranges).await,
            false => Ok(None),
        }
    }
    async fn delete_snapshot(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete_snapshot(name).await
    }
}

fn keyed(key: String, digest: u8) -> CommandMeta {
    CommandMeta { idempotency: Some(Idempotency { key, request_digest: [digest; 32] }), ..meta() }
}

#[derive(Clone, Debug)]
enum Op {
    Pay(u32),
    /// A call with one of a few ids (so some repeat), maybe with an idempotency key.
    Call(u8, Option<u8>),
    Move(u32),
    Suspend(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..500).prop_map(Op::Pay),
        (0u8..24, proptest::option::of(0u8..12)).prop_map(|(id, key)| Op::Call(id, key)),
        (1u32..500).prop_map(Op::Move),
        any::<bool>().prop_map(Op::Suspend),
    ]
}

/// Decides `ops` on a fresh partner book, appends them, and saves the book's snapshot
/// after command `cut`. Returns the book and the version its snapshot was taken at.
async fn write_book(store: &dyn EventStore, ops: &[Op], cut: usize) -> (BookId, u64) {
    let (partner, customer) = (AccountId::new(), AccountId::new());
    let book = BookId::of_partner(partner);
    let mut state = BookState::new(book);
    let mut commands =
        vec![(open_partner(partner, "P", "10"), meta()), (open_customer(customer, Some(partner), "C", "10"), meta())];
    for op in ops {
        commands.push(match op {
            Op::Pay(cents) => {
                let paid = Command::ReceivePayment {
                    account: partner,
                    amount: amount(&format!("{cents}.00")),
                    method: None,
                    reference: None,
                };
                (paid, meta())
            }
            Op::Call(id, key) => {
                let call = sample_call(customer, format!("cdr-{id}"), Timestamp::from_seconds(1_767_225_600));
                (call, key.map_or_else(meta, |k| keyed(format!("key-{k}"), *id)))
            }
            Op::Move(cents) => {
                let amount = amount(&format!("{cents}.00"));
                (Command::MoveFunds { from: partner, to: customer, amount, note: None }, meta())
            }
            Op::Suspend(on) => {
                let status = if *on { domain::AccountStatus::Suspended } else { domain::AccountStatus::Active };
                (Command::ChangeStatus { account: customer, status, reason: None }, meta())
            }
        });
    }
    let mut pending: Vec<EncodedEvent> = Vec::new();
    let mut snapshot_version = 0;
    for (n, (command, command_meta)) in commands.iter().enumerate() {
        if let Ok(Decision::Accept(payloads)) = decide(&state, command, command_meta) {
            let mut bytes = Vec::new();
            let sealed = seal(&mut state, payloads, command_meta, |envelope, payload| {
                let (encoded, hash) = eventlog::chain::encode(envelope, payload);
                bytes.push(encoded);
                hash
            });
            pending.extend(sealed.into_iter().zip(bytes).map(|(event, bytes)| EncodedEvent { event, bytes }));
        }
        if n == cut + 1 {
            append(store, book, &state, &mut pending).await;
            store.put_snapshot(&book_snapshot_name(book), encode_book(&state, &SavedIndex::default())).await.unwrap();
            snapshot_version = state.next_version;
        }
    }
    append(store, book, &state, &mut pending).await;
    (book, snapshot_version)
}

async fn append(store: &dyn EventStore, book: BookId, state: &BookState, pending: &mut Vec<EncodedEvent>) {
    if pending.is_empty() {
        return;
    }
    let expected = ExpectedVersion::before(state.next_version - pending.len() as u64);
    store.append(book, expected, pending).await.unwrap();
    pending.clear();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A book loaded from a snapshot taken anywhere in its stream plus the events after
    /// it is the book folded from the start, ids and all, and only the tail was read.
    #[test]
    fn a_book_from_its_snapshot_and_tail_equals_the_book_folded(
        ops in proptest::collection::vec(op(), 0..60),
        cut in 0usize..60,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Counting::new(SledStore::open(dir.path()).unwrap(), true);
            let cut = cut.min(ops.len());
            let (book, snapshot_version) = write_book(&*store, &ops, cut).await;
            let folded = fold_book(&*store, book).await.unwrap();
            store.read_stream_events.store(0, Ordering::Relaxed);
            let loaded = load_book(&*store, book).await.unwrap();
            prop_assert_eq!(&loaded.state, &folded);
            prop_assert!(loaded.ids.is_empty());
            // The tail, and the one event that confirms the snapshot.
            prop_assert!(snapshot_version > 0, "the snapshot follows at least the two openings");
            let tail = folded.next_version - snapshot_version;
            prop_assert_eq!(store.read_stream_events.load(Ordering::Relaxed), tail + 1);
            Ok(())
        })?;
    }
}

/// A snapshot that does not fit the log (damaged, of another format, of another
/// history, ahead of the log) is ignored: the book is folded from the start, no error.
#[tokio::test]
async fn a_snapshot_that_does_not_fit_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Counting::new(SledStore::open(dir.path()).unwrap(), true);
    let ops: Vec<Op> = (0..20).map(|n| if n % 2 == 0 { Op::Pay(n + 1) } else { Op::Call(n as u8, None) }).collect();
    let (book, _) = write_book(&*store, &ops, 10).await;
    let folded = fold_book(&*store, book).await.unwrap();
    let name = book_snapshot_name(book);
    let good = store.get_snapshot(&name).await.unwrap().unwrap();
    let mut other_history = folded.clone();
    other_history.last_hash[0] ^= 1;
    let mut ahead = folded.clone();
    ahead.next_version += 5;
    let mut other_format = good.clone();
    other_format[0] = 0xEE;
    let mut other_book = folded.clone();
    other_book.book = BookId::of_partner(AccountId::new());
    for bad in [
        vec![],
        b"\x01garbage".to_vec(),
        other_format,
        encode_book(&other_history, &SavedIndex::default()),
        encode_book(&ahead, &SavedIndex::default()),
        encode_book(&other_book, &SavedIndex::default()),
    ] {
        store.put_snapshot(&name, bad).await.unwrap();
        assert_eq!(load_book(&*store, book).await.unwrap().state, folded);
    }
    // A file the disk damaged: the store refuses it, and the book is folded.
    store.put_snapshot(&name, good).await.unwrap();
    let file = dir.path().join("snapshots").join(format!("{name}.snapshot"));
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    assert!(store.get_snapshot(&name).await.is_err());
    assert_eq!(load_book(&*store, book).await.unwrap().state, folded);
}

/// The start reads the log only after the ledger's snapshot: nothing after a clean
/// shutdown, exactly the events written since the last save after a crash.
#[tokio::test]
async fn a_start_reads_only_the_log_after_the_ledgers_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let partner = AccountId::new();
    let customer = AccountId::new();
    let sled = SledStore::open(dir.path()).unwrap();
    {
        let ledger = Ledger::open(Counting::new(sled.clone(), true)).await.unwrap();
        ledger.execute(open_partner(partner, "P-1", "0"), meta()).await.unwrap();
        ledger.execute(open_customer(customer, Some(partner), "C-1", "5"), meta()).await.unwrap();
        for _ in 0..10 {
            let paid = Command::ReceivePayment { account: partner, amount: amount("1"), method: None, reference: None };
            ledger.execute(paid, meta()).await.unwrap();
        }
        ledger.shutdown().await;
    }
    let counting = Counting::new(sled.clone(), true);
    let ledger = Ledger::open(counting.clone()).await.unwrap();
    assert_eq!(ledger.opened_with_events(), 0);
    assert_eq!(counting.read_all_events.load(Ordering::Relaxed), 1, "only the event that confirms the snapshot");
    assert_eq!(ledger.account("C-1").unwrap().book, BookId::of_partner(partner), "the index came from the snapshot");
    // Four more events, and no save (as if the process were killed).
    for _ in 0..3 {
        let paid = Command::ReceivePayment { account: customer, amount: amount("1"), method: None, reference: None };
        ledger.execute(paid, meta()).await.unwrap();
    }
    let second = AccountId::new();
    ledger.execute(open_customer(second, Some(partner), "C-2", "0"), meta()).await.unwrap();
    drop(ledger);
    let counting = Counting::new(sled.clone(), true);
    let ledger = Ledger::open(counting.clone()).await.unwrap();
    assert_eq!(ledger.opened_with_events(), 4);
    assert_eq!(ledger.account("C-2").unwrap().id, second, "the tail is folded in");
    assert_eq!(ledger.account_count(), 3);
    // A cold book reads its snapshot's last event and the tail after it, not its stream:
    // 12 events of the first run (below the snapshot threshold, so none was taken) ...
    let state = ledger.book_state(BookId::of_partner(partner)).await.unwrap();
    assert_eq!(state.accounts[&customer].balance, amount("3"));
    assert_eq!(state.next_version, 16);
    ledger.shutdown().await;
}

/// Partner `n`'s number, and its customers'.
fn partner_number(n: usize) -> String {
    format!("P-{n:03}")
}

/// Many books write at once (so their batches become durable, and reach the ordered fold,
/// out of position order) while the ledger's snapshot is saved again and again; a start
/// after a crash from the last save and the log after it knows exactly what a fold of
/// the whole log knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_from_a_snapshot_taken_under_load_equal_a_fold_of_the_whole_log() {
    const BOOKS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    {
        let ledger = Arc::new(Ledger::open(Counting::new(sled.clone(), true)).await.unwrap());
        let mut books = Vec::new();
        for n in 0..BOOKS {
            let ledger = ledger.clone();
            books.push(tokio::spawn(async move {
                let partner = AccountId::new();
                ledger.execute(open_partner(partner, &partner_number(n), "0"), meta()).await.unwrap();
                for c in 0..25 {
                    let customer = AccountId::new();
                    let number = format!("{}-C{c:02}", partner_number(n));
                    ledger.execute(open_customer(customer, Some(partner), &number, "0"), meta()).await.unwrap();
                    let payments = (0..8).map(|_| {
                        let paid = Command::ReceivePayment {
                            account: customer,
                            amount: amount("1"),
                            method: None,
                            reference: None,
                        };
                        ledger.execute(paid, meta())
                    });
                    for paid in futures::future::join_all(payments).await {
                        paid.unwrap();
                    }
                }
            }));
        }
        let saver = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                loop {
                    ledger.save_snapshot().await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                }
            })
        };
        for book in books {
            book.await.unwrap();
        }
        saver.abort();
        let _ = saver.await;
        // Killed: no shutdown, no last save.
    }
    let from_snapshot = Ledger::open(Counting::new(sled.clone(), true)).await.unwrap();
    let folded = Ledger::open(Counting::new(sled.clone(), false)).await.unwrap();
    assert!(folded.opened_with_events() > from_snapshot.opened_with_events(), "a snapshot was saved under load");
    assert_eq!(from_snapshot.account_count(), BOOKS * 26);
    assert_eq!(from_snapshot.account_count(), folded.account_count());
    for n in 0..BOOKS {
        for number in
            std::iter::once(partner_number(n)).chain((0..25).map(|c| format!("{}-C{c:02}", partner_number(n))))
        {
            assert_eq!(from_snapshot.account(&number), folded.account(&number), "{number}");
        }
    }
}

/// A CDR and a keyed request from before a restart (and before the book's snapshot) keep
/// their one effect after it: the snapshot carries the book's ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_cdr_and_key_after_a_restart_have_no_second_effect() {
    let dir = tempfile::tempdir().unwrap();
    let partner = AccountId::new();
    let customer = AccountId::new();
    let book = BookId::of_partner(partner);
    let start = Timestamp::from_seconds(1_767_225_600);
    let first_call = sample_call(customer, "cdr-first".into(), start);
    let first_meta = keyed("key-first".into(), 7);
    let (first, version_before_restart) = {
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let ledger = Ledger::open(store).await.unwrap();
        ledger.execute(open_partner(partner, "P-1", "0"), meta()).await.unwrap();
        ledger.execute(open_customer(customer, Some(partner), "C-1", "0"), meta()).await.unwrap();
        let first = ledger.execute(first_call.clone(), first_meta.clone()).await.unwrap();
        assert!(!first.repeated);
        let calls = 2 * SNAPSHOT_EVERY_EVENTS_MIN as usize;
        for chunk in (0..calls).collect::<Vec<_>>().chunks(2048) {
            let answers = futures::future::join_all(chunk.iter().map(|n| {
                let meta = keyed(format!("key-{n}"), 1);
                ledger.execute(sample_call(customer, format!("cdr-{n}"), start), meta)
            }))
            .await;
            assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|o| !o.repeated)));
        }
        let version = ledger.book_state(book).await.unwrap().next_version;
        ledger.shutdown().await;
        (first, version)
    };
    let sled = SledStore::open(dir.path()).unwrap();
    let snapshot = sled.get_snapshot(&book_snapshot_name(book)).await.unwrap().expect("the book's snapshot was saved");
    let saved = commands::snapshot::decode_book(&snapshot, book).unwrap().state;
    assert!(saved.next_version >= SNAPSHOT_EVERY_EVENTS_MIN);
    let loaded = load_book(&sled, book).await.unwrap();
    let first_cdr = loaded.find_id(&sled, IdKind::Cdr, "cdr-first").await.unwrap();
    let charged_at = first.events[0].event.envelope.version;
    assert_eq!(first_cdr, Some(IdValue::Cdr(charged_at)), "the snapshot or its id runs hold the first CDR");
    let counting = Counting::new(sled, true);
    let ledger = Ledger::open(counting.clone()).await.unwrap();
    let state = ledger.book_state(book).await.unwrap();
    assert_eq!(state.next_version, version_before_restart);
    assert!(
        counting.read_stream_events.load(Ordering::Relaxed) <= version_before_restart - saved.next_version + 1,
        "the cold book read its snapshot's tail, not its stream"
    );

    // The same request: the first result, nothing new.
    let again = ledger.execute(first_call.clone(), first_meta.clone()).await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.events, first.events);
    // The same CDR under another key: still charged once.
    let other_key = ledger.execute(first_call.clone(), keyed("key-other".into(), 9)).await.unwrap();
    assert!(other_key.repeated);
    assert_eq!(other_key.events, first.events[..1]);
    // The same key with another body: refused.
    let paid = Command::ReceivePayment { account: partner, amount: amount("1"), method: None, reference: None };
    let reused = ledger.execute(paid, keyed("key-first".into(), 8)).await;
    assert!(matches!(&reused, Err(CommandError::Domain(e)) if e.code() == "idempotency_key_reused"), "{reused:?}");
    assert_eq!(ledger.book_state(book).await.unwrap().next_version, version_before_restart);
    ledger.shutdown().await;
}

/// With a book's ids moved into id runs at nearly every snapshot (and the runs merged),
/// every CDR id and idempotency key keeps its one effect, before and after a restart;
/// the book's memory holds only recent ids, and its runs stay few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_moved_into_runs_keep_their_one_effect() {
    const CALLS: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let options = WriterOptions { snapshot_every_events_min: 16, ids_in_memory_max: 64, ..WriterOptions::default() };
    let partner = AccountId::new();
    let customer = AccountId::new();
    let book = BookId::of_partner(partner);
    let start = Timestamp::from_seconds(1_767_225_600);
    let call = |n: usize| sample_call(customer, format!("cdr-{n}"), start);
    let first: Vec<commands::CommandOutcome> = {
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let ledger = Ledger::open_with(store, options).await.unwrap();
        ledger.execute(open_partner(partner, "P-1", "0"), meta()).await.unwrap();
        ledger.execute(open_customer(customer, Some(partner), "C-1", "0"), meta()).await.unwrap();
        let mut first = Vec::with_capacity(CALLS);
        for chunk in (0..CALLS).collect::<Vec<_>>().chunks(64) {
            let answers =
                futures::future::join_all(chunk.iter().map(|&n| ledger.execute(call(n), keyed(format!("key-{n}"), 1))))
                    .await;
            for answer in answers {
                let outcome = answer.unwrap();
                assert!(!outcome.repeated);
                first.push(outcome);
            }
        }
        let state = ledger.book_state(book).await.unwrap();
        let in_memory = state.charged_cdrs.len() + state.idempotency.len();
        assert!(in_memory < CALLS / 4, "{in_memory} of {} ids still in memory", 2 * CALLS);
        repeats_have_no_second_effect(&ledger, &first, call).await;
        ledger.shutdown().await;
        first
    };

    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).unwrap());
    let loaded = load_book(&*store, book).await.unwrap();
    assert!(loaded.ids.len() as usize > CALLS, "most ids are in runs: {}", loaded.ids.len());
    assert!(loaded.ids.runs() <= 20, "merges keep the runs few: {}", loaded.ids.runs());
    let folded = fold_book(&*store, book).await.unwrap();
    loaded.matches_fold(&*store, &folded).await.unwrap();
    let ledger = Ledger::open_with(store.clone(), options).await.unwrap();
    repeats_have_no_second_effect(&ledger, &first, call).await;
    let found = ledger.charged_cdr(book, "cdr-5").await.unwrap().expect("an old CDR is found by its id");
    assert_eq!(found.event.envelope.version, first[5].events[0].event.envelope.version);
    let new = ledger.execute(call(CALLS), keyed(format!("key-{CALLS}"), 1)).await.unwrap();
    assert!(!new.repeated, "a new CDR is charged");
    ledger.shutdown().await;
    let charged = store
        .read_all(0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(e.event.payload, domain::Payload::CallCharged(_)))
        .count();
    assert_eq!(charged, CALLS + 1, "every CDR charged exactly once");

    // A run the disk damaged: the book is folded from its start instead, every id in memory.
    // The largest run the book's snapshot names (a merge that ended after the last save
    // leaves a run no snapshot names yet).
    let snapshot = store.get_snapshot(&book_snapshot_name(book)).await.unwrap().unwrap();
    let named = commands::snapshot::decode_book(&snapshot, book).unwrap().ids.runs;
    let largest = named.iter().max_by_key(|run| run.count).expect("the snapshot names id runs");
    let run = dir.path().join("snapshots").join(format!("{}.snapshot", largest.name));
    let mut bytes = std::fs::read(&run).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(&run, bytes).unwrap();
    let reloaded = load_book(&*store, book).await.unwrap();
    assert!(reloaded.ids.is_empty());
    assert_eq!(reloaded.state, fold_book(&*store, book).await.unwrap());
}

/// Every 7th call again, as it was, under another key, and its key with another request.
async fn repeats_have_no_second_effect(
    ledger: &Ledger,
    first: &[commands::CommandOutcome],
    call: impl Fn(usize) -> Command,
) {
    for n in (0..first.len()).step_by(7) {
        let again = ledger.execute(call(n), keyed(format!("key-{n}"), 1)).await.unwrap();
        assert!(again.repeated, "call {n} again");
        assert_eq!(again.events, first[n].events);
        let other_key = ledger.execute(call(n), keyed(format!("other-{n}"), 1)).await.unwrap();
        assert!(other_key.repeated, "CDR {n} under another key");
        assert_eq!(other_key.events, first[n].events[..1]);
        let reused = ledger.execute(call(n + 1_000_000), keyed(format!("key-{n}"), 2)).await;
        assert!(
            matches!(reused, Err(CommandError::Domain(domain::DomainError::IdempotencyKeyReused(_)))),
            "key {n} with another request: {reused:?}"
        );
    }
}
