//! One conformance suite for the `EventStore` trait, the same checks for every backend:
//!
//! - `on_sled::*` runs every check against a `SledStore` in a temp dir, always;
//! - `on_kurrentdb::*` runs the same checks against a real KurrentDB server when
//!   `TOLLBOOK_KURRENTDB_URL` holds its connection string (for example
//!   `kurrentdb://localhost:2113?tls=false`) and the `kurrentdb` feature is built. Without
//!   the variable those tests say on stderr that they were not run, and pass.
//!
//! Each check uses books of its own and assumes only what the trait promises, so it holds
//! on a shared server that has other data and other tests writing at the same time: the
//! checks of the global log look at their own books' events among whatever else is there.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Once};
use std::time::Duration;

use domain::testing::{amount, meta, open_partner};
use domain::{AccountId, BookId, BookState, Command, Decision, EventId, RecordedEvent, decide, seal};
use eventlog::chain::{self, EncodedEvent};
use eventlog::store::READ_EVENTS_MAX;
use eventlog::{BookAppend, EventStore, ExpectedVersion, SledOptions, SledStore, StoreError, open_store, verify_book};
use futures::StreamExt;
use futures::stream::BoxStream;

/// The connection string of the KurrentDB server to run the suite against.
const KURRENTDB_URL_VAR: &str = "TOLLBOOK_KURRENTDB_URL";
/// How long a subscription may take to deliver its next event before the check fails.
const SUBSCRIPTION_WAIT: Duration = Duration::from_secs(30);
/// How long a subscription is watched for an event that should not come.
const QUIET_WAIT: Duration = Duration::from_millis(300);

macro_rules! conformance_suite {
    ($($check:ident),+ $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _dir) = super::sled_store().await;
                    super::$check(store).await;
                }
            )+
        }

        mod on_kurrentdb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(store) = super::kurrentdb_store().await else { return };
                    super::$check(store).await;
                }
            )+
        }
    };
}

conformance_suite!(
    append_checks_the_expected_version,
    a_conflict_writes_nothing,
    a_batch_is_all_or_nothing,
    batches_of_many_books_append_together,
    one_writer_wins_a_race_for_a_book,
    read_stream_from_a_version,
    read_all_is_one_global_order_across_books,
    head_is_past_every_durable_event,
    read_raw_gives_the_stored_bytes,
    subscription_catches_up_then_goes_live,
    subscription_from_one_past_an_event_or_from_head,
);

async fn sled_store() -> (Arc<dyn EventStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = format!("sled:{}", dir.path().join("events").display());
    let store = open_store(&spec).await.expect("sled opens");
    (store, dir)
}

async fn kurrentdb_store() -> Option<Arc<dyn EventStore>> {
    static NOT_RUN: Once = Once::new();
    let url = std::env::var(KURRENTDB_URL_VAR).unwrap_or_default();
    if url.trim().is_empty() {
        NOT_RUN.call_once(|| {
            // Straight to stderr, past the test harness's capture: a skipped backend must
            // show in every run's output.
            let _ = writeln!(
                std::io::stderr(),
                "conformance: the KurrentDB checks were NOT RUN ({KURRENTDB_URL_VAR} is not set; set it to a \
                 connection string such as kurrentdb://localhost:2113?tls=false and build with --features kurrentdb)"
            );
        });
        return None;
    }
    let store = open_store(&url)
        .await
        .unwrap_or_else(|e| panic!("{KURRENTDB_URL_VAR} is set but the KurrentDB store cannot be opened: {e}"));
    Some(store)
}

// ---------------------------------------------------------------------------------------
// Fixtures

/// A book as its writer sees it: the state that the events decided so far lead to.
#[derive(Clone)]
struct Writer {
    state: BookState,
    partner: AccountId,
}

impl Writer {
    /// A writer of a new book (a partner's), so that checks never share a book.
    fn new() -> Self {
        let partner = AccountId::new();
        Writer { state: BookState::new(BookId::of_partner(partner)), partner }
    }

    fn book(&self) -> BookId {
        self.state.book
    }

    /// Decides `commands` commands (opening the partner first on a new book, then
    /// payments), seals and encodes their events as the book writer does, and moves the
    /// state on as if they were stored. One event per command.
    fn batch(&mut self, commands: usize) -> (ExpectedVersion, Vec<EncodedEvent>) {
        let expected = ExpectedVersion::before(self.state.next_version);
        let mut encoded = Vec::with_capacity(commands);
        for _ in 0..commands {
            let command = if self.state.next_version == 0 {
                open_partner(self.partner, &format!("P-{}", self.partner), "0")
            } else {
                Command::ReceivePayment { account: self.partner, amount: amount("1.25"), method: None, reference: None }
            };
            let Decision::Accept(payloads) = decide(&self.state, &command, &meta()).expect("accepted") else {
                panic!("a fresh command is not a repeat")
            };
            let mut bytes = Vec::new();
            let events = seal(&mut self.state, payloads, &meta(), |envelope, payload| {
                let (b, hash) = chain::encode(envelope, payload);
                bytes.push(b);
                hash
            });
            encoded.extend(events.into_iter().zip(bytes).map(|(event, bytes)| EncodedEvent { event, bytes }));
        }
        (expected, encoded)
    }
}

/// Appends the next `commands` commands of `writer`, which must go through, and returns
/// the events with the positions the store gave them.
async fn append(store: &dyn EventStore, writer: &mut Writer, commands: usize) -> Vec<RecordedEvent> {
    let (expected, encoded) = writer.batch(commands);
    let appended = store.append(writer.book(), expected, &encoded).await.expect("append goes through");
    assert_eq!(appended.positions.len(), encoded.len(), "one position per event");
    assert_increasing(&appended.positions);
    encoded
        .into_iter()
        .zip(appended.positions)
        .map(|(e, position)| RecordedEvent { position, event: e.event })
        .collect()
}

fn assert_increasing(positions: &[u64]) {
    for pair in positions.windows(2) {
        assert!(pair[0] < pair[1], "positions must be strictly increasing: {positions:?}");
    }
}

