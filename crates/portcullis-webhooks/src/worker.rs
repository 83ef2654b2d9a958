//! The delivery worker: signs and posts deliveries, and records every attempt.
//!
//! Deliveries come leased, either straight from the relay or claimed when due (retries,
//! replays, anything a crashed process left). Attempts run concurrently up to
//! `max_in_flight`, and up to `per_endpoint_concurrency` per endpoint: a delivery to an
//! endpoint that already has a full queue is released for later without counting as an
//! attempt, so one slow receiver holds only its own share of the workers. Outcomes are
//! recorded in batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use portcullis_crypto::webhook::sign_all;
use portcullis_egress::EgressError;
use portcullis_store::webhooks::{AttemptOutcome, AttemptResult, DeliveryJob, SigningSecrets};
use portcullis_store::{StoreError, now_ms};
use rand::RngExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Shared, WebhookConfig, render::render_all};

/// How long a delivery waits for its endpoint's turn before it is released for later.
const GATE_WAIT: Duration = Duration::from_secs(5);
/// When a released delivery is due again.
const DEFER: i64 = 1_000;

struct Gate {
    permits: Semaphore,
    /// Attempts running or waiting for this endpoint.
    queued: AtomicUsize,
}

type Gates = Mutex<HashMap<String, Arc<Gate>>>;

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Vec<DeliveryJob>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let global = Arc::new(Semaphore::new(shared.config.max_in_flight.max(1)));
    let gates: Arc<Gates> = Arc::new(Mutex::new(HashMap::new()));
    let (results_tx, results_rx) = mpsc::channel(4096);
    let settler = tokio::spawn(settle(shared.clone(), results_rx));
    let inflight = TaskTracker::new();
    loop {
        let batch = tokio::select! {
            Some(batch) = jobs.recv() => batch,
            _ = wake.notified() => claim(&shared, &global, &wake).await,
            _ = tokio::time::sleep(shared.config.poll_interval) => claim(&shared, &global, &wake).await,
            _ = stop.cancelled() => break,
        };
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = dispatch(&shared, batch, &global, &gates, &results_tx, &inflight).await {
            // The leases run out and the deliveries are claimed again.
            tracing::error!(error = %e, "preparing webhook deliveries failed");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    inflight.close();
    inflight.wait().await;
    drop(results_tx);
    let _ = settler.await;
}

async fn claim(shared: &Shared, global: &Semaphore, wake: &Notify) -> Vec<DeliveryJob> {
    let limit = global.available_permits().min(500) as u32;
    if limit == 0 {
        return Vec::new();
    }
    let now = now_ms();
    match shared
        .store
        .claim_deliveries(now, now + shared.config.lease.as_millis() as i64, limit)
        .await
    {
        Ok(jobs) => {
            if jobs.len() as u32 == limit {
                // A backlog: come straight back for more.
                wake.notify_one();
            }
            jobs
        }
        Err(e) => {
            tracing::error!(error = %e, "claiming webhook deliveries failed");
            Vec::new()
        }
    }
}

struct Prepared {
    url: url::Url,
    body: Bytes,
    secrets: SigningSecrets,
    gate: Arc<Gate>,
}

async fn dispatch(
    shared: &Arc<Shared>,
    batch: Vec<DeliveryJob>,
    global: &Arc<Semaphore>,
    gates: &Gates,
    results: &mpsc::Sender<AttemptResult>,
    inflight: &TaskTracker,
) -> Result<(), StoreError> {
    let store = &shared.store;
    let mut event_ids: Vec<&str> = batch.iter().map(|j| j.event_id.as_str()).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    let events = store.events_by_ids(&event_ids).await?;
    let rendered = render_all(store, &events).await?;
    let mut endpoint_ids: Vec<&str> = batch.iter().map(|j| j.endpoint_id.as_str()).collect();
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    let endpoints = store.endpoints_by_ids(&endpoint_ids).await?;
    let mut app_ids: Vec<&str> = batch.iter().map(|j| j.app_id.as_str()).collect();
    app_ids.sort_unstable();
    app_ids.dedup();
    let secrets = store.signing_secrets(&app_ids).await?;

    let mut dead: HashMap<&'static str, Vec<&str>> = HashMap::new();
    for job in &batch {
        let prepared = (|| {
            let Some(ep) = endpoints
                .get(job.endpoint_id.as_str())
                .filter(|e| e.enabled)
            else {
                return Err("endpoint disabled or deleted");
            };
            let Some(r) = rendered.get(&job.event_id) else {
                return Err("event no longer stored");
            };
            let Some(s) = secrets.get(job.app_id.as_str()) else {
                return Err("the app has no signing secret");
            };
            let Ok(url) = url::Url::parse(&ep.url) else {
                return Err("endpoint URL does not parse");
            };
            let gate = gates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(ep.id.as_str().to_owned())
                .or_insert_with(|| {
                    Arc::new(Gate {
                        permits: Semaphore::new(shared.config.per_endpoint_concurrency.max(1)),
                        queued: AtomicUsize::new(0),
                    })
                })
                .clone();
            Ok(Prepared {
                url,
                body: Bytes::from(r.body.clone()),
                secrets: s.clone(),
                gate,
            })
        })();
        let p = match prepared {
            Ok(p) => p,
            Err(reason) => {
                dead.entry(reason).or_default().push(job.id.as_str());
                continue;
            }
        };
        let cap = shared.config.per_endpoint_concurrency.max(1);
        if p.gate.queued.fetch_add(1, Ordering::SeqCst) >= 2 * cap {
            p.gate.queued.fetch_sub(1, Ordering::SeqCst);
            let _ = results.send(deferred(job)).await;
            continue;
        }
        let Ok(permit) = global.clone().acquire_owned().await else {
            break;
        };
        inflight.spawn(attempt(
            shared.clone(),
            job.clone(),
            p,
            permit,
            results.clone(),
        ));
    }
    for (reason, ids) in dead {
        store.fail_deliveries(&ids, reason).await?;
    }
    Ok(())
}

fn deferred(job: &DeliveryJob) -> AttemptResult {
    AttemptResult {
        delivery_id: job.id.clone(),
        endpoint_id: job.endpoint_id.clone(),
        attempt: job.attempt,
        at: now_ms(),
        outcome: AttemptOutcome::Deferred(now_ms() + DEFER),
        status_code: None,
        latency_ms: None,
        error_class: None,
        excerpt: None,
    }
}

async fn attempt(
    shared: Arc<Shared>,
    job: DeliveryJob,
    p: Prepared,
    _global: OwnedSemaphorePermit,
    results: mpsc::Sender<AttemptResult>,
) {
    let turn = tokio::time::timeout(GATE_WAIT, p.gate.permits.acquire()).await;
    let Ok(Ok(turn)) = turn else {
        p.gate.queued.fetch_sub(1, Ordering::SeqCst);
        let _ = results.send(deferred(&job)).await;
        return;
    };
    let now = now_ms();
    let timestamp = now / 1000;
    let signature = sign_all(&p.secrets.active(now), &job.event_id, timestamp, &p.body);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("Portcullis-Webhooks/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in [
        ("webhook-id", job.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    let started = Instant::now();
    let res = shared
        .egress
        .post(&p.url, headers, p.body.clone(), shared.config.timeout)
        .await;
    drop(turn);
    p.gate.queued.fetch_sub(1, Ordering::SeqCst);
    let latency_ms = started.elapsed().as_millis() as i64;
    let result = classify(&shared.config, &job, res, latency_ms);
    metrics::counter!("portcullis_webhook_attempts_total", "outcome" => outcome_label(&result))
        .increment(1);
    metrics::histogram!("portcullis_webhook_attempt_seconds").record(latency_ms as f64 / 1000.0);
    let _ = results.send(result).await;
}

fn outcome_label(r: &AttemptResult) -> &'static str {
    match r.outcome {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::RetryAt(_) => "retrying",
        AttemptOutcome::Failed => "failed",
        AttemptOutcome::Blocked => "blocked",
        AttemptOutcome::Deferred(_) => "deferred",
    }
}

fn classify(
    config: &WebhookConfig,
    job: &DeliveryJob,
    res: Result<portcullis_egress::EgressResponse, EgressError>,
    latency_ms: i64,
) -> AttemptResult {
    let now = now_ms();
    let mut r = AttemptResult {
        delivery_id: job.id.clone(),
        endpoint_id: job.endpoint_id.clone(),
        attempt: job.attempt,
        at: now,
        outcome: AttemptOutcome::Succeeded,
        status_code: None,
        latency_ms: Some(latency_ms),
        error_class: None,
        excerpt: None,
    };
    match res {
        Ok(resp) => {
            r.status_code = Some(resp.status);
            if (200..300).contains(&resp.status) {
                return r;
            }
            r.excerpt = (!resp.excerpt.is_empty()).then_some(resp.excerpt);
            r.error_class = Some(format!("http_{}", resp.status));
            r.outcome = if resp.status == 410 {
                AttemptOutcome::Failed
            } else {
                let hint = matches!(resp.status, 429 | 503)
                    .then_some(resp.retry_after)
                    .flatten()
                    .map(|d| d.clamp(config.retry_after_min, config.retry_after_max));
                next_attempt(config, job.attempt, hint, now)
            };
        }
        Err(e) => {
            r.error_class = Some(e.class().to_owned());
            r.excerpt = Some(error_excerpt(&e));
            r.outcome = match e {
                EgressError::Blocked(_) => AttemptOutcome::Blocked,
                _ => next_attempt(config, job.attempt, None, now),
            };
        }
    }
    r
}

fn error_excerpt(e: &EgressError) -> String {
    let text = match e {
        EgressError::Blocked(b) => b.reason().to_owned(),
        EgressError::Timeout => "no response within the timeout".to_owned(),
        EgressError::Connect(m) | EgressError::Tls(m) | EgressError::Other(m) => m.clone(),
    };
    text.chars().take(200).collect()
}

/// The next attempt after attempt `n` failed, or `Failed` when the schedule has run out.
fn next_attempt(
    config: &WebhookConfig,
    n: i64,
    retry_after: Option<Duration>,
    now: i64,
) -> AttemptOutcome {
    let Some(delay) = usize::try_from(n - 1)
        .ok()
        .and_then(|i| config.retry_schedule.get(i))
    else {
        return AttemptOutcome::Failed;
    };
    let delay = retry_after.unwrap_or_else(|| {
        // ±20% so receivers coming back up are not hit by every retry at once.
        delay.mul_f64(rand::rng().random_range(0.8..1.2))
    });
    AttemptOutcome::RetryAt(now + delay.as_millis() as i64)
}

async fn settle(shared: Arc<Shared>, mut results: mpsc::Receiver<AttemptResult>) {
    let mut batch = Vec::with_capacity(1024);
    while results.recv_many(&mut batch, 1024).await > 0 {
        let disable_before = now_ms() - shared.config.disable_after.as_millis() as i64;
        let mut failures = 0u32;
        let failing = loop {
            match shared.store.settle_attempts(&batch, disable_before).await {
                Ok(f) => break f,
                Err(e) => {
                    failures += 1;
                    tracing::error!(error = %e, failures, "recording webhook attempts failed");
                    if failures >= 20 {
                        // The leases run out and the deliveries are attempted again.
                        break Vec::new();
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
                }
            }
        };
        let gone: Vec<&str> = batch
            .iter()
            .filter(|r| r.status_code == Some(410) && r.outcome == AttemptOutcome::Failed)
            .map(|r| r.endpoint_id.as_str())
            .collect();
        let failing: Vec<&str> = failing.iter().map(String::as_str).collect();
        for (ids, reason) in [
            (gone, "the receiver answered 410 Gone"),
            (failing, "every attempt failed for 5 days"),
        ] {
            if ids.is_empty() {
                continue;
            }
            tracing::warn!(endpoints = ?ids, reason, "disabling webhook endpoints");
            if let Err(e) = shared.store.disable_endpoints(&ids, reason).await {
                tracing::error!(error = %e, "disabling webhook endpoints failed");
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_runs_out_into_failure() {
        let config = WebhookConfig::default();
        let now = 1_000_000;
        match next_attempt(&config, 1, None, now) {
            AttemptOutcome::RetryAt(at) => assert!((now + 4_000..=now + 6_000).contains(&at)),
            other => panic!("{other:?}"),
        }
        match next_attempt(&config, 7, None, now) {
            AttemptOutcome::RetryAt(at) => {
                let h10 = 10 * 3600 * 1000;
                assert!(at >= now + h10 * 8 / 10 && at <= now + h10 * 12 / 10);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(next_attempt(&config, 8, None, now), AttemptOutcome::Failed);
        assert_eq!(
            next_attempt(&config, 2, Some(Duration::from_secs(30)), now),
            AttemptOutcome::RetryAt(now + 30_000)
        );
    }
}
