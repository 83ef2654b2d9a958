//! Outbound HTTP that cannot be pointed inward (the SSRF guard).
//!
//! Webhook URLs come from tenants, so every request this crate makes is treated as an attempt
//! to reach something it should not: URLs are checked statically ([`EgressPolicy::check_url`]),
//! names are resolved and every answer checked ([`Egress::vet_url`]), and [`Egress::post`]
//! connects only to addresses that its own vetting resolver handed to the HTTP client at
//! connection time, so an answer that changes after the URL was saved (DNS rebinding) is
//! checked again where it matters. Redirects are never followed and proxies never used.

mod dns;
mod ip;
mod policy;
mod response;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use url::{Host, Url};

pub use crate::dns::Resolver;
pub use crate::ip::{SpecialRange, is_public, special_range};
pub use crate::policy::{Blocked, EgressPolicy};

use crate::dns::{DnsFailure, PinnedResolve, Refusal, VettingResolver};
use crate::response::{excerpt, parse_retry_after};

/// What came back from a receiver. Any status, including 3xx, is a response, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressResponse {
    pub status: u16,
    /// From `Retry-After` (delta-seconds or HTTP-date; a date in the past is zero).
    pub retry_after: Option<Duration>,
    /// At most [`EXCERPT_CHARS`] characters of the body, control characters replaced.
    pub excerpt: String,
    /// From starting the request to receiving the response head.
    pub latency: Duration,
}

/// Characters of the response body kept in [`EgressResponse::excerpt`].
pub const EXCERPT_CHARS: usize = 200;

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("blocked: {0}")]
    Blocked(Blocked),
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error("{0}")]
    Other(String),
}

impl EgressError {
    /// `blocked`, `timeout`, `connect`, `tls` or `other`: stable labels for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Blocked(_) => "blocked",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::Other(_) => "other",
        }
    }
}

/// Tuning for [`Egress::with_options`]; the defaults suit webhook delivery.
#[derive(Debug, Clone)]
pub struct EgressOptions {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Bytes of response body read at most; the rest is discarded with the connection.
    pub max_body_read: usize,
    pub user_agent: String,
}

