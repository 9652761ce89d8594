//! The book writers. A book's commands are decided one after another against its state,
//! by the one writer task that owns it; a writer task (a shard) owns many books. It
//! drains its queue into a round, decides every command of the round against its book,
//! appends every book's resulting events in one atomic, durable write (group commit)
//! and only then answers the callers. A refused command is answered at once and does
//! not touch its neighbours.
//!
//! One task per shard rather than per book: with hundreds of books each holding a few
//! commands, per-book tasks paid a wake-up, a lock, a `write` and a durability wake-up
//! per book per round; a shard pays them once per round for all its books.

use std::collections::HashMap;
use std::sync::Arc;

use domain::{
    AccountId, Amount, BookId, BookState, Command, CommandMeta, Decision, RecordedEvent, decide, evolve, seal_into,
};
use eventlog::chain::EncodedEvent;
use eventlog::{BookAppend, EventStore, ExpectedVersion, READ_EVENTS_MAX, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::error::CommandError;
use crate::ids::{IdIndex, IdKind, IdValue, SaveJob, SaveOutcome};
use crate::snapshot::{book_snapshot_name, encode_book, saved_book};

/// Messages waiting for one shard's writer (for all its books). A full queue answers
/// `Overloaded` at once.
pub const QUEUE_COMMANDS_MAX: usize = 65_536;
/// Commands decided and appended together in one durable write. The writer stops
/// taking messages once a batch holds this many commands; a bulk message is never split
/// (its caller gets one answer for all of it), so a batch may exceed this by at most one
/// bulk message, which is why bulk messages are bounded too.
pub const BATCH_COMMANDS_MAX: usize = 2048;
/// Commands one bulk message may carry: a quarter of a batch, so that a writer's batch
/// gathers several bulk messages (of several callers) and stays near its bound, and a
/// writer gets work before a caller has rated a whole batch's worth.
pub const BULK_COMMANDS_MAX: usize = BATCH_COMMANDS_MAX / 4;

/// A balance as a command left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceAfter {
    pub account: AccountId,
    pub balance: Amount,
    pub credit_limit: Amount,
    pub available: Amount,
}

/// The balances a command leaves, one or two, kept inline: a list allocated per
/// command was about a sixth of the writer's allocations.
pub type Balances = smallvec::SmallVec<[BalanceAfter; 2]>;

/// The answer to an accepted command.
#[derive(Clone, Debug)]
pub struct CommandOutcome {
    pub book: BookId,
    /// The command's events with their global positions (empty when nothing changed).
    pub events: Vec<RecordedEvent>,
    /// The balances of the accounts the command concerns, right after it.
    pub balances: Balances,
    /// True when this repeats an earlier request (idempotency key or CDR id) and the
    /// events are those of the first one.
    pub repeated: bool,
    /// The book's version after the command.
    pub book_version: u64,
}

impl CommandOutcome {
    /// The global position that reflects this command, for read-your-writes.
    pub fn position(&self) -> Option<u64> {
        self.events.last().map(|e| e.position)
    }
}

/// Where a queued command's answer comes (closed if the writer stopped first).
pub(crate) type Answer = oneshot::Receiver<Result<CommandOutcome, CommandError>>;

/// What a shard's queue carries.
#[expect(clippy::large_enum_variant, reason = "commands are the common message; boxing them costs an allocation each")]
pub(crate) enum ShardMessage {
    /// A book for the shard to own from now on, with its loaded state; sent before any
    /// message for the book, on the same queue.
    Adopt(LoadedBook),
    Book(BookId, Message),
}

#[expect(clippy::large_enum_variant, reason = "commands are the common message; boxing them costs an allocation each")]
pub(crate) enum Message {
    Command {
        command: Command,
        meta: CommandMeta,
        reply: oneshot::Sender<Result<CommandOutcome, CommandError>>,
    },
    /// Many commands decided in order as if each came alone, answered together: a bulk
    /// caller (a CDR file) pays one channel hop per message rather than per command.
    Commands {
        items: Vec<(Command, CommandMeta)>,
        reply: oneshot::Sender<Vec<Result<CommandOutcome, CommandError>>>,
    },
    /// Asks for a copy of the state, answered in queue order.
    Snapshot(oneshot::Sender<BookState>),
    /// Asks for the version of the event that charged a CDR id, answered in queue order
    /// once that event is durable.
    FindCdr {
        id: String,
        reply: oneshot::Sender<Option<u64>>,
    },
}

impl ShardMessage {
    /// The commands the message carries, as counted against [`BATCH_COMMANDS_MAX`].
    fn commands(&self) -> usize {
        match self {
            ShardMessage::Adopt(_) => 1,
            ShardMessage::Book(_, message) => message.commands(),
        }
    }
}

impl Message {
    /// The commands the message carries, as counted against [`BATCH_COMMANDS_MAX`].
    fn commands(&self) -> usize {
        match self {
            Message::Command { .. } => 1,
            Message::Commands { items, .. } => items.len(),
            // A snapshot clones the whole state, a lookup costs a read: each weighs like
            // a command.
            Message::Snapshot(_) | Message::FindCdr { .. } => 1,
        }
    }
}

