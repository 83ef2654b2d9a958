//! Layered configuration: compiled-in defaults, then `portcullis.toml`, then `PORTCULLIS_*`
//! environment variables, then command-line flags. Every secret may also come from a file
//! named by `NAME_FILE`. Production start-up fails fast, with a sentence naming what to
//! set, when something it needs is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use portcullis_crypto::{MasterKey, Secret};
use serde::{Deserialize, Serialize};

/// Every setting, after layering.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub dev: bool,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) served on `listen`; TLS is off without it.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to: mutual TLS.
    pub tls_client_ca_file: Option<PathBuf>,
    /// How often the certificate and key files are checked for changes.
    pub tls_reload_interval_ms: u64,
    /// A second, plain-HTTP listener; outside dev mode it refuses every request.
    pub listen_http: Option<String>,
    /// The base URL providers call back (`https://gateway.example.com`, optionally with a
    /// path prefix); default: the main listener's own URL.
    pub public_url: Option<String>,
    /// CIDRs (comma-separated) whose forwarding headers are believed.
    pub trusted_proxies: Option<String>,
    pub metrics_token: Option<String>,
    pub metrics_token_file: Option<PathBuf>,
    pub log_format: Option<String>,
    /// Security events, as JSON lines, also to this file.
    pub security_log_file: Option<PathBuf>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Lifetime of access tokens from `POST /v1/oauth/token`, in seconds.
    pub access_token_ttl_secs: u64,
    /// Delay before the simulator reports a receipt.
    pub simulator_delay_ms: u64,
    /// Append-only record of every submission the simulator accepted (for tests).
    pub simulator_log_file: Option<PathBuf>,
    /// Seconds a send job stays leased to a worker.
    pub job_lease_seconds: u64,
    pub dispatchers: usize,
    /// The failure-storm breaker: at least this many sends in the window, of which at
    /// least `breaker_failure_ratio` failed, pause the app (or rest the connection).
    pub breaker_min_attempts: u32,
    pub breaker_failure_ratio: f64,
    pub breaker_window_seconds: u64,
    /// How long a connection tripped by the breaker rests.
    pub breaker_cooldown_seconds: u64,
    /// How long a connection's circuit stays open before a probe (doubling on each failed
    /// probe, up to five minutes).
    pub circuit_open_seconds: u64,
    /// CIDRs of otherwise-refused webhook destinations (comma-separated).
    pub webhook_allowed_cidrs: Option<String>,
    /// Permit `http://` webhook URLs (default: only in dev mode).
    pub webhook_allow_http: Option<bool>,
    /// Ports webhook URLs may use (comma-separated; default 443,8443, any in dev mode).
    pub webhook_allowed_ports: Option<String>,
    /// Nameservers (`ip:port`, comma-separated) to resolve webhook hosts with, instead of
    /// the system's.
    pub webhook_dns_servers: Option<String>,
    /// Delays in milliseconds before each retry of a webhook delivery (comma-separated).
    pub webhook_retry_schedule_ms: Option<String>,
    /// A receiver must answer within this.
    pub webhook_timeout_ms: u64,
    /// Rate limits (`100/s`, `6000/m`, `100/s,burst=200`); unset: unlimited.
    pub rate_limit_per_ip: Option<String>,
    pub rate_limit_per_key: Option<String>,
    pub rate_limit_per_app: Option<String>,
    pub rate_limit_per_tenant: Option<String>,
    /// Redis (`redis://`, `rediss://`) for rate-limit and brute-force counters shared by
    /// every instance; unset: counted in each process. A secret (it may hold a password).
    pub redis_url: Option<String>,
    pub redis_url_file: Option<PathBuf>,
    /// Every Redis key starts with `{redis_key_prefix}:`; instances that should share
    /// counters use the same one.
    pub redis_key_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dev: false,
            data_dir: PathBuf::from("./data"),
            database_url: None,
            listen: None,
            master_key: None,
            master_key_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_reload_interval_ms: 5_000,
            listen_http: None,
            public_url: None,
            trusted_proxies: None,
            metrics_token: None,
            metrics_token_file: None,
            log_format: None,
            security_log_file: None,
            body_limit: 102_400,
            access_token_ttl_secs: 900,
            simulator_delay_ms: 200,
            simulator_log_file: None,
            job_lease_seconds: 30,
            dispatchers: 2,
            breaker_min_attempts: 50,
            breaker_failure_ratio: 0.5,
            breaker_window_seconds: 300,
            breaker_cooldown_seconds: 300,
            circuit_open_seconds: 10,
            webhook_allowed_cidrs: None,
            webhook_allow_http: None,
            webhook_allowed_ports: None,
            webhook_dns_servers: None,
            webhook_retry_schedule_ms: None,
            webhook_timeout_ms: 10_000,
            rate_limit_per_ip: None,
            rate_limit_per_key: None,
            rate_limit_per_app: None,
            rate_limit_per_tenant: None,
            redis_url: None,
            redis_url_file: None,
            redis_key_prefix: "portcullis".to_owned(),
        }
    }
}