fn assert_conflict(result: Result<eventlog::Appended, StoreError>, expected: Option<u64>, actual: Option<u64>) {
    match result {
        Err(StoreError::WrongExpectedVersion { expected: e, actual: a }) => {
            assert_eq!((e, a), (expected, actual), "the conflict names the expectation and the stream's version")
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

async fn whole_stream(store: &dyn EventStore, book: BookId) -> Vec<RecordedEvent> {
    store.read_stream(book, 0, READ_EVENTS_MAX).await.expect("read_stream")
}

/// Every event of `books` in the global log from `from` on, read in pages of `page`
/// that resume one past the last event read, as a projection does. Checks that the
/// positions of everything read, other books' events included, strictly increase.
async fn global_log_of(store: &dyn EventStore, from: u64, page: usize, books: &HashSet<BookId>) -> Vec<RecordedEvent> {
    let mut ours = Vec::new();
    let mut from = from;
    let mut last = None;
    loop {
        let events = store.read_all(from, page).await.expect("read_all");
        let Some(tail) = events.last() else { return ours };
        assert!(events.len() <= page, "read_all returned more than asked for");
        for event in &events {
            assert!(event.position >= from, "read_all({from}) returned position {}", event.position);
            assert!(last.is_none_or(|l| event.position > l), "global log positions must strictly increase");
            last = Some(event.position);
        }
        from = tail.position + 1;
        ours.extend(events.into_iter().filter(|e| books.contains(&e.event.envelope.book)));
    }
}

/// The next event of `books` from `subscription`, skipping other books'.
async fn next_of(
    subscription: &mut BoxStream<'static, Result<RecordedEvent, StoreError>>,
    books: &HashSet<BookId>,
    last: &mut Option<u64>,
) -> RecordedEvent {
    loop {
        let event = tokio::time::timeout(SUBSCRIPTION_WAIT, subscription.next())
            .await
            .expect("the subscription delivers within the wait")
            .expect("the subscription does not end")
            .expect("the subscription does not fail");
        assert!(last.is_none_or(|l| event.position > l), "a subscription never repeats or goes back");
        *last = Some(event.position);
        if books.contains(&event.event.envelope.book) {
            return event;
        }
    }
}

/// Fails if `subscription` delivers another event of `books` soon.
async fn assert_quiet(
    subscription: &mut BoxStream<'static, Result<RecordedEvent, StoreError>>,
    books: &HashSet<BookId>,
) {
    let deadline = tokio::time::Instant::now() + QUIET_WAIT;
    while let Ok(next) = tokio::time::timeout_at(deadline, subscription.next()).await {
        let event = next.expect("the subscription does not end").expect("the subscription does not fail");
        assert!(!books.contains(&event.event.envelope.book), "unexpected event {:?}", event.event.envelope);
    }
}

fn ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.event.envelope.event_id).collect()
}

// ---------------------------------------------------------------------------------------
// The checks

/// A new book takes `NoStream`, then each batch the version of the last event before it;
/// the store gives one increasing position per event and reads back what was appended.
async fn append_checks_the_expected_version(store: Arc<dyn EventStore>) {
    let mut writer = Writer::new();
    let (expected, first) = writer.batch(1);
    assert_eq!(expected, ExpectedVersion::NoStream);
    let first_positions = store.append(writer.book(), expected, &first).await.expect("first append").positions;
    let (expected, second) = writer.batch(2);
    assert_eq!(expected, ExpectedVersion::Exact(0));
    let second_positions = store.append(writer.book(), expected, &second).await.expect("second append").positions;
    assert_eq!((first_positions.len(), second_positions.len()), (1, 2));
    assert!(first_positions[0] < second_positions[0]);
    assert_increasing(&second_positions);

    let stored = whole_stream(&*store, writer.book()).await;
    let appended: Vec<_> = first.iter().chain(&second).map(|e| e.event.clone()).collect();
    assert_eq!(stored.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), appended);
    let positions: Vec<_> = first_positions.iter().chain(&second_positions).copied().collect();
    assert_eq!(stored.iter().map(|e| e.position).collect::<Vec<_>>(), positions);
    assert!(
        store.append(writer.book(), ExpectedVersion::Exact(2), &[]).await.expect("empty append").positions.is_empty()
    );
}

/// Every wrong expectation is `WrongExpectedVersion` and leaves the book as it was.
async fn a_conflict_writes_nothing(store: Arc<dyn EventStore>) {
    // A stream that does not exist yet refuses an exact version (from a writer that
    // believes three events are stored).
    let mut ahead_of_nothing = Writer::new();
    ahead_of_nothing.batch(3);
    let (expected, events) = ahead_of_nothing.batch(1);
    assert_eq!(expected, ExpectedVersion::Exact(2));
    assert_conflict(store.append(ahead_of_nothing.book(), expected, &events).await, Some(2), None);
    assert!(whole_stream(&*store, ahead_of_nothing.book()).await.is_empty());

    let mut writer = Writer::new();
    let stale = writer.clone();
    let before = [append(&*store, &mut writer, 1).await, append(&*store, &mut writer, 2).await].concat();

    // A second writer that believes the book is new: NoStream on an existing stream.
    let (expected, events) = stale.clone().batch(2);
    assert_eq!(expected, ExpectedVersion::NoStream);
    assert_conflict(store.append(writer.book(), expected, &events).await, None, Some(2));

    // A writer that loaded the book at version 0 and decided on from there.
    let mut behind = stale.clone();
    behind.batch(1);
    let (expected, events) = behind.batch(3);
    assert_eq!(expected, ExpectedVersion::Exact(0));
    assert_conflict(store.append(writer.book(), expected, &events).await, Some(0), Some(2));

    // A writer ahead of the stream.
    let mut ahead = writer.clone();
    ahead.batch(2);
    let (expected, events) = ahead.batch(1);
    assert_eq!(expected, ExpectedVersion::Exact(4));
    assert_conflict(store.append(writer.book(), expected, &events).await, Some(4), Some(2));

    assert_eq!(whole_stream(&*store, writer.book()).await, before, "the refused appends wrote nothing");
    // The book goes on from where it was.
    let after = append(&*store, &mut writer, 1).await;
    assert_eq!(after[0].event.envelope.version, 3);
}

/// A batch appears whole, or not at all.
async fn a_batch_is_all_or_nothing(store: Arc<dyn EventStore>) {
    let mut writer = Writer::new();
    let stale = writer.clone();
    let opened = append(&*store, &mut writer, 1).await;
    let big = append(&*store, &mut writer, 40).await;
    let stored = whole_stream(&*store, writer.book()).await;
    assert_eq!(stored, [opened.clone(), big].concat());
    assert_eq!(stored.iter().map(|e| e.event.envelope.version).collect::<Vec<_>>(), (0..41).collect::<Vec<u64>>());

    // A conflicting batch of many events leaves none of them anywhere.
    let mut behind = stale;
    behind.batch(1);
    let (expected, refused) = behind.batch(30);
    assert_conflict(store.append(writer.book(), expected, &refused).await, Some(0), Some(40));
    assert_eq!(whole_stream(&*store, writer.book()).await, stored);
    let refused_ids: HashSet<EventId> = refused.iter().map(|e| e.event.envelope.event_id).collect();
    let books = HashSet::from([writer.book()]);
    let logged = global_log_of(&*store, opened[0].position, READ_EVENTS_MAX, &books).await;
    assert_eq!(logged, stored, "the global log holds the book's events once each, and nothing refused");
    assert!(logged.iter().all(|e| !refused_ids.contains(&e.event.envelope.event_id)));
}

