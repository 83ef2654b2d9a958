//! Resolution whose every answer is checked, shared by save-time vetting and by the HTTP
//! client's connector so the addresses dialled are exactly the addresses vetted.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::policy::{Blocked, EgressPolicy, LOCALHOST_ADDRS, NameClass};

/// Where host names are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// The system's configuration (`/etc/resolv.conf`, and the hosts file).
    System,
    /// These name servers only, over UDP with TCP fallback; the hosts file is not consulted.
    Nameservers(Vec<SocketAddr>),
}

/// The name did not resolve; unlike [`Blocked`] this may be transient.
#[derive(Debug, Clone)]
pub(crate) struct DnsFailure(pub(crate) String);

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dns: {}", self.0)
    }
}

impl std::error::Error for DnsFailure {}

pub(crate) enum Refusal {
    Blocked(Blocked),
    Dns(DnsFailure),
}

pub(crate) struct VettingResolver {
    pub(crate) policy: EgressPolicy,
    dns: TokioResolver,
}

impl VettingResolver {
    pub(crate) fn new(policy: EgressPolicy, resolver: &Resolver) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match resolver {
            Resolver::System => TokioResolver::builder(provider)
                .map_err(|e| format!("reading the system DNS configuration: {e}"))?,
            Resolver::Nameservers(servers) => {
                if servers.is_empty() {
                    return Err("no name servers configured".into());
                }
                let name_servers = servers
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                let mut builder = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(name_servers),
                    provider,
                );
                builder.options_mut().use_hosts_file = ResolveHosts::Never;
                builder
            }
        };
        let opts = builder.options_mut();
        // Both families, always: a name is refused if any of its A or AAAA records is, so
        // stopping at the first family that answers would leave the other unchecked.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        let dns = builder
            .build()
            .map_err(|e| format!("building the DNS resolver: {e}"))?;
        Ok(Self { policy, dns })
    }

    /// Every address `host` (a domain name from a parsed URL) resolves to, after checking
    /// each one against the policy.
    pub(crate) async fn vetted_addrs(&self, host: &str) -> Result<Vec<IpAddr>, Refusal> {
        // Defensive: the HTTP connector does not call resolvers for IP literals, but if it ever
        // did, the literal must meet the same rules.
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            self.policy.check_ip(ip).map_err(Refusal::Blocked)?;
            return Ok(vec![ip]);
        }
        let ips = match self.policy.check_name(host).map_err(Refusal::Blocked)? {
            NameClass::Localhost => LOCALHOST_ADDRS.to_vec(),
            NameClass::Ordinary => self.lookup(host).await.map_err(Refusal::Dns)?,
        };
        self.policy.check_resolved(&ips).map_err(Refusal::Blocked)?;
        Ok(ips)
    }

    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
        // Fully qualified, so resolv.conf search domains never turn `hooks` into
        // `hooks.corp.internal`.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let answer = self.dns.lookup_ip(fqdn.as_str()).await.map_err(|e| {
            if e.is_no_records_found() {
                DnsFailure("host name has no A or AAAA records".into())
            } else {
                // Details stay in the operator's log; the text travels back to tenants.
                tracing::debug!(host, error = %e, "DNS lookup failed");
                DnsFailure("DNS lookup failed".into())
            }
        })?;
        let mut ips: Vec<IpAddr> = answer.iter().collect();
        ips.sort_unstable();
        ips.dedup();
        if ips.is_empty() {
            return Err(DnsFailure("host name has no A or AAAA records".into()));
        }
        Ok(ips)
    }
}

/// The HTTP client's only way to turn names into addresses.
pub(crate) struct PinnedResolve(pub(crate) Arc<VettingResolver>);

impl reqwest::dns::Resolve for PinnedResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let vetting = Arc::clone(&self.0);
        Box::pin(async move {
            match vetting.vetted_addrs(name.as_str()).await {
                // Port 0 tells the connector to use the URL's port.
                Ok(ips) => Ok(Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)))
                    as reqwest::dns::Addrs),
                Err(Refusal::Blocked(b)) => Err(b.into()),
                Err(Refusal::Dns(e)) => Err(e.into()),
            }
        })
    }
}
