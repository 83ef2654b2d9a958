//! Which provider sends a message: the loaded provider connections, the built-in
//! simulator, and the rules that pick among them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use portcullis_domain::{AppId, ConnectionId};
use portcullis_providers::simulator::{BUILTIN_CONNECTION_ID, Simulator};
use portcullis_providers::{EventSink, Provider};
use portcullis_store::{Store, StoreError};

use crate::{PipelineConfig, PipelineError};

/// Why no provider could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// The app has no route and is not in dev mode.
    Unrouted,
}

/// The provider registry.
pub struct Routes {
    store: Store,
    dev_mode: bool,
    simulator: Arc<dyn Provider>,
    providers: RwLock<HashMap<ConnectionId, Arc<dyn Provider>>>,
    sink: RwLock<Option<EventSink>>,
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
        Ok(Routes {
            store,
            dev_mode: config.dev_mode,
            simulator: Arc::new(simulator),
            providers: RwLock::new(HashMap::new()),
            sink: RwLock::new(Some(sink)),
        })
    }

    /// The sink providers report receipts and inbound messages to (None after shutdown).
    pub fn sink(&self) -> Option<EventSink> {
        self.sink.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers a running provider connection.
    pub fn register(&self, provider: Arc<dyn Provider>) {
        self.providers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider.connection_id().clone(), provider);
    }

    /// The built-in simulator.
    pub fn simulator(&self) -> &Arc<dyn Provider> {
        &self.simulator
    }

    /// The provider for a message of `app`. Test-mode messages always go to the simulator.
    pub async fn resolve(
        &self,
        app: &AppId,
        test_mode: bool,
    ) -> Result<Result<Arc<dyn Provider>, NoRoute>, StoreError> {
        if test_mode {
            return Ok(Ok(self.simulator.clone()));
        }
        let route = portcullis_store::apps::route(&self.store.db, app).await?;
        let providers = self.providers.read().unwrap_or_else(|p| p.into_inner());
        for conn in &route {
            if conn.as_str() == BUILTIN_CONNECTION_ID {
                return Ok(Ok(self.simulator.clone()));
            }
            if let Some(p) = providers.get(conn) {
                return Ok(Ok(p.clone()));
            }
        }
        if route.is_empty() && self.dev_mode {
            return Ok(Ok(self.simulator.clone()));
        }
        Ok(Err(NoRoute::Unrouted))
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
            .cloned()
            .collect();
        for p in providers {
            let awaiting = self.store.awaiting_receipt(p.connection_id()).await?;
            p.resume(awaiting).await;
        }
        Ok(())
    }

    pub(crate) fn close(&self) {
        self.sink.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}
