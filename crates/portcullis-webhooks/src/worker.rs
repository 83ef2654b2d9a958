//! The delivery worker: signs and posts deliveries, and records every attempt.
//!
//! Deliveries come leased, either straight from the relay or claimed when due (retries,
//! replays, anything a crashed process left, anything a full queue left in the database).
//! Each endpoint has a queue in this process's memory and up to `per_endpoint_concurrency`
//! *lanes*: tasks that take its deliveries one after another, so a fast receiver keeps
//! every one of its slots busy, and a slow one holds only its own lanes (and its share of
//! `max_in_flight`) while the others go on.
//!
//! The queues are bounded. An endpoint is *full* when its queue holds
//! `queue_per_endpoint` deliveries or its oldest one has waited half of what a lease
//! leaves for waiting; all of them are full when `queue_total` deliveries wait. A full
//! endpoint takes no more: the relay creates the deliveries that do not fit unleased, and
//! the claim passes its rows over, so they wait in the database, not in memory, until its
//! queue is down to half (and then the worker claims at once, not at the next poll).
//!
//! A queued delivery keeps the lease it was created or claimed with. It is attempted only
//! while that lease still covers the whole attempt (the timeout plus [`LEASE_MARGIN`]);
//! one that waited too long is released to the database without counting an attempt
//! (`portcullis_webhook_released_total`), so another process can never take over a
//! delivery this one might still be posting. Outcomes are recorded in batches, fenced by
//! attempt number.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use portcullis_crypto::webhook::sign_all;
use portcullis_egress::EgressError;
use portcullis_store::webhooks::{AttemptOutcome, AttemptResult, DeliveryJob, SigningSecrets};
use portcullis_store::{StoreError, now_ms};
use rand::RngExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Shared, WebhookConfig, render::render_all};

/// What a lease must still cover, beyond the timeout, when an attempt starts.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Most deliveries claimed at once.
const CLAIM_BATCH: usize = 500;
/// How long the recorder gathers outcomes before writing them: fewer, larger
/// transactions leave SQLite's single writer to acceptance for longer. The receiver has
/// its webhook by then; only the delivery log waits.
const SETTLE_GATHER: Duration = Duration::from_millis(25);

/// Deliveries leased to this process, with the end of their lease.
pub(crate) struct Leased {
    pub jobs: Vec<DeliveryJob>,
    pub lease_until: i64,
}

/// A delivery waiting in its endpoint's queue.
#[derive(Debug)]
struct Queued {
    job: DeliveryJob,
    body: Bytes,
    lease_until: i64,
    since: Instant,
}

/// One endpoint's queue and lanes.
struct Lane {
    url: Arc<url::Url>,
    secrets: Arc<SigningSecrets>,
    queue: VecDeque<Queued>,
    /// Lane tasks alive (each attempting, or about to take the next delivery).
    running: usize,
}

#[derive(Default)]
struct LaneMap {
    lanes: HashMap<String, Lane>,
    /// Endpoints with rows left in the database because their queue was full: claim as
    /// soon as it has room.
    spilled: HashSet<String>,
    /// Deliveries in every queue.
    queued: usize,
    /// Every queue was full at some claim or relay: claim when they have room again.
    starved: bool,
    /// Shutting down: lanes take nothing more.
    closed: bool,
}

/// Every endpoint's queue in this process. Shared by the relay (which asks which
/// endpoints are full) and the worker.
pub(crate) struct Lanes {
    map: Mutex<LaneMap>,
    /// Lanes per endpoint.
    cap: usize,
    per_endpoint: usize,
    total: usize,
    /// An endpoint whose oldest queued delivery waited this long takes no more.
    max_wait: Duration,
    /// Wakes the worker to claim when a full queue has room again.
    claim: Arc<Notify>,
}

/// What a lane takes next.
struct Next {
    item: Queued,
    url: Arc<url::Url>,
    secrets: Arc<SigningSecrets>,
}

/// A prepared delivery for [`Lanes::push`].
struct Admitted {
    endpoint: String,
    url: Arc<url::Url>,
    secrets: Arc<SigningSecrets>,
    item: Queued,
}

