//! The guard's reads, batched: the group committer's twin on the read side.
//!
//! Every `POST /v1/messages` needs the recipient's standing and the app's counters before
//! it can be decided. One query per request costs more in round trips and per-statement
//! overhead (on SQLite, a hop to a connection's worker thread and back) than in the rows
//! it reads; under load that overhead, not the data, made the guard the most expensive
//! part of accepting a message. So requests hand their lookups to a reader task, which takes
//! whatever queued while its previous query ran and answers them all from one query per
//! app, on a connection it holds ([`portcullis_store::HeldReader`]). Under light load a
//! batch is one request and nothing waits.

use std::collections::HashMap;

use portcullis_domain::{AppId, Channel, E164};
use portcullis_store::guard::{Counter, CounterKeys};
use portcullis_store::policy::GuardSnapshot;
use portcullis_store::{HeldReader, ReadVia, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::PipelineError;

/// What the guard needs to read for one message.
#[derive(Debug)]
pub struct GuardRead {
    pub app: AppId,
    pub to: E164,
    pub channel: Channel,
    /// Count today's non-essential messages to the recipient (a cap applies).
    pub count_recipient: bool,
    pub keys: CounterKeys,
}

type Reply = oneshot::Sender<Result<GuardSnapshot, PipelineError>>;

/// Most lookups answered by one query.
const MAX_BATCH: usize = 256;

pub(crate) struct Readers {
    tx: std::sync::Mutex<Option<mpsc::Sender<(GuardRead, Reply)>>>,
}

impl Readers {
    pub(crate) fn spawn(store: &Store, tasks: &TaskTracker) -> Readers {
        let (tx, rx) = mpsc::channel::<(GuardRead, Reply)>(MAX_BATCH * 8);
        // One reader: the next batch gathers while its query runs. A second reader would
        // take whatever had just arrived, often one or two requests, and double the
        // queries for the same traffic (docs/benchmarks.md, session 10).
        tasks.spawn(run(store.clone(), rx));
        Readers {
            tx: std::sync::Mutex::new(Some(tx)),
        }
    }

    pub(crate) async fn read(&self, req: GuardRead) -> Result<GuardSnapshot, PipelineError> {
        let sender = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(PipelineError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send((req, reply))
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        answer.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<(GuardRead, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held = HeldReader::new(&store.db);
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        metrics::histogram!("portcullis_guard_read_batch_size").record(batch.len() as f64);
        let mut by_app: HashMap<AppId, Vec<(GuardRead, Reply)>> = HashMap::new();
        for (req, reply) in batch.drain(..) {
            by_app
                .entry(req.app.clone())
                .or_default()
                .push((req, reply));
        }
        for (app, group) in by_app {
            answer(&store, &mut held, &app, group).await;
        }
    }
}

async fn answer(store: &Store, held: &mut HeldReader, app: &AppId, group: Vec<(GuardRead, Reply)>) {
    // Each recipient's blind index, worked out once: the read takes it, and the answer is
    // keyed by it.
    let indexes: Vec<String> = group
        .iter()
        .map(|(r, _)| store.phone_index(&r.to))
        .collect();
    let recipients: Vec<(&str, bool)> = indexes
        .iter()
        .zip(&group)
        .map(|(ix, (r, _))| (ix.as_str(), r.count_recipient))
        .collect();
    // Requests of one batch may straddle a minute or a day: read every key any of them
    // needs, and count from the earliest day start (a recipient's count can then include
    // a message from just before midnight, erring on the side of the recipient).
    let mut counters: Vec<&Counter> = group.iter().flat_map(|(r, _)| r.keys.read_set()).collect();
    counters.sort_by(|a, b| a.key.cmp(&b.key));
    counters.dedup_by(|a, b| a.key == b.key);
    let since = group
        .iter()
        .map(|(r, _)| r.keys.day_start)
        .min()
        .unwrap_or_default();
    let result = store
        .guard_snapshots(ReadVia::Held(held), app, &recipients, since, &counters)
        .await;
    match result {
        Ok(snaps) => {
            for ((req, reply), index) in group.into_iter().zip(&indexes) {
                let snapshot = GuardSnapshot {
                    recipient: snaps.recipients.get(index).cloned().unwrap_or_default(),
                    recipient_today: if req.count_recipient {
                        snaps.today.get(index).copied().unwrap_or(0)
                    } else {
                        0
                    },
                    counters: snaps.counters.clone(),
                };
                let _ = reply.send(Ok(snapshot));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "guard read failed");
            let detail = e.to_string();
            for (_, reply) in group {
                let _ = reply.send(Err(PipelineError::Read(detail.clone())));
            }
        }
    }
}
