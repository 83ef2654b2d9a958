//! Portcullis event fan-out: what apps are told about their messages, and how.
//!
//! - [`relay`]: takes committed events off the outbox and creates their deliveries.
//! - [`worker`]: signs (Standard Webhooks) and posts deliveries through the SSRF-guarded
//!   egress client, retries on a schedule, keeps a log of every attempt.
//! - [`hub`]: the realtime subscribers of this process; on PostgreSQL every instance's hub
//!   hears every instance's events (LISTEN/NOTIFY).
//! - [`render`]: the JSON bodies and frames.

pub mod hub;
mod relay;
pub mod render;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use portcullis_egress::Egress;
use portcullis_store::Store;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use hub::{Hub, Subscription};

/// Tuning of webhook delivery.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Delays before the second, third, … attempt; the first is immediate. After the last
    /// the delivery fails (it stays replayable).
    pub retry_schedule: Vec<Duration>,
    /// A receiver must answer 2xx within this.
    pub timeout: Duration,
    /// Most attempts in flight to one endpoint, so a slow receiver cannot starve others.
    pub per_endpoint_concurrency: usize,
    /// Most deliveries waiting in one endpoint's queue in memory; beyond it they wait in
    /// the database (see the worker).
    pub queue_per_endpoint: usize,
    /// Most deliveries waiting in every queue of this process together.
    pub queue_total: usize,
    /// Most attempts in flight in this process.
    pub max_in_flight: usize,
    /// How long an attempt holds its delivery before another worker may take it over.
    pub lease: Duration,
    /// How often idle workers look for due deliveries and relays for events.
    pub poll_interval: Duration,
    /// An endpoint failing for this long is disabled.
    pub disable_after: Duration,
    /// Bounds on a receiver's `Retry-After`.
    pub retry_after_min: Duration,
    pub retry_after_max: Duration,
    /// Frames buffered per realtime subscriber before it is cut off.
    pub realtime_buffer: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        WebhookConfig {
            retry_schedule: vec![
                Duration::from_secs(5),
                m(5),
                m(30),
                m(120),
                m(300),
                m(600),
                m(600),
            ],
            timeout: Duration::from_secs(10),
            per_endpoint_concurrency: 16,
            queue_per_endpoint: 5_000,
            queue_total: 50_000,
            max_in_flight: 512,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(6 * 3600),
            realtime_buffer: 256,
        }
    }
}

/// What the relay, workers and hub share.
pub(crate) struct Shared {
    pub store: Store,
    pub egress: Egress,
    pub config: WebhookConfig,
    pub hub: Arc<Hub>,
    /// The worker's queues, one per endpoint; the relay asks which are full.
    pub lanes: worker::Lanes,
}

/// The running fan-out.
pub struct Webhooks {
    shared: Arc<Shared>,
    wake_worker: Arc<Notify>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Webhooks {
    /// Starts the relay (woken by `events_written`), the delivery worker and, on
    /// PostgreSQL, the listener that feeds the hub with every instance's events.
    pub fn start(
        store: Store,
        egress: Egress,
        config: WebhookConfig,
        events_written: Arc<Notify>,
    ) -> Arc<Webhooks> {
        let hub = Hub::new(store.clone(), config.realtime_buffer);
        let wake_worker = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            store,
            egress,
            lanes: worker::Lanes::new(&config, wake_worker.clone()),
            config,
            hub,
        });
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (jobs_tx, jobs_rx) = mpsc::channel(64);
        tasks.spawn(relay::run(
            shared.clone(),
            events_written,
            jobs_tx,
            stop.clone(),
        ));
        tasks.spawn(worker::run(
            shared.clone(),
            jobs_rx,
            wake_worker.clone(),
            stop.clone(),
        ));
        tasks.spawn(relay::listen(shared.clone(), stop.clone()));
        Arc::new(Webhooks {
            shared,
            wake_worker,
            stop,
            tasks,
        })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// The SSRF-guarded client, for vetting URLs when they are saved.
    pub fn egress(&self) -> &Egress {
        &self.shared.egress
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.shared.config
    }

    /// Tells the worker new deliveries are due now (a replay or recover).
    pub fn wake(&self) {
        self.wake_worker.notify_one();
    }

    /// Stops taking new work and waits for attempts in flight to be recorded.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
