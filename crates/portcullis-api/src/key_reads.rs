//! API-key lookups, batched: authentication's twin of the guard's batched reads.
//!
//! Every request carrying an API key needs the keys that share its prefix. One query per
//! request was the largest single source of thread hand-offs under load (on SQLite each
//! query is a hop to a connection's worker thread and back, and returning the connection
//! is another). So requests hand their prefixes to a reader task, which takes whatever
//! queued while its previous query ran and answers it with one query, on a connection it
//! holds ([`portcullis_store::HeldReader`]: no return to the pool, so no ping, per query).
//!
//! Keys are never cached: a batch's query starts after every request in it arrived, so a
//! key revoked before a request arrives is refused on that request, on every instance.
//! Under light load a batch is one request and nothing waits.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_store::keys::{self, Candidate};
use portcullis_store::{Db, HeldReader, ReadVia};
use tokio::sync::{mpsc, oneshot};

/// The candidates for one prefix, shared by every request of a batch that presented it.
pub type Candidates = Arc<[Candidate]>;

type Reply = oneshot::Sender<Result<Candidates, Arc<str>>>;

/// Most requests answered by one query.
const MAX_BATCH: usize = 256;

/// The handle requests look keys up through; the reader task ends when the last handle
/// is dropped.
#[derive(Clone)]
pub struct KeyReads {
    tx: mpsc::Sender<(String, Reply)>,
}

impl std::fmt::Debug for KeyReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyReads").finish_non_exhaustive()
    }
}

impl KeyReads {
    /// Starts the reader task on the current runtime. One reader, so the next batch
    /// gathers while its query runs (as the guard's reader, `portcullis_pipeline::reads`).
    pub fn spawn(db: Db) -> KeyReads {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 8);
        tokio::spawn(run(db, rx));
        KeyReads { tx }
    }

    /// The keys whose identification prefix is `prefix`, with their apps.
    pub async fn find(&self, prefix: &str) -> Result<Candidates, Arc<str>> {
        let (reply, answer) = oneshot::channel();
        let closed = || Arc::<str>::from("the key reader stopped");
        self.tx
            .send((prefix.to_owned(), reply))
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<(String, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held = HeldReader::new(&db);
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        metrics::histogram!("portcullis_key_read_batch_size").record(batch.len() as f64);
        let mut prefixes: Vec<&str> = batch.iter().map(|(p, _)| p.as_str()).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        match keys::find_by_prefixes_with_app(ReadVia::Held(&mut held), &prefixes).await {
            Ok(found) => {
                let mut by_prefix: HashMap<String, Vec<Candidate>> = HashMap::new();
                for candidate in found {
                    by_prefix
                        .entry(candidate.0.prefix.clone())
                        .or_default()
                        .push(candidate);
                }
                let by_prefix: HashMap<String, Candidates> = by_prefix
                    .into_iter()
                    .map(|(p, c)| (p, Candidates::from(c)))
                    .collect();
                for (prefix, reply) in batch.drain(..) {
                    let candidates = by_prefix.get(&prefix).cloned().unwrap_or_default();
                    let _ = reply.send(Ok(candidates));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "API key lookup failed");
                let detail: Arc<str> = Arc::from(e.to_string());
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(detail.clone()));
                }
            }
        }
    }
}
