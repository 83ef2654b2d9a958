//! A key's IP allowlist: the networks a credential may be used from.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Most networks one key may list; enough for any real deployment's egress ranges.
pub const MAX_ALLOWLIST_ENTRIES: usize = 64;

/// Networks (CIDRs) a key may be presented from. Empty means anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

/// Why an allowlist was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// An entry is neither an address nor a CIDR.
    #[error("allowed_cidrs entry {index} is not an IP address or CIDR")]
    Invalid {
        /// Position of the entry in the list.
        index: usize,
    },
    /// More entries than [`MAX_ALLOWLIST_ENTRIES`].
    #[error("allowed_cidrs may hold at most {MAX_ALLOWLIST_ENTRIES} entries")]
    TooMany,
}

impl IpAllowlist {
    /// Parses entries such as `203.0.113.0/24`, `2001:db8::/48` or a bare address (a /32 or
    /// /128). Host bits are cleared, duplicates dropped, so what is stored is canonical.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<IpAllowlist, AllowlistError> {
        if entries.len() > MAX_ALLOWLIST_ENTRIES {
            return Err(AllowlistError::TooMany);
        }
        let mut nets = Vec::with_capacity(entries.len());
        for (index, e) in entries.iter().enumerate() {
            let e = e.as_ref().trim();
            let net = e
                .parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| AllowlistError::Invalid { index })?
                .trunc();
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(IpAllowlist(nets))
    }

    /// Reads the stored form (comma-separated, as written by [`IpAllowlist::to_stored`]).
    pub fn from_stored(s: &str) -> Result<IpAllowlist, AllowlistError> {
        if s.is_empty() {
            return Ok(IpAllowlist::default());
        }
        Self::parse(&s.split(',').collect::<Vec<_>>())
    }

    /// The stored form: comma-separated CIDRs, empty for "anywhere".
    pub fn to_stored(&self) -> String {
        self.to_string()
    }

    /// Whether `ip` may use the key. An IPv4-mapped IPv6 address is judged as the IPv4
    /// address it carries.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether the key may be used from anywhere.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as CIDR strings.
    pub fn entries(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for IpAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_permits_everyone() {
        assert!(IpAllowlist::default().permits(ip("198.51.100.7")));
        assert!(IpAllowlist::from_stored("").unwrap().is_empty());
    }

    #[test]
    fn networks_and_bare_addresses() {
        let a = IpAllowlist::parse(&["203.0.113.9/24", "2001:db8::1", " 10.0.0.1 "]).unwrap();
        assert_eq!(a.to_stored(), "203.0.113.0/24,2001:db8::1/128,10.0.0.1/32");
        assert!(a.permits(ip("203.0.113.200")));
        assert!(!a.permits(ip("203.0.114.1")));
        assert!(a.permits(ip("2001:db8::1")));
        assert!(!a.permits(ip("2001:db8::2")));
        assert!(
            a.permits(ip("::ffff:10.0.0.1")),
            "mapped IPv4 is the IPv4 address"
        );
        assert_eq!(IpAllowlist::from_stored(&a.to_stored()).unwrap(), a);
    }

    #[test]
    fn refuses_garbage_and_too_many() {
        assert_eq!(
            IpAllowlist::parse(&["10.0.0.0/8", "example.com"]),
            Err(AllowlistError::Invalid { index: 1 })
        );
        assert_eq!(
            IpAllowlist::parse(&["10.0.0.0/33"]),
            Err(AllowlistError::Invalid { index: 0 })
        );
        let many: Vec<String> = (0..=MAX_ALLOWLIST_ENTRIES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert_eq!(IpAllowlist::parse(&many), Err(AllowlistError::TooMany));
    }
}
