//! What an inbound message means for its sender's subscription: STOP and its variants
//! suppress the sender for the app (all its senders and channels) and get one
//! confirmation; START lifts it; HELP gets the app's help text; a keyword merely standing
//! in a longer message is recorded for review. Runs inside the transaction that stores the
//! inbound message, so the suppression and the message it came from commit together.

use portcullis_domain::optout::{Intent, Keywords, classify};
use portcullis_domain::{
    Channel, E164, EventId, EventType, KeyId, MessageId, MessageStatus, Purpose,
    encoding::segment_info,
};
use portcullis_queue::NewJob;
use portcullis_store::apps::App;
use portcullis_store::events::NewEvent;
use portcullis_store::inbound::InboundMessage;
use portcullis_store::messages::NewMessage;
use portcullis_store::policy::NewPolicyEvent;
use portcullis_store::{Store, StoreError, Tx, now_ms};

use crate::SEND_QUEUE;

/// The key id recorded on messages the gateway sends on its own behalf (keyword replies).
pub const SYSTEM_KEY_ID: &str = "key_system";

/// Applies the keyword rules to a newly stored inbound message.
pub(crate) async fn handle(
    store: &Store,
    tx: &mut Tx,
    app: &App,
    inbound: &InboundMessage,
    max_attempts: u32,
) -> Result<(), StoreError> {
    let keywords = Keywords::defaults().with_extra_opt_out(&app.policy.extra_opt_out_keywords);
    let event = |kind: &str, code: &str, reason: String| NewPolicyEvent {
        tenant_id: app.tenant_id.clone(),
        app_id: app.id.clone(),
        message_id: None,
        phone: Some(inbound.from.clone()),
        kind: kind.to_owned(),
        code: code.to_owned(),
        reason,
    };
    let (events, reply) = match classify(&inbound.body, &keywords) {
        Intent::OptOut { keyword } => {
            let reason = format!("inbound message matched opt-out keyword {keyword:?}");
            let (_, created) = store
                .suppress(
                    tx,
                    &app.tenant_id,
                    &app.id,
                    &inbound.from,
                    Some(&reason),
                    "inbound_keyword",
                )
                .await?;
            // One confirmation: a repeated STOP from a suppressed number gets no answer.
            let reply = created.then(|| app.policy.opt_out_confirmation.clone());
            if created {
                recipient_event(
                    store,
                    tx,
                    app,
                    inbound,
                    EventType::RecipientOptedOut,
                    &keyword,
                )
                .await?;
            }
            (vec![event("opted_out", "opt_out_keyword", reason)], reply)
        }
        Intent::OptIn { keyword } => {
            let lifted = store.unsuppress_phone(tx, &app.id, &inbound.from).await?;
            if lifted {
                recipient_event(
                    store,
                    tx,
                    app,
                    inbound,
                    EventType::RecipientOptedIn,
                    &keyword,
                )
                .await?;
                let reason = format!("inbound message matched opt-in keyword {keyword:?}");
                (
                    vec![event("opted_in", "opt_in_keyword", reason)],
                    Some(app.policy.opt_in_confirmation.clone()),
                )
            } else {
                (Vec::new(), None)
            }
        }
        Intent::Help { .. } => (Vec::new(), Some(app.policy.help_text.clone())),
        Intent::PossibleOptOut { keyword } => (
            vec![event(
                "possible_opt_out",
                "possible_opt_out",
                format!(
                    "inbound message mentions {keyword:?} without clearly opting out; review it"
                ),
            )],
            None,
        ),
        Intent::None => (Vec::new(), None),
    };
    store.insert_policy_events(tx, &events).await?;
    if let Some(text) = reply.filter(|t| !t.trim().is_empty()) {
        send_reply(
            store,
            tx,
            app,
            &inbound.from,
            &inbound.to,
            inbound.channel,
            text,
            max_attempts,
        )
        .await?;
    }
    Ok(())
}

/// Tells the app a recipient changed their subscription, in the same transaction.
async fn recipient_event(
    store: &Store,
    tx: &mut Tx,
    app: &App,
    inbound: &InboundMessage,
    kind: EventType,
    keyword: &str,
) -> Result<(), StoreError> {
    store
        .insert_app_events(
            tx,
            &[NewEvent {
                id: EventId::new(),
                tenant_id: app.tenant_id.clone(),
                app_id: app.id.clone(),
                kind,
                subject_id: Some(inbound.id.as_str().to_owned()),
                data: serde_json::json!({
                    "source": "inbound_keyword",
                    "keyword": keyword,
                    "channel": inbound.channel.as_str(),
                }),
                phone: Some(inbound.from.clone()),
                created_at: now_ms(),
            }],
        )
        .await
}

/// Queues a reply from the number the inbound message was sent to. Replies are
/// transactional (essential), so they reach a recipient who just opted out.
#[allow(clippy::too_many_arguments)]
async fn send_reply(
    store: &Store,
    tx: &mut Tx,
    app: &App,
    to: &E164,
    from: &str,
    channel: Channel,
    text: String,
    max_attempts: u32,
) -> Result<(), StoreError> {
    let now = now_ms();
    let info = segment_info(&text);
    let msg = NewMessage {
        id: MessageId::new(),
        tenant_id: app.tenant_id.clone(),
        app_id: app.id.clone(),
        key_id: KeyId::from_trusted(SYSTEM_KEY_ID.to_owned()),
        to: to.clone(),
        from: Some(from.to_owned()),
        channel,
        purpose: Purpose::Transactional,
        body: text,
        metadata: None,
        encoding: info.encoding,
        segments: info.segments,
        status: MessageStatus::Queued,
        test_mode: false,
        send_at: None,
        expires_at: now + 60 * 60 * 1000,
        created_at: now,
    };
    let job = NewJob {
        queue: SEND_QUEUE,
        payload: msg.id.as_str().to_owned(),
        run_at: now,
        max_attempts,
    };
    let sealed = store.seal_message(msg)?;
    store.insert_messages(tx, &[&sealed]).await?;
    portcullis_queue::enqueue(tx, &[job]).await
}
