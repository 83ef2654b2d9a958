//! Content checks of outgoing bodies: links (blocked domains, URL shorteners) and the
//! opt-out footer.
//!
//! # Links
//!
//! [`link_hosts`] finds the hosts a phone would turn into links, so that [`check_links`] can
//! hold a body to an app's [`LinkRules`]. Only hosts are ever reported, never whole URLs:
//! a path or query can carry personal data, and a refusal message must not echo it.
//!
//! How a body is read:
//!
//! 1. **Folding.** Default-ignorable characters (zero-width space and joiners, soft hyphen,
//!    bidi controls, BOM, …) are dropped, the text is put in NFKC, and the ideographic full
//!    stop `。` becomes `.`. A reader sees `bit\u{200B}.ly`, `ｂｉｔ．ｌｙ` and `bit。ly` as
//!    `bit.ly`, and browsers resolve them so (UTS #46 treats `．` `。` `｡` as dots), so
//!    none of them may slip past a rule.
//! 2. **Explicit URLs.** A scheme (`https:`, `http:` with any number of slashes or
//!    backslashes, or any other `scheme://`) makes what follows a link whatever it looks
//!    like: `http://localhost/`, `https://192.0.2.1/`, IDN hosts. The host is the part of the
//!    authority after the last `@` (so `https://user@bit.ly/` is `bit.ly`, and
//!    `https://bit.ly@evil.com/` is `evil.com`, where the browser really goes), before any
//!    port.
//! 3. **Scheme-less hosts** are ASCII runs of letters, digits, `-` and `.`, standing as a
//!    word of their own (the neighbours are not letters or digits, except letters of scripts
//!    written without spaces, so `詳細はbit.lyへ` still yields `bit.ly`). Such a run is a
//!    host when it has two or more valid labels and one of these holds:
//!    - it starts with `www.` and has a third label;
//!    - it is the domain of an email address (`x@evil.com`; see the decisions);
//!    - a path, query, fragment or port follows (`bit.ly/abc`, `example.com?x`,
//!      `bit.ly:443/x`) and the top-level label is a two-letter (country-code-shaped) one or
//!      a well-known generic TLD (a short list kept in this module);
//!    - nothing follows, the top-level label is as above, and it is not a capitalised
//!      English word that more likely starts a sentence after a missing space
//!      (`Hello.It's`, `great.Fun`; see the decisions);
//!    - it is a dotted-quad IPv4 address followed by a path or port (`192.0.2.1/login`); a
//!      bare dotted quad is as likely a version number.
//!
//!    A top-level label must be letters (or a punycode `xn--` label), which rules out
//!    decimals (`3.50`), times (`10.30`) and versions (`v1.2.3`); one-letter labels rule out
//!    abbreviations (`e.g.`, `i.e.`, `a.m.`, `U.S.`).
//! 4. **Past a link**, its path, query and fragment are skipped up to the next space (or a
//!    character of a space-less script), so `example.com/go/evil.com` is one link to
//!    `example.com`, like the phone shows it.
//!
//! Hosts are lowercased and lose trailing dots (`bit.ly.` is `bit.ly`); `www.` is kept.
//! A rule domain matches a host equal to it or ending in `.` + it, on a label boundary:
//! `sub.bit.ly` is `bit.ly`, `notbit.ly` is not.
//!
//! The work is linear in the body: one folding pass, one scan in which every character is
//! looked at a bounded number of times, and per host a lookup for each of its labels.
//!
//! Decisions:
//! - **Email addresses count.** The domain of `help@evil.com` is reported as a link host:
//!   phones make addresses tappable, and an "email us at x@evil.com" is a contact point of
//!   the blocked party all the same. The local part is never reported, and `first.last`
//!   before an `@` is not mistaken for a host.
//! - **Prose with a missing space** (`end.Start of sentence`) is a link only when the word
//!   after the dot is a TLD, as a phone's linkifier would do too. `end.Start` is not (no
//!   `.start` in the list); `Thanks.Me` is not either, because a capitalised English word as
//!   TLD (`It`, `Me`, `Fun`, `Live`) reads as a new sentence. The price: `Evil.Fun` without a
//!   path escapes, while `evil.fun`, `EVIL.FUN` and `Evil.Fun/x` do not.
//! - **False positives are cheap, misses are not.** A file name such as `setup.py` reads as
//!   a host (`.py` is a country code), but a rule only refuses hosts it lists, so such noise
//!   refuses nothing; a missed link to a blocked domain is the failure that matters.
//! - **No IDNA conversion.** Hosts are reported as written (lowercased), so a rule written
//!   in punycode does not match the same domain written in Unicode, and the reverse.
//! - **Links inside a link's path or query are not reported** (`example.com/?u=bit.ly/x`):
//!   the reader can only tap the outer link. Nor is anything split by spaces (`bit .ly`),
//!   which no phone links.
//! - When one host breaks both rules, the shortener rule is reported (the more specific
//!   reason); across hosts, the first host in the body wins.
//!
//! # The opt-out footer
//!
//! [`with_footer`] appends the app's footer (default [`DEFAULT_FOOTER`]) on its own line,
//! unless the body already tells the recipient how to opt out. The returned text is what
//! is sent and what segments are counted on, footer included. Recognising an existing
//! instruction reads words the way [`crate::optout`] reads inbound texts (NFKC, invisible
//! characters dropped, case and punctuation ignored) and accepts the usual shapes:
//! "reply/text/txt/send/sms/msg/respond/type STOP" (or UNSUBSCRIBE, STOPALL, UNSUB, OPTOUT; "reply
//! with the word STOP" too), "STOP to opt out / unsubscribe / end / cancel / quit",
//! "STOP 2 END", "STOP2END", or the footer's own words. An instruction does not run across
//! a sentence break (`.`, `!`, `?`, `;`, a line break): "Stop. To end the call, hang up"
//! is not one. When unsure, the footer is
//! appended: a duplicated instruction costs a few characters, a missing one is a compliance
//! failure.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;