/// A handle to a book, served by its shard's writer.
#[derive(Clone)]
pub struct BookHandle {
    book: BookId,
    queue: mpsc::Sender<ShardMessage>,
}

impl BookHandle {
    /// Queues `message` at once; a full or closed queue says which error its caller gets.
    fn try_send(&self, message: Message) -> Result<(), fn() -> CommandError> {
        self.queue.try_send(ShardMessage::Book(self.book, message)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => (|| CommandError::Overloaded) as fn() -> CommandError,
            mpsc::error::TrySendError::Closed(_) => || CommandError::ShuttingDown,
        })
    }

    /// Queues a command at once; its answer comes on the returned channel.
    pub(crate) fn queue(&self, command: Command, meta: CommandMeta) -> Result<Answer, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.try_send(Message::Command { command, meta, reply }).map_err(|error| error())?;
        Ok(answer)
    }

    /// Queues up to [`BULK_COMMANDS_MAX`] commands as one message, at once (not when the
    /// returned future is first polled, so a caller can queue for many books before it
    /// waits). Each is decided as it would be alone, in order; the
    /// future gives the answers in the same order once they are durable.
    pub fn submit_many(
        &self,
        items: Vec<(Command, CommandMeta)>,
    ) -> impl Future<Output = Vec<Result<CommandOutcome, CommandError>>> + Send + 'static {
        assert!(items.len() <= BULK_COMMANDS_MAX, "a bulk message carries at most BULK_COMMANDS_MAX commands");
        let count = items.len();
        let fail = move |error: fn() -> CommandError| (0..count).map(|_| Err(error())).collect::<Vec<_>>();
        let (reply, answer) = oneshot::channel();
        let queued = match items.is_empty() {
            true => Ok(()),
            false => self.try_send(Message::Commands { items, reply }).map_err(fail),
        };
        async move {
            match queued {
                Ok(()) if count == 0 => Vec::new(),
                Ok(()) => answer.await.unwrap_or_else(|_| fail(|| CommandError::ShuttingDown)),
                Err(failed) => failed,
            }
        }
    }

    async fn send(&self, message: Message) -> Result<(), CommandError> {
        self.queue.send(ShardMessage::Book(self.book, message)).await.map_err(|_| CommandError::ShuttingDown)
    }

    /// A copy of the writer's state once everything queued before has been decided.
    pub async fn snapshot(&self) -> Result<BookState, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Snapshot(reply)).await?;
        answer.await.map_err(|_| CommandError::ShuttingDown)
    }

    /// The version of the event that charged CDR `id` in this book, once durable.
    pub async fn find_cdr(&self, id: &str) -> Result<Option<u64>, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::FindCdr { id: id.to_owned(), reply }).await?;
        answer.await.map_err(|_| CommandError::ShuttingDown)
    }

    /// True once the shard's writer has stopped (its queue is closed).
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

/// A book as its writer holds it: the state, and the id runs that hold the CDR ids and
/// keys no longer in the state.
pub struct LoadedBook {
    pub state: BookState,
    pub ids: IdIndex,
}

impl LoadedBook {
    /// What the book's id index and state hold for an id (the state first).
    pub async fn find_id(&self, store: &dyn EventStore, kind: IdKind, id: &str) -> Result<Option<IdValue>, StoreError> {
        let in_memory = match kind {
            IdKind::Cdr => self.state.charged_cdrs.get(id).map(|version| IdValue::Cdr(*version)),
            IdKind::Key => self.state.idempotency.get(id).cloned().map(IdValue::Key),
        };
        match in_memory {
            Some(value) => Ok(Some(value)),
            None => Ok(self.ids.lookup_many(store, &[(kind, id)]).await?.pop().flatten()),
        }
    }

    /// Whether this book holds exactly what `folded` (the book folded from its start)
    /// holds: the same state, less the ids moved into runs, and every id of the fold
    /// found, in memory or in a run, with the same event. `Err` names the first
    /// difference. For the crash and snapshot tests, and for an operator's check.
    pub async fn matches_fold(&self, store: &dyn EventStore, folded: &BookState) -> Result<(), String> {
        let cdrs = folded.charged_cdrs.iter().map(|(id, version)| (IdKind::Cdr, id, IdValue::Cdr(*version)));
        let keys = folded.idempotency.iter().map(|(key, record)| (IdKind::Key, key, IdValue::Key(record.clone())));
        for (kind, id, expected) in cdrs.chain(keys) {
            let found = self.find_id(store, kind, id).await.map_err(|e| e.to_string())?;
            if found.as_ref() != Some(&expected) {
                return Err(format!("{kind:?} `{id}`: the fold has {expected:?}, the loaded book {found:?}"));
            }
        }
        let mut expected = folded.clone();
        expected.charged_cdrs.retain(|id, _| self.state.charged_cdrs.contains_key(id));
        expected.idempotency.retain(|key, _| self.state.idempotency.contains_key(key));
        match expected == self.state {
            true => Ok(()),
            false => Err("the states differ beyond the ids in runs".into()),
        }
    }
}

