//! The live event stream: a WebSocket that sends the global log's events from a position
//! on, filtered, and only those the caller's scope may see.
//!
//! The first message is `{"status":"subscribed","from":P}`; then one message per event,
//! `{"position":N,"event":{…}}`, in log order. Reconnecting with `from = N + 1` (N the last
//! position received, or P if none came) continues with no gap and no repeat, because the
//! stream follows the durable log itself, not a buffer that a disconnect could lose.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, peer_ip, presented_credential};
use crate::error::ApiError;
use crate::notify::filter::split_kinds;
use crate::notify::{Audience, EventFilter};
use crate::openapi::ReadErrors;
use crate::query;
use crate::state::AppState;

/// The subprotocol the server speaks. A browser, which cannot set headers on a WebSocket,
/// offers it together with `tollbook.token.<credential>`.
pub const PROTOCOL: &str = "tollbook";
const TOKEN_PROTOCOL_PREFIX: &str = "tollbook.token.";
/// A ping this often keeps proxies from closing a quiet stream.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A client that takes longer than this to take one message is disconnected: it would
/// hold a log reader open for nothing.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How stale the check of a stream's credential may be before an event is sent: a revoked
/// token, an ended session or a removed user stops receiving within this time (the check
/// is a digest lookup, or a signature check for a session, so not once per event).
const CREDENTIAL_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Live streams open now.
const STREAMS_METRIC: &str = "tollbook_streams_open";
/// The close code for a credential that stopped being valid.
const POLICY_VIOLATION: u16 = 1008;
/// Clients send nothing but control frames; anything larger is refused.
const INCOMING_MESSAGE_BYTES_MAX: usize = 4096;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The first global log position to send; absent: from now on. To resume, the last
    /// position received plus one.
    #[serde(default, deserialize_with = "crate::query::optional_u64")]
    #[param(value_type = Option<u64>)]
    from: Option<u64>,
    /// Only this book's events: `operator`, or a partner's account number.
    book: Option<String>,
    /// Only the events that concern this account (by number).
    account: Option<String>,
    /// Only these event kinds, separated by commas (`PaymentReceived,AlertRaised`).
    kinds: Option<String>,
}

/// The first message of a stream.
#[derive(Serialize, ToSchema)]
pub struct Subscribed {
    #[schema(example = "subscribed")]
    status: &'static str,
    /// The first position the stream may send: resume from here if no event came.
    from: u64,
}

/// Subscribe to the ledger's events over a WebSocket (`GET` with `Upgrade: websocket`).
/// Messages are JSON text: first `Subscribed`, then one `EventMessage` per event. An
/// operator sees every event, a partner its book's, a customer those of its own account
/// (without its partner's wholesale cost). Credentials go in the usual headers; a browser
/// offers the subprotocols `tollbook` and `tollbook.token.<credential>` instead.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    operation_id = "stream_events",
    tag = "events",
    params(StreamQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; then `Subscribed` and `EventMessage`s",
         body = crate::notify::EventMessage),
        ReadErrors
    )
)]
pub async fn stream(State(state): State<AppState>, mut parts: Parts) -> Result<Response, ApiError> {
    let presented = authenticate(&parts, &state)?;
    let caller = &presented.caller;
    let query: StreamQuery = query::parse(parts.uri.query())?;
    let kinds = query.kinds.as_deref().map(split_kinds).unwrap_or_default();
    let filter = EventFilter::parse(&state.ledger, caller, query.book.as_deref(), query.account.as_deref(), &kinds)?;
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &state).await.map_err(|rejection| {
        ApiError::bad_request(
            "websocket_required",
            "upgrade",
            format!("a WebSocket handshake is required: {rejection}"),
        )
    })?;
    let from = match query.from {
        Some(from) => from,
        None => state.ledger.store().head().await.map_err(|e| ApiError::internal(&e))?,
    };
    let audience = Audience::of(caller);
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(INCOMING_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| follow(socket, state, presented, audience, filter, from)))
}