/// An app's link rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkRules {
    /// Refuse bodies with links to known URL shorteners (their target is hidden, a classic
    /// phishing and filter-evasion tool).
    pub block_shorteners: bool,
    /// Refuse bodies with links to these domains or any of their subdomains (lowercase, no
    /// scheme, e.g. "example.com").
    pub blocked_domains: Vec<String>,
}

/// Why a body's links are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkViolation {
    /// `link_shortener_not_allowed` or `link_not_allowed`.
    pub code: &'static str,
    /// The offending host, lowercase (a domain, never the full URL: a URL can carry personal
    /// data in its path or query).
    pub host: String,
}

/// The default opt-out footer text.
pub const DEFAULT_FOOTER: &str = "Reply STOP to opt out";

const SHORTENERS_DATA: &str = include_str!("../data/url_shorteners.txt");

static SHORTENERS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    SHORTENERS_DATA
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
});

/// Generic TLDs that make a scheme-less, path-less run a link. Two-letter (country-code)
/// TLDs need no listing: almost every pair of letters is one. Kept to the widely used and
/// the widely abused; a rarer TLD still counts when a path follows or a scheme precedes.
const KNOWN_TLDS: &[&str] = &[
    "aero", "agency", "app", "asia", "bank", "bar", "best", "bid", "biz", "blog", "buzz", "cam",
    "cash", "cat", "center", "cfd", "chat", "city", "click", "cloud", "club", "com", "company",
    "coop", "credit", "cyou", "design", "dev", "digital", "edu", "email", "finance", "fun", "gle",
    "gov", "group", "guru", "help", "host", "icu", "info", "ink", "int", "jobs", "life", "link",
    "live", "loan", "lol", "media", "mil", "mobi", "mom", "money", "monster", "mov", "museum",
    "name", "net", "network", "news", "one", "online", "org", "page", "pics", "press", "pro",
    "quest", "rest", "sbs", "shop", "site", "social", "space", "store", "studio", "support",
    "tech", "tel", "today", "top", "travel", "vip", "website", "win", "work", "world", "xxx",
    "xyz", "zip", "zone",
];

/// TLDs of more than two letters that are never English words, so a capitalised one
/// (`Amazon.Com`) still reads as a link rather than a sentence start.
const NON_WORD_TLDS: &[&str] = &[
    "aero", "asia", "biz", "cfd", "com", "coop", "cyou", "edu", "gle", "gov", "icu", "info", "int",
    "mil", "mobi", "net", "org", "sbs", "xxx", "xyz",
];

/// Two-letter TLDs that are also English words, likely to start a sentence after a
/// missing space (`Hello.It's`).
const TWO_LETTER_WORDS: &[&str] = &[
    "am", "an", "as", "at", "be", "by", "do", "go", "he", "hi", "if", "in", "is", "it", "me", "my",
    "no", "of", "oh", "ok", "on", "or", "so", "to", "up", "us", "we",
];

/// Longest DNS name, in characters: a longer run is no host, whatever it looks like.
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label, in characters.
const MAX_LABEL_LEN: usize = 63;

/// The hosts of the links in a body, lowercased, in order of appearance, deduplicated.
pub fn link_hosts(body: &str) -> Vec<String> {
    let text = fold(body);
    let mut seen = HashSet::new();
    let mut hosts = Vec::new();
    scan(&text, &mut |host| {
        if seen.insert(host.clone()) {
            hosts.push(host);
        }
    });
    hosts
}

