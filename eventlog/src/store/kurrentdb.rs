//! The clustered backend: the event store on KurrentDB (formerly EventStoreDB), through
//! the official gRPC client (`kurrentdb` crate).
//!
//! # Mapping
//!
//! - A book is one stream, [`BookId::stream_name`] (`tollbook-book-<id>`); an event's
//!   version in its book is its stream revision.
//! - [`ExpectedVersion::NoStream`] and [`ExpectedVersion::Exact`] are the expected revisions
//!   `NoStream` and `v`. The server checks them atomically with the write of the whole batch
//!   (one append is one implicit transaction), and a mismatch is
//!   [`StoreError::WrongExpectedVersion`], exactly as on sled.
//! - The global log is `$all`, filtered on the server to streams whose name starts with
//!   [`STREAM_PREFIX`]: `$all` also carries the server's own events (`$stats-…`,
//!   `$projections-…`, …) and those of any other application sharing the cluster, and a
//!   filtered read skips them without shipping them to us.
//!
//! # Positions
//!
//! Every event in `$all` has a commit and a prepare position, byte offsets in the server's
//! transaction log. For an event appended through the gRPC API (never in an explicit
//! transaction) both are the offset of its own log record, so one number, `c`, names it.
//! tollbook's position of that event is `p = 2c + 2`:
//!
//! - positions are strictly increasing in `$all` order, but far from contiguous: consecutive
//!   events are a log record apart (hundreds of bytes, times two), and other streams'
//!   records sit in between;
//! - a read can only start at the offset of a record, never inside one, yet callers resume
//!   with `last.position + 1`. The doubling keeps both forms exact: an even `from` is the
//!   event at `c = from / 2 - 1`, inclusive; an odd `from` is "just after" the event at
//!   `c = (from - 3) / 2`. `from` 0 and 1 mean the beginning of the log.
//!
//! So [`EventStore::read_all`]`(from)` reads `$all` forward from `c` (skipping the event at
//! `c` when `from` is odd), and [`EventStore::subscribe_all`]`(from)` starts the client's
//! catch-up subscription to `$all` from an exact event position, which the server treats
//! as exclusive: from `c` itself for an odd `from`; for an even `from`, from the last
//! tollbook event before `c` (found by one filtered backward read), or from the start of
//! the log if there is none. [`EventStore::head`] is one past the last tollbook event.
//! A position that the store never handed out (nor one past it) may be refused with
//! [`StoreError::InvalidPosition`].
//!
//! # What is stored
//!
//! Each event is written with its envelope's `event_id` as the KurrentDB event id and
//! [`domain::Payload::type_name`] as the event type. Its data is JSON (content type
//! `application/json`): the envelope's business fields and the payload, so that KurrentDB's
//! UI, its projections and other clients can read tollbook's events. Its metadata is JSON
//! too: the codec and schema versions, the version in the book, the hash and previous hash,
//! the idempotency key and — the source of truth — the canonical bytes of
//! [`crate::chain`] in base64.
//!
//! Reading back decodes the canonical bytes, never the JSON: JSON renders amounts, times
//! and currencies in their human-readable forms, and the hash is over the canonical
//! encoding, so only those bytes are guaranteed to give back the exact event that was
//! hashed. The JSON is a rendering for other tools. Each event read is checked against
//! where the server says it is (stream, revision, event id, type, hash): a paired check
//! with the checks made before the append.
//!
//! # Server requirements
//!
//! Stream reads must report each event's `$all` position (KurrentDB 25 does, for every
//! event appended through gRPC); a server that does not is refused with a clear error
//! rather than given made-up positions. Reading `$all` needs a user allowed to read it
//! (by default, members of `$admins`). See `docs/operations.md`.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use domain::ids::STREAM_PREFIX;
use domain::{BookId, Event, RecordedEvent, Timestamp};
use futures::stream::{self, BoxStream, StreamExt};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, EventData, Position, ReadAllOptions,
    ReadStreamOptions, ResolvedEvent, RetryOptions, StreamPosition, StreamState, SubscribeToAllOptions, Subscription,
    SubscriptionEvent, SubscriptionFilter,
};
use serde::{Deserialize, Serialize};