/// Batches of several books appended in one call: each book's events get consecutive
/// versions and increasing positions, every book reads back its own, and the global log
/// holds them all once durable. One stale expectation among them: the sled store writes
/// none of the batches, and every backend refuses it with the conflict.
async fn batches_of_many_books_append_together(store: Arc<dyn EventStore>) {
    let mut writers: Vec<Writer> = (0..5).map(|_| Writer::new()).collect();
    for writer in &mut writers {
        append(&*store, writer, 1).await;
    }
    let batches: Vec<(ExpectedVersion, Vec<EncodedEvent>)> =
        writers.iter_mut().enumerate().map(|(n, writer)| writer.batch(n + 1)).collect();
    let appends: Vec<BookAppend<'_>> = writers
        .iter()
        .zip(&batches)
        .map(|(writer, (expected, events))| BookAppend { book: writer.book(), expected: *expected, events })
        .collect();
    let pending = store.append_many_pipelined(&appends).await.expect("the appends go through");
    pending.durable.await.expect("durable");
    assert_eq!(pending.positions.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let all: Vec<u64> = pending.positions.concat();
    assert_increasing(&all);
    for (writer, ((_, events), positions)) in writers.iter().zip(batches.iter().zip(&pending.positions)) {
        let stored = whole_stream(&*store, writer.book()).await;
        assert_eq!(ids(&stored[1..]), events.iter().map(|e| e.event.envelope.event_id).collect::<Vec<_>>());
        assert_eq!(stored[1..].iter().map(|e| e.position).collect::<Vec<_>>(), *positions);
    }
    let books: HashSet<BookId> = writers.iter().map(Writer::book).collect();
    let logged = global_log_of(&*store, all[0], READ_EVENTS_MAX, &books).await;
    assert_eq!(logged.iter().map(|e| e.position).collect::<Vec<_>>(), all);

    // One book's writer is stale: the call is refused with its conflict, and nothing
    // of it is stored (the stale book comes first, so that a backend appending book by
    // book fails before it appends anything; the sled store writes all or none anyway).
    let mut stale = writers[4].clone();
    let (_, behind) = stale.batch(1);
    let fresh: Vec<(ExpectedVersion, Vec<EncodedEvent>)> = writers[..4].iter_mut().map(|w| w.batch(2)).collect();
    let mut appends = vec![BookAppend { book: stale.book(), expected: ExpectedVersion::Exact(0), events: &behind }];
    appends.extend(writers[..4].iter().zip(&fresh).map(|(writer, (expected, events))| BookAppend {
        book: writer.book(),
        expected: *expected,
        events,
    }));
    let refused = store.append_many_pipelined(&appends).await.err();
    assert!(matches!(refused, Some(StoreError::WrongExpectedVersion { .. })), "{refused:?}");
    for (n, writer) in writers.iter().enumerate() {
        let decided_not_stored = if n < 4 { 2 } else { 0 };
        let stored = whole_stream(&*store, writer.book()).await.len() as u64;
        assert_eq!(stored, writer.state.next_version - decided_not_stored, "book {n}: nothing of the refused call");
    }
}

/// Two writers of one book racing with the same expectation: exactly one batch goes in,
/// whole, and the other is told of the conflict. This is what keeps several servers on
/// one cluster safe.
async fn one_writer_wins_a_race_for_a_book(store: Arc<dyn EventStore>) {
    let mut writer = Writer::new();
    let mut stored = append(&*store, &mut writer, 1).await;
    for _round in 0..5 {
        let (mut first, mut second) = (writer.clone(), writer.clone());
        let (expected, first_events) = first.batch(3);
        let (_, second_events) = second.batch(2);
        let book = writer.book();
        let (a, b) =
            tokio::join!(store.append(book, expected, &first_events), store.append(book, expected, &second_events));
        // The stream's last version once the winner's batch is in.
        let last_after = |events: &[EncodedEvent]| Some(writer.state.next_version - 1 + events.len() as u64);
        let (winner, winner_events, positions) = match (a, b) {
            (Ok(appended), refused) => {
                assert_conflict(refused, expected_version(expected), last_after(&first_events));
                (first, first_events, appended.positions)
            }
            (refused, Ok(appended)) => {
                assert_conflict(refused, expected_version(expected), last_after(&second_events));
                (second, second_events, appended.positions)
            }
            (a, b) => panic!("one of two racing appends must win: {a:?} {b:?}"),
        };
        stored.extend(
            winner_events.into_iter().zip(positions).map(|(e, position)| RecordedEvent { position, event: e.event }),
        );
        writer = winner;
        assert_eq!(whole_stream(&*store, book).await, stored, "exactly the winner's batch went in");
    }
}

fn expected_version(expected: ExpectedVersion) -> Option<u64> {
    match expected {
        ExpectedVersion::NoStream => None,
        ExpectedVersion::Exact(v) => Some(v),
    }
}

/// A stream reads from any version, in order, at most `max` at a time.
async fn read_stream_from_a_version(store: Arc<dyn EventStore>) {
    let mut writer = Writer::new();
    let events = [
        append(&*store, &mut writer, 1).await,
        append(&*store, &mut writer, 4).await,
        append(&*store, &mut writer, 5).await,
    ]
    .concat();
    let book = writer.book();
    assert_eq!(whole_stream(&*store, book).await, events);
    assert_eq!(store.read_stream(book, 4, 3).await.unwrap(), events[4..7]);
    assert_eq!(store.read_stream(book, 7, 100).await.unwrap(), events[7..]);
    assert_eq!(store.read_stream(book, 9, 1).await.unwrap(), events[9..]);
    assert!(store.read_stream(book, 10, 100).await.unwrap().is_empty());
    assert!(store.read_stream(book, 3, 0).await.unwrap().is_empty());
    assert!(store.read_stream(Writer::new().book(), 0, 100).await.unwrap().is_empty(), "a book never written is empty");
}

/// Appends to several books form one global order: each event once, in append order,
/// at the position its append gave, and a read starting at an event's own position
/// starts with that event.
async fn read_all_is_one_global_order_across_books(store: Arc<dyn EventStore>) {
    let head = store.head().await.unwrap();
    let (mut a, mut b, mut c) = (Writer::new(), Writer::new(), Writer::new());
    let mut appended = Vec::new();
    appended.extend(append(&*store, &mut a, 2).await);
    appended.extend(append(&*store, &mut b, 1).await);
    appended.extend(append(&*store, &mut a, 1).await);
    appended.extend(append(&*store, &mut c, 3).await);
    appended.extend(append(&*store, &mut b, 2).await);
    appended.extend(append(&*store, &mut c, 1).await);
    assert_increasing(&appended.iter().map(|e| e.position).collect::<Vec<_>>());
    let books = HashSet::from([a.book(), b.book(), c.book()]);

    for page in [1, 4, READ_EVENTS_MAX] {
        assert_eq!(global_log_of(&*store, head, page, &books).await, appended, "pages of {page}");
    }
    for event in &appended {
        let from_here = store.read_all(event.position, 1).await.unwrap();
        assert_eq!(from_here, std::slice::from_ref(event), "read_all from an event's own position starts with it");
    }
    // By positions: any ascending subset, across batches, comes back as it is in the log;
    // positions that hold no event (0, past the head) are left out.
    let every_other: Vec<RecordedEvent> = appended.iter().step_by(2).cloned().collect();
    let mut asked: Vec<u64> = every_other.iter().map(|e| e.position).collect();
    asked.insert(0, 0);
    asked.push(u64::MAX - 1);
    assert_eq!(store.read_positions(&asked).await.unwrap(), every_other, "read_positions");
    assert_eq!(store.read_positions(&[]).await.unwrap(), Vec::<RecordedEvent>::new());
    // 0 and 1 are both the start of the log.
    let (zero, one) = (store.read_all(0, 1).await.unwrap(), store.read_all(1, 1).await.unwrap());
    assert_eq!(zero, one);
    assert!(zero[0].position <= appended[0].position);
}

/// `head()` is past every event appended before it was asked, and every later event
/// comes at or after it.
async fn head_is_past_every_durable_event(store: Arc<dyn EventStore>) {
    let mut writer = Writer::new();
    let books = HashSet::from([writer.book()]);
    let before = append(&*store, &mut writer, 3).await;
    let head = store.head().await.unwrap();
    assert!(before.iter().all(|e| e.position < head), "head {head} is past {before:?}");
    assert!(global_log_of(&*store, head, READ_EVENTS_MAX, &books).await.is_empty());
    let after = append(&*store, &mut writer, 2).await;
    assert!(after.iter().all(|e| e.position >= head));
    assert_eq!(global_log_of(&*store, head, READ_EVENTS_MAX, &books).await, after);
    assert!(store.head().await.unwrap() > after[1].position);
}

/// `read_raw` gives back the exact bytes that were appended, so the hash chain verifies
/// through the store; there is nothing at the head.
async fn read_raw_gives_the_stored_bytes(store: Arc<dyn EventStore>) {
    let mut writer = Writer::new();
    let (expected, encoded) = writer.batch(4);
    let appended = store.append(writer.book(), expected, &encoded).await.unwrap();
    for (event, position) in encoded.iter().zip(&appended.positions) {
        assert_eq!(store.read_raw(*position).await.unwrap().as_deref(), Some(event.bytes.as_slice()));
    }
    assert_eq!(verify_book(&*store, writer.book()).await.unwrap(), Ok(4));
    let head = store.head().await.unwrap();
    assert_eq!(store.read_raw(head).await.unwrap(), None);
}

/// A subscription from an event's position delivers the events already there from that
/// one on, then every new event as it is appended — by several tasks to several books at
/// once — each exactly once and in global order, the same order `read_all` gives.
async fn subscription_catches_up_then_goes_live(store: Arc<dyn EventStore>) {
    let mut first = Writer::new();
    let existing = [
        append(&*store, &mut first, 2).await,
        append(&*store, &mut first, 3).await,
        append(&*store, &mut first, 1).await,
    ]
    .concat();
    let from = existing[2].position;
    let mut subscription = store.subscribe_all(from);

    let mut books = HashSet::from([first.book()]);
    let mut writers: Vec<Writer> = (0..4).map(|_| Writer::new()).collect();
    books.extend(writers.iter().map(Writer::book));

    // Catch-up: what was there before subscribing.
    let mut last = None;
    let mut received = Vec::new();
    for _ in 0..2 {
        received.push(next_of(&mut subscription, &books, &mut last).await);
    }
    assert_eq!(received, existing[2..4], "catch-up starts at the event at `from`, inclusive");

    // Live: four tasks append to their own books while the subscription is consumed, and
    // the first book gets one more batch.
    let tasks: Vec<_> = writers
        .drain(..)
        .map(|mut writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut appended = Vec::new();
                for size in [2, 1, 3] {
                    appended.extend(append(&*store, &mut writer, size).await);
                    tokio::task::yield_now().await;
                }
                appended
            })
        })
        .collect();
    let mut expected: Vec<RecordedEvent> = existing[2..].to_vec();
    expected.extend(append(&*store, &mut first, 2).await);
    for task in tasks {
        expected.extend(task.await.expect("writer task"));
    }
    while received.len() < expected.len() {
        received.push(next_of(&mut subscription, &books, &mut last).await);
    }
    assert_quiet(&mut subscription, &books).await;

    let received_ids: HashSet<EventId> = ids(&received).into_iter().collect();
    assert_eq!(received_ids.len(), received.len(), "no event delivered twice");
    let by_id: HashMap<EventId, &RecordedEvent> = received.iter().map(|e| (e.event.envelope.event_id, e)).collect();
    for event in &expected {
        assert_eq!(by_id.get(&event.event.envelope.event_id), Some(&event), "delivered as appended, none missing");
    }
    // No gap: the subscription saw exactly what the global log holds from `from` on.
    assert_eq!(received, global_log_of(&*store, from, READ_EVENTS_MAX, &books).await);
}