/// Checks a body against the rules; the first violation found.
pub fn check_links(body: &str, rules: &LinkRules) -> Result<(), LinkViolation> {
    if !rules.block_shorteners && rules.blocked_domains.is_empty() {
        return Ok(());
    }
    let blocked: HashSet<String> = rules
        .blocked_domains
        .iter()
        .map(|d| normalize_host(d))
        .filter(|d| !d.is_empty())
        .collect();
    for host in link_hosts(body) {
        let code = if rules.block_shorteners && is_shortener(&host) {
            "link_shortener_not_allowed"
        } else if suffixes(&host).any(|s| blocked.contains(s)) {
            "link_not_allowed"
        } else {
            continue;
        };
        return Err(LinkViolation { code, host });
    }
    Ok(())
}

/// Whether `host` (lowercase) is a known URL shortener or a subdomain of one.
pub fn is_shortener(host: &str) -> bool {
    let host = normalize_host(host);
    suffixes(&host).any(|s| SHORTENERS.contains(s))
}

/// The body with the opt-out footer appended on its own line (`"{body}\n{footer}"`), unless
/// the body already tells the recipient how to opt out (it already contains the footer text,
/// case-insensitively, or an instruction like "reply STOP", "text STOP", "txt STOP", "send
/// STOP", "STOP to opt out", "STOP to unsubscribe", "STOP to end", "STOP2END", "reply
/// UNSUBSCRIBE"... — case-insensitive, tolerant of punctuation and extra spaces). Returns
/// Cow::Borrowed when nothing is appended.
///
/// A footer with nothing but white space appends nothing.
pub fn with_footer<'a>(body: &'a str, footer: &str) -> Cow<'a, str> {
    if footer.trim().is_empty() {
        return Cow::Borrowed(body);
    }
    let body_words = words(body);
    // The footer's own words are compared without sentence breaks, so "Opt out. Reply X"
    // and "Opt out, reply X" are the same footer.
    let unbroken =
        |ws: &[String]| -> Vec<String> { ws.iter().filter(|w| *w != BREAK).cloned().collect() };
    let footer_words = unbroken(&words(footer));
    let body_unbroken = unbroken(&body_words);
    let has_footer = !footer_words.is_empty()
        && body_unbroken
            .windows(footer_words.len())
            .any(|w| w == footer_words.as_slice());
    if has_footer || has_opt_out_instruction(&body_words) {
        Cow::Borrowed(body)
    } else {
        Cow::Owned(format!("{body}\n{footer}"))
    }
}

// ---------------------------------------------------------------------------------------
// Folding

/// Drops invisible characters, applies NFKC and turns ideographic full stops into dots.
fn fold(text: &str) -> Vec<char> {
    // ASCII has nothing invisible and is its own NFKC; most bodies are ASCII, and NFKC's
    // decompose-and-recompose was the larger part of checking them.
    if text.is_ascii() {
        return text.chars().collect();
    }
    text.chars()
        .filter(|&c| !is_invisible(c))
        .nfkc()
        // NFKC already maps the full-width `．` (and `｡` to `。`), but not `。` itself.
        .map(|c| if c == '\u{3002}' { '.' } else { c })
        .collect()
}

/// Default-ignorable characters: they print nothing, so they can sit inside a URL
/// (`bit\u{200B}.ly`) without the reader seeing any difference.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' // soft hyphen
            | '\u{034F}' // combining grapheme joiner
            | '\u{061C}' // Arabic letter mark
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{17B4}' | '\u{17B5}' // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}' // Mongolian variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{FEFF}' // zero-width no-break space / BOM
            | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}' // musical formatting controls
            | '\u{E0000}'..='\u{E0FFF}' // tag characters, variation selectors supplement
    )
}

/// Letters of scripts written without spaces between words. Next to them a Latin host is
/// still a word of its own (`詳細はbit.lyへ`), and they end a Latin host or path.
fn is_spaceless_script(c: char) -> bool {
    matches!(
        c,
        '\u{0E00}'..='\u{0EFF}' // Thai, Lao
            | '\u{1000}'..='\u{109F}' // Myanmar
            | '\u{1780}'..='\u{17FF}' // Khmer
            | '\u{2E80}'..='\u{9FFF}' // CJK radicals and punctuation, kana, CJK ideographs
            | '\u{AC00}'..='\u{D7AF}' // Hangul syllables
            | '\u{F900}'..='\u{FAFF}' // CJK compatibility ideographs
            | '\u{20000}'..='\u{3FFFF}' // CJK extensions
    )
}

// ---------------------------------------------------------------------------------------
// Link scanning

/// Characters of a scheme-less host run.
fn is_run_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-'
}

/// A letter or digit that glues onto a host run, making it part of a longer word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_spaceless_script(c)
}

