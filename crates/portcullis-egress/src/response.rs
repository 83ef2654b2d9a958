//! Reading what a receiver said without trusting it.

use std::time::{Duration, SystemTime};

/// `Retry-After` as delta-seconds or an HTTP-date (all three RFC 9110 forms).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly large values saturate rather than vanish: the receiver clearly wants a
        // long pause, and the caller caps its own backoff.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Up to `max_chars` characters of `body` as text fit for logs and dashboards: invalid UTF-8
/// becomes U+FFFD and control or direction-changing characters cannot break lines, forge
/// log entries or reorder what an operator reads.
pub(crate) fn excerpt(body: &[u8], max_chars: usize) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(max_chars)
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() || is_bidi_control(c) => '\u{FFFD}',
            c => c,
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let secs = |s| parse_retry_after(s, now).map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 0 "), Some(0));
        assert_eq!(secs("99999999999999999999999"), Some(u64::MAX));
        assert_eq!(secs("Sun, 06 Nov 1994 08:50:37 GMT"), Some(60));
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:47 GMT"), Some(10));
        assert_eq!(secs("Sun Nov  6 08:49:57 1994"), Some(20));
        assert_eq!(secs("Sun, 06 Nov 1994 08:00:00 GMT"), Some(0));
        assert_eq!(secs("-5"), None);
        assert_eq!(secs("1.5"), None);
        assert_eq!(secs("soon"), None);
        assert_eq!(secs(""), None);
    }

    #[test]
    fn excerpt_is_bounded_and_clean() {
        assert_eq!(
            excerpt(b"  ok\r\nline2\t\x07\x1b[31m ", 200),
            "ok  line2 \u{FFFD}\u{FFFD}[31m"
        );
        assert_eq!(excerpt(b"abc\xff\xfedef", 200), "abc\u{FFFD}\u{FFFD}def");
        assert_eq!(excerpt("a\u{202E}b".as_bytes(), 200), "a\u{FFFD}b");
        let long = "é".repeat(500);
        let e = excerpt(long.as_bytes(), 200);
        assert_eq!(e.chars().count(), 200);
        // A multi-byte character cut off by the read limit is replaced, not a panic.
        assert_eq!(excerpt(&"é".as_bytes()[..1], 200), "\u{FFFD}");
        assert_eq!(excerpt(b"", 200), "");
    }
}
