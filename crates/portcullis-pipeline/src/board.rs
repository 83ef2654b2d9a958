//! The guard's board: kill switches and tenant settings, kept in memory.
//!
//! Every request and every send consults the pauses, and every request needs its tenant's
//! quotas and time zone; a database round trip for each would cost more than the rest of
//! the guard together. The board is a snapshot reloaded every second (and at once after a
//! change made through this process), so a pause set on any instance, or by the CLI,
//! stops sending everywhere within about a second.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use portcullis_domain::policy::{Pause, PauseScope};
use portcullis_domain::{AppId, ConnectionId, TenantId};
use portcullis_store::guard::{self, PauseRecord};
use portcullis_store::tenants::{self, TenantSettings};
use portcullis_store::{Db, StoreError, now_ms};
use tokio_util::sync::CancellationToken;

/// How often the board is reloaded.
pub const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Snapshot {
    global: Option<Pause>,
    tenants: HashMap<String, Pause>,
    apps: HashMap<String, Pause>,
    /// Connection pauses: the reason and the end, if any.
    connections: HashMap<String, (String, Option<i64>)>,
    settings: HashMap<String, Arc<TenantSettings>>,
}

/// Pauses and tenant settings in memory.
#[derive(Debug, Default)]
pub struct Board {
    snapshot: RwLock<Arc<Snapshot>>,
    default_settings: Arc<TenantSettings>,
}

fn pause_of(r: &PauseRecord, scope: PauseScope) -> Pause {
    Pause {
        scope,
        stop_queue: r.stop_queue,
        reason: r.reason.clone(),
    }
}

impl Board {
    /// Reloads the board from the database.
    pub async fn reload(&self, db: &Db) -> Result<(), StoreError> {
        let pauses = guard::list_pauses(db).await?;
        let settings = tenants::all_settings(db).await?;
        let mut s = Snapshot::default();
        for r in &pauses {
            match r.scope.as_str() {
                "global" => s.global = Some(pause_of(r, PauseScope::Global)),
                "tenant" => {
                    s.tenants
                        .insert(r.target.clone(), pause_of(r, PauseScope::Tenant));
                }
                "app" => {
                    s.apps
                        .insert(r.target.clone(), pause_of(r, PauseScope::App));
                }
                "connection" => {
                    s.connections
                        .insert(r.target.clone(), (r.reason.clone(), r.until_at));
                }
                other => tracing::warn!(scope = other, "unknown pause scope ignored"),
            }
        }
        s.settings = settings
            .into_iter()
            .map(|(id, st)| (id.as_str().to_owned(), Arc::new(st)))
            .collect();
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        Ok(())
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The most general pause over an app: the gateway's, else its tenant's, else its own.
    pub fn pause_for(&self, tenant: &TenantId, app: &AppId) -> Option<Pause> {
        let s = self.current();
        s.global
            .clone()
            .or_else(|| s.tenants.get(tenant.as_str()).cloned())
            .or_else(|| s.apps.get(app.as_str()).cloned())
    }

    /// Whether any pause that stops a queue is in force (the send worker's fast path).
    pub fn queue_stopped_anywhere(&self) -> bool {
        let s = self.current();
        s.global.as_ref().is_some_and(|p| p.stop_queue)
            || s.tenants.values().any(|p| p.stop_queue)
            || s.apps.values().any(|p| p.stop_queue)
    }

    /// Why a provider connection is paused, if it is.
    pub fn connection_pause(&self, connection: &ConnectionId) -> Option<String> {
        let s = self.current();
        let (reason, until) = s.connections.get(connection.as_str())?;
        until.is_none_or(|u| u > now_ms()).then(|| reason.clone())
    }

    /// A tenant's settings (defaults if it has none).
    pub fn tenant_settings(&self, tenant: &TenantId) -> Arc<TenantSettings> {
        self.current()
            .settings
            .get(tenant.as_str())
            .cloned()
            .unwrap_or_else(|| self.default_settings.clone())
    }

    /// Reloads every [`REFRESH`] until `stop`.
    pub(crate) async fn keep_fresh(self: Arc<Self>, db: Db, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            match self.reload(&db).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(error = %e, "reloading pauses and tenant settings failed; keeping the last ones");
                }
                Err(_) => {}
            }
        }
    }
}