use crate::chain::{self, EncodedEvent};
use crate::error::StoreError;
use crate::store::{Appended, EventStore, ExpectedVersion, READ_EVENTS_MAX};

/// How long one append may take before it is reported as failed. The outcome of a timed
/// out append is unknown; the book writer reloads the book from the store after any
/// failure, which settles it.
const APPEND_DEADLINE: Duration = Duration::from_secs(10);
/// How long one read may take.
const READ_DEADLINE: Duration = Duration::from_secs(30);
/// How often the client resubscribes, from the last event it delivered, after a dropped
/// subscription (a leader change, a slow consumer) before the stream reports the error.
const SUBSCRIPTION_RETRIES_MAX: usize = 10;
const SUBSCRIPTION_RETRY_DELAY: Duration = Duration::from_millis(500);
/// What the server reports as the position of an event whose position it does not know.
const UNKNOWN_POSITION: u64 = u64::MAX;

/// The event store on a KurrentDB node or cluster. Cheap to clone: clones share one
/// connection.
#[derive(Clone)]
pub struct KurrentDbStore {
    client: Client,
}

impl KurrentDbStore {
    /// Connects with a KurrentDB connection string (`kurrentdb://host:2113?tls=false`,
    /// `esdb://…`, `kurrentdb+discover://…`) and checks that the server answers, so that a
    /// wrong address or missing rights fail at startup rather than on the first command.
    pub async fn connect(connection_string: &str) -> Result<Self, StoreError> {
        let settings: ClientSettings = connection_string
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid KurrentDB connection string: {e}")))?;
        let client = Client::new(settings).map_err(|e| StoreError::Config(format!("KurrentDB client: {e}")))?;
        let store = KurrentDbStore { client };
        store.head().await?;
        Ok(store)
    }

    /// The filter that narrows `$all` to tollbook's books.
    fn books_filter() -> SubscriptionFilter {
        SubscriptionFilter::on_stream_name().add_prefix(STREAM_PREFIX)
    }

    /// Every event of the `$all` read with `options`, decoded; `from` names the read in errors.
    async fn read_all_events(&self, options: ReadAllOptions, from: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut read = self.client.read_all(&options).await.map_err(|e| read_error(e, from))?;
        let mut events = Vec::new();
        while let Some(resolved) = read.next().await.map_err(|e| read_error(e, from))? {
            events.push(decode_resolved(&resolved)?);
        }
        Ok(events)
    }

    /// The commit position of the last tollbook event before commit position `before`
    /// (`None`: the end of the log).
    async fn last_event_before(&self, before: Option<u64>, from: u64) -> Result<Option<u64>, StoreError> {
        let start = match before {
            Some(commit) => StreamPosition::Position(Position { commit, prepare: commit }),
            None => StreamPosition::End,
        };
        let options = ReadAllOptions::default()
            .position(start)
            .backwards()
            .filter(Self::books_filter())
            .max_count(1)
            .deadline(READ_DEADLINE);
        let mut read = self.client.read_all(&options).await.map_err(|e| read_error(e, from))?;
        match read.next().await.map_err(|e| read_error(e, from))? {
            None => Ok(None),
            Some(resolved) => Ok(Some(commit_position(&resolved)?)),
        }
    }

    async fn open_subscription(&self, from: u64) -> Result<Subscription, StoreError> {
        let start = match start_of(from) {
            Start::Beginning => StreamPosition::Start,
            Start::After(commit) => StreamPosition::Position(Position { commit, prepare: commit }),
            // The server starts a subscription just after the event it is given, so start
            // from the last tollbook event before the wanted one. Tollbook's streams are
            // never truncated or deleted, so that event cannot be scavenged away meanwhile.
            Start::At(commit) => match self.last_event_before(Some(commit), from).await? {
                Some(anchor) => StreamPosition::Position(Position { commit: anchor, prepare: anchor }),
                None => StreamPosition::Start,
            },
        };
        let retry = RetryOptions::default().retry_limit(SUBSCRIPTION_RETRIES_MAX).retry_delay(SUBSCRIPTION_RETRY_DELAY);
        let options =
            SubscribeToAllOptions::default().position(start).filter(Self::books_filter()).retry_options(retry);
        Ok(self.client.subscribe_to_all(&options).await)
    }
}