/// A subscription from one past an event, or from `head()`, delivers only what comes
/// after: nothing already stored, everything appended later.
async fn subscription_from_one_past_an_event_or_from_head(store: Arc<dyn EventStore>) {
    let mut writer = Writer::new();
    let books = HashSet::from([writer.book()]);
    let before = append(&*store, &mut writer, 3).await;
    let mut after_last = store.subscribe_all(before[2].position + 1);
    let mut from_head = store.subscribe_all(store.head().await.unwrap());
    let mut after_second = store.subscribe_all(before[1].position + 1);
    assert_quiet(&mut after_last, &books).await;

    let later = append(&*store, &mut writer, 2).await;
    for (name, subscription, expected) in [
        ("one past the last event", &mut after_last, later.clone()),
        ("the head", &mut from_head, later.clone()),
        ("one past the second event", &mut after_second, [&before[2..], &later[..]].concat()),
    ] {
        let mut last = None;
        let mut received = Vec::new();
        while received.len() < expected.len() {
            received.push(next_of(subscription, &books, &mut last).await);
        }
        assert_eq!(received, expected, "from {name}");
        assert_quiet(subscription, &books).await;
    }
}

// ---------------------------------------------------------------------------------------
// sled only: the segments are the log, sled only indexes them

/// The segments hold the events; sled's index is made durable only at checkpoints. A
/// store whose sled lost the index of its latest batches (a crash) indexes them again
/// from the segments when it opens: readable by position and by stream, and the log goes
/// on after them.
#[tokio::test]
async fn sled_indexes_again_what_only_the_segments_hold() {
    let source_dir = tempfile::tempdir().expect("temp dir");
    let source: Arc<dyn EventStore> = Arc::new(SledStore::open(source_dir.path()).expect("sled opens"));
    let (mut first, mut second) = (Writer::new(), Writer::new());
    let mut written = Vec::new();
    for size in [1, 3, 2, 5] {
        written.extend(append(&*source, &mut first, size).await);
        written.extend(append(&*source, &mut second, 1).await);
    }
    let segment = |dir: &std::path::Path| dir.join("segments").join("segment-00000000000000000001.log");
    let segment_bytes = std::fs::read(segment(source_dir.path())).unwrap();
    drop(source);

    // A store whose sled never indexed those batches, with the segment in place.
    let dir = tempfile::tempdir().expect("temp dir");
    drop(SledStore::open(dir.path()).expect("sled opens"));
    std::fs::write(segment(dir.path()), &segment_bytes).unwrap();
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("sled reopens"));
    assert_eq!(store.head().await.unwrap(), written.last().unwrap().position + 1);
    assert_eq!(ids(&store.read_all(1, 1000).await.unwrap()), ids(&written));
    let of_first: Vec<_> = written.iter().filter(|e| e.event.envelope.book == first.book()).cloned().collect();
    assert_eq!(ids(&whole_stream(&*store, first.book()).await), ids(&of_first));
    let more = append(&*store, &mut first, 2).await;
    assert_eq!(more[0].position, written.last().unwrap().position + 1);
    drop(store);

    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("sled reopens"));
    assert_eq!(store.read_all(1, 1000).await.unwrap().len(), written.len() + more.len());
    let positions: Vec<u64> = written.iter().map(|e| e.position).rev().step_by(3).collect();
    let read = store.read_positions(&positions).await.unwrap();
    assert_eq!(read.iter().map(|e| e.position).collect::<Vec<_>>(), positions);
}

