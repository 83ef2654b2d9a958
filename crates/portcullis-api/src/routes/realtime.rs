//! `/v1/realtime`: minting stream tokens, and the WebSocket event stream itself.
//!
//! A stream carries the app's events as the same JSON as webhook bodies plus `"id"`. A
//! client that reconnects passes `since=<last event id>` and first receives what it
//! missed, then the live stream; the hub subscription is opened before the backlog is read
//! and live frames already sent from the backlog are skipped by id, so nothing falls
//! between the two and nothing is sent twice. (Positions cannot be used for this: on
//! PostgreSQL events commit, and so arrive, out of position order.)

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portcullis_domain::AppId;
use portcullis_store::{StoreError, apps, keys, now_ms};
use portcullis_webhooks::render::render_all;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Auth, Sender};
use crate::error::ApiError;
use crate::realtime::{Grant, TOKEN_TTL_SECS};

/// Ping interval; a client that answers nothing for three intervals is gone.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// How often an open stream re-checks that its key still works.
const KEY_CHECK: Duration = Duration::from_secs(30);
/// Most missed events replayed on resume; a client further behind pages the API.
const MAX_BACKLOG: usize = 10_000;
/// Read buffer per socket.
const READ_BUFFER: usize = 4 * 1024;

/// Close codes (4000–4999 are the application's).
const CLOSE_TOO_SLOW: u16 = 4008;
const CLOSE_KEY_REVOKED: u16 = 4001;
const CLOSE_BAD_CURSOR: u16 = 4004;
const CLOSE_GOING_AWAY: u16 = 1001;

/// A stream token.
#[derive(Debug, Serialize, ToSchema)]
pub struct RealtimeToken {
    /// `wst_…`: single use, valid for `expires_in` seconds.
    pub token: String,
    pub expires_in: i64,
}