#[async_trait]
impl EventStore for KurrentDbStore {
    async fn append(
        &self,
        book: BookId,
        expected: ExpectedVersion,
        events: &[EncodedEvent],
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return Ok(Appended { positions: vec![] });
        }
        let (first_version, stream_state, expected_version) = match expected {
            ExpectedVersion::NoStream => (0, StreamState::NoStream, None),
            ExpectedVersion::Exact(v) => (v + 1, StreamState::StreamRevision(v), Some(v)),
        };
        let mut data = Vec::with_capacity(events.len());
        for (offset, encoded) in events.iter().enumerate() {
            // Paired check: what is written is what the writer decided (as on sled).
            let envelope = &encoded.event.envelope;
            assert_eq!(envelope.book, book, "event of another book in the batch");
            assert_eq!(envelope.version, first_version + offset as u64, "batch versions must follow `expected`");
            data.push(event_data(encoded)?);
        }
        let options =
            AppendToStreamOptions::default().stream_state(stream_state).requires_leader(true).deadline(APPEND_DEADLINE);
        let written =
            self.client.append_to_stream(book.stream_name(), &options, data).await.map_err(|error| match error {
                kurrentdb::Error::WrongExpectedVersion { current, .. } => StoreError::WrongExpectedVersion {
                    expected: expected_version,
                    actual: match current {
                        CurrentRevision::Current(v) => Some(v),
                        CurrentRevision::NoStream => None,
                    },
                },
                // Some server versions report the conflict as a failed precondition instead;
                // the current revision is then only in the message.
                kurrentdb::Error::Grpc { code: tonic::Code::FailedPrecondition, ref message }
                    if message.contains("WrongExpectedVersion") =>
                {
                    StoreError::WrongExpectedVersion { expected: expected_version, actual: None }
                }
                other => StoreError::Io(format!("KurrentDB append to {}: {other}", book.stream_name())),
            })?;
        let last_version = first_version + events.len() as u64 - 1;
        if written.next_expected_version != last_version {
            return Err(StoreError::Io(format!(
                "KurrentDB acknowledged {} at revision {} where {last_version} was expected",
                book.stream_name(),
                written.next_expected_version
            )));
        }
        // The append answers one position for the whole batch; each event's own position
        // comes from reading the batch back, which also checks that the server stored
        // exactly what was sent.
        let stored = self.read_stream(book, first_version, events.len()).await?;
        if stored.len() != events.len() {
            return Err(StoreError::Io(format!(
                "{} events appended to {} but {} read back",
                events.len(),
                book.stream_name(),
                stored.len()
            )));
        }
        for (sent, back) in events.iter().zip(&stored) {
            if sent.event != back.event {
                return Err(StoreError::Corrupt {
                    position: back.position,
                    reason: "the event read back differs from the event appended".into(),
                });
            }
        }
        Ok(Appended { positions: stored.iter().map(|e| e.position).collect() })
    }

    async fn read_stream(&self, book: BookId, from_version: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let max = max.min(READ_EVENTS_MAX);
        if max == 0 {
            return Ok(Vec::new());
        }
        let options = ReadStreamOptions::default()
            .position(StreamPosition::Position(from_version))
            .forwards()
            .max_count(max)
            // The book writer loads its state with this: it must see the latest writes.
            .requires_leader(true)
            .deadline(READ_DEADLINE);
        let stream_error =
            |e: kurrentdb::Error| StoreError::Io(format!("KurrentDB read of {}: {e}", book.stream_name()));
        let mut read = match self.client.read_stream(book.stream_name(), &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(stream_error(e)),
        };
        let mut events = Vec::with_capacity(max);
        loop {
            match read.next().await {
                Ok(Some(resolved)) => {
                    let recorded = decode_resolved(&resolved)?;
                    // Paired check: the server's revision and the event agree on where it belongs.
                    if recorded.event.envelope.book != book || recorded.event.envelope.version < from_version {
                        return Err(StoreError::Corrupt {
                            position: recorded.position,
                            reason: format!("read from {} but belongs elsewhere", book.stream_name()),
                        });
                    }
                    events.push(recorded);
                }
                Ok(None) => return Ok(events),
                // A book that was never written to is an empty book.
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
                Err(e) => return Err(stream_error(e)),
            }
        }
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let max = max.min(READ_EVENTS_MAX);
        if max == 0 {
            return Ok(Vec::new());
        }
        let start = match start_of(from) {
            Start::Beginning => StreamPosition::Start,
            Start::At(commit) | Start::After(commit) => StreamPosition::Position(Position { commit, prepare: commit }),
        };
        let options = ReadAllOptions::default()
            .position(start)
            .forwards()
            .filter(Self::books_filter())
            // One more than asked for: an odd `from` drops the event it starts at.
            .max_count(max + 1)
            .deadline(READ_DEADLINE);
        let mut events = self.read_all_events(options, from).await?;
        events.retain(|e| e.position >= from);
        events.truncate(max);
        Ok(events)
    }

    fn subscribe_all(&self, from: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        let store = self.clone();
        stream::once(async move { store.open_subscription(from).await })
            .flat_map(move |opened| match opened {
                Ok(subscription) => live_events(subscription, from),
                Err(error) => stream::once(async move { Err(error) }).boxed(),
            })
            .boxed()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        match self.last_event_before(None, 0).await? {
            Some(commit) => Ok(position_of(commit)? + 1),
            None => Ok(1),
        }
    }

    async fn read_raw(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        // Only even positions name an event.
        let Start::At(commit) = start_of(position) else { return Ok(None) };
        let options = ReadAllOptions::default()
            .position(StreamPosition::Position(Position { commit, prepare: commit }))
            .forwards()
            .filter(Self::books_filter())
            .max_count(1)
            .deadline(READ_DEADLINE);
        let mut read = match self.client.read_all(&options).await {
            Ok(read) => read,
            Err(e) => return invalid_position_is_none(read_error(e, position)),
        };
        let resolved = match read.next().await {
            Ok(Some(resolved)) => resolved,
            Ok(None) => return Ok(None),
            Err(e) => return invalid_position_is_none(read_error(e, position)),
        };
        if commit_position(&resolved)? != commit {
            return Ok(None);
        }
        let (_, bytes) = decode_recorded(resolved.get_original_event(), position)?;
        Ok(Some(bytes))
    }
}

