//! `/v1/messages`: send, read, list, cancel.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis_domain::policy::Decision;
use portcullis_domain::template::WhatsappTemplate;
use portcullis_domain::{
    Channel, E164, MessageBody, MessageId, MessageStatus, Purpose, encoding::segment_info,
};
use portcullis_pipeline::{AcceptOutcome, AcceptRequest, Charge, IdempotencyInput, Screening};
use portcullis_providers::whatsapp::{SERVICE_WINDOW_MS, WINDOW_CLOSED};
use portcullis_store::idempotency::IdempotencyClaim;
use portcullis_store::messages::{HistoryEntry, MessageFilter, MessageRecord, NewMessage};
use portcullis_store::now_ms;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Auth, Reader, Sender};
use crate::dto::{IdPath, List, PageParams, parse_json, rfc3339, rfc3339_opt};
use crate::error::ApiError;

/// How far ahead a message may be scheduled.
const MAX_SCHEDULE_AHEAD_MS: i64 = 35 * 24 * 60 * 60 * 1000;
const MAX_METADATA_KEYS: usize = 20;
const MAX_METADATA_KEY_CHARS: usize = 40;
const MAX_METADATA_VALUE_CHARS: usize = 500;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// The longest (and default) validity period, as Twilio's: ten hours.
const MAX_VALIDITY_SECONDS: u32 = 36_000;

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Recipient in E.164 (`+14155550100`); common formatting is folded.
    pub to: String,
    /// The text. Control characters other than newline and tab are refused. Exactly one of
    /// `body` and `template`.
    pub body: Option<String>,
    /// A WhatsApp template (channel `whatsapp` only): allowed outside the 24-hour
    /// customer service window, where a free-form body is not.
    pub template: Option<TemplateRequest>,
    /// `otp`, `transactional`, `alert`, `notification`, `support` or `marketing`.
    pub purpose: Option<String>,
    /// `sms` (default) or `whatsapp`.
    pub channel: Option<String>,
    /// One of the app's senders; defaults to the app's first sender.
    pub from: Option<String>,
    /// RFC 3339 time to send at; absent or past means now.
    pub send_at: Option<String>,
    /// Seconds the message may wait to be sent (from `send_at`, or now) before it expires
    /// instead of going out late; 1 to 36000, default 36000.
    pub validity_period: Option<u32>,
    /// Up to 20 string values, returned with the message.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// A WhatsApp template to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    /// The approved template's name, e.g. `order_update`.
    pub name: String,
    /// Its language code, e.g. `en_US`.
    pub language: String,
    /// Values of the body placeholders `{{1}}`, `{{2}}`, … in order.
    #[serde(default)]
    pub parameters: Vec<String>,
}

/// The template a WhatsApp message was sent with. Parameter values are not shown back.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub language: String,
}

impl TemplateView {
    fn of(t: &WhatsappTemplate) -> TemplateView {
        TemplateView {
            name: t.name.clone(),
            language: t.language.clone(),
        }
    }
}

/// A message as the API shows it. The recipient is always masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub status: String,
    /// Masked recipient: the last four digits are `*`.
    pub to: String,
    pub from: Option<String>,
    pub channel: String,
    pub purpose: String,
    pub body: String,
    /// Set for WhatsApp template messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateView>,
    /// `gsm7` or `ucs2`.
    pub encoding: String,
    pub segments: u32,
    pub test: bool,
    pub send_at: Option<String>,
    /// When the message expires if it has not been handed to a provider by then.
    pub expires_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub connection_id: Option<String>,
    pub provider_message_id: Option<String>,
    pub error_code: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryView>>,
}

/// One status change of a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// A message status, or `read`: the recipient opened it (WhatsApp read receipts; the
    /// message stays `delivered`).
    pub status: String,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<HistoryEntry> for HistoryView {
    fn from(h: HistoryEntry) -> Self {
        HistoryView {
            status: h.status.as_str().to_owned(),
            at: rfc3339(h.at),
            connection_id: h.connection_id,
            provider_message_id: h.provider_message_id,
            part: h.part,
            detail: h.detail,
        }
    }
}

fn encoding_name(e: portcullis_domain::Encoding) -> &'static str {
    match e {
        portcullis_domain::Encoding::Gsm7 => "gsm7",
        portcullis_domain::Encoding::Ucs2 => "ucs2",
    }
}

