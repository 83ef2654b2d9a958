//! An app's route: which provider connections may carry a message, in failover order.
//!
//! A route is a list of entries, each a connection with an optional scope: a channel
//! (`whatsapp` entries carry only WhatsApp messages) and a set of destination countries.
//! For one message the candidates are the entries whose scope admits it, the most
//! specific scope first (countries and channel, then countries, then channel, then
//! unscoped), and within one scope in the order the operator gave. So an app can send to
//! Canada through a Canadian carrier and everything else through Twilio, with Twilio as the
//! Canadian carrier's backup, by routing `CA` to `[carrier, twilio]` and the rest to
//! `[twilio]`.

use crate::{Channel, ConnectionId};

/// Which messages a route entry carries. Empty fields admit everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteScope {
    /// The one channel the entry carries.
    pub channel: Option<Channel>,
    /// ISO 3166-1 alpha-2 codes of destination countries, upper case, sorted.
    pub countries: Vec<String>,
}

impl RouteScope {
    /// A scope with its countries normalised (upper case, sorted, no duplicates). Refuses
    /// anything that is not two ASCII letters, so a typo cannot silently route nothing.
    pub fn new(channel: Option<Channel>, countries: &[String]) -> Result<RouteScope, String> {
        let mut list = Vec::with_capacity(countries.len());
        for c in countries {
            let c = c.trim().to_ascii_uppercase();
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "{c:?} is not a country code (two letters, ISO 3166-1, e.g. US)"
                ));
            }
            list.push(c);
        }
        list.sort();
        list.dedup();
        Ok(RouteScope {
            channel,
            countries: list,
        })
    }

    /// Whether a message on `channel` to `country` may use this entry. A number whose
    /// country is unknown matches only entries without countries.
    pub fn admits(&self, channel: Channel, country: Option<&str>) -> bool {
        self.channel.is_none_or(|c| c == channel)
            && (self.countries.is_empty()
                || country.is_some_and(|c| self.countries.iter().any(|x| x == c)))
    }

    /// Higher is more specific.
    fn specificity(&self) -> u8 {
        (u8::from(!self.countries.is_empty()) << 1) | u8::from(self.channel.is_some())
    }
}

/// One connection of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The connection.
    pub connection_id: ConnectionId,
    /// What it may carry.
    pub scope: RouteScope,
}

/// The connections that may carry a message on `channel` to `country`, in the order they
/// are tried. `entries` is in the operator's order; a connection listed under several
/// matching scopes is tried once, at its most specific place.
pub fn candidates<'a>(
    entries: &'a [RouteEntry],
    channel: Channel,
    country: Option<&str>,
) -> Vec<&'a ConnectionId> {
    let mut matching: Vec<(usize, &RouteEntry)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.scope.admits(channel, country))
        .collect();
    // Stable: within one specificity the operator's order stays.
    matching.sort_by_key(|(i, e)| (std::cmp::Reverse(e.scope.specificity()), *i));
    let mut out: Vec<&ConnectionId> = Vec::with_capacity(matching.len());
    for (_, e) in matching {
        if !out.contains(&&e.connection_id) {
            out.push(&e.connection_id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conn: &str, channel: Option<Channel>, countries: &[&str]) -> RouteEntry {
        let countries: Vec<String> = countries.iter().map(|c| c.to_string()).collect();
        RouteEntry {
            connection_id: ConnectionId::from_trusted(conn.to_owned()),
            scope: RouteScope::new(channel, &countries).unwrap(),
        }
    }

    fn ids(v: Vec<&ConnectionId>) -> Vec<&str> {
        v.into_iter().map(|c| c.as_str()).collect()
    }

    #[test]
    fn unscoped_route_keeps_the_operators_order() {
        let r = [entry("conn_a", None, &[]), entry("conn_b", None, &[])];
        assert_eq!(
            ids(candidates(&r, Channel::Sms, Some("US"))),
            ["conn_a", "conn_b"]
        );
        assert_eq!(
            ids(candidates(&r, Channel::Whatsapp, None)),
            ["conn_a", "conn_b"]
        );
    }

    #[test]
    fn specific_scopes_come_first_and_others_are_left_out() {
        let r = [
            entry("conn_twilio", None, &[]),
            entry("conn_wa", Some(Channel::Whatsapp), &[]),
            entry("conn_ca", Some(Channel::Sms), &["ca"]),
            entry("conn_twilio", Some(Channel::Sms), &["CA"]),
            entry("conn_eu", None, &["FR", "DE"]),
        ];
        assert_eq!(
            ids(candidates(&r, Channel::Sms, Some("CA"))),
            ["conn_ca", "conn_twilio"]
        );
        assert_eq!(
            ids(candidates(&r, Channel::Sms, Some("FR"))),
            ["conn_eu", "conn_twilio"]
        );
        assert_eq!(
            ids(candidates(&r, Channel::Sms, Some("US"))),
            ["conn_twilio"]
        );
        assert_eq!(
            ids(candidates(&r, Channel::Whatsapp, Some("US"))),
            ["conn_wa", "conn_twilio"]
        );
        // An unknown country matches only entries without countries.
        assert_eq!(ids(candidates(&r, Channel::Sms, None)), ["conn_twilio"]);
    }

    #[test]
    fn country_codes_are_checked_and_normalised() {
        let s = RouteScope::new(None, &["us".into(), "CA".into(), "US".into()]).unwrap();
        assert_eq!(s.countries, ["CA", "US"]);
        assert!(RouteScope::new(None, &["USA".into()]).is_err());
        assert!(RouteScope::new(None, &["1".into()]).is_err());
        assert!(RouteScope::new(None, &["É".into()]).is_err());
    }
}
