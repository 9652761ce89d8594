//! What the handlers share, and the pieces of it that a part of the API takes through
//! axum's `FromRef`: an extractor or a front end that needs only the auth store, or the
//! ledger and the read models, says so in its bounds and does not import this module.
//! Only the server (which builds the state) and the JSON routes (the top layer, beside
//! the server) name [`AppState`].

use std::sync::{Arc, Mutex};

use axum::extract::FromRef;
use commands::{Ledger, SledStore};

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::notify::Notify;
use crate::portal::PortalState;

/// What every handler shares. One `Arc` around it all: axum clones the state for every
/// request (and each extractor), and cloning and dropping a handful of `Arc`s per request
/// was 8–10% of the server's CPU under read load (atomic counters bouncing between cores).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub ledger: Arc<Ledger>,
    pub models: projections::ReadModels,
    pub auth: Arc<Auth>,
    pub metrics: Metrics,
    /// The sled store's counters, when the log is on sled.
    pub sled_stats: Option<Arc<SledStore>>,
    /// Webhooks, alert templates and the event form the stream shares.
    pub notify: Arc<Notify>,
    projector: Mutex<Option<projections::Projector>>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl Shared {
    #[allow(clippy::too_many_arguments, reason = "each part is built by a different step of the start")]
    pub fn new(
        ledger: Arc<Ledger>,
        models: projections::ReadModels,
        auth: Arc<Auth>,
        metrics: Metrics,
        sled_stats: Option<Arc<SledStore>>,
        notify: Arc<Notify>,
        projector: projections::Projector,
    ) -> Self {
        Shared { ledger, models, auth, metrics, sled_stats, notify, projector: Mutex::new(Some(projector)) }
    }

    /// True when the read models no longer follow the log (a storage failure, or shutdown).
    pub fn projector_stopped(&self) -> bool {
        self.projector.lock().expect("projector lock").as_ref().is_none_or(|p| p.is_finished())
    }

    /// The projector, taken out to be stopped; none once taken.
    pub fn take_projector(&self) -> Option<projections::Projector> {
        self.projector.lock().expect("projector lock").take()
    }
}

// A sub-state is cloned out of the state at each extraction (one `Arc` for the auth
// store, three for the portal's): given where it cuts a module's dependency on the whole
// state (the credential extractors, the portal), not to every handler.

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for PortalState {
    fn from_ref(state: &AppState) -> Self {
        PortalState { ledger: state.ledger.clone(), models: state.models.clone(), auth: state.auth.clone() }
    }
}