/// Calls `found` with every link host in the folded text, in order, duplicates included.
fn scan(t: &[char], found: &mut impl FnMut(String)) {
    let mut i = 0;
    while i < t.len() {
        if !is_run_char(t[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        while end < t.len() && is_run_char(t[end]) {
            end += 1;
        }
        if let Some(authority_start) = scheme_end(t, start, end) {
            let (host, authority_end) = authority_host(t, authority_start);
            if let Some(host) = host {
                found(host);
            }
            i = skip_path(t, authority_end);
            continue;
        }
        i = end;
        if let Some((host, link_end)) = bare_host(t, start, end) {
            found(host);
            i = link_end;
        }
    }
}

/// If the run `t[start..end]` is a URL scheme, where its authority begins.
fn scheme_end(t: &[char], start: usize, end: usize) -> Option<usize> {
    if t.get(end) != Some(&':') || !t[start].is_ascii_alphabetic() {
        return None;
    }
    let scheme: String = t[start..end].iter().collect();
    let mut p = end + 1;
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        // Browsers take `http:bit.ly`, `https:/bit.ly` and `https:\\bit.ly` as links too.
        while p < t.len() && (t[p] == '/' || t[p] == '\\') {
            p += 1;
        }
        return Some(p);
    }
    (t.get(p) == Some(&'/') && t.get(p + 1) == Some(&'/')).then_some(p + 2)
}

/// The host of the authority starting at `p` (userinfo and port dropped), and where the
/// authority ends.
fn authority_host(t: &[char], p: usize) -> (Option<String>, usize) {
    let mut q = p;
    let mut host_start = p;
    let mut ascii_seen = false;
    while q < t.len() {
        let c = t[q];
        if c == '@' {
            host_start = q + 1;
            ascii_seen = false;
        } else if c.is_ascii_alphanumeric() {
            ascii_seen = true;
        } else if is_spaceless_script(c) {
            // `https://bit.lyをご覧ください`: the phone links `bit.ly`; only a host that is
            // itself in such a script (`例え.jp`) may contain these letters.
            if ascii_seen {
                break;
            }
        } else if !(c.is_alphanumeric() || "-._~%!$&'()*+,;=:[]".contains(c)) {
            break;
        }
        q += 1;
    }
    let h = &t[host_start..q];
    let host: String = if h.first() == Some(&'[') {
        // IPv6 literal: up to the closing bracket.
        match h.iter().position(|&c| c == ']') {
            Some(close) => h[..=close].iter().collect(),
            None => return (None, q),
        }
    } else {
        let len = h
            .iter()
            .position(|&c| !(c.is_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or(h.len());
        h[..len]
            .iter()
            .collect::<String>()
            .trim_matches(|c| c == '.' || c == '-')
            .to_owned()
    };
    let valid = !host.is_empty()
        && host.chars().count() <= MAX_HOST_LEN
        && (host.starts_with('[')
            || host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().count() <= MAX_LABEL_LEN));
    (valid.then(|| host.to_lowercase()), q)
}

/// Skips a path, query or fragment starting at `p`, if there is one.
fn skip_path(t: &[char], p: usize) -> usize {
    if !matches!(t.get(p), Some('/' | '?' | '#' | '\\')) {
        return p;
    }
    let mut q = p;
    while q < t.len()
        && !t[q].is_whitespace()
        && !matches!(t[q], '<' | '>' | '"')
        && !is_spaceless_script(t[q])
    {
        q += 1;
    }
    q
}

/// Whether the run `t[start..end]`, written without a scheme, is a link host; if so, the
/// lowercase host and where the link ends.
fn bare_host(t: &[char], start: usize, end: usize) -> Option<(String, usize)> {
    if start > 0 && is_word_char(t[start - 1]) {
        return None;
    }
    match t.get(end) {
        Some(&c) if is_word_char(c) => return None,
        // The local part of an email address, not a host.
        Some('@') => return None,
        _ => {}
    }
    let is_edge = |c: &char| *c == '.' || *c == '-';
    let lead = t[start..end].iter().take_while(|c| is_edge(c)).count();
    let trail = t[start + lead..end]
        .iter()
        .rev()
        .take_while(|c| is_edge(c))
        .count();
    let (hs, he) = (start + lead, end - trail);
    if hs >= he || he - hs > MAX_HOST_LEN {
        return None;
    }
    let written: String = t[hs..he].iter().collect();
    let labels: Vec<&str> = written.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty() || l.len() > MAX_LABEL_LEN || l.starts_with('-') || l.ends_with('-')
        })
    {
        return None;
    }

    // What follows the host: a fully qualified `bit.ly./x` still has its path.
    let after = if t[he..end].iter().all(|&c| c == '.') {
        end
    } else {
        he
    };
    let (port, after_port) = port_at(t, after);
    let has_path = matches!(t.get(after_port), Some('/' | '?' | '#'));

    let tld = labels[labels.len() - 1];
    let tld_lower = tld.to_ascii_lowercase();
    let email = start >= 2 && t[start - 1] == '@' && is_local_part_char(t[start - 2]);
    let ipv4 = labels.len() == 4
        && labels
            .iter()
            .all(|l| l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()))
        && labels
            .iter()
            .all(|l| l.parse::<u16>().is_ok_and(|n| n <= 255));
    let alphabetic_tld =
        tld.bytes().all(|b| b.is_ascii_alphabetic()) || tld_lower.starts_with("xn--");
    let known_tld = tld.len() == 2 || KNOWN_TLDS.contains(&tld_lower.as_str());

    let is_link = if ipv4 {
        has_path || port
    } else if !alphabetic_tld || tld.len() < 2 {
        false
    } else if email || (labels.len() >= 3 && labels[0].eq_ignore_ascii_case("www")) {
        true
    } else if has_path || port {
        known_tld
    } else {
        known_tld && !reads_as_sentence_start(tld, &tld_lower)
    };
    // The path is skipped only for a link: skipping it for every run that is not one would
    // rescan a long path once per dotted word in it (`x.y/x.y/x.y/…`), quadratic.
    is_link.then(|| (written.to_ascii_lowercase(), skip_path(t, after_port)))
}

