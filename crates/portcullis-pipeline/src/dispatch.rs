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

use portcullis_domain::policy::{
    self, Counters, Decision, Inputs, Outgoing, PolicyCode, Stage, Standing,
};
use portcullis_domain::quiet_hours::QuietRules;
use portcullis_domain::risk::RiskPrefixes;
use portcullis_domain::{AppId, Channel, ConnectionId, MessageId, MessageStatus, TenantId};
use portcullis_providers::{Accepted, OutboundMessage, Provider, ProviderError, SentPart};
use portcullis_queue::ClaimedJob;
use portcullis_store::guard::{Counter, CounterKeys, add_usage};
use portcullis_store::messages::{MessageRecord, SendOutcome};
use portcullis_store::policy::NewPolicyEvent;
use portcullis_store::tenants::TenantSettings;
use portcullis_store::{ReadVia, Store, StoreError, Tx, apps, now_ms};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::board::Board;
use crate::control::{Control, PAUSED};
use crate::health::Observed;
use crate::routing::Routes;
use crate::{PipelineConfig, SEND_QUEUE};

/// The tenant and app of each message of a round.
pub(crate) type Owners = HashMap<MessageId, (TenantId, AppId)>;

pub(crate) struct Worker {
    pub store: Store,
    pub board: Arc<Board>,
    pub control: Arc<Control>,
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
    let now = now_ms();
    match portcullis_queue::next_due(&w.store.db, SEND_QUEUE, now).await {
        Ok(Some(due)) => {
            let wait = (due - now).clamp(1, w.config.poll_interval.as_millis() as i64);
            Duration::from_millis(wait as u64)
        }
        _ => w.config.poll_interval,
    }
}

