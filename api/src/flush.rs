//! Durable changes to the small sled databases (auth, notifications) without sled's
//! `flush_async`: concurrent calls to it deadlock in sled 0.34 (spacejam/sled#1308), the
//! reason the event store does not use it either (commands/src/store/sled.rs).
//!
//! A flush runs sled's blocking `flush` on tokio's blocking pool, one at a time, and one
//! flush serves every caller that asked before it started (group commit): 64 logins at
//! once cost a few flushes, not 64, and never more than one blocking thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone)]
pub struct GroupFlush {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Tickets handed out: a caller takes one after its writes.
    requested: AtomicU64,
    /// Every ticket up to this one is durable.
    durable: AtomicU64,
    /// Held for the length of one flush: flushes run one after another.
    turn: tokio::sync::Mutex<()>,
}

impl GroupFlush {
    pub fn new(db: sled::Db) -> Self {
        GroupFlush {
            inner: Arc::new(Inner {
                db,
                requested: AtomicU64::new(0),
                durable: AtomicU64::new(0),
                turn: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Returns once every change made before the call is durable.
    pub async fn flush(&self) -> sled::Result<()> {
        let inner = &self.inner;
        // The caller's writes happened before its ticket was taken.
        let ticket = inner.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = inner.turn.lock().await;
        if inner.durable.load(Ordering::SeqCst) >= ticket {
            // A flush that started after our ticket was taken has covered us.
            return Ok(());
        }
        // Every ticket up to here was taken before this flush starts: it covers them all.
        let covered = inner.requested.load(Ordering::SeqCst);
        let db = inner.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| sled::Error::ReportableBug(format!("the flush task failed: {e}")))??;
        inner.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many writers flushing at once all return, and what they wrote is durable: a
    /// reopened database holds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_all_return_and_cover_their_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flush = GroupFlush::new(db.clone());
        let writers = (0u32..200).map(|i| {
            let (db, flush) = (db.clone(), flush.clone());
            tokio::spawn(async move {
                db.insert(i.to_be_bytes(), &b"v"[..]).unwrap();
                flush.flush().await
            })
        });
        let outcomes = tokio::time::timeout(std::time::Duration::from_secs(30), futures::future::join_all(writers))
            .await
            .expect("flushes finish");
        assert!(outcomes.into_iter().all(|o| matches!(o, Ok(Ok(())))));
        drop((db, flush));
        // sled lets go of its file lock when its flusher thread ends, a moment after the
        // last handle is dropped: reopening at once sometimes finds the lock still held.
        let mut reopened = sled::open(dir.path());
        for _ in 0..200 {
            if reopened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            reopened = sled::open(dir.path());
        }
        assert_eq!(reopened.expect("the database reopens once sled let go of it").len(), 200);
    }
}