/// What must remain of a lease when an attempt starts. Never more than half the lease,
/// so that a timeout configured longer than the lease cannot keep every delivery waiting.
fn lease_needed(config: &WebhookConfig) -> Duration {
    (config.timeout + LEASE_MARGIN).min(config.lease / 2)
}

impl Lane {
    fn full(&self, per_endpoint: usize, max_wait: Duration) -> bool {
        self.queue.len() >= per_endpoint
            || self
                .queue
                .front()
                .is_some_and(|q| q.since.elapsed() >= max_wait)
    }

    /// Room enough to claim for again (below half of either bound, so that a queue at its
    /// bound does not claim a handful at a time).
    fn has_room(&self, per_endpoint: usize, max_wait: Duration) -> bool {
        self.queue.len() <= per_endpoint / 2
            && self
                .queue
                .front()
                .is_none_or(|q| q.since.elapsed() < max_wait / 2)
    }
}

impl Lanes {
    pub(crate) fn new(config: &WebhookConfig, claim: Arc<Notify>) -> Lanes {
        Lanes {
            map: Mutex::new(LaneMap::default()),
            cap: config.per_endpoint_concurrency.max(1),
            per_endpoint: config.queue_per_endpoint.max(1),
            total: config.queue_total.max(1),
            max_wait: config.lease.saturating_sub(lease_needed(config)) / 2,
            claim,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneMap> {
        // Every operation leaves the map consistent before it could panic.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many of each endpoint's new deliveries (`wanted`: endpoint and count) may be
    /// queued here now. The relay leases those and leaves the rest in the database, where
    /// the claim finds them once there is room.
    pub(crate) fn room_for<'a>(&self, wanted: &[(&'a str, usize)]) -> HashMap<&'a str, usize> {
        let mut map = self.lock();
        let mut total_room = self.total.saturating_sub(map.queued);
        let mut granted = HashMap::with_capacity(wanted.len());
        for &(endpoint, n) in wanted {
            let own = match map.lanes.get(endpoint) {
                Some(l) if l.full(self.per_endpoint, self.max_wait) => 0,
                Some(l) => self.per_endpoint.saturating_sub(l.queue.len()),
                None => self.per_endpoint,
            };
            let grant = n.min(own).min(total_room);
            total_room -= grant;
            if grant < n {
                map.spilled.insert(endpoint.to_owned());
                map.starved |= total_room == 0;
            }
            granted.insert(endpoint, grant);
        }
        granted
    }

    /// How many deliveries a claim may take, and the endpoints it must pass over.
    fn claim_view(&self) -> (usize, Vec<String>) {
        let mut map = self.lock();
        let room = self.total.saturating_sub(map.queued);
        if room == 0 {
            map.starved = true;
            return (0, Vec::new());
        }
        let full: Vec<String> = map
            .lanes
            .iter()
            .filter(|(_, l)| l.full(self.per_endpoint, self.max_wait))
            .map(|(id, _)| id.clone())
            .collect();
        map.spilled.extend(full.iter().cloned());
        (room, full)
    }

    /// Queues prepared deliveries; returns how many lanes to start per endpoint, or the
    /// deliveries back when shutting down.
    fn push(&self, items: Vec<Admitted>) -> Result<Vec<(String, usize)>, Vec<Queued>> {
        let mut map = self.lock();
        if map.closed {
            return Err(items.into_iter().map(|a| a.item).collect());
        }
        map.queued += items.len();
        for a in items {
            let lane = match map.lanes.entry(a.endpoint) {
                Entry::Occupied(o) => {
                    let l = o.into_mut();
                    l.url = a.url;
                    l.secrets = a.secrets;
                    l
                }
                Entry::Vacant(v) => v.insert(Lane {
                    url: a.url,
                    secrets: a.secrets,
                    queue: VecDeque::new(),
                    running: 0,
                }),
            };
            lane.queue.push_back(a.item);
        }
        // Every lane with deliveries waiting runs as many lanes as it may (lanes only end
        // on an empty queue), so looking at all of them also mends any shortfall.
        let cap = self.cap;
        let spawn = map
            .lanes
            .iter_mut()
            .filter_map(|(id, l)| {
                let want = (l.running + l.queue.len()).min(cap);
                let n = want.saturating_sub(l.running);
                l.running += n;
                (n > 0).then(|| (id.clone(), n))
            })
            .collect();
        Ok(spawn)
    }

    /// The next delivery for a lane of `endpoint`; `None` ends the lane.
    fn next(&self, endpoint: &str) -> Option<Next> {
        let mut map = self.lock();
        let map = &mut *map;
        let lane = map.lanes.get_mut(endpoint)?;
        let item = if map.closed {
            None
        } else {
            lane.queue.pop_front()
        };
        let Some(item) = item else {
            lane.running -= 1;
            return None;
        };
        if lane.has_room(self.per_endpoint, self.max_wait) && map.spilled.remove(endpoint) {
            self.claim.notify_one();
        }
        let next = Next {
            item,
            url: lane.url.clone(),
            secrets: lane.secrets.clone(),
        };
        map.queued -= 1;
        if map.starved && map.queued <= self.total / 2 {
            map.starved = false;
            self.claim.notify_one();
        }
        Some(next)
    }

    /// The endpoints with deliveries queued or in flight; forgets idle ones.
    fn active(&self) -> Vec<String> {
        let mut map = self.lock();
        let map = &mut *map;
        map.lanes
            .retain(|_, l| l.running > 0 || !l.queue.is_empty());
        // The poll claims anyway: an endpoint without a lane needs no reminder.
        map.spilled.retain(|e| map.lanes.contains_key(e));
        let queued = map.queued;
        metrics::gauge!("portcullis_webhook_queued").set(queued as f64);
        map.lanes.keys().cloned().collect()
    }

    /// Updates an endpoint's URL and the app's secrets (changed since they were queued).
    fn update(&self, endpoint: &str, url: Arc<url::Url>, secrets: Arc<SigningSecrets>) {
        if let Some(l) = self.lock().lanes.get_mut(endpoint) {
            l.url = url;
            l.secrets = secrets;
        }
    }

    /// Empties an endpoint's queue (it was disabled or deleted).
    fn take_queue(&self, endpoint: &str) -> Vec<Queued> {
        let mut map = self.lock();
        let taken: Vec<Queued> = match map.lanes.get_mut(endpoint) {
            Some(l) => l.queue.drain(..).collect(),
            None => Vec::new(),
        };
        map.queued -= taken.len();
        taken
    }

    /// Stops every lane after its current attempt and returns what was still queued.
    fn close(&self) -> Vec<Queued> {
        let mut map = self.lock();
        map.closed = true;
        map.queued = 0;
        map.lanes
            .values_mut()
            .flat_map(|l| l.queue.drain(..))
            .collect()
    }
}