/// One claim–send–record round. Returns how many jobs it handled.
async fn round(w: &Worker) -> Result<usize, StoreError> {
    let now = now_ms();
    let mut tx = w.store.db.begin_shared().await?;
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
        tx.unchanged().await?;
        return Ok(0);
    }
    // A queue-stopping pause: the paused apps' jobs go back untouched (no attempt
    // counted, no status change) before their messages are claimed for sending.
    let (jobs, waiting) = hold_back_paused(w, &mut tx, jobs).await?;
    let ids: Vec<MessageId> = jobs
        .iter()
        .map(|j| MessageId::from_trusted(j.payload.clone()))
        .collect();
    let messages = w.store.begin_sending(&mut tx, &ids, now).await?;
    // Parts of long messages that an attempt which broke off half-way already handed over.
    let multipart: Vec<&str> = messages
        .iter()
        .filter(|m| m.segments > 1)
        .map(|m| m.id.as_str())
        .collect();
    let mut parts_sent = if multipart.is_empty() {
        HashMap::new()
    } else {
        w.store.parts_sent(&mut tx, &multipart).await?
    };
    for job in &waiting {
        portcullis_queue::defer(
            &mut tx,
            job,
            now + policy::PAUSED_RECHECK_SECONDS * 1000,
            Some(PAUSED),
        )
        .await?;
    }
    tx.commit().await?;
    if jobs.is_empty() {
        return Ok(waiting.len());
    }
    for j in &jobs {
        // How long due work waited for a worker.
        metrics::histogram!("portcullis_job_latency_seconds")
            .record((now - j.run_at).max(0) as f64 / 1000.0);
    }

    // The guard's last word, just before the provider: what may have changed since the
    // message was accepted (an opt-out, a withdrawn consent, a pause, the clock).
    let verdicts = last_check(w, &messages, now).await?;
    let owners: Owners = messages
        .iter()
        .map(|m| (m.id.clone(), (m.tenant_id.clone(), m.app_id.clone())))
        .collect();
    let mut policy_events = Vec::new();
    let mut by_id: HashMap<MessageId, MessageRecord> =
        messages.into_iter().map(|m| (m.id.clone(), m)).collect();
    type RouteKey = (AppId, bool, Channel, Option<String>);
    let mut routes: HashMap<RouteKey, Arc<Vec<Arc<dyn Provider>>>> = HashMap::new();
    // How many messages per (connection, sender) this round already sent back to wait
    // for pacing, so they come back one interval apart instead of all at once.
    let mut paced_ahead: HashMap<(ConnectionId, String), u32> = HashMap::new();
    // Outcomes that are history only (failed-over attempts, parts sent before a failure),
    // recorded before the messages' own outcomes.
    let mut interim: Vec<SendOutcome> = Vec::new();
    let mut retry_after: HashMap<MessageId, Duration> = HashMap::new();
    let mut sends = JoinSet::new();
    let mut outcomes: Vec<(ClaimedJob, Option<SendOutcome>)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id = MessageId::from_trusted(job.payload.clone());
        let Some(msg) = by_id.remove(&id) else {
            // Canceled (or otherwise settled) since it was queued: the job is done.
            outcomes.push((job, None));
            continue;
        };
        if msg.expires_at.is_some_and(|e| e <= now) {
            outcomes.push((job, Some(SendOutcome::Expired { id })));
            continue;
        }
        match verdicts.get(&msg.id) {
            Some(Decision::Refuse { code, reason }) => {
                policy_events.push(event(&msg, "refused", code.as_str(), reason));
                outcomes.push((
                    job,
                    Some(SendOutcome::Failed {
                        id,
                        connection_id: None,
                        code: code.as_str().to_owned(),
                        detail: format!("{reason} (checked again before sending)"),
                    }),
                ));
                continue;
            }
            Some(Decision::Defer {
                until,
                code,
                reason,
            }) => {
                let quiet = *code == PolicyCode::QuietHours;
                if quiet {
                    policy_events.push(event(&msg, "deferred", code.as_str(), reason));
                }
                outcomes.push((
                    job,
                    Some(SendOutcome::Deferred {
                        id,
                        status: if quiet {
                            MessageStatus::Scheduled
                        } else {
                            MessageStatus::Queued
                        },
                        until: until.as_millisecond(),
                        detail: reason.clone(),
                    }),
                ));
                continue;
            }
            _ => {}
        }
        let country = msg.to.region();
        let key = (
            msg.app_id.clone(),
            msg.test_mode,
            msg.channel,
            country.clone(),
        );
        if !routes.contains_key(&key) {
            let candidates = w
                .routes
                .candidates(
                    &msg.tenant_id,
                    &msg.app_id,
                    msg.test_mode,
                    msg.channel,
                    country.as_deref(),
                )
                .await?;
            routes.insert(key.clone(), Arc::new(candidates));
        }
        let candidates = routes[&key].clone();
        if candidates.is_empty() {
            outcomes.push((
                job,
                Some(SendOutcome::Failed {
                    id,
                    connection_id: None,
                    code: "no_route".to_owned(),
                    detail: format!(
                        "no connection of the app's route carries {} to {}",
                        msg.channel,
                        country.as_deref().unwrap_or("this destination")
                    ),
                }),
            ));
            continue;
        }
        let sender = msg.from.clone().unwrap_or_default();
        match usable(
            &w.routes,
            &w.board,
            &candidates,
            0,
            &sender,
            Some(&mut paced_ahead),
            Instant::now(),
        ) {
            Err(wait) => outcomes.push((
                job,
                Some(SendOutcome::Deferred {
                    id,
                    status: MessageStatus::Queued,
                    until: now + wait.after.as_millis() as i64,
                    detail: wait.reason,
                }),
            )),
            Ok(first) => {
                let parts_sent = parts_sent.remove(msg.id.as_str()).unwrap_or_default();
                let board = w.board.clone();
                let routes = w.routes.clone();
                sends.spawn(async move {
                    let outbound = OutboundMessage {
                        id: msg.id.clone(),
                        to: msg.to,
                        from: msg.from,
                        channel: msg.channel,
                        body: msg.body,
                        encoding: msg.encoding,
                        segments: msg.segments,
                        template: msg.template,
                        parts_sent,
                    };
                    let sent = send_on_route(&routes, &board, &candidates, first, &outbound).await;
                    (job, id, sent)
                });
            }
        }
    }
    while let Some(joined) = sends.join_next().await {
        let Ok((job, id, sent)) = joined else {
            // A provider panicked; its job's lease will run out and it will be retried.
            tracing::error!("provider send task panicked");
            continue;
        };
        for (connection_id, detail) in sent.failed_over {
            interim.push(SendOutcome::FailedOver {
                id: id.clone(),
                connection_id,
                detail,
            });
        }
        let connection_id = sent.connection_id;
        if !sent.parts_before_failure.is_empty() {
            interim.push(SendOutcome::PartsSent {
                id: id.clone(),
                connection_id: connection_id.clone(),
                parts: part_refs(sent.parts_before_failure),
            });
        }
        let outcome = match sent.result {
            Ok(accepted) => SendOutcome::Sent {
                id,
                connection_id,
                provider_message_id: accepted.provider_message_id,
                parts: part_refs(accepted.parts),
            },
            Err(ProviderError::Permanent { code, detail }) => SendOutcome::Failed {
                id,
                connection_id: Some(connection_id),
                code,
                detail,
            },
            // The provider is working and asks for patience: the message waits without
            // spending an attempt, and the connection is slowed (see `health`).
            Err(e @ ProviderError::Throttled { .. }) => SendOutcome::Deferred {
                id,
                status: MessageStatus::Queued,
                until: now_ms()
                    + e.retry_after()
                        .unwrap_or_default()
                        .max(THROTTLE_WAIT)
                        .as_millis() as i64,
                detail: format!("{e} (connection {connection_id})"),
            },
            Err(e) if job.is_last_attempt() => SendOutcome::Failed {
                id,
                connection_id: Some(connection_id),
                code: "retries_exhausted".to_owned(),
                detail: e.to_string(),
            },
            Err(e) => {
                if let Some(after) = e.retry_after() {
                    retry_after.insert(id.clone(), after);
                }
                SendOutcome::Retry {
                    id,
                    connection_id: Some(connection_id),
                    detail: e.to_string(),
                }
            }
        };
        outcomes.push((job, Some(outcome)));
    }
    let handled = outcomes.len();
    settle(w, outcomes, &interim, &retry_after, &policy_events, &owners).await?;
    Ok(handled)
}