/// Whether a `:port` starts at `p`; and where it ends (or `p`).
fn port_at(t: &[char], p: usize) -> (bool, usize) {
    if t.get(p) != Some(&':') {
        return (false, p);
    }
    let digits = t[p + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
    let end = p + 1 + digits;
    if (1..=5).contains(&digits) && !t.get(end).is_some_and(|&c| is_word_char(c)) {
        (true, end)
    } else {
        (false, p)
    }
}

/// A capitalised English word as TLD, as in `Hello.It's` or `great.Fun`: more likely a new
/// sentence after a missing space than a link.
fn reads_as_sentence_start(tld: &str, tld_lower: &str) -> bool {
    let mut chars = tld.chars();
    let title_case = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_lowercase());
    title_case
        && if tld.len() == 2 {
            TWO_LETTER_WORDS.contains(&tld_lower)
        } else {
            !NON_WORD_TLDS.contains(&tld_lower)
        }
}

/// Characters of an email address's local part (RFC 5322 atext, dots, and any letter).
fn is_local_part_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-!#$&'*/=?^`{|}~".contains(c)
}

/// A host or rule domain in comparable form: trimmed, lowercase, no trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_lowercase()
}

/// `a.b.c`, `b.c`, `c`: the host and each parent domain, for label-boundary matching.
fn suffixes(host: &str) -> impl Iterator<Item = &str> {
    std::iter::once(host).chain(host.match_indices('.').map(move |(i, _)| &host[i + 1..]))
}

// ---------------------------------------------------------------------------------------
// Opt-out instructions

/// Verbs that introduce the keyword to send: "reply STOP", "text STOP".
const VERBS: &[&str] = &[
    "reply", "text", "txt", "send", "sms", "msg", "respond", "type",
];
/// Words allowed between the verb and the keyword: "reply with the word STOP".
const VERB_FILLER: &[&str] = &["with", "the", "word", "keyword", "back"];
/// How many filler words may stand between the verb and the keyword.
const MAX_VERB_FILLER: usize = 3;
/// Opt-out keywords an instruction names.
const KEYWORDS: &[&str] = &["stop", "stopall", "unsubscribe", "unsub", "optout"];
/// What "STOP to …" / "STOP 2 …" goes on to promise.
const OUTCOMES: &[&str] = &[
    "opt",
    "optout",
    "unsubscribe",
    "unsub",
    "end",
    "cancel",
    "quit",
    "stop",
    "leave",
    "remove",
];

/// Stands for a sentence break among [`words`]: an instruction does not run across one
/// ("Stop. To end the call, hang up" is not "STOP to end").
const BREAK: &str = ".";

/// The text's words: NFKC, invisible characters dropped, lowercase, split at anything that
/// is not a letter or digit, with [`BREAK`] where a sentence ends.
fn words(text: &str) -> Vec<String> {
    // As in `fold`: ASCII needs no folding.
    if text.is_ascii() {
        words_of(text.chars())
    } else {
        words_of(text.chars().filter(|&c| !is_invisible(c)).nfkc())
    }
}