/// The subscription's events, from `from` on, each once.
fn live_events(subscription: Subscription, from: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
    stream::unfold(Some((subscription, None::<u64>)), move |state| async move {
        let (mut subscription, mut last) = state?;
        loop {
            match subscription.next_subscription_event().await {
                Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                    let recorded = match decode_resolved(&resolved) {
                        Ok(recorded) => recorded,
                        Err(error) => return Some((Err(error), None)),
                    };
                    // The server starts just after an anchor at or before `from`, and resumes
                    // after the last event it delivered: neither should give anything
                    // earlier, but the contract is ours to keep.
                    if recorded.position < from || last.is_some_and(|l| recorded.position <= l) {
                        tracing::warn!(
                            position = recorded.position,
                            "subscription skipped an event it had already passed"
                        );
                        continue;
                    }
                    last = Some(recorded.position);
                    return Some((Ok(recorded), Some((subscription, last))));
                }
                // Confirmation, checkpoints, caught-up and fell-behind markers carry no event.
                Ok(_) => continue,
                Err(error) => {
                    return Some((Err(StoreError::Io(format!("KurrentDB subscription to $all: {error}"))), None));
                }
            }
        }
    })
    .boxed()
}

/// Where a read of the global log from tollbook position `from` starts in `$all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// The beginning of the log (`from` 0 or 1).
    Beginning,
    /// At the event at this commit position, inclusive (`from` even).
    At(u64),
    /// Just after the event at this commit position (`from` odd: one past that event).
    After(u64),
}