/// Mint a token for opening the event stream (`GET /v1/realtime?token=`).
#[utoipa::path(
    operation_id = "realtime_create_token",
    post, path = "/v1/realtime/tokens", tag = "realtime",
    responses((status = 201, body = RealtimeToken), (status = 429, description = "Too many outstanding tokens")),
    security(("api_key" = []))
)]
pub async fn create_token(
    State(state): State<AppState>,
    auth: Auth<Sender>,
) -> Result<(StatusCode, Json<RealtimeToken>), ApiError> {
    let token = state
        .realtime
        .mint(
            &auth.key_id,
            &auth.tenant_id,
            &auth.app_id,
            auth.role,
            now_ms(),
        )
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many requests",
            )
        })?;
    Ok((
        StatusCode::CREATED,
        Json(RealtimeToken {
            token: token.expose().clone(),
            expires_in: TOKEN_TTL_SECS,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// A token from `POST /v1/realtime/tokens`.
    pub token: Option<String>,
    /// Resume after this event id (`evt_…`).
    pub since: Option<String>,
}

/// Open the app's event stream (WebSocket).
#[utoipa::path(
    operation_id = "realtime_stream",
    get, path = "/v1/realtime", tag = "realtime", params(StreamParams),
    responses(
        (status = 101, description = "Switching to the WebSocket stream"),
        (status = 401, description = "Token missing, used, expired or revoked"),
        (status = 403, description = "Origin not allowed for this app")
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Query(q): Query<StreamParams>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let grant = q
        .token
        .as_deref()
        .and_then(|t| state.realtime.redeem(t, now_ms()))
        .ok_or_else(ApiError::unauthorized)?;
    // The key may have been revoked elsewhere (CLI, another instance) since it minted this.
    if !key_usable(&state, &grant).await? {
        return Err(ApiError::unauthorized());
    }
    let app = apps::get(&state.store.db, &grant.tenant_id, &grant.app_id).await?;
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !app.policy.realtime_origins.iter().any(|o| o == origin) {
            return Err(ApiError::forbidden());
        }
    }
    let ws = ws.map_err(|_| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "This endpoint speaks WebSocket only",
        )
    })?;
    let since = q.since.filter(|s| !s.is_empty());
    Ok(ws
        .max_message_size(64 * 1024)
        // Clients only answer pings: the default 128 KiB read buffer per socket is waste.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| run(state, grant, since, socket)))
}

async fn key_usable(state: &AppState, grant: &Grant) -> Result<bool, ApiError> {
    match keys::get(&state.store.db, &grant.app_id, &grant.key_id).await {
        Ok(k) => Ok(k.usable(now_ms())),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A frame as a text message. The bytes are shared, not copied: one event goes to every
/// subscriber of its app.
fn text(frame: &axum::body::Bytes) -> Message {
    // Rendered from a `String`, so always UTF-8; checking again is cheap next to a copy.
    Message::Text(Utf8Bytes::try_from(frame.clone()).unwrap_or_default())
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}

async fn run(state: AppState, grant: Grant, since: Option<String>, mut socket: WebSocket) {
    let mut sub = state.webhooks.hub().subscribe(&grant.app_id);
    let mut replayed = HashSet::new();
    if let Some(since) = since {
        match backlog(&state, &grant.app_id, &since, &mut socket).await {
            Ok(Some(sent)) => replayed = sent,
            Ok(None) => return close(socket, CLOSE_BAD_CURSOR, "unknown event id in since").await,
            Err(()) => return,
        }
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut key_check = tokio::time::interval(KEY_CHECK);
    key_check.tick().await;
    let mut unanswered = 0u32;
    // Made once, not on every turn of the loop: each `cancelled()` registers with its
    // token, and a thousand sockets re-registering for every frame add up.
    let overflowed = sub.overflowed.clone().cancelled_owned();
    tokio::pin!(overflowed);
    let shutdown = state.shutdown.clone().cancelled_owned();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            frame = sub.events.recv() => {
                let Some(frame) = frame else { return };
                if !replayed.is_empty() && replayed.remove(&frame.event_id) {
                    continue;
                }
                if socket.send(text(&frame.frame)).await.is_err() {
                    return;
                }
            }
            _ = &mut overflowed => {
                return close(socket, CLOSE_TOO_SLOW, "client too slow; reconnect with since").await;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Pongs, and anything a client sends, prove it is alive; the stream is
                // one-way, so the content is ignored.
                Some(Ok(_)) => unanswered = 0,
            },
            _ = heartbeat.tick() => {
                unanswered += 1;
                if unanswered > 3 {
                    return close(socket, CLOSE_GOING_AWAY, "no answer to heartbeats").await;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            _ = key_check.tick() => {
                if !matches!(key_usable(&state, &grant).await, Ok(true)) {
                    return close(socket, CLOSE_KEY_REVOKED, "key revoked").await;
                }
            }
            _ = &mut shutdown => {
                return close(socket, CLOSE_GOING_AWAY, "server shutting down").await;
            }
        }
    }
}

/// Sends the app's events after `since` and returns their ids. `Ok(None)` when `since` is
/// not one of the app's events; `Err` when the socket is gone.
async fn backlog(
    state: &AppState,
    app: &AppId,
    since: &str,
    socket: &mut WebSocket,
) -> Result<Option<HashSet<String>>, ()> {
    let mut seq = match state.store.event_seq(app, since).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "reading the realtime backlog failed");
            return Err(());
        }
    };
    let mut sent = HashSet::new();
    while sent.len() < MAX_BACKLOG {
        let events = match state.store.events_since(app, seq, 500).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "reading the realtime backlog failed");
                return Err(());
            }
        };
        if events.is_empty() {
            break;
        }
        let rendered = match render_all(&state.store, &events).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "rendering the realtime backlog failed");
                return Err(());
            }
        };
        for e in &events {
            seq = e.seq;
            if let Some(r) = rendered.get(e.id.as_str()) {
                socket.send(text(&r.frame)).await.map_err(|_| ())?;
                sent.insert(r.event_id.clone());
            }
        }
    }
    Ok(Some(sent))
}
