//! The static half of the guard: what a URL may look like and which addresses may be dialled.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

use crate::ip::special_range;

// Webhook URLs are stored, shown and logged; nothing legitimate comes near this.
const MAX_URL_LEN: usize = 2048;

/// What `localhost` and `*.localhost` mean, fixed by RFC 6761 §6.3; never asked of DNS.
pub(crate) const LOCALHOST_ADDRS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// Special-use suffixes refused by name, before any lookup.
///
/// Each is answered by something other than public DNS (multicast DNS on the LAN, a site's own
/// split-horizon servers, Tor) so its answers cannot be trusted to be the addresses actually
/// reached, or it can never be a public receiver at all. Operators who want an internal
/// receiver use an address inside `allowed_cidrs` or a real domain.
const RESERVED_SUFFIXES: &[(&str, &str)] = &[
    ("local", "multicast DNS (RFC 6762)"),
    ("internal", "private use (ICANN), e.g. cloud metadata"),
    ("home.arpa", "home networks (RFC 8375)"),
    ("localdomain", "the local machine"),
    ("in-addr.arpa", "reverse DNS"),
    ("ip6.arpa", "reverse DNS"),
    ("onion", "Tor (RFC 7686)"),
    ("alt", "non-DNS namespaces (RFC 9476)"),
    ("invalid", "names that never resolve (RFC 6761)"),
];

/// Why a destination was refused: a stable machine `code` and a reason fit to show the user
/// who entered the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    code: &'static str,
    reason: String,
}

impl Blocked {
    /// Builds a refusal. Reasons must not echo resolved addresses or query strings: the user
    /// who gets this back may be probing the network behind us.
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// One of `invalid_url`, `scheme`, `insecure_scheme`, `userinfo`, `port`, `no_host`,
    /// `reserved_name`, `non_public_address`, `unresolvable`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Blocked {}

/// Where outbound requests may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    /// `false` in production: only `https`.
    pub allow_http: bool,
    /// `None` allows any port (development); production uses [`EgressPolicy::PRODUCTION_PORTS`].
    pub allowed_ports: Option<Vec<u16>>,
    /// Operator allowlist of destinations that would otherwise be refused.
    pub allowed_cidrs: Vec<IpNet>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self::production()
    }
}

/// A name that is already known to be refused or to mean fixed addresses.
pub(crate) enum NameClass {
    Ordinary,
    Localhost,
}

impl EgressPolicy {
    pub const PRODUCTION_PORTS: [u16; 2] = [443, 8443];

    /// HTTPS on 443 and 8443 only, no allowlist.
    pub fn production() -> Self {
        Self {
            allow_http: false,
            allowed_ports: Some(Self::PRODUCTION_PORTS.to_vec()),
            allowed_cidrs: Vec::new(),
        }
    }

    /// HTTP allowed, any port, still no private addresses unless allowlisted.
    pub fn development() -> Self {
        Self {
            allow_http: true,
            allowed_ports: None,
            allowed_cidrs: Vec::new(),
        }
    }