impl MessageView {
    pub(crate) fn from_record(m: MessageRecord, history: Option<Vec<HistoryEntry>>) -> MessageView {
        MessageView {
            id: m.id.as_str().to_owned(),
            status: m.status.as_str().to_owned(),
            to: m.to.masked(),
            from: m.from,
            channel: m.channel.as_str().to_owned(),
            purpose: m.purpose.as_str().to_owned(),
            body: m.body,
            template: m.template.as_ref().map(TemplateView::of),
            encoding: encoding_name(m.encoding).to_owned(),
            segments: m.segments,
            test: m.test_mode,
            send_at: rfc3339_opt(m.send_at),
            expires_at: rfc3339_opt(m.expires_at),
            metadata: m.metadata,
            connection_id: m.connection_id.map(|c| c.as_str().to_owned()),
            provider_message_id: m.provider_message_id,
            error_code: m.error_code,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
            history: history.map(|h| h.into_iter().map(HistoryView::from).collect()),
        }
    }

    fn from_new(m: &NewMessage) -> MessageView {
        MessageView {
            id: m.id.as_str().to_owned(),
            status: m.status.as_str().to_owned(),
            to: m.to.masked(),
            from: m.from.clone(),
            channel: m.channel.as_str().to_owned(),
            purpose: m.purpose.as_str().to_owned(),
            body: m.body.clone(),
            template: None,
            encoding: encoding_name(m.encoding).to_owned(),
            segments: m.segments,
            test: m.test_mode,
            send_at: rfc3339_opt(m.send_at),
            expires_at: Some(rfc3339(m.expires_at)),
            metadata: m.metadata.clone(),
            connection_id: None,
            provider_message_id: None,
            error_code: None,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.created_at),
            history: None,
        }
    }
}

