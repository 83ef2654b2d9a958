//! Who is calling, from where, and over what: the client address every later layer uses
//! ([`ClientAddr`]) and the HTTPS requirement outside dev mode.
//!
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` (RFC 7239) are anyone's to
//! write, so they count only when the direct peer is inside the configured trusted-proxy
//! CIDRs. The client is then the right-most hop that is not itself a trusted proxy: every
//! hop to its right was appended by a proxy we trust, every hop to its left was written by
//! the client and may be invented.
//!
//! When a request carries both header families, `X-Forwarded-*` wins: it is what almost
//! every proxy sets, and such a proxy passes a client's `Forwarded` through untouched.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::AppState;
use crate::error::ApiError;

/// The client's address: the peer, or what trusted proxies said the peer was serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// How the connection a request came on was made. The server inserts it per listener; a
/// request without it is treated as [`Transport::Plain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS terminated by this process.
    Tls,
    /// Plain TCP on the main listener: HTTPS only if a trusted proxy says it terminated TLS.
    Plain,
    /// The optional plain listener (`listen_http`): never HTTPS, whatever a proxy says, so
    /// outside dev mode everything on it is refused.
    PlainListener,
}

/// What the peer and, if it is trusted, its forwarding headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub client: IpAddr,
    /// `Some(true)` when a trusted proxy said the client used HTTPS, `Some(false)` when it
    /// said plain HTTP, `None` when nothing trusted said anything.
    pub forwarded_https: Option<bool>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// Works out the client address and forwarded scheme of a request from `peer`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> Origin {
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d, which no IPv4 CIDR contains.
    let peer = peer.to_canonical();
    let untouched = Origin {
        client: peer,
        forwarded_https: None,
    };
    if !trusted(peer, proxies) {
        return untouched;
    }
    let xff = list(headers, &X_FORWARDED_FOR);
    let xfp = list(headers, &X_FORWARDED_PROTO);
    if !xff.is_empty() || !xfp.is_empty() {
        let hops: Vec<Option<IpAddr>> = xff.iter().map(|h| node(h)).collect();
        let (client, hop) = walk(peer, &hops, proxies);
        let forwarded_https = if xfp.is_empty() {
            None
        } else if let Some(i) = hop.filter(|_| xfp.len() == hops.len()) {
            // One scheme per hop: the one written by the proxy the client connected to.
            Some(is_https(&xfp[i]))
        } else {
            // Not aligned with the hops: only a unanimous answer is believed.
            Some(xfp.iter().all(|p| is_https(p)))
        };
        return Origin {
            client,
            forwarded_https,
        };
    }
    let elements = forwarded_elements(headers);
    if elements.is_empty() {
        return untouched;
    }
    let hops: Vec<Option<IpAddr>> = elements.iter().map(|e| e.0).collect();
    let (client, hop) = walk(peer, &hops, proxies);
    Origin {
        client,
        forwarded_https: hop.and_then(|i| elements[i].1.as_deref()).map(is_https),
    }
}

/// Walks the hops from the right past trusted proxies. Returns the client address and the
/// index of the hop it came from (the hop whose proxy faced the client). An unreadable hop
/// stops the walk: nothing to its left can be trusted, and the nearest known address
/// stands in for the client.
fn walk(peer: IpAddr, hops: &[Option<IpAddr>], proxies: &[IpNet]) -> (IpAddr, Option<usize>) {
    let mut client = peer;
    for (i, hop) in hops.iter().enumerate().rev() {
        match hop {
            Some(ip) => {
                client = *ip;
                if !trusted(*ip, proxies) {
                    return (client, Some(i));
                }
            }
            None => return (client, Some(i)),
        }
    }
    // Every hop is a trusted proxy: the left-most is as far as anyone can tell.
    (client, hops.len().checked_sub(1).map(|_| 0))
}

fn is_https(proto: &str) -> bool {
    let p = proto.trim();
    // Some proxies report WebSocket upgrades over TLS as `wss`.
    p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss")
}

/// The comma-separated entries of every occurrence of `name`, in order. A value that is not
/// text becomes an empty (unreadable) entry rather than disappearing, so it still stops a
/// walk.
fn list(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
            Err(_) => vec![String::new()],
        })
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, possibly quoted. `unknown`, obfuscated
/// identifiers (`_hidden`) and anything else are `None`.
fn node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    let ip = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once(']')?.0.parse::<IpAddr>().ok()?
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else {
        s.parse::<SocketAddr>().ok()?.ip()
    };
    Some(ip.to_canonical())
}

/// The `(for, proto)` of every element of every `Forwarded` header, left to right.
fn forwarded_elements(headers: &HeaderMap) -> Vec<(Option<IpAddr>, Option<String>)> {
    let mut out = Vec::new();
    for value in headers.get_all(&FORWARDED) {
        let Ok(text) = value.to_str() else {
            out.push((None, None));
            continue;
        };
        for element in split_unquoted(text, ',') {
            let mut for_ = None;
            let mut proto = None;
            for pair in split_unquoted(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let name = name.trim();
                if name.eq_ignore_ascii_case("for") {
                    for_ = node(&unquote(value.trim()));
                } else if name.eq_ignore_ascii_case("proto") {
                    proto = Some(unquote(value.trim()));
                }
            }
            out.push((for_, proto));
        }
    }
    out
}

