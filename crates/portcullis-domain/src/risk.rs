//! High-risk destination prefixes: where SMS traffic pumping lands.
//!
//! SMS pumping (artificially inflated traffic) makes an app send messages, typically one-time
//! codes requested by a script through a sign-up form, to numbers whose operator shares the
//! termination revenue with the fraudster. It concentrates on a few kinds of destination:
//! satellite and other non-geographic international codes, premium-rate ranges and small
//! countries whose operators are paid well to terminate traffic. [`RiskPrefixes`] is the list
//! of those destinations, as E.164 digit prefixes with the reason each is listed; the caller
//! counts messages to a listed prefix against a small per-app hourly budget and refuses them
//! beyond it.
//!
//! The list shipped with Portcullis lives in `data/high_risk_prefixes.txt`, embedded at
//! compile time. Its header says what it is, who owns it, how it is used and what it is based
//! on; it is data, not law.
//!
//! Decisions:
//! - **Longest prefix wins**, so a specific range (Thuraya under `+882`) reports its own
//!   reason rather than its code's.
//! - **Prefixes, not countries**: several destinations worth listing share a calling code
//!   with ordinary markets (small Caribbean islands inside `+1`), and some of the riskiest
//!   codes belong to no country at all (`+881`, `+882`, `+883`).
//! - **Matching reads the stored digits only**; it does not consult numbering-plan metadata.
//!   [`E164::parse`] accepts many numbers under the shared codes (Inmarsat, Iridium,
//!   Thuraya, several `+883` networks) but refuses others (`+979`, `+882` ranges the
//!   metadata does not know), and those can still arrive through [`E164::from_trusted`]
//!   as stored values; they must match all the same.
//! - **Parsing is strict**: a malformed line is an error naming its line, never a silently
//!   skipped entry, because a skipped entry is a destination left unguarded.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::E164;

const PREFIXES_DATA: &str = include_str!("../data/high_risk_prefixes.txt");

static BUILTIN: LazyLock<RiskPrefixes> = LazyLock::new(|| {
    RiskPrefixes::parse(PREFIXES_DATA)
        .unwrap_or_else(|e| panic!("data/high_risk_prefixes.txt is invalid: {e}"))
});

/// The longest prefix E.164 allows: a whole number is at most 15 digits.
const MAX_PREFIX_DIGITS: usize = 15;

/// One high-risk prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskPrefix {
    /// E.164 digits without '+', e.g. "88213".
    pub prefix: String,
    /// Why it is listed (e.g. "international premium-rate / satellite", "destination
    /// frequently used in SMS pumping").
    pub reason: String,
}

/// The high-risk prefix list.
#[derive(Debug, Clone)]
pub struct RiskPrefixes {
    /// Entries in file order.
    entries: Vec<RiskPrefix>,
    /// Prefix → index into `entries`.
    index: HashMap<String, usize>,
    /// The longest prefix listed, to bound the lookup.
    max_len: usize,
}

