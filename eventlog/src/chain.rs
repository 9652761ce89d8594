//! The canonical encoding of an event and its hash chain.
//!
//! Stored form: `[CODEC_VERSION][schema version u16 LE][hash: 32 bytes][body]`, where the
//! body is the postcard encoding of the event with its `hash` field zeroed and the hash
//! is SHA-256 of the body. Each event's `prev_hash` is the hash of the previous event of
//! its book, so any edited, removed or reordered event breaks the chain.

use domain::event::GENESIS_HASH;
use domain::{BookId, Envelope, Event, Hash, Payload};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::store::{EventStore, READ_EVENTS_MAX};

pub const CODEC_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 2 + 32;

/// An event with its stored bytes, made once by the writer and reused by the store.
#[derive(Clone, Debug)]
pub struct EncodedEvent {
    pub event: Event,
    pub bytes: Vec<u8>,
}

impl AsRef<Event> for EncodedEvent {
    fn as_ref(&self) -> &Event {
        &self.event
    }
}

impl EncodedEvent {
    /// Encodes and hashes an event from its envelope (whose `hash` is set here) and
    /// payload.
    pub fn seal(mut envelope: Envelope, payload: Payload) -> EncodedEvent {
        let (bytes, hash) = encode(&envelope, &payload);
        envelope.hash = hash;
        EncodedEvent { event: Event { envelope, payload }, bytes }
    }
}

/// Encodes `envelope` + `payload` canonically and returns the bytes to store and the
/// event's hash. `envelope.hash` is ignored (the hash is over everything else).
pub fn encode(envelope: &Envelope, payload: &Payload) -> (Vec<u8>, Hash) {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        envelope: UnhashedEnvelope<'a>,
        payload: &'a Payload,
    }
    // Room for the largest events (a call charge with its CDR is ~300–400 bytes): a
    // buffer that grows while encoding is copied and freed on the writer's hot path.
    let mut bytes = Vec::with_capacity(512);
    bytes.push(CODEC_VERSION);
    bytes.extend_from_slice(&payload.schema_version().to_le_bytes());
    bytes.extend_from_slice(&[0u8; 32]);
    let body = Body { envelope: UnhashedEnvelope::of(envelope), payload };
    let mut bytes = postcard::to_extend(&body, bytes).expect("encoding to a Vec cannot fail");
    let hash: Hash = Sha256::digest(&bytes[HEADER_LEN..]).into();
    bytes[3..HEADER_LEN].copy_from_slice(&hash);
    (bytes, hash)
}

/// An envelope as it is hashed: every field by reference, the hash as zeros (it is
/// stored in the header instead). Encodes exactly like `Envelope` — postcard encodes a
/// struct as its fields in order — without cloning the envelope on the hot path.
#[derive(serde::Serialize)]
struct UnhashedEnvelope<'a> {
    event_id: &'a domain::EventId,
    book: &'a BookId,
    version: u64,
    occurred_at: &'a domain::Timestamp,
    recorded_at: &'a domain::Timestamp,
    actor: &'a str,
    idempotency: &'a Option<domain::Idempotency>,
    command_events: u32,
    prev_hash: &'a Hash,
    hash: Hash,
}

impl<'a> UnhashedEnvelope<'a> {
    fn of(envelope: &'a Envelope) -> Self {
        // Destructured so that a new envelope field cannot be forgotten here.
        let Envelope {
            event_id,
            book,
            version,
            occurred_at,
            recorded_at,
            actor,
            idempotency,
            command_events,
            prev_hash,
            hash: _,
        } = envelope;
        UnhashedEnvelope {
            event_id,
            book,
            version: *version,
            occurred_at,
            recorded_at,
            actor,
            idempotency,
            command_events: *command_events,
            prev_hash,
            hash: GENESIS_HASH,
        }
    }
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
    let body = &bytes[HEADER_LEN..];
    // The envelope by hand where it can be (see `envelope::take`), else by serde, which
    // then gives the precise error.
    let (mut envelope, payload) = match envelope::take(body) {
        Some((envelope, payload)) => (envelope, payload),
        None => {
            let (envelope, payload) =
                postcard::take_from_bytes::<Envelope>(body).map_err(|e| corrupt(e.to_string()))?;
            (envelope, payload)
        }
    };
    let payload = match schema {
        // Schema 1: a `CallCharged` of the old shape is read by the old reader; every
        // other payload kept its shape, and those past `CallCharged` in the enum are
        // unknown to the old reader, so they are read with today's.
        1 => match postcard::from_bytes::<legacy::PayloadV1>(payload) {
            Ok(old) => old.into(),
            Err(_) => {
                let payload: Payload = postcard::from_bytes(payload).map_err(|e| corrupt(e.to_string()))?;
                if matches!(payload, Payload::CallCharged(_)) {
                    return Err(corrupt("a schema 1 event holds a schema 2 CallCharged".into()));
                }
                payload
            }
        },
        2 => postcard::from_bytes(payload).map_err(|e| corrupt(e.to_string()))?,
        other => return Err(corrupt(format!("unknown payload schema version {other}"))),
    };
    envelope.hash.copy_from_slice(&bytes[3..HEADER_LEN]);
    Ok(Event { envelope, payload })
}