/// A book's state: its snapshot (if the store keeps one that fits) and the events after
/// it, or else its whole stream folded.
pub async fn load_book(store: &dyn EventStore, book: BookId) -> Result<LoadedBook, StoreError> {
    let started = std::time::Instant::now();
    let (state, ids) = saved_book(store, book).await.unwrap_or_else(|| (BookState::new(book), IdIndex::default()));
    let (snapshot_version, snapshot_us) = (state.next_version, started.elapsed().as_micros() as u64);
    let state = fold_from(store, state).await?;
    // What a cold book's first command waits for, in parts.
    tracing::debug!(
        %book,
        snapshot_version,
        snapshot_us,
        tail_events = state.next_version - snapshot_version,
        total_us = started.elapsed().as_micros() as u64,
        "a book is loaded"
    );
    Ok(LoadedBook { state, ids })
}

/// A book's state folded from the start of its stream, without a snapshot.
pub async fn fold_book(store: &dyn EventStore, book: BookId) -> Result<BookState, StoreError> {
    fold_from(store, BookState::new(book)).await
}

async fn fold_from(store: &dyn EventStore, mut state: BookState) -> Result<BookState, StoreError> {
    loop {
        let events = store.read_stream(state.book, state.next_version, READ_EVENTS_MAX).await?;
        if events.is_empty() {
            return Ok(state);
        }
        for recorded in &events {
            evolve(&mut state, &recorded.event);
        }
    }
}

/// A writer saves its book's snapshot once at least this many events follow the last
/// one (or the book's whole stream, before the first).
pub const SNAPSHOT_EVERY_EVENTS_MIN: u64 = 4096;
/// ... and at least an eighth of the book's ids (in memory and in its id runs): saves
/// stay rare in a large book (each costs a few syncs), while a cold book still folds at
/// most an eighth of its ids' worth of events after its snapshot. A book whose ids in
/// memory reach `ids_in_memory_max` takes one at once, to move them into a run.
pub const SNAPSHOT_EVERY_IDS_DIVISOR: u64 = 8;

/// A book's CDR ids and idempotency keys in memory at which it takes a snapshot at once
/// and moves them into an id run ([`crate::ids`]). 16,384 ids are about 1.5 MB of a book's
/// memory and a 400 KB run, sorted in a few milliseconds.
pub const IDS_IN_MEMORY_MAX: usize = 16_384;

/// How the writers behave where a deployment (or a test) may choose.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Events after the last snapshot of a book before the next is taken (at least; see
    /// [`SNAPSHOT_EVERY_IDS_DIVISOR`]).
    pub snapshot_every_events_min: u64,
    /// Writer tasks, each serving its share of the books.
    pub shards: usize,
    /// See [`IDS_IN_MEMORY_MAX`].
    pub ids_in_memory_max: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        // One per two cores: a shard decides on one core at a time, and the server's
        // HTTP work needs the rest. On two cores, one shard held 10,000 writes/s offered
        // with a p99 of 10–22 ms where two gave 11–108 ms, at the same top throughput
        // (docs/benchmarks.md, "Shard writers at a constant offered rate").
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        WriterOptions {
            snapshot_every_events_min: SNAPSHOT_EVERY_EVENTS_MIN,
            shards: (cores / 2).max(1),
            ids_in_memory_max: IDS_IN_MEMORY_MAX,
        }
    }
}

/// When a writer saves its book's snapshot, and the save under way.
struct Snapshots {
    store: Arc<dyn EventStore>,
    every_events_min: u64,
    ids_in_memory_max: usize,
    /// The version the last snapshot taken (or loaded) reflects.
    taken_at: u64,
    saving: Option<tokio::task::JoinHandle<SaveOutcome>>,
}

impl Snapshots {
    /// The book's snapshot, if one is due: taken on the state a batch left, it is saved
    /// only once that batch is durable ([`Snapshots::save`]). Past
    /// `ids_in_memory_max`, the state's ids move into id runs first.
    fn take_if_due(&mut self, state: &mut BookState, ids: &mut IdIndex) -> Option<SaveJob> {
        if !self.store.keeps_snapshots() {
            return None;
        }
        if let Some(saving) = self.saving.take_if(|saving| saving.is_finished()) {
            use futures::FutureExt;
            if let Some(Ok(outcome)) = saving.now_or_never() {
                ids.apply(outcome);
            }
        }
        if self.saving.is_some() {
            return None;
        }
        // Due by events (a cold book folds at most that many after its snapshot; the
        // bound grows with the book's ids so that saves stay rare in a large book), or
        // because the ids in memory are to move into a run, which a snapshot must name.
        let in_memory = state.charged_cdrs.len() + state.idempotency.len();
        let all_ids = in_memory as u64 + ids.len();
        let due = self.every_events_min.max(all_ids / SNAPSHOT_EVERY_IDS_DIVISOR);
        if state.next_version.saturating_sub(self.taken_at) < due && in_memory < self.ids_in_memory_max {
            return None;
        }
        self.taken_at = state.next_version;
        if in_memory >= self.ids_in_memory_max {
            let cdrs = std::mem::take(&mut state.charged_cdrs);
            let keys = std::mem::take(&mut state.idempotency);
            ids.spill(state.book, cdrs, keys);
        }
        let snapshot = encode_book(state, &ids.saved());
        Some(ids.save_job(state.book, book_snapshot_name(state.book), snapshot))
    }

