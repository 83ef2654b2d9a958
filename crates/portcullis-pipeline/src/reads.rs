//! The guard's reads: the standing of every recipient of a commit batch, and its apps'
//! counters, read by the group committer just before it writes the batch.
//!
//! Every `POST /v1/messages` needs the recipient's standing and the app's counters before
//! it can be decided. One query per request costs more in round trips and per-statement
//! overhead (on SQLite, a hop to a connection's worker thread and back) than in the rows
//! it reads. A reader task of its own batched only the two or three requests that arrived
//! while its previous query ran, because a read is short; a commit is long (an fsync), so
//! the committer's batches are tens of requests, and it reads for all of them with one
//! query per app ([`crate::accept`]). Reading there has a second use: the committer adds
//! what the batch's earlier messages to the same recipient will count, so the
//! per-recipient cap holds across concurrent requests. It does not wait for a batch's
//! commit before reading for the next (see `Committer::commit_batch`), so what its
//! batches not yet committed add is carried over to the reads too ([`InFlight`]). That is exact for one committer (SQLite's); PostgreSQL's
//! four committers, and instances sharing a database, each see only what the others have
//! committed.

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

/// What a batch written but not yet committed adds to what the guard reads: readers see
/// it only once it is committed.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    /// Non-essential messages, by app and recipient index.
    recipients: HashMap<AppId, HashMap<String, u32>>,
    /// Counter increments, by key.
    counters: HashMap<String, i64>,
}

impl InFlight {
    pub(crate) fn count_message(&mut self, app: &AppId, recipient_index: &str) {
        *self
            .recipients
            .entry(app.clone())
            .or_default()
            .entry(recipient_index.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn count(&mut self, counter: &Counter, delta: i64) {
        *self.counters.entry(counter.key.clone()).or_default() += delta;
    }
}

/// Reads the snapshots of `reads` (in their order), one query per app, and adds what
/// the batches `in_flight` will have added once committed. Those must have been taken
/// before the read starts: a batch committed in between is then counted twice, which
/// errs on the recipient's side, and never not at all.
pub(crate) async fn snapshots(
    store: &Store,
    held: &mut HeldReader,
    reads: &[&GuardRead],
    in_flight: &[std::sync::Arc<InFlight>],
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
        let mut snaps = store
            .guard_snapshots(ReadVia::Held(held), app, &recipients, since, &counters)
            .await?;
        for batch in in_flight {
            for c in &counters {
                if let Some(delta) = batch.counters.get(&c.key) {
                    *snaps.counters.entry(c.key.clone()).or_default() += delta;
                }
            }
            for (index, n) in batch.recipients.get(app).into_iter().flatten() {
                *snaps.today.entry(index.clone()).or_default() += n;
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use portcullis_crypto::{Keyring, MasterKey};
    use portcullis_store::{Db, apps, now_ms, tenants};

    use super::*;

    /// A batch not yet committed counts as if it were: its messages to a recipient, one
    /// each, after what was read and before the batch's own earlier messages, and its
    /// counter increments.
    #[tokio::test]
    async fn batches_not_yet_committed_count_as_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/p.db", dir.path().display()))
            .await
            .unwrap();
        let store = Store::new(db.clone(), Arc::new(Keyring::new(&MasterKey::generate())));
        let tenant = tenants::create(&db, "t").await.unwrap();
        let app = apps::create(&db, &tenant.id, "a").await.unwrap();
        let keys = CounterKeys::new(&tenant.id, &app.id, &tenant.settings, now_ms());
        let to = E164::parse("+14155550101").unwrap();
        let other = E164::parse("+14155550102").unwrap();
        let read = |to: &E164| GuardRead {
            app: app.id.clone(),
            to: to.clone(),
            count_recipient: true,
            keys: keys.clone(),
        };
        let mut first = InFlight::default();
        first.count_message(&app.id, &store.phone_index(&to));
        first.count_message(&app.id, &store.phone_index(&to));
        first.count(&keys.app_minute, 2);
        let mut second = InFlight::default();
        second.count_message(&app.id, &store.phone_index(&to));
        second.count(&keys.app_minute, 1);
        let in_flight = [Arc::new(first), Arc::new(second)];
        let (a, b) = (read(&to), read(&other));
        let mut held = HeldReader::new(&db);

        let snaps = snapshots(&store, &mut held, &[&a, &b, &a], &in_flight)
            .await
            .unwrap();
        let today: Vec<u32> = snaps.iter().map(|s| s.recipient_today).collect();
        assert_eq!(today, [3, 0, 4]);
        assert_eq!(snaps[1].counters.get(&keys.app_minute.key), Some(&3));

        let bare = snapshots(&store, &mut held, &[&a], &[]).await.unwrap();
        assert_eq!(bare[0].recipient_today, 0);
        assert_eq!(bare[0].counters.get(&keys.app_minute.key), None);
    }
}
