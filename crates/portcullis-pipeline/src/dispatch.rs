//! The send workers.
//!
//! Each round: claim due send jobs under a lease and move their messages to `sending` (one
//! transaction), hand the messages to their providers concurrently, then record every
//! outcome and settle every job (a second transaction). A crash between the two leaves the
//! jobs leased; when the lease runs out another worker sends them again — the only way a
//! message can reach a provider twice, bounded by what was in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_domain::{AppId, MessageId};
use portcullis_providers::{OutboundMessage, Provider, ProviderError};
use portcullis_queue::ClaimedJob;
use portcullis_store::messages::{MessageRecord, SendOutcome};
use portcullis_store::policy::NewPolicyEvent;
use portcullis_store::{Store, StoreError, now_ms};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::routing::{NoRoute, Routes};
use crate::{PipelineConfig, SEND_QUEUE};

pub(crate) struct Worker {
    pub store: Store,
    pub routes: Arc<Routes>,
    pub config: PipelineConfig,
    pub work: Arc<Notify>,
    /// Woken when a commit wrote events for apps.
    pub events: Arc<Notify>,
    pub shutdown: CancellationToken,
    pub owner: String,
}

pub(crate) async fn run(w: Worker) {
    let mut failures = 0u32;
    while !w.shutdown.is_cancelled() {
        // Register interest before looking, so a notify between the look and the wait
        // is not missed.
        let notified = w.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match round(&w).await {
            Ok(n) if n > 0 => {
                failures = 0;
                continue;
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "send worker round failed");
            }
        }
        let idle = idle_wait(&w, failures).await;
        tokio::select! {
            _ = w.shutdown.cancelled() => break,
            _ = &mut notified => {}
            _ = tokio::time::sleep(idle) => {}
        }
    }
}

/// How long to sleep when there is nothing to do: until the next scheduled job, at most
/// the poll interval (other processes may enqueue), longer after repeated errors.
async fn idle_wait(w: &Worker, failures: u32) -> Duration {
    if failures > 0 {
        return Duration::from_millis(100 * u64::from(failures.min(50)));
    }
    match portcullis_queue::next_due(&w.store.db, SEND_QUEUE).await {
        Ok(Some(due)) => {
            let wait = (due - now_ms()).clamp(1, w.config.poll_interval.as_millis() as i64);
            Duration::from_millis(wait as u64)
        }
        _ => w.config.poll_interval,
    }
}

