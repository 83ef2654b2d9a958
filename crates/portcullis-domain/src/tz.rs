//! Phone number → candidate IANA time zones.
//!
//! The `phonenumber` crate does not ship libphonenumber's time-zone mapper, so this module
//! carries libphonenumber's own data: `resources/timezones/map_data.txt` of
//! google/libphonenumber (Apache-2.0), kept verbatim in `data/timezones.txt` and embedded at
//! compile time. Each line is `<E.164 digit prefix>|<zone>&<zone>…`; the longest prefix of
//! a number's digits wins. `data/timezones_overrides.txt` corrects the entries of that (2018)
//! generation that upstream has since fixed, and a few it still gets wrong, each with its
//! reason. A prefix that is just the country calling code (`1`, `7`, `61`)
//! lists every zone of the country (or of every country sharing the code), so a number the
//! data cannot pin to one area still gets its country's zones.
//!
//! Zone names are resolved against the IANA database bundled into the binary (jiff's
//! `tzdb-bundle-always`), never against the host's `/usr/share/zoneinfo`: results do not
//! depend on the machine and the crate does no file I/O.

use std::collections::HashMap;
use std::sync::LazyLock;

use jiff::tz::{TimeZone, TimeZoneDatabase};

use crate::E164;

/// libphonenumber's time-zone map, verbatim after one header line naming its source.
const MAP_DATA: &str = include_str!("../data/timezones.txt");

/// The project's corrections to [`MAP_DATA`], each with its reason (same format; an entry
/// replaces the one with the same prefix or adds one).
const OVERRIDES_DATA: &str = include_str!("../data/timezones_overrides.txt");

/// Prefix (digits, no `+`) → zones, parsed once: the upstream map with the overrides applied.
static MAP: LazyLock<HashMap<&'static str, Box<[&'static str]>>> = LazyLock::new(|| {
    let mut map = parse_map(MAP_DATA);
    map.extend(parse_map(OVERRIDES_DATA));
    map
});

/// The longest prefix in the data, to bound the lookup.
static MAX_PREFIX_LEN: LazyLock<usize> =
    LazyLock::new(|| MAP.keys().map(|k| k.len()).max().unwrap_or(0));

/// Every zone named in the data, resolved once against the bundled IANA database.
static ZONES: LazyLock<HashMap<&'static str, TimeZone>> = LazyLock::new(|| {
    let db = TimeZoneDatabase::bundled();
    let mut zones = HashMap::new();
    for name in MAP.values().flat_map(|zones| zones.iter().copied()) {
        if !zones.contains_key(name)
            && let Ok(tz) = db.get(name)
        {
            zones.insert(name, tz);
        }
    }
    zones
});

fn parse_map(text: &'static str) -> HashMap<&'static str, Box<[&'static str]>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let (prefix, zones) = line.split_once('|')?;
            let zones: Box<[&'static str]> = zones
                .split('&')
                .map(str::trim)
                .filter(|z| !z.is_empty())
                .collect();
            (!prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) && !zones.is_empty())
                .then_some((prefix, zones))
        })
        .collect()
}

/// The candidate IANA time zones of a number: the zones of the longest prefix of its digits
/// (after `+`) found in libphonenumber's map, in the data's (alphabetical) order. Several
/// zones mean the data cannot tell which one the recipient is in. Empty when no prefix
/// matches (non-geographic codes such as `+800`, `+882`).
pub fn zones_for(e164: &E164) -> Vec<&'static str> {
    let digits = e164.as_str().strip_prefix('+').unwrap_or(e164.as_str());
    let longest = digits.len().min(*MAX_PREFIX_LEN);
    (1..=longest)
        .rev()
        .find_map(|len| MAP.get(digits.get(..len)?))
        .map(|zones| zones.to_vec())
        .unwrap_or_default()
}