/// What the lanes share.
struct Ctx {
    shared: Arc<Shared>,
    global: Semaphore,
    results: mpsc::Sender<AttemptResult>,
    lease_needed_ms: i64,
    stop: CancellationToken,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Leased>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let (results_tx, results_rx) = mpsc::channel(4096);
    let settler = tokio::spawn(settle(shared.clone(), results_rx));
    let ctx = Arc::new(Ctx {
        global: Semaphore::new(shared.config.max_in_flight.max(1)),
        results: results_tx,
        lease_needed_ms: lease_needed(&shared.config).as_millis() as i64,
        stop: stop.clone(),
        shared: shared.clone(),
    });
    let lanes = TaskTracker::new();
    // An interval, not a sleep per turn: with the relay feeding it without pause the
    // worker must still look for due retries.
    let mut poll = tokio::time::interval(shared.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let leased = tokio::select! {
            Some(leased) = jobs.recv() => leased,
            _ = wake.notified() => claim(&ctx, &wake).await,
            _ = poll.tick() => {
                refresh(&ctx).await;
                claim(&ctx, &wake).await
            }
            _ = stop.cancelled() => break,
        };
        if leased.jobs.is_empty() {
            continue;
        }
        if let Err(e) = admit(&ctx, leased, &lanes).await {
            // The leases run out and the deliveries are claimed again.
            tracing::error!(error = %e, "preparing webhook deliveries failed");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // What is still queued goes back to the database at once, for any instance to take.
    let now = now_ms();
    for q in shared.lanes.close() {
        let _ = ctx.results.send(released(&q.job, now)).await;
    }
    lanes.close();
    lanes.wait().await;
    drop(ctx);
    let _ = settler.await;
}

async fn claim(ctx: &Ctx, wake: &Notify) -> Leased {
    let (room, full) = ctx.shared.lanes.claim_view();
    let limit = room.min(CLAIM_BATCH);
    let now = now_ms();
    let lease_until = now + ctx.shared.config.lease.as_millis() as i64;
    let mut leased = Leased {
        jobs: Vec::new(),
        lease_until,
    };
    if limit == 0 {
        return leased;
    }
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    match ctx
        .shared
        .store
        .claim_deliveries_except(now, lease_until, limit as u32, &full)
        .await
    {
        Ok(jobs) => {
            if jobs.len() == limit {
                // A backlog: come straight back for more.
                wake.notify_one();
            }
            leased.jobs = jobs;
        }
        Err(e) => tracing::error!(error = %e, "claiming webhook deliveries failed"),
    }
    leased
}

/// Reads what the leased deliveries need (bodies, endpoints, secrets) and queues them.
async fn admit(ctx: &Arc<Ctx>, leased: Leased, lanes: &TaskTracker) -> Result<(), StoreError> {
    let store = &ctx.shared.store;
    let batch = leased.jobs;
    let mut event_ids: Vec<&str> = batch.iter().map(|j| j.event_id.as_str()).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    let events = store.events_by_ids(&event_ids).await?;
    // One body per event, shared by every endpoint's delivery of it.
    let bodies: HashMap<String, Bytes> = render_all(store, &events)
        .await?
        .into_iter()
        .map(|(id, r)| (id, Bytes::from(r.body)))
        .collect();
    let mut endpoint_ids: Vec<&str> = batch.iter().map(|j| j.endpoint_id.as_str()).collect();
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    let endpoints = store.endpoints_by_ids(&endpoint_ids).await?;
    let mut app_ids: Vec<&str> = batch.iter().map(|j| j.app_id.as_str()).collect();
    app_ids.sort_unstable();
    app_ids.dedup();
    let secrets: HashMap<String, Arc<SigningSecrets>> = store
        .signing_secrets(&app_ids)
        .await?
        .into_iter()
        .map(|(app, s)| (app, Arc::new(s)))
        .collect();
    let urls: HashMap<&str, Option<Arc<url::Url>>> = endpoints
        .iter()
        .map(|(id, ep)| {
            let url = ep
                .enabled
                .then(|| url::Url::parse(&ep.url).ok().map(Arc::new))
                .flatten();
            (id.as_str(), url)
        })
        .collect();

    let since = Instant::now();
    let mut dead: HashMap<&'static str, Vec<&str>> = HashMap::new();
    let mut admitted = Vec::with_capacity(batch.len());
    for job in &batch {
        let prepared = (|| {
            let Some(ep) = endpoints
                .get(job.endpoint_id.as_str())
                .filter(|e| e.enabled)
            else {
                return Err("endpoint disabled or deleted");
            };
            let Some(body) = bodies.get(&job.event_id) else {
                return Err("event no longer stored");
            };
            let Some(s) = secrets.get(job.app_id.as_str()) else {
                return Err("the app has no signing secret");
            };
            let Some(Some(url)) = urls.get(ep.id.as_str()) else {
                return Err("endpoint URL does not parse");
            };
            Ok(Admitted {
                endpoint: ep.id.as_str().to_owned(),
                url: url.clone(),
                secrets: s.clone(),
                item: Queued {
                    job: job.clone(),
                    body: body.clone(),
                    lease_until: leased.lease_until,
                    since,
                },
            })
        })();
        match prepared {
            Ok(a) => admitted.push(a),
            Err(reason) => dead.entry(reason).or_default().push(job.id.as_str()),
        }
    }
    match ctx.shared.lanes.push(admitted) {
        Ok(spawn) => {
            for (endpoint, n) in spawn {
                for _ in 0..n {
                    lanes.spawn(lane(ctx.clone(), endpoint.clone()));
                }
            }
        }
        Err(back) => {
            let now = now_ms();
            for q in back {
                let _ = ctx.results.send(released(&q.job, now)).await;
            }
        }
    }
    for (reason, ids) in dead {
        store.fail_deliveries(&ids, reason).await?;
    }
    Ok(())
}

/// Takes the URL and secrets of the queued endpoints afresh (an endpoint may have been
/// changed, disabled or deleted, or its app's secret rotated, since its deliveries were
/// queued) and ends the deliveries of endpoints that are gone.
async fn refresh(ctx: &Ctx) {
    let ids = ctx.shared.lanes.active();
    if ids.is_empty() {
        return;
    }
    let store = &ctx.shared.store;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let endpoints = match store.endpoints_by_ids(&ids).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "reading queued webhook endpoints failed");
            return;
        }
    };
    let mut apps: Vec<&str> = endpoints.values().map(|e| e.app_id.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    let secrets = match store.signing_secrets(&apps).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "reading webhook signing secrets failed");
            return;
        }
    };
    let mut gone: Vec<DeliveryJob> = Vec::new();
    for id in ids {
        let usable = endpoints.get(id).filter(|e| e.enabled).and_then(|e| {
            let url = url::Url::parse(&e.url).ok()?;
            let s = secrets.get(e.app_id.as_str())?;
            Some((Arc::new(url), Arc::new(s.clone())))
        });
        match usable {
            Some((url, s)) => ctx.shared.lanes.update(id, url, s),
            None => gone.extend(ctx.shared.lanes.take_queue(id).into_iter().map(|q| q.job)),
        }
    }
    if !gone.is_empty() {
        let ids: Vec<&str> = gone.iter().map(|j| j.id.as_str()).collect();
        if let Err(e) = store
            .fail_deliveries(&ids, "endpoint disabled or deleted")
            .await
        {
            // Their leases run out; the next attempt finds the endpoint gone.
            tracing::warn!(error = %e, "ending deliveries of a disabled endpoint failed");
        }
    }
}