fn words_of(chars: impl Iterator<Item = char>) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in chars {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if matches!(c, '.' | '!' | '?' | ';' | '\n' | '\u{3002}') {
            out.push(BREAK.to_owned());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn has_opt_out_instruction(words: &[String]) -> bool {
    let is = |i: usize, set: &[&str]| words.get(i).is_some_and(|w| set.contains(&w.as_str()));
    (0..words.len()).any(|i| {
        let w = words[i].as_str();
        if VERBS.contains(&w) {
            let keyword_at = (i + 1..=i + 1 + MAX_VERB_FILLER).find(|&j| !is(j, VERB_FILLER));
            return keyword_at.is_some_and(|j| is(j, KEYWORDS));
        }
        if KEYWORDS.contains(&w) && (is(i + 1, &["to"]) || is(i + 1, &["2"])) {
            return is(i + 2, OUTCOMES);
        }
        // "STOP2END", "stop2quit": the digit joins the words into one.
        w.strip_prefix("stop2")
            .is_some_and(|rest| OUTCOMES.contains(&rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (body, the hosts `link_hosts` must report).
    const LINK_CASES: &[(&str, &[&str])] = &[
        // --- explicit URLs
        ("Go to https://example.com/path?q=1", &["example.com"]),
        ("http://bit.ly/abc", &["bit.ly"]),
        ("HTTPS://BIT.LY/X", &["bit.ly"]),
        ("https://user@bit.ly/", &["bit.ly"]),
        ("https://user:pw@bit.ly:8080/x", &["bit.ly"]),
        ("https://bit.ly@evil.com/x", &["evil.com"]),
        (
            "http:/bit.ly/x and https:\\\\tinyurl.com\\x",
            &["bit.ly", "tinyurl.com"],
        ),
        ("http://localhost:8080/", &["localhost"]),
        ("https://192.0.2.1/login", &["192.0.2.1"]),
        ("https://[2001:db8::1]/x", &["[2001:db8::1]"]),
        ("ftp://files.example.org/a", &["files.example.org"]),
        ("hxxp://evil.com/x", &["evil.com"]),
        ("https://bücher.de/x", &["bücher.de"]),
        ("(https://bit.ly), then", &["bit.ly"]),
        // --- scheme-less
        ("www.example.com/path", &["www.example.com"]),
        ("WWW.Example.Com", &["www.example.com"]),
        ("see bit.ly/abc", &["bit.ly"]),
        ("example.com/x", &["example.com"]),
        ("Visit evil.com today", &["evil.com"]),
        ("Visit Evil.Com today", &["evil.com"]),
        ("evil.fun and EVIL.FUN", &["evil.fun"]),
        ("bit.ly:443/x", &["bit.ly"]),
        ("example.com?x=1", &["example.com"]),
        ("see bit.ly/x.", &["bit.ly"]),
        ("(bit.ly/x)", &["bit.ly"]),
        ("Go to bit.ly.", &["bit.ly"]),
        ("bit.ly./x", &["bit.ly"]),
        ("sub.bit.ly/x", &["sub.bit.ly"]),
        ("a bare bit.ly", &["bit.ly"]),
        ("login at 192.0.2.1/login", &["192.0.2.1"]),
        ("Email us at help@evil.com", &["evil.com"]),
        ("first.last@evil.co.uk", &["evil.co.uk"]),
        ("mailto:x@evil.com", &["evil.com"]),
        ("x@company.internal", &["company.internal"]),
        // --- evasions
        ("bit\u{200B}.ly/x", &["bit.ly"]),
        ("bit.\u{2060}ly/x", &["bit.ly"]),
        ("bit．ly", &["bit.ly"]),
        ("ｂｉｔ．ｌｙ／ｘ", &["bit.ly"]),
        ("ｈｔｔｐｓ：／／ｂｉｔ．ｌｙ", &["bit.ly"]),
        ("bit。ly/x", &["bit.ly"]),
        ("bit｡ly/x", &["bit.ly"]),
        (
            "bit\u{2024}ly/x and tinyurl\u{FE52}com",
            &["bit.ly", "tinyurl.com"],
        ),
        ("詳細はbit.lyへ", &["bit.ly"]),
        ("詳しくはhttps://bit.ly/abcをご覧ください", &["bit.ly"]),
        (
            "https://bit.lyをご覧ください。info@evil.com",
            &["bit.ly", "evil.com"],
        ),
        ("https://例え.jp/x", &["例え.jp"]),
        ("https://bit.ly。次", &["bit.ly"]),
        // --- order, dedup, paths not rescanned
        (
            "a.com/x b.org c.net/y a.com/z",
            &["a.com", "b.org", "c.net"],
        ),
        (
            "example.com/go/evil.com and example.com/?u=https://bit.ly/x",
            &["example.com"],
        ),
        (
            "Go to example.com/x, then bit.ly/y",
            &["example.com", "bit.ly"],
        ),
        // --- not links
        ("It costs 3.50", &[]),
        ("at 10.30 a.m.", &[]),
        ("e.g. this, i.e. that", &[]),
        ("v1.2.3 and version 1.2.3.4", &[]),
        ("Mr.Smith", &[]),
        ("end.Start of sentence", &[]),
        ("Hello.It's me. Thanks.Me too. great.Fun", &[]),
        ("U.S. citizens, No.1, 1.5GB, 3.14159", &[]),
        ("open report.pdf", &[]),
        ("a.m./p.m. and Ph.D/MBA and Mr.Smith/Jones", &[]),
        ("café.com", &[]),
        ("bit .ly", &[]),
        ("x.y", &[]),
        ("foo..com/x", &[]),
        ("https://", &[]),
        ("@", &[]),
        ("", &[]),
    ];

    #[test]
    fn link_detection() {
        for (body, want) in LINK_CASES {
            assert_eq!(link_hosts(body), *want, "{body:?}");
        }
    }

    fn rules(block_shorteners: bool, blocked: &[&str]) -> LinkRules {
        LinkRules {
            block_shorteners,
            blocked_domains: blocked.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn violations() {
        const SHORT: &str = "link_shortener_not_allowed";
        const BLOCKED: &str = "link_not_allowed";
        // (body, rules, the expected violation as (code, host)).
        type Case = (
            &'static str,
            LinkRules,
            Option<(&'static str, &'static str)>,
        );
        let cases: &[Case] = &[
            ("see bit.ly/x", rules(true, &[]), Some((SHORT, "bit.ly"))),
            ("see bit.ly/x", rules(false, &[]), None),
            (
                "see sub.bit.ly/x",
                rules(true, &[]),
                Some((SHORT, "sub.bit.ly")),
            ),
            ("see notbit.ly/x", rules(true, &[]), None),
            (
                "HTTPS://TINYURL.COM/X",
                rules(true, &[]),
                Some((SHORT, "tinyurl.com")),
            ),
            (
                "bit\u{200B}.ly/x",
                rules(true, &[]),
                Some((SHORT, "bit.ly")),
            ),
            ("bit．ly", rules(true, &[]), Some((SHORT, "bit.ly"))),
            (
                "https://user@bit.ly/",
                rules(true, &[]),
                Some((SHORT, "bit.ly")),
            ),
            (
                "watch youtu.be/abc",
                rules(true, &[]),
                Some((SHORT, "youtu.be")),
            ),
            ("example.com/x", rules(true, &[]), None),
            (
                "visit sub.example.com/x",
                rules(false, &["example.com"]),
                Some((BLOCKED, "sub.example.com")),
            ),
            (
                "visit example.com",
                rules(false, &["example.com"]),
                Some((BLOCKED, "example.com")),
            ),
            (
                "visit EXAMPLE.COM.",
                rules(false, &["example.com"]),
                Some((BLOCKED, "example.com")),
            ),
            (
                "visit notexample.com/x",
                rules(false, &["example.com"]),
                None,
            ),
            (
                "visit example.com.evil.net/x",
                rules(false, &["example.com"]),
                None,
            ),
            (
                "mail x@example.com",
                rules(false, &["example.com"]),
                Some((BLOCKED, "example.com")),
            ),
            (
                "visit a.example.com",
                rules(false, &[" Example.COM. ", ""]),
                Some((BLOCKED, "a.example.com")),
            ),
            ("visit example.com", rules(false, &["a.example.com"]), None),
            (
                "evil.com/x then bit.ly/y",
                rules(true, &["evil.com"]),
                Some((BLOCKED, "evil.com")),
            ),
            (
                "bit.ly/y then evil.com/x",
                rules(true, &["evil.com"]),
                Some((SHORT, "bit.ly")),
            ),
            (
                "bit.ly/y",
                rules(true, &["bit.ly"]),
                Some((SHORT, "bit.ly")),
            ),
            (
                "bit.ly/y",
                rules(false, &["bit.ly"]),
                Some((BLOCKED, "bit.ly")),
            ),
            ("nothing here", rules(true, &["example.com"]), None),
        ];
        for (body, rules, want) in cases {
            let got = check_links(body, rules).err().map(|v| (v.code, v.host));
            let want = want.map(|(c, h)| (c, h.to_owned()));
            assert_eq!(got, want, "{body:?} {rules:?}");
        }
    }

    #[test]
    fn shortener_matching_is_on_label_boundaries() {
        for (host, want) in [
            ("bit.ly", true),
            ("sub.bit.ly", true),
            ("a.b.bit.ly", true),
            ("bit.ly.", true),
            ("BIT.LY", true),
            ("notbit.ly", false),
            ("bit.ly.evil.com", false),
            ("ly", false),
            ("", false),
        ] {
            assert_eq!(is_shortener(host), want, "{host:?}");
        }
    }

    #[test]
    fn shortener_list_parses() {
        let mut seen = HashSet::new();
        for line in SHORTENERS_DATA.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            assert!(seen.insert(line), "duplicate {line}");
            let labels: Vec<&str> = line.split('.').collect();
            assert!(labels.len() >= 2, "{line}: not a domain");
            for label in &labels {
                assert!(
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{line}: bad label {label:?}"
                );
            }
            // Every listed shortener must be found even when written bare, without a path.
            assert_eq!(link_hosts(&format!("see {line} now")), [line], "{line}");
            assert!(is_shortener(line));
        }
        assert!(seen.len() >= 60, "only {} shorteners", seen.len());
        assert_eq!(seen.len(), SHORTENERS.len());
    }

    #[test]
    fn scanning_is_linear() {
        // Adversarial shapes: long runs of dots, of labels, of `@`, of schemes.
        let bodies = [
            ".".repeat(100_000),
            "a.".repeat(50_000),
            "@a".repeat(50_000),
            "http:".repeat(20_000),
            "bit.ly/".repeat(15_000),
            "x@y.com ".repeat(12_000),
            "\u{200B}".repeat(30_000),
            "x.y/".repeat(25_000),
            format!("a.com:{}", "1".repeat(100_000)),
        ];
        let started = std::time::Instant::now();
        for body in &bodies {
            let _ = link_hosts(body);
            let _ = check_links(body, &rules(true, &["example.com"]));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(link_hosts(&"x@y.com ".repeat(12_000)), ["y.com"]);
    }

    #[test]
    fn footer() {
        const APPENDED: bool = true;
        const KEPT: bool = false;
        let cases: &[(&str, bool)] = &[
            ("Your code is 1234", APPENDED),
            ("", APPENDED),
            ("Sale! Reply STOP to opt out", KEPT),
            ("Sale! reply stop to opt-out.", KEPT),
            ("Sale!\nREPLY   STOP!!", KEPT),
            ("Sale! Text STOP to 12345", KEPT),
            ("Sale! Txt STOP to end", KEPT),
            ("Sale! Send STOP", KEPT),
            ("Sale! STOP to unsubscribe", KEPT),
            ("Sale! Stop to end", KEPT),
            ("Sale! STOP2END", KEPT),
            ("Sale! Stop 2 quit", KEPT),
            ("Sale! Reply UNSUBSCRIBE", KEPT),
            ("Sale! Reply with the word STOP", KEPT),
            ("Sale! Reply 'STOP' to cancel", KEPT),
            ("Sale! Reply \"stop\"", KEPT),
            ("Sale! Ｒｅｐｌｙ ＳＴＯＰ", KEPT),
            ("Sale! Reply S\u{200B}TOP", KEPT),
            ("Sale! reply-stop", KEPT),
            ("Sale! ...reply STOP to opt out...", KEPT),
            // Not an opt-out instruction: the footer goes on.
            ("Don't stop believing", APPENDED),
            ("The bus stop is near", APPENDED),
            ("Reply to this message", APPENDED),
            ("Reply YES to confirm", APPENDED),
            ("Stopping by at 5", APPENDED),
            ("non-stop deals", APPENDED),
            ("Stop. To end the call, hang up", APPENDED),
            ("Reply STOPPED", APPENDED),
            ("To opt out call us", APPENDED),
        ];
        for (body, appended) in cases {
            let out = with_footer(body, DEFAULT_FOOTER);
            if *appended {
                assert_eq!(out, format!("{body}\n{DEFAULT_FOOTER}"), "{body:?}");
                assert!(matches!(out, Cow::Owned(_)), "{body:?}");
            } else {
                assert!(
                    matches!(out, Cow::Borrowed(b) if b == *body),
                    "{body:?}: {out:?}"
                );
            }
        }
    }

    #[test]
    fn custom_footer_already_present() {
        let footer = "Msg&data rates may apply. Opt out: text QUIT";
        let kept = [
            "Hi! msg & data rates may apply, OPT OUT: Text Quit",
            "x\nMSG&DATA RATES MAY APPLY. OPT OUT: TEXT QUIT",
        ];
        for body in kept {
            assert!(
                matches!(with_footer(body, footer), Cow::Borrowed(_)),
                "{body:?}"
            );
        }
        assert_eq!(with_footer("Hi!", footer), format!("Hi!\n{footer}"));
        assert_eq!(
            with_footer("Hi!", "Reply STOP to opt out"),
            "Hi!\nReply STOP to opt out"
        );
        // A white-space footer appends nothing; a punctuation-only one is still appended.
        assert!(matches!(with_footer("Hi!", "  "), Cow::Borrowed("Hi!")));
        assert_eq!(with_footer("Hi!", "—"), "Hi!\n—");
    }

    #[test]
    fn footer_is_counted_in_segments() {
        let body = "a".repeat(150);
        assert_eq!(crate::segment_info(&body).segments, 1);
        let out = with_footer(&body, DEFAULT_FOOTER);
        assert_eq!(out.chars().count(), 150 + 1 + DEFAULT_FOOTER.len());
        assert_eq!(crate::segment_info(&out).segments, 2);
        let kept = format!("{} Reply STOP to opt out", "a".repeat(130));
        assert_eq!(with_footer(&kept, DEFAULT_FOOTER), kept);
        assert_eq!(
            crate::segment_info(&with_footer(&kept, DEFAULT_FOOTER)).segments,
            1
        );
    }
}
