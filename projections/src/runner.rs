//! The projector: follows the global log from the models' checkpoint and applies each
//! chunk of events with its checkpoint in one atomic write.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use domain::{RecordedEvent, Timestamp};
use eventlog::EventStore;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ProjectionError;
use crate::models::ReadModels;
use crate::views::{ChunkWriter, MODELS_FORMAT, read_checkpoint, read_format};

/// Events applied in one atomic write at most (a chunk is what the subscription has
/// ready, so only a projector catching up, as behind a bulk import, fills it). Catching up
/// on a log of 1,000,000 imported CDRs cost 14.8 CPU s in 512-event chunks, 12.8 in 2,048
/// and 12.5 in 16,384 (`replay_stages` bench, `TOLLBOOK_BENCH_LOG`); readers wait while a
/// chunk lands (one position per read), so chunks stay no larger than the gain needs.
pub const CHUNK_EVENTS_MAX: usize = 2048;

const GENERATION_KEY: &[u8] = b"views_generation";

pub(crate) fn generation(db: &sled::Db) -> Result<u64, ProjectionError> {
    Ok(db.get(GENERATION_KEY)?.map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))).unwrap_or(0))
}

pub(crate) fn tree_name(generation: u64) -> String {
    format!("views-{generation}")
}

pub(crate) fn set_generation(db: &sled::Db, generation: u64) -> Result<(), ProjectionError> {
    db.insert(GENERATION_KEY, &generation.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// How far the read models are behind the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    pub events: u64,
    pub seconds: i64,
}

impl ReadModels {
    /// Opens the read models kept in `db` (the current generation, see [`crate::replay`]).
    /// Models written in another key layout are not read: a fresh, empty generation
    /// takes their place, and the projector rebuilds it from the start of the log.
    pub fn open(db: &sled::Db) -> Result<Self, ProjectionError> {
        let current = generation(db)?;
        let mut tree = db.open_tree(tree_name(current))?;
        let format = read_format(&tree)?;
        if !tree.is_empty() && format != Some(MODELS_FORMAT) {
            tracing::warn!(
                found = format.unwrap_or(1),
                wanted = MODELS_FORMAT,
                "the read models are of another layout; rebuilding them from the log"
            );
            tree = db.open_tree(tree_name(current + 1))?;
            tree.clear()?;
            set_generation(db, current + 1)?;
            db.drop_tree(tree_name(current))?;
        }
        let checkpoint = read_checkpoint(&tree)?;
        let (applied, _) = watch::channel(checkpoint);
        Ok(ReadModels::over(tree, applied))
    }

    /// Applies events (in log order, after the checkpoint) and moves the checkpoint.
    /// Events at or before the checkpoint are skipped: a redelivered event is never
    /// applied twice. The projector calls it per chunk; public so that tests can cut the
    /// log into chunks of their choosing.
    pub fn apply_chunk(&self, chunk: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let checkpoint = read_checkpoint(&self.tree)?;
        let fresh: Vec<&RecordedEvent> = chunk.iter().filter(|e| e.position > checkpoint).collect();
        let Some(last) = fresh.last() else { return Ok(()) };
        let mut writer = ChunkWriter::new(&self.tree);
        for event in &fresh {
            writer.apply(event)?;
        }
        let batch = writer.into_batch(last.position)?;
        let _landing = self.landing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.tree.apply_batch(batch)?;
        self.applied.send_replace(last.position);
        Ok(())
    }
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
    /// Stops between two chunks and waits: the chunk being applied is finished and
    /// committed first, so no write is left behind the stop.
    pub async fn stop(self) -> Result<(), ProjectionError> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|e| ProjectionError::Storage(e.to_string()))?
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

/// Starts following the log. The task ends with an error only on a storage failure.
pub fn spawn_projector(models: ReadModels, store: Arc<dyn EventStore>) -> Projector {
    let last_recorded_at = Arc::new(AtomicI64::new(chrono_now_micros()));
    let task_models = models.clone();
    let task_recorded = last_recorded_at.clone();
    let (stop, mut stopping) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut events = store.subscribe_all(task_models.position() + 1).ready_chunks(CHUNK_EVENTS_MAX);
        loop {
            let chunk = tokio::select! {
                chunk = events.next() => match chunk {
                    Some(chunk) => chunk,
                    None => break,
                },
                _ = stopping.wait_for(|stop| *stop) => break,
            };
            let chunk: Vec<RecordedEvent> = chunk.into_iter().collect::<Result<_, _>>()?;
            let recorded_at = chunk.last().map_or(Timestamp(0), |e| e.event.envelope.recorded_at);
            let models = task_models.clone();
            tokio::task::spawn_blocking(move || models.apply_chunk(&chunk))
                .await
                .map_err(|e| ProjectionError::Storage(e.to_string()))??;
            task_recorded.store(recorded_at.micros(), Ordering::Relaxed);
        }
        Ok(())
    });
    Projector { task, stop, last_recorded_at, models }
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
        let db = sled::open(dir.path().join("views")).unwrap();
        let models = ReadModels::open(&db).unwrap();
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
