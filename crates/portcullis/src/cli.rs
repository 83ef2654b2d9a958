//! The command line. Scripts depend on it: every command that creates or lists something
//! takes `--json` and then prints exactly one JSON document on stdout; everything else
//! (logs, warnings) goes to stderr.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use portcullis_crypto::{KeyMode, Keyring};
use portcullis_domain::route::RouteScope;
use portcullis_domain::{AppId, Channel, ConnectionId, KeyId, Purpose, Role, SenderId, TenantId};
use portcullis_pipeline::PauseTarget;
use portcullis_store::guard::{self, PauseRecord};
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
    /// Stop sending (a kill switch): the whole gateway, a tenant, an app or a provider
    /// connection. New messages are refused with `sending_paused`; with --stop-queue,
    /// messages already accepted wait too. A running server applies it within a second.
    Pause(PauseArgs),
    /// Lift a pause (set by `pause`, through the API, or by the failure-storm breaker).
    Resume(ResumeArgs),
    #[command(subcommand)]
    Pauses(PausesCmd),
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

/// What a pause applies to: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PauseTargetArgs {
    /// Every app of every tenant.
    #[arg(long)]
    pub global: bool,
    /// Every app of this tenant (tnt_…).
    #[arg(long, value_name = "TNT")]
    pub tenant: Option<String>,
    /// This app (app_…).
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// This provider connection (conn_…): its messages wait.
    #[arg(long, value_name = "CONN")]
    pub connection: Option<String>,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub target: PauseTargetArgs,
    /// Why: shown in refusals and the audit trail (1 to 500 characters).
    #[arg(long, value_parser = parse_reason)]
    pub reason: String,
    /// Also hold messages already accepted (default: they still go out).
    #[arg(long)]
    pub stop_queue: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub target: PauseTargetArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PausesCmd {
    /// List the pauses in force.
    List {
        #[arg(long)]
        json: bool,
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
    /// Change a tenant's settings: the zone its quota days start in, and its quotas (all
    /// its apps together).
    Update {
        tenant: String,
        /// IANA time zone (e.g. Europe/Berlin) whose midnight starts the tenant's quota
        /// days; `utc` restores the default.
        #[arg(long, value_name = "IANA|utc")]
        timezone: Option<String>,
        /// Segments per day, all the tenant's apps together; `none`: unlimited.
        #[arg(long, value_name = "N|none", value_parser = parse_quota)]
        daily_quota: Option<Limit>,
        /// Segments per month, all the tenant's apps together; `none`: unlimited.
        #[arg(long, value_name = "N|none", value_parser = parse_quota)]
        monthly_quota: Option<Limit>,
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
    /// Set the app's ordered route (failover order), or with --channel/--countries the
    /// route of messages on that channel or to those countries (tried before the
    /// unscoped route; an empty --connections "" removes that scope).
    Route {
        app: String,
        #[arg(long, value_delimiter = ',', required = true)]
        connections: Vec<String>,
        /// Only messages on this channel (sms or whatsapp).
        #[arg(long)]
        channel: Option<String>,
        /// Only messages to these destination countries (ISO codes, e.g. US,CA).
        #[arg(long, value_delimiter = ',')]
        countries: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change an app's allowed purposes and policy settings.
    Update(Box<AppsUpdate>),
    /// Add a sender (E.164 number or alphanumeric id) to the app.
    Senders {
        app: String,
        #[arg(long, required = true)]
        add: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

/// `apps update`: every flag is optional; only what is given changes.
#[derive(Debug, Args)]
pub struct AppsUpdate {
    pub app: String,
    /// Allow a purpose (repeatable), e.g. marketing.
    #[arg(long = "allow-purpose")]
    pub allow_purpose: Vec<String>,
    /// Stop allowing a purpose (repeatable).
    #[arg(long = "deny-purpose")]
    pub deny_purpose: Vec<String>,
    /// `defer` or `refuse` non-essential messages in the recipient's quiet hours.
    #[arg(long)]
    pub quiet_hours: Option<String>,
    /// Require a consent on record for every non-essential purpose.
    #[arg(long)]
    pub consent_for_non_essential: Option<bool>,
    /// Destination countries allowed (ISO codes, comma-separated); `any` for every country;
    /// `default` for the countries of the app's own senders (the default).
    #[arg(long)]
    pub allowed_countries: Option<String>,
    /// Pause or resume sending (the app's own kill switch).
    #[arg(long)]
    pub paused: Option<bool>,
    /// With --paused true: why (1 to 500 characters; default "paused by the operator").
    #[arg(long, requires = "paused", value_parser = parse_reason)]
    pub paused_reason: Option<String>,
    /// With --paused true: also hold messages already accepted.
    #[arg(long, requires = "paused")]
    pub stop_queue: bool,
    /// The app's segments per day; `none`: unlimited.
    #[arg(long, value_name = "N|none", value_parser = parse_quota)]
    pub daily_quota: Option<Limit>,
    /// The app's segments per month; `none`: unlimited.
    #[arg(long, value_name = "N|none", value_parser = parse_quota)]
    pub monthly_quota: Option<Limit>,
    /// At most this many non-essential messages per recipient per day; `none`: no cap.
    #[arg(long, value_name = "N|none", value_parser = parse_recipient_cap)]
    pub recipient_daily_cap: Option<Limit>,
    /// Below this many messages a minute nothing is a burst; 0 turns burst detection
    /// off.
    #[arg(long, value_name = "N")]
    pub burst_min_per_minute: Option<u32>,
    /// A minute above this many times the previous hour's average minute is a burst
    /// (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub burst_factor: Option<u32>,
    /// Messages per hour to high-risk prefixes before they are refused.
    #[arg(long, value_name = "N")]
    pub high_risk_per_hour: Option<u32>,
    /// Hold new messages for review after this many invalid-number failures in an hour;
    /// 0: off.
    #[arg(long, value_name = "N")]
    pub hold_after_invalid_failures: Option<u32>,
    /// Refuse bodies linking to known URL shorteners.
    #[arg(long, value_name = "true|false")]
    pub block_url_shorteners: Option<bool>,
    /// Refuse bodies linking to these domains or their subdomains (comma-separated, e.g.
    /// a.com,b.org); `none` clears the list.
    #[arg(long, value_name = "DOMAINS|none", value_parser = parse_domains)]
    pub blocked_domains: Option<DomainList>,
    /// Append the opt-out footer to non-essential messages.
    #[arg(long, value_name = "true|false")]
    pub opt_out_footer: Option<bool>,
    /// The opt-out footer's text (1 to 100 characters).
    #[arg(long, value_name = "TEXT", value_parser = parse_footer_text)]
    pub opt_out_footer_text: Option<String>,
    /// Show recipients' full numbers in this app's webhooks and realtime events.
    #[arg(long)]
    pub webhook_full_numbers: Option<bool>,
    /// Browser origins allowed to open the realtime stream (comma-separated, e.g.
    /// https://app.example.com); `none` clears the list.
    #[arg(long)]
    pub realtime_origins: Option<String>,
    #[arg(long)]
    pub json: bool,
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
    /// Show a connection (never its secrets) and the receipts kept for it unmatched.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a connection's configuration; a running gateway uses it from its next start.
    Update {
        id: String,
        #[arg(long)]
        config_file: PathBuf,
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
        Command::Pause(args) => pause_cmd(&config, args).await,
        Command::Resume(args) => resume_cmd(&config, args).await,
        Command::Pauses(PausesCmd::List { json }) => pauses_list(&config, json).await,
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
        TenantsCmd::Update {
            tenant,
            timezone,
            daily_quota,
            monthly_quota,
            json,
        } => {
            let id = parse_tenant(&tenant)?;
            let timezone = timezone.map(|z| parse_timezone(&z)).transpose()?;
            let current = tenants::get(&db, &id)
                .await
                .map_err(|_| anyhow::anyhow!("no tenant {id}"))?;
            let mut settings = current.settings.clone();
            if let Some(zone) = timezone {
                settings.timezone = zone;
            }
            if let Some(Limit(v)) = daily_quota {
                settings.daily_segment_quota = v;
            }
            if let Some(Limit(v)) = monthly_quota {
                settings.monthly_segment_quota = v;
            }
            tenants::set_settings(&db, &id, &settings)
                .await
                .map_err(|e| match e {
                    portcullis_store::StoreError::NotFound => anyhow::anyhow!("no tenant {id}"),
                    other => other.into(),
                })?;
            cli_audit(
                &db,
                (Some(&id), None),
                "tenant.updated",
                ("tenant", id.as_str()),
                Some(json!({ "settings": settings })),
            )
            .await;
            let t = tenants::get(&db, &id).await?;
            emit(json, serde_json::to_value(&t)?, || {
                let limit =
                    |q: Option<u64>| q.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                format!(
                    "updated tenant {} ({})\ntimezone\t{}\ndaily quota\t{}\nmonthly quota\t{}",
                    t.id,
                    t.name,
                    t.settings.timezone.as_deref().unwrap_or("UTC"),
                    limit(t.settings.daily_segment_quota),
                    limit(t.settings.monthly_segment_quota),
                )
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

/// A limit given as `N` or `none` (unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

fn parse_limit(v: &str, max: u64) -> std::result::Result<Limit, String> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Limit(Some(n))),
        Ok(n) if n > max => Err(format!("at most {max}, or `none` for no limit")),
        _ => Err("expected a positive whole number, or `none` for no limit".to_owned()),
    }
}

/// `--daily-quota` / `--monthly-quota`: segments, or `none`.
fn parse_quota(v: &str) -> std::result::Result<Limit, String> {
    // i64::MAX: the counters are signed 64-bit integers in the database.
    parse_limit(v, i64::MAX as u64)
}

/// `--recipient-daily-cap`: messages, or `none`.
fn parse_recipient_cap(v: &str) -> std::result::Result<Limit, String> {
    parse_limit(v, u64::from(u32::MAX))
}

/// A pause's reason, as `POST /v1/app/pause` accepts it.
fn parse_reason(v: &str) -> std::result::Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 500 || v.chars().any(char::is_control) {
        return Err("a reason is 1 to 500 characters, without control characters".to_owned());
    }
    Ok(v.to_owned())
}

/// `--opt-out-footer-text`.
fn parse_footer_text(v: &str) -> std::result::Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 100 || v.chars().any(char::is_control) {
        return Err("the footer is 1 to 100 characters, without control characters".to_owned());
    }
    Ok(v.to_owned())
}

/// `--blocked-domains`: domain names, or `none` (an empty list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainList(pub Vec<String>);

fn parse_domains(v: &str) -> std::result::Result<DomainList, String> {
    if v.trim().eq_ignore_ascii_case("none") {
        return Ok(DomainList(Vec::new()));
    }
    let mut out: Vec<String> = Vec::new();
    for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let domain = d.to_ascii_lowercase();
        check_domain(&domain).map_err(|why| format!("{d:?} is not a domain name: {why}"))?;
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    if out.is_empty() {
        return Err("expected domain names (e.g. a.com,b.org), or `none`".to_owned());
    }
    Ok(DomainList(out))
}

/// A bare domain name: labels of `a-z`, `0-9` and `-` joined by dots, at least two labels.
fn check_domain(d: &str) -> std::result::Result<(), &'static str> {
    if d.contains("://") {
        return Err("give the domain alone, without a scheme");
    }
    if d.contains(['/', '?', '#']) {
        return Err("give the domain alone, without a path");
    }
    if d.contains(['@', ':']) {
        return Err("give the domain alone, without user or port");
    }
    if d.len() > 253 {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err("a domain has at least one dot (e.g. example.com)");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("every label between dots is 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(
                "labels hold only letters a-z, digits and hyphens (use punycode, xn--…, for other scripts)",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label neither starts nor ends with a hyphen");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("an IP address or a numeric top-level domain is not a domain name");
    }
    Ok(())
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

fn parse_tenant(s: &str) -> Result<TenantId> {
    TenantId::parse(s).map_err(|_| anyhow::anyhow!("{s:?} is not a tenant id (tnt_…)"))
}

/// `--timezone`: an IANA zone by its canonical name, or `None` for `utc` (the default).
fn parse_timezone(z: &str) -> Result<Option<String>> {
    let z = z.trim();
    if z.eq_ignore_ascii_case("utc") {
        return Ok(None);
    }
    let tz = jiff::tz::TimeZone::get(z).map_err(|_| {
        anyhow::anyhow!("--timezone: {z:?} is not an IANA time zone (e.g. Europe/Berlin, or utc)")
    })?;
    Ok(Some(tz.iana_name().unwrap_or(z).to_owned()))
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
            channel,
            countries,
            json,
        } => {
            let app = parse_app(&app)?;
            let owner = apps::get_any_tenant(&db, &app)
                .await
                .map_err(|_| anyhow::anyhow!("no app {app}"))?;
            let channel = channel
                .map(|c| {
                    Channel::parse(&c)
                        .map_err(|_| anyhow::anyhow!("--channel must be sms or whatsapp"))
                })
                .transpose()?;
            let scope = RouteScope::new(channel, &countries).map_err(|e| anyhow::anyhow!(e))?;
            let route = connections
                .iter()
                .filter(|c| !c.is_empty())
                .map(|c| {
                    ConnectionId::parse(c)
                        .map_err(|_| anyhow::anyhow!("{c:?} is not a connection id (conn_…)"))
                })
                .collect::<Result<Vec<_>>>()?;
            apps::set_route(&db, &app, &scope, &route)
                .await
                .context("setting the route (do the connections exist?)")?;
            let scope_json = json!({
                "channel": scope.channel.map(|c| c.as_str()),
                "countries": scope.countries,
            });
            cli_audit(
                &db,
                (Some(&owner.tenant_id), Some(&app)),
                "app.route_set",
                ("app", app.as_str()),
                Some(json!({ "route": route, "scope": scope_json })),
            )
            .await;
            emit(
                json,
                json!({ "app_id": app, "route": route, "scope": scope_json }),
                || format!("route of {app} set"),
            );
        }
        AppsCmd::Update(update) => {
            let AppsUpdate {
                app,
                allow_purpose,
                deny_purpose,
                quiet_hours,
                consent_for_non_essential,
                allowed_countries,
                paused,
                paused_reason,
                stop_queue,
                daily_quota,
                monthly_quota,
                recipient_daily_cap,
                burst_min_per_minute,
                burst_factor,
                high_risk_per_hour,
                hold_after_invalid_failures,
                block_url_shorteners,
                blocked_domains,
                opt_out_footer,
                opt_out_footer_text,
                webhook_full_numbers,
                realtime_origins,
                json,
            } = *update;
            if paused != Some(true) && (paused_reason.is_some() || stop_queue) {
                bail!("--paused-reason and --stop-queue go with --paused true");
            }
            let app_id = parse_app(&app)?;
            let mut current = apps::get_any_tenant(&db, &app_id)
                .await
                .map_err(|_| anyhow::anyhow!("no app {app_id}"))?;
            // Everything is checked before anything is written: a bad value changes nothing.
            for p in &allow_purpose {
                current.allowed_purposes.insert(
                    Purpose::parse(p).map_err(|e| anyhow::anyhow!("--allow-purpose: {e}"))?,
                );
            }
            for p in &deny_purpose {
                current
                    .allowed_purposes
                    .remove(Purpose::parse(p).map_err(|e| anyhow::anyhow!("--deny-purpose: {e}"))?);
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
                let choice = list.trim().to_ascii_lowercase();
                current.policy.allow_all_countries = choice == "any";
                current.policy.allowed_countries = if choice == "any" || choice == "default" {
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
                            "--allowed-countries takes ISO 3166 two-letter codes, e.g. US,CA (or `any`, or `default`)"
                        );
                    }
                    Some(codes)
                };
            }
            if let Some(v) = webhook_full_numbers {
                current.policy.webhook_full_numbers = v;
            }
            if let Some(list) = realtime_origins {
                current.policy.realtime_origins =
                    parse_origins(&list).context("--realtime-origins")?;
            }
            if let Some(Limit(v)) = daily_quota {
                current.policy.daily_segment_quota = v;
            }
            if let Some(Limit(v)) = monthly_quota {
                current.policy.monthly_segment_quota = v;
            }
            if let Some(Limit(v)) = recipient_daily_cap {
                // parse_recipient_cap keeps it within u32.
                current.policy.recipient_daily_cap = v.and_then(|n| u32::try_from(n).ok());
            }
            if let Some(v) = burst_min_per_minute {
                current.policy.burst_min_per_minute = v;
            }
            if let Some(v) = burst_factor {
                current.policy.burst_factor = v;
            }
            if let Some(v) = high_risk_per_hour {
                current.policy.high_risk_per_hour = v;
            }
            if let Some(v) = hold_after_invalid_failures {
                current.policy.hold_after_invalid_failures = v;
            }
            if let Some(v) = block_url_shorteners {
                current.policy.block_url_shorteners = v;
            }
            if let Some(DomainList(list)) = blocked_domains {
                current.policy.blocked_domains = list;
            }
            if let Some(v) = opt_out_footer {
                current.policy.opt_out_footer = v;
            }
            if let Some(text) = opt_out_footer_text {
                current.policy.opt_out_footer_text = text;
            }
            apps::set_allowed_purposes(&db, &app_id, &current.allowed_purposes).await?;
            apps::set_policy(&db, &app_id, &current.policy).await?;
            cli_audit(
                &db,
                (Some(&current.tenant_id), Some(&app_id)),
                "app.updated",
                ("app", app_id.as_str()),
                Some(json!({ "policy": current.policy, "allowed_purposes": current.allowed_purposes })),
            )
            .await;
            if let Some(v) = paused {
                let reason = paused_reason.as_deref().unwrap_or(DEFAULT_PAUSE_REASON);
                set_app_pause(&db, &current, v, reason, stop_queue).await?;
            }
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
            let value = connection_config(&kind, &config_file)?;
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
        ConnectionsCmd::Show { id, json } => {
            let id = connection_id(&id)?;
            let conn = store
                .connection(&id)
                .await
                .map_err(|_| anyhow::anyhow!("no connection {id}"))?;
            let kept = store.unmatched_receipts(&id, 20).await?;
            let mut shown = serde_json::to_value(&conn)?;
            shown["unmatched_receipts"] = serde_json::to_value(&kept)?;
            emit(json, shown, || {
                format!(
                    "{}\t{}\t{}\n{} unmatched receipt(s) kept",
                    conn.id, conn.kind, conn.name, kept.count
                )
            });
        }
        ConnectionsCmd::Update { id, config_file } => {
            let id = connection_id(&id)?;
            let conn = store
                .connection(&id)
                .await
                .map_err(|_| anyhow::anyhow!("no connection {id}"))?;
            let value = connection_config(&conn.kind, &config_file)?;
            store.update_connection_config(&id, &value).await?;
            eprintln!("updated {id}");
        }
        ConnectionsCmd::Delete { id } => {
            let id = connection_id(&id)?;
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

fn connection_id(id: &str) -> Result<ConnectionId> {
    ConnectionId::parse(id).map_err(|_| anyhow::anyhow!("{id:?} is not a connection id"))
}

/// A connection's configuration file, read and checked for its type now rather than at
/// the first send; the error names fields, never values.
fn connection_config(kind: &str, file: &std::path::Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    if !value.is_object() {
        bail!("{} must hold a JSON object", file.display());
    }
    portcullis_providers::factory::ProviderFactory::check_config(kind, &value)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    Ok(value)
}

/// The reason of a pause set with `apps update --paused true` and no `--paused-reason`.
const DEFAULT_PAUSE_REASON: &str = "paused by the operator";

/// `apps update --paused`: the app's kill switch, as `POST /v1/app/pause` sets it.
async fn set_app_pause(
    db: &Db,
    app: &apps::App,
    paused: bool,
    reason: &str,
    stop_queue: bool,
) -> anyhow::Result<()> {
    let scope = (Some(&app.tenant_id), Some(&app.id));
    if paused {
        guard::set_pause(
            db,
            &PauseRecord {
                scope: "app".to_owned(),
                target: app.id.as_str().to_owned(),
                stop_queue,
                reason: reason.to_owned(),
                source: "cli".to_owned(),
                created_at: portcullis_store::now_ms(),
                until_at: None,
            },
        )
        .await?;
        cli_audit(
            db,
            scope,
            "app.paused",
            ("app", app.id.as_str()),
            Some(json!({ "reason": reason, "stop_queue": stop_queue })),
        )
        .await;
    } else if guard::clear_pause(db, "app", app.id.as_str()).await? {
        cli_audit(db, scope, "app.resumed", ("app", app.id.as_str()), None).await;
    }
    Ok(())
}

/// A pause's target, checked against the database, with the tenant and app its audit
/// events belong to.
struct Resolved {
    target: PauseTarget,
    tenant: Option<TenantId>,
    app: Option<AppId>,
}

impl Resolved {
    /// The audit action (`gateway.paused`, `app.resumed`, …) and target.
    fn audit(&self, verb: &str) -> (&'static str, (&'static str, &str)) {
        let (scope, id) = self.target.parts();
        let action = match (scope, verb) {
            ("global", "paused") => "gateway.paused",
            ("global", _) => "gateway.resumed",
            ("tenant", "paused") => "tenant.paused",
            ("tenant", _) => "tenant.resumed",
            ("app", "paused") => "app.paused",
            ("app", _) => "app.resumed",
            (_, "paused") => "connection.paused",
            _ => "connection.resumed",
        };
        let target = match scope {
            "global" => ("gateway", "global"),
            "tenant" => ("tenant", id),
            "app" => ("app", id),
            _ => ("connection", id),
        };
        (action, target)
    }
}

/// Parses `--global | --tenant | --app | --connection` and checks the target exists.
async fn resolve_target(db: &Db, args: &PauseTargetArgs) -> Result<Resolved> {
    if let Some(t) = &args.tenant {
        let id = parse_tenant(t)?;
        tenants::get(db, &id)
            .await
            .map_err(|_| anyhow::anyhow!("no tenant {id}"))?;
        return Ok(Resolved {
            target: PauseTarget::Tenant(id.clone()),
            tenant: Some(id),
            app: None,
        });
    }
    if let Some(a) = &args.app {
        let id = parse_app(a)?;
        let app = apps::get_any_tenant(db, &id)
            .await
            .map_err(|_| anyhow::anyhow!("no app {id}"))?;
        return Ok(Resolved {
            target: PauseTarget::App(id.clone()),
            tenant: Some(app.tenant_id),
            app: Some(id),
        });
    }
    if let Some(c) = &args.connection {
        let id = ConnectionId::parse(c)
            .map_err(|_| anyhow::anyhow!("{c:?} is not a connection id (conn_…)"))?;
        // Listing reads no sealed column, so any keyring will do: pausing needs no master key.
        let store = Store::new(
            db.clone(),
            std::sync::Arc::new(Keyring::new(&portcullis_crypto::MasterKey::generate())),
        );
        let conn = store
            .list_connections()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| anyhow::anyhow!("no connection {id}"))?;
        return Ok(Resolved {
            target: PauseTarget::Connection(id),
            tenant: conn.tenant_id,
            app: None,
        });
    }
    // clap's group requires exactly one target.
    Ok(Resolved {
        target: PauseTarget::Global,
        tenant: None,
        app: None,
    })
}

async fn pause_cmd(config: &Config, args: PauseArgs) -> Result<()> {
    if args.stop_queue && args.target.connection.is_some() {
        bail!(
            "--stop-queue applies to --global, --tenant and --app (a paused connection's messages always wait)"
        );
    }
    let db = open_db(config).await?;
    let resolved = resolve_target(&db, &args.target).await?;
    let (scope, target) = resolved.target.parts();
    guard::set_pause(
        &db,
        &PauseRecord {
            scope: scope.to_owned(),
            target: target.to_owned(),
            stop_queue: args.stop_queue,
            reason: args.reason.clone(),
            source: "cli".to_owned(),
            created_at: portcullis_store::now_ms(),
            until_at: None,
        },
    )
    .await?;
    let (action, audit_target) = resolved.audit("paused");
    cli_audit(
        &db,
        (resolved.tenant.as_ref(), resolved.app.as_ref()),
        action,
        audit_target,
        Some(json!({ "reason": args.reason, "stop_queue": args.stop_queue })),
    )
    .await;
    emit(
        args.json,
        json!({ "scope": scope, "target": target, "stop_queue": args.stop_queue, "reason": args.reason }),
        || {
            format!(
                "paused {}{}: {}",
                describe(scope, target),
                if args.stop_queue {
                    " (queue stopped)"
                } else {
                    ""
                },
                args.reason
            )
        },
    );
    db.close().await;
    Ok(())
}

async fn resume_cmd(config: &Config, args: ResumeArgs) -> Result<()> {
    let db = open_db(config).await?;
    let resolved = resolve_target(&db, &args.target).await?;
    let (scope, target) = resolved.target.parts();
    let resumed = guard::clear_pause(&db, scope, target).await?;
    if resumed {
        let (action, audit_target) = resolved.audit("resumed");
        cli_audit(
            &db,
            (resolved.tenant.as_ref(), resolved.app.as_ref()),
            action,
            audit_target,
            None,
        )
        .await;
    }
    emit(
        args.json,
        json!({ "scope": scope, "target": target, "resumed": resumed }),
        || {
            if resumed {
                format!("resumed {}", describe(scope, target))
            } else {
                format!("{} was not paused", describe(scope, target))
            }
        },
    );
    db.close().await;
    Ok(())
}

async fn pauses_list(config: &Config, json: bool) -> Result<()> {
    let db = open_db(config).await?;
    let list = guard::list_pauses(&db).await?;
    let data: Vec<_> = list
        .iter()
        .map(|p| {
            json!({
                "scope": p.scope, "target": p.target, "stop_queue": p.stop_queue, "reason": p.reason,
                "source": p.source, "created_at": p.created_at, "until_at": p.until_at,
            })
        })
        .collect();
    emit(json, json!({ "data": data }), || {
        if list.is_empty() {
            return "no pauses in force".to_owned();
        }
        list.iter()
            .map(|p| {
                format!(
                    "{}\t{}\t{}\t{}",
                    describe(&p.scope, &p.target),
                    if p.stop_queue { "queue stopped" } else { "-" },
                    p.source,
                    p.reason
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    db.close().await;
    Ok(())
}

/// `the gateway`, `app app_…`.
fn describe(scope: &str, target: &str) -> String {
    if scope == "global" {
        "the gateway".to_owned()
    } else {
        format!("{scope} {target}")
    }
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

    #[test]
    fn domains_are_bare_lowercase_names() {
        assert_eq!(
            parse_domains("Evil.COM, b.org,evil.com").unwrap(),
            DomainList(vec!["evil.com".to_owned(), "b.org".to_owned()])
        );
        assert_eq!(parse_domains("none").unwrap(), DomainList(Vec::new()));
        assert!(parse_domains("xn--bcher-kva.example").is_ok());
        for bad in [
            "https://evil.com",
            "evil.com/path",
            "localhost",
            "evil..com",
            "-evil.com",
            "evil_corp.com",
            "1.2.3.4",
            "evil.com:8080",
            "bücher.de",
            "",
            " , ",
        ] {
            assert!(parse_domains(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_reasons_footers_and_zones() {
        assert_eq!(parse_quota("100").unwrap(), Limit(Some(100)));
        assert_eq!(parse_quota("NONE").unwrap(), Limit(None));
        for bad in ["0", "-1", "1.5", "lots", ""] {
            assert!(parse_quota(bad).is_err(), "{bad:?}");
        }
        assert!(parse_recipient_cap("4294967296").is_err());
        assert_eq!(parse_reason("  incident 42 ").unwrap(), "incident 42");
        assert!(parse_reason(" ").is_err());
        assert!(parse_reason("a\nb").is_err());
        assert!(parse_reason(&"x".repeat(501)).is_err());
        assert_eq!(
            parse_footer_text("Reply STOP to opt out").unwrap(),
            "Reply STOP to opt out"
        );
        assert!(parse_footer_text(&"x".repeat(101)).is_err());
        assert!(parse_footer_text("STOP\u{7}").is_err());
        assert_eq!(parse_timezone("UTC").unwrap(), None);
        assert_eq!(
            parse_timezone("europe/berlin").unwrap().as_deref(),
            Some("Europe/Berlin")
        );
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn pause_takes_exactly_one_target() {
        use clap::Parser as _;
        let parse = |args: &[&str]| Cli::try_parse_from([&["portcullis"], args].concat());
        assert!(parse(&["pause", "--reason", "x"]).is_err());
        assert!(parse(&["pause", "--global", "--app", "app_x", "--reason", "x"]).is_err());
        assert!(
            parse(&["pause", "--global"]).is_err(),
            "a reason is required"
        );
        assert!(parse(&["pause", "--global", "--reason", "x", "--stop-queue"]).is_ok());
        assert!(parse(&["resume", "--tenant", "tnt_x", "--json"]).is_ok());
        assert!(parse(&["resume"]).is_err());
        assert!(parse(&["apps", "update", "app_x", "--stop-queue"]).is_err());
    }
}
