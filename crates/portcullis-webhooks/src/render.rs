//! Turns stored events into the JSON apps receive: `{"type","timestamp","data"}` for
//! webhooks, the same with `"id"` for realtime frames.
//!
//! Rendering reads the message or inbound message an event is about, so the body is the
//! same on every attempt and replay (the subject's fields that appear here never change).

use std::collections::HashMap;

use bytes::Bytes;
use portcullis_domain::{AppId, EventType};
use portcullis_store::events::EventRecord;
use portcullis_store::inbound::InboundMessage;
use portcullis_store::messages::MessageRecord;
use portcullis_store::{Store, StoreError, apps};
use serde_json::{Map, Value, json};

/// Webhook bodies stay under this size: a receiver's body limit must never be the reason
/// an event is lost.
pub const MAX_BODY_BYTES: usize = 20 * 1024;

/// An event rendered for one app.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub event_id: String,
    pub app_id: AppId,
    pub seq: i64,
    /// The webhook body.
    pub body: String,
    /// The realtime frame (the body with the event id), UTF-8. Bytes, so that the one
    /// copy is shared by every subscriber's socket.
    pub frame: Bytes,
}

/// Renders events, reading what they are about in bulk.
pub async fn render_all(
    store: &Store,
    events: &[EventRecord],
) -> Result<HashMap<String, Rendered>, StoreError> {
    let mut msg_ids = Vec::new();
    let mut inb_ids = Vec::new();
    let mut app_ids: Vec<&AppId> = Vec::new();
    for e in events {
        if let Some(s) = &e.subject_id {
            if s.starts_with("msg_") {
                msg_ids.push(s.as_str());
            } else if s.starts_with("inb_") && e.kind == EventType::MessageInbound {
                inb_ids.push(s.as_str());
            }
        }
        if !app_ids.contains(&&e.app_id) {
            app_ids.push(&e.app_id);
        }
    }
    let messages: HashMap<String, MessageRecord> = store
        .messages_by_ids(&msg_ids)
        .await?
        .into_iter()
        .map(|m| (m.id.as_str().to_owned(), m))
        .collect();
    let inbound: HashMap<String, InboundMessage> = store
        .inbound_by_ids(&inb_ids)
        .await?
        .into_iter()
        .map(|m| (m.id.as_str().to_owned(), m))
        .collect();
    let mut full_numbers = HashMap::new();
    for app in app_ids {
        let full = match apps::get_any_tenant(&store.db, app).await {
            Ok(a) => a.policy.webhook_full_numbers,
            Err(StoreError::NotFound) => false,
            Err(e) => return Err(e),
        };
        full_numbers.insert(app.clone(), full);
    }
    Ok(events
        .iter()
        .map(|e| {
            let full = full_numbers.get(&e.app_id).copied().unwrap_or(false);
            let data = data_of(e, &messages, &inbound, full);
            (e.id.as_str().to_owned(), finish(e, data))
        })
        .collect())
}

fn phone(p: &portcullis_domain::E164, full: bool) -> Value {
    if full {
        p.as_str().into()
    } else {
        p.masked().into()
    }
}

