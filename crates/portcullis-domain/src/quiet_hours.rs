//! Quiet hours: when a non-essential message may reach its recipient.
//!
//! The default sending window is 08:00–21:00 in the recipient's local time. The recipient's
//! zone comes from the number ([`crate::tz::zones_for`]). When the data cannot pin the number
//! to one zone (a country spanning zones, e.g. Russian or Australian mobiles, or a US
//! exchange straddling a zone line), the window is the intersection over all candidate zones:
//! an instant is allowed iff the local time in *every* candidate zone is inside that zone's
//! window.
//!
//! Stricter per-region rules live in `data/quiet_hours.txt` (owned by the project, every rule
//! with its legal source) and can only narrow the default: a rule matching the number
//! (by ISO region, by E.164 prefix, optionally only in some zones) is intersected with the
//! default window, per local weekday.
//!
//! Windows are local wall-clock times evaluated with the bundled IANA database, so they are
//! DST-correct: on a spring-forward day 08:00 is still 08:00 local, which is one hour
//! earlier in UTC than the day before.
//!
//! Decisions:
//! - **No zone known** (non-geographic numbers such as `+800`, `+882`, or a code missing
//!   from the data): sending is allowed and [`describe`] says the window is not enforced.
//!   Longest-prefix matching already falls back to the country's zones (the data lists them
//!   under the bare country code), so this only happens when the country itself is unknown.
//! - **Empty intersection** (candidate zones so far apart that no instant within the next 8
//!   days is inside every zone's window): the widest-overlap strategy. The earliest instant
//!   at which the largest number of candidate zones are inside their windows is chosen; the
//!   remaining zones are then outside theirs. Needs no extra data (unlike "the capital's
//!   zone") and never picks an instant that fits fewer candidate zones than another would.
//!   With the default 13-hour window no entry of the data gets there (the widest, the +1
//!   country entry from Guam to St. John's, still leaves about 90 minutes a day); a narrower
//!   configured window can.
//! - **Nothing allowed at all** within 8 days (only possible with an empty configured
//!   window): [`next_allowed`] returns the end of the 8-day horizon, so the caller defers and
//!   evaluates again then, rather than sending.
//! - Exemption of essential messages is the caller's business: this module always answers
//!   for a non-essential message.

use std::fmt;
use std::sync::LazyLock;

use jiff::civil::{Date, Time, Weekday, time};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};

use crate::E164;

/// How far ahead [`next_allowed`] looks for an allowed instant.
const HORIZON_DAYS: i64 = 8;

const RULES_DATA: &str = include_str!("../data/quiet_hours.txt");

static BUILTIN: LazyLock<QuietRules> = LazyLock::new(|| {
    QuietRules::parse(SendWindow::default_window(), RULES_DATA)
        .unwrap_or_else(|e| panic!("data/quiet_hours.txt is invalid: {e}"))
});

/// An allowed local-time window within one day, `start` inclusive, `end` exclusive: the
/// default `08:00–21:00` allows 08:00:00 up to 20:59:59.999…
///
/// A window whose `end` is not after its `start` allows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendWindow {
    /// First allowed local time.
    pub start: Time,
    /// First local time no longer allowed.
    pub end: Time,
}

impl SendWindow {
    /// The default window: 08:00–21:00 recipient local time.
    pub fn default_window() -> SendWindow {
        SendWindow {
            start: time(8, 0, 0, 0),
            end: time(21, 0, 0, 0),
        }
    }

    /// Whether the local time `t` is inside the window.
    pub fn contains(&self, t: Time) -> bool {
        self.start <= t && t < self.end
    }

    /// Whether the window allows nothing.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    fn intersect(&self, other: &SendWindow) -> Option<SendWindow> {
        let w = SendWindow {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        };
        (!w.is_empty()).then_some(w)
    }
}

impl fmt::Display for SendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_time(f, self.start)?;
        f.write_str("–")?;
        write_time(f, self.end)
    }
}

fn write_time(f: &mut fmt::Formatter<'_>, t: Time) -> fmt::Result {
    write!(f, "{:02}:{:02}", t.hour(), t.minute())?;
    if t.second() != 0 || t.subsec_nanosecond() != 0 {
        write!(f, ":{:02}", t.second())?;
    }
    Ok(())
}

/// The allowed windows of each weekday, Monday first; each day's list sorted and disjoint.
type Week = [Vec<SendWindow>; 7];

fn day_index(weekday: Weekday) -> usize {
    usize::try_from(weekday.to_monday_zero_offset()).unwrap_or(0)
}

fn intersect_days(a: &[SendWindow], b: &[SendWindow]) -> Vec<SendWindow> {
    let mut out: Vec<SendWindow> = a
        .iter()
        .flat_map(|x| b.iter().filter_map(move |y| x.intersect(y)))
        .collect();
    out.sort_by_key(|w| w.start);
    out
}

/// The default window and the stricter per-region rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietRules {
    default: SendWindow,
    rules: Vec<Rule>,
}

/// One stricter regional rule from the rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    id: String,
    /// ISO 3166-1 alpha-2 regions the number must belong to (empty: any).
    countries: Vec<String>,
    /// E.164 digit prefixes the number must start with (empty: any).
    prefixes: Vec<String>,
    /// IANA zones in which the rule applies (empty: all candidate zones).
    zones: Vec<String>,
    week: Week,
}

