//! Recurring charges on the write side: the ledger-wide catalog of plans and
//! subscriptions, and the scheduler that charges what is due.
//!
//! Exactly once per subscription and period, whatever happens to the process: the fee
//! command carries the (subscription, period) as its idempotency key, so its book's
//! writer, which remembers every key it has recorded, answers a fee it has already
//! settled as a repeat and charges nothing. The catalog only says where to start looking
//! (the first period not yet settled), so a run that died half way, a restart after a
//! week of downtime, or two runs racing all end the same: each due period settled once.
//! The catalog is rebuilt from the log at start and kept current by the writers' commit
//! hook, like the account index.

use std::collections::HashMap;
use std::sync::Arc;

use domain::billing::{self, Plan, Subscription};
use domain::{BookId, Command, CommandMeta, Idempotency, Payload, PlanId, RecordedEvent, SubscriptionId, Timestamp};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sha2::{Digest, Sha256};

use crate::error::CommandError;
use crate::ledger::Ledger;
use crate::writer::{BULK_COMMANDS_MAX, CommandOutcome};

/// Fees one run submits at most; a run that stops at it says there is more, and the
/// scheduler runs again at once. Bounds the memory and the writers' queues a catch-up
/// after a long downtime takes.
pub const FEES_PER_RUN_MAX: usize = 20_000;
/// Periods of one subscription one run charges at most, so that one subscription
/// backdated by years does not take a whole run.
pub const PERIODS_PER_SUBSCRIPTION_RUN_MAX: usize = 400;
/// Recorded on the fee events.
pub const FEE_ACTOR: &str = "system:billing";

/// A plan and the book that sells it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PlanEntry {
    pub book: BookId,
    pub plan: Plan,
}

/// A subscription, its book, and the start of its first period not yet settled.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SubscriptionEntry {
    pub book: BookId,
    pub subscription: Subscription,
    pub settled_until: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BillingCatalog {
    plans: HashMap<PlanId, PlanEntry>,
    subscriptions: HashMap<SubscriptionId, SubscriptionEntry>,
}

impl BillingCatalog {
    /// Folds events in; only those [`BillingCatalog::concerns`] change anything.
    pub(crate) fn apply<'a>(&mut self, events: impl IntoIterator<Item = &'a RecordedEvent>) {
        for recorded in events {
            let book = recorded.event.envelope.book;
            match &recorded.event.payload {
                Payload::PlanPublished(published) => {
                    self.plans.insert(published.plan.id, PlanEntry { book, plan: published.plan.clone() });
                }
                Payload::SubscriptionStarted(started) => {
                    let subscription = Subscription {
                        id: started.subscription,
                        account: started.account,
                        plan: started.plan,
                        starts_at: started.starts_at,
                        ends_at: started.ends_at,
                    };
                    self.subscriptions
                        .insert(started.subscription, SubscriptionEntry { book, subscription, settled_until: None });
                }
                Payload::SubscriptionEnded(ended) => {
                    if let Some(entry) = self.subscriptions.get_mut(&ended.subscription) {
                        entry.subscription.ends_at = Some(ended.ends_at);
                    }
                }
                _ => {}
            }
            let key = recorded.event.envelope.idempotency.as_ref().map(|i| i.key.as_str());
            if let Some((id, period_start)) = key.and_then(billing::parse_fee_key)
                && let Some(entry) = self.subscriptions.get_mut(&id)
                && let Some(plan) = self.plans.get(&entry.subscription.plan)
            {
                let next = plan.plan.period.next(period_start);
                entry.settled_until = Some(entry.settled_until.map_or(next, |settled| settled.max(next)));
            }
        }
    }

    /// Whether `event` changes the catalog: a plan or subscription event, or a fee.
    pub(crate) fn concerns(event: &domain::Event) -> bool {
        matches!(
            event.payload,
            Payload::PlanPublished(_) | Payload::SubscriptionStarted(_) | Payload::SubscriptionEnded(_)
        ) || event.envelope.idempotency.as_ref().is_some_and(|i| billing::parse_fee_key(&i.key).is_some())
    }

    pub fn plan(&self, id: PlanId) -> Option<&PlanEntry> {
        self.plans.get(&id)
    }

    pub fn plans(&self) -> impl Iterator<Item = &PlanEntry> {
        self.plans.values()
    }

    pub fn subscription(&self, id: SubscriptionId) -> Option<&SubscriptionEntry> {
        self.subscriptions.get(&id)
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = &SubscriptionEntry> {
        self.subscriptions.values()
    }

    /// Every fee due by `now` and not yet settled, as the commands that charge them, by
    /// book; at most `limit` of them. True as well when more are due than that.
    fn due(&self, now: Timestamp, limit: usize) -> (HashMap<BookId, Vec<(Command, CommandMeta)>>, bool) {
        let mut by_book: HashMap<BookId, Vec<(Command, CommandMeta)>> = HashMap::new();
        let mut count = 0;
        let mut more = false;
        // In id order (UUIDv7: oldest first), so that runs cut short make progress alike.
        let mut subscriptions: Vec<&SubscriptionEntry> = self.subscriptions.values().collect();
        subscriptions.sort_unstable_by_key(|entry| entry.subscription.id);
        for entry in subscriptions {
            let Some(plan) = self.plans.get(&entry.subscription.plan) else { continue };
            let from = entry.settled_until.unwrap_or_else(|| billing::first_period(&plan.plan, &entry.subscription));
            let room = (limit - count).min(PERIODS_PER_SUBSCRIPTION_RUN_MAX);
            let due = billing::due_periods(&plan.plan, &entry.subscription, from, now, room + 1);
            more |= due.len() > room;
            for period_start in due.into_iter().take(room) {
                let Some(fee) = billing::fee(&plan.plan, &entry.subscription, period_start) else { continue };
                let meta = fee_meta(entry.subscription.id, period_start, fee.covers_from, now);
                let command = Command::ChargeFee {
                    subscription: entry.subscription.id,
                    account: entry.subscription.account,
                    period_start,
                };
                by_book.entry(entry.book).or_default().push((command, meta));
                count += 1;
            }
            if count >= limit {
                more = true;
                break;
            }
        }
        (by_book, more)
    }
}

