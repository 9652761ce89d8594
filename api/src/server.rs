//! The HTTP server: opens the stores, starts the ledger, serves until asked to stop, then
//! drains the book writers so that nothing acknowledged is lost.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::response::IntoResponse;
use commands::{EventStore, Ledger, SledStore, StoreSpec};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use utoipa_swagger_ui::SwaggerUi;

use crate::ServeArgs;
use crate::auth::{Auth, AuthStore};
use crate::error::ApiError;
use crate::notify::{DeliveryConfig, Notify, NotifyStore};
use crate::openapi::{DOCS_PATH, OPENAPI_PATH};
use crate::routes::{Metrics, metrics_layer};

/// Where the event log lives inside the data directory.
pub const EVENTS_DIR: &str = "events";
/// Where the read models live inside the data directory.
pub const VIEWS_DIR: &str = "views";

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

impl Shared {
    /// True when the read models no longer follow the log (a storage failure, or shutdown).
    pub fn projector_stopped(&self) -> bool {
        self.projector.lock().expect("projector lock").as_ref().is_none_or(|p| p.is_finished())
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.data_dir)?;
    let spec = crate::store_spec(&args.data_dir, &args.store);
    let (store, sled_stats): (Arc<dyn EventStore>, _) = match &spec {
        // Opened here rather than through `spec.open()` to keep the concrete store for its
        // counters.
        StoreSpec::Sled(path) => {
            let path = path.clone();
            let sled = Arc::new(tokio::task::spawn_blocking(move || SledStore::open(path)).await??);
            (sled.clone(), Some(sled))
        }
        other => (other.open().await?, None),
    };
    let views = sled::open(args.data_dir.join(VIEWS_DIR))?;
    let models = projections::ReadModels::open(&views)?;
    let projector = projections::spawn_projector(models.clone(), store.clone());
    let ledger = Arc::new(Ledger::open(store).await?);
    if args.admin_key.as_deref().is_none_or(str::is_empty) {
        tracing::warn!("no --admin-key configured: only users' tokens and sessions can sign in");
    }
    let auth_store = AuthStore::open(&args.data_dir.join(crate::auth::store::AUTH_DIR))?;
    let portal = crate::auth::PortalSettings {
        login_link_lifetime: args.login_link_lifetime.0,
        public_url: args.public_url.as_deref().map(|url| url.trim_end_matches('/').to_owned()),
        secure_cookies: args.secure_cookies,
        session_lifetime: args.session_lifetime.0,
    };
    let auth =
        Arc::new(Auth::open(auth_store, args.admin_key.as_deref(), args.session_lifetime.0)?.with_portal(portal));
    let purger = crate::auth::spawn_purger(auth.clone());
    let notify_store = NotifyStore::open(&args.data_dir.join(crate::notify::store::NOTIFY_DIR))?;
    let delivery = DeliveryConfig {
        timeout: args.webhook_timeout.0,
        retry_for: args.webhook_retry_for.0,
        backoff_first: std::time::Duration::from_millis(args.webhook_backoff_ms),
        backoff_max: std::time::Duration::from_secs(600),
    };
    let notify = Arc::new(Notify::open(notify_store, ledger.clone(), models.clone(), delivery)?);
    notify.start_all()?;
    let state = AppState(Arc::new(Shared {
        ledger: ledger.clone(),
        models,
        auth,
        notify: notify.clone(),
        metrics: Metrics::install()?,
        sled_stats,
        projector: Mutex::new(Some(projector)),
    }));
    let app = app(state.clone());
    // Metrics first: whoever reads the addresses from stdout is told the API's last, once
    // both are bound.
    let metrics_server = match args.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address).await?;
            let bound = listener.local_addr()?;
            tracing::info!(listen = %bound, "metrics are served");
            println!("tollbook metrics on http://{bound}");
            let metrics_app = crate::routes::metrics_app(state.clone());
            Some(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, metrics_app).await {
                    tracing::error!(%error, "the metrics listener failed");
                }
            }))
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let bound = listener.local_addr()?;
    tracing::info!(listen = %bound, data = %args.data_dir.display(), store = ?spec, "tollbook is ready");
    // On stdout as well, for whoever started us with port 0 and needs to know the port.
    println!("tollbook listening on http://{bound}");
    std::io::stdout().flush()?;
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown({
            // Live streams never end by themselves: they are told to close with 1001
            // (going away), so that clients know to reconnect and resume, rather than
            // seeing the connection drop when the process exits.
            let notify = notify.clone();
            async move {
                shutdown_signal().await;
                notify.begin_shutdown();
            }
        })
        .await?;
    // Upgraded connections outlive the HTTP server: let the streams finish their closing
    // handshakes before the process exits and the kernel resets their sockets.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), notify.streams_closed()).await;
    // Nothing to drain: a scrape cut short is retried by the scraper.
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    // Deliveries stop mid-way if need be: their cursors have not moved past them.
    notify.stop_all();
    purger.abort();
    ledger.shutdown().await;
    let projector = state.projector.lock().expect("projector lock").take();
    if let Some(projector) = projector {
        projector.stop().await?;
    }
    views.flush()?;
    tracing::info!("tollbook stopped");
    Ok(())
}

/// The whole HTTP application: the API, its OpenAPI document and docs page, and the
/// layers every request passes (panics caught, logged, counted).
pub fn app(state: AppState) -> Router {
    let (api, openapi) = crate::routes::router();
    // The validator badge would ask a public service to check the document: off, the page
    // must work without internet access.
    let docs = SwaggerUi::new(DOCS_PATH)
        .url(OPENAPI_PATH, openapi)
        .config(utoipa_swagger_ui::Config::from(OPENAPI_PATH).validator_url("none"));
    api.merge(docs)
        .merge(crate::portal::router())
        .layer(axum::middleware::from_fn(metrics_layer))
        .layer(
            TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO)).on_response(
                DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(tower_http::LatencyUnit::Micros),
            ),
        )
        .layer(CatchPanicLayer::custom(|_| ApiError::internal_message("a handler panicked".into()).into_response()))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}
