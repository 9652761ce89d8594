//! The notification database, `<data>/notify`: webhook subscriptions, their delivery
//! cursors and delivery logs, and the settings — the alert message templates and the CDR
//! column mappings. None of it is money, so none of it is in the event log (see
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

/// Delivery log entries kept per subscription; older ones are dropped.
pub const DELIVERY_LOG_PER_WEBHOOK_MAX: usize = 10_000;
/// Attempts recorded per delivery; a delivery retried more often keeps its last ones.
pub const ATTEMPTS_RECORDED_MAX: usize = 50;

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

/// One POST of a delivery.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Why there was no answer (connection refused, timeout), or what a non-2xx meant.
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

#[derive(Clone)]
pub struct NotifyStore {
    flusher: crate::flush::GroupFlush,
    settings: sled::Tree,
    webhooks: sled::Tree,
    cursors: sled::Tree,
    deliveries: sled::Tree,
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

impl NotifyStore {
    pub fn open(path: &std::path::Path) -> StoreResult<Self> {
        let db = sled::open(path)?;
        Ok(NotifyStore {
            settings: db.open_tree(SETTINGS)?,
            webhooks: db.open_tree(WEBHOOKS)?,
            cursors: db.open_tree(CURSORS)?,
            deliveries: db.open_tree(DELIVERIES)?,
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
        let count = self.deliveries.scan_prefix(id.as_bytes()).count();
        let excess = count.saturating_sub(DELIVERY_LOG_PER_WEBHOOK_MAX);
        for key in self.deliveries.scan_prefix(id.as_bytes()).keys().take(excess) {
            self.deliveries.remove(key?)?;
        }
        Ok(())
    }

    /// A subscription's delivery log from `after` (a position) on, oldest first.
    pub fn deliveries(&self, id: Uuid, after: Option<u64>, limit: usize) -> StoreResult<Vec<DeliveryRecord>> {
        let start = delivery_key(id, after.map_or(0, |a| a.saturating_add(1)));
        let end = delivery_key(id, u64::MAX);
        self.deliveries.range(start..=end).take(limit).map(|entry| entry.and_then(|(_, v)| decode(&v))).collect()
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
}