/// A caller with the credential it presented, so that an open stream can check that the
/// credential still stands for the same caller (not revoked, expired, or re-scoped).
struct Presented {
    caller: Caller,
    credential: String,
    peer: Option<std::net::IpAddr>,
}

impl Presented {
    /// Whether the credential still stands for a caller with the same scope.
    fn still_valid(&self, state: &AppState) -> bool {
        matches!(state.auth.authenticate(&self.credential, self.peer), Ok(Some(now)) if now.scope == self.caller.scope)
    }
}

/// The caller, from the usual credential headers or, for browsers, the subprotocol.
fn authenticate(parts: &Parts, state: &AppState) -> Result<Presented, ApiError> {
    let offered = parts
        .headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(TOKEN_PROTOCOL_PREFIX).map(str::to_owned));
    let credential = offered
        .or_else(|| presented_credential(&parts.headers).map(str::to_owned))
        .ok_or_else(ApiError::unauthorized)?;
    let peer = peer_ip(parts);
    let caller = state.auth.authenticate(&credential, peer)?.ok_or_else(ApiError::unauthorized)?;
    Ok(Presented { caller, credential, peer })
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send_json<T: Serialize>(socket: &mut WebSocket, value: &T) -> Result<(), ()> {
    let text = serde_json::to_string(value).map_err(|_| ())?;
    send(socket, Message::Text(text.into())).await
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    if send(socket, Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await.is_err() {
        return;
    }
    // Finish the closing handshake: dropping the connection with the client's bytes
    // unread makes the kernel reset it, and a reset can discard the close frame before
    // the client reads it. A client that does not answer within a second is left.
    let drained = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
}

/// Resolves when the server begins to shut down (or is gone).
async fn stopping(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Sends the log's events from `from` on until the client leaves or the server stops.
async fn follow(
    mut socket: WebSocket,
    state: AppState,
    presented: Presented,
    audience: Audience,
    filter: EventFilter,
    from: u64,
) {
    // Counted down when this function returns, however it returns.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            metrics::gauge!(STREAMS_METRIC).decrement(1.0);
        }
    }
    metrics::gauge!(STREAMS_METRIC).increment(1.0);
    let _open = Open;
    if send_json(&mut socket, &Subscribed { status: "subscribed", from }).await.is_err() {
        return;
    }
    let mut events = state.ledger.store().subscribe_all(from);
    let mut closing = state.notify.closing();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut checked_at = Instant::now();
    loop {
        tokio::select! {
            item = events.next() => match item {
                Some(Ok(recorded)) => {
                    if !(audience.sees(&recorded.event) && filter.matches(&recorded.event)) {
                        continue;
                    }
                    if checked_at.elapsed() >= CREDENTIAL_CHECK_INTERVAL {
                        if !presented.still_valid(&state) {
                            return close(&mut socket, POLICY_VIOLATION, "the credential is no longer valid").await;
                        }
                        checked_at = Instant::now();
                    }
                    state.notify.renderer.settle(&recorded).await;
                    let message = state.notify.renderer.render(&recorded, audience);
                    if send_json(&mut socket, &message).await.is_err() {
                        return;
                    }
                }
                Some(Err(error)) => {
                    tracing::error!(%error, "the live stream could not read the log");
                    // 1011: the server met a condition that kept it from going on.
                    return close(&mut socket, 1011, "the log could not be read").await;
                }
                None => return close(&mut socket, 1011, "the log ended").await,
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Pings are answered by the protocol layer; the stream takes no commands.
                Some(Ok(_)) => {}
            },
            // 1001: going away.
            () = stopping(&mut closing) => return close(&mut socket, 1001, "the server is stopping").await,
            _ = ping.tick() => {
                if !presented.still_valid(&state) {
                    return close(&mut socket, POLICY_VIOLATION, "the credential is no longer valid").await;
                }
                checked_at = Instant::now();
                if send(&mut socket, Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