/// The shortest a throttled message waits before it is tried again.
const THROTTLE_WAIT: Duration = Duration::from_secs(1);

/// Why no connection of a route can take a message now, and how long until one may.
struct Wait {
    after: Duration,
    reason: String,
}

/// The first connection of `candidates`, from `from` on, that can take a message from
/// `sender` now: not paused, its circuit not open, not throttled, and (when it paces
/// senders) with a slot for this sender soon. `ahead` counts, per connection and sender,
/// the messages of this round already sent back to wait for pacing; `None` while failing
/// over inside a send, where a paced connection is simply passed over.
fn usable(
    routes: &Routes,
    board: &Board,
    candidates: &[Arc<dyn Provider>],
    from: usize,
    sender: &str,
    mut ahead: Option<&mut HashMap<(ConnectionId, String), u32>>,
    now: Instant,
) -> Result<(usize, Duration), Wait> {
    let mut soonest: Option<Wait> = None;
    let mut note = |after: Duration, reason: String| {
        if soonest.as_ref().is_none_or(|s| after < s.after) {
            soonest = Some(Wait { after, reason });
        }
    };
    for (i, p) in candidates.iter().enumerate().skip(from) {
        let conn = p.connection_id();
        if let Some(reason) = board.connection_pause(conn) {
            note(
                Duration::from_secs(policy::PAUSED_RECHECK_SECONDS as u64),
                format!("connection {conn} paused: {reason}"),
            );
            continue;
        }
        // A connection-wide cap (SMPP `tps`) and a per-sender one (`sender_mps`), each a
        // pacing slot; a message waits for the later of the two.
        let limits = [
            p.connection_rate()
                .map(|r| (r, CONNECTION_WIDE, "per connection")),
            p.sender_rate().map(|r| (r, sender, "per sender")),
        ];
        let mut wait = Duration::ZERO;
        let mut skip = false;
        for (rate, who, scope) in limits.into_iter().flatten() {
            let key = (conn.clone(), who.to_owned());
            let queued = ahead
                .as_ref()
                .and_then(|a| a.get(&key))
                .copied()
                .unwrap_or(0);
            match routes.pacer.reserve(conn, who, rate, queued, now) {
                Ok(w) => wait = wait.max(w),
                Err(at) => match ahead.as_mut() {
                    // Pacing queues: the message waits for its turn rather than moving to
                    // a connection it was not meant for.
                    Some(a) => {
                        *a.entry(key).or_insert(0) += 1;
                        return Err(Wait {
                            after: at.saturating_duration_since(now),
                            reason: format!("paced to {rate} messages/s {scope} on {conn}"),
                        });
                    }
                    None => {
                        skip = true;
                        break;
                    }
                },
            }
        }
        if skip {
            continue;
        }
        match routes.health.admit(conn, now) {
            Ok(()) => return Ok((i, wait)),
            Err(u) => note(
                u.until.saturating_duration_since(now),
                format!("connection {conn}: {}", u.reason),
            ),
        }
    }
    Err(soonest.unwrap_or(Wait {
        after: Duration::from_secs(1),
        reason: "no connection of the route can take the message".to_owned(),
    }))
}

