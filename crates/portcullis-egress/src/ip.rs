//! Which addresses count as "not the public internet".
//!
//! The tables follow the IANA IPv4 and IPv6 Special-Purpose Address Registries, refused whole
//! (even the few entries marked globally reachable, such as AS112 or AMT: no webhook receiver
//! lives there, and a shorter rule is easier to audit), plus the cloud metadata endpoints that
//! sit on otherwise ordinary addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A refused range that an address fell into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// The range in CIDR notation, as written in the registry.
    pub cidr: &'static str,
    /// What the range is for ("loopback", "private-use", ...).
    pub kind: &'static str,
}

struct V4 {
    base: u32,
    len: u8,
    range: SpecialRange,
}

struct V6 {
    base: u128,
    len: u8,
    range: SpecialRange,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, cidr: &'static str, kind: &'static str) -> V4 {
    V4 {
        base: u32::from_be_bytes([a, b, c, d]),
        len,
        range: SpecialRange { cidr, kind },
    }
}

const fn v6(segments: [u16; 8], len: u8, cidr: &'static str, kind: &'static str) -> V6 {
    let mut base = 0u128;
    let mut i = 0;
    while i < 8 {
        base = (base << 16) | segments[i] as u128;
        i += 1;
    }
    V6 {
        base,
        len,
        range: SpecialRange { cidr, kind },
    }
}

// More specific entries come first so the reason names the most telling range.
const V4_TABLE: &[V4] = &[
    v4(
        169,
        254,
        169,
        254,
        32,
        "169.254.169.254/32",
        "cloud metadata",
    ),
    v4(169, 254, 170, 2, 32, "169.254.170.2/32", "cloud metadata"),
    // Azure's WireServer sits on a public Microsoft address yet answers only from inside the VM.
    v4(168, 63, 129, 16, 32, "168.63.129.16/32", "cloud metadata"),
    v4(
        100,
        100,
        100,
        200,
        32,
        "100.100.100.200/32",
        "cloud metadata",
    ),
    v4(192, 0, 0, 192, 32, "192.0.0.192/32", "cloud metadata"),
    v4(0, 0, 0, 0, 8, "0.0.0.0/8", "\"this network\""),
    v4(10, 0, 0, 0, 8, "10.0.0.0/8", "private-use"),
    v4(100, 64, 0, 0, 10, "100.64.0.0/10", "shared (CGNAT)"),
    v4(127, 0, 0, 0, 8, "127.0.0.0/8", "loopback"),
    v4(169, 254, 0, 0, 16, "169.254.0.0/16", "link-local"),
    v4(172, 16, 0, 0, 12, "172.16.0.0/12", "private-use"),
    v4(192, 0, 0, 0, 24, "192.0.0.0/24", "IETF protocol assignment"),
    v4(
        192,
        0,
        2,
        0,
        24,
        "192.0.2.0/24",
        "documentation (TEST-NET-1)",
    ),
    v4(192, 31, 196, 0, 24, "192.31.196.0/24", "AS112"),
    v4(192, 52, 193, 0, 24, "192.52.193.0/24", "AMT"),
    v4(192, 88, 99, 0, 24, "192.88.99.0/24", "6to4 relay anycast"),
    v4(192, 168, 0, 0, 16, "192.168.0.0/16", "private-use"),
    v4(
        192,
        175,
        48,
        0,
        24,
        "192.175.48.0/24",
        "AS112 direct delegation",
    ),
    v4(198, 18, 0, 0, 15, "198.18.0.0/15", "benchmarking"),
    v4(
        198,
        51,
        100,
        0,
        24,
        "198.51.100.0/24",
        "documentation (TEST-NET-2)",
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        "203.0.113.0/24",
        "documentation (TEST-NET-3)",
    ),
    v4(224, 0, 0, 0, 4, "224.0.0.0/4", "multicast"),
    v4(
        255,
        255,
        255,
        255,
        32,
        "255.255.255.255/32",
        "limited broadcast",
    ),
    v4(240, 0, 0, 0, 4, "240.0.0.0/4", "reserved"),
];

const V6_TABLE: &[V6] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "::/128", "unspecified"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "::1/128", "loopback"),
    v6(
        [0, 0, 0, 0, 0, 0xffff, 0, 0],
        96,
        "::ffff:0:0/96",
        "IPv4-mapped",
    ),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "::/96", "IPv4-compatible"),
    v6(
        [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
        96,
        "64:ff9b::/96",
        "NAT64",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "64:ff9b:1::/48",
        "local-use NAT64",
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "100::/64", "discard-only"),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "2001::/32", "Teredo"),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "2001:db8::/32",
        "documentation",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "2001::/23",
        "IETF protocol assignment",
    ),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "2002::/16", "6to4"),
    v6(
        [0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0],
        48,
        "2620:4f:8000::/48",
        "AS112",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "3fff::/20",
        "documentation",
    ),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "5f00::/16", "SRv6 SID"),
    v6(
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254],
        128,
        "fd00:ec2::254/128",
        "cloud metadata",
    ),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "fc00::/7", "unique-local"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "fe80::/10", "link-local"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "fec0::/10", "site-local"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "ff00::/8", "multicast"),
];