/// Small segments: a log spread over many files reads back whole, in pages that cross
/// files, by stream and by position, before and after a reopen; each new segment was a
/// checkpoint.
#[tokio::test]
async fn sled_reads_a_log_spread_over_many_segments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SledOptions { segment_bytes_max: 4096 };
    let store = SledStore::open_with(dir.path(), options).expect("sled opens");
    let (mut first, mut second) = (Writer::new(), Writer::new());
    let mut written = Vec::new();
    for round in 0..60 {
        written.extend(append(&store, &mut first, 1 + round % 4).await);
        written.extend(append(&store, &mut second, 1).await);
    }
    let files = std::fs::read_dir(dir.path().join("segments")).unwrap().count();
    assert!(files > 5, "{files} segments");
    for _ in 0..100 {
        if store.stats().checkpoints > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.stats().checkpoints > 0, "a new segment asks for a checkpoint");
    let check = |store: Arc<dyn EventStore>, written: Vec<RecordedEvent>, book: BookId| async move {
        let mut paged = Vec::new();
        let mut from = 1;
        loop {
            let page = store.read_all(from, 7).await.unwrap();
            let Some(last) = page.last() else { break };
            from = last.position + 1;
            paged.extend(page);
        }
        assert_eq!(ids(&paged), ids(&written));
        let of_book: Vec<_> = written.iter().filter(|e| e.event.envelope.book == book).cloned().collect();
        assert_eq!(ids(&whole_stream(&*store, book).await), ids(&of_book));
        let positions: Vec<u64> = written.iter().map(|e| e.position).step_by(5).collect();
        assert_eq!(
            store.read_positions(&positions).await.unwrap().iter().map(|e| e.position).collect::<Vec<_>>(),
            positions
        );
    };
    check(Arc::new(store), written.clone(), first.book()).await;
    let reopened = SledStore::open_with(dir.path(), options).expect("sled reopens");
    check(Arc::new(reopened), written, first.book()).await;
}

/// A power cut can take the segments' unsynced tail. In a log indexed by an earlier
/// release, sled's index of that tail could survive (a checkpoint flushed it): the open
/// takes those entries out, so the log, the stream and the next append agree on where
/// the book is.
#[tokio::test]
async fn sled_takes_back_the_index_of_records_that_did_not_survive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("sled opens"));
    let mut writer = Writer::new();
    let kept = append(&*store, &mut writer, 3).await;
    let before_lost = writer.clone();
    let lost = append(&*store, &mut writer, 2).await;
    drop(store);
    // The state a power cut leaves: the last record half on disk, no index file for the
    // segment being written (one is written only at a clean stop), and an earlier
    // release's sled index of both batches durable, with its checkpoint from before them.
    let segments = dir.path().join("segments");
    std::fs::remove_file(segments.join("segment-00000000000000000001.idx")).unwrap();
    let segment = segments.join("segment-00000000000000000001.log");
    let bytes = segment_records(&segment);
    {
        let db = sled::open(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        earlier_release_index(&log, &bytes, 1);
        let mut checkpoint = 1u64.to_be_bytes().to_vec();
        checkpoint.extend_from_slice(&0u64.to_be_bytes());
        checkpoint.extend_from_slice(&1u64.to_be_bytes());
        log.insert(b"C", checkpoint).unwrap();
        db.flush().unwrap();
    }
    let unsynced_from = bytes.len() - 10;
    std::fs::write(&segment, &bytes[..unsynced_from]).unwrap();

    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("sled reopens"));
    assert_eq!(store.head().await.unwrap(), lost[0].position);
    assert_eq!(ids(&whole_stream(&*store, writer.book()).await), ids(&kept));
    assert!(store.read_positions(&[lost[0].position]).await.unwrap().is_empty());
    let mut writer = before_lost;
    let again = append(&*store, &mut writer, 1).await;
    assert_eq!(again[0].position, lost[0].position);
    assert_eq!(again[0].event.envelope.version, lost[0].event.envelope.version);
    drop(store);
    let db = sled::open(dir.path()).unwrap();
    let log = db.open_tree("log").unwrap();
    assert_eq!(log.len(), 0, "the earlier release's index is out of sled: {:?}", log.iter().keys().next());
}

/// Where the records of a segment file's `bytes` end: after them come the zeros the
/// store writes ahead (a zero where a record's length is due).
fn records_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let body_len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if body_len == 0 || at + 8 + body_len > bytes.len() {
            break;
        }
        at += 8 + body_len;
    }
    at
}

/// A segment file's records, without the zeros written ahead of them.
fn segment_records(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let end = records_end(&bytes);
    assert!(bytes[end..].iter().all(|b| *b == 0), "only zeros follow the records of {}", path.display());
    bytes.truncate(end);
    bytes
}

