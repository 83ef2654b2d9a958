//! WhatsApp Cloud API webhooks: `GET /providers/whatsapp/{conn_id}` (Meta's verification
//! handshake) and `POST /providers/whatsapp/{conn_id}` (status updates and incoming
//! messages).
//!
//! As for Twilio, no API key: the handshake is authenticated by the connection's
//! `verify_token`, events by `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the
//! connection's `app_secret`), checked before the body is parsed. Every failure answers
//! the same `403` and is counted as `provider_signature_refused`.
//!
//! Statuses `delivered` and `failed` move the message; `read` is added to its history
//! (and moves a message still at `sent` to `delivered`, since a read implies it).
//!
//! Meta's signature has no timestamp either, so events can be replayed; replays change
//! nothing (statuses move only forward, inbound messages are deduplicated by their
//! `wamid`). A `200` is given only after every event of the body is durably recorded, so
//! a failure makes Meta retry the whole batch, which deduplication absorbs.

use std::net::IpAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_domain::{Channel, ConnectionId, E164, MessageStatus, Milestone};
use portcullis_providers::whatsapp::{self, WhatsappConfig};
use portcullis_providers::{InboundEvent, ProviderEvent, ReceiptEvent, now_ms};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::providers::{callback_connection, deliver, refuse_callback};
use crate::AppState;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;

fn refuse(reason: &'static str, id: Option<&ConnectionId>, client: Option<IpAddr>) -> ApiError {
    refuse_callback(whatsapp::KIND, reason, id, client)
}

/// The connection the path names, if it is a usable WhatsApp connection.
async fn connection(
    state: &AppState,
    conn_id: &str,
    client: Option<IpAddr>,
) -> Result<(ConnectionId, WhatsappConfig), ApiError> {
    callback_connection(
        state,
        whatsapp::KIND,
        conn_id,
        client,
        WhatsappConfig::from_json,
    )
    .await
}

/// The query of Meta's verification request.
#[derive(Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's subscription check: echo `hub.challenge` when `hub.verify_token` is ours.
pub async fn handshake(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    client: Option<Extension<ClientAddr>>,
    Query(q): Query<Handshake>,
) -> Result<Response, ApiError> {
    let client = client.map(|Extension(c)| c.0);
    let (id, config) = connection(&state, &conn_id, client).await?;
    let token_ok = q
        .verify_token
        .as_deref()
        .is_some_and(|t| config.verify_token.matches(t));
    if !token_ok || q.mode.as_deref() != Some("subscribe") {
        return Err(refuse("bad_verify_token", Some(&id), client));
    }
    // The challenge is echoed into a response body: only what Meta sends (digits), and
    // as text/plain, so it cannot become markup.
    let challenge = q.challenge.unwrap_or_default();
    if challenge.is_empty()
        || challenge.len() > 128
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(
            "invalid_callback",
            "hub.challenge is missing or malformed",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge,
    )
        .into_response())
}

#[derive(Deserialize)]
struct Notification {
    object: Option<String>,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize)]