impl RiskPrefixes {
    /// The list shipped with Portcullis (`data/high_risk_prefixes.txt`).
    pub fn builtin() -> &'static RiskPrefixes {
        &BUILTIN
    }

    /// Parses a list in the data file's format (for operators' own lists and for tests).
    ///
    /// One entry a line, `<digits> <reason>`: the digits are an E.164 prefix without `+`
    /// (1 to 15 digits, not starting with 0), unique in the list; the reason is required.
    /// Blank lines and lines starting with `#` are skipped. The error names the 1-based line.
    pub fn parse(text: &str) -> Result<RiskPrefixes, String> {
        let mut entries: Vec<RiskPrefix> = Vec::new();
        let mut index = HashMap::new();
        let mut lines_of: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| format!("line {line_no}: {message}");
            let (prefix, reason) = match line.split_once(char::is_whitespace) {
                Some((prefix, reason)) => (prefix, reason.trim()),
                None => (line, ""),
            };
            if prefix.is_empty()
                || prefix.len() > MAX_PREFIX_DIGITS
                || !prefix.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(err(format!(
                    "`{prefix}` is not an E.164 prefix (1 to {MAX_PREFIX_DIGITS} digits, no '+')"
                )));
            }
            // No country code starts with 0: such a prefix could never match, which would
            // leave whatever the author meant to list unguarded.
            if prefix.starts_with('0') {
                return Err(err(format!(
                    "`{prefix}` starts with 0; no E.164 number does"
                )));
            }
            if reason.is_empty() {
                return Err(err(format!("`{prefix}` has no reason")));
            }
            if let Some(first) = lines_of.get(prefix) {
                return Err(err(format!("`{prefix}` is already listed on line {first}")));
            }
            lines_of.insert(prefix.to_owned(), line_no);
            index.insert(prefix.to_owned(), entries.len());
            entries.push(RiskPrefix {
                prefix: prefix.to_owned(),
                reason: reason.to_owned(),
            });
        }
        let max_len = entries.iter().map(|e| e.prefix.len()).max().unwrap_or(0);
        Ok(RiskPrefixes {
            entries,
            index,
            max_len,
        })
    }

    /// The longest listed prefix the number starts with.
    pub fn matching(&self, number: &E164) -> Option<&RiskPrefix> {
        let full = number.as_str();
        let digits = full.strip_prefix('+').unwrap_or(full);
        // A value from `from_trusted` is not re-validated; anything but digits cannot be a
        // listed prefix, and slicing must stay on character boundaries.
        let digits_len = digits.bytes().take_while(u8::is_ascii_digit).count();
        (1..=digits_len.min(self.max_len))
            .rev()
            .find_map(|len| self.index.get(&digits[..len]))
            .map(|&i| &self.entries[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> E164 {
        E164::from_trusted(s.to_owned())
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases = [
            ("882 ok\n+883 plus sign", "line 2:"),
            ("# header\n\n88a2 letters", "line 3:"),
            ("1234567890123456 too long", "line 1:"),
            ("0882 leading zero", "line 1:"),
            ("882", "line 1:"),
            ("882    ", "line 1:"),
            ("882 first\n  \n882 again", "line 3:"),
            ("x", "line 1:"),
        ];
        for (text, want) in cases {
            let err = RiskPrefixes::parse(text).expect_err(text);
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
        let dup = RiskPrefixes::parse("882 first\n882 again").expect_err("duplicate");
        assert!(dup.contains("already listed on line 1"), "{dup}");
    }

    #[test]
    fn parse_accepts_comments_blank_lines_and_tabs() {
        let list = RiskPrefixes::parse(
            "# comment\n\n  882\tInternational Networks  \n   # indented comment\n883 more\n",
        )
        .expect("valid");
        assert_eq!(list.entries.len(), 2);
        assert_eq!(list.entries[0].prefix, "882");
        assert_eq!(list.entries[0].reason, "International Networks");
        assert_eq!(RiskPrefixes::parse("").expect("empty").entries.len(), 0);
    }

    #[test]
    fn longest_prefix_wins() {
        let list = RiskPrefixes::parse("88 short\n882 middle\n88216 long\n").expect("valid");
        let cases = [
            ("+882161234567", Some("88216")),
            ("+882341234567", Some("882")),
            ("+881612345678", Some("88")),
            ("+883123456789", Some("88")),
            ("+87012345678", None),
            ("+8", None),
            ("+", None),
            ("", None),
            ("+88x", Some("88")),
        ];
        for (number, want) in cases {
            let got = list.matching(&num(number)).map(|p| p.prefix.as_str());
            assert_eq!(got, want, "{number}");
        }
    }

    #[test]
    fn builtin_loads_and_covers_the_shared_codes() {
        let list = RiskPrefixes::builtin();
        assert!(list.entries.len() >= 30, "{}", list.entries.len());
        for code in ["870", "881", "882", "883", "979", "8816", "8817"] {
            assert!(list.index.contains_key(code), "{code} missing");
        }
        for entry in &list.entries {
            assert!(!entry.reason.is_empty());
            assert!((1..=15).contains(&entry.prefix.len()));
        }
        // Whole codes of large ordinary markets must never be listed.
        for code in [
            "1", "7", "20", "27", "33", "34", "39", "44", "49", "52", "55", "61", "81",
        ] {
            assert!(!list.index.contains_key(code), "+{code} listed wholesale");
        }
        for code in [
            "62", "63", "86", "90", "91", "92", "234", "371", "370", "1809", "1876",
        ] {
            assert!(!list.index.contains_key(code), "+{code} listed wholesale");
        }
    }

    /// Realistic numbers, through `E164::parse` where the numbering-plan metadata accepts
    /// them and through `from_trusted` where it does not (as stored numbers arrive).
    #[test]
    fn builtin_against_realistic_numbers() {
        let list = RiskPrefixes::builtin();
        let parsed = |s: &str| E164::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let cases = [
            // Ordinary markets: no match.
            (parsed("+14155550100"), None),
            (parsed("+12125551234"), None),
            (parsed("+447911123456"), None),
            (parsed("+4915123456789"), None),
            (parsed("+33612345678"), None),
            (parsed("+919876543210"), None),
            (parsed("+8613812345678"), None),
            (parsed("+18095551234"), None),
            // Listed destinations that the metadata accepts.
            (parsed("+5352345678"), Some("53")),
            (parsed("+252612345678"), Some("252")),
            (parsed("+6767712345"), Some("676")),
            (parsed("+12684641234"), Some("1268")),
            (parsed("+12844961234"), Some("1284")),
            (parsed("+870773111632"), Some("870")),
            (parsed("+881612345678"), Some("8816")),
            (parsed("+6834123"), Some("683")),
            (parsed("+882161234567"), Some("88216")),
            (parsed("+883120123456"), Some("883")),
            (parsed("+881012345678"), Some("881")),
            (parsed("+8818123456789"), Some("8818")),
            // Refused by the metadata (no such range known, or +979 not covered at all),
            // yet such numbers can reach us as stored values and must still match.
            (num("+88234123456"), Some("882")),
            (num("+97912345678"), Some("979")),
            (num("+67412345"), Some("674")),
        ];
        for (number, want) in cases {
            let got = list.matching(&number).map(|p| p.prefix.as_str());
            assert_eq!(got, want, "{}", number.as_str());
        }
    }
}
