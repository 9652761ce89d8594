//! Alert e-mail: one task follows the global log from its durable cursor and e-mails each
//! `AlertRaised` to the addresses its account has set, through the operator's SMTP relay.
//!
//! It is the webhooks' machinery (`super::follow`) with another channel: the same log
//! order, backoff and retry window, and a delivery log per account. Where webhooks are at
//! least once (a receiver drops repeats by their delivery header), an e-mail goes to a
//! person, so each e-mail's outcome is flushed before the next is sent and the mailer
//! skips an e-mail whose outcome is recorded: once per alert and address across restarts.
//! Only a crash between the relay's 250 and that flush (milliseconds) can repeat one; its
//! `Message-ID` is the same every time, so a mail client can tell.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::Utc;
use commands::EventStore;
use domain::{Event, Payload, RecordedEvent};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::watch;
use uuid::Uuid;

use super::follow::{self, Channel, DeliveryConfig, Flow, Verdict};
use super::message::Renderer;
use super::store::{Attempt, DeliveryStatus, MailDeliveryRecord, NotifyStore};
use super::template::AlertValues;

/// E-mails handed to the relay, retries included.
pub const ATTEMPTS_METRIC: &str = "tollbook_mail_attempts_total";
/// E-mails finished, by `status` (`delivered`, `failed`).
pub const DELIVERIES_METRIC: &str = "tollbook_mail_deliveries_total";
/// Addresses one account may have.
pub const ADDRESSES_PER_ACCOUNT_MAX: usize = 10;
/// The longest address accepted, in bytes (RFC 5321's limit on a path).
pub const ADDRESS_BYTES_MAX: usize = 254;
/// The longest subject, in characters: a template may be long, a subject line should not.
const SUBJECT_CHARS_MAX: usize = 200;
/// Outcomes between two trims of the e-mail logs.
const OUTCOMES_PER_LOG_TRIM: u64 = 1024;

/// How the connection to the relay is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Plain text: only for a relay on the same host or a trusted network.
    None,
    /// Plain connection upgraded with STARTTLS, which the relay must offer (port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// The operator's SMTP relay and the sender's address.
#[derive(Clone, Debug)]
pub struct MailSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// AUTH with these when given (PLAIN or LOGIN, whichever the relay offers).
    pub username: Option<String>,
    pub password: Option<String>,
    /// A PEM file of certificates to trust besides the public roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    pub from: Mailbox,
    pub delivery: DeliveryConfig,
}

