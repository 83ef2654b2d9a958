//! The guard's controls: kill switches, the review of held messages, and what the
//! failure-storm breaker does when it trips.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_domain::{AppId, ConnectionId, MessageId, TenantId};
use portcullis_queue::NewJob;
use portcullis_store::audit::{self, Actor, NewAuditEvent};
use portcullis_store::guard::{self, PauseRecord};
use portcullis_store::messages::{MessageRecord, SendOutcome};
use portcullis_store::policy::NewPolicyEvent;
use portcullis_store::{Store, StoreError, now_ms};
use tokio::sync::Notify;

use crate::board::Board;
use crate::breaker::{Breaker, BreakerConfig};
use crate::dispatch::Owners;
use crate::{PipelineError, SEND_QUEUE};

/// The mark on send jobs held back by a pause (see [`portcullis_queue::wake`]).
pub(crate) const PAUSED: &str = "paused";

/// What a pause applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseTarget {
    /// Every app of every tenant (an operator's switch).
    Global,
    Tenant(TenantId),
    App(AppId),
    /// One provider connection: its messages wait (the breaker's, or an operator's).
    Connection(ConnectionId),
}

impl PauseTarget {
    /// `(scope, target)` as stored.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            PauseTarget::Global => ("global", ""),
            PauseTarget::Tenant(t) => ("tenant", t.as_str()),
            PauseTarget::App(a) => ("app", a.as_str()),
            PauseTarget::Connection(c) => ("connection", c.as_str()),
        }
    }
}

/// Kill switches, reviews and the breaker, over the store and the board.
pub struct Control {
    store: Store,
    board: Arc<Board>,
    breaker: Breaker,
    max_attempts: u32,
    /// Rung when a released message's job is enqueued.
    work: Arc<Notify>,
}

impl Control {
    pub(crate) fn new(
        store: Store,
        board: Arc<Board>,
        breaker: BreakerConfig,
        max_attempts: u32,
        work: Arc<Notify>,
    ) -> Control {
        Control {
            store,
            board,
            breaker: Breaker::new(breaker),
            max_attempts,
            work,
        }
    }

    /// Sets a pause (replacing one on the same target) and applies it in this process at
    /// once; other processes see it within [`crate::board::REFRESH`].
    pub async fn pause(
        &self,
        target: &PauseTarget,
        stop_queue: bool,
        reason: &str,
        source: &str,
        until: Option<i64>,
    ) -> Result<(), StoreError> {
        let (scope, id) = target.parts();
        guard::set_pause(
            &self.store.db,
            &PauseRecord {
                scope: scope.to_owned(),
                target: id.to_owned(),
                stop_queue,
                reason: reason.to_owned(),
                source: source.to_owned(),
                created_at: now_ms(),
                until_at: until,
            },
        )
        .await?;
        self.board.reload(&self.store.db).await
    }

    /// Lifts a pause. Returns whether one was in force.
    pub async fn resume(&self, target: &PauseTarget) -> Result<bool, StoreError> {
        let (scope, id) = target.parts();
        let lifted = guard::clear_pause(&self.store.db, scope, id).await?;
        self.board.reload(&self.store.db).await?;
        // What the pause held back goes now rather than at its next recheck (anything
        // still under another pause is simply held back again).
        portcullis_queue::wake(&self.store.db, SEND_QUEUE, PAUSED).await?;
        self.work.notify_waiters();
        Ok(lifted)
    }

    /// Approves (the message is queued to send) or rejects (canceled) a held message.
    /// `NotFound` for an unknown or another app's id, and for a message no longer held
    /// (the caller tells the two apart).
    pub async fn review(
        &self,
        tenant: &TenantId,
        app: &AppId,
        id: &MessageId,
        approve: bool,
        detail: &str,
    ) -> Result<MessageRecord, PipelineError> {
        let now = now_ms();
        let mut tx = self.store.db.begin().await?;
        let msg = self
            .store
            .review_held(&mut tx, app, id, approve, detail)
            .await?;
        if approve {
            portcullis_queue::enqueue(
                &mut tx,
                &[NewJob {
                    queue: SEND_QUEUE,
                    payload: id.as_str().to_owned(),
                    run_at: msg.send_at.unwrap_or(now).max(now),
                    max_attempts: self.max_attempts,
                }],
            )
            .await?;
        }
        let kind = if approve { "approved" } else { "rejected" };
        let events = [NewPolicyEvent {
            tenant_id: tenant.clone(),
            app_id: app.clone(),
            message_id: Some(id.clone()),
            phone: Some(msg.to.clone()),
            kind: kind.to_owned(),
            code: "review".to_owned(),
            reason: detail.to_owned(),
        }];
        self.store.insert_policy_events(&mut tx, &events).await?;
        tx.commit().await?;
        crate::count_policy_events(&events);
        if approve {
            self.work.notify_waiters();
        }
        Ok(msg)
    }

