//! The outbox relay: takes committed events off the outbox, creates a delivery for every
//! enabled endpoint that wants each one, and tells the realtime hubs, all in one
//! transaction per batch. It reads only the events' heads (app, kind): their data is
//! loaded when a delivery or a subscriber renders them. The deliveries it creates are
//! leased to this process and handed straight to the delivery worker, except those for
//! endpoints whose queue in the worker is full: those are created unleased and wait in the
//! database to be claimed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use portcullis_domain::{AppId, DeliveryId};
use portcullis_store::webhooks::{DeliveryJob, NewDelivery};
use portcullis_store::{Backend, StoreError, now_ms, on_tx};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::worker::Leased;

const BATCH: u32 = 500;
/// The PostgreSQL channel that carries `app:event` ids between instances.
pub(crate) const CHANNEL: &str = "portcullis_events";

pub(crate) async fn run(
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    jobs: mpsc::Sender<Leased>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            // Another instance's events, and any left behind by a crash, are found by the poll.
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = stop.cancelled() => return,
        }
        loop {
            match relay_once(&shared, &jobs).await {
                Ok(n) => {
                    failures = 0;
                    if n < BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, failures, "relaying events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                    break;
                }
            }
        }
    }
}

async fn relay_once(shared: &Shared, jobs: &mpsc::Sender<Leased>) -> Result<usize, StoreError> {
    let store = &shared.store;
    let mut tx = store.db.begin_shared().await?;
    let events = store.take_outbox(&mut tx, BATCH).await?;
    if events.is_empty() {
        tx.unchanged().await?;
        return Ok(0);
    }
    let mut apps: Vec<&str> = events.iter().map(|e| e.app_id.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let endpoints = store.enabled_endpoints(&apps).await?;
    let mut deliveries = Vec::new();
    for e in &events {
        for ep in endpoints
            .iter()
            .filter(|ep| ep.app_id == e.app_id && ep.wants(e.kind))
        {
            deliveries.push(NewDelivery {
                id: DeliveryId::new(),
                tenant_id: e.tenant_id.clone(),
                app_id: e.app_id.clone(),
                endpoint_id: ep.id.clone(),
                event_id: e.id.as_str().to_owned(),
                event_type: e.kind,
            });
        }
    }
    // The worker's queues take what fits; the rest waits here, unleased, for the claim.
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    for d in &deliveries {
        *wanted.entry(d.endpoint_id.as_str()).or_default() += 1;
    }
    let wanted: Vec<(&str, usize)> = wanted.into_iter().collect();
    let mut room: HashMap<String, usize> = shared
        .lanes
        .room_for(&wanted)
        .into_iter()
        .map(|(e, n)| (e.to_owned(), n))
        .collect();
    let (deliveries, waiting): (Vec<NewDelivery>, Vec<NewDelivery>) = deliveries
        .into_iter()
        .partition(|d| match room.get_mut(d.endpoint_id.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        });
    let now = now_ms();
    let lease_until = now + shared.config.lease.as_millis() as i64;
    store
        .insert_deliveries(&mut tx, &deliveries, now, Some(lease_until))
        .await?;
    store
        .insert_deliveries(&mut tx, &waiting, now, None)
        .await?;
    if store.db.backend() == Backend::Postgres {
        // Delivered to every listening instance when (and only if) this commits.
        let ids: Vec<String> = events
            .iter()
            .map(|e| format!("{}:{}", e.app_id.as_str(), e.id.as_str()))
            .collect();
        for payload in notify_payloads(&ids) {
            on_tx!(&mut *tx, |c| sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
        }
    }
    tx.commit().await?;
    metrics::counter!("portcullis_events_total").increment(events.len() as u64);
    if store.db.backend() == Backend::Sqlite
        && let Err(e) = shared
            .hub
            .publish_ids(events.iter().map(|e| (&e.app_id, e.id.as_str())))
            .await
    {
        tracing::warn!(error = %e, "publishing events to realtime subscribers failed");
    }
    if !deliveries.is_empty() {
        let leased = deliveries
            .into_iter()
            .map(|d| DeliveryJob {
                id: d.id,
                app_id: d.app_id,
                endpoint_id: d.endpoint_id,
                event_id: d.event_id,
                attempt: 1,
            })
            .collect();
        // If the worker is gone (shutting down) the leases run out and a worker claims them.
        let _ = jobs
            .send(Leased {
                jobs: leased,
                lease_until,
            })
            .await;
    }
    Ok(events.len())
}

/// Feeds the hub with the events every instance's relay announces (PostgreSQL).
pub(crate) async fn listen(shared: Arc<Shared>, stop: CancellationToken) {
    let portcullis_store::Pool::Postgres(pool) = shared.store.db.read() else {
        return;
    };
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "realtime listener cannot connect; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "realtime listener cannot LISTEN; retrying");
            continue;
        }
        loop {
            let n = tokio::select! {
                n = listener.recv() => n,
                _ = stop.cancelled() => return,
            };
            match n {
                Ok(n) => {
                    let ids: Vec<(AppId, &str)> = n
                        .payload()
                        .split(',')
                        .filter_map(|p| p.split_once(':'))
                        .map(|(a, e)| (AppId::from_trusted(a.to_owned()), e))
                        .collect();
                    if let Err(e) = shared
                        .hub
                        .publish_ids(ids.iter().map(|(a, e)| (a, *e)))
                        .await
                    {
                        tracing::warn!(error = %e, "publishing events to realtime subscribers failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "realtime listener lost its connection; reconnecting");
                    break;
                }
            }
        }
    }
}

/// NOTIFY payloads must stay under 8000 bytes (PostgreSQL refuses the whole transaction
/// otherwise): the ids, comma-separated, cut by size rather than by count.
fn notify_payloads(ids: &[String]) -> Vec<String> {
    const MAX: usize = 7900;
    let mut out = Vec::new();
    let mut current = String::new();
    for id in ids {
        if !current.is_empty() && current.len() + 1 + id.len() > MAX {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(id);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn notify_payloads_stay_under_the_limit() {
        // Event ids as the relay writes them: app id, colon, event id (57 bytes).
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("app_00VbpYDtIy3vjTENb3to4zoT:evt_00VbpYDtIy3vjTENb3{i:06}"))
            .collect();
        let payloads = super::notify_payloads(&ids);
        assert!(payloads.iter().all(|p| p.len() < 8000));
        assert_eq!(payloads.join(","), ids.join(","));
        assert!(super::notify_payloads(&[]).is_empty());
    }
}