impl Default for EgressOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            max_body_read: 4096,
            user_agent: concat!("Portcullis/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

struct Shared {
    vetting: Arc<VettingResolver>,
    client: reqwest::Client,
    max_body_read: usize,
}

/// The outbound HTTP client. Clones share one connection pool and DNS cache.
#[derive(Clone)]
pub struct Egress {
    shared: Arc<Shared>,
}

impl Egress {
    /// Builds the client with [`EgressOptions::default`]. Fails only on an unusable resolver
    /// configuration (no servers, unreadable `/etc/resolv.conf`).
    pub fn new(policy: EgressPolicy, resolver: Resolver) -> Result<Self, EgressError> {
        Self::with_options(policy, resolver, EgressOptions::default())
    }

    pub fn with_options(
        policy: EgressPolicy,
        resolver: Resolver,
        options: EgressOptions,
    ) -> Result<Self, EgressError> {
        let https_only = !policy.allow_http;
        let vetting =
            Arc::new(VettingResolver::new(policy, &resolver).map_err(EgressError::Other)?);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(PinnedResolve(Arc::clone(&vetting))))
            // A redirect would be a second destination chosen by the receiver, unvetted by the
            // URL checks; the 3xx goes back to the caller as a failed delivery instead.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would do its own resolution and dial whatever it likes.
            .no_proxy()
            .https_only(https_only)
            .referer(false)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .user_agent(options.user_agent)
            .build()
            .map_err(|e| EgressError::Other(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                vetting,
                client,
                max_body_read: options.max_body_read,
            }),
        })
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.shared.vetting.policy
    }

    /// The save-time check: [`EgressPolicy::check_url`], then every A and AAAA record of the
    /// host must pass too. Passing here does not make a later [`Egress::post`] safe by itself;
    /// `post` checks again at connection time.
    pub async fn vet_url(&self, raw: &str) -> Result<Url, Blocked> {
        let vetted = self.vet(raw).await;
        if let Err(b) = &vetted {
            let host = Url::parse(raw)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned));
            tracing::info!(target: "security", code = b.code(), host, reason = %b, "egress blocked");
        }
        vetted
    }

    async fn vet(&self, raw: &str) -> Result<Url, Blocked> {
        let url = self.policy().check_url(raw)?;
        if let Some(Host::Domain(name)) = url.host() {
            match self.shared.vetting.vetted_addrs(name).await {
                Ok(_) => {}
                Err(Refusal::Blocked(b)) => return Err(b),
                Err(Refusal::Dns(DnsFailure(why))) => {
                    return Err(Blocked::new(
                        "unresolvable",
                        format!("host name could not be resolved ({why})"),
                    ));
                }
            }
        }
        Ok(url)
    }

    /// POSTs `body` to `url`, connecting only to vetted addresses, with `timeout` covering the
    /// whole exchange. Redirects come back as responses.
    pub async fn post(
        &self,
        url: &Url,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        let result = self.send(url, headers, body, timeout).await;
        if let Err(e) = &result {
            // Host only: paths and query strings of webhook URLs often carry tokens.
            let host = url.host_str().unwrap_or("");
            match e {
                EgressError::Blocked(b) => {
                    tracing::warn!(target: "security", code = b.code(), host, reason = %b, "egress blocked");
                }
                other => {
                    tracing::debug!(class = other.class(), host, error = %other, "post failed")
                }
            }
        }
        result
    }

    async fn send(
        &self,
        url: &Url,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<EgressResponse, EgressError> {
        // IP-literal hosts never reach the client's resolver, so this is their only check; for
        // names it repeats the static rules in case the policy changed since saving.
        let url = self
            .policy()
            .check_url(url.as_str())
            .map_err(EgressError::Blocked)?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let request = self
            .shared
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .timeout(timeout);
        let mut response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => return Err(EgressError::Timeout),
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(response)) => response,
        };
        let latency = started.elapsed();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // The status is the answer; the body is only for humans, so a slow or broken body
        // leaves a shorter excerpt rather than an error.
        let limit = self.shared.max_body_read;
        let mut read = Vec::new();
        while read.len() < limit {
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    let take = chunk.len().min(limit - read.len());
                    read.extend_from_slice(&chunk[..take]);
                }
                _ => break,
            }
        }
        Ok(EgressResponse {
            status,
            retry_after,
            excerpt: excerpt(&read, EXCERPT_CHARS),
            latency,
        })
    }
}

fn classify(err: reqwest::Error) -> EgressError {
    let err = err.without_url();
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(b) = e.downcast_ref::<Blocked>() {
            return EgressError::Blocked(b.clone());
        }
        if is_tls(e) {
            return EgressError::Tls(describe(&err));
        }
        source = e.source();
    }
    if err.is_timeout() {
        EgressError::Timeout
    } else if err.is_connect() {
        EgressError::Connect(describe(&err))
    } else {
        EgressError::Other(describe(&err))
    }
}

fn is_tls(e: &(dyn StdError + 'static)) -> bool {
    let mut e = e;
    loop {
        if e.is::<rustls::Error>() {
            return true;
        }
        // The connector nests io::Errors, and `io::Error::source` skips the error it wraps,
        // so look inside explicitly.
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => e = inner,
            None => return false,
        }
    }
}

/// The error chain on one line, without the URL (it was stripped) and bounded in length.
fn describe(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    let mut line = parts.join(": ");
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes() {
        assert_eq!(
            EgressError::Blocked(Blocked::new("port", "x")).class(),
            "blocked"
        );
        assert_eq!(EgressError::Timeout.class(), "timeout");
        assert_eq!(EgressError::Connect(String::new()).class(), "connect");
        assert_eq!(EgressError::Tls(String::new()).class(), "tls");
        assert_eq!(EgressError::Other(String::new()).class(), "other");
    }

    #[test]
    fn builds_outside_a_runtime() {
        let servers = vec!["127.0.0.1:53".parse().unwrap()];
        let egress = Egress::new(EgressPolicy::default(), Resolver::Nameservers(servers)).unwrap();
        assert_eq!(egress.policy(), &EgressPolicy::production());
        assert!(Egress::new(EgressPolicy::default(), Resolver::Nameservers(vec![])).is_err());
        if std::path::Path::new("/etc/resolv.conf").exists() {
            Egress::new(EgressPolicy::default(), Resolver::System).unwrap();
        }
    }

    #[test]
    fn egress_is_cheap_to_clone_and_shareable() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<Egress>();
    }
}