    fn save(&mut self, book: BookId, job: SaveJob) {
        self.saving = Some(tokio::spawn(job.run(self.store.clone(), book)));
    }

    /// Waits for the save under way: a stopped writer leaves nothing holding the store,
    /// and a reload reads the snapshot that save left, with the runs it names.
    async fn finish(&mut self, ids: &mut IdIndex) {
        if let Some(saving) = self.saving.take()
            && let Ok(outcome) = saving.await
        {
            ids.apply(outcome);
        }
    }
}

/// The queue of a shard's writer, which every handle of its books sends to.
#[derive(Clone)]
pub(crate) struct ShardQueue(mpsc::Sender<ShardMessage>);

impl ShardQueue {
    /// Hands the shard a book with its loaded state, and the handle to send it commands.
    pub(crate) async fn adopt(&self, loaded: LoadedBook) -> Result<BookHandle, CommandError> {
        let book = loaded.state.book;
        self.0.send(ShardMessage::Adopt(loaded)).await.map_err(|_| CommandError::ShuttingDown)?;
        Ok(BookHandle { book, queue: self.0.clone() })
    }
}

/// A shard's writer: its queue and its task.
pub(crate) struct Shard {
    pub(crate) queue: ShardQueue,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Shard {
    /// Starts a shard's writer, owning no book yet. The task ends when the shard and
    /// every handle of its books are dropped, after answering everything queued.
    pub(crate) fn spawn(store: Arc<dyn EventStore>, on_commit: Option<CommitHook>, options: WriterOptions) -> Shard {
        let (queue, requests) = mpsc::channel(QUEUE_COMMANDS_MAX);
        let task = tokio::spawn(run_shard(store, requests, on_commit, options));
        Shard { queue: ShardQueue(queue), task }
    }
}

/// The shard of `shards` that serves `book`: books spread evenly, and a book always
/// goes to the same one.
pub(crate) fn shard_of(book: BookId, shards: usize) -> usize {
    // A v7 id's low half is random (the operator's book is the nil id: shard 0).
    (book.0.as_u64_pair().1 % shards as u64) as usize
}

/// Called with every batch of durable events, before the callers are answered; the
/// ledger keeps its account index current with it.
pub type CommitHook = Arc<dyn Fn(&[RecordedEvent]) + Send + Sync>;

/// Where one command's answer goes: its own caller, or its place in a bulk message's
/// answers (`bulk` index into the batch's [`BulkReply`]s, `item` within the message).
enum Reply {
    One(oneshot::Sender<Result<CommandOutcome, CommandError>>),
    Bulk { bulk: usize, item: usize },
}

/// The answers of one bulk message, sent together once every item has one.
struct BulkReply {
    reply: oneshot::Sender<Vec<Result<CommandOutcome, CommandError>>>,
    answers: Vec<Option<Result<CommandOutcome, CommandError>>>,
}

/// The repliers of one batch's commands.
struct Replies {
    bulk: Vec<BulkReply>,
}

impl Replies {
    fn send(&mut self, reply: Reply, answer: Result<CommandOutcome, CommandError>) {
        match reply {
            Reply::One(reply) => {
                let _ = reply.send(answer);
            }
            Reply::Bulk { bulk, item } => self.bulk[bulk].answers[item] = Some(answer),
        }
    }

