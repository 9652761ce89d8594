//! Webhook delivery: one task per subscription follows the global log from the
//! subscription's durable cursor and POSTs each event it wants, signed, in log order.
//!
//! A delivery is retried with exponential backoff until it succeeds or its retry window
//! ends; then it is marked failed and the subscription moves on. The cursor moves only
//! after an outcome is recorded, so a crash delivers the event again (at least once) and
//! never skips it. Each subscription has its own task and every request a timeout, so a
//! slow receiver holds up nobody but itself; the ledger never waits for a delivery.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use commands::EventStore;
use domain::{Event, RecordedEvent};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use super::address::AddressPolicy;
use super::follow::{self, Channel, DeliveryConfig, Flow, Verdict};
use super::message::{EventBody, Renderer};
use super::store::{Attempt, DeliveryRecord, DeliveryStatus, NotifyStore, WebhookRecord};

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-tollbook-signature";
pub const EVENT_HEADER: &str = "x-tollbook-event";
/// `<subscription id>:<position>`: the same for every attempt at one delivery, so a
/// receiver can drop a repeat.
pub const DELIVERY_HEADER: &str = "x-tollbook-delivery";
/// Outcomes between two trims of a subscription's delivery log.
const OUTCOMES_PER_LOG_TRIM: u64 = 1024;

/// Webhook POSTs made, retries included.
pub const ATTEMPTS_METRIC: &str = "tollbook_webhook_attempts_total";
/// Webhook deliveries finished, by `status` (`delivered`, `failed`).
pub const DELIVERIES_METRIC: &str = "tollbook_webhook_deliveries_total";

/// What a webhook receiver gets: the same event form as the stream, and the subscription.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookPayload<'a> {
    pub subscription: Uuid,
    pub position: u64,
    pub event: &'a EventBody,
}

/// The signature header's value for `body` sent at `unix_seconds`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(format!("{unix_seconds}.").as_bytes());
    context.update(body);
    format!("t={unix_seconds},v1={}", hex::encode(context.sign().as_ref()))
}

pub struct Worker {
    pub record: WebhookRecord,
    pub store: NotifyStore,
    pub events: Arc<dyn EventStore>,
    pub renderer: Renderer,
    pub config: DeliveryConfig,
    pub policy: AddressPolicy,
    pub client: reqwest::Client,
    pub stop: watch::Receiver<bool>,
    /// Outcomes recorded since the start, to trim the log now and then.
    pub outcomes: std::sync::atomic::AtomicU64,
}

impl Worker {
    pub async fn run(self) {
        let id = self.record.id;
        let next = match self.store.cursor(id) {
            Ok(cursor) => cursor.unwrap_or(self.record.from),
            Err(error) => {
                tracing::error!(%error, webhook = %id, "cannot read the webhook's cursor; not delivering");
                return;
            }
        };
        let (events, stop) = (self.events.clone(), self.stop.clone());
        follow::follow(events, next, self, stop).await;
    }

    /// Delivers one event: attempts until one is answered 2xx or the retry window ends.
    /// `None` when the server began to stop first.
    async fn deliver(&self, recorded: &RecordedEvent) -> Option<DeliveryRecord> {
        let id = self.record.id;
        self.renderer.settle(recorded).await;
        let message = self.renderer.render(recorded, self.record.audience);
        let payload = WebhookPayload { subscription: id, position: recorded.position, event: &message.event };
        let body = serde_json::to_vec(&payload).expect("event messages always serialize");
        let mut record = DeliveryRecord {
            position: recorded.position,
            event_id: recorded.event.envelope.event_id.0,
            kind: message.event.kind.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
        };
        let mut attempts = Vec::new();
        let mut stop = self.stop.clone();
        let status = follow::retry(
            &self.config,
            &mut attempts,
            &mut stop,
            || {
                let (event, body) = (&message.event, body.as_slice());
                async move {
                    metrics::counter!(ATTEMPTS_METRIC).increment(1);
                    let attempt = self.attempt(recorded.position, event, body).await;
                    let delivered = attempt.status_code.is_some_and(|code| (200..300).contains(&code));
                    (attempt, if delivered { Verdict::Delivered } else { Verdict::Retry })
                }
            },
            |so_far| {
                record.attempts = so_far.to_vec();
                if let Err(error) = self.store.record_pending(id, &record) {
                    tracing::warn!(%error, webhook = %id, "recording an attempt failed");
                }
            },
        )
        .await?;
        if status == DeliveryStatus::Failed {
            tracing::warn!(webhook = %id, position = recorded.position, "delivery failed; moving on");
        }
        let label = if status == DeliveryStatus::Delivered { "delivered" } else { "failed" };
        metrics::counter!(DELIVERIES_METRIC, "status" => label).increment(1);
        record.status = status;
        record.attempts = attempts;
        Some(record)
    }