fn start_of(from: u64) -> Start {
    if from <= 1 {
        Start::Beginning
    } else if from.is_multiple_of(2) {
        Start::At(from / 2 - 1)
    } else {
        Start::After((from - 3) / 2)
    }
}

/// tollbook's position of the event at `$all` commit position `commit`.
fn position_of(commit: u64) -> Result<u64, StoreError> {
    commit
        .checked_mul(2)
        .and_then(|p| p.checked_add(2))
        .ok_or_else(|| StoreError::Corrupt { position: commit, reason: "commit position out of range".into() })
}

/// The commit position of an event read from the server, checked to be one that tollbook
/// can map (see the module documentation).
fn commit_position(resolved: &ResolvedEvent) -> Result<u64, StoreError> {
    let Position { commit, prepare } = resolved.get_original_event().position;
    if commit == UNKNOWN_POSITION {
        return Err(StoreError::Io(
            "the KurrentDB server did not report the event's $all position on a stream read; \
             tollbook needs a server that does (KurrentDB 25 or later)"
                .into(),
        ));
    }
    if commit != prepare {
        return Err(StoreError::Corrupt {
            position: commit,
            reason: format!(
                "commit position {commit} differs from prepare position {prepare}: the event was not written by \
                 a single gRPC append (tollbook never uses explicit transactions)"
            ),
        });
    }
    Ok(commit)
}

fn decode_resolved(resolved: &ResolvedEvent) -> Result<RecordedEvent, StoreError> {
    let position = position_of(commit_position(resolved)?)?;
    let (event, _) = decode_recorded(resolved.get_original_event(), position)?;
    Ok(RecordedEvent { position, event })
}

fn decode_recorded(recorded: &kurrentdb::RecordedEvent, position: u64) -> Result<(Event, Vec<u8>), StoreError> {
    let stored = Stored {
        stream: recorded.stream_id(),
        revision: recorded.revision,
        event_id: recorded.id,
        event_type: &recorded.event_type,
        metadata: &recorded.custom_metadata,
    };
    stored.decode(position)
}

/// A read error; a read that starts inside a log record is the caller's bad position.
fn read_error(error: kurrentdb::Error, from: u64) -> StoreError {
    match error {
        kurrentdb::Error::Grpc { code: tonic::Code::InvalidArgument, .. } => StoreError::InvalidPosition(from),
        other => StoreError::Io(format!("KurrentDB read of $all: {other}")),
    }
}

fn invalid_position_is_none(error: StoreError) -> Result<Option<Vec<u8>>, StoreError> {
    match error {
        StoreError::InvalidPosition(_) => Ok(None),
        other => Err(other),
    }
}

/// The JSON data of an event, for KurrentDB's UI, its projections and other clients.
#[derive(Serialize)]
struct EventDocument<'a> {
    book: BookId,
    version: u64,
    occurred_at: Timestamp,
    recorded_at: Timestamp,
    actor: &'a str,
    command_events: u32,
    /// The payload's fields; its kind is the event type.
    payload: serde_json::Value,
}

/// The JSON metadata of an event.
#[derive(Serialize, Deserialize)]
struct EventMetadata {
    /// [`chain::CODEC_VERSION`] of `canonical`.
    codec_version: u8,
    schema_version: u16,
    version: u64,
    hash: String,
    prev_hash: String,
    idempotency_key: Option<String>,
    /// The canonical bytes in base64: what is read back and hashed.
    canonical: String,
}

fn event_metadata(encoded: &EncodedEvent) -> EventMetadata {
    let envelope = &encoded.event.envelope;
    EventMetadata {
        codec_version: chain::CODEC_VERSION,
        schema_version: encoded.event.payload.schema_version(),
        version: envelope.version,
        hash: hex::encode(envelope.hash),
        prev_hash: hex::encode(envelope.prev_hash),
        idempotency_key: envelope.idempotency.as_ref().map(|i| i.key.clone()),
        canonical: BASE64.encode(&encoded.bytes),
    }
}

