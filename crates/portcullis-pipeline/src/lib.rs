//! Portcullis's message pipeline, between the HTTP edge and the providers:
//!
//! - [`accept`]: the group committer. Every accepted message and its send job are written
//!   in one transaction, many requests per transaction, and no request is answered before
//!   the commit that holds it is durable.
//! - [`dispatch`]: the send workers. They claim due jobs with a lease, move the messages to
//!   `sending`, hand them to the routed provider and record what the provider said.
//! - [`routing`] and [`health`]: which connection carries a message, in failover order,
//!   past connections whose circuit is open or that asked to be slowed down.
//! - [`recorder`]: records the receipts and inbound messages providers report, and only
//!   then acknowledges them.
//!
//! [`Pipeline`] owns the three and the provider registry; the API holds a `Pipeline`.

pub mod accept;
pub mod board;
pub mod breaker;
pub mod control;
pub mod dispatch;
pub mod health;
pub mod keywords;
pub mod reads;
pub mod recorder;
pub mod routing;

use std::sync::Arc;
use std::time::Duration;

use portcullis_providers::simulator::SimulatorConfig;
use portcullis_store::{Store, StoreError};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use accept::{AcceptOutcome, AcceptRequest, Charge, IdempotencyInput, Screening};
pub use board::Board;
pub use control::{Control, PauseTarget};
pub use reads::GuardRead;
pub use routing::Routes;

/// The queue the send jobs live in.
pub const SEND_QUEUE: &str = "send";

/// Errors of the pipeline. All of them are internal: the edge answers 500.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the pipeline is shutting down")]
    ShuttingDown,
    /// A batched read failed (the cause was logged once for the batch).
    #[error("reading the guard's inputs failed: {0}")]
    Read(String),
}

/// Tuning of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Dev mode: an app without a route sends through the built-in simulator.
    pub dev_mode: bool,
    /// Concurrent group committers (1 is right for SQLite's single writer).
    pub committers: usize,
    /// Most requests in one acceptance transaction.
    pub max_commit_batch: usize,
    /// Concurrent send workers.
    pub dispatchers: usize,
    /// Most jobs one worker claims at once.
    pub dispatch_batch: u32,
    /// How long a claim holds a job before another worker may take it over.
    pub lease: Duration,
    /// Attempts before a send job is dead-lettered and its message failed.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often an idle worker looks for due jobs another process may have enqueued.
    pub poll_interval: Duration,
    pub simulator: SimulatorConfig,
    /// The failure-storm breaker's thresholds.
    pub breaker: breaker::BreakerConfig,
    /// Each connection's circuit breaker (failover to the next connection of a route).
    pub circuit: health::CircuitConfig,
    /// The base URL providers call back (`PORTCULLIS_PUBLIC_URL`): Twilio is told to send
    /// status callbacks to `{public_url}/providers/twilio/{connection}/status`.
    pub public_url: String,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            dev_mode: false,
            committers: 1,
            max_commit_batch: 512,
            dispatchers: 2,
            dispatch_batch: 256,
            lease: Duration::from_secs(30),
            max_attempts: 10,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
            poll_interval: Duration::from_millis(500),
            simulator: SimulatorConfig::default(),
            breaker: breaker::BreakerConfig::default(),
            circuit: health::CircuitConfig::default(),
            public_url: "http://127.0.0.1:8080".to_owned(),
        }
    }
}

/// Counts status changes by status and provider connection.
pub(crate) fn count_changes(changes: &[portcullis_store::messages::StatusChange]) {
    for c in changes {
        let provider = c
            .connection_id
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_else(|| "none".to_owned());
        metrics::counter!("portcullis_messages_total", "status" => c.status.as_str(), "provider" => provider)
            .increment(1);
    }
}

/// Counts recorded policy decisions by kind and code.
pub(crate) fn count_policy_events(events: &[portcullis_store::policy::NewPolicyEvent]) {
    for e in events {
        metrics::counter!("portcullis_policy_events_total", "kind" => e.kind.clone(), "code" => e.code.clone())
            .increment(1);
    }
}