fn data_of(
    e: &EventRecord,
    messages: &HashMap<String, MessageRecord>,
    inbound: &HashMap<String, InboundMessage>,
    full: bool,
) -> Map<String, Value> {
    let mut data = Map::new();
    let subject = e.subject_id.as_deref();
    match e.kind {
        EventType::MessageInbound => {
            if let Some(m) = subject.and_then(|s| inbound.get(s)) {
                data.insert("id".into(), m.id.as_str().into());
                data.insert("from".into(), phone(&m.from, full));
                data.insert("to".into(), m.to.as_str().into());
                data.insert("channel".into(), m.channel.as_str().into());
                data.insert("body".into(), m.body.as_str().into());
                data.insert("received_at".into(), crate::rfc3339(m.received_at).into());
            } else if let Some(s) = subject {
                data.insert("id".into(), s.into());
            }
        }
        // The snapshot (endpoint id and reason) is the whole story.
        EventType::EndpointDisabled | EventType::AuthFailures => {}
        EventType::RecipientOptedOut | EventType::RecipientOptedIn => {
            if let Some(p) = &e.phone {
                data.insert("phone".into(), phone(p, full));
            }
            if let Some(s) = subject {
                data.insert("inbound_id".into(), s.into());
            }
        }
        _ => {
            if let Some(m) = subject.and_then(|s| messages.get(s)) {
                data.insert("id".into(), m.id.as_str().into());
                data.insert("to".into(), phone(&m.to, full));
                if let Some(f) = &m.from {
                    data.insert("from".into(), f.as_str().into());
                }
                data.insert("channel".into(), m.channel.as_str().into());
                data.insert("purpose".into(), m.purpose.as_str().into());
                data.insert("segments".into(), m.segments.into());
                if let Some(md) = &m.metadata {
                    data.insert("metadata".into(), md.clone());
                }
            } else if let Some(s) = subject {
                data.insert("id".into(), s.into());
            }
        }
    }
    // The snapshot taken with the change (status, provider ids, error) wins over the
    // subject's current state: a `message.sent` stays `sent` after the message is delivered.
    if let Value::Object(snapshot) = &e.data {
        for (k, v) in snapshot {
            data.insert(k.clone(), v.clone());
        }
    }
    data
}

fn finish(e: &EventRecord, mut data: Map<String, Value>) -> Rendered {
    let timestamp = crate::rfc3339(e.created_at);
    let mut body =
        json!({ "type": e.kind.as_str(), "timestamp": timestamp, "data": data }).to_string();
    if body.len() > MAX_BODY_BYTES {
        // Metadata is the app's own and can be fetched; an inbound body is cut to fit.
        data.remove("metadata");
        data.insert("truncated".into(), true.into());
        body = json!({ "type": e.kind.as_str(), "timestamp": timestamp, "data": data }).to_string();
        if body.len() > MAX_BODY_BYTES
            && let Some(Value::String(text)) = data.get_mut("body")
        {
            let excess = body.len() - MAX_BODY_BYTES + 64;
            let mut keep = text.len().saturating_sub(excess);
            while !text.is_char_boundary(keep) {
                keep -= 1;
            }
            text.truncate(keep);
            body = json!({ "type": e.kind.as_str(), "timestamp": timestamp, "data": data })
                .to_string();
        }
    }
    let frame = json!({
        "id": e.id.as_str(),
        "type": e.kind.as_str(),
        "timestamp": timestamp,
        "data": data,
    })
    .to_string()
    .into();
    Rendered {
        event_id: e.id.as_str().to_owned(),
        app_id: e.app_id.clone(),
        seq: e.seq,
        body,
        frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_domain::{E164, EventId, TenantId};

    fn event(kind: EventType, data: Value) -> EventRecord {
        EventRecord {
            seq: 7,
            id: EventId::new(),
            tenant_id: TenantId::new(),
            app_id: AppId::new(),
            kind,
            subject_id: Some("inb_x".into()),
            data,
            phone: Some(E164::parse("+14155550123").unwrap()),
            created_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn recipient_events_mask_the_number_unless_the_app_opts_in() {
        let e = event(
            EventType::RecipientOptedOut,
            json!({"source": "inbound_keyword"}),
        );
        let masked = finish(&e, data_of(&e, &HashMap::new(), &HashMap::new(), false));
        assert!(masked.body.contains("+1415555****"), "{}", masked.body);
        assert!(!masked.body.contains("0123"));
        let full = finish(&e, data_of(&e, &HashMap::new(), &HashMap::new(), true));
        assert!(full.body.contains("+14155550123"));
        let v: Value = serde_json::from_slice(&masked.frame).unwrap();
        assert_eq!(v["id"], e.id.as_str());
        assert_eq!(v["type"], "recipient.opted_out");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn oversized_bodies_are_cut_under_the_limit() {
        let e = event(EventType::MessageInbound, json!({}));
        let mut data = Map::new();
        data.insert("body".into(), "é".repeat(30_000).into());
        data.insert("metadata".into(), json!({"k": "v".repeat(5000)}));
        let r = finish(&e, data);
        assert!(r.body.len() <= MAX_BODY_BYTES, "{}", r.body.len());
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["data"]["truncated"], true);
        assert!(v["data"].get("metadata").is_none());
    }
}
