//! Records what providers report — delivery receipts and inbound messages — in batches,
//! and acknowledges each event to its provider only after the transaction holding it has
//! committed.

use std::sync::Arc;

use portcullis_domain::{EventId, EventType, InboundId, TenantId};
use portcullis_providers::simulator::BUILTIN_CONNECTION_ID;
use portcullis_providers::{Ack, InboundEvent, ProviderEvent};
use portcullis_store::apps::App;
use portcullis_store::events::NewEvent;
use portcullis_store::inbound::{InboundMessage, PartPlace};
use portcullis_store::messages::Receipt;
use portcullis_store::{Store, StoreError, Tx, apps, now_ms};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

const MAX_BATCH: usize = 512;

pub(crate) async fn run(
    store: Store,
    mut events: mpsc::Receiver<ProviderEvent>,
    stop: CancellationToken,
    max_attempts: u32,
    work: Arc<Notify>,
    events_written: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut reconcile = tokio::time::interval(std::time::Duration::from_secs(1));
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            n = events.recv_many(&mut batch, MAX_BATCH) => n,
            _ = reconcile.tick() => {
                match sweep(&store, max_attempts).await {
                    Ok((changed, inbound)) => {
                        // A new inbound message may have queued a keyword reply.
                        if inbound > 0 {
                            work.notify_waiters();
                        }
                        if changed > 0 || inbound > 0 {
                            events_written.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the recorder's sweep failed"),
                }
                continue;
            }
            // On shutdown, record what has already arrived and stop. Receipts a provider
            // reports later are not lost: providers re-report them (`Provider::resume`).
            _ = stop.cancelled() => {
                while batch.len() < MAX_BATCH {
                    match events.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    return;
                }
                batch.len()
            }
        };
        if received == 0 {
            return;
        }
        let mut attempt = 0u32;
        // Events are retried until they are recorded: dropping one would lose a receipt.
        let (new_inbound, changed) = loop {
            match record(&store, &batch, max_attempts).await {
                Ok(n) => break n,
                Err(e) => {
                    attempt += 1;
                    tracing::error!(error = %e, attempt, "recording provider events failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(
                        100 * u64::from(attempt.min(50)),
                    ))
                    .await;
                }
            }
        };
        // A new inbound message may have queued a keyword reply: wake the send workers
        // rather than leave it to their poll.
        if new_inbound > 0 {
            work.notify_waiters();
        }
        if new_inbound > 0 || changed > 0 {
            events_written.notify_one();
        }
        for event in batch.drain(..) {
            let ack: Option<Ack> = match event {
                ProviderEvent::Receipt(_, ack) | ProviderEvent::Inbound(_, ack) => ack,
            };
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        }
    }
}

/// The recorder's periodic work, in one transaction: kept receipts whose message has since
/// been recorded (see `Store::reconcile_unmatched`), and concatenated inbound messages
/// whose missing parts never came, recorded with what did. Returns the status changes and
/// the inbound messages stored.
async fn sweep(store: &Store, max_attempts: u32) -> Result<(usize, u64), StoreError> {
    let mut tx = store.db.begin_shared().await?;
    let applied = store.reconcile_unmatched(&mut tx).await?;
    let overdue = store.overdue_inbound_parts(&mut tx).await?;
    let mut stored = 0;
    for m in &overdue {
        tracing::warn!(connection = %m.connection_id, "a concatenated inbound message is incomplete after an hour; recorded with its missing parts marked");
        let app = apps::get_any_tenant(&store.db, &m.app_id).await?;
        stored += u64::from(store_inbound(store, &mut tx, &app, m, max_attempts).await?);
    }
    tx.commit().await?;
    crate::count_changes(&applied.changes);
    count_receipts(&applied.matched, "matched_later");
    metrics::counter!("portcullis_inbound_messages_total").increment(stored);
    Ok((applied.changes.len(), stored))
}

/// `portcullis_receipts_total{connection, result}`: receipts that found their message or
/// part on arrival (`matched`), were kept for later (`unmatched`), or found it later
/// (`matched_later`). `unmatched - matched_later` is what is waiting.
fn count_receipts(by_connection: &std::collections::HashMap<String, u64>, result: &'static str) {
    for (conn, n) in by_connection {
        metrics::counter!("portcullis_receipts_total", "connection" => conn.clone(), "result" => result)
            .increment(*n);
    }
}

/// Stores an inbound message and what follows from it (its event, keyword handling).
/// False for a duplicate delivery (same provider message id): ignored entirely, so a
/// redelivered STOP cannot trigger a second confirmation.
async fn store_inbound(
    store: &Store,
    tx: &mut Tx,
    app: &App,
    m: &InboundMessage,
    max_attempts: u32,
) -> Result<bool, StoreError> {
    if !store.insert_inbound(tx, m).await? {
        return Ok(false);
    }
    store.insert_app_events(tx, &[inbound_event(m)]).await?;
    crate::keywords::handle(store, tx, app, m, max_attempts).await?;
    Ok(true)
}