/// The running pipeline.
pub struct Pipeline {
    store: Store,
    config: PipelineConfig,
    committer: accept::CommitterHandle,
    routes: Arc<Routes>,
    shutdown: CancellationToken,
    /// Committers and send workers.
    tasks: TaskTracker,
    /// The recorder outlives the send workers so their last receipts are still recorded.
    recorder_stop: CancellationToken,
    recorder: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Notified after every commit that wrote events for apps (the webhook relay waits on it).
    events: Arc<Notify>,
    board: Arc<Board>,
    control: Arc<Control>,
}

impl Pipeline {
    /// Starts the committers, send workers and recorder.
    pub async fn start(
        store: Store,
        config: PipelineConfig,
    ) -> Result<Arc<Pipeline>, PipelineError> {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let work = Arc::new(Notify::new());
        let events = Arc::new(Notify::new());
        let (events_tx, events_rx) = mpsc::channel(4096);
        let routes = Arc::new(Routes::new(store.clone(), &config, events_tx)?);

        let board = Arc::new(Board::default());
        board.reload(&store.db).await?;
        tokio::spawn(board.clone().keep_fresh(store.db.clone(), shutdown.clone()));
        let control = Arc::new(Control::new(
            store.clone(),
            board.clone(),
            config.breaker,
            config.max_attempts,
            work.clone(),
        ));
        let committer = accept::CommitterHandle::spawn(&store, &config, work.clone(), &tasks);
        let recorder_stop = CancellationToken::new();
        let recorder = tokio::spawn(recorder::run(
            store.clone(),
            events_rx,
            recorder_stop.clone(),
            config.max_attempts,
            work.clone(),
            events.clone(),
        ));
        for n in 0..config.dispatchers.max(1) {
            tasks.spawn(dispatch::run(dispatch::Worker {
                store: store.clone(),
                board: board.clone(),
                control: control.clone(),
                routes: routes.clone(),
                config: config.clone(),
                work: work.clone(),
                events: events.clone(),
                shutdown: shutdown.clone(),
                owner: format!("{}-{n}", std::process::id()),
            }));
        }
        routes.load_connections().await?;
        routes.resume().await?;

        Ok(Arc::new(Pipeline {
            store,
            config,
            committer,
            routes,
            shutdown,
            tasks,
            recorder_stop,
            recorder: tokio::sync::Mutex::new(Some(recorder)),
            events,
            board,
            control,
        }))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Pauses and tenant settings in memory.
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Kill switches and reviews.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Notified after every commit that wrote events for apps.
    pub fn events_written(&self) -> Arc<Notify> {
        self.events.clone()
    }

    /// Accepts a message durably (see [`accept`]).
    pub async fn accept(&self, req: AcceptRequest) -> Result<AcceptOutcome, PipelineError> {
        self.committer
            .submit(accept::Work::Accept(Box::new(req)))
            .await
    }

    /// Reads what the guard needs for one message, with the committer's next batch; the
    /// decision goes back through the [`Screening`] (see [`accept`] and [`reads`]).
    pub async fn screen(&self, read: GuardRead) -> Result<Screening, PipelineError> {
        self.committer.screen(read).await
    }

    /// Records policy events (a refusal not screened) through the batched committer.
    pub async fn record_policy_events(
        &self,
        events: Vec<portcullis_store::policy::NewPolicyEvent>,
    ) -> Result<(), PipelineError> {
        self.committer
            .submit(accept::Work::Record(events))
            .await
            .map(|_| ())
    }

    /// Stops claiming work, lets in-flight sends finish and be recorded, and stops.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.committer.close();
        self.tasks.close();
        self.tasks.wait().await;
        // Providers stop only once in-flight sends are done: an SMPP session unbound
        // before its submits were answered would make them possible duplicates.
        self.routes.close();
        self.recorder_stop.cancel();
        if let Some(recorder) = self.recorder.lock().await.take() {
            let _ = recorder.await;
        }
    }
}
