//! Telling other systems what happened: the event form shared by the live stream and
//! webhooks, who may see which event, alert messages, and webhook delivery.
//!
//! Nothing here decides anything about money: alerts are raised by the domain's rules as
//! `AlertRaised` events; this module only renders and carries events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use commands::{EventStore, Ledger};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub mod address;
pub mod delivery;
pub mod filter;
pub mod message;
pub mod store;
pub mod template;

pub use address::AddressPolicy;
pub use delivery::DeliveryConfig;
pub use filter::{Audience, EventFilter};
pub use message::{EventMessage, Renderer};
pub use store::{NotifyStore, WebhookRecord};

/// Webhook subscriptions at most, ledger-wide: each has a task and a connection.
pub const WEBHOOKS_MAX: usize = 1000;

pub struct Notify {
    pub store: NotifyStore,
    pub renderer: Renderer,
    events: Arc<dyn EventStore>,
    config: DeliveryConfig,
    /// Where webhooks may go: checked when one is created and at every delivery.
    pub policy: AddressPolicy,
    client: reqwest::Client,
    workers: Mutex<HashMap<Uuid, JoinHandle<()>>>,
    /// Turns true when the server begins to shut down; live streams close on it.
    closing: tokio::sync::watch::Sender<bool>,
    /// Held from counting a tenant's webhooks to storing a new one, so that concurrent
    /// registrations cannot pass the limits together.
    pub registering: tokio::sync::Mutex<()>,
}

impl Notify {
    pub fn open(
        store: NotifyStore,
        ledger: Arc<Ledger>,
        models: projections::ReadModels,
        config: DeliveryConfig,
        policy: AddressPolicy,
    ) -> Result<Notify, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A receiver's redirect is not followed: the signed body goes where it was
            // registered, or nowhere (nor to an internal address it would name).
            .redirect(reqwest::redirect::Policy::none())
            // Names are resolved at each connection and internal addresses dropped, so that
            // a name that now points inside the network connects nowhere.
            .dns_resolver(policy.resolver())
            .connect_timeout(config.timeout)
            .user_agent(concat!("tollbook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notify {
            renderer: Renderer::new(ledger.clone(), models, store.clone()),
            events: ledger.store().clone(),
            store,
            config,
            policy,
            client,
            workers: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::Sender::new(false),
            registering: tokio::sync::Mutex::new(()),
        })
    }

    /// Starts a worker for every stored subscription.
    pub fn start_all(&self) -> Result<(), sled::Error> {
        for record in self.store.webhooks()? {
            self.start(record);
        }
        Ok(())
    }

    pub fn start(&self, record: WebhookRecord) {
        let id = record.id;
        let worker = delivery::Worker {
            record,
            store: self.store.clone(),
            events: self.events.clone(),
            renderer: self.renderer.clone(),
            config: self.config,
            policy: self.policy.clone(),
            client: self.client.clone(),
        };
        let task = tokio::spawn(worker.run());
        if let Some(previous) = self.workers.lock().expect("workers lock").insert(id, task) {
            previous.abort();
        }
    }

    /// Stops a subscription's worker, mid-delivery if need be: the cursor has not moved
    /// past that delivery, so nothing is lost.
    pub fn stop(&self, id: Uuid) {
        if let Some(task) = self.workers.lock().expect("workers lock").remove(&id) {
            task.abort();
        }
    }

    /// Tells every live stream to close.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once the server begins to shut down.
    /// Resolves once every live stream has ended (each holds a `closing` receiver).
    pub async fn streams_closed(&self) {
        self.closing.closed().await;
    }

    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn stop_all(&self) {
        for (_, task) in self.workers.lock().expect("workers lock").drain() {
            task.abort();
        }
    }
}