/// Writes the sled index that releases before the segment index files kept, for the
/// records of segment `sequence` (`bytes`): `F` + first position -> (segment, offset,
/// body length, count, book, first version), `S` + book + first version -> (first
/// position, count).
fn earlier_release_index(log: &sled::Tree, bytes: &[u8], sequence: u64) -> usize {
    let mut at = 0;
    let mut records = 0;
    while at + 8 <= bytes.len() {
        let body_len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let Some(body) = bytes.get(at + 8..at + 8 + body_len) else { break };
        let first_position = u64::from_be_bytes(body[..8].try_into().unwrap());
        let book = &body[8..24];
        let first_version = &body[24..32];
        let count = u32::from_le_bytes(body[32..36].try_into().unwrap());
        let mut f_value = sequence.to_be_bytes().to_vec();
        f_value.extend_from_slice(&(at as u64).to_be_bytes());
        f_value.extend_from_slice(&(body_len as u32).to_be_bytes());
        f_value.extend_from_slice(&count.to_be_bytes());
        f_value.extend_from_slice(book);
        f_value.extend_from_slice(first_version);
        let mut f_key = vec![b'F'];
        f_key.extend_from_slice(&first_position.to_be_bytes());
        let mut s_key = vec![b'S'];
        s_key.extend_from_slice(book);
        s_key.extend_from_slice(first_version);
        let mut s_value = first_position.to_be_bytes().to_vec();
        s_value.extend_from_slice(&count.to_be_bytes());
        log.insert(f_key, f_value).unwrap();
        log.insert(s_key, s_value).unwrap();
        at += 8 + body_len;
        records += 1;
    }
    records
}

/// A log written before the segments (batches stored in sled under `L` keys) opens as
/// it is: its events read back by position, by stream and in pages that cross into the
/// segments, and new batches follow at the next position and version.
#[tokio::test]
async fn sled_reads_a_log_of_the_layout_before_the_segments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = Writer::new();
    let legacy = write_layout_before_segments(dir.path(), &mut writer, &[2, 3]);
    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("sled opens a legacy log"));
    assert_eq!(ids(&store.read_all(1, 100).await.unwrap()), ids(&legacy));
    let added = append(&*store, &mut writer, 2).await;
    assert_eq!(added[0].position, legacy.last().unwrap().position + 1);
    drop(store);

    let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path()).expect("sled reopens"));
    let everything: Vec<RecordedEvent> = legacy.iter().chain(&added).cloned().collect();
    assert_eq!(ids(&whole_stream(&*store, writer.book()).await), ids(&everything));
    assert_eq!(ids(&store.read_all(4, 3).await.unwrap()), ids(&everything[3..6]));
    let read = store.read_positions(&[2, 6]).await.unwrap();
    assert_eq!(ids(&read), ids(&[everything[1].clone(), everything[5].clone()]));
    assert!(store.read_raw(6).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------
// sled only: the segment index (in memory for the segment being written, `.idx` files for
// the closed ones)

/// The segments of a store's directory, oldest first, and the index file beside each.
fn segment_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    let mut logs: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.into_iter().map(|log| (log.clone(), log.with_extension("idx"))).collect()
}

/// The whole durable log, in pages of `page`.
async fn read_everything(store: &dyn EventStore, page: usize) -> Vec<RecordedEvent> {
    let mut read = Vec::new();
    let mut from = 1;
    loop {
        let chunk = store.read_all(from, page).await.expect("read_all");
        let Some(last) = chunk.last() else { return read };
        from = last.position + 1;
        read.extend(chunk);
    }
}

/// Checks every read of `store` against `model` (the log, in order): the global log in
/// pages, each book's stream from every version with small and large pages, and
/// positions read out of order, past the head included.
async fn check_against_model(store: &dyn EventStore, model: &[RecordedEvent], books: &[BookId], context: &str) {
    assert_eq!(ids(&read_everything(store, 5).await), ids(model), "{context}: read_all");
    let head = model.last().map_or(1, |e| e.position + 1);
    assert_eq!(store.head().await.unwrap(), head, "{context}: head");
    for &book in books {
        let of_book: Vec<&RecordedEvent> = model.iter().filter(|e| e.event.envelope.book == book).collect();
        for from_version in 0..=of_book.len() as u64 + 1 {
            for max in [1, 3, READ_EVENTS_MAX] {
                let read = store.read_stream(book, from_version, max).await.unwrap();
                let expected: Vec<RecordedEvent> = of_book
                    .iter()
                    .filter(|e| e.event.envelope.version >= from_version)
                    .take(max)
                    .map(|e| (*e).clone())
                    .collect();
                assert_eq!(
                    read.iter().map(|e| (e.position, e.event.envelope.event_id)).collect::<Vec<_>>(),
                    expected.iter().map(|e| (e.position, e.event.envelope.event_id)).collect::<Vec<_>>(),
                    "{context}: stream of {book:?} from version {from_version}, at most {max}"
                );
            }
        }
    }
    let mut positions: Vec<u64> = model.iter().map(|e| e.position).rev().step_by(2).collect();
    positions.extend([head, head + 7, 0]);
    let read = store.read_positions(&positions).await.unwrap();
    let expected: Vec<u64> = positions.iter().copied().filter(|p| *p >= 1 && *p < head).collect();
    assert_eq!(read.iter().map(|e| e.position).collect::<Vec<_>>(), expected, "{context}: read_positions");
    let by_position: HashMap<u64, EventId> = model.iter().map(|e| (e.position, e.event.envelope.event_id)).collect();
    for event in &read {
        assert_eq!(by_position[&event.position], event.event.envelope.event_id, "{context}: read_positions");
    }
}

/// One step of the model test: append a batch of `size` events to book `book` (with the
/// next book's batch in the same write when `with_next`), or close and reopen the store.
#[derive(Clone, Debug)]
enum Step {
    Append { book: usize, size: usize, with_next: bool },
    Reopen,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        8 => (0usize..4, 1usize..5, any::<bool>()).prop_map(|(book, size, with_next)| Step::Append { book, size, with_next }),
        1 => Just(Step::Reopen),
    ]
}