    /// Static checks: scheme, userinfo, port, host syntax, reserved names and IP-literal hosts.
    /// A domain name passes here; [`crate::Egress::vet_url`] also resolves it.
    pub fn check_url(&self, raw: &str) -> Result<Url, Blocked> {
        if raw.len() > MAX_URL_LEN {
            return Err(Blocked::new(
                "invalid_url",
                format!("URL is longer than {MAX_URL_LEN} bytes"),
            ));
        }
        let url = Url::parse(raw)
            .map_err(|e| Blocked::new("invalid_url", format!("not a valid absolute URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(Blocked::new(
                    "insecure_scheme",
                    "only https URLs are allowed",
                ));
            }
            other => {
                return Err(Blocked::new(
                    "scheme",
                    format!("scheme `{other}` is not allowed; use https"),
                ));
            }
        }
        // Credentials in URLs end up in logs and listings, and `a@b` is the oldest trick for
        // making a reader see one host while the client dials another.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Blocked::new(
                "userinfo",
                "URLs must not contain a user name or password",
            ));
        }
        let Some(port) = url.port_or_known_default() else {
            return Err(Blocked::new("port", "URL has no port"));
        };
        if let Some(ports) = &self.allowed_ports
            && !ports.contains(&port)
        {
            return Err(Blocked::new(
                "port",
                format!(
                    "port {port} is not allowed (allowed: {})",
                    join_ports(ports)
                ),
            ));
        }
        match url.host() {
            None => return Err(Blocked::new("no_host", "URL has no host")),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => {
                if let NameClass::Localhost = self.check_name(name)? {
                    self.check_resolved(&LOCALHOST_ADDRS)?;
                }
            }
        }
        Ok(url)
    }

    /// Refuses non-public addresses unless they fall inside `allowed_cidrs`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Blocked> {
        if self.is_allowlisted(ip) {
            return Ok(());
        }
        match special_range(ip) {
            None => Ok(()),
            Some(range) => Err(Blocked::new(
                "non_public_address",
                format!(
                    "address {ip} is not public: {} ({})",
                    range.kind, range.cidr
                ),
            )),
        }
    }

    fn is_allowlisted(&self, ip: IpAddr) -> bool {
        // A mapped address reaches the IPv4 host it carries, so an allowlisted IPv4 range
        // covers its mapped form too.
        let canonical = ip.to_canonical();
        self.allowed_cidrs
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// Every resolved address must pass: one private record among public ones is how a
    /// hostile name gets a client to dial inside on a retry or a second connection.
    pub(crate) fn check_resolved(&self, ips: &[IpAddr]) -> Result<(), Blocked> {
        for &ip in ips {
            if self.is_allowlisted(ip) {
                continue;
            }
            if let Some(range) = special_range(ip) {
                tracing::debug!(%ip, range = range.cidr, "resolved address refused");
                // The address itself stays out of the reason: it would disclose internal DNS.
                return Err(Blocked::new(
                    "non_public_address",
                    format!("host resolves to a non-public address ({})", range.kind),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn check_name(&self, name: &str) -> Result<NameClass, Blocked> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(Blocked::new("no_host", "URL has an empty host"));
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return Ok(NameClass::Localhost);
        }
        for (suffix, why) in RESERVED_SUFFIXES {
            let under = name
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
            if under {
                return Err(Blocked::new(
                    "reserved_name",
                    format!("`.{suffix}` names are reserved for {why}"),
                ));
            }
        }
        Ok(NameClass::Ordinary)
    }
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(policy: &EgressPolicy, raw: &str) -> &'static str {
        match policy.check_url(raw) {
            Ok(_) => "ok",
            Err(b) => b.code(),
        }
    }

    #[test]
    fn production_policy() {
        let p = EgressPolicy::production();
        assert_eq!(code(&p, "https://hooks.example.com/x?y=1"), "ok");
        assert_eq!(code(&p, "https://hooks.example.com:8443/x"), "ok");
        assert_eq!(code(&p, "https://hooks.example.com:443/x"), "ok");
        assert_eq!(code(&p, "https://hooks.example.com:444/x"), "port");
        assert_eq!(code(&p, "https://hooks.example.com:80/x"), "port");
        assert_eq!(code(&p, "http://hooks.example.com/x"), "insecure_scheme");
        assert_eq!(code(&p, "ftp://hooks.example.com/x"), "scheme");
        assert_eq!(code(&p, "https://u@hooks.example.com/"), "userinfo");
        assert_eq!(code(&p, "https://:p@hooks.example.com/"), "userinfo");
        assert_eq!(code(&p, "https://hooks.example.com@127.0.0.1/"), "userinfo");
        assert_eq!(code(&p, "https://127.0.0.1/"), "non_public_address");
        assert_eq!(code(&p, "https://2130706433/"), "non_public_address");
        assert_eq!(code(&p, "https://[::1]/"), "non_public_address");
        assert_eq!(code(&p, "https://localhost/"), "non_public_address");
        assert_eq!(code(&p, "https://a.b.localhost./"), "non_public_address");
        assert_eq!(
            code(&p, "https://metadata.google.internal/"),
            "reserved_name"
        );
        assert_eq!(code(&p, "https://printer.local./"), "reserved_name");
        assert_eq!(code(&p, "https://x.home.arpa/"), "reserved_name");
        assert_eq!(code(&p, "https://notlocal/"), "ok");
        assert_eq!(code(&p, "https://internal.example.com/"), "ok");
        assert_eq!(code(&p, "https://8.8.8.8/"), "ok");
        assert_eq!(code(&p, "https://[2606:4700::1]/"), "ok");
        assert_eq!(code(&p, "not a url"), "invalid_url");
        assert_eq!(code(&p, "https://"), "invalid_url");
        let long = format!("https://a.example/{}", "x".repeat(MAX_URL_LEN));
        assert_eq!(code(&p, &long), "invalid_url");
    }

    #[test]
    fn allowlist_reopens_ranges() {
        let p = EgressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
            ..EgressPolicy::development()
        };
        assert_eq!(code(&p, "http://127.0.0.1:9000/"), "ok");
        assert_eq!(code(&p, "http://localhost:9000/"), "ok");
        assert_eq!(code(&p, "http://[::ffff:127.0.0.1]:9000/"), "ok");
        assert_eq!(code(&p, "http://127.0.0.2:9000/"), "non_public_address");
        assert!(p.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(p.check_ip("10.0.0.1".parse().unwrap()).is_err());
        let only_v4 = EgressPolicy {
            allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
            ..EgressPolicy::development()
        };
        // `localhost` also means ::1, which this allowlist does not cover.
        assert_eq!(
            code(&only_v4, "http://localhost:9000/"),
            "non_public_address"
        );
    }

    #[test]
    fn reasons_read_well() {
        let p = EgressPolicy::development();
        let b = p.check_url("http://169.254.169.254/latest").unwrap_err();
        assert_eq!(
            b.reason(),
            "address 169.254.169.254 is not public: cloud metadata (169.254.169.254/32)"
        );
        assert_eq!(b.to_string(), b.reason());
        let b = p.check_ip("::ffff:10.0.0.1".parse().unwrap()).unwrap_err();
        assert!(b.reason().contains("IPv4-mapped"), "{}", b.reason());
        let b = p
            .check_resolved(&["8.8.8.8".parse().unwrap(), "10.1.2.3".parse().unwrap()])
            .unwrap_err();
        assert_eq!(
            b.reason(),
            "host resolves to a non-public address (private-use)"
        );
    }
}