async fn record(
    store: &Store,
    batch: &[ProviderEvent],
    max_attempts: u32,
) -> Result<(u64, usize), StoreError> {
    let mut receipts = Vec::new();
    let mut inbound = Vec::new();
    for event in batch {
        match event {
            ProviderEvent::Receipt(r, _) => receipts.push(Receipt {
                connection_id: r.connection_id.clone(),
                provider_message_id: r.provider_message_id.clone(),
                status: r.status,
                detail: r.detail.clone(),
                at: r.at,
            }),
            ProviderEvent::Inbound(m, _) => {
                if let Some(resolved) = resolve_inbound(store, m).await? {
                    inbound.push((resolved, m.part));
                }
            }
        }
    }
    let mut tx = store.db.begin_shared().await?;
    let applied = store.apply_receipts(&mut tx, &receipts).await?;
    let mut stored = 0u64;
    for ((m, app), part) in &inbound {
        // A part of a concatenated message is kept until its message is whole; the part
        // is acknowledged once kept, the message recorded with its last part.
        let whole = match part {
            None => None,
            Some(p) => {
                let place = PartPlace {
                    reference: p.reference,
                    total: p.total,
                    seq: p.seq,
                };
                match store.add_inbound_part(&mut tx, m, place).await? {
                    Some(whole) => Some(whole),
                    None => continue,
                }
            }
        };
        stored += u64::from(
            store_inbound(
                store,
                &mut tx,
                app,
                whole.as_ref().unwrap_or(m),
                max_attempts,
            )
            .await?,
        );
    }
    tx.commit().await?;
    crate::count_changes(&applied.changes);
    count_receipts(&applied.matched, "matched");
    count_receipts(&applied.unmatched, "unmatched");
    metrics::counter!("portcullis_inbound_messages_total").increment(stored);
    Ok((stored, applied.changes.len()))
}

fn inbound_event(m: &InboundMessage) -> NewEvent {
    NewEvent {
        id: EventId::new(),
        tenant_id: m.tenant_id.clone(),
        app_id: m.app_id.clone(),
        kind: EventType::MessageInbound,
        subject_id: Some(m.id.as_str().to_owned()),
        data: serde_json::json!({ "connection_id": m.connection_id.as_str() }),
        phone: None,
        created_at: now_ms(),
    }
}

async fn resolve_inbound(
    store: &Store,
    m: &InboundEvent,
) -> Result<Option<(InboundMessage, App)>, StoreError> {
    // A connection a tenant owns speaks for that tenant only: what arrives on it may reach
    // that tenant's apps and no other, so one tenant's provider credentials can never
    // forge another tenant's STOP. Platform connections (and the built-in simulator,
    // whose injections name their app) serve every tenant.
    let owner: Option<TenantId> = if m.connection_id.as_str() == BUILTIN_CONNECTION_ID {
        None
    } else {
        match store.connection(&m.connection_id).await {
            Ok(conn) => conn.tenant_id,
            Err(StoreError::NotFound) => {
                tracing::warn!(
                    target: "security",
                    connection = %m.connection_id,
                    "inbound message from a connection that does not exist; not stored"
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    };
    let app = match &m.app_id {
        Some(app) => {
            let app = apps::get_any_tenant(&store.db, app).await?;
            if owner.as_ref().is_some_and(|t| *t != app.tenant_id) {
                metrics::counter!("portcullis_security_events_total", "kind" => "tenant_inbound_refused")
                    .increment(1);
                tracing::warn!(
                    target: "security",
                    connection = %m.connection_id,
                    app = %app.id,
                    "inbound message for another tenant's app on a tenant's own connection; not stored"
                );
                return Ok(None);
            }
            app
        }
        None => {
            let mut candidates = apps::find_by_sender(&store.db, owner.as_ref(), &m.to).await?;
            match candidates.len() {
                1 => candidates.remove(0),
                0 if owner.is_some() => {
                    metrics::counter!("portcullis_security_events_total", "kind" => "tenant_inbound_refused")
                        .increment(1);
                    tracing::warn!(
                        target: "security",
                        connection = %m.connection_id,
                        to = %portcullis_domain::mask_phone(&m.to),
                        "inbound message to a number no app of the connection's tenant sends from; not stored"
                    );
                    return Ok(None);
                }
                _ => {
                    tracing::error!(
                        connection = %m.connection_id,
                        to = %portcullis_domain::mask_phone(&m.to),
                        matches = candidates.len(),
                        "inbound message does not name exactly one app's sender; not stored"
                    );
                    return Ok(None);
                }
            }
        }
    };
    Ok(Some((
        InboundMessage {
            id: InboundId::new(),
            tenant_id: app.tenant_id.clone(),
            app_id: app.id.clone(),
            connection_id: m.connection_id.clone(),
            provider_message_id: m.provider_message_id.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            channel: m.channel,
            body: m.body.clone(),
            received_at: m.at,
        },
        app,
    )))
}