/// The bundled IANA zone for a name returned by [`zones_for`]; `None` for names outside the
/// data (the tests check that every name in the data resolves).
pub fn time_zone(name: &str) -> Option<TimeZone> {
    ZONES.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> E164 {
        E164::from_trusted(s.to_owned())
    }

    #[test]
    fn data_is_complete_and_parses() {
        // The upstream file at the recorded commit is 81,932 characters; the copy adds one
        // header line. Its first and last entries and the entry count pin the copy.
        let body = MAP_DATA
            .split_once('\n')
            .map(|(_, rest)| rest)
            .unwrap_or("");
        assert_eq!(body.len(), 81_932);
        assert!(MAP_DATA.starts_with("# Source: google/libphonenumber"));
        let upstream = parse_map(MAP_DATA);
        assert_eq!(upstream.len(), 3182);
        assert_eq!(upstream.get("1").map(|z| z.len()), Some(41));
        assert_eq!(
            upstream.get("1306").map(|z| z.to_vec()),
            Some(vec!["America/Winnipeg"])
        );
        // The overrides replace 25 entries (21 from upstream, 4 project fixes) and add 56
        // NANP area codes opened since.
        let overrides = parse_map(OVERRIDES_DATA);
        assert_eq!(overrides.len(), 81);
        let added = overrides
            .keys()
            .filter(|k| !upstream.contains_key(*k))
            .count();
        assert_eq!(added, 56);
        assert_eq!(MAP.len(), 3182 + 56);
        assert_eq!(MAP.get("1").map(|z| z.len()), Some(42));
        assert_eq!(
            MAP.get("1306").map(|z| z.to_vec()),
            Some(vec!["America/Regina"])
        );
        assert_eq!(
            MAP.get("998").map(|z| z.to_vec()),
            Some(vec!["Asia/Tashkent"])
        );
    }

    #[test]
    fn every_zone_in_the_data_resolves_in_the_bundled_database() {
        let db = TimeZoneDatabase::bundled();
        let mut missing: Vec<&str> = MAP
            .values()
            .flat_map(|zones| zones.iter().copied())
            .filter(|name| db.get(name).is_err())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        assert!(
            missing.is_empty(),
            "zones not in the bundled tzdb: {missing:?}"
        );
        assert!(time_zone("America/New_York").is_some());
        assert!(time_zone("Mars/Olympus_Mons").is_none());
    }

    #[test]
    fn longest_prefix_wins() {
        let cases: &[(&str, &[&str])] = &[
            ("+12125551234", &["America/New_York"]),
            ("+14155550100", &["America/Los_Angeles"]),
            // 1208 has no entry; 12085 is Boise & Los_Angeles, 1208505 is Denver only.
            ("+12085550100", &["America/Boise", "America/Los_Angeles"]),
            ("+12085051234", &["America/Denver"]),
            // 1850 is New_York, 1850200 (Panhandle exchange) is Chicago.
            ("+18505550100", &["America/New_York"]),
            ("+18502001234", &["America/Chicago"]),
            ("+442079460000", &["Europe/London"]),
            ("+441534123456", &["Europe/Jersey"]),
            ("+919876543210", &["Asia/Calcutta"]),
            ("+81312345678", &["Asia/Tokyo"]),
            ("+5511912345678", &["America/Sao_Paulo"]),
            ("+61212345678", &["Australia/Sydney"]),
            ("+33612345678", &["Europe/Paris"]),
            // Overridden entries: Saskatchewan keeps CST all year, Arizona has no DST.
            ("+13065550100", &["America/Regina"]),
            ("+16025550100", &["America/Phoenix"]),
            ("+218912345678", &["Africa/Tripoli"]),
        ];
        for (number, zones) in cases {
            assert_eq!(zones_for(&num(number)), zones.to_vec(), "{number}");
        }
    }

    #[test]
    fn unpinned_numbers_get_the_country_zones() {
        // Russian mobiles (+7 9…) have no entry beyond the country code.
        let ru = zones_for(&num("+79161234567"));
        assert_eq!(ru.len(), 16);
        assert!(ru.contains(&"Europe/Moscow") && ru.contains(&"Asia/Anadyr"));
        // Australian mobiles (+61 4…) likewise.
        let au = zones_for(&num("+61412345678"));
        assert_eq!(au.len(), 8);
        assert!(au.contains(&"Australia/Perth") && au.contains(&"Australia/Sydney"));
    }

    #[test]
    fn unknown_and_odd_input() {
        assert!(zones_for(&num("+80012345678")).is_empty());
        assert!(zones_for(&num("+88212345678")).is_empty());
        assert!(zones_for(&num("")).is_empty());
        assert!(zones_for(&num("+")).is_empty());
        // `from_trusted` does not validate: non-ASCII must not panic the byte slicing.
        assert_eq!(zones_for(&num("+44é1")).len(), 4);
        assert_eq!(zones_for(&num("+1")).len(), 42);
    }
}