async fn run_model(steps: Vec<Step>, segment_bytes_max: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SledOptions { segment_bytes_max };
    let mut store = SledStore::open_with(dir.path(), options).expect("sled opens");
    let mut writers: Vec<Writer> = (0..4).map(|_| Writer::new()).collect();
    let books: Vec<BookId> = writers.iter().map(Writer::book).collect();
    let mut model: Vec<RecordedEvent> = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        match *step {
            Step::Append { book, size, with_next } => {
                let mut chosen = vec![book];
                if with_next {
                    chosen.push((book + 1) % writers.len());
                }
                let batches: Vec<(BookId, ExpectedVersion, Vec<EncodedEvent>)> = chosen
                    .iter()
                    .map(|&b| {
                        let (expected, encoded) = writers[b].batch(size);
                        (writers[b].book(), expected, encoded)
                    })
                    .collect();
                let appends: Vec<BookAppend> = batches
                    .iter()
                    .map(|(book, expected, events)| BookAppend { book: *book, expected: *expected, events })
                    .collect();
                let pending = store.append_many_pipelined(&appends).await.expect("append goes through");
                pending.durable.await.expect("durable");
                for ((_, _, encoded), positions) in batches.into_iter().zip(pending.positions) {
                    model.extend(
                        encoded
                            .into_iter()
                            .zip(positions)
                            .map(|(e, position)| RecordedEvent { position, event: e.event }),
                    );
                }
            }
            Step::Reopen => {
                drop(store);
                store = SledStore::open_with(dir.path(), options).expect("sled reopens");
                check_against_model(&store, &model, &books, &format!("reopened after step {n}")).await;
            }
        }
    }
    check_against_model(&store, &model, &books, "at the end").await;
    drop(store);
    let store = SledStore::open_with(dir.path(), options).expect("sled reopens");
    check_against_model(&store, &model, &books, "reopened at the end").await;
    // Every closed segment has its index file, and so has the last after a clean close.
    for (log, idx) in segment_files(dir.path()) {
        assert!(idx.exists(), "{} has no index file", log.display());
    }
    // Appends go on where the model is, for every book.
    for writer in &mut writers {
        model.extend(append(&store, writer, 1).await);
    }
    check_against_model(&store, &model, &books, "after more appends").await;
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 10, ..Default::default() })]

    /// Random batches of random books over small segments, with reopens: every read
    /// agrees with a model of the log, before and after each reopen.
    #[test]
    fn sled_reads_back_random_batches_over_small_segments(
        steps in proptest::collection::vec(step(), 1..60),
        segment_bytes_max in 1_000u64..6_000,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run_model(steps, segment_bytes_max));
    }
}

/// A closed segment followed by zeros (a crash before its cut back to its records was
/// durable) opens: it is cut again and read back whole. Non-zero bytes there are damage.
#[tokio::test]
async fn sled_cuts_zeros_off_a_closed_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SledOptions { segment_bytes_max: 4096 };
    let mut writers = [Writer::new(), Writer::new()];
    let books: Vec<BookId> = writers.iter().map(Writer::book).collect();
    let store = SledStore::open_with(dir.path(), options).expect("sled opens");
    let written = fill_segments(&store, dir.path(), &mut writers, 3).await;
    drop(store);
    let (closed, closed_idx) = segment_files(dir.path()).remove(0);
    let records = std::fs::read(&closed).unwrap();
    assert_eq!(records_end(&records), records.len(), "a closed segment is its records");
    let mut with_zeros = records.clone();
    with_zeros.resize(records.len() + 3000, 0);
    std::fs::write(&closed, &with_zeros).unwrap();
    std::fs::remove_file(&closed_idx).unwrap();
    let store = SledStore::open_with(dir.path(), options).expect("sled opens a closed segment with zeros after it");
    check_against_model(&store, &written, &books, "zeros cut off").await;
    assert_eq!(std::fs::read(&closed).unwrap(), records);
    drop(store);

    with_zeros[records.len() + 100] = 1;
    std::fs::write(&closed, &with_zeros).unwrap();
    std::fs::remove_file(&closed_idx).unwrap();
    assert!(matches!(SledStore::open_with(dir.path(), options), Err(StoreError::Corrupt { .. })));
}

/// Writes batches of two books, one to four events each, until the store has at least
/// `segments` segments. Returns the log.
async fn fill_segments(
    store: &SledStore,
    dir: &std::path::Path,
    writers: &mut [Writer],
    segments: usize,
) -> Vec<RecordedEvent> {
    let mut written = Vec::new();
    let mut round = 0;
    while segment_files(dir).len() < segments {
        let writer = &mut writers[round % writers.len()];
        written.extend(append(store, writer, 1 + round % 4).await);
        round += 1;
    }
    written
}

/// A closed segment's index file that is missing, damaged, cut short, another
/// segment's, or a leftover temporary file: the open scans the segment instead, reads
/// the log back whole, and writes the index file again, the same bytes as before.
#[tokio::test]
async fn sled_rebuilds_index_files_that_are_missing_or_damaged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SledOptions { segment_bytes_max: 2048 };
    let store = SledStore::open_with(dir.path(), options).expect("sled opens");
    let mut writers = [Writer::new(), Writer::new()];
    let books: Vec<BookId> = writers.iter().map(Writer::book).collect();
    let written = fill_segments(&store, dir.path(), &mut writers, 7).await;
    drop(store);
    let files = segment_files(dir.path());
    let originals: Vec<Vec<u8>> =
        files.iter().map(|(_, idx)| std::fs::read(idx).expect("every segment has its index")).collect();

    std::fs::remove_file(&files[0].1).unwrap();
    let mut flipped = originals[1].clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&files[1].1, flipped).unwrap();
    std::fs::write(&files[2].1, &originals[2][..originals[2].len() - 3]).unwrap();
    std::fs::write(&files[3].1, &originals[4]).unwrap();
    std::fs::write(files[4].1.with_extension("idx.tmp"), b"half written").unwrap();
    // The last segment's, written at the close: also scanned when missing.
    std::fs::remove_file(&files[files.len() - 1].1).unwrap();

    let store = SledStore::open_with(dir.path(), options).expect("sled reopens");
    check_against_model(&store, &written, &books, "after rebuilding").await;
    for (n, (log, idx)) in files.iter().enumerate().take(files.len() - 1) {
        assert_eq!(std::fs::read(idx).unwrap(), originals[n], "the index of {} is written again", log.display());
    }
    assert!(!files[4].1.with_extension("idx.tmp").exists(), "a temporary file is removed");
    let mut written = written;
    written.extend(append(&store, &mut writers[0], 2).await);
    drop(store);
    let store = SledStore::open_with(dir.path(), options).expect("sled reopens");
    check_against_model(&store, &written, &books, "reopened after rebuilding").await;
}

/// The end position an index file's header names.
fn index_end_position(idx: &std::path::Path) -> u64 {
    let bytes = std::fs::read(idx).unwrap();
    u64::from_le_bytes(bytes[40..48].try_into().unwrap())
}