/// Splits on `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// Inserts [`ClientAddr`] and, outside dev mode, refuses anything that did not arrive
/// over HTTPS with `403 https_required` (never a redirect: a client that sent a key over
/// plain HTTP has already leaked it, and following a redirect would hide that).
pub async fn client_addr(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let transport = req
        .extensions()
        .get::<Transport>()
        .copied()
        .unwrap_or(Transport::Plain);
    let origin = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| resolve(c.0.ip(), req.headers(), &state.config.trusted_proxies));
    if let Some(o) = origin {
        req.extensions_mut().insert(ClientAddr(o.client));
    }
    let forwarded = origin.and_then(|o| o.forwarded_https);
    let https = match transport {
        Transport::PlainListener => false,
        // A trusted proxy that re-encrypts may still say its client came in plain.
        Transport::Tls => forwarded.unwrap_or(true),
        Transport::Plain => forwarded.unwrap_or(false),
    };
    // Health probes carry no credential and return nothing private; load balancers send
    // them over plain HTTP to the second listener.
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    if !https && !state.config.dev_mode && !probe {
        metrics::counter!("portcullis_security_events_total", "kind" => "https_required")
            .increment(1);
        tracing::info!(target: "security", client = ?origin.map(|o| o.client), "plain HTTP refused");
        return ApiError::new(StatusCode::FORBIDDEN, "https_required", "HTTPS required")
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    const PROXY: &str = "10.0.0.5";

    fn from_proxy(pairs: &[(&str, &str)]) -> Origin {
        resolve(
            ip(PROXY),
            &headers(pairs),
            &nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]),
        )
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.8;proto=https"),
        ]);
        let o = resolve(ip("198.51.100.1"), &h, &nets(&["10.0.0.0/8"]));
        assert_eq!(o.client, ip("198.51.100.1"));
        assert_eq!(o.forwarded_https, None);
        let o = resolve(ip("198.51.100.1"), &h, &[]);
        assert_eq!(o.client, ip("198.51.100.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let o = from_proxy(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            o.client,
            ip("203.0.113.7"),
            "1.1.1.1 is the client's own claim"
        );
        assert_eq!(o.forwarded_https, Some(true));
        // Several header lines are one list.
        let o = from_proxy(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(o.client, ip("203.0.113.9"));
        assert_eq!(o.forwarded_https, None);
    }

    #[test]
    fn all_trusted_hops_give_the_left_most_and_no_hops_give_the_peer() {
        let o = from_proxy(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(o.client, ip("10.9.9.9"));
        let o = from_proxy(&[("x-forwarded-proto", "https")]);
        assert_eq!(o.client, ip(PROXY));
        assert_eq!(o.forwarded_https, Some(true));
        let o = from_proxy(&[]);
        assert_eq!(
            o,
            Origin {
                client: ip(PROXY),
                forwarded_https: None
            }
        );
    }

    #[test]
    fn an_unreadable_hop_stops_the_walk() {
        let o = from_proxy(&[("x-forwarded-for", "203.0.113.7, garbage, 10.1.1.1")]);
        assert_eq!(o.client, ip("10.1.1.1"));
        let o = from_proxy(&[("x-forwarded-for", "203.0.113.7, unknown")]);
        assert_eq!(o.client, ip(PROXY));
    }

    #[test]
    fn address_forms() {
        for (raw, want) in [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
        ] {
            let o = from_proxy(&[("x-forwarded-for", raw)]);
            assert_eq!(o.client, ip(want), "{raw}");
        }
        // A v4-mapped peer matches v4 CIDRs.
        let o = resolve(
            ip("::ffff:10.0.0.5"),
            &headers(&[("x-forwarded-for", "203.0.113.7")]),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(o.client, ip("203.0.113.7"));
    }

    #[test]
    fn the_scheme_of_the_client_facing_hop_counts() {
        // Aligned lists: the hop where the walk stopped decides, not the client's claim.
        let o = from_proxy(&[
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https, http"),
        ]);
        assert_eq!(o.forwarded_https, Some(true));
        let o = from_proxy(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("x-forwarded-proto", "https, http"),
        ]);
        assert_eq!(
            o.forwarded_https,
            Some(false),
            "the spoofed https is ignored"
        );
        // Not aligned: unanimity.
        let o = from_proxy(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https, http"),
        ]);
        assert_eq!(o.forwarded_https, Some(false));
        let o = from_proxy(&[("x-forwarded-proto", "HTTPS")]);
        assert_eq!(o.forwarded_https, Some(true));
        let o = from_proxy(&[("x-forwarded-proto", "wss")]);
        assert_eq!(o.forwarded_https, Some(true));
    }

    #[test]
    fn rfc_7239_forwarded() {
        let o = from_proxy(&[(
            "forwarded",
            r#"for=1.1.1.1;proto=https, for="[2001:db8::7]:4711";proto=https;by=10.0.0.5, for=10.2.2.2;proto=http"#,
        )]);
        assert_eq!(o.client, ip("2001:db8::7"));
        assert_eq!(o.forwarded_https, Some(true));
        let o = from_proxy(&[("forwarded", "For=203.0.113.7")]);
        assert_eq!(o.client, ip("203.0.113.7"));
        assert_eq!(o.forwarded_https, None);
        let o = from_proxy(&[("forwarded", "for=unknown;proto=https")]);
        assert_eq!(o.client, ip(PROXY));
        assert_eq!(o.forwarded_https, Some(true));
        // A quoted comma does not split elements.
        let o = from_proxy(&[("forwarded", r#"for=203.0.113.7;host="a,b";proto=https"#)]);
        assert_eq!(o.client, ip("203.0.113.7"));
        assert_eq!(o.forwarded_https, Some(true));
        // X-Forwarded-* wins over Forwarded.
        let o = from_proxy(&[
            ("forwarded", "for=198.51.100.1;proto=https"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(o.client, ip("203.0.113.7"));
        assert_eq!(o.forwarded_https, None);
    }
}