    /// Sends every bulk message's answers; call once every command has been answered.
    fn finish(self) {
        for bulk in self.bulk {
            // Every item was answered by the batch; a hole would be a bug, and its caller
            // sees it as a writer that stopped rather than a wrong answer.
            let answers = bulk.answers.into_iter().map(|a| a.unwrap_or(Err(CommandError::ShuttingDown))).collect();
            let _ = bulk.reply.send(answers);
        }
    }
}

/// What to answer a caller once the batch is durable.
enum Pending {
    New {
        reply: Reply,
        events: std::ops::Range<usize>,
        balances: Balances,
    },
    /// A repeat of a command decided earlier in this same batch.
    RepeatInBatch {
        reply: Reply,
        first_version: u64,
        events: u32,
        balances: Balances,
    },
    /// A repeat of an earlier batch, until its events are read back from the store (by
    /// [`read_repeats`], before the batch is appended).
    RepeatEarlier {
        reply: Reply,
        first_version: u64,
        events: u32,
        balances: Balances,
        book_version: u64,
    },
    /// A refusal, or a repeat of an earlier batch: decided on a state that includes the
    /// batches still in flight, so it is only told once they are durable.
    Decided {
        reply: Reply,
        outcome: Result<CommandOutcome, CommandError>,
    },
}

/// Batches a writer may have appended and not yet seen durable. With two, one batch is
/// flushed while the next is decided and applied, so the flusher does not sit idle while
/// the writer answers and decides, and nothing more is needed to keep it busy.
const BATCHES_IN_FLIGHT_MAX: usize = 2;

/// One book's part of a round: appended (or with nothing to append), its callers wait
/// for its durability.
struct InFlight {
    book: BookId,
    pending: Vec<Pending>,
    replies: Replies,
    snapshots: Vec<(oneshot::Sender<BookState>, BookState)>,
    found_cdrs: Vec<(oneshot::Sender<Option<u64>>, Option<u64>)>,
    encoded: Vec<EncodedEvent>,
    positions: Vec<u64>,
    batch_start_version: u64,
    book_version: u64,
    /// The book's snapshot as this batch left it, to save once the batch is durable.
    snapshot: Option<SaveJob>,
}

impl InFlight {
    fn new(state: &BookState) -> Self {
        InFlight {
            book: state.book,
            pending: Vec::new(),
            replies: Replies { bulk: Vec::new() },
            snapshots: Vec::new(),
            found_cdrs: Vec::new(),
            encoded: Vec::new(),
            positions: Vec::new(),
            batch_start_version: state.next_version,
            book_version: state.next_version,
            snapshot: None,
        }
    }
}

/// A book a shard owns: its state, its id runs, and when its snapshot is saved.
struct OwnedBook {
    state: BookState,
    ids: IdIndex,
    snapshots: Snapshots,
}

type Completion = futures::future::BoxFuture<'static, (Vec<InFlight>, Result<(), StoreError>)>;

async fn run_shard(
    store: Arc<dyn EventStore>,
    mut requests: mpsc::Receiver<ShardMessage>,
    on_commit: Option<CommitHook>,
    options: WriterOptions,
) {
    use futures::StreamExt;
    let mut books: HashMap<BookId, OwnedBook> = HashMap::new();
    let mut round = Vec::with_capacity(BATCH_COMMANDS_MAX);
    // Completes in append order, which is also the order of durability.
    let mut in_flight: futures::stream::FuturesOrdered<Completion> = futures::stream::FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            // Answering first frees callers (and their connections) soonest.
            biased;
            Some((parts, durable)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(error) = durable {
                    tracing::error!(%error, "a round could not be made durable; reloading its books' states");
                    for done in parts {
                        let book = done.book;
                        fail_batch(done.pending, done.replies, &error);
                        reload(&*store, &mut books, book).await;
                    }
                    continue;
                }
                for mut done in parts {
                    if let Some(job) = done.snapshot.take()
                        && let Some(owned) = books.get_mut(&done.book)
                    {
                        owned.snapshots.save(done.book, job);
                    }
                    finish_batch(done, on_commit.as_ref());
                }
            }
            received = requests.recv(), if open && in_flight.len() < BATCHES_IN_FLIGHT_MAX => {
                let Some(first) = received else {
                    open = false;
                    continue;
                };
                // Counted in commands, not messages: a bulk message weighs what it carries.
                let mut commands = first.commands();
                round.push(first);
                while commands < BATCH_COMMANDS_MAX {
                    let Ok(next) = requests.try_recv() else { break };
                    commands += next.commands();
                    round.push(next);
                }
                if let Some(completion) = decide_round(&store, &mut books, &mut round, options).await {
                    in_flight.push_back(completion);
                }
            }
            else => break,
        }
    }
    for owned in books.values_mut() {
        owned.snapshots.finish(&mut owned.ids).await;
    }
}