/// Flags the command line may set on top of the file and the environment.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
}

impl Config {
    /// Layers defaults, `portcullis.toml` (or `config_file`), the environment and `flags`.
    pub fn load(config_file: Option<&Path>, flags: &Overrides) -> Result<Config> {
        let file = config_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("portcullis.toml"));
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(&file))
            .merge(Env::prefixed("PORTCULLIS_"))
            .merge(Serialized::defaults(flags));
        figment
            .extract()
            .context("reading configuration (portcullis.toml and PORTCULLIS_* variables)")
    }

    /// The database URL: explicit, or the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("portcullis.db").display()),
        }
    }

    pub fn listen_addr(&self) -> String {
        self.listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
    }

    /// The base URL providers call back: `PORTCULLIS_PUBLIC_URL` without its trailing slash,
    /// or else `listener_url` (the main listener's own URL). Kept as written, not
    /// normalized: providers sign the URL exactly as they were given it.
    pub fn public_url(&self, listener_url: &str) -> Result<String> {
        let Some(raw) = self
            .public_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(listener_url.to_owned());
        };
        let bad = |why: &str| {
            anyhow::anyhow!(
                "PORTCULLIS_PUBLIC_URL {why}: set it to the base URL providers reach this gateway at, \
                 like https://gateway.example.com"
            )
        };
        let url = url::Url::parse(raw).map_err(|_| bad("is not a URL"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(bad("must be an http(s) URL with a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not carry credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or a fragment"));
        }
        Ok(raw.trim_end_matches('/').to_owned())
    }

    /// The trusted-proxy CIDRs (single addresses allowed).
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>> {
        comma_list(
            &self.trusted_proxies,
            "TRUSTED_PROXIES",
            "a CIDR",
            parse_cidr,
        )
    }

    /// The certificate and key files, when TLS is configured.
    pub fn tls_files(&self) -> Result<Option<(&Path, &Path)>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => bail!(
                "PORTCULLIS_TLS_CERT_FILE is set but PORTCULLIS_TLS_KEY_FILE is not: set both, to the PEM \
                 certificate chain and its private key"
            ),
            (None, Some(_)) => bail!(
                "PORTCULLIS_TLS_KEY_FILE is set but PORTCULLIS_TLS_CERT_FILE is not: set both, to the PEM \
                 certificate chain and its private key"
            ),
        }
    }

    /// Where webhooks may go: the SSRF guard's policy.
    pub fn egress_policy(&self) -> Result<portcullis_egress::EgressPolicy> {
        let allowed_cidrs = comma_list(
            &self.webhook_allowed_cidrs,
            "WEBHOOK_ALLOWED_CIDRS",
            "a CIDR",
            parse_cidr,
        )?;
        let ports = comma_list(
            &self.webhook_allowed_ports,
            "WEBHOOK_ALLOWED_PORTS",
            "a port",
            |p| p.parse::<u16>().ok(),
        )?;
        let allowed_ports = if !ports.is_empty() {
            Some(ports)
        } else if self.dev {
            None
        } else {
            Some(portcullis_egress::EgressPolicy::PRODUCTION_PORTS.to_vec())
        };
        Ok(portcullis_egress::EgressPolicy {
            allow_http: self.webhook_allow_http.unwrap_or(self.dev),
            allowed_ports,
            allowed_cidrs,
        })
    }

    /// The resolver for webhook hosts.
    pub fn egress_resolver(&self) -> Result<portcullis_egress::Resolver> {
        let servers = comma_list(
            &self.webhook_dns_servers,
            "WEBHOOK_DNS_SERVERS",
            "ip:port",
            |s| s.parse::<std::net::SocketAddr>().ok(),
        )?;
        Ok(if servers.is_empty() {
            portcullis_egress::Resolver::System
        } else {
            portcullis_egress::Resolver::Nameservers(servers)
        })
    }

    pub fn rate_limits(&self) -> Result<portcullis_api::ratelimit::RateLimitConfig> {
        let parse = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(portcullis_api::ratelimit::Rate::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("PORTCULLIS_{name}: {e}"))
        };
        Ok(portcullis_api::ratelimit::RateLimitConfig {
            per_ip: parse("RATE_LIMIT_PER_IP", &self.rate_limit_per_ip)?,
            per_key: parse("RATE_LIMIT_PER_KEY", &self.rate_limit_per_key)?,
            per_app: parse("RATE_LIMIT_PER_APP", &self.rate_limit_per_app)?,
            per_tenant: parse("RATE_LIMIT_PER_TENANT", &self.rate_limit_per_tenant)?,
        })
    }

    pub fn webhook_config(&self) -> Result<portcullis_webhooks::WebhookConfig> {
        let mut c = portcullis_webhooks::WebhookConfig {
            timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            ..Default::default()
        };
        if self.webhook_retry_schedule_ms.is_some() {
            c.retry_schedule = comma_list(
                &self.webhook_retry_schedule_ms,
                "WEBHOOK_RETRY_SCHEDULE_MS",
                "milliseconds",
                |p| p.parse::<u64>().ok().map(Duration::from_millis),
            )?;
        }
        Ok(c)
    }

    pub fn simulator_delay(&self) -> Duration {
        Duration::from_millis(self.simulator_delay_ms)
    }

    /// The master key from `PORTCULLIS_MASTER_KEY` or `PORTCULLIS_MASTER_KEY_FILE`; in dev
    /// mode, failing those, the one kept in the data dir (generated on first use).
    pub fn master_key(&self) -> Result<MasterKey> {
        if let Some(v) = secret_value(
            self.master_key.as_deref(),
            self.master_key_file.as_deref(),
            "PORTCULLIS_MASTER_KEY",
        )? {
            return MasterKey::from_base64(v.expose())
                .map_err(|e| anyhow::anyhow!("PORTCULLIS_MASTER_KEY: {e}"));
        }
        let dev_file = self.data_dir.join("master.key");
        if self.dev {
            return load_or_create_dev_key(&dev_file);
        }
        if dev_file.exists() {
            // CLI commands run against a dev data dir use the key kept there.
            let text = std::fs::read_to_string(&dev_file)
                .with_context(|| format!("reading {}", dev_file.display()))?;
            return MasterKey::from_base64(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dev_file.display()));
        }
        bail!(
            "no master key: set PORTCULLIS_MASTER_KEY (base64 of 32 random bytes, e.g. from `openssl rand -base64 32`) \
             or PORTCULLIS_MASTER_KEY_FILE, or run with --dev for a development key"
        )
    }

    /// The Redis URL from `PORTCULLIS_REDIS_URL` or `PORTCULLIS_REDIS_URL_FILE`.
    pub fn redis_url(&self) -> Result<Option<Secret<String>>> {
        Ok(secret_value(
            self.redis_url.as_deref(),
            self.redis_url_file.as_deref(),
            "PORTCULLIS_REDIS_URL",
        )?
        .filter(|url| !url.expose().is_empty()))
    }

    pub fn metrics_token(&self) -> Result<Option<Secret<String>>> {
        secret_value(
            self.metrics_token.as_deref(),
            self.metrics_token_file.as_deref(),
            "PORTCULLIS_METRICS_TOKEN",
        )
    }

    /// Production start-up checks. Dev mode skips them (and says so loudly).
    pub fn check_production(&self) -> Result<()> {
        if self.dev {
            return Ok(());
        }
        self.master_key()?;
        let tls = self.tls_files()?.is_some();
        if !tls && self.trusted_proxies()?.is_empty() {
            bail!(
                "refusing to serve plain HTTP in production: set PORTCULLIS_TLS_CERT_FILE and \
                 PORTCULLIS_TLS_KEY_FILE to terminate TLS here, or PORTCULLIS_TRUSTED_PROXIES to the CIDRs of the \
                 TLS-terminating proxy in front of Portcullis (or use --dev on a development machine)"
            );
        }
        Ok(())
    }
}