/// The relay's transport, connecting anew for each e-mail (alerts are rare; a pooled
/// connection the relay closed while idle would fail the next one). An error names the
/// flag at fault: it is said at start-up, not at the first alert.
pub fn transport(settings: &MailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let host = settings.host.clone();
    let tls = match settings.tls {
        TlsMode::None => Tls::None,
        secure => {
            let mut parameters = TlsParameters::builder(host.clone());
            if let Some(path) = &settings.ca_file {
                let shown = path.display().to_string();
                let pem = std::fs::read(path).map_err(|e| format!("--smtp-ca-file {shown}: {e}"))?;
                let certificate = Certificate::from_pem(&pem).map_err(|e| format!("--smtp-ca-file {shown}: {e}"))?;
                parameters = parameters.add_root_certificate(certificate);
            }
            let parameters = parameters.build_rustls().map_err(|e| format!("--smtp-host {host}: {e}"))?;
            if secure == TlsMode::Tls { Tls::Wrapper(parameters) } else { Tls::Required(parameters) }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(settings.port)
        .tls(tls)
        .timeout(Some(settings.delivery.timeout));
    match (&settings.username, &settings.password) {
        (Some(username), Some(password)) => {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        (Some(_), None) => return Err("--smtp-username is set but TOLLBOOK_SMTP_PASSWORD is not".into()),
        (None, _) => {}
    }
    Ok(builder.build())
}

/// An alert's e-mail: the subject is its message from the operator's template, the body
/// that message and the facts it was made from.
pub struct AlertMail {
    pub subject: String,
    pub body: String,
}

pub fn alert_mail(message: &str, values: &AlertValues, recorded: &RecordedEvent) -> AlertMail {
    // A header is one line: a template's line breaks become spaces.
    let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let subject = match one_line.char_indices().nth(SUBJECT_CHARS_MAX) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    };
    let mut body = format!("{message}\n\n");
    let mut fact = |name: &str, value: &str| {
        if !value.is_empty() {
            body.push_str(&format!("{name:<14}{value}\n"));
        }
    };
    fact("Account:", &format!("{} ({})", values.account_name, values.account_number));
    fact("Alert:", &values.alert);
    fact("Balance:", &values.balance);
    fact("Credit limit:", &values.credit_limit);
    fact("Threshold:", &values.threshold);
    fact("Destination:", &values.destination);
    fact("Duration:", &values.duration);
    fact("Cost:", &values.cost);
    fact("Occurred at:", &recorded.event.envelope.occurred_at.to_rfc3339());
    fact("Event:", &format!("{} (log position {})", recorded.event.envelope.event_id.0, recorded.position));
    AlertMail { subject, body }
}

pub struct Mailer {
    pub store: NotifyStore,
    pub events: Arc<dyn EventStore>,
    pub renderer: Renderer,
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: Mailbox,
    pub config: DeliveryConfig,
    pub stop: watch::Receiver<bool>,
    pub outcomes: AtomicU64,
}

impl Mailer {
    pub async fn run(self) {
        let next = match self.store.mail_cursor() {
            Ok(Some(next)) => next,
            // The first start sends what is raised from now on, not every alert in the log.
            Ok(None) => match self.events.head().await {
                Ok(head) => {
                    if let Err(error) = self.store.set_mail_cursor(head) {
                        tracing::error!(%error, "cannot save the mailer's cursor; not sending alert e-mail");
                        return;
                    }
                    head
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read the log's head; not sending alert e-mail");
                    return;
                }
            },
            Err(error) => {
                tracing::error!(%error, "cannot read the mailer's cursor; not sending alert e-mail");
                return;
            }
        };
        let (events, stop) = (self.events.clone(), self.stop.clone());
        follow::follow(events, next, self, stop).await;
    }

    /// Sends one alert's e-mail to one address until the relay accepts it, refuses it for
    /// good, or the retry window ends. `None` when the server began to stop first.
    async fn deliver(
        &self,
        account: Uuid,
        mut record: MailDeliveryRecord,
        message: Message,
    ) -> Option<MailDeliveryRecord> {
        let mut attempts = Vec::new();
        let mut stop = self.stop.clone();
        let status = follow::retry(
            &self.config,
            &mut attempts,
            &mut stop,
            || {
                let message = &message;
                async move {
                    metrics::counter!(ATTEMPTS_METRIC).increment(1);
                    self.attempt(message).await
                }
            },
            |so_far| {
                let mut pending = record.clone();
                pending.attempts = so_far.to_vec();
                if let Err(error) = self.store.record_mail_pending(account, &pending) {
                    tracing::warn!(%error, "recording an e-mail attempt failed");
                }
            },
        )
        .await?;
        if status == DeliveryStatus::Failed {
            tracing::warn!(to = record.to, position = record.position, "an alert e-mail failed; moving on");
        }
        let label = if status == DeliveryStatus::Delivered { "delivered" } else { "failed" };
        metrics::counter!(DELIVERIES_METRIC, "status" => label).increment(1);
        record.status = status;
        record.attempts = attempts;
        Some(record)
    }

    fn message(&self, recorded: &RecordedEvent, to: &str, mail: &AlertMail) -> Result<Message, String> {
        let to: Mailbox = to.parse().map_err(|e| format!("`{to}` is not an e-mail address: {e}"))?;
        let domain = self.from.email.domain().to_owned();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            // The same for every attempt and every restart: a repeat can be recognised.
            .message_id(Some(format!("<alert-{}@{domain}>", recorded.event.envelope.event_id.0)))
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| e.to_string())
    }

    async fn attempt(&self, message: &Message) -> (Attempt, Verdict) {
        let at = Utc::now();
        let started = Instant::now();
        let result = self.transport.send(message.clone()).await;
        let duration_ms = follow::elapsed_ms(started);
        match result {
            Ok(response) => {
                let code = u16::from(response.code());
                (Attempt { at, status_code: Some(code), error: None, duration_ms }, Verdict::Delivered)
            }
            Err(error) => {
                let status_code = error.status().map(u16::from);
                // A 5xx is the relay's final word (no such mailbox, relaying denied);
                // anything else (4xx, no connection, a timeout) may pass later.
                let verdict = if error.is_permanent() { Verdict::Refused } else { Verdict::Retry };
                let reason = if error.is_timeout() {
                    format!("no answer within {} ms", self.config.timeout.as_millis())
                } else {
                    error.to_string()
                };
                (Attempt { at, status_code, error: Some(reason), duration_ms }, verdict)
            }
        }
    }
}

impl Channel for Mailer {
    fn name(&self) -> String {
        "mail".to_owned()
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(event.payload, Payload::AlertRaised(_))
    }

    fn skip_to(&self, next: u64) {
        if let Err(error) = self.store.set_mail_cursor(next) {
            tracing::warn!(%error, "saving the mailer's cursor failed");
        }
    }

    async fn handle(&self, recorded: &RecordedEvent) -> Flow {
        let Payload::AlertRaised(raised) = &recorded.event.payload else { return Flow::Next };
        let account = raised.account.0;
        let addresses = match self.store.mail_addresses(account) {
            Ok(addresses) => addresses,
            Err(error) => {
                tracing::error!(%error, "cannot read an account's e-mail addresses; its alert is not e-mailed");
                Vec::new()
            }
        };
        if !addresses.is_empty() {
            self.renderer.settle(recorded).await;
            let (message, values) = self.renderer.alert_text(raised);
            let mail = alert_mail(&message, &values, recorded);
            for address in addresses {
                match self.store.mail_delivery(account, recorded.position, &address) {
                    // Sent (or given up) before a restart: not again.
                    Ok(Some(done)) if done.status != DeliveryStatus::Pending => continue,
                    Ok(_) => {}
                    Err(error) => {
                        // Unknown whether it went: not sending is the side that cannot repeat.
                        tracing::error!(%error, to = address, "cannot read the e-mail log; this e-mail is skipped");
                        continue;
                    }
                }
                let record = MailDeliveryRecord {
                    position: recorded.position,
                    event_id: recorded.event.envelope.event_id.0,
                    alert: values.alert.clone(),
                    to: address.clone(),
                    subject: mail.subject.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: Vec::new(),
                };
                let outcome = match self.message(recorded, &address, &mail) {
                    Ok(message) => match self.deliver(account, record, message).await {
                        Some(outcome) => outcome,
                        None => return Flow::Stop,
                    },
                    Err(error) => {
                        // Checked when set, so only an address stored by an older version.
                        let attempt = Attempt { at: Utc::now(), status_code: None, error: Some(error), duration_ms: 0 };
                        MailDeliveryRecord { status: DeliveryStatus::Failed, attempts: vec![attempt], ..record }
                    }
                };
                if let Err(error) = self.store.record_mail_outcome(account, &outcome).await {
                    tracing::error!(%error, to = address, "recording an e-mail's outcome failed");
                }
                let outcomes = self.outcomes.fetch_add(1, Ordering::Relaxed) + 1;
                if outcomes.is_multiple_of(OUTCOMES_PER_LOG_TRIM)
                    && let Err(error) = self.store.trim_mail_log(account)
                {
                    tracing::warn!(%error, "trimming the e-mail log failed");
                }
            }
        }
        self.skip_to(recorded.position + 1);
        Flow::Next
    }
}
