//! The command line. Scripts depend on it: every command that creates or lists something
//! takes `--json` and then prints exactly one JSON document on stdout; everything else
//! (logs, warnings) goes to stderr.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use portcullis_crypto::{KeyMode, Keyring};
use portcullis_domain::{AppId, ConnectionId, KeyId, Purpose, Role, SenderId, TenantId};
use portcullis_store::{Db, Store, apps, keys, tenants};
use serde_json::json;

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Security-first messaging gateway"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory (SQLite database, dev master key).
    #[arg(long, global = true, env = "PORTCULLIS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://… or postgres://… (default: DATA_DIR/portcullis.db).
    #[arg(long, global = true, env = "PORTCULLIS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL (redis://… or rediss://…) for rate-limit and brute-force counters shared by
    /// every instance (default: in-process).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Configuration file (default: ./portcullis.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Development mode: embedded SQLite, simulator, plain HTTP on loopback, generated key.
        #[arg(long)]
        dev: bool,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "PORTCULLIS_LISTEN")]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    #[command(subcommand)]
    Tenants(TenantsCmd),
    #[command(subcommand)]
    Apps(AppsCmd),
    #[command(subcommand)]
    Keys(KeysCmd),
    #[command(subcommand)]
    Connections(ConnectionsCmd),
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// Drive a running gateway with load over HTTP and print throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Drive a running gateway and measure how fast and how promptly its events reach
    /// webhook endpoints or realtime WebSocket clients.
    BenchEvents(crate::bench_events::Args),
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCmd {
    /// Check a received webhook's signature as a receiver would (Standard Webhooks).
    /// Exits 0 when it is valid, 1 when it is not.
    Verify {
        /// The app's `whsec_…` secret (or set PORTCULLIS_WEBHOOK_SECRET, which keeps it out
        /// of the process list).
        #[arg(long, env = "PORTCULLIS_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The request's headers: a JSON object, or `name: value` lines; `@FILE` reads them
        /// from a file.
        #[arg(long)]
        headers: String,
        /// The raw request body, exactly as received; `@FILE` reads it from a file.
        #[arg(long)]
        body: String,
        /// Seconds a timestamp may be off (default 300).
        #[arg(long, default_value_t = 300)]
        tolerance: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// Create a tenant.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCmd {
    /// Create an app for a tenant.
    Create {
        #[arg(long)]
        tenant: String,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List apps.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set the app's ordered route (failover order).
    Route {
        app: String,
        #[arg(long, value_delimiter = ',', required = true)]
        connections: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change an app's allowed purposes and policy settings.
    Update {
        app: String,
        /// Allow a purpose (repeatable), e.g. marketing.
        #[arg(long = "allow-purpose")]
        allow_purpose: Vec<String>,
        /// Stop allowing a purpose (repeatable).
        #[arg(long = "deny-purpose")]
        deny_purpose: Vec<String>,
        /// `defer` or `refuse` non-essential messages in the recipient's quiet hours.
        #[arg(long)]
        quiet_hours: Option<String>,
        /// Require a consent on record for every non-essential purpose.
        #[arg(long)]
        consent_for_non_essential: Option<bool>,
        /// Destination countries allowed (ISO codes, comma-separated); `any` clears the list.
        #[arg(long)]
        allowed_countries: Option<String>,
        /// Pause or resume sending.
        #[arg(long)]
        paused: Option<bool>,
        /// Show recipients' full numbers in this app's webhooks and realtime events.
        #[arg(long)]
        webhook_full_numbers: Option<bool>,
        /// Browser origins allowed to open the realtime stream (comma-separated, e.g.
        /// https://app.example.com); `none` clears the list.
        #[arg(long)]
        realtime_origins: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add a sender (E.164 number or alphanumeric id) to the app.
    Senders {
        app: String,
        #[arg(long, required = true)]
        add: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an API key; the key is printed once.
    Create {
        #[arg(long)]
        app: String,
        #[arg(long)]
        role: String,
        /// A pcl_test_ key (its messages only reach the simulator).
        #[arg(long)]
        test: bool,
        #[arg(long)]
        json: bool,
    },
    /// List an app's keys (never the keys themselves).
    List {
        #[arg(long)]
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { key_id: String },
    /// Rotate a key; the new key is printed once.
    Rotate {
        key_id: String,
        /// Seconds the old key keeps working (max 86400).
        #[arg(long, default_value_t = 0)]
        grace_seconds: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCmd {
    /// Create a provider connection; secrets are read from the file, never from arguments.
    Create {
        #[arg(long = "type")]
        kind: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        config_file: PathBuf,
        /// Make the connection this tenant's own.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List connections (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a connection.
    Delete { id: String },
}

pub async fn run(cli: Cli) -> Result<()> {
    let mut overrides = Overrides {
        data_dir: cli.global.data_dir.clone(),
        database_url: cli.global.database_url.clone(),
        redis_url: cli.global.redis_url.clone(),
        ..Overrides::default()
    };
    if let Command::Serve { dev, listen } = &cli.command {
        if *dev {
            overrides.dev = Some(true);
        }
        overrides.listen = listen.clone();
    }
    let config = Config::load(cli.global.config.as_deref(), &overrides)?;
    crate::logging::init(
        config.log_format.as_deref(),
        config.dev,
        config.security_log_file.as_deref(),
    )?;
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Openapi => {
            println!("{}", portcullis_api::openapi::document());
            Ok(())
        }
        Command::Migrate => {
            let db = open_db(&config).await?;
            db.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Tenants(cmd) => tenants_cmd(&config, cmd).await,
        Command::Apps(cmd) => apps_cmd(&config, cmd).await,
        Command::Keys(cmd) => keys_cmd(&config, cmd).await,
        Command::Connections(cmd) => connections_cmd(&config, cmd).await,
        Command::Webhooks(cmd) => webhooks_cmd(cmd),
        Command::Bench(args) => crate::bench::run(args).await,
        Command::BenchEvents(args) => crate::bench_events::run(args).await,
    }
}

async fn open_db(config: &Config) -> Result<Db> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    }
    Db::connect(&url).await.context("opening the database")
}

async fn serve(config: Config) -> Result<()> {
    config.check_production()?;
    if config.dev {
        tracing::warn!(
            "DEV MODE: plain HTTP, simulator provider, development master key. Not for production."
        );
    }
    let listen = config.listen_addr();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let server = crate::server::Server::start(&config, listener, Some(metrics)).await?;
    if config.dev
        && let Some(b) = crate::bootstrap::bootstrap_dev(&server.store.db).await?
    {
        crate::bootstrap::print(&b, &server.addr.to_string());
    }
    tracing::info!(addr = %server.addr, "portcullis listening");
    let token = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining requests and in-flight sends");
        token.cancel();
    });
    server.wait().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn emit(json: bool, doc: serde_json::Value, human: impl FnOnce() -> String) {
    if json {
        println!("{doc}");
    } else {
        println!("{}", human());
    }
}

async fn tenants_cmd(config: &Config, cmd: TenantsCmd) -> Result<()> {
    let db = open_db(config).await?;
    match cmd {
        TenantsCmd::Create { name, json } => {
            let t = tenants::create(&db, &name).await?;
            cli_audit(
                &db,
                (Some(&t.id), None),
                "tenant.created",
                ("tenant", t.id.as_str()),
                None,
            )
            .await;
            emit(json, serde_json::to_value(&t)?, || {
                format!("created tenant {} ({})", t.id, t.name)
            });
        }
        TenantsCmd::List { json } => {
            let list = tenants::list(&db).await?;
            emit(json, json!({ "data": list }), || {
                list.iter()
                    .map(|t| format!("{}\t{}", t.id, t.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    db.close().await;
    Ok(())
}

/// Origins as browsers send them: `scheme://host[:port]`, nothing else.
fn parse_origins(list: &str) -> Result<Vec<String>> {
    if list.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let u = url::Url::parse(o).map_err(|_| anyhow::anyhow!("{o:?} is not an origin"))?;
            let origin = u.origin().ascii_serialization();
            if origin != o.trim_end_matches('/') || !matches!(u.scheme(), "https" | "http") {
                bail!("{o:?} is not an origin (scheme://host[:port], no path)");
            }
            Ok(origin)
        })
        .collect()
}

fn webhooks_cmd(cmd: WebhooksCmd) -> Result<()> {
    match cmd {
        WebhooksCmd::Verify {
            secret,
            headers,
            body,
            tolerance,
        } => {
            let read = |v: &str| -> Result<String> {
                match v.strip_prefix('@') {
                    Some(path) => {
                        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
                    }
                    None => Ok(v.to_owned()),
                }
            };
            let headers = parse_headers(&read(&headers)?)?;
            let body = read(&body)?;
            match verify_webhook(
                &secret,
                &headers,
                &body,
                tolerance,
                jiff::Timestamp::now().as_second(),
            ) {
                Ok(()) => {
                    println!("valid");
                    Ok(())
                }
                Err(reason) => {
                    println!("invalid: {reason}");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// Headers from a JSON object or `name: value` lines, names lower-cased.
fn parse_headers(text: &str) -> Result<std::collections::HashMap<String, String>> {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) {
        return Ok(map
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.to_ascii_lowercase(), v.to_owned())))
            .collect());
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect())
}

fn verify_webhook(
    secret: &str,
    headers: &std::collections::HashMap<String, String>,
    body: &str,
    tolerance: i64,
    now: i64,
) -> std::result::Result<(), String> {
    let secret = portcullis_crypto::WebhookSecret::from_whsec(secret)
        .map_err(|_| "the secret is not a whsec_ secret".to_owned())?;
    let get = |n: &str| {
        headers
            .get(n)
            .map(String::as_str)
            .ok_or_else(|| format!("missing {n} header"))
    };
    let (id, ts, sig) = (
        get("webhook-id")?,
        get("webhook-timestamp")?,
        get("webhook-signature")?,
    );
    let ts: i64 = ts
        .parse()
        .map_err(|_| "webhook-timestamp is not unix seconds".to_owned())?;
    if (now - ts).abs() > tolerance {
        return Err(format!(
            "timestamp is {} seconds from now (tolerance {tolerance})",
            now - ts
        ));
    }
    if portcullis_crypto::webhook::verify(&[secret], id, ts, body.as_bytes(), sig, now, tolerance) {
        Ok(())
    } else {
        Err("no signature matches this secret".to_owned())
    }
}

/// Records an action taken from the command line (on the server, so no client address).
/// Like the API, an action that happened is not undone because its record failed; the
/// failure is reported on stderr and in the security log.
async fn cli_audit(
    db: &Db,
    scope: (Option<&TenantId>, Option<&AppId>),
    action: &'static str,
    target: (&'static str, &str),
    detail: Option<serde_json::Value>,
) {
    let event = portcullis_store::audit::NewAuditEvent {
        tenant_id: scope.0.cloned(),
        app_id: scope.1.cloned(),
        actor: portcullis_store::audit::Actor::Cli(std::env::var("USER").ok()),
        action,
        target_type: Some(target.0),
        target_id: Some(target.1.to_owned()),
        client_ip: None,
        request_id: None,
        detail,
    };
    if let Err(e) = portcullis_store::audit::record(db, &event).await {
        tracing::error!(target: "security", error = %e, action, "recording an audit event failed");
        eprintln!("warning: the audit event for {action} could not be recorded: {e}");
    }
}

fn parse_app(s: &str) -> Result<AppId> {
    AppId::parse(s).map_err(|_| anyhow::anyhow!("{s:?} is not an app id (app_…)"))
}

async fn apps_cmd(config: &Config, cmd: AppsCmd) -> Result<()> {
    let db = open_db(config).await?;
    match cmd {
        AppsCmd::Create { tenant, name, json } => {
            let tenant = TenantId::parse(&tenant)
                .map_err(|_| anyhow::anyhow!("{tenant:?} is not a tenant id (tnt_…)"))?;
            let app = apps::create(&db, &tenant, &name)
                .await
                .map_err(|e| match e {
                    portcullis_store::StoreError::NotFound => anyhow::anyhow!("no tenant {tenant}"),
                    other => other.into(),
                })?;
            cli_audit(
                &db,
                (Some(&app.tenant_id), Some(&app.id)),
                "app.created",
                ("app", app.id.as_str()),
                None,
            )
            .await;
            emit(json, serde_json::to_value(&app)?, || {
                format!("created app {} ({})", app.id, app.name)
            });
        }
        AppsCmd::List { tenant, json } => {
            let tenant = tenant
                .map(|t| {
                    TenantId::parse(&t).map_err(|_| anyhow::anyhow!("{t:?} is not a tenant id"))
                })
                .transpose()?;
            let list = apps::list(&db, tenant.as_ref()).await?;
            emit(json, json!({ "data": list }), || {
                list.iter()
                    .map(|a| format!("{}\t{}\t{}", a.id, a.tenant_id, a.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        AppsCmd::Route {
            app,
            connections,
            json,
        } => {
            let app = parse_app(&app)?;
            let owner = apps::get_any_tenant(&db, &app)
                .await
                .map_err(|_| anyhow::anyhow!("no app {app}"))?;
            let route = connections
                .iter()
                .map(|c| {
                    ConnectionId::parse(c)
                        .map_err(|_| anyhow::anyhow!("{c:?} is not a connection id (conn_…)"))
                })
                .collect::<Result<Vec<_>>>()?;
            apps::set_route(&db, &app, &route)
                .await
                .context("setting the route (do the connections exist?)")?;
            cli_audit(
                &db,
                (Some(&owner.tenant_id), Some(&app)),
                "app.route_set",
                ("app", app.as_str()),
                Some(json!({ "route": route })),
            )
            .await;
            emit(json, json!({ "app_id": app, "route": route }), || {
                format!("route of {app} set")
            });
        }
        AppsCmd::Update {
            app,
            allow_purpose,
            deny_purpose,
            quiet_hours,
            consent_for_non_essential,
            allowed_countries,
            paused,
            webhook_full_numbers,
            realtime_origins,
            json,
        } => {
            let app_id = parse_app(&app)?;
            let mut current = apps::get_any_tenant(&db, &app_id)
                .await
                .map_err(|_| anyhow::anyhow!("no app {app_id}"))?;
            for p in &allow_purpose {
                current
                    .allowed_purposes
                    .insert(Purpose::parse(p).map_err(|e| anyhow::anyhow!("{e}"))?);
            }
            for p in &deny_purpose {
                current
                    .allowed_purposes
                    .remove(Purpose::parse(p).map_err(|e| anyhow::anyhow!("{e}"))?);
            }
            if let Some(mode) = quiet_hours {
                if !matches!(mode.as_str(), "defer" | "refuse") {
                    bail!("--quiet-hours must be defer or refuse");
                }
                current.policy.quiet_hours = mode;
            }
            if let Some(v) = consent_for_non_essential {
                current.policy.consent_for_non_essential = v;
            }
            if let Some(list) = allowed_countries {
                current.policy.allowed_countries = if list.trim().eq_ignore_ascii_case("any") {
                    None
                } else {
                    let codes: Vec<String> = list
                        .split(',')
                        .map(|c| c.trim().to_ascii_uppercase())
                        .filter(|c| !c.is_empty())
                        .collect();
                    if codes
                        .iter()
                        .any(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()))
                    {
                        bail!(
                            "--allowed-countries takes ISO 3166 two-letter codes, e.g. US,CA (or `any`)"
                        );
                    }
                    Some(codes)
                };
            }
            if let Some(v) = paused {
                current.policy.paused = v;
            }
            if let Some(v) = webhook_full_numbers {
                current.policy.webhook_full_numbers = v;
            }
            if let Some(list) = realtime_origins {
                current.policy.realtime_origins = parse_origins(&list)?;
            }
            apps::set_allowed_purposes(&db, &app_id, &current.allowed_purposes).await?;
            apps::set_policy(&db, &app_id, &current.policy).await?;
            cli_audit(
                &db,
                (Some(&current.tenant_id), Some(&app_id)),
                "app.updated",
                ("app", app_id.as_str()),
                Some(json!({ "paused": current.policy.paused, "allowed_purposes": current.allowed_purposes })),
            )
            .await;
            emit(json, serde_json::to_value(&current)?, || {
                format!("updated app {app_id}")
            });
        }
        AppsCmd::Senders { app, add, json } => {
            let app_id = parse_app(&app)?;
            let mut current = apps::get_any_tenant(&db, &app_id)
                .await
                .map_err(|_| anyhow::anyhow!("no app {app_id}"))?;
            for s in add {
                let sender = SenderId::parse(&s).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))?;
                let s = sender.as_str().to_owned();
                if !current.senders.contains(&s) {
                    current.senders.push(s);
                }
            }
            apps::set_senders(&db, &app_id, &current.senders).await?;
            cli_audit(
                &db,
                (Some(&current.tenant_id), Some(&app_id)),
                "app.senders_changed",
                ("app", app_id.as_str()),
                Some(json!({ "senders": current.senders })),
            )
            .await;
            emit(
                json,
                json!({ "app_id": app_id, "senders": current.senders }),
                || format!("senders of {app_id}: {}", current.senders.join(", ")),
            );
        }
    }
    db.close().await;
    Ok(())
}

async fn keys_cmd(config: &Config, cmd: KeysCmd) -> Result<()> {
    let db = open_db(config).await?;
    match cmd {
        KeysCmd::Create {
            app,
            role,
            test,
            json,
        } => {
            let app_id = parse_app(&app)?;
            let role = Role::parse(&role)
                .map_err(|_| anyhow::anyhow!("role must be admin, sender or reader"))?;
            let app = apps::get_any_tenant(&db, &app_id)
                .await
                .map_err(|_| anyhow::anyhow!("no app {app_id}"))?;
            let mode = if test { KeyMode::Test } else { KeyMode::Live };
            let (record, new) =
                keys::create(&db, &app.tenant_id, &app.id, role, mode, Default::default()).await?;
            cli_audit(
                &db,
                (Some(&app.tenant_id), Some(&app.id)),
                "key.created",
                ("key", record.id.as_str()),
                Some(json!({ "role": role.as_str(), "prefix": record.prefix, "test": test })),
            )
            .await;
            emit(
                json,
                json!({
                    "id": record.id, "key": new.plaintext.expose(), "prefix": record.prefix,
                    "role": record.role, "app_id": record.app_id, "tenant_id": record.tenant_id, "test": record.test,
                }),
                || {
                    format!(
                        "created key {} ({}): {}\nThis key is shown once. Store it now.",
                        record.id,
                        record.role.as_str(),
                        new.plaintext.expose()
                    )
                },
            );
        }
        KeysCmd::List { app, json } => {
            let app_id = parse_app(&app)?;
            let list = keys::list(&db, &app_id).await?;
            let now = portcullis_store::now_ms();
            let data: Vec<_> = list
                .iter()
                .map(|k| json!({
                    "id": k.id, "prefix": k.prefix, "role": k.role, "status": k.status(now), "test": k.test,
                    "created_at": k.created_at, "expires_at": k.expires_at, "last_used_at": k.last_used_at,
                }))
                .collect();
            emit(json, json!({ "data": data }), || {
                list.iter()
                    .map(|k| {
                        format!(
                            "{}\t{}\t{}\t{}",
                            k.id,
                            k.prefix,
                            k.role.as_str(),
                            k.status(now)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeysCmd::Revoke { key_id } => {
            let id = KeyId::parse(&key_id)
                .map_err(|_| anyhow::anyhow!("{key_id:?} is not a key id (key_…)"))?;
            let (tenant, app) = keys::owner(&db, &id)
                .await
                .map_err(|_| anyhow::anyhow!("no key {id}"))?;
            keys::revoke_any_app(&db, &id)
                .await
                .map_err(|_| anyhow::anyhow!("no key {id}"))?;
            cli_audit(
                &db,
                (Some(&tenant), Some(&app)),
                "key.revoked",
                ("key", id.as_str()),
                None,
            )
            .await;
            eprintln!("revoked {id}");
        }
        KeysCmd::Rotate {
            key_id,
            grace_seconds,
            json,
        } => {
            if grace_seconds > 86_400 {
                bail!("--grace-seconds must be at most 86400");
            }
            let id = KeyId::parse(&key_id)
                .map_err(|_| anyhow::anyhow!("{key_id:?} is not a key id (key_…)"))?;
            let (tenant, app) = keys::owner(&db, &id)
                .await
                .map_err(|_| anyhow::anyhow!("no key {id}"))?;
            let (record, new) =
                keys::rotate(&db, &app, &id, i64::from(grace_seconds) * 1000).await?;
            cli_audit(
                &db,
                (Some(&tenant), Some(&app)),
                "key.rotated",
                ("key", id.as_str()),
                Some(json!({ "new_key_id": record.id.as_str(), "grace_seconds": grace_seconds })),
            )
            .await;
            emit(
                json,
                json!({ "id": record.id, "key": new.plaintext.expose(), "prefix": record.prefix, "role": record.role, "replaces": id }),
                || {
                    format!(
                        "rotated {id} → {}: {}\nThis key is shown once. Store it now.",
                        record.id,
                        new.plaintext.expose()
                    )
                },
            );
        }
    }
    db.close().await;
    Ok(())
}

const CONNECTION_TYPES: [&str; 5] = ["smpp", "twilio", "ringcentral", "whatsapp", "simulator"];

async fn connections_cmd(config: &Config, cmd: ConnectionsCmd) -> Result<()> {
    let db = open_db(config).await?;
    let store = Store::new(
        db.clone(),
        std::sync::Arc::new(Keyring::new(&config.master_key()?)),
    );
    match cmd {
        ConnectionsCmd::Create {
            kind,
            name,
            config_file,
            tenant,
            json,
        } => {
            if !CONNECTION_TYPES.contains(&kind.as_str()) {
                bail!("--type must be one of {}", CONNECTION_TYPES.join(", "));
            }
            let text = std::fs::read_to_string(&config_file)
                .with_context(|| format!("reading {}", config_file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", config_file.display()))?;
            if !value.is_object() {
                bail!("{} must hold a JSON object", config_file.display());
            }
            let tenant = tenant
                .map(|t| {
                    TenantId::parse(&t).map_err(|_| anyhow::anyhow!("{t:?} is not a tenant id"))
                })
                .transpose()?;
            if let Some(t) = &tenant {
                tenants::get(&db, t)
                    .await
                    .map_err(|_| anyhow::anyhow!("no tenant {t}"))?;
            }
            let conn = store
                .create_connection(tenant.as_ref(), &kind, &name, &value)
                .await?;
            emit(json, serde_json::to_value(&conn)?, || {
                format!("created connection {} ({kind})", conn.id)
            });
        }
        ConnectionsCmd::List { json } => {
            let list = store.list_connections().await?;
            emit(json, json!({ "data": list }), || {
                list.iter()
                    .map(|c| format!("{}\t{}\t{}", c.id, c.kind, c.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ConnectionsCmd::Delete { id } => {
            let id = ConnectionId::parse(&id)
                .map_err(|_| anyhow::anyhow!("{id:?} is not a connection id"))?;
            store
                .delete_connection(&id)
                .await
                .map_err(|_| anyhow::anyhow!("no connection {id}"))?;
            eprintln!("deleted {id}");
        }
    }
    db.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_our_signature_and_names_what_is_wrong() {
        let secret = portcullis_crypto::WebhookSecret::generate();
        let whsec = secret.to_whsec_string().expose().clone();
        let body = r#"{"type":"message.sent"}"#;
        let sig = portcullis_crypto::webhook::sign(&secret, "evt_1", 1_000, body.as_bytes());
        let headers = parse_headers(&format!(
            "webhook-id: evt_1\nWebhook-Timestamp: 1000\nwebhook-signature: {sig}"
        ))
        .unwrap();
        assert_eq!(verify_webhook(&whsec, &headers, body, 300, 1_100), Ok(()));
        assert!(
            verify_webhook(&whsec, &headers, body, 300, 1_400)
                .unwrap_err()
                .contains("timestamp")
        );
        assert!(
            verify_webhook(&whsec, &headers, "{}", 300, 1_100)
                .unwrap_err()
                .contains("no signature")
        );
        let json =
            serde_json::json!({"webhook-id": "evt_1", "webhook-timestamp": "1000"}).to_string();
        let partial = parse_headers(&json).unwrap();
        assert!(
            verify_webhook(&whsec, &partial, body, 300, 1_100)
                .unwrap_err()
                .contains("webhook-signature")
        );
    }

    #[test]
    fn origins_are_scheme_host_port_only() {
        assert_eq!(
            parse_origins("https://app.example.com, http://localhost:3000").unwrap(),
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert!(parse_origins("https://app.example.com/path").is_err());
        assert!(parse_origins("app.example.com").is_err());
        assert!(parse_origins("none").unwrap().is_empty());
    }
}