/// Decides every command of `round`, each against its book, and appends every book's
/// events in one write; the callers are answered by the returned completion, once the
/// round (and every round before it) is durable. `None` when the append failed: its
/// callers are answered and its books reloaded.
async fn decide_round(
    store: &Arc<dyn EventStore>,
    books: &mut HashMap<BookId, OwnedBook>,
    round: &mut Vec<ShardMessage>,
    options: WriterOptions,
) -> Option<Completion> {
    let mut parts: Vec<InFlight> = Vec::new();
    // Where each book's part is in `parts`; a round touches few books, or one.
    let mut part_of: HashMap<BookId, usize> = HashMap::new();
    let mut messages = Vec::with_capacity(round.len());
    for message in round.drain(..) {
        match message {
            ShardMessage::Adopt(LoadedBook { state, ids }) => {
                let snapshots = Snapshots {
                    store: store.clone(),
                    every_events_min: options.snapshot_every_events_min,
                    ids_in_memory_max: options.ids_in_memory_max,
                    taken_at: state.next_version,
                    saving: None,
                };
                books.insert(state.book, OwnedBook { state, ids, snapshots });
            }
            ShardMessage::Book(book, message) => messages.push((book, message)),
        }
    }
    let recalled = match recall_ids(&**store, books, &messages).await {
        Ok(recalled) => recalled,
        Err(error) => {
            tracing::error!(%error, "cannot read the books' id runs; the round is refused");
            refuse_round(messages, &error);
            return None;
        }
    };
    // Each book's part sized for its commands first: grown command by command, a
    // round's batch was reallocated (and its events moved) several times over.
    let mut commands_of_part = Vec::new();
    for (book, message) in &messages {
        let Some(owned) = books.get(book) else { continue };
        let at = *part_of.entry(*book).or_insert_with(|| {
            parts.push(InFlight::new(&owned.state));
            commands_of_part.push(0);
            parts.len() - 1
        });
        commands_of_part[at] += message.commands();
    }
    for (part, commands) in parts.iter_mut().zip(commands_of_part) {
        part.pending.reserve(commands);
        part.encoded.reserve(commands);
    }
    for (book, message) in messages {
        // A book whose reload failed is no longer owned: its callers are told the
        // writer stopped, as when a book had a task of its own.
        let Some(owned) = books.get_mut(&book) else { continue };
        let state = &mut owned.state;
        let part = &mut parts[part_of[&book]];
        let batch_start_version = part.batch_start_version;
        match message {
            Message::Command { command, meta, reply } => {
                let decided =
                    decide_one(state, batch_start_version, &mut part.encoded, command, meta, Reply::One(reply));
                part.pending.push(decided);
            }
            Message::Commands { items, reply } => {
                let bulk = part.replies.bulk.len();
                part.replies.bulk.push(BulkReply { reply, answers: (0..items.len()).map(|_| None).collect() });
                for (item, (command, meta)) in items.into_iter().enumerate() {
                    let reply = Reply::Bulk { bulk, item };
                    let decided = decide_one(state, batch_start_version, &mut part.encoded, command, meta, reply);
                    part.pending.push(decided);
                }
            }
            Message::FindCdr { id, reply } => part.found_cdrs.push((reply, state.charged_cdrs.get(&id).copied())),
            Message::Snapshot(reply) => part.snapshots.push((reply, state.clone())),
        }
    }
    forget_recalled(books, recalled);
    for part in &mut parts {
        let pending = std::mem::take(&mut part.pending);
        part.pending = read_repeats(&**store, part.book, pending).await;
        part.book_version = books[&part.book].state.next_version;
    }
    let appends: Vec<BookAppend<'_>> = parts
        .iter()
        .filter(|part| !part.encoded.is_empty())
        .map(|part| BookAppend {
            book: part.book,
            expected: ExpectedVersion::before(part.batch_start_version),
            events: &part.encoded,
        })
        .collect();
    if appends.is_empty() {
        // Nothing to write; its answers still wait for the rounds before it.
        return Some(Box::pin(async move { (parts, Ok(())) }));
    }
    match store.append_many_pipelined(&appends).await {
        Ok(appended) => {
            drop(appends);
            let mut positions = appended.positions.into_iter();
            for part in parts.iter_mut().filter(|part| !part.encoded.is_empty()) {
                part.positions = positions.next().expect("positions for every batch appended");
                let owned = books.get_mut(&part.book).expect("a book in the round is owned");
                part.snapshot = owned.snapshots.take_if_due(&mut owned.state, &mut owned.ids);
            }
            let durable = appended.durable;
            Some(Box::pin(async move { (parts, durable.await) }))
        }
        Err(error) => {
            drop(appends);
            tracing::error!(%error, "append failed; reloading the round's books from the store");
            for part in parts {
                // Refusals and repeats decided in this round stand; the rest failed.
                let book = part.book;
                fail_batch(part.pending, part.replies, &error);
                reload(&**store, books, book).await;
            }
            None
        }
    }
}

/// The ids a round's commands carry (CDR ids, idempotency keys) that their books hold
/// in id runs rather than in memory, put back into the books' states so that `decide`
/// sees them; [`forget_recalled`] takes them out again after the round.
type Recalled = Vec<(BookId, IdKind, String)>;