/// The envelope read straight from postcard's layout of it, for every read of the log:
/// serde reads each byte of its three 32-byte arrays through a visitor call of its own,
/// a tenth of decoding an event. Postcard writes a struct as its fields in order, a
/// `Uuid` as a length (16) and its bytes, integers as LEB128 varints (signed ones
/// zigzagged), a string as its length and UTF-8 bytes, an option as a 0 or 1 byte then
/// the value, a byte array as its bytes.
mod envelope {
    use domain::{BookId, Envelope, EventId, Hash, Idempotency, Timestamp};

    pub(super) struct Reader<'a>(pub(super) &'a [u8]);

    impl<'a> Reader<'a> {
        fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
            let (taken, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(taken)
        }

        /// A varint of at most `max_bytes`, refused where postcard refuses it: its last
        /// byte holding more bits than the type has.
        fn varint(&mut self, max_bytes: usize, bits: u32) -> Option<u64> {
            let mut value = 0u64;
            for at in 0..max_bytes {
                let byte = *self.bytes(1)?.first()?;
                value |= u64::from(byte & 0x7f) << (7 * at);
                if byte & 0x80 == 0 {
                    let last_bits = bits - 7 * at as u32;
                    return (at + 1 < max_bytes || last_bits >= 8 || byte >> last_bits == 0).then_some(value);
                }
            }
            None
        }

        pub(super) fn u64(&mut self) -> Option<u64> {
            self.varint(10, 64)
        }

        pub(super) fn u32(&mut self) -> Option<u32> {
            self.varint(5, 32).and_then(|v| u32::try_from(v).ok())
        }

        fn i64(&mut self) -> Option<i64> {
            let zigzag = self.u64()?;
            Some((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
        }

        fn uuid(&mut self) -> Option<uuid::Uuid> {
            (self.u64()? == 16).then_some(())?;
            uuid::Uuid::from_slice(self.bytes(16)?).ok()
        }

        fn string(&mut self) -> Option<String> {
            let len = usize::try_from(self.u64()?).ok()?;
            std::str::from_utf8(self.bytes(len)?).ok().map(str::to_owned)
        }

        fn hash(&mut self) -> Option<Hash> {
            self.bytes(32)?.try_into().ok()
        }
    }

    /// The envelope at the start of `body` and the bytes after it (the payload), or
    /// `None` for anything but what postcard writes for an envelope.
    pub(super) fn take(body: &[u8]) -> Option<(Envelope, &[u8])> {
        let mut r = Reader(body);
        let envelope = Envelope {
            event_id: EventId(r.uuid()?),
            book: BookId(r.uuid()?),
            version: r.u64()?,
            occurred_at: Timestamp(r.i64()?),
            recorded_at: Timestamp(r.i64()?),
            actor: r.string()?,
            idempotency: match r.bytes(1)?[0] {
                0 => None,
                1 => Some(Idempotency { key: r.string()?, request_digest: r.hash()? }),
                _ => return None,
            },
            command_events: r.u32()?,
            prev_hash: r.hash()?,
            hash: r.hash()?,
        };
        Some((envelope, r.0))
    }
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

/// Walks a book's chain over the bytes as stored: feed it each event in stream order.
/// Hashing the stored bytes themselves (not a re-encoding) means no edit can hide, even
/// one that would decode to the same event.
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
    /// Checks the stored bytes of the next event of the book: the hash is the hash of
    /// the body, the event decodes, its version follows and it links to the previous hash.
    pub fn check(&mut self, position: u64, bytes: &[u8]) -> Result<Event, ChainBreak> {
        let fail = |reason: String| ChainBreak { version: self.next_version, position, reason };
        if !verify_bytes(bytes) {
            return Err(fail("stored hash does not match the stored content".into()));
        }
        let event = decode(position, bytes).map_err(|e| fail(e.to_string()))?;
        let envelope = &event.envelope;
        if envelope.version != self.next_version {
            return Err(fail(format!("version {} where {} was expected", envelope.version, self.next_version)));
        }
        if envelope.prev_hash != self.last_hash {
            return Err(fail("prev_hash does not match the previous event's hash".into()));
        }
        // Paired check: what decodes must encode back to the same bytes.
        let (reencoded, _) = encode(envelope, &event.payload);
        if reencoded != bytes {
            return Err(fail("content is not in canonical form".into()));
        }
        self.next_version += 1;
        self.last_hash = envelope.hash;
        Ok(event)
    }

    /// Events checked so far.
    pub fn events(&self) -> u64 {
        self.next_version
    }
}

/// Verifies a whole book's chain in `store`. The outer error is a storage failure; the
/// inner result is the verdict: how many events the book holds, or where it breaks.
pub async fn verify_book(store: &dyn EventStore, book: BookId) -> Result<Result<u64, ChainBreak>, StoreError> {
    let mut verifier = ChainVerifier::default();
    loop {
        let events = match store.read_stream(book, verifier.events(), READ_EVENTS_MAX).await {
            Ok(events) => events,
            Err(StoreError::Corrupt { position, reason }) => {
                return Ok(Err(ChainBreak { version: verifier.events(), position, reason }));
            }
            Err(other) => return Err(other),
        };
        if events.is_empty() {
            return Ok(Ok(verifier.events()));
        }
        for recorded in events {
            let Some(bytes) = store.read_raw(recorded.position).await? else {
                let reason = "missing from the log".to_string();
                return Ok(Err(ChainBreak { version: verifier.events(), position: recorded.position, reason }));
            };
            if let Err(broken) = verifier.check(recorded.position, &bytes) {
                return Ok(Err(broken));
            }
        }
    }
}

/// The readers of older payload schemas.
mod legacy {
    use domain::event::{
        AccountOpened, AccountStatusChanged, AdjustmentPosted, CallCharged, ChargePosted, CreditLimitChanged,
        PaymentReceived, TariffAssigned,
    };
    use domain::rating::{CallDirection, RatedCdr};
    use domain::{AccountId, Amount, Payload, TariffId, Timestamp};
    use serde::{Deserialize, Serialize};

    /// The payload enum of schema 1 up to `CallCharged`, in the same order: postcard
    /// encodes a variant as its index, so the first eight read exactly as they were
    /// written. Later variants did not change and are not here.
    #[derive(Serialize, Deserialize)]
    pub(super) enum PayloadV1 {
        AccountOpened(AccountOpened),
        AccountStatusChanged(AccountStatusChanged),
        CreditLimitChanged(CreditLimitChanged),
        TariffAssigned(TariffAssigned),
        PaymentReceived(PaymentReceived),
        AdjustmentPosted(AdjustmentPosted),
        ChargePosted(ChargePosted),
        CallCharged(CallChargedV1),
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct CallChargedV1 {
        pub account: AccountId,
        pub cdr: RatedCdrV1,
        pub customer_cost: Amount,
        pub partner: Option<AccountId>,
        pub partner_cost: Option<Amount>,
    }

    /// A rated CDR before it kept the hang-up cause as written.
    #[derive(Serialize, Deserialize)]
    pub(super) struct RatedCdrV1 {
        pub id: String,
        pub caller: String,
        pub callee: String,
        pub start: Timestamp,
        pub answer: Option<Timestamp>,
        pub end: Timestamp,
        pub billable_seconds: u32,
        pub hangup_cause: u16,
        pub direction: CallDirection,
        pub billed_seconds: u32,
        pub matched_prefix: Option<String>,
        pub customer_tariff: Option<TariffId>,
        pub partner_tariff: Option<TariffId>,
    }

    impl From<PayloadV1> for Payload {
        fn from(old: PayloadV1) -> Payload {
            match old {
                PayloadV1::AccountOpened(e) => Payload::AccountOpened(e),
                PayloadV1::AccountStatusChanged(e) => Payload::AccountStatusChanged(e),
                PayloadV1::CreditLimitChanged(e) => Payload::CreditLimitChanged(e),
                PayloadV1::TariffAssigned(e) => Payload::TariffAssigned(e),
                PayloadV1::PaymentReceived(e) => Payload::PaymentReceived(e),
                PayloadV1::AdjustmentPosted(e) => Payload::AdjustmentPosted(e),
                PayloadV1::ChargePosted(e) => Payload::ChargePosted(e),
                PayloadV1::CallCharged(e) => {
                    let c = e.cdr;
                    Payload::CallCharged(CallCharged {
                        account: e.account,
                        cdr: RatedCdr {
                            id: c.id,
                            caller: c.caller,
                            callee: c.callee,
                            start: c.start,
                            answer: c.answer,
                            end: c.end,
                            billable_seconds: c.billable_seconds,
                            hangup_cause: c.hangup_cause,
                            direction: c.direction,
                            billed_seconds: c.billed_seconds,
                            matched_prefix: c.matched_prefix,
                            customer_tariff: c.customer_tariff,
                            partner_tariff: c.partner_tariff,
                            hangup_cause_raw: None,
                            hangup_cause_flag: None,
                        },
                        customer_cost: e.customer_cost,
                        partner: e.partner,
                        partner_cost: e.partner_cost,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::testing::{meta, open_customer};
    use domain::{AccountId, BookState, Decision, decide, seal};
    use proptest::prelude::*;

    fn any_envelope() -> impl Strategy<Value = Envelope> {
        let idempotency = proptest::option::of((".{0,40}", any::<[u8; 32]>()))
            .prop_map(|i| i.map(|(key, request_digest)| domain::Idempotency { key, request_digest }));
        (
            (any::<u128>(), any::<u128>(), any::<u64>(), any::<i64>(), any::<i64>()),
            ("\\PC{0,30}", idempotency, any::<u32>(), any::<[u8; 32]>()),
        )
            .prop_map(
                |((id, book, version, occurred, recorded), (actor, idempotency, command_events, prev_hash))| Envelope {
                    event_id: domain::EventId(uuid::Uuid::from_u128(id)),
                    book: BookId(uuid::Uuid::from_u128(book)),
                    version,
                    occurred_at: domain::Timestamp(occurred),
                    recorded_at: domain::Timestamp(recorded),
                    actor,
                    idempotency,
                    command_events,
                    prev_hash,
                    hash: GENESIS_HASH,
                },
            )
    }

    /// Varints at the edge of their type read as postcard reads them: the most bits
    /// the last byte may hold, and one more, which postcard refuses.
    #[test]
    fn varints_at_their_limits_read_as_postcard_reads_them() {
        let cases: [(&[u8], bool); 4] = [
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], true),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], false),
            (&[0xff, 0xff, 0xff, 0xff, 0x0f], true),
            (&[0xff, 0xff, 0xff, 0xff, 0x10], false),
        ];
        for (bytes, fits) in cases {
            if bytes.len() == 10 {
                let by_hand = envelope::Reader(bytes).u64();
                assert_eq!(by_hand, postcard::from_bytes::<u64>(bytes).ok());
                assert_eq!(by_hand.is_some(), fits, "{bytes:?}");
            } else {
                let by_hand = envelope::Reader(bytes).u32();
                assert_eq!(by_hand, postcard::from_bytes::<u32>(bytes).ok());
                assert_eq!(by_hand.is_some(), fits, "{bytes:?}");
            }
        }
    }

    proptest! {
        /// The envelope read by hand is the one serde reads, for any envelope; and for any
        /// cut or changed byte of one, the hand never reads what serde would not read
        /// the same (it may refuse more: serde then decides).
        #[test]
        fn the_envelope_by_hand_reads_as_serde_does(
            envelope in any_envelope(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let payload = Payload::AccountStatusChanged(domain::event::AccountStatusChanged {
                account: AccountId::new(),
                from: domain::AccountStatus::Active,
                to: domain::AccountStatus::Suspended,
                reason: None,
            });
            let (bytes, _) = encode(&envelope, &payload);
            let body = &bytes[HEADER_LEN..];
            let (by_hand, rest) = envelope::take(body).expect("an encoded envelope reads");
            let (by_serde, serde_rest) = postcard::take_from_bytes::<Envelope>(body).unwrap();
            prop_assert_eq!(&by_hand, &by_serde);
            prop_assert_eq!(&by_hand, &envelope);
            prop_assert_eq!(rest, serde_rest);
            let mut changed = body.to_vec();
            let at = flip.0.index(changed.len());
            changed[at] ^= flip.1.max(1);
            for damaged in [&body[..cut.index(body.len())], &changed[..]] {
                if let Some((by_hand, rest)) = envelope::take(damaged) {
                    let (by_serde, serde_rest) = postcard::take_from_bytes::<Envelope>(damaged).unwrap();
                    prop_assert_eq!(by_hand, by_serde);
                    prop_assert_eq!(rest, serde_rest);
                }
            }
        }
    }

    #[test]
    fn the_borrowed_envelope_encodes_like_the_envelope() {
        let mut state = BookState::new(BookId::OPERATOR);
        let command = open_customer(AccountId::new(), None, "C-1", "5");
        let Decision::Accept(payloads) = decide(&state, &command, &meta()).unwrap() else { panic!("accepted") };
        let events = seal(&mut state, payloads, &meta(), |e, p| encode(e, p).1);
        let event = &events[0];
        let (bytes, hash) = encode(&event.envelope, &event.payload);
        let unhashed = Envelope { hash: GENESIS_HASH, ..event.envelope.clone() };
        let expected = postcard::to_allocvec(&(&unhashed, &event.payload)).unwrap();
        assert_eq!(&bytes[HEADER_LEN..], expected.as_slice());
        assert_eq!(hash, event.envelope.hash);
        assert_eq!(decode(1, &bytes).unwrap(), *event);
        assert!(verify_bytes(&bytes));
    }

    /// A log written before `CallCharged` kept the cause as written (schema 1) still
    /// reads, with its hash intact, next to the events of today.
    #[test]
    fn a_schema_1_call_charge_still_reads() {
        let start = domain::Timestamp::from_seconds(1_700_000_000);
        let charged = Payload::CallCharged(domain::event::CallCharged {
            account: AccountId::new(),
            cdr: domain::rating::RatedCdr {
                id: "sw-1".into(),
                caller: "15550001".into(),
                callee: "4930123456".into(),
                start,
                answer: Some(start),
                end: start.add_seconds(61),
                billable_seconds: 61,
                hangup_cause: 17,
                direction: domain::rating::CallDirection::Outbound,
                billed_seconds: 120,
                matched_prefix: Some("4930".into()),
                customer_tariff: Some(domain::TariffId::new()),
                partner_tariff: None,
                hangup_cause_raw: None,
                hangup_cause_flag: None,
            },
            customer_cost: "0.024".parse().unwrap(),
            partner: Some(AccountId::new()),
            partner_cost: Some("0.012".parse().unwrap()),
        });
        let Payload::CallCharged(call) = &charged else { panic!("a call charge") };
        let c = &call.cdr;
        let old = legacy::PayloadV1::CallCharged(legacy::CallChargedV1 {
            account: call.account,
            cdr: legacy::RatedCdrV1 {
                id: c.id.clone(),
                caller: c.caller.clone(),
                callee: c.callee.clone(),
                start: c.start,
                answer: c.answer,
                end: c.end,
                billable_seconds: c.billable_seconds,
                hangup_cause: c.hangup_cause,
                direction: c.direction,
                billed_seconds: c.billed_seconds,
                matched_prefix: c.matched_prefix.clone(),
                customer_tariff: c.customer_tariff,
                partner_tariff: c.partner_tariff,
            },
            customer_cost: call.customer_cost,
            partner: call.partner,
            partner_cost: call.partner_cost,
        });
        let envelope = Envelope {
            event_id: domain::EventId::new(),
            book: BookId::OPERATOR,
            version: 3,
            occurred_at: domain::Timestamp::from_seconds(1),
            recorded_at: domain::Timestamp::from_seconds(2),
            actor: "admin".into(),
            idempotency: None,
            command_events: 1,
            prev_hash: GENESIS_HASH,
            hash: GENESIS_HASH,
        };
        // Stored exactly as the codec of schema 1 wrote it.
        let mut bytes = vec![CODEC_VERSION, 1, 0];
        bytes.extend_from_slice(&[0u8; 32]);
        let mut bytes = postcard::to_extend(&(&UnhashedEnvelope::of(&envelope), &old), bytes).unwrap();
        let hash: Hash = Sha256::digest(&bytes[HEADER_LEN..]).into();
        bytes[3..HEADER_LEN].copy_from_slice(&hash);
        assert!(verify_bytes(&bytes));
        let event = decode(7, &bytes).unwrap();
        assert_eq!(event.payload, charged);
        assert_eq!(event.envelope.hash, hash);
        // Written today, the same charge is schema 2 and reads back equal.
        let (bytes, _) = encode(&envelope, &charged);
        assert_eq!(u16::from_le_bytes([bytes[1], bytes[2]]), 2);
        assert_eq!(decode(7, &bytes).unwrap().payload, charged);
        // A schema 1 payload past `CallCharged` (unchanged) reads with today's reader.
        let tariff = Payload::TariffAssigned(domain::event::TariffAssigned { account: call.account, tariff: None });
        let (bytes, _) = encode(&envelope, &tariff);
        assert_eq!(decode(7, &bytes).unwrap().payload, tariff);
        let alerts = Payload::AlertsConfigured(domain::event::AlertsConfigured {
            account: call.account,
            balance_below: None,
            call_cost_above: None,
        });
        let (bytes, _) = encode(&envelope, &alerts);
        assert_eq!(bytes[1], 1);
        assert_eq!(decode(7, &bytes).unwrap().payload, alerts);
    }
}