/// The pacing key of a connection-wide cap: no sender id is empty.
const CONNECTION_WIDE: &str = "";

/// (part, provider reference) pairs, as the store records them.
fn part_refs(parts: Vec<SentPart>) -> Vec<(u32, String)> {
    parts
        .into_iter()
        .map(|p| (p.part, p.provider_message_id))
        .collect()
}

/// What sending one message along its route came to.
struct RouteSend {
    connection_id: ConnectionId,
    result: Result<Accepted, ProviderError>,
    /// Parts of the message the connection accepted before the failure in `result`.
    parts_before_failure: Vec<SentPart>,
    /// Connections that failed before the last one was tried, and why.
    failed_over: Vec<(ConnectionId, String)>,
}

/// Sends on `candidates[first]` (after its pacing wait), and when that connection is
/// failing or throttled moves on to the next usable one of the route, in the same round:
/// failover costs the message no attempt and no backoff.
async fn send_on_route(
    routes: &Routes,
    board: &Board,
    candidates: &[Arc<dyn Provider>],
    first: (usize, Duration),
    msg: &OutboundMessage,
) -> RouteSend {
    let sender = msg.from.clone().unwrap_or_default();
    let (mut i, mut wait) = first;
    let mut failed_over = Vec::new();
    loop {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let provider = &candidates[i];
        let conn = provider.connection_id().clone();
        let started = Instant::now();
        let (result, parts_before_failure) = match provider.send(msg).await {
            Ok(accepted) => (Ok(accepted), Vec::new()),
            Err(e) => {
                let (e, parts) = e.into_parts();
                (Err(e), parts)
            }
        };
        metrics::histogram!("portcullis_provider_send_seconds").record(started.elapsed());
        let observed = match &result {
            Ok(_) | Err(ProviderError::Permanent { .. }) => Observed::Answered,
            Err(ProviderError::Throttled { retry_after, .. }) => Observed::Throttled(*retry_after),
            // (`PartlySent` was unwrapped above.)
            Err(ProviderError::Unavailable { .. } | ProviderError::PartlySent { .. }) => {
                Observed::Failed
            }
        };
        routes.health.observe(&conn, observed, Instant::now());
        // Done on success, on a refusal, and once part of the message went out on this
        // connection (the rest is retried later, under the same concatenation reference).
        let Err(e) = &result else {
            return RouteSend {
                connection_id: conn,
                result,
                parts_before_failure,
                failed_over,
            };
        };
        if !e.is_retryable() || !parts_before_failure.is_empty() {
            return RouteSend {
                connection_id: conn,
                result,
                parts_before_failure,
                failed_over,
            };
        }
        match usable(
            routes,
            board,
            candidates,
            i + 1,
            &sender,
            None,
            Instant::now(),
        ) {
            Ok((next, next_wait)) => {
                tracing::info!(connection = %conn, next = %candidates[next].connection_id(), message = %msg.id, "send failed; failing over");
                metrics::counter!("portcullis_failovers_total", "connection" => conn.as_str().to_owned()).increment(1);
                failed_over.push((conn, e.to_string()));
                (i, wait) = (next, next_wait);
            }
            Err(_) => {
                return RouteSend {
                    connection_id: conn,
                    result,
                    parts_before_failure,
                    failed_over,
                };
            }
        }
    }
}