async fn recall_ids<'a>(
    store: &dyn EventStore,
    books: &mut HashMap<BookId, OwnedBook>,
    messages: &'a [(BookId, Message)],
) -> Result<Recalled, StoreError> {
    let mut wanted: HashMap<BookId, Vec<(IdKind, &'a str)>> = HashMap::new();
    for (book, message) in messages {
        let Some(owned) = books.get(book).filter(|owned| !owned.ids.is_empty()) else { continue };
        let state = &owned.state;
        // Straight into the book's list, not through a list per message (an allocation
        // per call charge).
        let ids = wanted.entry(*book).or_default();
        let mut want = |kind: IdKind, id| {
            let in_memory = match kind {
                IdKind::Cdr => state.charged_cdrs.contains_key(id),
                IdKind::Key => state.idempotency.contains_key(id),
            };
            if !in_memory {
                ids.push((kind, id));
            }
        };
        let mut ids_of = |command: &'a Command, meta: &'a CommandMeta| {
            if let Some(idempotency) = &meta.idempotency {
                want(IdKind::Key, idempotency.key.as_str());
            }
            if let Command::ChargeCall(charge) = command {
                want(IdKind::Cdr, charge.cdr.id.as_str());
            }
        };
        match message {
            Message::Command { command, meta, .. } => ids_of(command, meta),
            Message::Commands { items, .. } => items.iter().for_each(|(command, meta)| ids_of(command, meta)),
            Message::FindCdr { id, .. } => want(IdKind::Cdr, id.as_str()),
            Message::Snapshot(_) => {}
        }
    }
    let mut recalled = Vec::new();
    for (book, ids) in wanted {
        let owned = books.get_mut(&book).expect("a book with ids wanted is owned");
        let found = owned.ids.lookup_many(store, &ids).await?;
        for ((kind, id), value) in ids.into_iter().zip(found) {
            let fresh = match value {
                Some(IdValue::Cdr(version)) => owned.state.charged_cdrs.insert(id.to_owned(), version).is_none(),
                Some(IdValue::Key(record)) => owned.state.idempotency.insert(id.to_owned(), record).is_none(),
                None => false,
            };
            if fresh {
                recalled.push((book, kind, id.to_owned()));
            }
        }
    }
    Ok(recalled)
}

/// Takes the ids [`recall_ids`] put back out of the states: they stay in their runs, and
/// a book's memory does not grow with the repeats it answers.
fn forget_recalled(books: &mut HashMap<BookId, OwnedBook>, recalled: Recalled) {
    for (book, kind, id) in recalled {
        if let Some(owned) = books.get_mut(&book) {
            match kind {
                IdKind::Cdr => drop(owned.state.charged_cdrs.remove(&id)),
                IdKind::Key => drop(owned.state.idempotency.remove(&id)),
            }
        }
    }
}

/// Answers every command of a round that could not be decided.
fn refuse_round(messages: Vec<(BookId, Message)>, error: &StoreError) {
    let failure = || CommandError::Store(StoreError::Io(format!("the book's id index cannot be read: {error}")));
    for (_, message) in messages {
        match message {
            Message::Command { reply, .. } => {
                let _ = reply.send(Err(failure()));
            }
            Message::Commands { items, reply } => {
                let _ = reply.send(items.iter().map(|_| Err(failure())).collect());
            }
            // Their askers see the writer as gone and may ask again.
            Message::FindCdr { .. } | Message::Snapshot(_) => {}
        }
    }
}

/// Decides one command of a batch against `state`, sealing its events into `encoded`,
/// and says what to answer `reply` once the batch is durable.
fn decide_one(
    state: &mut BookState,
    batch_start_version: u64,
    encoded: &mut Vec<EncodedEvent>,
    command: Command,
    meta: CommandMeta,
    reply: Reply,
) -> Pending {
    match decide(state, &command, &meta) {
        Err(refusal) => Pending::Decided { reply, outcome: Err(refusal.into()) },
        Ok(Decision::Accept(payloads)) => {
            let start = encoded.len();
            seal_into(state, payloads, &meta, encoded, EncodedEvent::seal);
            let balances = balances_after(state, &command);
            Pending::New { reply, events: start..encoded.len(), balances }
        }
        Ok(Decision::Repeat { first_version, events }) => {
            let balances = balances_after(state, &command);
            if first_version >= batch_start_version {
                Pending::RepeatInBatch { reply, first_version, events, balances }
            } else {
                let book_version = state.next_version;
                Pending::RepeatEarlier { reply, first_version, events, balances, book_version }
            }
        }
    }
}

/// Reads back the events of the batch's repeats of earlier batches and turns each into
/// its answer. A rerun of a file repeats runs of consecutive versions: reading each run
/// once, rather than each repeat on its own, reads each stored batch once, not once per
/// repeat.
async fn read_repeats(store: &dyn EventStore, book: BookId, pending: Vec<Pending>) -> Vec<Pending> {
    let mut wanted: Vec<(u64, u64)> = pending
        .iter()
        .filter_map(|p| match p {
            Pending::RepeatEarlier { first_version, events, .. } => {
                Some((*first_version, *first_version + u64::from(*events)))
            }
            _ => None,
        })
        .collect();
    if wanted.is_empty() {
        return pending;
    }
    wanted.sort_unstable();
    // Runs of versions that overlap or touch, each read in one go: (start, events).
    let mut runs: Vec<(u64, Result<Vec<RecordedEvent>, String>)> = Vec::new();
    let mut at = 0;
    while at < wanted.len() {
        let (run_start, mut run_end) = wanted[at];
        at += 1;
        while at < wanted.len() && wanted[at].0 <= run_end {
            run_end = run_end.max(wanted[at].1);
            at += 1;
        }
        let read = read_versions(store, book, run_start, run_end).await.map_err(|e| e.to_string());
        runs.push((run_start, read));
    }
    pending
        .into_iter()
        .map(|p| match p {
            Pending::RepeatEarlier { reply, first_version, events, balances, book_version } => {
                // The run that starts at or before the repeat holds it.
                let run = runs.partition_point(|(start, _)| *start <= first_version) - 1;
                let (start, read) = &runs[run];
                let offset = (first_version - start) as usize;
                let outcome = match read {
                    Ok(stored) => Ok(CommandOutcome {
                        book,
                        events: stored[offset..offset + events as usize].to_vec(),
                        balances,
                        repeated: true,
                        book_version,
                    }),
                    Err(failure) => Err(CommandError::Store(StoreError::Io(failure.clone()))),
                };
                Pending::Decided { reply, outcome }
            }
            other => other,
        })
        .collect()
}

/// Versions `from..end` of `book`, all of them.
async fn read_versions(
    store: &dyn EventStore,
    book: BookId,
    from: u64,
    end: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut events = Vec::with_capacity((end - from) as usize);
    while (events.len() as u64) < end - from {
        let next = from + events.len() as u64;
        let read = store.read_stream(book, next, (end - next) as usize).await?;
        if read.is_empty() {
            return Err(StoreError::Corrupt { position: 0, reason: format!("version {next} of {book} is missing") });
        }
        events.extend(read);
    }
    Ok(events)
}

/// Fails the callers of a batch that did not become durable.
fn fail_batch(pending: Vec<Pending>, mut replies: Replies, error: &StoreError) {
    let failure = || match error {
        StoreError::WrongExpectedVersion { .. } => CommandError::Conflict,
        _ => CommandError::Store(StoreError::Io("the write could not be made durable".into())),
    };
    for p in pending {
        let reply = match p {
            Pending::New { reply, .. }
            | Pending::RepeatInBatch { reply, .. }
            | Pending::RepeatEarlier { reply, .. }
            | Pending::Decided { reply, .. } => reply,
        };
        replies.send(reply, Err(failure()));
    }
    replies.finish();
}

/// The book's state holds events that may not be stored: start again from the store.
/// A book that cannot be read is dropped: its callers are told the writer stopped.
async fn reload(store: &dyn EventStore, books: &mut HashMap<BookId, OwnedBook>, book: BookId) {
    if let Some(owned) = books.get_mut(&book) {
        owned.snapshots.finish(&mut owned.ids).await;
    }
    match load_book(store, book).await {
        Ok(reloaded) => {
            if let Some(owned) = books.get_mut(&book) {
                owned.snapshots.taken_at = reloaded.state.next_version;
                owned.state = reloaded.state;
                owned.ids = reloaded.ids;
            }
        }
        Err(error) => {
            tracing::error!(%book, %error, "cannot reload the book; its writer stops");
            books.remove(&book);
        }
    }
}

/// Answers the callers (and snapshot askers) of a durable batch.
fn finish_batch(done: InFlight, on_commit: Option<&CommitHook>) {
    let book = done.book;
    let recorded: Vec<RecordedEvent> = done
        .encoded
        .into_iter()
        .zip(done.positions)
        .map(|(e, position)| RecordedEvent { position, event: e.event })
        .collect();
    if !recorded.is_empty()
        && let Some(hook) = on_commit
    {
        hook(&recorded);
    }
    answer_batch(done.pending, done.replies, recorded, done.batch_start_version, book, done.book_version);
    answer_snapshots(done.snapshots);
    for (reply, version) in done.found_cdrs {
        let _ = reply.send(version);
    }
}

/// A snapshot taken mid-batch is only true once the batch is durable; a failed batch
/// drops its snapshots (their askers see the writer as gone and may ask again).
fn answer_snapshots(snapshots: Vec<(oneshot::Sender<BookState>, BookState)>) {
    for (reply, state) in snapshots {
        let _ = reply.send(state);
    }
}

fn answer_batch(
    pending: Vec<Pending>,
    mut replies: Replies,
    recorded: Vec<RecordedEvent>,
    batch_start_version: u64,
    book: BookId,
    book_version: u64,
) {
    // Repeats within the batch copy their events first; then every command's own
    // events are moved out, not cloned.
    let mut news = Vec::with_capacity(pending.len());
    for p in pending {
        match p {
            Pending::RepeatInBatch { reply, first_version, events, balances } => {
                let start = (first_version - batch_start_version) as usize;
                let slice = recorded.get(start..start + events as usize).unwrap_or(&[]);
                let outcome = CommandOutcome { book, events: slice.to_vec(), balances, repeated: true, book_version };
                replies.send(reply, Ok(outcome));
            }
            Pending::New { reply, events, balances } => news.push((reply, events, balances)),
            Pending::Decided { reply, outcome } => replies.send(reply, outcome),
            // `read_repeats` answered every one before the append; should one slip
            // through, its caller is told the read failed rather than given no events.
            Pending::RepeatEarlier { reply, .. } => {
                replies.send(reply, Err(CommandError::Store(StoreError::Io("a repeat was not read back".into()))))
            }
        }
    }
    let mut recorded = recorded.into_iter();
    for (reply, events, balances) in news {
        let own: Vec<RecordedEvent> = recorded.by_ref().take(events.len()).collect();
        replies.send(reply, Ok(CommandOutcome { book, events: own, balances, repeated: false, book_version }));
    }
    replies.finish();
}

fn balances_after(state: &BookState, command: &Command) -> Balances {
    command
        .affected_accounts()
        .into_iter()
        .filter_map(|id| state.accounts.get(&id))
        .map(|a| BalanceAfter {
            account: a.id,
            balance: a.balance,
            credit_limit: a.credit_limit,
            available: a.available(),
        })
        .collect()
}