impl Rule {
    fn matches_number(&self, region: Option<&str>, digits: &str) -> bool {
        (self.countries.is_empty() || region.is_some_and(|r| self.countries.iter().any(|c| c == r)))
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| digits.starts_with(p)))
    }

    fn applies_in(&self, zone: &str) -> bool {
        self.zones.is_empty() || self.zones.iter().any(|z| z == zone)
    }
}

/// Why a rules file was refused: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RulesError {
    /// 1-based line number (a rule's `[RULE-ID]` line when the rule as a whole is incomplete).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl QuietRules {
    /// The default window (08:00–21:00) with the project's regional rules from
    /// `data/quiet_hours.txt`, parsed once.
    pub fn builtin() -> &'static QuietRules {
        &BUILTIN
    }

    /// The project's regional rules with another default window (e.g. an app that only
    /// sends 09:00–20:00). Regional rules still narrow it further; they never widen it.
    pub fn with_default(window: SendWindow) -> QuietRules {
        QuietRules {
            default: window,
            rules: BUILTIN.rules.clone(),
        }
    }

    /// The default window.
    pub fn default_window(&self) -> SendWindow {
        self.default
    }

    /// Parses a rules file in the format of `data/quiet_hours.txt` (documented there).
    pub fn parse(default: SendWindow, text: &str) -> Result<QuietRules, RulesError> {
        let db = TimeZoneDatabase::bundled();
        let mut rules = Vec::new();
        let mut current: Option<(usize, RuleDraft)> = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| RulesError {
                line: line_no,
                message,
            };
            if let Some(id) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if let Some((start, draft)) = current.take() {
                    rules.push(draft.finish().map_err(|message| RulesError {
                        line: start,
                        message,
                    })?);
                }
                let valid = !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
                if !valid {
                    return Err(err(format!("rule id `{id}` must be A-Z, 0-9 and `-`")));
                }
                if rules.iter().any(|r: &Rule| r.id == id) {
                    return Err(err(format!("duplicate rule id `{id}`")));
                }
                current = Some((line_no, RuleDraft::new(id)));
                continue;
            }
            let Some((_, draft)) = current.as_mut() else {
                return Err(err("a setting outside any [RULE-ID] section".into()));
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(format!("expected `key = value`, got `{line}`")));
            };
            let (key, value) = (key.trim(), value.trim());
            let words = || value.split_whitespace().map(str::to_owned);
            match key {
                "countries" => {
                    draft.countries = words().collect();
                    if let Some(bad) = draft
                        .countries
                        .iter()
                        .find(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
                    {
                        return Err(err(format!("`{bad}` is not an ISO 3166-1 alpha-2 code")));
                    }
                }
                "prefixes" => {
                    draft.prefixes = words().collect();
                    if let Some(bad) = draft.prefixes.iter().find(|p| {
                        p.is_empty() || p.len() > 15 || !p.bytes().all(|b| b.is_ascii_digit())
                    }) {
                        return Err(err(format!("`{bad}` is not an E.164 digit prefix")));
                    }
                }
                "zones" => {
                    draft.zones = words().collect();
                    if let Some(bad) = draft.zones.iter().find(|z| db.get(z).is_err()) {
                        return Err(err(format!("`{bad}` is not an IANA time zone")));
                    }
                }
                days => {
                    let days = parse_days(days).map_err(err)?;
                    let windows = parse_windows(value).map_err(err)?;
                    for day in days {
                        if draft.week[day].replace(windows.clone()).is_some() {
                            return Err(err(format!("{} is given twice", DAY_NAMES[day])));
                        }
                    }
                }
            }
        }
        if let Some((start, draft)) = current.take() {
            rules.push(draft.finish().map_err(|message| RulesError {
                line: start,
                message,
            })?);
        }
        Ok(QuietRules { default, rules })
    }

    /// The rule ids and merged weekly schedule that apply to `number` when evaluated in
    /// `zone`.
    fn week_for(&self, matching: &[&Rule], zone: &str) -> (Week, Vec<String>) {
        let mut week: Week = std::array::from_fn(|_| {
            if self.default.is_empty() {
                Vec::new()
            } else {
                vec![self.default]
            }
        });
        let mut ids = Vec::new();
        for rule in matching.iter().filter(|r| r.applies_in(zone)) {
            for (day, windows) in week.iter_mut().enumerate() {
                *windows = intersect_days(windows, &rule.week[day]);
            }
            ids.push(rule.id.clone());
        }
        (week, ids)
    }
}

struct RuleDraft {
    id: String,
    countries: Vec<String>,
    prefixes: Vec<String>,
    zones: Vec<String>,
    week: [Option<Vec<SendWindow>>; 7],
}

impl RuleDraft {
    fn new(id: &str) -> RuleDraft {
        RuleDraft {
            id: id.to_owned(),
            countries: Vec::new(),
            prefixes: Vec::new(),
            zones: Vec::new(),
            week: Default::default(),
        }
    }

    fn finish(self) -> Result<Rule, String> {
        if self.countries.is_empty() && self.prefixes.is_empty() {
            return Err(format!("rule {} needs `countries` or `prefixes`", self.id));
        }
        let missing: Vec<&str> = (0..7)
            .filter(|&d| self.week[d].is_none())
            .map(|d| DAY_NAMES[d])
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "rule {} does not say {}",
                self.id,
                missing.join(", ")
            ));
        }
        Ok(Rule {
            id: self.id,
            countries: self.countries,
            prefixes: self.prefixes,
            zones: self.zones,
            week: self.week.map(Option::unwrap_or_default),
        })
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_day(s: &str) -> Result<usize, String> {
    DAY_NAMES
        .iter()
        .position(|d| *d == s)
        .ok_or_else(|| format!("`{s}` is not a day (mon … sun, or all)"))
}

