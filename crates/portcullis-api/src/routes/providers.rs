//! Provider callbacks: `POST /providers/twilio/{conn_id}/status` (delivery status) and
//! `POST /providers/twilio/{conn_id}/inbound` (incoming messages).
//!
//! There is no API key here: the provider's signature is the authentication. It is
//! checked first, over the public URL of the request and the raw form parameters, with the
//! credentials of the connection the path names, before anything is parsed into our own
//! types. An unknown connection, a connection of another type and a bad signature all get
//! the same `403` (never saying which), are logged on the security stream and counted in
//! `portcullis_security_events_total{kind="provider_signature_refused"}`.
//!
//! Twilio's signature has no timestamp, so a captured callback can be replayed: that is
//! harmless because both kinds are idempotent downstream (a status moves a message only
//! through the state machine, and inbound messages are deduplicated by `MessageSid`).
//! A callback is answered only after the pipeline has durably recorded it (its `Ack`), so
//! a `200` means it is safe for the provider to forget it.

use std::net::IpAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_domain::{Channel, ConnectionId, E164};
use portcullis_providers::twilio::{self, TwilioConfig};
use portcullis_providers::{InboundEvent, ProviderEvent, ReceiptEvent, now_ms};
use portcullis_store::StoreError;
use tokio::sync::oneshot;

use crate::AppState;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;

/// Largest callback body accepted. Twilio's callbacks are a few kilobytes at most (an SMS
/// body is at most 1,600 characters).
pub const MAX_CALLBACK_BODY: usize = 64 * 1024;

/// The answer to an incoming message that asks Twilio to send no reply (TwiML).
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// A Twilio status callback.
pub async fn twilio_status(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let client = client.map(|Extension(c)| c.0);
    let (connection_id, params) =
        verify_twilio(&state, &conn_id, &uri, client, &headers, &body).await?;
    let param = |name: &str| form_param(&params, name);

    let sid = param("MessageSid")
        .or_else(|| param("SmsSid"))
        .filter(|s| twilio::is_sid(s))
        .ok_or_else(|| ApiError::bad_request("invalid_callback", "MessageSid is missing"))?;
    let reported = param("MessageStatus")
        .or_else(|| param("SmsStatus"))
        .ok_or_else(|| ApiError::bad_request("invalid_callback", "MessageStatus is missing"))?;
    let Some(status) = twilio::receipt_status(reported) else {
        // queued, sent, read, …: nothing we record.
        return Ok(StatusCode::OK.into_response());
    };
    let detail = param("ErrorCode").filter(|c| !c.is_empty()).map(|code| {
        if code.len() <= 8 && code.bytes().all(|b| b.is_ascii_digit()) {
            format!("twilio error {code}, see https://www.twilio.com/docs/errors/{code}")
        } else {
            "twilio reported an error code we cannot read".to_owned()
        }
    });
    let (ack, recorded) = oneshot::channel();
    let event = ReceiptEvent {
        connection_id,
        provider_message_id: sid.to_owned(),
        status: status.into(),
        detail,
        at: now_ms(),
    };
    deliver(&state, ProviderEvent::Receipt(event, Some(ack)), recorded).await?;
    Ok(StatusCode::OK.into_response())
}

/// A message sent to one of the connection's Twilio numbers.
pub async fn twilio_inbound(
    State(state): State<AppState>,
    Path(conn_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let client = client.map(|Extension(c)| c.0);
    let (connection_id, params) =
        verify_twilio(&state, &conn_id, &uri, client, &headers, &body).await?;
    let param = |name: &str| form_param(&params, name);

    let missing =
        |what: &str| ApiError::bad_request("invalid_callback", format!("{what} is missing"));
    let sid = param("MessageSid")
        .or_else(|| param("SmsSid"))
        .filter(|s| twilio::is_sid(s))
        .ok_or_else(|| missing("MessageSid"))?;
    let from = param("From").ok_or_else(|| missing("From"))?;
    let to = param("To")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing("To"))?;
    let text = param("Body").unwrap_or("");
    let Ok(from) = E164::parse(from) else {
        // A short code or a channel address (`whatsapp:…`): genuine, but nothing an opt-out
        // or an app can be keyed on yet. Acknowledged so Twilio does not report an error.
        tracing::info!(
            connection = %connection_id,
            "inbound message from a sender that is not a phone number; not stored"
        );
        return Ok(twiml());
    };
    let (ack, recorded) = oneshot::channel();
    let event = InboundEvent {
        connection_id,
        app_id: None,
        provider_message_id: sid.to_owned(),
        from,
        to: to.to_owned(),
        channel: Channel::Sms,
        body: text.to_owned(),
        at: now_ms(),
        part: None,
    };
    deliver(&state, ProviderEvent::Inbound(event, Some(ack)), recorded).await?;
    Ok(twiml())
}

