//! The guard's reads: the standing of every recipient of a commit batch, and its apps'
//! counters, read by the group committer just before it writes the batch.
//!
//! Every `POST /v1/messages` needs the recipient's standing and the app's counters before
//! it can be decided. One query per request costs more in round trips and per-statement
//! overhead (on SQLite, a hop to a connection's worker thread and back) than in the rows
//! it reads. A reader task of its own batched only the two or three requests that arrived
//! while its previous query ran, because a read is short; a commit is long (an fsync), so
//! the committer's batches are tens of requests, and it reads for all of them with one
//! query per app ([`crate::accept`]). Reading there has a second use: the committer reads
//! after its previous batch committed, and adds what the batch's earlier messages to the
//! same recipient will count, so the per-recipient cap holds across concurrent requests.
//! That is exact for one committer (SQLite's); PostgreSQL's four committers, and instances
//! sharing a database, each see only what the others have committed.

use std::collections::HashMap;

use portcullis_domain::{AppId, E164};
use portcullis_store::guard::{Counter, CounterKeys};
use portcullis_store::policy::GuardSnapshot;
use portcullis_store::{HeldReader, ReadVia, Store, StoreError};

/// What the guard needs to read for one message.
#[derive(Debug)]
pub struct GuardRead {
    pub app: AppId,
    pub to: E164,
    /// Count today's non-essential messages to the recipient (a cap applies). Such a
    /// message also counts for the later ones of its batch to the same recipient.
    pub count_recipient: bool,
    pub keys: CounterKeys,
}

/// Reads the snapshots of `reads` (in their order), one query per app.
pub(crate) async fn snapshots(
    store: &Store,
    held: &mut HeldReader,
    reads: &[&GuardRead],
) -> Result<Vec<GuardSnapshot>, StoreError> {
    metrics::histogram!("portcullis_guard_read_batch_size").record(reads.len() as f64);
    // Each recipient's blind index, worked out once: the read takes it, and the answer is
    // keyed by it.
    let indexes: Vec<String> = reads.iter().map(|r| store.phone_index(&r.to)).collect();
    let mut by_app: HashMap<&AppId, Vec<usize>> = HashMap::new();
    for (at, r) in reads.iter().enumerate() {
        by_app.entry(&r.app).or_default().push(at);
    }
    let mut out = vec![GuardSnapshot::default(); reads.len()];
    for (app, members) in by_app {
        let recipients: Vec<(&str, bool)> = members
            .iter()
            .map(|&at| (indexes[at].as_str(), reads[at].count_recipient))
            .collect();
        // Requests of one batch may straddle a minute or a day: read every key any of them
        // needs, and count from the earliest day start (a recipient's count can then
        // include a message from just before midnight, erring on the side of the
        // recipient).
        let mut counters: Vec<&Counter> = members
            .iter()
            .flat_map(|&at| reads[at].keys.read_set())
            .collect();
        counters.sort_by(|a, b| a.key.cmp(&b.key));
        counters.dedup_by(|a, b| a.key == b.key);
        let since = members
            .iter()
            .map(|&at| reads[at].keys.day_start)
            .min()
            .unwrap_or_default();
        let snaps = store
            .guard_snapshots(ReadVia::Held(held), app, &recipients, since, &counters)
            .await?;
        let counters = std::sync::Arc::new(snaps.counters);
        // Counted messages earlier in the batch, by recipient.
        let mut earlier: HashMap<&str, u32> = HashMap::new();
        for &at in &members {
            let index = indexes[at].as_str();
            let r = reads[at];
            out[at] = GuardSnapshot {
                recipient: snaps.recipients.get(index).cloned().unwrap_or_default(),
                recipient_today: if r.count_recipient {
                    let before = earlier.entry(index).or_default();
                    let today = snaps.today.get(index).copied().unwrap_or(0);
                    let n = today.saturating_add(*before);
                    *before += 1;
                    n
                } else {
                    0
                },
                counters: counters.clone(),
            };
        }
    }
    Ok(out)
}