/// Send a message.
#[utoipa::path(
    operation_id = "messages_send",
    post, path = "/v1/messages", tag = "messages",
    request_body = SendMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body within 24 h return the first response")),
    responses(
        (status = 202, description = "Durably stored and queued", body = MessageView),
        (status = 409, description = "Idempotency key reused with another body"),
        (status = 422, description = "Invalid request or refused by policy"),
    ),
    security(("api_key" = []))
)]
pub async fn send(
    State(state): State<AppState>,
    auth: Auth<Sender>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let req: SendMessage = parse_json(&headers, &raw)?;
    // Two requests are "the same" when their bodies are byte-for-byte equal.
    let request_hash = state.store.request_fingerprint(&raw);
    if let Some(key) = &idempotency_key {
        match state
            .store
            .lookup_idempotency_key(&auth.app_id, key, &request_hash, now_ms())
            .await?
        {
            Some(IdempotencyClaim::Replay {
                status_code,
                response,
            }) => return Ok(replay(status_code, response)),
            Some(IdempotencyClaim::Mismatch) => return Err(key_reused()),
            _ => {}
        }
    }
    let app = &auth.app;

    let to = E164::parse(&req.to).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let channel = match req.channel.as_deref() {
        None => Channel::Sms,
        Some(c) => Channel::parse(c).map_err(|_| {
            ApiError::unprocessable("invalid_channel", "channel must be \"sms\" or \"whatsapp\"")
        })?,
    };
    let template = match req.template {
        None => None,
        Some(_) if channel != Channel::Whatsapp => {
            return Err(ApiError::unprocessable(
                "template_not_allowed",
                "template is only for channel \"whatsapp\"",
            ));
        }
        Some(_) if req.body.is_some() => {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "give either body or template, not both",
            ));
        }
        Some(t) => Some(
            WhatsappTemplate::new(&t.name, &t.language, t.parameters)
                .map_err(|e| ApiError::unprocessable("invalid_template", e.to_string()))?,
        ),
    };
    let purpose = match req.purpose.as_deref() {
        None => {
            return Err(ApiError::unprocessable(
                "purpose_required",
                "purpose is required: one of otp, transactional, alert, notification, support, marketing",
            ));
        }
        Some(p) => Purpose::parse(p).map_err(|_| {
            ApiError::unprocessable(
                "invalid_purpose",
                "purpose must be one of otp, transactional, alert, notification, support, marketing",
            )
        })?,
    };
    // A template's stored (and shown) text names it; what goes to Meta is the template.
    let template_text = template
        .as_ref()
        .map(|t| format!("[whatsapp template {} ({})]", t.name, t.language));
    let text = template_text
        .as_deref()
        .or(req.body.as_deref())
        .unwrap_or("");
    let body = MessageBody::parse(text, app.max_body_chars as usize)
        .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let from = match req.from {
        Some(f) if app.senders.contains(&f) => Some(f),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "sender_not_allowed",
                "from must be one of the app's senders",
            ));
        }
        None => app.senders.first().cloned(),
    };
    let now = now_ms();
    if channel == Channel::Whatsapp
        && template.is_none()
        && !state
            .store
            .has_inbound_since(
                &auth.app_id,
                &to,
                Channel::Whatsapp,
                now - SERVICE_WINDOW_MS,
            )
            .await?
    {
        return Err(ApiError::unprocessable(
            WINDOW_CLOSED,
            "the recipient has not written to this app on WhatsApp in the last 24 hours: \
             outside that window only a template may be sent",
        ));
    }
    let requested_at = parse_send_at(req.send_at.as_deref(), now)?;
    let validity = match req.validity_period {
        None => MAX_VALIDITY_SECONDS,
        Some(v @ 1..=MAX_VALIDITY_SECONDS) => v,
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_validity_period",
                "validity_period must be between 1 and 36000 seconds",
            ));
        }
    };
    let metadata = check_metadata(req.metadata)?;
    let id = MessageId::new();

    let started = std::time::Instant::now();
    let Screened {
        decision,
        text,
        info,
        charge,
        screening,
    } = screen(
        &state,
        &auth,
        &to,
        channel,
        purpose,
        &body,
        requested_at,
        now,
    )
    .await?;
    metrics::histogram!("portcullis_guard_seconds").record(started.elapsed());
    let mut policy_events = Vec::new();
    let mut status = MessageStatus::Queued;
    let send_at = match decision {
        Decision::Refuse { code, reason } => {
            let events = vec![super::policy::event(
                &auth,
                None,
                &to,
                "refused",
                code.as_str(),
                &reason,
            )];
            match screening {
                Some(s) => s.refuse(events).await?,
                None => state.pipeline.record_policy_events(events).await?,
            }
            return Err(ApiError::unprocessable(code.as_str(), reason));
        }
        Decision::Defer {
            until,
            code,
            reason,
        } => {
            policy_events.push(super::policy::event(
                &auth,
                Some(&id),
                &to,
                "deferred",
                code.as_str(),
                &reason,
            ));
            Some(until.as_millisecond())
        }
        Decision::Hold { code, reason } => {
            policy_events.push(super::policy::event(
                &auth,
                Some(&id),
                &to,
                "held",
                code.as_str(),
                &reason,
            ));
            status = MessageStatus::Held;
            requested_at
        }
        Decision::Allow { exempt } => {
            if let Some(reason) = exempt {
                policy_events.push(super::policy::event(
                    &auth,
                    Some(&id),
                    &to,
                    "allowed_exempt",
                    "recipient_suppressed",
                    &reason,
                ));
            }
            requested_at
        }
    };
    if status == MessageStatus::Queued && send_at.is_some() {
        status = MessageStatus::Scheduled;
    }
    let expires_at = send_at.unwrap_or(now) + i64::from(validity) * 1000;

    let message = NewMessage {
        id,
        tenant_id: auth.tenant_id.clone(),
        app_id: auth.app_id.clone(),
        key_id: auth.key_id.clone(),
        to,
        from,
        channel,
        purpose,
        body: text,
        metadata,
        encoding: info.encoding,
        segments: info.segments,
        status,
        test_mode: auth.test,
        send_at,
        expires_at,
        created_at: now,
    };
    let mut view = MessageView::from_new(&message);
    view.template = template.as_ref().map(TemplateView::of);
    let response = serde_json::to_string(&view).map_err(ApiError::internal)?;
    let mut sealed = state.store.seal_message(message)?;
    if let Some(t) = &template {
        state.store.seal_template(&mut sealed, t)?;
    }
    let idempotency = idempotency_key.map(|key| IdempotencyInput { key, request_hash });
    let accept = AcceptRequest {
        message: sealed,
        idempotency,
        response: response.clone(),
        policy_events,
        charge,
    };
    let outcome = match screening {
        Some(s) => s.accept(accept).await?,
        None => state.pipeline.accept(accept).await?,
    };
    match outcome {
        AcceptOutcome::Accepted => Ok(json_response(StatusCode::ACCEPTED, response, false)),
        AcceptOutcome::Replay {
            status_code,
            response,
        } => Ok(replay(status_code, response)),
        AcceptOutcome::IdempotencyKeyReused => Err(key_reused()),
        AcceptOutcome::Refused { code, reason } => Err(ApiError::unprocessable(code, reason)),
    }
}