fn twiml() -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], EMPTY_TWIML).into_response()
}

fn form_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Hands an event to the pipeline and waits until it is durably recorded.
pub(crate) async fn deliver(
    state: &AppState,
    event: ProviderEvent,
    recorded: oneshot::Receiver<()>,
) -> Result<(), ApiError> {
    let sink = state
        .pipeline
        .routes()
        .sink()
        .ok_or_else(|| ApiError::internal("pipeline is shutting down"))?;
    sink.send(event)
        .await
        .map_err(|_| ApiError::internal("event sink closed"))?;
    recorded
        .await
        .map_err(|_| ApiError::internal("provider event was not recorded"))
}

/// Authenticates a Twilio callback: the connection the path names must exist and be a
/// Twilio connection, and `X-Twilio-Signature` must be its auth token's signature of
/// `public_url + path (+ query)` and the form parameters. Returns the connection and the
/// (still raw) parameters.
async fn verify_twilio(
    state: &AppState,
    conn_id: &str,
    uri: &axum::http::Uri,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(ConnectionId, Vec<(String, String)>), ApiError> {
    let (id, config) = callback_connection(
        state,
        twilio::KIND,
        conn_id,
        client,
        TwilioConfig::from_json,
    )
    .await?;
    let Some(signature) = headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(refuse("missing_signature", Some(&id), client));
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_else(|| uri.path());
    let url = format!(
        "{}{path}",
        state.pipeline.config().public_url.trim_end_matches('/')
    );
    if !twilio::verify_signature(&config.auth_token, &url, &params, signature) {
        return Err(refuse("bad_signature", Some(&id), client));
    }
    Ok((id, params))
}

/// The one answer to every callback that does not authenticate, logged and counted.
fn refuse(
    reason: &'static str,
    connection: Option<&ConnectionId>,
    client: Option<IpAddr>,
) -> ApiError {
    refuse_callback(twilio::KIND, reason, connection, client)
}

/// The connection a callback's path names, with its configuration parsed by `parse`, when
/// it is a usable connection of `kind`. An unknown id, another type and a configuration
/// that cannot be opened or used all get the same refusal.
pub(crate) async fn callback_connection<C, E: std::fmt::Display>(
    state: &AppState,
    kind: &'static str,
    conn_id: &str,
    client: Option<IpAddr>,
    parse: impl FnOnce(&serde_json::Value) -> Result<C, E>,
) -> Result<(ConnectionId, C), ApiError> {
    let refuse = |reason, id: Option<&ConnectionId>| refuse_callback(kind, reason, id, client);
    let Ok(id) = ConnectionId::parse(conn_id) else {
        return Err(refuse("unknown_connection", None));
    };
    let (conn, config) = match state.store.connection_with_config(&id).await {
        Ok(found) => found,
        Err(StoreError::NotFound) => return Err(refuse("unknown_connection", Some(&id))),
        Err(e @ StoreError::Corrupt(_)) => {
            tracing::error!(connection = %id, error = %e, "connection configuration cannot be opened");
            return Err(refuse("unusable_connection", Some(&id)));
        }
        Err(e) => return Err(e.into()),
    };
    if conn.kind != kind {
        return Err(refuse("wrong_connection_type", Some(&id)));
    }
    match parse(&config) {
        Ok(c) => Ok((id, c)),
        Err(e) => {
            tracing::error!(connection = %id, error = %e, "connection configuration cannot be used");
            Err(refuse("unusable_connection", Some(&id)))
        }
    }
}

/// [`refuse`] for any provider's callbacks.
pub(crate) fn refuse_callback(
    provider: &'static str,
    reason: &'static str,
    connection: Option<&ConnectionId>,
    client: Option<IpAddr>,
) -> ApiError {
    metrics::counter!("portcullis_security_events_total", "kind" => "provider_signature_refused")
        .increment(1);
    tracing::warn!(
        target: "security",
        provider,
        connection = connection.map(|c| c.as_str()),
        client = ?client,
        reason,
        "provider callback refused"
    );
    ApiError::forbidden()
}