/// Splits claimed jobs into those to send and those whose app is under a queue-stopping
/// pause. Costs a read only while such a pause is in force somewhere.
async fn hold_back_paused(
    w: &Worker,
    tx: &mut Tx,
    jobs: Vec<ClaimedJob>,
) -> Result<(Vec<ClaimedJob>, Vec<ClaimedJob>), StoreError> {
    if !w.board.queue_stopped_anywhere() {
        return Ok((jobs, Vec::new()));
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.payload.as_str()).collect();
    let stopped: HashSet<String> = w
        .store
        .message_owners(tx, &ids)
        .await?
        .into_iter()
        .filter(|(_, tenant, app)| w.board.pause_for(tenant, app).is_some_and(|p| p.stop_queue))
        .map(|(id, _, _)| id.as_str().to_owned())
        .collect();
    Ok(jobs
        .into_iter()
        .partition(|j| !stopped.contains(&j.payload)))
}

/// The guard's dispatch-stage decision for each message that is not simply allowed.
async fn last_check(
    w: &Worker,
    messages: &[MessageRecord],
    now: i64,
) -> Result<HashMap<MessageId, Decision>, StoreError> {
    let mut by_app: HashMap<&AppId, Vec<&MessageRecord>> = HashMap::new();
    for m in messages {
        by_app.entry(&m.app_id).or_default().push(m);
    }
    let now_ts = jiff::Timestamp::from_millisecond(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let mut out = HashMap::new();
    for (app_id, msgs) in by_app {
        let app = match apps::get_any_tenant(&w.store.db, app_id).await {
            Ok(app) => app,
            // Deleted apps do not exist; their messages go out as accepted.
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        let tenant = w.board.tenant_settings(&app.tenant_id);
        let policy = app.policy(&tenant);
        let pause = w.board.pause_for(&app.tenant_id, &app.id);
        // Standing matters only for non-essential messages: essential ones pass
        // suppressions and need no consent. Their blind indexes are worked out once.
        let indexes: Vec<Option<String>> = msgs
            .iter()
            .map(|m| (!m.purpose.is_essential()).then(|| w.store.phone_index(&m.to)))
            .collect();
        // The same read as acceptance's, without counts or counters.
        let recipients: Vec<(&str, bool)> = indexes
            .iter()
            .flatten()
            .map(|ix| (ix.as_str(), false))
            .collect();
        let standings = if recipients.is_empty() {
            HashMap::new()
        } else {
            w.store
                .guard_snapshots(
                    ReadVia::Pool(w.store.db.read()),
                    app_id,
                    &recipients,
                    0,
                    &[],
                )
                .await?
                .recipients
        };
        let counters = Counters::default();
        for (m, index) in msgs.into_iter().zip(&indexes) {
            let standing = match index {
                None => Standing::default(),
                Some(ix) => standings
                    .get(ix)
                    .map(|s| s.standing(m.channel))
                    .unwrap_or_default(),
            };
            let outgoing = Outgoing {
                purpose: m.purpose,
                channel: m.channel,
                to: &m.to,
                text: &m.body,
                segments: m.segments,
                send_at: None,
            };
            let d = policy::decide(
                &outgoing,
                &Inputs {
                    policy: &policy,
                    standing: &standing,
                    counters: &counters,
                    pause: pause.as_ref(),
                    rules: QuietRules::builtin(),
                    risk: RiskPrefixes::builtin(),
                    now: now_ts,
                },
                Stage::Dispatch,
            );
            if !matches!(d, Decision::Allow { .. }) {
                out.insert(m.id.clone(), d);
            }
        }
    }
    Ok(out)
}

fn event(m: &MessageRecord, kind: &str, code: &str, reason: &str) -> NewPolicyEvent {
    NewPolicyEvent {
        tenant_id: m.tenant_id.clone(),
        app_id: m.app_id.clone(),
        message_id: Some(m.id.clone()),
        phone: Some(m.to.clone()),
        kind: kind.to_owned(),
        code: code.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Records outcomes and settles their jobs in one transaction.
async fn settle(
    w: &Worker,
    outcomes: Vec<(ClaimedJob, Option<SendOutcome>)>,
    interim: &[SendOutcome],
    retry_after: &HashMap<MessageId, Duration>,
    policy_events: &[NewPolicyEvent],
    owners: &Owners,
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut tx = w.store.db.begin_shared().await?;
    // The interim outcomes first, so the history reads in the order things happened.
    let recorded: Vec<SendOutcome> = interim
        .iter()
        .cloned()
        .chain(outcomes.iter().filter_map(|(_, o)| o.clone()))
        .collect();
    let changes = w.store.record_outcomes(&mut tx, &recorded, now).await?;
    let mut done = Vec::new();
    for (job, outcome) in &outcomes {
        match outcome {
            Some(SendOutcome::Retry { id, detail, .. }) => {
                // The provider's own `Retry-After` when it is longer than our backoff.
                let delay = portcullis_queue::backoff(
                    job.attempt,
                    w.config.backoff_base,
                    w.config.backoff_max,
                )
                .max(retry_after.get(id).copied().unwrap_or_default());
                portcullis_queue::retry(&mut tx, job, now + delay.as_millis() as i64, detail)
                    .await?;
            }
            Some(SendOutcome::Failed { code, detail, .. }) if code == "retries_exhausted" => {
                portcullis_queue::bury(&mut tx, job, detail).await?;
            }
            Some(SendOutcome::Deferred { until, status, .. }) => {
                // Waiting for a pause to lift (not for quiet hours): a resume wakes it.
                let paused = (*status == MessageStatus::Queued).then_some(PAUSED);
                portcullis_queue::defer(&mut tx, job, *until, paused).await?;
            }
            _ => done.push(job),
        }
    }
    portcullis_queue::complete(&mut tx, &done).await?;
    w.store.insert_policy_events(&mut tx, policy_events).await?;
    // Sends refused for invalid numbers feed the guard's pumping signal.
    let invalid: Vec<Counter> = changes
        .iter()
        .filter(|c| c.error_code.as_deref() == Some(portcullis_providers::INVALID_NUMBER))
        .filter_map(|c| owners.get(&c.id))
        .map(|(tenant, app)| {
            CounterKeys::new(tenant, app, &TenantSettings::default(), now).invalid_hour
        })
        .collect();
    let deltas: Vec<(&Counter, i64)> = invalid.iter().map(|c| (c, 1)).collect();
    add_usage(&mut tx, &deltas).await?;
    tx.commit().await?;
    crate::count_policy_events(policy_events);
    crate::count_changes(&changes);
    w.control.observe_sends(&outcomes, owners, now).await;
    if !changes.is_empty() {
        w.events.notify_one();
    }
    Ok(())
}
