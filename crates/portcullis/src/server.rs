//! Wiring: database, keyring, pipeline and router, served on a listener until a shutdown
//! token fires. Tests and `main` start the server the same way, through [`Server::start`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_api::realtime::RealtimeTokens;
use portcullis_api::{ApiConfig, AppState, auth::LastUsed};
use portcullis_crypto::Keyring;
use portcullis_egress::Egress;
use portcullis_pipeline::{Pipeline, PipelineConfig};
use portcullis_providers::simulator::SimulatorConfig;
use portcullis_store::{Db, Store};
use portcullis_webhooks::Webhooks;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A running gateway.
pub struct Server {
    pub addr: SocketAddr,
    pub store: Store,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<()>>,
}

impl Server {
    /// Connects, migrates, starts the pipeline and serves on `listener`.
    pub async fn start(
        config: &Config,
        listener: TcpListener,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Server> {
        portcullis_domain::phone::warm_up();
        let keyring = Arc::new(Keyring::new(&config.master_key()?));
        let url = config.database_url();
        if url.starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        }
        let db = Db::connect(&url).await.context("opening the database")?;
        let store = Store::new(db.clone(), keyring);
        let pipeline_config = PipelineConfig {
            dev_mode: config.dev,
            committers: match db.backend() {
                portcullis_store::Backend::Sqlite => 1,
                portcullis_store::Backend::Postgres => 4,
            },
            dispatchers: config.dispatchers.max(1),
            lease: Duration::from_secs(config.job_lease_seconds.max(1)),
            simulator: SimulatorConfig {
                delivery_delay: config.simulator_delay(),
                log_file: config.simulator_log_file.clone(),
            },
            ..PipelineConfig::default()
        };
        let pipeline = Pipeline::start(store.clone(), pipeline_config).await?;
        let egress = Egress::new(config.egress_policy()?, config.egress_resolver()?)
            .map_err(|e| anyhow::anyhow!("building the webhook client: {e}"))?;
        let webhooks = Webhooks::start(
            store.clone(),
            egress,
            config.webhook_config()?,
            pipeline.events_written(),
        );
        let realtime = Arc::new(RealtimeTokens::default());
        let last_used = Arc::new(LastUsed::default());
        let shutdown = CancellationToken::new();
        let state = AppState {
            store: store.clone(),
            pipeline: pipeline.clone(),
            config: Arc::new(ApiConfig {
                dev_mode: config.dev,
                body_limit: config.body_limit,
                metrics_token: config.metrics_token()?,
            }),
            metrics,
            last_used: last_used.clone(),
            webhooks: webhooks.clone(),
            realtime: realtime.clone(),
            bruteforce: Arc::default(),
            shutdown: shutdown.clone(),
        };
        let app = portcullis_api::router(state);
        let addr = listener.local_addr()?;

        let background =
            spawn_housekeeping(store.clone(), last_used.clone(), realtime, shutdown.clone());
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .context("serving HTTP")?;
            // Requests have drained; now let in-flight sends finish and be recorded, then
            // the last events be relayed and attempts in flight be recorded.
            pipeline.shutdown().await;
            webhooks.shutdown().await;
            let _ = background.await;
            flush_last_used(&db, &last_used).await;
            db.close().await;
            Ok(())
        });
        Ok(Server {
            addr,
            store,
            shutdown,
            handle,
        })
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, drains in-flight work and waits until everything has stopped.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.handle.await.context("server task")?
    }

    /// Waits until the server stops (after its token is cancelled).
    pub async fn wait(self) -> Result<()> {
        self.handle.await.context("server task")?
    }
}

/// How long events and finished deliveries are kept (resume cursors, the delivery log).
const EVENT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
const DELIVERY_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

fn spawn_housekeeping(
    store: Store,
    last_used: Arc<LastUsed>,
    realtime: Arc<RealtimeTokens>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let db = store.db.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut sweeps = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            flush_last_used(&db, &last_used).await;
            let now = portcullis_store::now_ms();
            realtime.sweep(now);
            sweeps += 1;
            // Hourly (the tick is 2 s).
            if sweeps.is_multiple_of(1800) {
                if let Err(e) = portcullis_store::idempotency::sweep(&db, now).await {
                    tracing::warn!(error = %e, "idempotency sweep failed");
                }
                if let Err(e) = store.sweep_deliveries(now - DELIVERY_RETENTION_MS).await {
                    tracing::warn!(error = %e, "webhook delivery sweep failed");
                }
                if let Err(e) = store.sweep_events(now - EVENT_RETENTION_MS).await {
                    tracing::warn!(error = %e, "event sweep failed");
                }
            }
        }
    })
}

async fn flush_last_used(db: &Db, last_used: &LastUsed) {
    let uses = last_used.drain();
    if let Err(e) = portcullis_store::keys::touch_last_used(db, &uses).await {
        tracing::warn!(error = %e, "recording key last use failed");
    }
}
