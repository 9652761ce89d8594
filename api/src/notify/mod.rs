//! Telling other systems what happened: the event form shared by the live stream and
//! webhooks, who may see which event, alert messages, webhook delivery and alert e-mail
//! (both following the log with the machinery in `follow`).
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
pub mod follow;
pub mod mail;
pub mod message;
pub mod store;
pub mod template;

pub use address::AddressPolicy;
pub use filter::{Audience, EventFilter};
pub use follow::DeliveryConfig;
pub use mail::MailSettings;
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
    /// The alert e-mail settings; none: no e-mail is sent.
    mail: Option<MailSettings>,
    mailer: Mutex<Option<JoinHandle<()>>>,
    /// Turns true when the server begins to shut down; live streams close on it.
    closing: tokio::sync::watch::Sender<bool>,
    /// Turns true at the same moment; delivery workers finish the attempt in hand and
    /// stop, rather than being cut off after the relay accepted an e-mail.
    stopping: tokio::sync::watch::Sender<bool>,
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
        mail: Option<MailSettings>,
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
            mail,
            mailer: Mutex::new(None),
            closing: tokio::sync::watch::Sender::new(false),
            stopping: tokio::sync::watch::Sender::new(false),
            registering: tokio::sync::Mutex::new(()),
        })
    }

    /// Starts a worker for every stored subscription, and the mailer when e-mail is set up.
    pub fn start_all(&self) -> Result<(), Box<dyn std::error::Error>> {
        for record in self.store.webhooks()? {
            self.start(record);
        }
        if let Some(settings) = &self.mail {
            let mailer = mail::Mailer {
                store: self.store.clone(),
                events: self.events.clone(),
                renderer: self.renderer.clone(),
                transport: mail::transport(settings)?,
                from: settings.from.clone(),
                config: settings.delivery,
                stop: self.stopping.subscribe(),
                outcomes: Default::default(),
            };
            *self.mailer.lock().expect("mailer lock") = Some(tokio::spawn(mailer.run()));
        }
        Ok(())
    }

    /// True when alert e-mail is set up (`--smtp-host`).
    pub fn mail_enabled(&self) -> bool {
        self.mail.is_some()
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
            stop: self.stopping.subscribe(),
            outcomes: Default::default(),
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

    /// Tells every live stream to close, and every delivery worker to stop after the
    /// attempt in hand.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
        self.stopping.send_replace(true);
    }

    /// Resolves once the server begins to shut down.
    /// Resolves once every live stream has ended (each holds a `closing` receiver).
    pub async fn streams_closed(&self) {
        self.closing.closed().await;
    }

    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Waits up to `grace` for the mailer to finish the e-mail in hand and record it (it
    /// stops on `begin_shutdown`), then stops every worker. A webhook cut off mid-delivery
    /// is delivered again after the restart, which at-least-once allows.
    pub async fn stop_all(&self, grace: std::time::Duration) {
        self.stopping.send_replace(true);
        let mailer = self.mailer.lock().expect("mailer lock").take();
        if let Some(mut mailer) = mailer
            && tokio::time::timeout(grace, &mut mailer).await.is_err()
        {
            tracing::warn!("the mailer did not stop in time; an e-mail in hand may be sent again after the restart");
            mailer.abort();
        }
        for (_, task) in self.workers.lock().expect("workers lock").drain() {
            task.abort();
        }
    }
}