/// One of an endpoint's lanes: attempts its queued deliveries one after another until the
/// queue is empty.
async fn lane(ctx: Arc<Ctx>, endpoint: String) {
    while let Some(next) = ctx.shared.lanes.next(&endpoint) {
        let Ok(_permit) = ctx.global.acquire().await else {
            return;
        };
        let now = now_ms();
        if ctx.stop.is_cancelled() {
            let _ = ctx.results.send(released(&next.item.job, now)).await;
            continue;
        }
        if next.item.lease_until - now < ctx.lease_needed_ms {
            // Waited so long that the lease could run out mid-attempt.
            metrics::counter!("portcullis_webhook_released_total").increment(1);
            let _ = ctx.results.send(released(&next.item.job, now)).await;
            continue;
        }
        let result = attempt(&ctx.shared, &next).await;
        let _ = ctx.results.send(result).await;
    }
}

/// A delivery given back unattempted: due again at once, its attempt not counted.
fn released(job: &DeliveryJob, now: i64) -> AttemptResult {
    AttemptResult {
        delivery_id: job.id.clone(),
        endpoint_id: job.endpoint_id.clone(),
        attempt: job.attempt,
        at: now,
        outcome: AttemptOutcome::Deferred(now),
        status_code: None,
        latency_ms: None,
        error_class: None,
        excerpt: None,
    }
}

