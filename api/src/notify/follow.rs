//! What webhook and e-mail deliveries share: following the global log from a durable
//! cursor, and trying one delivery until it succeeds, is refused for good, or its retry
//! window ends. Each channel says which events it wants, how one attempt is made and where
//! its outcomes and cursor are kept; the order, the backoff and the stopping are here once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::EventStore;
use domain::{Event, RecordedEvent};
use futures::StreamExt;
use tokio::sync::watch;

use super::store::{ATTEMPTS_RECORDED_MAX, Attempt, DeliveryStatus};

/// Events a worker passes over (not wanted) between two saves of its cursor: after a
/// crash it looks at them again, which costs a read and sends nothing twice.
const SKIPPED_EVENTS_PER_CURSOR_SAVE: u64 = 256;
/// Wait before following the log again after the store failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct DeliveryConfig {
    /// One attempt's time limit, connecting included.
    pub timeout: Duration,
    /// How long a delivery is retried before it is marked failed.
    pub retry_for: Duration,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
}

/// What one attempt says about the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth trying again (no answer, a busy or failing receiver).
    Retry,
    /// The receiver refused for good (an SMTP 5xx): trying again would be refused again.
    Refused,
}

/// Whether a worker goes on with the next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Next,
    /// The server is stopping: the event was not finished, and its cursor not moved.
    Stop,
}

/// One delivery channel's worker, as [`follow`] drives it.
pub trait Channel: Send + Sync {
    /// Names the worker in logs (`webhook 0190…`, `mail`).
    fn name(&self) -> String;
    fn wants(&self, event: &Event) -> bool;
    /// Saves the cursor past events it did not want (not flushed: losing one costs a read).
    fn skip_to(&self, next: u64);
    /// Delivers one wanted event, records the outcome and moves the cursor past it.
    fn handle(&self, recorded: &RecordedEvent) -> impl Future<Output = Flow> + Send;
}

/// Resolves when `stop` turns true; never when its sender is gone without saying so.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Follows the global log from `next` and hands each wanted event to the channel, one
/// after another, so that its receiver sees log order; until `stop` turns true.
pub async fn follow(
    events: Arc<dyn EventStore>,
    mut next: u64,
    channel: impl Channel,
    mut stop: watch::Receiver<bool>,
) {
    let mut skipped = 0u64;
    loop {
        let mut log = events.subscribe_all(next);
        loop {
            let item = tokio::select! {
                item = log.next() => item,
                () = stopped(&mut stop) => return,
            };
            let recorded = match item {
                Some(Ok(recorded)) => recorded,
                Some(Err(error)) => {
                    tracing::warn!(%error, worker = channel.name(), "reading the log failed; following it again");
                    break;
                }
                None => break,
            };
            next = recorded.position + 1;
            if !channel.wants(&recorded.event) {
                skipped += 1;
                if skipped.is_multiple_of(SKIPPED_EVENTS_PER_CURSOR_SAVE) {
                    channel.skip_to(next);
                }
                continue;
            }
            if channel.handle(&recorded).await == Flow::Stop {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Makes attempts until one delivers, one is refused for good, or the retry window ends,
/// waiting with exponential backoff in between. `pending` is told of every failed attempt
/// that will be retried, so that the delivery log shows it. `None`: the server began to
/// stop between two attempts, and the delivery is not finished.
pub async fn retry<A>(
    config: &DeliveryConfig,
    attempts: &mut Vec<Attempt>,
    stop: &mut watch::Receiver<bool>,
    mut attempt: impl FnMut() -> A,
    mut pending: impl FnMut(&[Attempt]),
) -> Option<DeliveryStatus>
where
    A: Future<Output = (Attempt, Verdict)>,
{
    let started = Instant::now();
    let mut wait = config.backoff_first;
    loop {
        if *stop.borrow() {
            return None;
        }
        let (made, verdict) = attempt().await;
        if attempts.len() == ATTEMPTS_RECORDED_MAX {
            attempts.remove(0);
        }
        attempts.push(made);
        match verdict {
            Verdict::Delivered => return Some(DeliveryStatus::Delivered),
            Verdict::Refused => return Some(DeliveryStatus::Failed),
            Verdict::Retry if started.elapsed() + wait > config.retry_for => return Some(DeliveryStatus::Failed),
            Verdict::Retry => {}
        }
        pending(attempts);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stopped(stop) => return None,
        }
        wait = (wait * 2).min(config.backoff_max);
    }
}

/// Milliseconds since `started`, for an attempt's record.
pub fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DeliveryConfig {
        DeliveryConfig {
            timeout: Duration::from_secs(1),
            retry_for: Duration::from_millis(40),
            backoff_first: Duration::from_millis(5),
            backoff_max: Duration::from_millis(10),
        }
    }

    fn made(status_code: u16) -> Attempt {
        Attempt { at: chrono::Utc::now(), status_code: Some(status_code), error: None, duration_ms: 0 }
    }

    #[tokio::test]
    async fn retries_until_delivered_and_not_after_a_refusal() {
        let (_keep, mut stop) = watch::channel(false);
        let mut attempts = Vec::new();
        let mut answers = vec![(made(421), Verdict::Retry), (made(250), Verdict::Delivered)].into_iter();
        let mut pendings = 0;
        let status = retry(
            &config(),
            &mut attempts,
            &mut stop,
            || std::future::ready(answers.next().unwrap()),
            |_| pendings += 1,
        )
        .await;
        assert_eq!((status, attempts.len(), pendings), (Some(DeliveryStatus::Delivered), 2, 1));

        let mut attempts = Vec::new();
        let status =
            retry(&config(), &mut attempts, &mut stop, || std::future::ready((made(550), Verdict::Refused)), |_| {})
                .await;
        assert_eq!((status, attempts.len()), (Some(DeliveryStatus::Failed), 1), "a refusal is not retried");
    }

    #[tokio::test]
    async fn gives_up_when_the_window_ends_and_stops_when_told() {
        let (stopper, mut stop) = watch::channel(false);
        let mut attempts = Vec::new();
        let status =
            retry(&config(), &mut attempts, &mut stop, || std::future::ready((made(451), Verdict::Retry)), |_| {})
                .await;
        assert_eq!(status, Some(DeliveryStatus::Failed));
        assert!(attempts.len() >= 2, "{}", attempts.len());

        stopper.send_replace(true);
        let mut attempts = Vec::new();
        let status =
            retry(&config(), &mut attempts, &mut stop, || std::future::ready((made(250), Verdict::Delivered)), |_| {})
                .await;
        assert_eq!((status, attempts.len()), (None, 0), "no attempt once the server stops");
    }
}