struct Value {
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<Status>,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Metadata {
    display_phone_number: Option<String>,
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
    timestamp: Option<String>,
    #[serde(default)]
    errors: Vec<GraphError>,
}

#[derive(Deserialize)]
struct GraphError {
    code: Option<i64>,
}

#[derive(Deserialize)]
struct Message {
    from: String,
    id: String,
    timestamp: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<Text>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

/// Unix seconds as Meta writes them (a string) to our milliseconds; now when absent.
fn at(timestamp: Option<&str>) -> i64 {
    timestamp
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|s| s.checked_mul(1000))
        .unwrap_or_else(now_ms)
}

/// A batch of webhook events.
pub async fn events(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let client = client.map(|Extension(c)| c.0);
    let (id, config) = connection(&state, &conn_id, client).await?;
    let Some(signature) = headers
        .get(whatsapp::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refuse("missing_signature", Some(&id), client));
    };
    if !whatsapp::verify_signature(&config.app_secret, &body, signature) {
        return Err(refuse("bad_signature", Some(&id), client));
    }
    let invalid = |what: &str| ApiError::bad_request("invalid_callback", what.to_owned());
    let note: Notification = serde_json::from_slice(&body)
        .map_err(|_| invalid("the body is not a WhatsApp notification"))?;
    if note.object.as_deref() != Some("whatsapp_business_account") {
        // Another product's webhook on the same app: nothing for us, and nothing to retry.
        return Ok(StatusCode::OK.into_response());
    }
    for change in note.entry.into_iter().flat_map(|e| e.changes) {
        if change.field.as_deref() != Some("messages") {
            continue;
        }
        let Some(value) = change.value else { continue };
        if let Some(pid) = value
            .metadata
            .as_ref()
            .and_then(|m| m.phone_number_id.as_deref())
            && pid != config.phone_number_id
        {
            // Signed by our app, but for another of its numbers: not this connection's.
            tracing::info!(connection = %id, "webhook for another phone number id; ignored");
            continue;
        }
        for s in value.statuses {
            let status = match s.status.as_str() {
                "delivered" => Milestone::Status(MessageStatus::Delivered),
                "read" => Milestone::Read,
                "failed" => Milestone::Status(MessageStatus::Failed),
                // `sent` says no more than Meta's 200 did.
                _ => continue,
            };
            if !whatsapp::is_message_id(&s.id) {
                return Err(invalid("a status has no usable message id"));
            }
            let detail = (status == Milestone::Status(MessageStatus::Failed)).then(|| {
                match s.errors.first().and_then(|e| e.code) {
                    Some(131047) => format!(
                        "{}: whatsapp error 131047, outside the 24-hour window",
                        whatsapp::WINDOW_CLOSED
                    ),
                    Some(c) => format!("whatsapp error {c}"),
                    None => "whatsapp reported the message failed".to_owned(),
                }
            });
            let (ack, recorded) = oneshot::channel();
            let event = ReceiptEvent {
                connection_id: id.clone(),
                provider_message_id: s.id,
                status,
                detail,
                at: at(s.timestamp.as_deref()),
            };
            deliver(&state, ProviderEvent::Receipt(event, Some(ack)), recorded).await?;
        }
        // The app is the one sending from the business number (its display number, as
        // E.164), as for Twilio's `To`; a payload without one falls back to the phone
        // number id, which an app may list as a sender id.
        let to = value
            .metadata
            .as_ref()
            .and_then(|m| m.display_phone_number.as_deref())
            .and_then(|d| E164::parse(&format!("+{}", d.trim_start_matches('+'))).ok())
            .map(|e| e.as_str().to_owned())
            .unwrap_or_else(|| config.phone_number_id.clone());
        for m in value.messages {
            if m.kind.as_deref() != Some("text") {
                tracing::info!(connection = %id, "non-text WhatsApp message; not stored");
                continue;
            }
            if !whatsapp::is_message_id(&m.id) {
                return Err(invalid("a message has no usable id"));
            }
            let Ok(from) = E164::parse(&format!("+{}", m.from.trim_start_matches('+'))) else {
                tracing::info!(connection = %id, "WhatsApp message from an unreadable number; not stored");
                continue;
            };
            let (ack, recorded) = oneshot::channel();
            let event = InboundEvent {
                connection_id: id.clone(),
                app_id: None,
                provider_message_id: m.id,
                from,
                to: to.clone(),
                channel: Channel::Whatsapp,
                body: m.text.map(|t| t.body).unwrap_or_default(),
                at: at(m.timestamp.as_deref()),
                part: None,
            };
            deliver(&state, ProviderEvent::Inbound(event, Some(ack)), recorded).await?;
        }
    }
    Ok(StatusCode::OK.into_response())
}
