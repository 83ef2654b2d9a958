//! The realtime hub: the WebSocket subscribers of this process, by app.
//!
//! Every subscriber has a bounded buffer. A subscriber that falls behind is cut off (its
//! `overflowed` token fires and the socket closes with a code that says so) rather than
//! allowed to grow memory; it reconnects with its resume cursor and loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use portcullis_domain::AppId;
use portcullis_store::events::EventRecord;
use portcullis_store::{Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::render::{Rendered, render_all};

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Rendered>>,
    overflowed: CancellationToken,
}

/// The subscribers of this process.
pub struct Hub {
    store: Store,
    buffer: usize,
    next_id: AtomicU64,
    subscribers: Mutex<HashMap<AppId, Vec<Subscriber>>>,
}

/// One subscriber's end. Dropping it unsubscribes.
pub struct Subscription {
    pub events: mpsc::Receiver<Arc<Rendered>>,
    /// Fires when the subscriber fell too far behind and was cut off.
    pub overflowed: CancellationToken,
    hub: Arc<Hub>,
    app: AppId,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.app, self.id);
    }
}

impl Hub {
    pub fn new(store: Store, buffer: usize) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            buffer: buffer.max(1),
            next_id: AtomicU64::new(1),
            subscribers: Mutex::new(HashMap::new()),
        })
    }

    /// Subscribes to an app's events from now on.
    pub fn subscribe(self: &Arc<Self>, app: &AppId) -> Subscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let overflowed = CancellationToken::new();
        self.lock()
            .entry(app.clone())
            .or_default()
            .push(Subscriber {
                id,
                tx,
                overflowed: overflowed.clone(),
            });
        metrics::gauge!("portcullis_realtime_connections").increment(1.0);
        Subscription {
            events: rx,
            overflowed,
            hub: self.clone(),
            app: app.clone(),
            id,
        }
    }

    fn unsubscribe(&self, app: &AppId, id: u64) {
        let mut subs = self.lock();
        if let Some(list) = subs.get_mut(app) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                subs.remove(app);
            }
        }
        metrics::gauge!("portcullis_realtime_connections").decrement(1.0);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AppId, Vec<Subscriber>>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // operation is a single insert or retain), so a poisoned lock is still usable.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether anyone here listens to `app`.
    pub fn is_subscribed(&self, app: &AppId) -> bool {
        self.lock().contains_key(app)
    }

    /// Open subscriptions in this process.
    pub fn connections(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Renders and pushes the events whose app has subscribers here.
    pub async fn publish(&self, events: &[EventRecord]) -> Result<(), StoreError> {
        let wanted: Vec<EventRecord> = events
            .iter()
            .filter(|e| self.is_subscribed(&e.app_id))
            .cloned()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let rendered = render_all(&self.store, &wanted).await?;
        let mut ordered: Vec<Arc<Rendered>> = rendered.into_values().map(Arc::new).collect();
        ordered.sort_by_key(|r| r.seq);
        self.push(&ordered);
        Ok(())
    }

    /// Loads events by `(app, event id)` and publishes those whose app has subscribers
    /// here; the others are not read.
    pub async fn publish_ids<'a>(
        &self,
        ids: impl IntoIterator<Item = (&'a AppId, &'a str)>,
    ) -> Result<(), StoreError> {
        let wanted: Vec<&str> = ids
            .into_iter()
            .filter(|(app, _)| self.is_subscribed(app))
            .map(|(_, id)| id)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let events = self.store.events_by_ids(&wanted).await?;
        self.publish(&events).await
    }

    fn push(&self, events: &[Arc<Rendered>]) {
        let mut subs = self.lock();
        for e in events {
            let Some(list) = subs.get_mut(&e.app_id) else {
                continue;
            };
            list.retain(|s| match s.tx.try_send(e.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("portcullis_realtime_overflows_total").increment(1);
                    s.overflowed.cancel();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        subs.retain(|_, l| !l.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_crypto::{Keyring, MasterKey};
    use portcullis_store::Db;

    fn frame(app: &AppId, n: i64) -> Arc<Rendered> {
        Arc::new(Rendered {
            event_id: format!("evt_{n}"),
            app_id: app.clone(),
            seq: n,
            body: String::new(),
            frame: format!("{{\"n\":{n}}}").into(),
        })
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_cut_off_and_others_keep_receiving() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        let store = Store::new(db, Arc::new(Keyring::new(&MasterKey::generate())));
        let hub = Hub::new(store, 2);
        let (app, other) = (AppId::new(), AppId::new());
        let slow = hub.subscribe(&app);
        let mut fast = hub.subscribe(&app);
        let mut elsewhere = hub.subscribe(&other);
        assert_eq!(hub.connections(), 3);
        for n in 1..=3 {
            hub.push(&[frame(&app, n)]);
            // The fast subscriber keeps up.
            assert_eq!(fast.events.recv().await.unwrap().seq, n);
        }
        assert!(
            slow.overflowed.is_cancelled(),
            "the third frame did not fit"
        );
        assert!(!fast.overflowed.is_cancelled());
        assert!(
            elsewhere.events.try_recv().is_err(),
            "other apps see nothing"
        );
        hub.push(&[frame(&app, 4)]);
        assert_eq!(fast.events.recv().await.unwrap().seq, 4);
        drop(slow);
        assert_eq!(hub.connections(), 2);
        drop(fast);
        assert!(!hub.is_subscribed(&app));
    }
}