fn parse_days(s: &str) -> Result<Vec<usize>, String> {
    if s == "all" {
        return Ok((0..7).collect());
    }
    let mut days = Vec::new();
    for part in s.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (parse_day(from.trim())?, parse_day(to.trim())?);
                if from > to {
                    return Err(format!("day range `{part}` runs backwards"));
                }
                days.extend(from..=to);
            }
            None => days.push(parse_day(part)?),
        }
    }
    Ok(days)
}

fn parse_time(s: &str) -> Result<Time, String> {
    let bad = || format!("`{s}` is not a time (HH:MM)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

fn parse_windows(s: &str) -> Result<Vec<SendWindow>, String> {
    if s == "none" {
        return Ok(Vec::new());
    }
    let mut windows = Vec::new();
    for part in s.split_whitespace() {
        let (start, end) = part
            .split_once('-')
            .ok_or_else(|| format!("`{part}` is not a window (HH:MM-HH:MM)"))?;
        let window = SendWindow {
            start: parse_time(start)?,
            end: parse_time(end)?,
        };
        if window.is_empty() {
            return Err(format!("window `{part}` ends before it starts"));
        }
        windows.push(window);
    }
    if windows.is_empty() {
        return Err("no windows (write `none` for a day without any)".into());
    }
    windows.sort_by_key(|w| w.start);
    if windows.windows(2).any(|pair| pair[1].start < pair[0].end) {
        return Err(format!("windows `{s}` overlap"));
    }
    Ok(windows)
}

/// One candidate zone of a number with the schedule that applies there.
struct ZonePlan {
    name: &'static str,
    tz: TimeZone,
    week: Week,
    rule_ids: Vec<String>,
}

impl ZonePlan {
    fn allows(&self, at: Timestamp) -> bool {
        let local = self.tz.to_datetime(at);
        self.week[day_index(local.date().weekday())]
            .iter()
            .any(|w| w.contains(local.time()))
    }

    /// Every window start (as an instant) in this zone from the local day of `from` up to
    /// `days` local days later.
    fn window_starts(&self, from: Timestamp, days: i64, out: &mut Vec<Timestamp>) {
        let mut date: Date = self.tz.to_datetime(from).date();
        for _ in 0..=days {
            for window in &self.week[day_index(date.weekday())] {
                // `compatible`: a start inside a DST gap resolves to the instant the gap
                // ends, one inside a fold to its first occurrence.
                if let Ok(at) = self
                    .tz
                    .to_ambiguous_timestamp(date.to_datetime(window.start))
                    .compatible()
                {
                    out.push(at);
                }
            }
            match date.tomorrow() {
                Ok(next) => date = next,
                Err(_) => break,
            }
        }
    }
}

fn plans(number: &E164, rules: &QuietRules) -> Vec<ZonePlan> {
    let digits = number.as_str().strip_prefix('+').unwrap_or(number.as_str());
    let needs_region = rules.rules.iter().any(|r| !r.countries.is_empty());
    let region = if needs_region { number.region() } else { None };
    let matching: Vec<&Rule> = rules
        .rules
        .iter()
        .filter(|r| r.matches_number(region.as_deref(), digits))
        .collect();
    crate::tz::zones_for(number)
        .into_iter()
        .filter_map(|name| {
            let tz = crate::tz::time_zone(name)?;
            let (week, rule_ids) = rules.week_for(&matching, name);
            Some(ZonePlan {
                name,
                tz,
                week,
                rule_ids,
            })
        })
        .collect()
}

/// When a non-essential message to `number` may be sent.
///
/// `None`: sending is allowed now. `Some(t)`: defer until `t`, the earliest instant within
/// the next 8 days that is inside the allowed window in every candidate zone of the number
/// (see the module docs for the unknown-zone, empty-intersection and nothing-allowed cases).
///
/// Exact, not stepped: the allowed set is an intersection of half-open local windows, so its
/// first instant after `now` is either `now` or the start of some zone's window. Those starts
/// are the only candidates evaluated.
pub fn next_allowed(number: &E164, now: Timestamp, rules: &QuietRules) -> Option<Timestamp> {
    let plans = plans(number, rules);
    if plans.is_empty() {
        return None;
    }
    let all = |at: Timestamp| plans.iter().all(|p| p.allows(at));
    if all(now) {
        return None;
    }
    // Saturating: never errs for a plain duration; fail closed (defer) if it ever did.
    let horizon = now
        .saturating_add(SignedDuration::from_hours(HORIZON_DAYS * 24))
        .unwrap_or(Timestamp::MAX);
    let mut candidates = Vec::new();
    for plan in &plans {
        plan.window_starts(now, HORIZON_DAYS, &mut candidates);
    }
    candidates.retain(|&at| at > now && at <= horizon);
    candidates.sort_unstable();
    candidates.dedup();
    if let Some(&at) = candidates.iter().find(|&&at| all(at)) {
        return Some(at);
    }
    // Empty intersection: the earliest instant inside the most zones' windows.
    let satisfied = |at: Timestamp| plans.iter().filter(|p| p.allows(at)).count();
    let (best, count) = std::iter::once(now)
        .chain(candidates.iter().copied())
        .map(|at| (at, satisfied(at)))
        .fold(
            (now, 0),
            |best, cur| if cur.1 > best.1 { cur } else { best },
        );
    match count {
        0 => Some(horizon),
        _ if best == now => None,
        _ => Some(best),
    }
}

/// The window(s) that apply to `number`, for explanations in policy events, e.g.
/// `08:00–21:00 America/New_York (US)` (the ids of the regional rules that apply follow in
/// parentheses), `08:00–20:00 America/New_York (US, US-FL)`, for a number spanning zones
/// `08:00–21:00 in every one of America/Boise, America/Los_Angeles (US)`, and when zones get
/// different windows `10:00–21:00 America/Boise (X); 08:00–21:00 America/Los_Angeles (all at
/// once)`. Days differing are spelled out: `Mon–Fri 10:00–13:00, 14:00–20:00; Sat–Sun none
/// Europe/Paris (FR)`.
pub fn describe(number: &E164, rules: &QuietRules) -> String {
    let plans = plans(number, rules);
    if plans.is_empty() {
        return format!(
            "{} recipient local time (no time zone known for this number: not enforced)",
            format_week(&std::array::from_fn(|_| vec![rules.default]))
        );
    }
    // Group zones sharing a schedule and rules, keeping the data's zone order.
    let mut groups: Vec<(&Week, &[String], Vec<&str>)> = Vec::new();
    for plan in &plans {
        match groups
            .iter_mut()
            .find(|(week, ids, _)| **week == plan.week && *ids == plan.rule_ids.as_slice())
        {
            Some((_, _, zones)) => zones.push(plan.name),
            None => groups.push((&plan.week, &plan.rule_ids, vec![plan.name])),
        }
    }
    let single_group = groups.len() == 1;
    let parts: Vec<String> = groups
        .iter()
        .map(|(week, ids, zones)| {
            let mut s = format_week(week);
            s.push_str(if single_group && zones.len() > 1 {
                " in every one of "
            } else {
                " "
            });
            s.push_str(&zones.join(", "));
            if !ids.is_empty() {
                s.push_str(&format!(" ({})", ids.join(", ")));
            }
            s
        })
        .collect();
    if single_group {
        parts.concat()
    } else {
        format!("{} (all at once)", parts.join("; "))
    }
}

fn format_day(windows: &[SendWindow]) -> String {
    if windows.is_empty() {
        return "none".into();
    }
    windows
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_week(week: &Week) -> String {
    if week.iter().all(|day| *day == week[0]) {
        return format_day(&week[0]);
    }
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut parts = Vec::new();
    let mut start = 0;
    while start < 7 {
        let mut end = start;
        while end + 1 < 7 && week[end + 1] == week[start] {
            end += 1;
        }
        let days = if start == end {
            NAMES[start].to_owned()
        } else {
            format!("{}–{}", NAMES[start], NAMES[end])
        };
        parts.push(format!("{days} {}", format_day(&week[start])));
        start = end + 1;
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> E164 {
        E164::from_trusted(s.to_owned())
    }

    fn ts(s: &str) -> Timestamp {
        s.parse()
            .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
    }

    fn window(start: (i8, i8), end: (i8, i8)) -> SendWindow {
        SendWindow {
            start: time(start.0, start.1, 0, 0),
            end: time(end.0, end.1, 0, 0),
        }
    }

    /// (what, number, now, expected next_allowed) under the built-in rules.
    const CASES: &[(&str, &str, &str, Option<&str>)] = &[
        // --- US Eastern (+1 212 → America/New_York). Spring forward 2026-03-08 at 07:00Z
        // (02:00 EST → 03:00 EDT): 08:00 local that day is 12:00Z, not 13:00Z.
        (
            "NY 01:00 EST, spring-forward day",
            "+12125551234",
            "2026-03-08T06:00:00Z",
            Some("2026-03-08T12:00:00Z"),
        ),
        (
            "NY 21:30 EST the evening before",
            "+12125551234",
            "2026-03-08T02:30:00Z",
            Some("2026-03-08T12:00:00Z"),
        ),
        (
            "NY 07:59:59 EDT",
            "+12125551234",
            "2026-03-08T11:59:59Z",
            Some("2026-03-08T12:00:00Z"),
        ),
        (
            "NY 08:00 EDT exactly",
            "+12125551234",
            "2026-03-08T12:00:00Z",
            None,
        ),
        // Fall back 2026-11-01 at 06:00Z (02:00 EDT → 01:00 EST): 08:00 local is 13:00Z.
        (
            "NY 01:30 EDT, fall-back day",
            "+12125551234",
            "2026-11-01T05:30:00Z",
            Some("2026-11-01T13:00:00Z"),
        ),
        (
            "NY 07:30 EST after fall-back",
            "+12125551234",
            "2026-11-01T12:30:00Z",
            Some("2026-11-01T13:00:00Z"),
        ),
        ("NY 20:59 EST", "+12125551234", "2026-11-02T01:59:00Z", None),
        (
            "NY 21:00 EST: end is exclusive",
            "+12125551234",
            "2026-11-02T02:00:00Z",
            Some("2026-11-02T13:00:00Z"),
        ),
        // --- Europe/London (+44 20). BST starts 2026-03-29 at 01:00Z.
        (
            "London 00:30 GMT, spring-forward day",
            "+442079460000",
            "2026-03-29T00:30:00Z",
            Some("2026-03-29T07:00:00Z"),
        ),
        (
            "London 21:00 GMT the evening before",
            "+442079460000",
            "2026-03-28T21:00:00Z",
            Some("2026-03-29T07:00:00Z"),
        ),
        (
            "London 20:59 BST",
            "+442079460000",
            "2026-03-29T19:59:00Z",
            None,
        ),
        (
            "London 21:00 BST",
            "+442079460000",
            "2026-03-29T20:00:00Z",
            Some("2026-03-30T07:00:00Z"),
        ),
        // --- Australia/Sydney (+61 2), southern hemisphere. DST ends 2026-04-05 at 16:00Z on
        // the 4th (03:00 AEDT → 02:00 AEST): Sunday 08:00 is 22:00Z (+10), Saturday's was
        // 21:00Z (+11). DST starts 2026-10-04 at 16:00Z on the 3rd (02:00 AEST → 03:00 AEDT).
        (
            "Sydney Sat 23:00 AEDT before DST ends",
            "+61212345678",
            "2026-04-04T12:00:00Z",
            Some("2026-04-04T22:00:00Z"),
        ),
        (
            "Sydney Sat 20:59 AEDT",
            "+61212345678",
            "2026-04-04T09:59:00Z",
            None,
        ),
        (
            "Sydney Sat 07:00 AEDT",
            "+61212345678",
            "2026-04-03T20:00:00Z",
            Some("2026-04-03T21:00:00Z"),
        ),
        (
            "Sydney 03:30 AEDT, DST-start day",
            "+61212345678",
            "2026-10-03T16:30:00Z",
            Some("2026-10-03T21:00:00Z"),
        ),
        // --- Asia/Kolkata (+91, libphonenumber says Asia/Calcutta): +05:30, no DST.
        (
            "Kolkata 05:30",
            "+919876543210",
            "2026-06-01T00:00:00Z",
            Some("2026-06-01T02:30:00Z"),
        ),
        (
            "Kolkata 15:30",
            "+919876543210",
            "2026-06-01T10:00:00Z",
            None,
        ),
        (
            "Kolkata 21:00",
            "+919876543210",
            "2026-06-01T15:30:00Z",
            Some("2026-06-02T02:30:00Z"),
        ),
        // --- Asia/Tokyo (+81): +09:00.
        (
            "Tokyo 21:00",
            "+81312345678",
            "2026-01-15T12:00:00Z",
            Some("2026-01-15T23:00:00Z"),
        ),
        (
            "Tokyo 07:59:59",
            "+81312345678",
            "2026-01-15T22:59:59Z",
            Some("2026-01-15T23:00:00Z"),
        ),
        // --- America/Sao_Paulo (+55 11): -03:00 all year (DST abolished in 2019), so
        // November 08:00 is 11:00Z, not 10:00Z as under the old summer time.
        (
            "Sao Paulo 07:00 in November",
            "+5511912345678",
            "2026-11-15T10:00:00Z",
            Some("2026-11-15T11:00:00Z"),
        ),
        // --- +1 208 5… maps to America/Boise & America/Los_Angeles (Idaho straddles the
        // Mountain/Pacific line). Summer: Boise -06, LA -07, LA = Boise - 1h. Boise in
        // [08,21) is [14:00Z,03:00Z), LA in [08,21) is [15:00Z,04:00Z); the intersection is
        // [15:00Z,03:00Z): 08:00-20:00 LA = 09:00-21:00 Boise.
        (
            "Boise 08:30 / LA 07:30",
            "+12085550100",
            "2026-07-01T14:30:00Z",
            Some("2026-07-01T15:00:00Z"),
        ),
        (
            "Boise 20:30 / LA 19:30",
            "+12085550100",
            "2026-07-02T02:30:00Z",
            None,
        ),
        (
            "Boise 21:00 / LA 20:00",
            "+12085550100",
            "2026-07-02T03:00:00Z",
            Some("2026-07-02T15:00:00Z"),
        ),
        // Spring-forward day: Boise's 08:00 MDT (14:00Z) is LA's 07:00 PDT; LA's 08:00 PDT
        // (15:00Z) is the first instant inside both.
        (
            "Boise/LA, spring-forward day",
            "+12085550100",
            "2026-03-08T08:00:00Z",
            Some("2026-03-08T15:00:00Z"),
        ),
        // --- Russian mobile (+7 9…): the data has only the country entry, 16 zones from
        // Europe/Bucharest (+02 winter, +03 summer) to Asia/Anadyr and Asia/Kamchatka (+12).
        // Winter: Bucharest [08,21) = [06:00Z,19:00Z), Anadyr [08,21) = [20:00Z,09:00Z); every
        // zone in between (+03…+11) contains [06:00Z,09:00Z) = the intersection.
        // Summer: Bucharest +03 → [05:00Z,18:00Z), so [05:00Z,09:00Z).
        (
            "Russia, winter, 10:00Z",
            "+79161234567",
            "2026-01-15T10:00:00Z",
            Some("2026-01-16T06:00:00Z"),
        ),
        (
            "Russia, winter, 07:00Z",
            "+79161234567",
            "2026-01-15T07:00:00Z",
            None,
        ),
        (
            "Russia, winter, 05:59Z",
            "+79161234567",
            "2026-01-15T05:59:00Z",
            Some("2026-01-15T06:00:00Z"),
        ),
        (
            "Russia, summer, 04:00Z",
            "+79161234567",
            "2026-07-15T04:00:00Z",
            Some("2026-07-15T05:00:00Z"),
        ),
        // --- Australian mobile (+61 4…): 8 zones, Indian/Cocos (+06:30) to Lord Howe
        // (+10:30 in July, +11 in January). July: [08-6.5, 21-10.5) = [01:30Z,10:30Z).
        // January (DST): Lord Howe +11, Sydney +11 → [01:30Z,10:00Z). (Brisbane, +10 all
        // year, and the others lie in between.)
        (
            "Australia mobile, July 00:00Z",
            "+61412345678",
            "2026-07-01T00:00:00Z",
            Some("2026-07-01T01:30:00Z"),
        ),
        (
            "Australia mobile, July 10:29Z",
            "+61412345678",
            "2026-07-01T10:29:00Z",
            None,
        ),
        (
            "Australia mobile, January 10:00Z",
            "+61412345678",
            "2026-01-10T10:00:00Z",
            Some("2026-01-11T01:30:00Z"),
        ),
        // --- Stricter regional rules.
        // Florida (Fla. Stat. 501.616(6)(a)), Miami 305 → New_York: 20:30 EDT is past 20:00.
        (
            "Florida 20:30 EDT",
            "+13055550123",
            "2026-06-01T00:30:00Z",
            Some("2026-06-01T12:00:00Z"),
        ),
        (
            "New York 20:30 EDT (default only)",
            "+12125551234",
            "2026-06-01T00:30:00Z",
            None,
        ),
        // Florida panhandle exchange 850-200 → America/Chicago: 20:30 CDT.
        (
            "Florida panhandle 20:30 CDT",
            "+18502001234",
            "2026-06-01T01:30:00Z",
            Some("2026-06-01T13:00:00Z"),
        ),
        // Washington (RCW 19.158.040(2)), Seattle 206: 20:00 PDT.
        (
            "Washington 20:00 PDT",
            "+12065550100",
            "2026-06-02T03:00:00Z",
            Some("2026-06-02T15:00:00Z"),
        ),
        // Oklahoma (775C.4), 405: 20:00 CDT.
        (
            "Oklahoma 20:00 CDT",
            "+14055550100",
            "2026-06-02T01:00:00Z",
            Some("2026-06-02T13:00:00Z"),
        ),
        // France (D223-9): Mon-Fri 10:00-13:00 and 14:00-20:00, Paris (+02 in June).
        (
            "France Saturday noon",
            "+33612345678",
            "2026-06-06T10:00:00Z",
            Some("2026-06-08T08:00:00Z"),
        ),
        (
            "France Tuesday 13:30",
            "+33612345678",
            "2026-06-09T11:30:00Z",
            Some("2026-06-09T12:00:00Z"),
        ),
        (
            "France Tuesday 09:00",
            "+33612345678",
            "2026-06-09T07:00:00Z",
            Some("2026-06-09T08:00:00Z"),
        ),
        (
            "France Tuesday 11:00",
            "+33612345678",
            "2026-06-09T09:00:00Z",
            None,
        ),
        (
            "France Friday 20:00",
            "+33612345678",
            "2026-06-12T18:00:00Z",
            Some("2026-06-15T08:00:00Z"),
        ),
        // Sunday 2026-03-29 is the CEST switch; Monday 10:00 CEST is 08:00Z.
        (
            "France DST Sunday",
            "+33612345678",
            "2026-03-29T00:30:00Z",
            Some("2026-03-30T08:00:00Z"),
        ),
        // --- Corrected zones (data/timezones_overrides.txt). Saskatchewan (306) keeps CST
        // (-06) all year; the 2018 data said Winnipeg (-05 in summer), which would allow
        // 07:30 local here.
        (
            "Saskatchewan 07:30 CST in June",
            "+13065550100",
            "2026-06-01T13:30:00Z",
            Some("2026-06-01T14:00:00Z"),
        ),
        // Phoenix (602) has no DST: 20:30 MST is inside; the 2018 data's Denver & Phoenix
        // intersection would have stopped at 20:00 Phoenix time.
        (
            "Phoenix 20:30 MST in July",
            "+16025550100",
            "2026-07-01T03:30:00Z",
            None,
        ),
        // Dallas 945 opened after the 2018 data; the overrides map it to Chicago.
        (
            "Dallas 945, 20:30 CDT",
            "+19455550100",
            "2026-06-01T01:30:00Z",
            None,
        ),
        (
            "Dallas 945, 07:30 CDT",
            "+19455550100",
            "2026-06-01T12:30:00Z",
            Some("2026-06-01T13:00:00Z"),
        ),
        // --- A +1 number no prefix pins (toll-free 800) gets the +1 entry's 42 zones, from
        // Guam and Saipan (+10) through Pago Pago (-11), Honolulu (-10) … to St. John's
        // (-02:30 in June). Guam's [08,21) is [22:00Z,11:00Z), St. John's is
        // [10:30Z,23:30Z); every other zone's window contains [22:00Z,23:30Z) (Pago Pago
        // [19:00Z,08:00Z), New York [12:00Z,01:00Z), Halifax [11:00Z,24:00Z), …), so the
        // intersection is 22:00-23:30Z.
        (
            "NANP country-wide, 12:00Z",
            "+18005550100",
            "2026-06-01T12:00:00Z",
            Some("2026-06-01T22:00:00Z"),
        ),
        (
            "NANP country-wide, 23:00Z",
            "+18005550100",
            "2026-06-01T23:00:00Z",
            None,
        ),
        (
            "NANP country-wide, 23:30Z",
            "+18005550100",
            "2026-06-01T23:30:00Z",
            Some("2026-06-02T22:00:00Z"),
        ),
        // --- No zone known (non-geographic +800): allowed.
        (
            "International freephone",
            "+80012345678",
            "2026-06-01T03:00:00Z",
            None,
        ),
    ];

    #[test]
    fn next_allowed_table() {
        let rules = QuietRules::builtin();
        let mut failures = Vec::new();
        for &(what, number, now, expected) in CASES {
            let got = next_allowed(&num(number), ts(now), rules);
            let expected = expected.map(ts);
            if got != expected {
                failures.push(format!("{what}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn the_returned_instant_is_allowed_and_nothing_earlier_is() {
        // Cross-check the exact search against brute-force stepping for every case.
        let rules = QuietRules::builtin();
        for &(what, number, now, _) in CASES {
            let number = num(number);
            let now = ts(now);
            let Some(next) = next_allowed(&number, now, rules) else {
                continue;
            };
            assert_eq!(
                next_allowed(&number, next, rules),
                None,
                "{what}: {next} not allowed"
            );
            // Every 5 minutes from `now`, and the last second before `next`, is deferred.
            let last = next - SignedDuration::from_secs(1);
            let mut t = now;
            while t < next {
                assert!(
                    next_allowed(&number, t, rules).is_some(),
                    "{what}: {t} allowed before {next}"
                );
                t = t
                    .checked_add(SignedDuration::from_mins(5))
                    .expect("in range");
            }
            assert!(
                last < now || next_allowed(&number, last, rules).is_some(),
                "{what}: {last} allowed before {next}"
            );
        }
    }

    #[test]
    fn custom_default_window() {
        let rules = QuietRules::with_default(window((9, 0), (17, 0)));
        assert_eq!(rules.default_window(), window((9, 0), (17, 0)));
        let ny = num("+12125551234");
        assert_eq!(
            next_allowed(&ny, ts("2026-06-01T12:30:00Z"), &rules),
            Some(ts("2026-06-01T13:00:00Z"))
        );
        assert_eq!(next_allowed(&ny, ts("2026-06-01T20:59:00Z"), &rules), None);
        assert_eq!(
            next_allowed(&ny, ts("2026-06-01T21:00:00Z"), &rules),
            Some(ts("2026-06-02T13:00:00Z"))
        );
        // Regional rules still narrow a wider default: Florida stays 08:00-20:00.
        let wide = QuietRules::with_default(window((7, 0), (22, 0)));
        let miami = num("+13055550123");
        assert_eq!(
            next_allowed(&miami, ts("2026-06-01T11:30:00Z"), &wide),
            Some(ts("2026-06-01T12:00:00Z"))
        );
        assert_eq!(
            next_allowed(&miami, ts("2026-06-01T00:30:00Z"), &wide),
            Some(ts("2026-06-01T12:00:00Z"))
        );
        // And the federal floor: New York cannot go past 21:00 either.
        assert_eq!(
            next_allowed(&ny, ts("2026-06-02T01:30:00Z"), &wide),
            Some(ts("2026-06-02T12:00:00Z"))
        );
    }

    #[test]
    fn empty_intersection_uses_the_widest_overlap() {
        // 61 891006… → Australia/Adelaide, Australia/Perth, Indian/Christmas. With a two-hour
        // window 08:00-10:00 in July (no DST): Adelaide +09:30 → [22:30Z,00:30Z), Perth +08
        // → [00:00Z,02:00Z), Christmas +07 → [01:00Z,03:00Z). Adelaide and Christmas never
        // overlap, so no instant suits all three; the most any instant suits is two.
        let rules = QuietRules::with_default(window((8, 0), (10, 0)));
        let number = num("+618910061234");
        assert_eq!(
            crate::tz::zones_for(&number),
            ["Australia/Adelaide", "Australia/Perth", "Indian/Christmas"]
        );
        // 00:00Z: Adelaide 09:30 and Perth 08:00 are inside, Christmas 07:00 is not → 2 of
        // 3, the maximum: send now.
        assert_eq!(
            next_allowed(&number, ts("2026-07-01T00:00:00Z"), &rules),
            None
        );
        // 03:00Z: nothing inside. Next window starts: Adelaide 22:30Z (1 zone inside),
        // Perth 00:00Z (Adelaide 09:30 + Perth: 2), Christmas 01:00Z (Perth 09:00 +
        // Christmas: 2). Earliest with 2 → 00:00Z.
        assert_eq!(
            next_allowed(&number, ts("2026-07-01T03:00:00Z"), &rules),
            Some(ts("2026-07-02T00:00:00Z"))
        );
    }

    #[test]
    fn nothing_allowed_defers_to_the_horizon() {
        let rules = QuietRules::with_default(window((10, 0), (9, 0)));
        let now = ts("2026-06-01T12:00:00Z");
        assert_eq!(
            next_allowed(&num("+12125551234"), now, &rules),
            Some(ts("2026-06-09T12:00:00Z"))
        );
    }

    #[test]
    fn describe_explains_the_windows() {
        let rules = QuietRules::builtin();
        let cases = [
            ("+12125551234", "08:00–21:00 America/New_York (US)"),
            ("+13055550123", "08:00–20:00 America/New_York (US, US-FL)"),
            ("+919876543210", "08:00–21:00 Asia/Calcutta"),
            (
                "+12085550100",
                "08:00–21:00 in every one of America/Boise, America/Los_Angeles (US)",
            ),
            (
                "+33612345678",
                "Mon–Fri 10:00–13:00, 14:00–20:00; Sat–Sun none Europe/Paris (FR)",
            ),
            (
                "+80012345678",
                "08:00–21:00 recipient local time (no time zone known for this number: not enforced)",
            ),
        ];
        for (number, expected) in cases {
            assert_eq!(describe(&num(number), rules), expected, "{number}");
        }
        let custom = QuietRules::with_default(window((9, 30), (17, 0)));
        assert_eq!(
            describe(&num("+81312345678"), &custom),
            "09:30–17:00 Asia/Tokyo"
        );
    }

    #[test]
    fn builtin_rules_parse() {
        let rules = QuietRules::builtin();
        assert_eq!(rules.default_window(), SendWindow::default_window());
        let ids: Vec<&str> = rules.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["US", "US-FL", "US-OK", "US-WA", "FR"]);
        // Every rule is at least as strict as the default on every day.
        for rule in &rules.rules {
            for day in &rule.week {
                for w in day {
                    assert!(
                        w.start >= time(8, 0, 0, 0) && w.end <= time(21, 0, 0, 0),
                        "{}",
                        rule.id
                    );
                }
            }
        }
    }

    #[test]
    fn window_basics() {
        let w = SendWindow::default_window();
        assert_eq!(w.to_string(), "08:00–21:00");
        assert!(w.contains(time(8, 0, 0, 0)));
        assert!(w.contains(time(20, 59, 59, 999_999_999)));
        assert!(!w.contains(time(21, 0, 0, 0)));
        assert!(!w.contains(time(7, 59, 59, 0)));
        assert!(!w.is_empty());
        assert!(window((9, 0), (9, 0)).is_empty());
        let odd = SendWindow {
            start: time(8, 0, 30, 0),
            end: time(21, 0, 0, 0),
        };
        assert_eq!(odd.to_string(), "08:00:30–21:00");
    }

    #[test]
    fn rules_file_errors() {
        let d = SendWindow::default_window();
        let cases = [
            ("all = 08:00-20:00", 1, "outside any"),
            (
                "[X]\nall = 08:00-20:00",
                1,
                "needs `countries` or `prefixes`",
            ),
            (
                "[X]\ncountries = US\nmon-fri = 08:00-20:00",
                1,
                "does not say sat, sun",
            ),
            (
                "[X]\ncountries = US\nall = 08:00-20:00\nsat = none",
                4,
                "sat is given twice",
            ),
            ("[X]\ncountries = USA\nall = none", 2, "not an ISO"),
            ("[X]\nprefixes = 1a\nall = none", 2, "not an E.164"),
            (
                "[X]\ncountries = US\nzones = Nowhere/Land\nall = none",
                3,
                "not an IANA",
            ),
            (
                "[X]\ncountries = US\nall = 20:00-08:00",
                3,
                "ends before it starts",
            ),
            (
                "[X]\ncountries = US\nall = 08:00-12:00 11:00-13:00",
                3,
                "overlap",
            ),
            ("[X]\ncountries = US\nall = 8:00-12:00", 3, "not a time"),
            ("[X]\ncountries = US\nall = 08:00-24:00", 3, "not a time"),
            ("[X]\ncountries = US\nfri-mon = none", 3, "backwards"),
            ("[X]\ncountries = US\nfunday = none", 3, "not a day"),
            ("[X]\ncountries = US\nall =", 3, "no windows"),
            ("[x]\ncountries = US\nall = none", 1, "rule id"),
            (
                "[X]\ncountries = US\nall = none\n[X]\ncountries = FR\nall = none",
                4,
                "duplicate",
            ),
            ("[X]\ncountries US", 2, "key = value"),
        ];
        for (text, line, needle) in cases {
            let err = QuietRules::parse(d, text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.message.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn zone_scoped_rules_apply_only_in_their_zone() {
        // A rule for Boise only: in Boise 10:00-21:00, Los Angeles keeps the default. For a
        // Boise/LA number in summer: Boise [10,21) = [16:00Z,03:00Z), LA [08,21) =
        // [15:00Z,04:00Z) → [16:00Z,03:00Z).
        let text = "[ID-TEST]\ncountries = US\nzones = America/Boise\nall = 10:00-21:00\n";
        let rules = QuietRules::parse(SendWindow::default_window(), text).expect("valid");
        let number = num("+12085550100");
        assert_eq!(
            next_allowed(&number, ts("2026-07-01T15:30:00Z"), &rules),
            Some(ts("2026-07-01T16:00:00Z"))
        );
        assert_eq!(
            describe(&number, &rules),
            "10:00–21:00 America/Boise (ID-TEST); 08:00–21:00 America/Los_Angeles (all at once)"
        );
    }
}
