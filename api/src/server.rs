//! The HTTP server: opens the stores, starts the ledger, serves until asked to stop, then
//! drains the book writers so that nothing acknowledged is lost.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use commands::{EventStore, Ledger, SledStore, StoreSpec};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use utoipa_swagger_ui::SwaggerUi;

use crate::ServeArgs;
use crate::auth::{Auth, AuthStore};
use crate::body::BodyTimedOut;
use crate::error::ApiError;
use crate::metrics::{Metrics, metrics_layer};
use crate::notify::{AddressPolicy, DeliveryConfig, Notify, NotifyStore};
use crate::openapi::{DOCS_PATH, OPENAPI_PATH};
use crate::state::{AppState, Shared};

/// Where the event log lives inside the data directory.
pub const EVENTS_DIR: &str = "events";
/// Where the read models live inside the data directory.
pub const VIEWS_DIR: &str = "views";

/// Why `serve` refuses to start without an admin key when no admin user exists: every
/// request would be answered 401, and nobody could make the first account or user.
const NO_ADMIN_KEY: &str = "no admin key is set, and no admin user exists to sign in with: every request would be \
refused. Start the server with one, for example:
    TOLLBOOK_ADMIN_KEY=\"$(openssl rand -hex 32)\" tollbook serve
(or `--admin-key KEY`; the environment keeps the key out of `ps`), then send it as
`Authorization: Bearer KEY`.";

/// A ledger opened with everything that runs beside the handlers: the projector, the
/// webhook and e-mail workers, the billing scheduler, the auth store's purger. [`serve`]
/// puts it behind a listener; tests send requests to its [`Running::app`] in process.
pub struct Running {
    state: AppState,
    purger: tokio::task::JoinHandle<()>,
    billing: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Opens the data directory (or the store `--store` names) and starts the background
    /// tasks; nothing listens yet.
    pub async fn open(args: &ServeArgs) -> Result<Running, Box<dyn std::error::Error>> {
        open(args).await
    }

    /// The whole HTTP application over this ledger.
    pub fn app(&self) -> Router {
        app(self.state.clone())
    }

    /// Stops what runs beside the handlers, then drains the book writers and the
    /// projector, in that order: every step after the previous one's last write.
    pub async fn stop(self) -> Result<(), Box<dyn std::error::Error>> {
        let Running { state, purger, billing } = self;
        // The e-mail in hand is finished and recorded (so that the restart does not send it
        // again); webhook deliveries stop mid-way if need be: their cursors have not moved
        // past them.
        state.notify.stop_all(MAIL_STOP_GRACE).await;
        purger.abort();
        // A run cut short here is finished by the next start: each fee is settled once.
        billing.abort();
        state.ledger.shutdown().await;
        if let Some(projector) = state.take_projector() {
            projector.stop().await?;
        }
        Ok(())
    }
}

async fn open(args: &ServeArgs) -> Result<Running, Box<dyn std::error::Error>> {
    let admin_key = args.admin_key.as_deref().filter(|key| !key.is_empty());
    let auth_dir = args.data_dir.join(crate::auth::store::AUTH_DIR);
    // Checked before anything is opened or created: a mistake made in the first minute is
    // said at once, not after the read models have loaded.
    let auth_store = match admin_key {
        Some(_) => None,
        None if auth_dir.exists() => {
            let store = AuthStore::open(&auth_dir)?;
            if !store.has_admin()? {
                return Err(NO_ADMIN_KEY.into());
            }
            tracing::info!("no admin key is set: admins sign in as users, with a password or an API token");
            Some(store)
        }
        None => return Err(NO_ADMIN_KEY.into()),
    };
    std::fs::create_dir_all(&args.data_dir)?;
    // Each step of the start is logged with its time: what an operator waiting for
    // `/health` after a restart wants to know, and what a slow start is measured by.
    let started = std::time::Instant::now();
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
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "the event store is open");
    let views = args.data_dir.join(VIEWS_DIR);
    // The read models load their snapshot on a blocking thread while the ledger loads its
    // own and reads the log after it: two cores, two independent starts.
    let models = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let models = projections::ReadModels::open(&views, store);
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "the read models are loaded");
            models
        })
    };
    let mut writer_options = commands::writer::WriterOptions::default();
    if let Some(shards) = args.writer_shards {
        writer_options.shards = usize::from(shards);
    }
    let ledger = Ledger::open_with(store.clone(), writer_options).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        log_events_read = ledger.opened_with_events(),
        "the ledger is open"
    );
    let ledger = Arc::new(ledger);
    let models = models.await??;
    let projector = projections::spawn_projector(models.clone(), store.clone());
    let auth_store = match auth_store {
        Some(store) => store,
        None => AuthStore::open(&auth_dir)?,
    };
    let portal = crate::auth::PortalSettings {
        login_link_lifetime: args.login_link_lifetime.0,
        public_url: args.public_url.as_deref().map(|url| url.trim_end_matches('/').to_owned()),
        secure_cookies: args.secure_cookies,
        session_lifetime: args.session_lifetime.0,
    };
    let auth = Arc::new(Auth::open(auth_store, admin_key, args.session_lifetime.0)?.with_portal(portal));
    let purger = crate::auth::spawn_purger(auth.clone());
    let notify_store = NotifyStore::open(&args.data_dir.join(crate::notify::store::NOTIFY_DIR))?;
    let delivery = DeliveryConfig {
        timeout: args.webhook_timeout.0,
        retry_for: args.webhook_retry_for.0,
        backoff_first: std::time::Duration::from_millis(args.webhook_backoff_ms),
        backoff_max: std::time::Duration::from_secs(600),
    };
    let policy = AddressPolicy::new(args.webhook_allow_private.clone());
    let mail = mail_settings(args)?;
    let notify = Arc::new(Notify::open(notify_store, ledger.clone(), models.clone(), delivery, policy, mail)?);
    notify.start_all()?;
    // Catches up on fees that fell due while the server was down, then keeps charging
    // them as they fall due.
    let billing = commands::billing::spawn_scheduler(ledger.clone(), args.billing_interval.0);
    let metrics = Metrics::install()?;
    let shared = Shared::new(ledger, models, auth, metrics, sled_stats, notify, projector);
    Ok(Running { state: AppState::new(shared), purger, billing })
}

pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let running = Running::open(&args).await?;
    let state = running.state.clone();
    // Metrics first: whoever reads the addresses from stdout is told the API's last, once
    // both are bound.
    let metrics_server = match args.metrics_listen {
        Some(address) => {
            let listener = bind(address, "--metrics-listen").await?;
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
    let listener = bind(args.listen, "--listen").await?;
    let bound = listener.local_addr()?;
    let shutdown = shutdown_signal()?;
    let spec = crate::store_spec(&args.data_dir, &args.store);
    tracing::info!(listen = %bound, data = %args.data_dir.display(), store = ?spec, "tollbook is ready");
    // On stdout as well, for whoever started us with port 0 and needs to know the port.
    println!("tollbook listening on http://{bound}");
    std::io::stdout().flush()?;
    let limits = ConnectionLimits {
        header_read_timeout: args.header_read_timeout.0,
        body_read_timeout: args.body_read_timeout.0,
        connections_max: args.connections_max as usize,
    };
    serve_http(listener, running.app(), limits, {
        // Live streams never end by themselves: they are told to close with 1001
        // (going away), so that clients know to reconnect and resume, rather than
        // seeing the connection drop when the process exits.
        let notify = state.notify.clone();
        async move {
            shutdown.await;
            notify.begin_shutdown();
        }
    })
    .await;
    // Upgraded connections outlive the HTTP server: let the streams finish their closing
    // handshakes before the process exits and the kernel resets their sockets.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), state.notify.streams_closed()).await;
    // Nothing to drain: a scrape cut short is retried by the scraper.
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    running.stop().await?;
    tracing::info!("tollbook stopped");
    Ok(())
}

/// How long shutdown waits for the e-mail being sent to be accepted and recorded.
const MAIL_STOP_GRACE: Duration = Duration::from_secs(10);

/// The alert e-mail settings from the flags; none without `--smtp-host`. A sender's
/// address or TLS setting that cannot work is refused at start, not at the first alert.
fn mail_settings(args: &ServeArgs) -> Result<Option<crate::notify::MailSettings>, String> {
    let Some(host) = args.smtp_host.clone().filter(|h| !h.is_empty()) else { return Ok(None) };
    let Some(from) = &args.smtp_from else {
        return Err("--smtp-host is set but --smtp-from is not: alert e-mail needs a sender's address".into());
    };
    let from = from.parse().map_err(|e| format!("--smtp-from `{from}`: {e}"))?;
    let tls = args.smtp_tls;
    let port = args.smtp_port.unwrap_or(match tls {
        crate::notify::mail::TlsMode::None => 25,
        crate::notify::mail::TlsMode::Starttls => 587,
        crate::notify::mail::TlsMode::Tls => 465,
    });
    let settings = crate::notify::MailSettings {
        host,
        port,
        tls,
        username: args.smtp_username.clone().filter(|u| !u.is_empty()),
        password: args.smtp_password.clone(),
        ca_file: args.smtp_ca_file.clone(),
        from,
        delivery: DeliveryConfig {
            timeout: args.smtp_timeout.0,
            retry_for: args.smtp_retry_for.0,
            backoff_first: Duration::from_millis(args.smtp_backoff_ms),
            backoff_max: Duration::from_secs(600),
        },
    };
    // Built once here to say what is wrong before serving; the mailer builds its own.
    crate::notify::mail::transport(&settings)?;
    Ok(Some(settings))
}

/// Binds a listener; a failure names the address and the flag that set it ("Address
/// already in use" alone does not say which of two listeners, nor which port).
async fn bind(address: std::net::SocketAddr, flag: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address} ({flag}): {error}"))
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
        .merge(crate::portal::router::<AppState>())
        .layer(axum::middleware::from_fn(metrics_layer))
        .layer(
            TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO)).on_response(
                DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(tower_http::LatencyUnit::Micros),
            ),
        )
        .layer(CatchPanicLayer::custom(|_| ApiError::internal_message("a handler panicked".into()).into_response()))
        .with_state(state)
}