/// A crash leaves the last segment with a record torn in the middle, and either no
/// index file for it or one from an earlier clean stop that covers only its start. The
/// open cuts the torn record, indexes nothing past the last whole record, and the log
/// goes on from there: the next append takes the torn batch's position and version.
#[tokio::test]
async fn sled_cuts_a_torn_last_record_and_indexes_nothing_past_it() {
    for keep_earlier_index in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SledOptions { segment_bytes_max: 8192 };
        let mut writers = [Writer::new(), Writer::new()];
        let books: Vec<BookId> = writers.iter().map(Writer::book).collect();
        let store = SledStore::open_with(dir.path(), options).expect("sled opens");
        let mut written = fill_segments(&store, dir.path(), &mut writers, 3).await;
        drop(store);
        let (last_log, last_idx) = segment_files(dir.path()).pop().unwrap();
        let earlier_index = std::fs::read(&last_idx).unwrap();

        let store = SledStore::open_with(dir.path(), options).expect("sled reopens");
        let before_torn = writers[1].clone();
        let whole = append(&store, &mut writers[0], 1).await;
        let torn_at = segment_records(&last_log).len() as u64;
        let torn = append(&store, &mut writers[1], 3).await;
        assert_eq!(segment_files(dir.path()).last().unwrap().0, last_log, "still the same segment");
        drop(store);
        written.extend(whole);
        if keep_earlier_index {
            std::fs::write(&last_idx, &earlier_index).unwrap();
        } else {
            std::fs::remove_file(&last_idx).unwrap();
        }
        let bytes = segment_records(&last_log);
        let cut = torn_at as usize + (bytes.len() - torn_at as usize) / 2;
        std::fs::write(&last_log, &bytes[..cut]).unwrap();

        let store = SledStore::open_with(dir.path(), options).expect("sled reopens after the crash");
        // Zeros may already be written ahead again; the torn record's bytes are gone.
        assert_eq!(segment_records(&last_log).len() as u64, torn_at, "the torn record is cut off");
        check_against_model(&store, &written, &books, "after the cut").await;
        assert!(store.read_positions(&[torn[0].position, torn[2].position]).await.unwrap().is_empty());
        let mut writer = before_torn;
        let again = append(&store, &mut writer, 1).await;
        assert_eq!(again[0].position, torn[0].position, "the torn batch's position is taken again");
        assert_eq!(again[0].event.envelope.version, torn[0].event.envelope.version);
        written.extend(again);
        drop(store);
        assert_eq!(index_end_position(&last_idx), torn[0].position + 1, "the index ends at the last whole record");
        let store = SledStore::open_with(dir.path(), options).expect("sled reopens");
        check_against_model(&store, &written, &books, "reopened after the cut").await;
    }
}

/// Writes batches of `writer` in the layout before the segments: `L` + first position
/// -> the framed events, `S` + book + first version -> (first position, count), from
/// position 1 on.
fn write_layout_before_segments(dir: &std::path::Path, writer: &mut Writer, sizes: &[usize]) -> Vec<RecordedEvent> {
    let db = sled::open(dir).unwrap();
    let log = db.open_tree("log").unwrap();
    let mut legacy = Vec::new();
    let mut position = 1u64;
    for &size in sizes {
        let (expected, encoded) = writer.batch(size);
        let first_version = match expected {
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => v + 1,
        };
        let mut framed = (encoded.len() as u32).to_le_bytes().to_vec();
        for e in &encoded {
            framed.extend_from_slice(&(e.bytes.len() as u32).to_le_bytes());
            framed.extend_from_slice(&e.bytes);
        }
        let mut log_key = vec![b'L'];
        log_key.extend_from_slice(&position.to_be_bytes());
        let mut stream_key = vec![b'S'];
        stream_key.extend_from_slice(writer.book().0.as_bytes());
        stream_key.extend_from_slice(&first_version.to_be_bytes());
        let mut batch_value = position.to_be_bytes().to_vec();
        batch_value.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        log.insert(log_key, framed).unwrap();
        log.insert(stream_key, batch_value).unwrap();
        for e in encoded {
            legacy.push(RecordedEvent { position, event: e.event });
            position += 1;
        }
    }
    db.flush().unwrap();
    legacy
}

/// A data directory of an earlier release: batches in sled (`L`), then segments indexed
/// in sled (`F`, `S`, the checkpoint `C`) and no index files. It opens and reads as
/// before; the open writes the index files from the segments and takes the `F` and `S`
/// entries of the segments out of sled, keeping the `L` batches and their `S` entries;
/// the books go on at their next versions, a book seen only before the restart too.
#[tokio::test]
async fn sled_opens_a_log_indexed_in_sled_by_an_earlier_release() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SledOptions { segment_bytes_max: 2048 };
    let mut writers = [Writer::new(), Writer::new(), Writer::new()];
    let books: Vec<BookId> = writers.iter().map(Writer::book).collect();
    let mut written = write_layout_before_segments(dir.path(), &mut writers[0], &[2, 3]);
    let store = SledStore::open_with(dir.path(), options).expect("sled opens");
    written.extend(fill_segments(&store, dir.path(), &mut writers[..2], 5).await);
    written.extend(append(&store, &mut writers[2], 2).await);
    drop(store);
    // What the earlier release left: no index files, sled's index of every segment,
    // with its checkpoint at the start of the last segment.
    let files = segment_files(dir.path());
    let mut records = 0;
    {
        let db = sled::open(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        for (sequence, (segment, idx)) in (1..).zip(&files) {
            std::fs::remove_file(idx).unwrap();
            records += earlier_release_index(&log, &segment_records(segment), sequence);
        }
        let last_segment = std::fs::read(&files[files.len() - 1].0).unwrap();
        let last_start = u64::from_be_bytes(last_segment[8..16].try_into().unwrap());
        let mut checkpoint = (files.len() as u64).to_be_bytes().to_vec();
        checkpoint.extend_from_slice(&0u64.to_be_bytes());
        checkpoint.extend_from_slice(&last_start.to_be_bytes());
        log.insert(b"C", checkpoint).unwrap();
        db.flush().unwrap();
    }
    assert!(records > 5);

    let store = SledStore::open_with(dir.path(), options).expect("sled opens the earlier release's log");
    check_against_model(&store, &written, &books, "opened").await;
    for (log, idx) in files.iter().take(files.len() - 1) {
        assert!(idx.exists(), "{} is indexed in its file", log.display());
    }
    // Every book goes on at its next version: the third only wrote before the restart.
    for writer in writers.iter_mut().rev() {
        written.extend(append(&store, writer, 1).await);
    }
    drop(store);
    {
        let db = sled::open(dir.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        let prefixes: Vec<u8> = log.iter().keys().map(|k| k.unwrap()[0]).collect();
        assert_eq!(prefixes, vec![b'L', b'L', b'S', b'S'], "only the batches before the segments stay in sled");
    }
    let store = SledStore::open_with(dir.path(), options).expect("sled reopens");
    check_against_model(&store, &written, &books, "reopened").await;
}