    /// Feeds a round's outcomes to the breaker and acts on any trip. Failures here are
    /// logged, never returned: the round's outcomes are already committed.
    pub(crate) async fn observe_sends(
        &self,
        outcomes: &[(portcullis_queue::ClaimedJob, Option<SendOutcome>)],
        owners: &Owners,
        now: i64,
    ) {
        // (attempts, failures) per app and per connection.
        let mut by_app: HashMap<&AppId, (u32, u32, &TenantId)> = HashMap::new();
        let mut by_connection: HashMap<&ConnectionId, (u32, u32)> = HashMap::new();
        for (_, outcome) in outcomes {
            // A provider refusing the message counts against the app (bad numbers, bad
            // content); a provider that cannot be reached counts against the connection.
            let (id, conn, app_failed, conn_failed) = match outcome {
                Some(SendOutcome::Sent {
                    id, connection_id, ..
                }) => (id, Some(connection_id), Some(false), false),
                Some(SendOutcome::Failed {
                    id,
                    connection_id: Some(c),
                    code,
                    ..
                }) => {
                    let unreachable = code == "retries_exhausted";
                    (id, Some(c), (!unreachable).then_some(true), unreachable)
                }
                Some(SendOutcome::Retry {
                    id,
                    connection_id: Some(c),
                    ..
                }) => (id, Some(c), None, true),
                _ => continue,
            };
            if let (Some(failed), Some((tenant, app))) = (app_failed, owners.get(id)) {
                let e = by_app.entry(app).or_insert((0, 0, tenant));
                e.0 += 1;
                e.1 += u32::from(failed);
            }
            if let Some(c) = conn {
                let e = by_connection.entry(c).or_default();
                e.0 += 1;
                e.1 += u32::from(conn_failed);
            }
        }
        let window = self.breaker.config().window;
        for (app, (attempts, failures, tenant)) in by_app {
            let Some(trip) = self.breaker.observe(app.as_str(), attempts, failures, now) else {
                continue;
            };
            let reason = trip.reason("app", window);
            if let Err(e) = self.trip_app(tenant, app, &reason).await {
                tracing::error!(error = %e, app = %app, "pausing an app after a failure storm failed");
            }
        }
        for (conn, (attempts, failures)) in by_connection {
            let Some(trip) = self.breaker.observe(conn.as_str(), attempts, failures, now) else {
                continue;
            };
            let reason = trip.reason("connection", window);
            let until = now + self.breaker.config().connection_cooldown.as_millis() as i64;
            let result = async {
                self.pause(
                    &PauseTarget::Connection(conn.clone()),
                    true,
                    &reason,
                    "breaker",
                    Some(until),
                )
                .await?;
                audit::record(
                    &self.store.db,
                    &NewAuditEvent {
                        tenant_id: None,
                        app_id: None,
                        actor: Actor::System,
                        action: "connection.paused",
                        target_type: Some("connection"),
                        target_id: Some(conn.as_str().to_owned()),
                        client_ip: None,
                        request_id: None,
                        detail: Some(serde_json::json!({ "reason": reason, "until": until })),
                    },
                )
                .await
            }
            .await;
            match result {
                Ok(()) => {
                    metrics::counter!("portcullis_breaker_trips_total", "scope" => "connection")
                        .increment(1);
                    tracing::warn!(connection = %conn, %reason, "connection paused by the failure-storm breaker");
                }
                Err(e) => {
                    tracing::error!(error = %e, connection = %conn, "pausing a connection after a failure storm failed");
                }
            }
        }
        self.breaker.sweep(now);
    }

    async fn trip_app(
        &self,
        tenant: &TenantId,
        app: &AppId,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.pause(
            &PauseTarget::App(app.clone()),
            true,
            reason,
            "breaker",
            None,
        )
        .await?;
        let events = [NewPolicyEvent {
            tenant_id: tenant.clone(),
            app_id: app.clone(),
            message_id: None,
            phone: None,
            kind: "paused".to_owned(),
            code: "failure_storm".to_owned(),
            reason: reason.to_owned(),
        }];
        let mut tx = self.store.db.begin().await?;
        self.store.insert_policy_events(&mut tx, &events).await?;
        tx.commit().await?;
        crate::count_policy_events(&events);
        audit::record(
            &self.store.db,
            &NewAuditEvent {
                tenant_id: Some(tenant.clone()),
                app_id: Some(app.clone()),
                actor: Actor::System,
                action: "app.paused",
                target_type: Some("app"),
                target_id: Some(app.as_str().to_owned()),
                client_ip: None,
                request_id: None,
                detail: Some(serde_json::json!({ "reason": reason, "stop_queue": true })),
            },
        )
        .await?;
        metrics::counter!("portcullis_breaker_trips_total", "scope" => "app").increment(1);
        tracing::warn!(app = %app, %reason, "app paused by the failure-storm breaker");
        Ok(())
    }
}
