//! Wiring: database, keyring, pipeline and router, served on a listener until a shutdown
//! token fires. Tests and `main` start the server the same way, through [`Server::start`].
//!
//! The main listener speaks TLS when a certificate is configured ([`crate::tls`]), plain
//! HTTP otherwise; the optional `listen_http` listener is always plain. Each listener tags
//! its requests with a [`Transport`], from which the API decides whether a request came
//! over HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Extension;
use axum::serve::ListenerExt;
use metrics_exporter_prometheus::PrometheusHandle;
use portcullis_api::bruteforce::BruteForce;
use portcullis_api::client_addr::Transport;
use portcullis_api::key_reads::KeyReads;
use portcullis_api::ratelimit::RateLimits;
use portcullis_api::realtime::RealtimeTokens;
use portcullis_api::shared_counters::SharedCounters;
use portcullis_api::{ApiConfig, AppState, Shared, auth::LastUsed};
use portcullis_crypto::Keyring;
use portcullis_egress::Egress;
use portcullis_pipeline::breaker::BreakerConfig;
use portcullis_pipeline::health::CircuitConfig;
use portcullis_pipeline::{Pipeline, PipelineConfig};
use portcullis_providers::simulator::SimulatorConfig;
use portcullis_store::{Db, Store};
use portcullis_webhooks::Webhooks;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::tls::{Tls, TlsListener};