/// How long a client may take to send a request's head (request line and headers). An
/// idle keep-alive connection waiting for its next request is closed after as long: a
/// client that sends a byte now and then (slowloris) cannot hold a connection open.
pub const HEADER_READ_TIMEOUT_S: u64 = 20;
/// How long a client may take to send a request's body, from the moment its head arrived:
/// the largest upload (32 MiB of CDRs) must come at 280 kB/s or more.
pub const BODY_READ_TIMEOUT_S: u64 = 120;
/// Connections open at once, live streams included. At the bound the server accepts no
/// more until one closes: new ones wait in the kernel's listen backlog (and, when that is
/// full, are refused by the kernel). Each takes a file descriptor: the process's limit
/// (`ulimit -n`) must leave room for them, the store and webhook deliveries.
pub const CONNECTIONS_OPEN_MAX: u32 = 512;

/// The listener's limits (the constants above, or the flags that change them).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub connections_max: usize,
}

/// Serves HTTP/1.1 (WebSocket upgrades included) on `listener` until `signal`, then stops
/// accepting, lets every connection finish its request in flight, and returns when all
/// HTTP connections are closed (upgraded ones live on; the caller waits for those).
///
/// Not `axum::serve`: it has no header read timeout and no bound on connections. This is
/// its loop, with hyper's own timer-driven header timeout, a deadline on request bodies
/// and a semaphore in front of `accept`.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    // Dropping the receiver tells the accept loop and every connection to wind down.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(signal_rx);
    });
    // Each connection task holds a receiver: once all are dropped, every one has ended.
    let (close_tx, close_rx) = watch::channel(());
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    loop {
        let (permit, accepted) = tokio::select! {
            _ = signal_tx.closed() => break,
            accepted = async {
                // The permit first: at the bound, nothing is accepted until a slot frees.
                let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
                (permit, listener.accept().await)
            } => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed(error).await;
                continue;
            }
        };
        // Without it, Nagle's algorithm holds a live stream's small messages back until
        // the client's delayed ACK (up to 40 ms): events reached the stream with a p90 of
        // 21 ms where their writes took 2 ms. Every response is one write already.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %remote, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let body_read_timeout = limits.body_read_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|body| with_deadline(body, body_read_timeout));
            request.extensions_mut().insert(ConnectInfo(remote));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
        // The permit lives as long as the socket, an upgraded live stream's included.
        let io = TokioIo::new(Counted { stream, _permit: permit });
        let signal_tx = signal_tx.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let mut connection = std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
            let mut signalled = std::pin::pin!(signal_tx.closed());
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%error, %remote, "connection ended");
                        }
                        break;
                    }
                    _ = &mut signalled, if !shutting_down => {
                        shutting_down = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// A failed `accept`: a connection that went away before it was taken is nobody's
/// problem; anything else (out of file descriptors) is logged and waited out, as
/// retrying at once would spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A request body, with a time limit on its arrival when there is one to read.
fn with_deadline(body: Incoming, limit: Duration) -> axum::body::Body {
    if body.is_end_stream() {
        return axum::body::Body::new(body);
    }
    axum::body::Body::new(DeadlineBody { inner: body, deadline: Box::pin(tokio::time::sleep(limit)), limit })
}

/// A body that fails once its deadline passes before its end: reading it gives an error,
/// the handler answers, and hyper closes the connection rather than wait for the rest.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket with its place under [`CONNECTIONS_OPEN_MAX`], given back when
/// the socket is dropped.
struct Counted {
    stream: tokio::net::TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Installs the handlers for SIGINT and SIGTERM at once, so that a signal arriving any time
/// after the server says it listens stops it cleanly rather than killing it: a handler
/// installed only when a task first polls it left a window where SIGTERM killed the process
/// before "tollbook stopped" was logged.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! { _ = interrupt.recv() => {}, _ = terminate.recv() => {} }
    })
}