/// The meta of a fee command: its own key (with a digest of the key alone, so any
/// sender of the same fee sends the same request), dated at what it covers.
pub fn fee_meta(
    subscription: SubscriptionId,
    period_start: Timestamp,
    covers_from: Timestamp,
    now: Timestamp,
) -> CommandMeta {
    let key = billing::fee_key(subscription, period_start);
    CommandMeta {
        occurred_at: covers_from,
        recorded_at: now,
        actor: FEE_ACTOR.to_owned(),
        idempotency: Some(Idempotency { request_digest: Sha256::digest(key.as_bytes()).into(), key }),
    }
}

/// What one run of the scheduler did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeeRun {
    /// Fees charged now.
    pub charged: usize,
    /// Fees refused now (recorded as `fee_refused` alerts).
    pub refused: usize,
    /// Fees another run had already settled: answered as repeats, nothing charged.
    pub repeated: usize,
    /// Fees that could not be decided now (the writer busy or stopping, a storage
    /// failure); left for the next run.
    pub failed: usize,
    /// More fees were due than one run submits.
    pub more: bool,
}

/// Charges every fee due by `now` that is not yet settled, at most `fees_max` of them.
/// `now` is both what is due and the ledger time the fees are recorded at.
pub async fn charge_due_fees(ledger: &Ledger, now: Timestamp, fees_max: usize) -> FeeRun {
    let (by_book, more) = ledger.billing_catalog().due(now, fees_max);
    let mut run = FeeRun { more, ..FeeRun::default() };
    let mut answers = FuturesUnordered::new();
    for (book, commands) in by_book {
        let handle = match ledger.writer(book).await {
            Ok(handle) => handle,
            Err(error) => {
                tracing::error!(%error, %book, "recurring fees: the book's writer did not start");
                run.failed += commands.len();
                continue;
            }
        };
        let mut commands = commands.into_iter().peekable();
        while commands.peek().is_some() {
            answers.push(handle.submit_many(commands.by_ref().take(BULK_COMMANDS_MAX).collect()));
        }
    }
    while let Some(outcomes) = answers.next().await {
        for outcome in outcomes {
            count(&mut run, outcome);
        }
    }
    run
}

fn count(run: &mut FeeRun, outcome: Result<CommandOutcome, CommandError>) {
    match outcome {
        Ok(outcome) if outcome.repeated => run.repeated += 1,
        Ok(outcome) if outcome.events.iter().any(|e| is_refusal(&e.event.payload)) => run.refused += 1,
        Ok(_) => run.charged += 1,
        Err(error) => {
            tracing::warn!(%error, "a recurring fee could not be decided; the next run tries again");
            run.failed += 1;
        }
    }
}

fn is_refusal(payload: &Payload) -> bool {
    matches!(payload, Payload::AlertRaised(raised) if matches!(raised.alert, domain::event::Alert::FeeRefused { .. }))
}

/// Runs [`charge_due_fees`] now (the catch-up after a start) and then every `every`,
/// until the ledger's writers stop. A run cut short by [`FEES_PER_RUN_MAX`] is followed
/// by another at once.
pub fn spawn_scheduler(ledger: Arc<Ledger>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let run = charge_due_fees(&ledger, clock_now(), FEES_PER_RUN_MAX).await;
            if run != FeeRun::default() {
                tracing::info!(?run, "recurring fees");
            }
            if !(run.more && run.failed == 0) {
                tokio::time::sleep(every).await;
            }
        }
    })
}

/// The system clock as a ledger time.
fn clock_now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_micros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
}

impl Ledger {
    /// Publishes a plan: an operator's in the operator's book, a partner's in its own,
    /// naming the operator plan whose price it pays (`wholesale`).
    pub async fn publish_plan(
        &self,
        book: BookId,
        plan: Plan,
        wholesale: Option<PlanId>,
        meta: CommandMeta,
    ) -> Result<CommandOutcome, CommandError> {
        let wholesale = wholesale
            .map(|id| {
                let entry = self.billing_catalog().plan(id).cloned().ok_or(domain::DomainError::PlanNotFound(id))?;
                Ok::<_, domain::DomainError>(domain::WholesalePlan {
                    id,
                    book: entry.book,
                    currency: entry.plan.currency,
                    period: entry.plan.period,
                    price: entry.plan.price,
                })
            })
            .transpose()?;
        let command = Command::PublishPlan(Box::new(domain::PublishPlan { plan, wholesale }));
        self.execute_in(book, command, meta).await
    }
}