/// A running gateway.
pub struct Server {
    /// The main listener's address (TLS when a certificate is configured).
    pub addr: SocketAddr,
    /// The plain `listen_http` listener's address, when there is one.
    pub http_addr: Option<SocketAddr>,
    /// Whether the main listener terminates TLS.
    pub tls: bool,
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
        #[cfg(feature = "unguarded-benchmark-only")]
        {
            anyhow::ensure!(
                config.dev,
                "this binary was built with the unguarded-benchmark-only feature (no policy guard) and only runs in dev mode"
            );
            tracing::warn!(
                "UNGUARDED BENCHMARK BUILD: the policy guard is compiled out; never use this binary for real traffic"
            );
        }
        portcullis_domain::phone::warm_up();
        let keyring = Arc::new(Keyring::new(&config.master_key()?));
        // Everything about the perimeter is checked before the database is touched.
        let tls = match config.tls_files()? {
            Some((cert, key)) => Some(Arc::new(Tls::load(
                cert,
                key,
                config.tls_client_ca_file.as_deref(),
            )?)),
            None if config.tls_client_ca_file.is_some() => anyhow::bail!(
                "PORTCULLIS_TLS_CLIENT_CA_FILE needs PORTCULLIS_TLS_CERT_FILE and PORTCULLIS_TLS_KEY_FILE"
            ),
            None => None,
        };
        let trusted_proxies = config.trusted_proxies()?;
        if let Some(everyone) = trusted_proxies.iter().find(|n| n.prefix_len() == 0) {
            tracing::warn!(
                cidr = %everyone,
                "PORTCULLIS_TRUSTED_PROXIES trusts every address: any client can choose its own \
                 address and claim HTTPS"
            );
        }
        let http_listener = match &config.listen_http {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding PORTCULLIS_LISTEN_HTTP {addr}"))?,
            ),
            None => None,
        };
        let url = config.database_url();
        if url.starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        }
        let addr = listener.local_addr()?;
        let public_url = config.public_url(&format!(
            "{}://{addr}",
            if tls.is_some() { "https" } else { "http" }
        ))?;
        if config.public_url.is_none() && !config.dev {
            tracing::warn!(
                public_url = %public_url,
                "PORTCULLIS_PUBLIC_URL is not set: providers are told to call back the listener's own \
                 address, which they can reach only if it is public"
            );
        }
        let db = Db::connect(&url).await.context("opening the database")?;
        let store = Store::new(db.clone(), keyring);
        let pipeline_config = PipelineConfig {
            public_url,
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
            breaker: BreakerConfig {
                window: Duration::from_secs(config.breaker_window_seconds.max(1)),
                min_attempts: config.breaker_min_attempts.max(1),
                failure_ratio: config.breaker_failure_ratio.clamp(0.01, 1.0),
                connection_cooldown: Duration::from_secs(config.breaker_cooldown_seconds),
            },
            circuit: CircuitConfig {
                open_for: Duration::from_secs(config.circuit_open_seconds.max(1)),
                ..CircuitConfig::default()
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
        let rate_limits = config.rate_limits()?;
        // Shared through Redis when configured. A bad URL stops start-up; an unreachable
        // Redis does not: checks fall back to this process's counters until it answers.
        let (ratelimits, bruteforce) = match config.redis_url()? {
            Some(url) => {
                let counters = Arc::new(SharedCounters::connect(&url, &config.redis_key_prefix)?);
                counters.warm_up().await;
                (
                    RateLimits::shared(&rate_limits, counters.clone()),
                    BruteForce::shared(counters),
                )
            }
            None => (RateLimits::new(&rate_limits), BruteForce::default()),
        };
        let ratelimits = Arc::new(ratelimits);
        let realtime = Arc::new(RealtimeTokens::default());
        let last_used = Arc::new(LastUsed::default());
        let shutdown = CancellationToken::new();
        let state = AppState::new(Shared {
            store: store.clone(),
            pipeline: pipeline.clone(),
            config: Arc::new(ApiConfig {
                dev_mode: config.dev,
                body_limit: config.body_limit,
                metrics_token: config.metrics_token()?,
                trusted_proxies,
                access_token_ttl_secs: config.access_token_ttl_secs.clamp(60, 86_400),
            }),
            metrics,
            last_used: last_used.clone(),
            key_reads: KeyReads::spawn(store.db.clone()),
            webhooks: webhooks.clone(),
            realtime: realtime.clone(),
            bruteforce: Arc::new(bruteforce),
            auth_alerts: Arc::default(),
            ratelimits: ratelimits.clone(),
            shutdown: shutdown.clone(),
        });
        let app = portcullis_api::router(state);
        let http_addr = match &http_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        if let Some(a) = http_addr {
            tracing::info!(
                addr = %a,
                refuses_all = !config.dev,
                "plain HTTP listener (PORTCULLIS_LISTEN_HTTP)"
            );
        }

        let mut serving = Vec::new();
        let reloader = match &tls {
            Some(tls) => {
                let app = app.clone().layer(Extension(Transport::Tls));
                // `tap_io` only to get axum's `ConnectInfo<SocketAddr>` for a listener of
                // our own; the handshake task already set TCP_NODELAY.
                let listener =
                    TlsListener::new(listener, tls.acceptor(), shutdown.clone())?.tap_io(|_| {});
                let token = shutdown.clone();
                serving.push(tokio::spawn(async move {
                    axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                }));
                Some(tls.clone().spawn_reloader(
                    Duration::from_millis(config.tls_reload_interval_ms),
                    shutdown.clone(),
                ))
            }
            None => {
                serving.push(serve_plain(
                    listener,
                    app.clone(),
                    Transport::Plain,
                    shutdown.clone(),
                ));
                None
            }
        };
        if let Some(l) = http_listener {
            serving.push(serve_plain(
                l,
                app,
                Transport::PlainListener,
                shutdown.clone(),
            ));
        }

        let background = spawn_housekeeping(
            store.clone(),
            last_used.clone(),
            realtime,
            ratelimits,
            shutdown.clone(),
        );
        let handle = tokio::spawn(async move {
            for s in serving {
                s.await.context("listener task")?.context("serving HTTP")?;
            }
            if let Some(r) = reloader {
                let _ = r.await;
            }
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
            http_addr,
            tls: tls.is_some(),
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

fn serve_plain(
    listener: TcpListener,
    app: axum::Router,
    transport: Transport,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let app = app.layer(Extension(transport));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    })
}

/// How long events and finished deliveries are kept (resume cursors, the delivery log).
const EVENT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
const DELIVERY_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

fn spawn_housekeeping(
    store: Store,
    last_used: Arc<LastUsed>,
    realtime: Arc<RealtimeTokens>,
    ratelimits: Arc<RateLimits>,
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
            ratelimits.retain_recent();
            sweeps += 1;
            // Hourly (the tick is 2 s).
            if sweeps.is_multiple_of(1800) {
                if let Err(e) = portcullis_store::idempotency::sweep(&db, now).await {
                    tracing::warn!(error = %e, "idempotency sweep failed");
                }
                if let Err(e) = store.sweep_deliveries(now - DELIVERY_RETENTION_MS).await {
                    tracing::warn!(error = %e, "webhook delivery sweep failed");
                }
                if let Err(e) = portcullis_store::guard::prune_counters(&db, now).await {
                    tracing::warn!(error = %e, "usage counter sweep failed");
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
