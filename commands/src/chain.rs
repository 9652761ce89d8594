//! The canonical encoding of an event and its hash chain.
//!
//! Stored form: `[CODEC_VERSION][schema version u16 LE][hash: 32 bytes][body]`, where the
//! body is the postcard encoding of the event with its `hash` field zeroed and the hash
//! is SHA-256 of the body. Each event's `prev_hash` is the hash of the previous event of
//! its book, so any edited, removed or reordered event breaks the chain.

use domain::event::GENESIS_HASH;
use domain::{Envelope, Event, Hash, Payload, RecordedEvent};
use sha2::{Digest, Sha256};

use crate::error::StoreError;

pub const CODEC_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 2 + 32;

/// An event with its stored bytes, made once by the writer and reused by the store.
#[derive(Clone, Debug)]
pub struct EncodedEvent {
    pub event: Event,
    pub bytes: Vec<u8>,
}

/// Encodes `envelope` + `payload` canonically and returns the bytes to store and the
/// event's hash. `envelope.hash` is ignored (the hash is over everything else).
pub fn encode(envelope: &Envelope, payload: &Payload) -> (Vec<u8>, Hash) {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        envelope: &'a Envelope,
        payload: &'a Payload,
    }
    let mut bytes = Vec::with_capacity(256);
    bytes.push(CODEC_VERSION);
    bytes.extend_from_slice(&payload.schema_version().to_le_bytes());
    bytes.extend_from_slice(&[0u8; 32]);
    // The hash field is hashed as zeros and stored in the header instead.
    let unhashed = Envelope { hash: GENESIS_HASH, ..envelope.clone() };
    let mut bytes =
        postcard::to_extend(&Body { envelope: &unhashed, payload }, bytes).expect("encoding to a Vec cannot fail");
    let hash: Hash = Sha256::digest(&bytes[HEADER_LEN..]).into();
    bytes[3..HEADER_LEN].copy_from_slice(&hash);
    (bytes, hash)
}

/// Decodes stored bytes. The stored hash is put back into the envelope; whether it
/// matches the body is for [`verify_bytes`] to say.
pub fn decode(position: u64, bytes: &[u8]) -> Result<Event, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt("shorter than its header".into()));
    }
    if bytes[0] != CODEC_VERSION {
        return Err(corrupt(format!("unknown codec version {}", bytes[0])));
    }
    let schema = u16::from_le_bytes([bytes[1], bytes[2]]);
    if schema != 1 {
        return Err(corrupt(format!("unknown payload schema version {schema}")));
    }
    #[derive(serde::Deserialize)]
    struct Body {
        envelope: Envelope,
        payload: Payload,
    }
    let body: Body = postcard::from_bytes(&bytes[HEADER_LEN..]).map_err(|e| corrupt(e.to_string()))?;
    let mut envelope = body.envelope;
    envelope.hash.copy_from_slice(&bytes[3..HEADER_LEN]);
    Ok(Event { envelope, payload: body.payload })
}

/// True when the stored hash is the SHA-256 of the stored body.
pub fn verify_bytes(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && Sha256::digest(&bytes[HEADER_LEN..]).as_slice() == &bytes[3..HEADER_LEN]
}

/// Where a book's chain first breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub version: u64,
    pub position: u64,
    pub reason: String,
}

/// Walks a book's chain incrementally: feed it each event in stream order.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    next_version: u64,
    last_hash: Hash,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { next_version: 0, last_hash: GENESIS_HASH }
    }
}

impl ChainVerifier {
    /// Checks one event: its version follows, it links to the previous hash, and its
    /// hash is the hash of its content (re-encoded canonically).
    pub fn check(&mut self, recorded: &RecordedEvent) -> Result<(), ChainBreak> {
        let envelope = &recorded.event.envelope;
        let fail = |reason: String| ChainBreak { version: envelope.version, position: recorded.position, reason };
        if envelope.version != self.next_version {
            return Err(fail(format!("version {} where {} was expected", envelope.version, self.next_version)));
        }
        if envelope.prev_hash != self.last_hash {
            return Err(fail("prev_hash does not match the previous event's hash".into()));
        }
        let (_, hash) = encode(envelope, &recorded.event.payload);
        if hash != envelope.hash {
            return Err(fail("hash does not match the event's content".into()));
        }
        self.next_version += 1;
        self.last_hash = envelope.hash;
        Ok(())
    }
}

/// Checks a whole book, given in stream order.
pub fn verify_chain<'a>(events: impl IntoIterator<Item = &'a RecordedEvent>) -> Result<u64, ChainBreak> {
    let mut verifier = ChainVerifier::default();
    for event in events {
        verifier.check(event)?;
    }
    Ok(verifier.next_version)
}
