//! The HTTP server: opens the store, starts the ledger, serves until asked to stop, then
//! drains the book writers so that nothing acknowledged is lost.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use commands::{EventStore, Ledger};

use crate::ServeArgs;

/// Where the event log lives inside the data directory.
pub const EVENTS_DIR: &str = "events";
/// Where the read models live inside the data directory.
pub const VIEWS_DIR: &str = "views";

#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub models: projections::ReadModels,
    pub credentials: crate::auth::Credentials,
}

pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.data_dir)?;
    let spec = crate::store_spec(&args.data_dir, &args.store);
    let store: Arc<dyn EventStore> = spec.open().await?;
    let views = sled::open(args.data_dir.join(VIEWS_DIR))?;
    let models = projections::ReadModels::open(&views)?;
    let projector = projections::spawn_projector(models.clone(), store.clone());
    let ledger = Arc::new(Ledger::open(store).await?);
    if args.admin_key.as_deref().is_none_or(str::is_empty) {
        tracing::warn!("no --admin-key configured: every /api/v1 request will be refused");
    }
    let credentials = crate::auth::Credentials::new(args.admin_key.as_deref());
    let state = AppState { ledger: ledger.clone(), models, credentials };
    let app = Router::new().route("/health", get(health)).merge(crate::routes::router()).with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, data = %args.data_dir.display(), store = ?spec, "tollbook is ready");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    ledger.shutdown().await;
    projector.stop().await?;
    views.flush()?;
    tracing::info!("tollbook stopped");
    Ok(())
}

async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "ok",
        "accounts": state.ledger.account_count(),
        "read_models_position": state.models.position(),
    }))
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