/// What the guard made of a message.
struct Screened {
    decision: Decision,
    /// The text to send (the opt-out footer appended where the policy says so).
    text: String,
    info: portcullis_domain::SegmentInfo,
    /// What accepting it costs against the counters.
    charge: Option<Charge>,
    /// The committer's batch waiting for this decision (`None`: nothing was read, the
    /// message goes to the committer on its own).
    screening: Option<Screening>,
}

#[cfg(not(feature = "unguarded-benchmark-only"))]
use guarded::screen;

#[cfg(not(feature = "unguarded-benchmark-only"))]
mod guarded {
    use portcullis_domain::policy::{Inputs, Outgoing, Stage, decide};
    use portcullis_domain::quiet_hours::QuietRules;
    use portcullis_domain::risk::RiskPrefixes;
    use portcullis_pipeline::GuardRead;
    use portcullis_store::guard::CounterKeys;
    use portcullis_store::policy::GuardSnapshot;

    use super::*;

    /// The guard (`portcullis_domain::policy::decide`) on what the store and the board know.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn screen(
        state: &AppState,
        auth: &crate::auth::Caller,
        to: &E164,
        channel: Channel,
        purpose: Purpose,
        body: &MessageBody,
        requested_at: Option<i64>,
        now: i64,
    ) -> Result<Screened, ApiError> {
        let board = state.pipeline.board();
        let tenant = board.tenant_settings(&auth.tenant_id);
        let policy = auth.app.policy(&tenant);
        let pause = board.pause_for(&auth.tenant_id, &auth.app_id);
        let text = policy.outgoing_text(purpose, body.as_str());
        let info = segment_info(&text);
        let keys = CounterKeys::new(&auth.tenant_id, &auth.app_id, &tenant, now);
        let screening = if pause.is_some() {
            // Refused whatever the rest says: no need to read it.
            None
        } else {
            Some(
                state
                    .pipeline
                    .screen(GuardRead {
                        app: auth.app_id.clone(),
                        to: to.clone(),
                        count_recipient: policy.recipient_daily_cap.is_some()
                            && !purpose.is_essential(),
                        keys: keys.clone(),
                    })
                    .await?,
            )
        };
        let unread = GuardSnapshot::default();
        let snapshot = screening.as_ref().map_or(&unread, |s| &s.snapshot);
        let outgoing = Outgoing {
            purpose,
            channel,
            to,
            text: &text,
            segments: info.segments,
            send_at: requested_at.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()),
        };
        let decision = decide(
            &outgoing,
            &Inputs {
                policy: &policy,
                standing: &snapshot.recipient.standing(channel),
                counters: &snapshot.counters(&keys),
                pause: pause.as_ref(),
                rules: QuietRules::builtin(),
                risk: RiskPrefixes::builtin(),
                now: jiff::Timestamp::from_millisecond(now).map_err(ApiError::internal)?,
            },
            Stage::Accept,
        );
        let charge = Charge {
            keys,
            limits: policy.quotas,
            segments: u64::from(info.segments),
            high_risk: RiskPrefixes::builtin().matching(to).is_some(),
        };
        Ok(Screened {
            decision,
            text: text.into_owned(),
            info,
            charge: Some(charge),
            screening,
        })
    }
}

/// A build for measuring the guard's cost (`docs/benchmarks.md`) and nothing else: every
/// message is allowed unread and uncounted. The binary refuses to serve outside dev mode
/// when built this way (`portcullis::server`).
#[cfg(feature = "unguarded-benchmark-only")]
#[allow(clippy::too_many_arguments)]
async fn screen(
    _state: &AppState,
    _auth: &crate::auth::Caller,
    _to: &E164,
    _channel: Channel,
    _purpose: Purpose,
    body: &MessageBody,
    _requested_at: Option<i64>,
    _now: i64,
) -> Result<Screened, ApiError> {
    Ok(Screened {
        decision: Decision::Allow { exempt: None },
        text: body.as_str().to_owned(),
        info: segment_info(body.as_str()),
        charge: None,
        screening: None,
    })
}

fn replay(status_code: u16, response: String) -> Response {
    json_response(
        StatusCode::from_u16(status_code).unwrap_or(StatusCode::ACCEPTED),
        response,
        true,
    )
}

fn key_reused() -> ApiError {
    ApiError::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request",
    )
}