/// One claim–send–record round. Returns how many jobs it handled.
async fn round(w: &Worker) -> Result<usize, StoreError> {
    let now = now_ms();
    let mut tx = w.store.db.begin().await?;
    let jobs = portcullis_queue::claim(
        &mut tx,
        SEND_QUEUE,
        w.config.dispatch_batch,
        w.config.lease,
        &w.owner,
        now,
    )
    .await?;
    if jobs.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let ids: Vec<MessageId> = jobs
        .iter()
        .map(|j| MessageId::from_trusted(j.payload.clone()))
        .collect();
    let messages = w.store.begin_sending(&mut tx, &ids, now).await?;
    tx.commit().await?;
    for j in &jobs {
        // How long due work waited for a worker.
        metrics::histogram!("portcullis_job_latency_seconds")
            .record((now - j.run_at).max(0) as f64 / 1000.0);
    }

    // The guard's last word: a recipient who opted out after the message was accepted
    // gets no non-essential message.
    let suppressed = suppressed_now(&w.store, &messages).await?;
    let mut policy_events = Vec::new();
    let mut by_id: HashMap<MessageId, MessageRecord> =
        messages.into_iter().map(|m| (m.id.clone(), m)).collect();
    let mut providers: HashMap<(AppId, bool), Result<Arc<dyn Provider>, NoRoute>> = HashMap::new();
    let mut sends = JoinSet::new();
    let mut outcomes: Vec<(ClaimedJob, Option<SendOutcome>)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id = MessageId::from_trusted(job.payload.clone());
        let Some(msg) = by_id.remove(&id) else {
            // Canceled (or otherwise settled) since it was queued: the job is done.
            outcomes.push((job, None));
            continue;
        };
        if suppressed.contains(&msg.id) {
            let reason = "the recipient opted out after the message was accepted; only essential messages are sent";
            policy_events.push(NewPolicyEvent {
                tenant_id: msg.tenant_id.clone(),
                app_id: msg.app_id.clone(),
                message_id: Some(msg.id.clone()),
                phone: Some(msg.to.clone()),
                kind: "refused".to_owned(),
                code: "recipient_suppressed".to_owned(),
                reason: reason.to_owned(),
            });
            outcomes.push((
                job,
                Some(SendOutcome::Failed {
                    id,
                    connection_id: None,
                    code: "recipient_suppressed".to_owned(),
                    detail: reason.to_owned(),
                }),
            ));
            continue;
        }
        if msg.expires_at.is_some_and(|e| e <= now) {
            outcomes.push((job, Some(SendOutcome::Expired { id })));
            continue;
        }
        let key = (msg.app_id.clone(), msg.test_mode);
        if !providers.contains_key(&key) {
            let p = w.routes.resolve(&msg.app_id, msg.test_mode).await?;
            providers.insert(key.clone(), p);
        }
        match &providers[&key] {
            Err(NoRoute::Unrouted) => outcomes.push((
                job,
                Some(SendOutcome::Failed {
                    id,
                    connection_id: None,
                    code: "no_route".to_owned(),
                    detail: "the app has no provider route".to_owned(),
                }),
            )),
            Ok(provider) => {
                let provider = provider.clone();
                sends.spawn(async move {
                    let outbound = OutboundMessage {
                        id: msg.id.clone(),
                        to: msg.to,
                        from: msg.from,
                        channel: msg.channel,
                        body: msg.body,
                        encoding: msg.encoding,
                        segments: msg.segments,
                    };
                    let started = Instant::now();
                    let result = provider.send(&outbound).await;
                    metrics::histogram!("portcullis_provider_send_seconds")
                        .record(started.elapsed());
                    (job, provider.connection_id().clone(), id, result)
                });
            }
        }
    }
    while let Some(joined) = sends.join_next().await {
        let Ok((job, connection_id, id, result)) = joined else {
            // A provider panicked; its job's lease will run out and it will be retried.
            tracing::error!("provider send task panicked");
            continue;
        };
        let outcome = match result {
            Ok(accepted) => SendOutcome::Sent {
                id,
                connection_id,
                provider_message_id: accepted.provider_message_id,
            },
            Err(ProviderError::Permanent { code, detail }) => SendOutcome::Failed {
                id,
                connection_id: Some(connection_id),
                code,
                detail,
            },
            Err(ProviderError::Retryable { detail }) if job.is_last_attempt() => {
                SendOutcome::Failed {
                    id,
                    connection_id: Some(connection_id),
                    code: "retries_exhausted".to_owned(),
                    detail,
                }
            }
            Err(ProviderError::Retryable { detail }) => SendOutcome::Retry {
                id,
                connection_id: Some(connection_id),
                detail,
            },
        };
        outcomes.push((job, Some(outcome)));
    }
    let handled = outcomes.len();
    settle(w, outcomes, &policy_events).await?;
    Ok(handled)
}

/// The non-essential messages among `messages` whose recipient is suppressed now.
async fn suppressed_now(
    store: &Store,
    messages: &[MessageRecord],
) -> Result<HashSet<MessageId>, StoreError> {
    let mut by_app: HashMap<&AppId, Vec<&MessageRecord>> = HashMap::new();
    for m in messages.iter().filter(|m| !m.purpose.is_essential()) {
        by_app.entry(&m.app_id).or_default().push(m);
    }
    let mut out = HashSet::new();
    for (app, msgs) in by_app {
        let phones: Vec<&portcullis_domain::E164> = msgs.iter().map(|m| &m.to).collect();
        let hit: HashSet<String> = store
            .suppressed_among(app, &phones)
            .await?
            .into_iter()
            .collect();
        for m in msgs {
            if hit.contains(&store.phone_index(&m.to)) {
                out.insert(m.id.clone());
            }
        }
    }
    Ok(out)
}

/// Records outcomes and settles their jobs in one transaction.
async fn settle(
    w: &Worker,
    outcomes: Vec<(ClaimedJob, Option<SendOutcome>)>,
    policy_events: &[NewPolicyEvent],
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut tx = w.store.db.begin().await?;
    let recorded: Vec<SendOutcome> = outcomes.iter().filter_map(|(_, o)| o.clone()).collect();
    let changes = w.store.record_outcomes(&mut tx, &recorded, now).await?;
    let mut done = Vec::new();
    for (job, outcome) in &outcomes {
        match outcome {
            Some(SendOutcome::Retry { detail, .. }) => {
                let delay = portcullis_queue::backoff(
                    job.attempt,
                    w.config.backoff_base,
                    w.config.backoff_max,
                );
                portcullis_queue::retry(&mut tx, job, now + delay.as_millis() as i64, detail)
                    .await?;
            }
            Some(SendOutcome::Failed { code, detail, .. }) if code == "retries_exhausted" => {
                portcullis_queue::bury(&mut tx, job, detail).await?;
            }
            _ => done.push(job),
        }
    }
    portcullis_queue::complete(&mut tx, &done).await?;
    w.store.insert_policy_events(&mut tx, policy_events).await?;
    tx.commit().await?;
    crate::count_changes(&changes);
    if !changes.is_empty() {
        w.events.notify_one();
    }
    Ok(())
}