fn event_document(encoded: &EncodedEvent) -> Result<EventDocument<'_>, StoreError> {
    let envelope = &encoded.event.envelope;
    let to_json = |e: serde_json::Error| StoreError::Io(format!("rendering an event as JSON: {e}"));
    // The payload serializes externally tagged (`{"PaymentReceived": {...}}`); the tag is
    // already the event type, so the data holds what is inside it.
    let payload = match serde_json::to_value(&encoded.event.payload).map_err(to_json)? {
        serde_json::Value::Object(tagged) if tagged.len() == 1 => tagged.into_iter().next().expect("one entry").1,
        other => other,
    };
    Ok(EventDocument {
        book: envelope.book,
        version: envelope.version,
        occurred_at: envelope.occurred_at,
        recorded_at: envelope.recorded_at,
        actor: &envelope.actor,
        command_events: envelope.command_events,
        payload,
    })
}

fn event_data(encoded: &EncodedEvent) -> Result<EventData, StoreError> {
    let to_json = |e: serde_json::Error| StoreError::Io(format!("rendering an event as JSON: {e}"));
    EventData::json(encoded.event.payload.type_name(), &event_document(encoded)?)
        .map_err(to_json)?
        .id(encoded.event.envelope.event_id.0)
        .metadata_as_json(&event_metadata(encoded))
        .map_err(to_json)
}

/// What the server gives back of an event, as far as decoding needs it.
struct Stored<'a> {
    stream: &'a str,
    revision: u64,
    event_id: uuid::Uuid,
    event_type: &'a str,
    metadata: &'a [u8],
}

impl Stored<'_> {
    /// The event and its canonical bytes, checked against where the server says it is.
    fn decode(&self, position: u64) -> Result<(Event, Vec<u8>), StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        let metadata: EventMetadata = serde_json::from_slice(self.metadata)
            .map_err(|e| corrupt(format!("metadata of {}@{} is not tollbook's: {e}", self.stream, self.revision)))?;
        let bytes =
            BASE64.decode(metadata.canonical.as_bytes()).map_err(|e| corrupt(format!("canonical bytes: {e}")))?;
        let event = chain::decode(position, &bytes)?;
        let envelope = &event.envelope;
        if envelope.book.stream_name() != self.stream || envelope.version != self.revision {
            return Err(corrupt(format!(
                "stored as {}@{} but the event says {}@{}",
                self.stream,
                self.revision,
                envelope.book.stream_name(),
                envelope.version
            )));
        }
        if envelope.event_id.0 != self.event_id || event.payload.type_name() != self.event_type {
            return Err(corrupt("event id or type differs from the stored event's".into()));
        }
        if metadata.version != envelope.version || metadata.hash != hex::encode(envelope.hash) {
            return Err(corrupt("metadata disagrees with the canonical bytes".into()));
        }
        Ok((event, bytes))
    }
}

#[cfg(test)]
mod tests {
    use domain::testing::{amount, meta, open_customer, open_partner};
    use domain::{AccountId, Command, CommandMeta, Decision, Idempotency, decide, seal};

    use super::*;

    /// A partner's book with a customer, a payment (with an idempotency key) and a move.
    fn sample_events() -> Vec<EncodedEvent> {
        let partner = AccountId::new();
        let customer = AccountId::new();
        let mut state = domain::BookState::new(BookId::of_partner(partner));
        let keyed =
            CommandMeta { idempotency: Some(Idempotency { key: "pay-1".into(), request_digest: [3; 32] }), ..meta() };
        let commands = [
            (open_partner(partner, "P-1", "0"), meta()),
            (open_customer(customer, Some(partner), "C-1", "10.5"), meta()),
            (
                Command::ReceivePayment {
                    account: partner,
                    amount: amount("100.50"),
                    method: Some("wire".into()),
                    reference: None,
                },
                keyed,
            ),
            (Command::MoveFunds { from: partner, to: customer, amount: amount("0.00001"), note: None }, meta()),
        ];
        let mut encoded = Vec::new();
        for (command, meta) in commands {
            let Decision::Accept(payloads) = decide(&state, &command, &meta).expect("accepted") else {
                panic!("not a repeat")
            };
            let mut bytes = Vec::new();
            let events = seal(&mut state, payloads, &meta, |envelope, payload| {
                let (b, hash) = chain::encode(envelope, payload);
                bytes.push(b);
                hash
            });
            encoded.extend(events.into_iter().zip(bytes).map(|(event, bytes)| EncodedEvent { event, bytes }));
        }
        encoded
    }