    async fn attempt(&self, position: u64, event: &EventBody, body: &[u8]) -> Attempt {
        let now = Utc::now();
        let started = Instant::now();
        // A literal address is not resolved, so the resolver's filter does not see it: it is
        // checked here, each time, as the operator's allowed ranges may have changed since
        // the webhook was created.
        if let Some(ip) = literal_ip(&self.record.url)
            && !self.policy.permits(ip)
        {
            let error = Some(format!("{ip} is an address webhooks may not reach"));
            return Attempt { at: now, status_code: None, error, duration_ms: 0 };
        }
        let result = self
            .client
            .post(&self.record.url)
            .timeout(self.config.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&self.record.secret, now.timestamp(), body))
            .header(EVENT_HEADER, event.kind)
            .header(DELIVERY_HEADER, format!("{}:{position}", self.record.id))
            .body(body.to_vec())
            .send()
            .await;
        let duration_ms = follow::elapsed_ms(started);
        match result {
            Ok(response) => {
                let status = response.status();
                let error = (!status.is_success()).then(|| format!("answered {status}"));
                Attempt { at: now, status_code: Some(status.as_u16()), error, duration_ms }
            }
            Err(error) => {
                let reason = if error.is_timeout() {
                    format!("no answer within {} ms", self.config.timeout.as_millis())
                } else if error.is_connect() && refused_address(&error) {
                    "the host resolves only to addresses webhooks may not reach".to_owned()
                } else if error.is_connect() {
                    "could not connect".to_owned()
                } else {
                    "the request failed".to_owned()
                };
                Attempt { at: now, status_code: None, error: Some(reason), duration_ms }
            }
        }
    }
}

impl Channel for Worker {
    fn name(&self) -> String {
        format!("webhook {}", self.record.id)
    }

    fn wants(&self, event: &Event) -> bool {
        self.record.audience.sees(event) && self.record.filter.matches(event)
    }

    fn skip_to(&self, next: u64) {
        if let Err(error) = self.store.advance_cursor(self.record.id, next) {
            tracing::warn!(%error, webhook = %self.record.id, "saving the cursor failed");
        }
    }

    async fn handle(&self, recorded: &RecordedEvent) -> Flow {
        let id = self.record.id;
        let Some(outcome) = self.deliver(recorded).await else { return Flow::Stop };
        if let Err(error) = self.store.record_outcome(id, &outcome) {
            // The event will be delivered again after a restart: at least once.
            tracing::error!(%error, webhook = %id, "recording a delivery failed");
        }
        let outcomes = self.outcomes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if outcomes.is_multiple_of(OUTCOMES_PER_LOG_TRIM)
            && let Err(error) = self.store.trim_log(id)
        {
            tracing::warn!(%error, webhook = %id, "trimming the delivery log failed");
        }
        Flow::Next
    }
}

/// The address of a URL whose host is one (`http://10.0.0.1/`, `http://[::1]/`).
/// The URL parser has already written other forms (`http://2130706433/`, `0x7f.1`) as
/// the dotted address.
pub fn literal_ip(url: &str) -> Option<std::net::IpAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// True when a connection failed because the resolver refused every address.
fn refused_address(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(error) = source {
        if error.is::<super::address::AddressNotAllowed>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // Reference value: python3 -c 'import hmac,hashlib;
        //   print(hmac.new(b"whsec_test", b"1700000000.{}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature("whsec_test", 1_700_000_000, b"{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }
}
