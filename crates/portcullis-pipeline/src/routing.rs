//! Which provider sends a message: the provider connections loaded from the store, the
//! built-in simulator, and the rules that pick among them.
//!
//! Stored connections of a type this build drives (Twilio) are built at start-up and, for
//! a connection created while the server runs (`portcullis connections create`), the first
//! time a route names it. Its configuration is opened only to build the provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use portcullis_domain::route;
use portcullis_domain::{AppId, Channel, ConnectionId, TenantId};
use portcullis_providers::Secret;
use portcullis_providers::factory::ProviderFactory;
use portcullis_providers::ringcentral::{StateFuture, StateStore};
use portcullis_providers::simulator::{BUILTIN_CONNECTION_ID, Simulator};
use portcullis_providers::{EventSink, Provider};
use portcullis_store::{Store, StoreError};

use crate::health::{Health, Pacer};
use crate::{PipelineConfig, PipelineError};

/// How long a connection that could not be loaded (unknown, a type this build does not
/// drive, an unusable configuration) is left alone before it is looked up again.
const UNLOADABLE_RETRY: Duration = Duration::from_secs(30);

/// A running provider and the tenant whose own connection it is (`None`: platform-wide).
#[derive(Clone)]
struct Loaded {
    provider: Arc<dyn Provider>,
    owner: Option<TenantId>,
}

/// The provider registry.
pub struct Routes {
    store: Store,
    dev_mode: bool,
    simulator: Arc<dyn Provider>,
    factory: ProviderFactory,
    providers: RwLock<HashMap<ConnectionId, Loaded>>,
    /// Connections that could not be loaded, and when that was last tried.
    unloadable: Mutex<HashMap<ConnectionId, Instant>>,
    /// Held while a provider is built, so two workers never build the same connection
    /// twice (an SMPP provider binds as soon as it exists).
    building: tokio::sync::Mutex<()>,
    sink: RwLock<Option<EventSink>>,
    /// Each connection's circuit and throttling, as this process's sends saw them.
    pub(crate) health: Health,
    /// Per-sender pacing (`sender_mps`).
    pub(crate) pacer: Pacer,
}

impl Routes {
    pub(crate) fn new(
        store: Store,
        config: &PipelineConfig,
        sink: EventSink,
    ) -> Result<Routes, PipelineError> {
        let simulator = Simulator::new(
            ConnectionId::from_trusted(BUILTIN_CONNECTION_ID.to_owned()),
            config.simulator.clone(),
            sink.clone(),
        )
        .map_err(|e| {
            PipelineError::Store(StoreError::Config(format!("simulator log file: {e}")))
        })?;
        let factory = ProviderFactory::new(config.public_url.clone())
            .with_state_store(Arc::new(StoredProviderState(store.clone())))
            .with_events(sink.clone());
        Ok(Routes {
            store,
            dev_mode: config.dev_mode,
            simulator: Arc::new(simulator),
            factory,
            providers: RwLock::new(HashMap::new()),
            unloadable: Mutex::new(HashMap::new()),
            building: tokio::sync::Mutex::new(()),
            sink: RwLock::new(Some(sink)),
            health: Health::new(config.circuit),
            pacer: Pacer::default(),
        })
    }

    /// Builds a provider for every stored connection of a type this build drives. A
    /// connection that cannot be built is logged and skipped: one bad configuration must
    /// not keep the gateway from starting.
    pub(crate) async fn load_connections(&self) -> Result<(), PipelineError> {
        for conn in self.store.list_connections().await? {
            if ProviderFactory::drives(&conn.kind) {
                self.load(&conn.id).await?;
            }
        }
        Ok(())
    }

    /// The running provider of a stored connection, built now if it is not yet.
    async fn loaded(&self, id: &ConnectionId) -> Result<Option<Loaded>, StoreError> {
        let known = self
            .providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned();
        match known {
            Some(l) => Ok(Some(l)),
            None => self.load(id).await,
        }
    }