    fn stored_metadata(encoded: &EncodedEvent) -> Vec<u8> {
        serde_json::to_vec(&event_metadata(encoded)).unwrap()
    }

    #[test]
    fn positions_map_both_ways_and_resume_one_past_an_event() {
        assert_eq!(start_of(0), Start::Beginning);
        assert_eq!(start_of(1), Start::Beginning);
        let mut previous = 1;
        // Commit positions are byte offsets, below 2^63 on the server.
        for commit in [0, 1, 95, 4_096, 268_435_455, 268_435_456, i64::MAX as u64 - 1] {
            let position = position_of(commit).unwrap();
            assert!(position > previous && position.is_multiple_of(2), "{commit} -> {position}");
            assert_eq!(start_of(position), Start::At(commit));
            assert_eq!(start_of(position + 1), Start::After(commit));
            previous = position;
        }
        assert!(position_of(u64::MAX).is_err());
    }

    #[test]
    fn reading_back_gives_the_exact_event_and_its_canonical_bytes() {
        let events = sample_events();
        let mut verifier = chain::ChainVerifier::default();
        for (index, encoded) in events.iter().enumerate() {
            let envelope = &encoded.event.envelope;
            let metadata = stored_metadata(encoded);
            let stream = envelope.book.stream_name();
            let stored = Stored {
                stream: &stream,
                revision: envelope.version,
                event_id: envelope.event_id.0,
                event_type: encoded.event.payload.type_name(),
                metadata: &metadata,
            };
            let position = position_of(1_000 + 200 * index as u64).unwrap();
            let (event, bytes) = stored.decode(position).unwrap();
            assert_eq!(event, encoded.event);
            assert_eq!(bytes, encoded.bytes);
            verifier.check(position, &bytes).expect("the chain verifies after a round trip");
            event_data(encoded).expect("every event renders as KurrentDB event data");
        }
    }

    #[test]
    fn the_json_data_is_readable_by_other_tools() {
        let events = sample_events();
        let payment = &events[2];
        let document = serde_json::to_value(event_document(payment).unwrap()).unwrap();
        assert_eq!(document["version"], 2);
        assert_eq!(document["payload"]["method"], "wire");
        // Amounts are JSON numbers holding exactly the decimal's digits.
        assert_eq!(serde_json::to_string(&document["payload"]["amount"]).unwrap(), "100.50");
        let metadata: serde_json::Value = serde_json::from_slice(&stored_metadata(payment)).unwrap();
        assert_eq!(metadata["idempotency_key"], "pay-1");
        assert_eq!(metadata["hash"], hex::encode(payment.event.envelope.hash));
        assert_eq!(metadata["codec_version"], chain::CODEC_VERSION);
    }

    #[test]
    fn an_event_stored_elsewhere_than_it_says_is_corrupt() {
        let events = sample_events();
        let encoded = &events[1];
        let envelope = &encoded.event.envelope;
        let metadata = stored_metadata(encoded);
        let stream = envelope.book.stream_name();
        let good = Stored {
            stream: &stream,
            revision: envelope.version,
            event_id: envelope.event_id.0,
            event_type: encoded.event.payload.type_name(),
            metadata: &metadata,
        };
        let other_stream = BookId::of_partner(AccountId::new()).stream_name();
        let other_id = domain::EventId::new().0;
        let cases = [
            Stored { revision: envelope.version + 1, ..good },
            Stored { stream: &other_stream, ..good },
            Stored { event_id: other_id, ..good },
            Stored { event_type: "PaymentReceived", ..good },
            Stored { metadata: b"{\"not\":\"ours\"}", ..good },
            Stored { metadata: b"", ..good },
        ];
        for (case, stored) in cases.iter().enumerate() {
            assert!(matches!(stored.decode(2), Err(StoreError::Corrupt { .. })), "case {case}");
        }
        assert!(good.decode(2).is_ok());
    }
}