async fn attempt(shared: &Shared, next: &Next) -> AttemptResult {
    let job = &next.item.job;
    let now = now_ms();
    let timestamp = now / 1000;
    let signature = sign_all(
        &next.secrets.active(now),
        &job.event_id,
        timestamp,
        &next.item.body,
    );
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
        .post(
            &next.url,
            headers,
            next.item.body.clone(),
            shared.config.timeout,
        )
        .await;
    let latency_ms = started.elapsed().as_millis() as i64;
    let result = classify(&shared.config, job, res, latency_ms);
    metrics::counter!("portcullis_webhook_attempts_total", "outcome" => outcome_label(&result))
        .increment(1);
    metrics::histogram!("portcullis_webhook_attempt_seconds").record(latency_ms as f64 / 1000.0);
    result
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
    const MOST: usize = 1024;
    let mut batch = Vec::with_capacity(MOST);
    while results.recv_many(&mut batch, MOST).await > 0 {
        let gathered = tokio::time::Instant::now() + SETTLE_GATHER;
        while batch.len() < MOST {
            let want = MOST - batch.len();
            let more = results.recv_many(&mut batch, want);
            match tokio::time::timeout_at(gathered, more).await {
                Ok(n) if n > 0 => {}
                // The time is up, or the worker has stopped and this is the last batch.
                _ => break,
            }
        }
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use portcullis_crypto::{Keyring, MasterKey};
    use portcullis_domain::{AppId, DeliveryId, EventId, EventType, WebhookEndpointId};
    use portcullis_egress::{Egress, EgressPolicy, Resolver};
    use portcullis_store::events::NewEvent;
    use portcullis_store::webhooks::NewEndpoint;
    use portcullis_store::{Db, Pool, Store, apps, tenants};

    fn job(endpoint: &str) -> DeliveryJob {
        DeliveryJob {
            id: DeliveryId::new(),
            app_id: AppId::new(),
            endpoint_id: WebhookEndpointId::from_trusted(endpoint.to_owned()),
            event_id: EventId::new().as_str().to_owned(),
            attempt: 1,
        }
    }

    fn admitted(endpoint: &str, since: Instant) -> Admitted {
        let secrets = SigningSecrets {
            current: portcullis_crypto::WebhookSecret::generate(),
            previous: None,
        };
        Admitted {
            endpoint: endpoint.to_owned(),
            url: Arc::new(url::Url::parse("http://127.0.0.1:9/hook").unwrap()),
            secrets: Arc::new(secrets),
            item: Queued {
                job: job(endpoint),
                body: Bytes::from_static(b"{}"),
                lease_until: now_ms() + 60_000,
                since,
            },
        }
    }

    #[tokio::test]
    async fn a_full_queue_takes_no_more_and_asks_for_a_claim_once_it_has_room() {
        let config = WebhookConfig {
            per_endpoint_concurrency: 2,
            queue_per_endpoint: 4,
            queue_total: 6,
            ..WebhookConfig::default()
        };
        let claim = Arc::new(Notify::new());
        let lanes = Lanes::new(&config, claim.clone());
        let now = Instant::now();
        let spawn = lanes
            .push((0..4).map(|_| admitted("ep_fast", now)).collect())
            .unwrap();
        // Four waiting, but never more lanes than the endpoint's concurrency.
        assert_eq!(spawn, vec![("ep_fast".to_owned(), 2)]);
        // The endpoint at its bound takes nothing more; the others share what is left of
        // the total.
        assert_eq!(
            lanes.room_for(&[("ep_fast", 3), ("ep_other", 1), ("ep_new", 5)]),
            HashMap::from([("ep_fast", 0), ("ep_other", 1), ("ep_new", 1)])
        );
        let (room, full) = lanes.claim_view();
        assert_eq!((room, full), (2, vec!["ep_fast".to_owned()]));
        // Two more for another endpoint fill every queue.
        lanes
            .push((0..2).map(|_| admitted("ep_other", now)).collect())
            .unwrap();
        assert_eq!(
            lanes.room_for(&[("ep_new", 1)]),
            HashMap::from([("ep_new", 0)])
        );
        assert_eq!(lanes.claim_view().0, 0);
        // Taking from the full queue: at half its bound it asks for a claim.
        assert!(lanes.next("ep_fast").is_some());
        assert!(lanes.next("ep_fast").is_some());
        tokio::time::timeout(Duration::from_secs(1), claim.notified())
            .await
            .expect("a claim was asked for");
        // A queue whose oldest delivery waited too long is full too, whatever its length.
        let old = now
            .checked_sub(lanes.max_wait)
            .expect("the machine has been up for a minute");
        lanes.push(vec![admitted("ep_slow", old)]).unwrap();
        assert_eq!(
            lanes.room_for(&[("ep_slow", 1)]),
            HashMap::from([("ep_slow", 0)])
        );
        // Lanes end on an empty queue; closing hands back what was still queued.
        assert!(lanes.next("ep_other").is_some());
        let left = lanes.close();
        assert_eq!(left.len(), 2 + 1 + 1);
        assert!(lanes.next("ep_fast").is_none());
        assert!(lanes.push(vec![admitted("ep_fast", now)]).is_err());
    }

    #[test]
    fn an_attempt_starts_only_while_its_lease_covers_it() {
        let config = WebhookConfig::default();
        assert_eq!(lease_needed(&config), Duration::from_secs(15));
        let long = WebhookConfig {
            timeout: Duration::from_secs(120),
            ..WebhookConfig::default()
        };
        assert_eq!(lease_needed(&long), long.lease / 2);
    }

    /// A receiver on loopback answering 204 after `delay`; counts requests per webhook-id
    /// and the most it handled at once.
    struct Sink {
        url: String,
        seen: Arc<Mutex<HashMap<String, usize>>>,
        max_concurrent: Arc<AtomicUsize>,
    }

    async fn sink(delay: Duration) -> Sink {
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let current = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let (s, cur, max) = (seen.clone(), current, max_concurrent.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap| async move {
                let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                cur.fetch_sub(1, Ordering::SeqCst);
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                *s.lock().unwrap().entry(id).or_default() += 1;
                axum::http::StatusCode::NO_CONTENT
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Sink {
            url,
            seen,
            max_concurrent,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_to_one_endpoint_arrives_exactly_once_without_releases() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        let store = Store::new(db, Arc::new(Keyring::new(&MasterKey::generate())));
        let tenant = tenants::create(&store.db, "t").await.unwrap();
        let app = apps::create(&store.db, &tenant.id, "a").await.unwrap();
        let receiver = sink(Duration::from_millis(1)).await;
        store
            .create_endpoint(
                &tenant.id,
                &app.id,
                &NewEndpoint {
                    url: receiver.url.clone(),
                    events: Vec::new(),
                    description: None,
                    enabled: true,
                },
            )
            .await
            .unwrap();
        let policy = EgressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
            ..EgressPolicy::development()
        };
        let egress = Egress::new(policy, Resolver::System).unwrap();
        // Small queues, so that the burst overflows them into the database and comes back
        // by the claim.
        let config = WebhookConfig {
            per_endpoint_concurrency: 4,
            queue_per_endpoint: 40,
            queue_total: 100,
            ..WebhookConfig::default()
        };
        let written = Arc::new(Notify::new());
        let webhooks = crate::Webhooks::start(store.clone(), egress, config, written.clone());
        let n = 1_000;
        for chunk in 0..(n / 50) {
            let events: Vec<NewEvent> = (0..50)
                .map(|i| NewEvent {
                    id: EventId::new(),
                    tenant_id: tenant.id.clone(),
                    app_id: app.id.clone(),
                    kind: EventType::EndpointDisabled,
                    subject_id: None,
                    data: serde_json::json!({ "n": chunk * 50 + i }),
                    phone: None,
                    created_at: now_ms(),
                })
                .collect();
            store.emit_app_events(&events).await.unwrap();
            written.notify_one();
        }
        let Pool::Sqlite(pool) = store.db.read() else {
            unreachable!()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (done,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'succeeded'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if done == n {
                break;
            }
            assert!(Instant::now() < deadline, "only {done} of {n} settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        webhooks.shutdown().await;
        let seen = receiver.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), n as usize, "every event arrived");
        assert!(seen.values().all(|&k| k == 1), "and only once");
        let max = receiver.max_concurrent.load(Ordering::SeqCst);
        assert!((2..=4).contains(&max), "per-endpoint concurrency: {max}");
        // Each delivery was attempted once and counted once: nothing was put off.
        let (attempts, logged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT SUM(attempts) FROM webhook_deliveries), \
             (SELECT COUNT(*) FROM webhook_attempts)",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!((attempts, logged), (n, n));
    }

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