// Only 2000::/3 is delegated for global unicast; anything outside it that the table above does
// not name (IPv4-translated ::ffff:0:0:0/96, unassigned space) has no business being a
// webhook receiver, and refusing it closes gaps a future registry entry might open.
const GLOBAL_UNICAST: SpecialRange = SpecialRange {
    cidr: "2000::/3",
    kind: "non-global-unicast",
};

const fn mask32(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

const fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<SpecialRange> {
    let bits = u32::from(ip);
    V4_TABLE
        .iter()
        .find(|e| bits & mask32(e.len) == e.base)
        .map(|e| e.range)
}

fn v6_range(ip: Ipv6Addr) -> Option<SpecialRange> {
    let bits = u128::from(ip);
    if let Some(e) = V6_TABLE.iter().find(|e| bits & mask128(e.len) == e.base) {
        return Some(e.range);
    }
    if bits & mask128(3) != 0x2000u128 << 112 {
        return Some(GLOBAL_UNICAST);
    }
    None
}

/// The refused range `ip` falls in, or `None` for a public address.
///
/// IPv4-mapped IPv6 addresses are refused as such rather than judged by the IPv4 address they
/// carry: no receiver publishes one, and a single rule leaves nothing to get wrong.
pub fn special_range(ip: IpAddr) -> Option<SpecialRange> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

/// Whether `ip` is an ordinary public address (before any operator allowlist).
pub fn is_public(ip: IpAddr) -> bool {
    special_range(ip).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        !is_public(s.parse().unwrap())
    }

    /// Each line: the first and last address of a refused range, then the addresses just
    /// outside it on both sides (which must be public).
    const V4_BOUNDARIES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        ("0.0.0.0", "0.255.255.255", None, Some("1.0.0.0")),
        (
            "10.0.0.0",
            "10.255.255.255",
            Some("9.255.255.255"),
            Some("11.0.0.0"),
        ),
        (
            "100.64.0.0",
            "100.127.255.255",
            Some("100.63.255.255"),
            Some("100.128.0.0"),
        ),
        (
            "127.0.0.0",
            "127.255.255.255",
            Some("126.255.255.255"),
            Some("128.0.0.0"),
        ),
        (
            "169.254.0.0",
            "169.254.255.255",
            Some("169.253.255.255"),
            Some("169.255.0.0"),
        ),
        (
            "172.16.0.0",
            "172.31.255.255",
            Some("172.15.255.255"),
            Some("172.32.0.0"),
        ),
        (
            "192.0.0.0",
            "192.0.0.255",
            Some("191.255.255.255"),
            Some("192.0.1.0"),
        ),
        (
            "192.0.2.0",
            "192.0.2.255",
            Some("192.0.1.255"),
            Some("192.0.3.0"),
        ),
        (
            "192.31.196.0",
            "192.31.196.255",
            Some("192.31.195.255"),
            Some("192.31.197.0"),
        ),
        (
            "192.52.193.0",
            "192.52.193.255",
            Some("192.52.192.255"),
            Some("192.52.194.0"),
        ),
        (
            "192.88.99.0",
            "192.88.99.255",
            Some("192.88.98.255"),
            Some("192.88.100.0"),
        ),
        (
            "192.168.0.0",
            "192.168.255.255",
            Some("192.167.255.255"),
            Some("192.169.0.0"),
        ),
        (
            "192.175.48.0",
            "192.175.48.255",
            Some("192.175.47.255"),
            Some("192.175.49.0"),
        ),
        (
            "198.18.0.0",
            "198.19.255.255",
            Some("198.17.255.255"),
            Some("198.20.0.0"),
        ),
        (
            "198.51.100.0",
            "198.51.100.255",
            Some("198.51.99.255"),
            Some("198.51.101.0"),
        ),
        (
            "203.0.113.0",
            "203.0.113.255",
            Some("203.0.112.255"),
            Some("203.0.114.0"),
        ),
        (
            "224.0.0.0",
            "239.255.255.255",
            Some("223.255.255.255"),
            None,
        ),
        ("240.0.0.0", "255.255.255.255", None, None),
        (
            "168.63.129.16",
            "168.63.129.16",
            Some("168.63.129.15"),
            Some("168.63.129.17"),
        ),
        ("100.100.100.200", "100.100.100.200", None, None),
    ];

    #[test]
    fn ipv4_ranges_and_their_edges() {
        for (first, last, below, above) in V4_BOUNDARIES {
            assert!(refused(first), "{first} should be refused");
            assert!(refused(last), "{last} should be refused");
            if let Some(b) = below {
                assert!(!refused(b), "{b} should be public");
            }
            if let Some(a) = above {
                assert!(!refused(a), "{a} should be public");
            }
        }
    }

    #[test]
    fn ipv4_names_the_specific_range() {
        let r = |s: &str| special_range(s.parse().unwrap()).unwrap();
        assert_eq!(r("169.254.169.254").kind, "cloud metadata");
        assert_eq!(r("169.254.1.1").kind, "link-local");
        assert_eq!(r("255.255.255.255").kind, "limited broadcast");
        assert_eq!(r("255.255.255.254").kind, "reserved");
        assert_eq!(r("100.64.0.1").cidr, "100.64.0.0/10");
        assert_eq!(r("127.0.0.1").kind, "loopback");
    }

    #[test]
    fn ordinary_public_addresses_pass() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "223.255.255.255",
            "192.0.1.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "2001:4860:4860::8888",
            "2001:200::1",
            "2003::1",
            "3ffe:ffff::1",
            "3fff:1000::1",
        ] {
            assert!(!refused(s), "{s} should be public");
        }
    }

    const V6_BOUNDARIES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        ("::", "::", None, None),
        ("::1", "::1", None, None),
        ("::ffff:0:0", "::ffff:ffff:ffff", None, None),
        ("::ffff:8.8.8.8", "::ffff:127.0.0.1", None, None),
        ("::2", "::ffff:ffff", None, None),
        ("64:ff9b::", "64:ff9b::ffff:ffff", None, None),
        (
            "64:ff9b:1::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        ("100::", "100::ffff:ffff:ffff:ffff", None, None),
        (
            "2001::",
            "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("2001:200::"),
        ),
        (
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("2001:db9::"),
        ),
        (
            "2002::",
            "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("2003::"),
        ),
        (
            "2620:4f:8000::",
            "2620:4f:8000:ffff:ffff:ffff:ffff:ffff",
            Some("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff"),
            Some("2620:4f:8001::"),
        ),
        (
            "3fff::",
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("3fff:1000::"),
        ),
        (
            "5f00::",
            "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        (
            "fc00::",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        ("fd00:ec2::254", "fd00:ec2::254", None, None),
        (
            "fe80::",
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        (
            "fec0::",
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        (
            "ff00::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            None,
        ),
        // Outside 2000::/3 altogether: IPv4-translated, unassigned space, both ends of 2000::/3.
        (
            "::ffff:0:7f00:1",
            "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            None,
            Some("2000::"),
        ),
        (
            "4000::",
            "5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            None,
        ),
    ];

    #[test]
    fn ipv6_ranges_and_their_edges() {
        for (first, last, below, above) in V6_BOUNDARIES {
            assert!(refused(first), "{first} should be refused");
            assert!(refused(last), "{last} should be refused");
            if let Some(b) = below {
                assert!(!refused(b), "{b} should be public");
            }
            if let Some(a) = above {
                assert!(!refused(a), "{a} should be public");
            }
        }
    }

    #[test]
    fn ipv6_names_the_specific_range() {
        let r = |s: &str| special_range(s.parse().unwrap()).unwrap();
        assert_eq!(r("::1").kind, "loopback");
        assert_eq!(r("::ffff:127.0.0.1").kind, "IPv4-mapped");
        assert_eq!(r("::127.0.0.1").kind, "IPv4-compatible");
        assert_eq!(r("2001:0:4136:e378:8000:63bf:3fff:fdd2").kind, "Teredo");
        assert_eq!(r("2001:db8::1").kind, "documentation");
        assert_eq!(r("2001:2::1").kind, "IETF protocol assignment");
        assert_eq!(r("fd00:ec2::254").kind, "cloud metadata");
        assert_eq!(r("fd00:ec2::253").kind, "unique-local");
        assert_eq!(r("::ffff:0:7f00:1").cidr, "2000::/3");
    }

    #[test]
    fn table_entries_are_aligned_to_their_prefix() {
        for e in V4_TABLE {
            assert_eq!(e.base & !mask32(e.len), 0, "{}", e.range.cidr);
            let (addr, len) = e.range.cidr.split_once('/').unwrap();
            assert_eq!(u32::from(addr.parse::<Ipv4Addr>().unwrap()), e.base);
            assert_eq!(len.parse::<u8>().unwrap(), e.len);
        }
        for e in V6_TABLE {
            assert_eq!(e.base & !mask128(e.len), 0, "{}", e.range.cidr);
            let (addr, len) = e.range.cidr.split_once('/').unwrap();
            assert_eq!(u128::from(addr.parse::<Ipv6Addr>().unwrap()), e.base);
            assert_eq!(len.parse::<u8>().unwrap(), e.len);
        }
    }
}
