//! RingCentral notifications: `POST /providers/ringcentral/{conn_id}`.
//!
//! RingCentral does not sign notifications. What authenticates one is the
//! `Verification-Token` header, equal to the random token this connection set on its
//! subscription (kept sealed in `provider_tokens`), compared in constant time before the
//! body is parsed. An unknown connection, another type and a wrong or missing token all get
//! Twilio's `403` and security event (`routes::providers::refuse_callback`).
//!
//! The one request without that header is the `Validation-Token` handshake RingCentral
//! makes when a subscription is created: the header is echoed back with `200` and an empty
//! body (RingCentral wants the answer under 1 KB), and nothing else is done, so the
//! handshake cannot be used to inject anything.
//!
//! Instant SMS notifications become inbound messages (deduplicated downstream by the
//! message id), outbound message records carrying `messageStatus` become receipts (moving
//! a message only forward); each is answered only after the pipeline recorded it. A
//! message-store change notification carries no status: it wakes the provider's message
//! sync, which fetches the changed records and reports their statuses.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis_domain::{Channel, ConnectionId, E164};
use portcullis_providers::ringcentral::{self, SubscriptionRecord};
use portcullis_providers::{InboundEvent, ProviderEvent, ReceiptEvent, now_ms};
use portcullis_store::StoreError;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::AppState;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::routes::providers::{deliver, refuse_callback};

/// A RingCentral notification (or the subscription handshake).
pub async fn notification(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let client = client.map(|Extension(c)| c.0);
    let refuse =
        |reason, id: Option<&ConnectionId>| refuse_callback(ringcentral::KIND, reason, id, client);
    let Ok(id) = ConnectionId::parse(&conn_id) else {
        return Err(refuse("unknown_connection", None));
    };
    match state.store.connection(&id).await {
        Ok(conn) if conn.kind == ringcentral::KIND => {}
        Ok(_) => return Err(refuse("wrong_connection_type", Some(&id))),
        Err(StoreError::NotFound) => return Err(refuse("unknown_connection", Some(&id))),
        Err(e) => return Err(e.into()),
    }
    if let Some(token) = headers.get(ringcentral::VALIDATION_HEADER) {
        let echo = token
            .to_str()
            .ok()
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .and_then(|t| HeaderValue::from_str(t).ok())
            .ok_or_else(|| ApiError::bad_request("invalid_callback", "bad Validation-Token"))?;
        let mut answer = StatusCode::OK.into_response();
        answer
            .headers_mut()
            .insert(ringcentral::VALIDATION_HEADER, echo);
        return Ok(answer);
    }
    let record = match state
        .store
        .provider_token(&id, ringcentral::SUBSCRIPTION)
        .await
    {
        Ok(r) => r.and_then(|r| SubscriptionRecord::from_stored(&r)),
        Err(e @ StoreError::Corrupt(_)) => {
            tracing::error!(connection = %id, error = %e, "ringcentral subscription cannot be opened");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let Some(record) = record else {
        return Err(refuse("no_subscription", Some(&id)));
    };
    let presented = headers
        .get(ringcentral::VERIFICATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !record.verifies(presented) {
        return Err(refuse("bad_verification_token", Some(&id)));
    }
    drop(record);

    let bad = |what: &str| ApiError::bad_request("invalid_callback", what.to_owned());
    let notification: Value = serde_json::from_slice(&body).map_err(|_| bad("not JSON"))?;
    let Some(event) = notification.get("body") else {
        return Ok(StatusCode::OK.into_response());
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let direction = text(event, "direction");
    let is_instant = notification
        .get("event")
        .and_then(Value::as_str)
        .is_some_and(|e| e.contains("/message-store/instant"));

    if is_instant || direction.as_deref() == Some("Inbound") {
        let message_id = event
            .get("id")
            .and_then(ringcentral::id_text)
            .ok_or_else(|| bad("id is missing"))?;
        let from = event
            .get("from")
            .and_then(|f| text(f, "phoneNumber"))
            .ok_or_else(|| bad("from is missing"))?;
        let to = event
            .get("to")
            .and_then(Value::as_array)
            .and_then(|t| t.first())
            .and_then(|t| text(t, "phoneNumber"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("to is missing"))?;
        let Ok(from) = E164::parse(&from) else {
            tracing::info!(connection = %id, "inbound message from a sender that is not a phone number; not stored");
            return Ok(StatusCode::OK.into_response());
        };
        let (ack, recorded) = oneshot::channel();
        let inbound = InboundEvent {
            connection_id: id,
            app_id: None,
            provider_message_id: message_id,
            from,
            to,
            channel: Channel::Sms,
            body: text(event, "subject").unwrap_or_default(),
            at: now_ms(),
            part: None,
        };
        deliver(&state, ProviderEvent::Inbound(inbound, Some(ack)), recorded).await?;
        return Ok(StatusCode::OK.into_response());
    }

    // A message-store change: counts and message ids, no statuses (RingCentral's message
    // event). The provider reads the changed records through its message sync and reports
    // their statuses itself; the sync token it keeps makes that safe to answer now.
    if event.get("changes").is_some() {
        match state.pipeline.routes().provider(&id).await? {
            Some(provider) => provider.records_changed(),
            None => {
                tracing::warn!(connection = %id, "ringcentral: change notification for a connection that is not running")
            }
        }
        return Ok(StatusCode::OK.into_response());
    }

    // Outbound records carrying their status: one, or a list of them.
    let records: Vec<&Value> = match event.get("records").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![event],
    };
    for record in records {
        let Some(status) = record
            .get("messageStatus")
            .and_then(Value::as_str)
            .and_then(ringcentral::receipt_status)
        else {
            continue;
        };
        let Some(message_id) = record.get("id").and_then(ringcentral::id_text) else {
            continue;
        };
        let detail = record
            .get("deliveryErrorCode")
            .and_then(Value::as_str)
            .filter(|c| c.len() <= 16 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            .map(|c| format!("ringcentral error {c}"));
        let (ack, recorded) = oneshot::channel();
        let receipt = ReceiptEvent {
            connection_id: id.clone(),
            provider_message_id: message_id,
            status: status.into(),
            detail,
            at: now_ms(),
        };
        deliver(&state, ProviderEvent::Receipt(receipt, Some(ack)), recorded).await?;
    }
    Ok(StatusCode::OK.into_response())
}