fn json_response(status: StatusCode, body: String, replayed: bool) -> Response {
    let mut res = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if replayed {
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY_CHARS
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

fn parse_send_at(input: Option<&str>, now: i64) -> Result<Option<i64>, ApiError> {
    let Some(s) = input else { return Ok(None) };
    let ts: jiff::Timestamp = s.parse().map_err(|_| {
        ApiError::unprocessable(
            "invalid_send_at",
            "send_at must be an RFC 3339 timestamp with an offset",
        )
    })?;
    let at = ts.as_millisecond();
    if at <= now {
        return Ok(None);
    }
    if at - now > MAX_SCHEDULE_AHEAD_MS {
        return Err(ApiError::unprocessable(
            "invalid_send_at",
            "send_at may be at most 35 days ahead",
        ));
    }
    Ok(Some(at))
}

fn check_metadata(m: Option<serde_json::Value>) -> Result<Option<serde_json::Value>, ApiError> {
    let invalid = || {
        ApiError::unprocessable(
            "invalid_metadata",
            "metadata must be an object of at most 20 string values (keys up to 40, values up to 500 characters)",
        )
    };
    match m {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(map)) => {
            if map.len() > MAX_METADATA_KEYS {
                return Err(invalid());
            }
            for (k, v) in &map {
                let ok = k.chars().count() <= MAX_METADATA_KEY_CHARS
                    && !k.is_empty()
                    && v.as_str()
                        .is_some_and(|s| s.chars().count() <= MAX_METADATA_VALUE_CHARS);
                if !ok {
                    return Err(invalid());
                }
            }
            Ok(Some(serde_json::Value::Object(map)))
        }
        Some(_) => Err(invalid()),
    }
}

/// Get one message with its status history.
#[utoipa::path(
    operation_id = "messages_get",
    get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id (msg_…)")),
    responses((status = 200, body = MessageView), (status = 404, description = "No such message for this app")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth<Reader>,
    IdPath(id): IdPath,
) -> Result<Json<MessageView>, ApiError> {
    let id = MessageId::parse(&id).map_err(|_| ApiError::not_found())?;
    let msg = state.store.get_message(&auth.app_id, &id).await?;
    let history = state.store.message_history(&msg).await?;
    Ok(Json(MessageView::from_record(msg, Some(history))))
}

/// Filters of the message list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListMessagesParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only messages in this status.
    pub status: Option<String>,
    /// Only messages to this recipient (E.164).
    pub to: Option<String>,
}

/// List the app's messages, newest first.
#[utoipa::path(
    operation_id = "messages_list",
    get, path = "/v1/messages", tag = "messages",
    params(ListMessagesParams),
    responses((status = 200, body = List<MessageView>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth<Reader>,
    Query(q): Query<ListMessagesParams>,
) -> Result<Json<List<MessageView>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let filter = MessageFilter {
        status: q
            .status
            .as_deref()
            .map(|s| {
                MessageStatus::parse(s).map_err(|_| {
                    ApiError::unprocessable("invalid_status", "unknown message status")
                })
            })
            .transpose()?,
        to: q
            .to
            .as_deref()
            .map(|t| E164::parse(t).map_err(|e| ApiError::unprocessable(e.code(), e.to_string())))
            .transpose()?,
    };
    let result = state
        .store
        .list_messages(
            &auth.app_id,
            &filter,
            page.cursor()?.as_ref(),
            page.limit()?,
        )
        .await?;
    let data = result
        .items
        .into_iter()
        .map(|m| MessageView::from_record(m, None))
        .collect();
    Ok(Json(List::new(data, result.next)))
}

/// Cancel a message that is still queued, scheduled or held.
#[utoipa::path(
    operation_id = "messages_cancel",
    post, path = "/v1/messages/{id}/cancel", tag = "messages",
    params(("id" = String, Path, description = "Message id (msg_…)")),
    responses(
        (status = 200, body = MessageView),
        (status = 404, description = "No such message for this app"),
        (status = 409, description = "Already handed to a provider"),
    ),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth<Sender>,
    IdPath(id): IdPath,
) -> Result<Json<MessageView>, ApiError> {
    let id = MessageId::parse(&id).map_err(|_| ApiError::not_found())?;
    let msg = state
        .store
        .cancel_message(&auth.app_id, &id)
        .await
        .map_err(|e| match e {
            portcullis_store::StoreError::Conflict(m) => ApiError::conflict("not_cancelable", m),
            other => other.into(),
        })?;
    let history = state.store.message_history(&msg).await?;
    Ok(Json(MessageView::from_record(msg, Some(history))))
}