    /// Opens a stored connection's configuration and builds its provider.
    async fn load(&self, id: &ConnectionId) -> Result<Option<Loaded>, StoreError> {
        let _building = self.building.lock().await;
        // Another worker may have built it while this one waited.
        if let Some(l) = self
            .providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Some(l.clone()));
        }
        {
            let mut unloadable = self.unloadable.lock().unwrap_or_else(|p| p.into_inner());
            match unloadable.get(id) {
                Some(at) if at.elapsed() < UNLOADABLE_RETRY => return Ok(None),
                Some(_) => {
                    unloadable.remove(id);
                }
                None => {}
            }
        }
        let (conn, config) = match self.store.connection_with_config(id).await {
            Ok(found) => found,
            Err(StoreError::NotFound) => {
                tracing::warn!(connection = %id, "a route names a connection that does not exist");
                self.mark_unloadable(id);
                return Ok(None);
            }
            // Sealed under a key this process does not hold, or damaged: not usable, and
            // not worth failing every round for.
            Err(e @ StoreError::Corrupt(_)) => {
                tracing::error!(connection = %id, error = %e, "provider connection cannot be opened");
                self.mark_unloadable(id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let built = self.factory.build(conn.id.clone(), &conn.kind, &config);
        drop(config);
        match built {
            Ok(Some(provider)) => {
                let loaded = Loaded {
                    provider,
                    owner: conn.tenant_id.clone(),
                };
                self.providers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(conn.id.clone(), loaded.clone());
                tracing::info!(connection = %conn.id, kind = %conn.kind, "provider connection loaded");
                Ok(Some(loaded))
            }
            Ok(None) => {
                tracing::warn!(
                    connection = %conn.id,
                    kind = %conn.kind,
                    "a route names a connection of a type this build does not drive"
                );
                self.mark_unloadable(id);
                Ok(None)
            }
            Err(e) => {
                tracing::error!(connection = %conn.id, kind = %conn.kind, error = %e, "provider connection cannot be used");
                self.mark_unloadable(id);
                Ok(None)
            }
        }
    }

    fn mark_unloadable(&self, id: &ConnectionId) {
        self.unloadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Instant::now());
    }

    /// The running provider of connection `id`, built now if it is not yet; `None` for a
    /// connection that does not exist or cannot be used.
    pub async fn provider(
        &self,
        id: &ConnectionId,
    ) -> Result<Option<Arc<dyn Provider>>, StoreError> {
        Ok(self.loaded(id).await?.map(|l| l.provider))
    }

    /// The sink providers report receipts and inbound messages to (None after shutdown).
    pub fn sink(&self) -> Option<EventSink> {
        self.sink.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers a running, platform-wide provider connection.
    pub fn register(&self, provider: Arc<dyn Provider>) {
        self.providers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                provider.connection_id().clone(),
                Loaded {
                    provider,
                    owner: None,
                },
            );
    }

    /// The built-in simulator.
    pub fn simulator(&self) -> &Arc<dyn Provider> {
        &self.simulator
    }

    /// The providers that may carry a message of `app` (of `tenant`) on `channel` to
    /// `country`, in failover order; empty when none may. Test-mode messages always go to
    /// the simulator. A connection a tenant owns carries that tenant's messages only: a
    /// route entry owned by another tenant is skipped, as is one that does not carry the
    /// channel.
    pub async fn candidates(
        &self,
        tenant: &TenantId,
        app: &AppId,
        test_mode: bool,
        channel: Channel,
        country: Option<&str>,
    ) -> Result<Vec<Arc<dyn Provider>>, StoreError> {
        if test_mode {
            return Ok(vec![self.simulator.clone()]);
        }
        let route = portcullis_store::apps::route(&self.store.db, app).await?;
        if route.is_empty() && self.dev_mode {
            return Ok(vec![self.simulator.clone()]);
        }
        let mut out = Vec::new();
        for conn in route::candidates(&route, channel, country) {
            let provider = if conn.as_str() == BUILTIN_CONNECTION_ID {
                self.simulator.clone()
            } else {
                let Some(loaded) = self.loaded(conn).await? else {
                    continue;
                };
                if loaded.owner.as_ref().is_some_and(|owner| owner != tenant) {
                    tracing::warn!(
                        target: "security",
                        connection = %conn,
                        app = %app,
                        "a route names another tenant's own connection; skipped"
                    );
                    continue;
                }
                loaded.provider
            };
            if provider.channels().contains(&channel) {
                out.push(provider);
            }
        }
        Ok(out)
    }

    /// Reminds every provider of the messages it accepted and has not reported on yet.
    pub(crate) async fn resume(&self) -> Result<(), PipelineError> {
        let awaiting = self
            .store
            .awaiting_receipt(self.simulator.connection_id())
            .await?;
        if !awaiting.is_empty() {
            tracing::info!(
                count = awaiting.len(),
                "simulator: re-issuing receipts after restart"
            );
        }
        self.simulator.resume(awaiting).await;
        let providers: Vec<_> = self
            .providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|l| l.provider.clone())
            .collect();
        for p in providers {
            let awaiting = self.store.awaiting_receipt(p.connection_id()).await?;
            p.resume(awaiting).await;
        }
        Ok(())
    }

    /// The state of every running provider connection, for `/readyz`: `ok`; `down:
    /// <reason>` when the provider cannot send (an SMPP connection not bound) or its circuit
    /// breaker keeps traffic off it (`down: circuit open`); `probing: circuit half-open`
    /// while a probe decides.
    pub fn connection_states(&self) -> Vec<(ConnectionId, String)> {
        let now = Instant::now();
        let mut running: Vec<(ConnectionId, Arc<dyn Provider>)> = self
            .providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, l)| (id.clone(), l.provider.clone()))
            .collect();
        running.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        running
            .into_iter()
            .map(|(id, provider)| {
                let state = match (provider.down(), self.health.state(&id, now)) {
                    (Some(reason), _) => format!("down: {reason}"),
                    (None, "open") => "down: circuit open".to_owned(),
                    (None, "half_open") => "probing: circuit half-open".to_owned(),
                    (None, _) => "ok".to_owned(),
                };
                (id, state)
            })
            .collect()
    }

    pub(crate) fn close(&self) {
        self.factory.shutdown();
        self.sink.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Providers' state (RingCentral's tokens and subscription) kept in the database, sealed:
/// the providers crate cannot reach the store, so it is handed this.
struct StoredProviderState(Store);

impl StateStore for StoredProviderState {
    fn load<'a>(
        &'a self,
        connection: &'a ConnectionId,
        name: &'a str,
    ) -> StateFuture<'a, Option<Secret>> {
        Box::pin(async move {
            self.0
                .provider_token(connection, name)
                .await
                .map(|v| v.map(Secret::new))
                .map_err(|e| e.to_string())
        })
    }

    fn save<'a>(
        &'a self,
        connection: &'a ConnectionId,
        name: &'a str,
        value: Secret,
    ) -> StateFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .put_provider_token(connection, name, value.expose_to_store())
                .await
                .map_err(|e| e.to_string())
        })
    }
}
