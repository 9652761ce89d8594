//! The notification database, `<data>/notify`: webhook subscriptions, their delivery
//! cursors and delivery logs, alert e-mail (each account's addresses, the mailer's
//! cursor, the e-mail delivery log) and the settings — the alert message templates and
//! the CDR column mappings. None of it is money, so none of it is in the event log (see
//! docs/architecture.md, "Notifications" and "Column mappings").

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use uuid::Uuid;

use super::filter::{Audience, EventFilter};
use super::template::AlertTemplates;

/// Where the notification database lives inside the data directory.
pub const NOTIFY_DIR: &str = "notify";

const SETTINGS: &str = "settings";
const WEBHOOKS: &str = "webhooks";
const CURSORS: &str = "cursors";
const DELIVERIES: &str = "deliveries";
const CDR_MAPPINGS: &str = "cdr_mappings";
const ALERT_TEMPLATES_KEY: &str = "alert_templates";
const MAIL_ADDRESSES: &str = "mail_addresses";
const MAIL_DELIVERIES: &str = "mail_deliveries";
/// The mailer's cursor, in the cursors tree beside the webhooks' (whose keys are 16-byte
/// ids, so this one cannot clash).
const MAIL_CURSOR_KEY: &[u8] = b"mail";

/// Delivery log entries kept per subscription; older ones are dropped.
pub const DELIVERY_LOG_PER_WEBHOOK_MAX: usize = 10_000;
/// Attempts recorded per delivery; a delivery retried more often keeps its last ones.
pub const ATTEMPTS_RECORDED_MAX: usize = 50;
/// E-mail delivery log entries kept per account; older ones are dropped.
pub const MAIL_LOG_PER_ACCOUNT_MAX: usize = 10_000;

/// A webhook subscription. The secret is kept as given, not hashed: the server needs it
/// to sign every delivery.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// Whose events it may receive: the creator's scope, fixed at creation.
    pub audience: Audience,
    pub filter: EventFilter,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The first log position it was to deliver.
    pub from: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Still being tried.
    Pending,
    Delivered,
    /// Every attempt within the retry window failed; the subscription moved on.
    Failed,
}

/// One try at a delivery: a webhook's POST, or an e-mail handed to the SMTP relay.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's answer, when it gave one: a webhook's HTTP status, or the SMTP
    /// relay's reply code (250 accepted, 4xx try later, 5xx refused).
    pub status_code: Option<u16>,
    /// Why there was no answer (connection refused, timeout), or what a failure meant.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// The delivery of one event to one subscription.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    /// The event's global log position.
    pub position: u64,
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
}

/// The e-mail of one alert to one address.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MailDeliveryRecord {
    /// The `AlertRaised` event's global log position.
    pub position: u64,
    pub event_id: Uuid,
    /// The alert's kind: `balance_below`, `credit_limit_reached`, `call_cost_above`, `fee_refused`.
    #[schema(example = "balance_below")]
    pub alert: String,
    #[schema(example = "billing@customer.example")]
    pub to: String,
    pub subject: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<Attempt>,
}

#[derive(Clone)]
pub struct NotifyStore {
    flusher: crate::flush::GroupFlush,
    settings: sled::Tree,
    webhooks: sled::Tree,
    cursors: sled::Tree,
    deliveries: sled::Tree,
    mail_addresses: sled::Tree,
    mail_deliveries: sled::Tree,
    /// Key: the owner's book (16 bytes) then the mapping's name.
    cdr_mappings: sled::Tree,
}

/// A column mapping as kept: whose it is, and who made it when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MappingRecord {
    /// The operator's book, or the partner's whose mapping it is.
    pub book: domain::BookId,
    pub mapping: domain::csv_mapping::CsvMapping,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