/// A comma-separated setting (`PORTCULLIS_<name>`), each item parsed; blanks are skipped.
fn comma_list<T>(
    value: &Option<String>,
    name: &str,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>> {
    value
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| parse(p).with_context(|| format!("PORTCULLIS_{name}: {p:?} is not {what}")))
        .collect()
}

/// A CIDR, or a single address as its /32 or /128.
fn parse_cidr(c: &str) -> Option<ipnet::IpNet> {
    c.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .ok()
}

/// A secret from its variable or from the file its `_FILE` variable names.
fn secret_value(
    value: Option<&str>,
    file: Option<&Path>,
    name: &str,
) -> Result<Option<Secret<String>>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("set either {name} or {name}_FILE, not both"),
        (Some(v), None) => Ok(Some(Secret::new(v.trim().to_owned()))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {name}_FILE {}", path.display()))?;
            Ok(Some(Secret::new(text.trim().to_owned())))
        }
        (None, None) => Ok(None),
    }
}

fn load_or_create_dev_key(path: &Path) -> Result<MasterKey> {
    if path.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return MasterKey::from_base64(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = MasterKey::generate();
    write_private(path, key.to_base64().expose().as_bytes())?;
    tracing::warn!(
        path = %path.display(),
        "DEV MODE: generated a master key and stored it next to the data. Anyone who can read this \
         file can decrypt every message. Never use --dev in production."
    );
    Ok(key)
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
