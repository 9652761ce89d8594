//! The projector: follows the global log from the models' checkpoint and applies each
//! chunk of events with its checkpoint in one atomic write.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use domain::{RecordedEvent, Timestamp};
use eventlog::EventStore;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ProjectionError;
use crate::models::ReadModels;

/// Events applied and published at once at most (a chunk is what the subscription has
/// ready, so only a projector catching up, as behind a bulk import, fills it). Each
/// published state copies the map nodes its chunk touched, so larger chunks cost less
/// per event; readers never wait for a chunk, they keep the state they took.
pub const CHUNK_EVENTS_MAX: usize = 8192;

/// A snapshot of the models is written in the background once at least this many events
/// and [`SNAPSHOT_INTERVAL_MIN`] have passed since the last: a restart after a crash
/// projects at most what came after it.
pub const SNAPSHOT_EVENTS_MIN: u64 = 50_000;
pub const SNAPSHOT_INTERVAL_MIN: Duration = Duration::from_secs(30);

/// How far the read models are behind the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    pub events: u64,
    pub seconds: i64,
}

impl ReadModels {
    /// How far the models are behind the durable log: the events not applied yet, and
    /// the age of the oldest of them by ledger time (0 when caught up). Costs one read
    /// of the log when behind.
    pub async fn lag(&self, store: &dyn EventStore) -> Result<Lag, ProjectionError> {
        let head = store.head().await?;
        let position = self.position();
        let events = head.saturating_sub(1).saturating_sub(position);
        if events == 0 {
            return Ok(Lag { events: 0, seconds: 0 });
        }
        let oldest = store.read_all(position + 1, 1).await?;
        let seconds = oldest
            .first()
            .map_or(0, |e| (chrono_now_micros() - e.event.envelope.recorded_at.micros()).max(0) / 1_000_000);
        Ok(Lag { events, seconds })
    }
}

/// A running projector and what it knows of its progress.
pub struct Projector {
    task: JoinHandle<Result<(), ProjectionError>>,
    stop: watch::Sender<bool>,
    last_recorded_at: Arc<AtomicI64>,
    models: ReadModels,
}

impl Projector {
    /// Stops between two chunks and waits, then saves a snapshot of the models, so
    /// that the next start has nothing to project.
    pub async fn stop(self) -> Result<(), ProjectionError> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|e| ProjectionError::Storage(e.to_string()))??;
        let models = self.models.clone();
        tokio::task::spawn_blocking(move || models.save()).await.map_err(|e| ProjectionError::Storage(e.to_string()))?
    }

    /// True if the projector has stopped (after a storage failure, or `stop`).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Events and seconds the models are behind `head` (the store's next position).
    pub fn lag(&self, head: u64) -> Lag {
        let events = head.saturating_sub(1).saturating_sub(self.models.position());
        let seconds = if events == 0 {
            0
        } else {
            let now = chrono_now_micros();
            (now - self.last_recorded_at.load(Ordering::Relaxed)).max(0) / 1_000_000
        };
        Lag { events, seconds }
    }
}

fn chrono_now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Chunks read and decoded ahead of the one being applied.
const READ_AHEAD_CHUNKS: usize = 2;

/// Starts following the log. The task ends with an error only on a storage failure.
///
/// The log is read on a task of its own, a few chunks ahead: reading and decoding a
/// chunk (on one core) overlaps applying the one before (on the other). Read and apply
/// in turn, a projector catching up kept one core idle.
pub fn spawn_projector(models: ReadModels, store: Arc<dyn EventStore>) -> Projector {
    let last_recorded_at = Arc::new(AtomicI64::new(chrono_now_micros()));
    let task_models = models.clone();
    let task_recorded = last_recorded_at.clone();
    let (stop, mut stopping) = watch::channel(false);
    let task = tokio::spawn(async move {
        let (chunk_tx, mut chunks) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
        let mut events = store.subscribe_all(task_models.position() + 1).ready_chunks(CHUNK_EVENTS_MAX);
        let reader = tokio::spawn(async move {
            while let Some(chunk) = events.next().await {
                let chunk: Result<Vec<RecordedEvent>, _> = chunk.into_iter().collect();
                let failed = chunk.is_err();
                if chunk_tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        // Aborted however the loop ends: a stopped projector reads no further.
        let _reader = AbortOnDrop(reader);
        loop {
            let chunk = tokio::select! {
                chunk = chunks.recv() => match chunk {
                    Some(chunk) => chunk?,
                    None => break,
                },
                _ = stopping.wait_for(|stop| *stop) => break,
            };
            let recorded_at = chunk.last().map_or(Timestamp(0), |e| e.event.envelope.recorded_at);
            let models = task_models.clone();
            tokio::task::spawn_blocking(move || models.apply_chunk(&chunk))
                .await
                .map_err(|e| ProjectionError::Storage(e.to_string()))??;
            task_recorded.store(recorded_at.micros(), Ordering::Relaxed);
            task_models.save_in_background_if_due();
        }
        Ok(())
    });
    Projector { task, stop, last_recorded_at, models }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use eventlog::SledStore;
    use eventlog::testing::append_synthetic_book;

    use super::*;

    /// Lag counts the events not applied yet and ages the oldest of them by its ledger
    /// time (the synthetic book is recorded at 2026-01-01T00:00:00Z); caught up, both are 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lag_counts_unapplied_events_and_the_age_of_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(SledStore::open(dir.path().join("events")).unwrap());
        append_synthetic_book(&*store, 1000, 1).await;
        let models = ReadModels::open(&dir.path().join("views"), store.clone()).unwrap();
        let lag = models.lag(&*store).await.unwrap();
        let age = chrono_now_micros() / 1_000_000 - 1_767_225_600;
        assert_eq!(lag.events, 1000);
        assert!((age - 2..=age).contains(&lag.seconds), "{lag:?}, expected about {age}");

        let projector = spawn_projector(models.clone(), store.clone());
        models.wait_for(1000, Duration::from_secs(5)).await.unwrap();
        assert_eq!(models.lag(&*store).await.unwrap(), Lag { events: 0, seconds: 0 });
        assert_eq!(projector.lag(store.head().await.unwrap()).events, 0);
        projector.stop().await.unwrap();
    }
}
