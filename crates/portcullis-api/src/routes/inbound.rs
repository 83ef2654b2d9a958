//! `/v1/inbound` and the simulator's injection endpoint `/v1/simulator/inbound`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use portcullis_domain::{Channel, E164, MessageBody};
use portcullis_providers::simulator::BUILTIN_CONNECTION_ID;
use portcullis_providers::{InboundEvent, ProviderEvent};
use portcullis_store::inbound::InboundMessage;
use portcullis_store::now_ms;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Auth, Reader, Sender};
use crate::dto::{List, PageParams, parse_json, rfc3339};
use crate::error::ApiError;

/// An inbound (MO) message. The sender's number is masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundView {
    pub id: String,
    /// Masked sender number.
    pub from: String,
    /// The app sender it was sent to.
    pub to: String,
    pub channel: String,
    pub body: String,
    pub connection_id: String,
    pub received_at: String,
}

impl From<InboundMessage> for InboundView {
    fn from(m: InboundMessage) -> Self {
        InboundView {
            id: m.id.as_str().to_owned(),
            from: m.from.masked(),
            to: m.to,
            channel: m.channel.as_str().to_owned(),
            body: m.body,
            connection_id: m.connection_id.as_str().to_owned(),
            received_at: rfc3339(m.received_at),
        }
    }
}

/// List the app's inbound messages, newest first.
#[utoipa::path(
    operation_id = "inbound_list",
    get, path = "/v1/inbound", tag = "inbound",
    params(PageParams),
    responses((status = 200, body = List<InboundView>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth<Reader>,
    Query(page): Query<PageParams>,
) -> Result<Json<List<InboundView>>, ApiError> {
    let result = state
        .store
        .list_inbound(&auth.app_id, page.cursor()?.as_ref(), page.limit()?)
        .await?;
    Ok(Json(List::new(
        result.items.into_iter().map(InboundView::from).collect(),
        result.next,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectInbound {
    /// The (simulated) sender, E.164.
    pub from: String,
    /// One of the app's senders.
    pub to: String,
    pub body: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InjectedInbound {
    /// The simulator's id for the message, as a provider would assign one.
    pub provider_message_id: String,
    pub status: String,
}

/// Inject an inbound message through the simulator (dev mode or `pcl_test_` keys only).
#[utoipa::path(
    operation_id = "inbound_inject",
    post, path = "/v1/simulator/inbound", tag = "simulator", request_body = InjectInbound,
    responses(
        (status = 202, body = InjectedInbound, description = "Recorded through the inbound path"),
        (status = 403, description = "Not a test key and not in dev mode"),
    ),
    security(("api_key" = []))
)]
pub async fn inject(
    State(state): State<AppState>,
    auth: Auth<Sender>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<(StatusCode, Json<InjectedInbound>), ApiError> {
    if !(state.config.dev_mode || auth.test) {
        return Err(ApiError::forbidden());
    }
    let req: InjectInbound = parse_json(&headers, &raw)?;
    let from =
        E164::parse(&req.from).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let app = &auth.app;
    if !app.senders.contains(&req.to) {
        return Err(ApiError::unprocessable(
            "invalid_recipient",
            "to must be one of the app's senders",
        ));
    }
    // Inbound text is the subscriber's, not ours to refuse for length; only the control
    // character rule applies, with the longest body any channel carries.
    let body = MessageBody::parse(&req.body, 4096)
        .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let provider_message_id = format!(
        "sim-in-{}",
        portcullis_crypto::random_token("", 24).expose()
    );
    let sink = state
        .pipeline
        .routes()
        .sink()
        .ok_or_else(|| ApiError::internal("pipeline is shutting down"))?;
    let (ack, recorded) = oneshot::channel();
    let event = InboundEvent {
        connection_id: portcullis_domain::ConnectionId::from_trusted(
            BUILTIN_CONNECTION_ID.to_owned(),
        ),
        app_id: Some(auth.app_id.clone()),
        provider_message_id: provider_message_id.clone(),
        from,
        to: req.to,
        channel: Channel::Sms,
        body: body.into_inner(),
        at: now_ms(),
        part: None,
    };
    sink.send(ProviderEvent::Inbound(event, Some(ack)))
        .await
        .map_err(|_| ApiError::internal("event sink closed"))?;
    recorded
        .await
        .map_err(|_| ApiError::internal("inbound message was not recorded"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(InjectedInbound {
            provider_message_id,
            status: "received".to_owned(),
        }),
    ))
}