fn mapping_key(book: domain::BookId, name: &str) -> Vec<u8> {
    let mut key = book.0.as_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

type StoreResult<T> = Result<T, sled::Error>;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("notification records always serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| sled::Error::Unsupported(format!("corrupt notification record: {e}")))
}

fn delivery_key(webhook: Uuid, position: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(webhook.as_bytes());
    key[16..].copy_from_slice(&position.to_be_bytes());
    key
}

/// Account, position, recipient: an account's log reads in log order, and an alert's
/// e-mails sit together. The recipient is the bare address in lower case, so that
/// changing how an address is written (`Ann <ann@x>` for `ann@x`) does not make an alert
/// already e-mailed to it look unsent.
fn mail_key(account: Uuid, position: u64, to: &str) -> Vec<u8> {
    let bare = match (to.rfind('<'), to.ends_with('>')) {
        (Some(open), true) => &to[open + 1..to.len() - 1],
        _ => to,
    };
    let recipient = bare.trim().to_lowercase();
    let mut key = Vec::with_capacity(24 + recipient.len());
    key.extend_from_slice(account.as_bytes());
    key.extend_from_slice(&position.to_be_bytes());
    key.extend_from_slice(recipient.as_bytes());
    key
}

/// Keeps the newest `max` entries under `prefix`. Counting is a scan, so workers call
/// this now and then, not after every delivery.
fn trim(tree: &sled::Tree, prefix: &[u8], max: usize) -> StoreResult<()> {
    let count = tree.scan_prefix(prefix).count();
    let excess = count.saturating_sub(max);
    for key in tree.scan_prefix(prefix).keys().take(excess) {
        tree.remove(key?)?;
    }
    Ok(())
}

impl NotifyStore {
    pub fn open(path: &std::path::Path) -> StoreResult<Self> {
        let db = sled::open(path)?;
        Ok(NotifyStore {
            settings: db.open_tree(SETTINGS)?,
            webhooks: db.open_tree(WEBHOOKS)?,
            cursors: db.open_tree(CURSORS)?,
            deliveries: db.open_tree(DELIVERIES)?,
            mail_addresses: db.open_tree(MAIL_ADDRESSES)?,
            mail_deliveries: db.open_tree(MAIL_DELIVERIES)?,
            cdr_mappings: db.open_tree(CDR_MAPPINGS)?,
            flusher: crate::flush::GroupFlush::new(db),
        })
    }

    /// Makes every change so far durable; called before a configuration change is
    /// acknowledged. Cursor moves are not flushed one by one: losing one in a crash means
    /// delivering again (at least once), never skipping.
    async fn flush(&self) -> StoreResult<()> {
        self.flusher.flush().await
    }

    pub fn alert_templates(&self) -> StoreResult<AlertTemplates> {
        Ok(self.settings.get(ALERT_TEMPLATES_KEY)?.map(|v| decode(&v)).transpose()?.unwrap_or_default())
    }

    pub async fn set_alert_templates(&self, templates: &AlertTemplates) -> StoreResult<()> {
        self.settings.insert(ALERT_TEMPLATES_KEY, encode(templates))?;
        self.flush().await
    }

    /// The column mappings of one book, by name; every book's when `book` is `None`.
    pub fn cdr_mappings(&self, book: Option<domain::BookId>) -> StoreResult<Vec<MappingRecord>> {
        let prefix = book.map(|b| b.0.as_bytes().to_vec()).unwrap_or_default();
        self.cdr_mappings.scan_prefix(prefix).map(|entry| entry.and_then(|(_, v)| decode(&v))).collect()
    }

    pub fn cdr_mapping(&self, book: domain::BookId, name: &str) -> StoreResult<Option<MappingRecord>> {
        self.cdr_mappings.get(mapping_key(book, name))?.map(|v| decode(&v)).transpose()
    }

    /// Keeps a new mapping, durably; false (and nothing changed) when its book already
    /// has one of that name.
    pub async fn insert_cdr_mapping(&self, record: &MappingRecord) -> StoreResult<bool> {
        let key = mapping_key(record.book, &record.mapping.name);
        let swapped = self.cdr_mappings.compare_and_swap(key, None as Option<&[u8]>, Some(encode(record)))?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush().await?;
        Ok(true)
    }

    /// Removes a mapping, durably; false if there was none.
    pub async fn remove_cdr_mapping(&self, book: domain::BookId, name: &str) -> StoreResult<bool> {
        if self.cdr_mappings.remove(mapping_key(book, name))?.is_none() {
            return Ok(false);
        }
        self.flush().await?;
        Ok(true)
    }

    pub fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        // Ids are UUIDv7: key order is creation order.
        self.webhooks.iter().map(|entry| entry.and_then(|(_, v)| decode(&v))).collect()
    }

    pub fn webhook(&self, id: Uuid) -> StoreResult<Option<WebhookRecord>> {
        self.webhooks.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    pub async fn insert_webhook(&self, record: &WebhookRecord) -> StoreResult<()> {
        (&self.webhooks, &self.cursors)
            .transaction(|(webhooks, cursors)| {
                webhooks.insert(record.id.as_bytes(), encode(record))?;
                cursors.insert(record.id.as_bytes(), &record.from.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<sled::Error>>(())
            })
            .map_err(flatten)?;
        self.flush().await
    }

    /// Removes a subscription with its cursor and delivery log; false if there was none.
    pub async fn remove_webhook(&self, id: Uuid) -> StoreResult<bool> {
        if self.webhooks.remove(id.as_bytes())?.is_none() {
            return Ok(false);
        }
        self.cursors.remove(id.as_bytes())?;
        for entry in self.deliveries.scan_prefix(id.as_bytes()).keys() {
            self.deliveries.remove(entry?)?;
        }
        self.flush().await?;
        Ok(true)
    }

    /// The next position a subscription will look at.
    pub fn cursor(&self, id: Uuid) -> StoreResult<Option<u64>> {
        self.cursors
            .get(id.as_bytes())?
            .map(|v| {
                <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| sled::Error::Unsupported("corrupt webhook cursor".into()))
            })
            .transpose()
    }

    /// Moves the cursor past events the subscription does not want.
    pub fn advance_cursor(&self, id: Uuid, next: u64) -> StoreResult<()> {
        // Only while the subscription exists: a worker that outlives a delete must not
        // bring its cursor back.
        if self.webhooks.contains_key(id.as_bytes())? {
            self.cursors.insert(id.as_bytes(), &next.to_be_bytes())?;
        }
        Ok(())
    }

    /// Records an attempt in progress, so that the log shows a delivery being retried.
    pub fn record_pending(&self, id: Uuid, record: &DeliveryRecord) -> StoreResult<()> {
        if self.webhooks.contains_key(id.as_bytes())? {
            self.deliveries.insert(delivery_key(id, record.position), encode(record))?;
        }
        Ok(())
    }

    /// Records a delivery's outcome and moves the cursor past it, in one transaction: the
    /// log never says delivered while the cursor would deliver it again, or the reverse.
    pub fn record_outcome(&self, id: Uuid, record: &DeliveryRecord) -> StoreResult<()> {
        let outcome =
            (&self.webhooks, &self.cursors, &self.deliveries).transaction(|(webhooks, cursors, deliveries)| {
                if webhooks.get(id.as_bytes())?.is_none() {
                    return Ok(());
                }
                cursors.insert(id.as_bytes(), &(record.position + 1).to_be_bytes())?;
                deliveries.insert(&delivery_key(id, record.position), encode(record))?;
                Ok::<_, ConflictableTransactionError<sled::Error>>(())
            });
        outcome.map_err(flatten)
    }

    /// Keeps the newest [`DELIVERY_LOG_PER_WEBHOOK_MAX`] entries of a subscription's log.
    /// Counting is a scan, so the worker calls this now and then, not after every delivery.
    pub fn trim_log(&self, id: Uuid) -> StoreResult<()> {
        trim(&self.deliveries, id.as_bytes(), DELIVERY_LOG_PER_WEBHOOK_MAX)
    }

    /// A subscription's delivery log from `after` (a position) on, oldest first.
    pub fn deliveries(&self, id: Uuid, after: Option<u64>, limit: usize) -> StoreResult<Vec<DeliveryRecord>> {
        let start = delivery_key(id, after.map_or(0, |a| a.saturating_add(1)));
        let end = delivery_key(id, u64::MAX);
        self.deliveries.range(start..=end).take(limit).map(|entry| entry.and_then(|(_, v)| decode(&v))).collect()
    }
}

/// Alert e-mail.
impl NotifyStore {
    /// The addresses an account's alerts are e-mailed to; none when never set.
    pub fn mail_addresses(&self, account: Uuid) -> StoreResult<Vec<String>> {
        Ok(self.mail_addresses.get(account.as_bytes())?.map(|v| decode(&v)).transpose()?.unwrap_or_default())
    }

    /// Replaces an account's addresses (none: no e-mail); durable before it returns.
    pub async fn set_mail_addresses(&self, account: Uuid, addresses: &[String]) -> StoreResult<()> {
        if addresses.is_empty() {
            self.mail_addresses.remove(account.as_bytes())?;
        } else {
            self.mail_addresses.insert(account.as_bytes(), encode(&addresses))?;
        }
        self.flush().await
    }

    /// The next position the mailer will look at; none before its first start.
    pub fn mail_cursor(&self) -> StoreResult<Option<u64>> {
        self.cursors
            .get(MAIL_CURSOR_KEY)?
            .map(|v| {
                <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| sled::Error::Unsupported("corrupt mail cursor".into()))
            })
            .transpose()
    }

    /// Moves the mailer's cursor. Not flushed: every e-mail's outcome is (see
    /// [`NotifyStore::record_mail_outcome`]), so losing a cursor move costs a second look at
    /// events whose e-mails are already recorded as sent, and sends nothing twice.
    pub fn set_mail_cursor(&self, next: u64) -> StoreResult<()> {
        self.cursors.insert(MAIL_CURSOR_KEY, &next.to_be_bytes())?;
        Ok(())
    }

    /// The e-mail of the alert at `position` to `address`, when one was recorded.
    pub fn mail_delivery(
        &self,
        account: Uuid,
        position: u64,
        address: &str,
    ) -> StoreResult<Option<MailDeliveryRecord>> {
        self.mail_deliveries.get(mail_key(account, position, address))?.map(|v| decode(&v)).transpose()
    }

    /// Records an e-mail being retried, so that the log shows it.
    pub fn record_mail_pending(&self, account: Uuid, record: &MailDeliveryRecord) -> StoreResult<()> {
        self.mail_deliveries.insert(mail_key(account, record.position, &record.to), encode(record))?;
        Ok(())
    }

    /// Records an e-mail's outcome, durably before it returns: after a restart (or a crash
    /// after this), the mailer sees it and does not send that e-mail again.
    pub async fn record_mail_outcome(&self, account: Uuid, record: &MailDeliveryRecord) -> StoreResult<()> {
        self.mail_deliveries.insert(mail_key(account, record.position, &record.to), encode(record))?;
        self.flush().await
    }

    /// Keeps the newest [`MAIL_LOG_PER_ACCOUNT_MAX`] entries of an account's e-mail log.
    pub fn trim_mail_log(&self, account: Uuid) -> StoreResult<()> {
        trim(&self.mail_deliveries, account.as_bytes(), MAIL_LOG_PER_ACCOUNT_MAX)
    }

    /// An account's e-mail log from `after` (a position) on, oldest first: at least
    /// `limit` entries when there are as many, and never an alert's e-mails split across two
    /// pages (an alert has at most as many as an account has addresses).
    pub fn mail_deliveries(
        &self,
        account: Uuid,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<MailDeliveryRecord>> {
        let start = mail_key(account, after.map_or(0, |a| a.saturating_add(1)), "");
        let mut end = account.as_bytes().to_vec();
        end.extend_from_slice(&[0xff; 9]);
        let mut page: Vec<MailDeliveryRecord> = Vec::new();
        for entry in self.mail_deliveries.range(start..end) {
            let record: MailDeliveryRecord = decode(&entry?.1)?;
            if page.len() >= limit && page.last().is_some_and(|last| last.position != record.position) {
                break;
            }
            page.push(record);
        }
        Ok(page)
    }
}

fn flatten(error: TransactionError<sled::Error>) -> sled::Error {
    match error {
        TransactionError::Abort(e) | TransactionError::Storage(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(from: u64) -> WebhookRecord {
        WebhookRecord {
            id: Uuid::now_v7(),
            url: "http://127.0.0.1:9/hook".into(),
            description: None,
            audience: Audience::All,
            filter: EventFilter::default(),
            secret: "whsec_test".into(),
            created_at: Utc::now(),
            created_by: "admin".into(),
            from,
        }
    }

    fn outcome(position: u64, status: DeliveryStatus) -> DeliveryRecord {
        DeliveryRecord { position, event_id: Uuid::now_v7(), kind: "PaymentReceived".into(), status, attempts: vec![] }
    }

    #[tokio::test]
    async fn an_outcome_moves_the_cursor_and_a_deleted_webhook_stays_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = NotifyStore::open(dir.path()).unwrap();
        let record = webhook(7);
        store.insert_webhook(&record).await.unwrap();
        assert_eq!(store.cursor(record.id).unwrap(), Some(7));
        store.record_pending(record.id, &outcome(9, DeliveryStatus::Pending)).unwrap();
        assert_eq!(store.cursor(record.id).unwrap(), Some(7), "an attempt in progress does not move the cursor");
        store.record_outcome(record.id, &outcome(9, DeliveryStatus::Failed)).unwrap();
        store.record_outcome(record.id, &outcome(12, DeliveryStatus::Delivered)).unwrap();
        assert_eq!(store.cursor(record.id).unwrap(), Some(13));
        let log = store.deliveries(record.id, None, 10).unwrap();
        assert_eq!(
            log.iter().map(|d| (d.position, d.status)).collect::<Vec<_>>(),
            vec![(9, DeliveryStatus::Failed), (12, DeliveryStatus::Delivered)]
        );
        assert_eq!(store.deliveries(record.id, Some(9), 10).unwrap().len(), 1, "a page starts after `after`");
        store.advance_cursor(record.id, 20).unwrap();
        assert_eq!(store.cursor(record.id).unwrap(), Some(20));

        let other = webhook(1);
        store.insert_webhook(&other).await.unwrap();
        assert!(store.remove_webhook(record.id).await.unwrap());
        // A worker that outlived the delete must not bring anything back.
        store.record_outcome(record.id, &outcome(21, DeliveryStatus::Delivered)).unwrap();
        store.advance_cursor(record.id, 30).unwrap();
        assert_eq!(store.cursor(record.id).unwrap(), None);
        assert!(store.deliveries(record.id, None, 10).unwrap().is_empty());
        assert_eq!(store.webhooks().unwrap().iter().map(|w| w.id).collect::<Vec<_>>(), vec![other.id]);
        assert!(!store.remove_webhook(record.id).await.unwrap());
    }

    fn mail(position: u64, to: &str, status: DeliveryStatus) -> MailDeliveryRecord {
        MailDeliveryRecord {
            position,
            event_id: Uuid::now_v7(),
            alert: "balance_below".into(),
            to: to.into(),
            subject: "low".into(),
            status,
            attempts: vec![],
        }
    }

    #[tokio::test]
    async fn the_mail_log_is_per_account_and_a_page_keeps_an_alerts_emails_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = NotifyStore::open(dir.path()).unwrap();
        let (account, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(store.mail_cursor().unwrap(), None);
        store.set_mail_cursor(4).unwrap();
        assert_eq!(store.mail_cursor().unwrap(), Some(4));
        store.set_mail_addresses(account, &["a@x.test".into(), "b@x.test".into()]).await.unwrap();
        assert_eq!(store.mail_addresses(account).unwrap(), vec!["a@x.test", "b@x.test"]);
        assert!(store.mail_addresses(other).unwrap().is_empty());

        store.record_mail_pending(account, &mail(5, "a@x.test", DeliveryStatus::Pending)).unwrap();
        assert_eq!(store.mail_delivery(account, 5, "a@x.test").unwrap().unwrap().status, DeliveryStatus::Pending);
        for (position, to) in [(5, "a@x.test"), (5, "b@x.test"), (9, "a@x.test"), (9, "b@x.test")] {
            store.record_mail_outcome(account, &mail(position, to, DeliveryStatus::Delivered)).await.unwrap();
        }
        store.record_mail_outcome(other, &mail(7, "c@x.test", DeliveryStatus::Failed)).await.unwrap();
        assert_eq!(store.mail_delivery(account, 5, "a@x.test").unwrap().unwrap().status, DeliveryStatus::Delivered);
        assert!(store.mail_delivery(account, 7, "a@x.test").unwrap().is_none());
        let renamed = store.mail_delivery(account, 9, "Ann <A@x.test>").unwrap();
        assert!(renamed.is_some(), "the same address, written another way");

        let page = |after, limit| {
            store
                .mail_deliveries(account, after, limit)
                .unwrap()
                .iter()
                .map(|d| (d.position, d.to.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(page(None, 1), vec![(5, "a@x.test".into()), (5, "b@x.test".into())], "an alert is not split");
        assert_eq!(page(Some(5), 100), vec![(9, "a@x.test".into()), (9, "b@x.test".into())]);
        assert!(page(Some(9), 100).is_empty());
        assert_eq!(store.mail_deliveries(other, None, 100).unwrap().len(), 1);

        store.set_mail_addresses(account, &[]).await.unwrap();
        assert!(store.mail_addresses(account).unwrap().is_empty());
        assert_eq!(page(None, 100).len(), 4, "the log outlives the addresses");
    }
}
