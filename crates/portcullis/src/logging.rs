//! Log set-up: JSON lines outside dev mode, human-readable in dev; always to stderr so
//! stdout stays clean for `--json` output.
//!
//! Every line passes through [`Redacting`] on its way out. The code is written so that
//! nothing sensitive is logged in the first place (`E164` masks itself, `Secret` redacts,
//! bodies do not serialize); the writer is the second line, for what a careless field or a
//! dependency's message might carry: phone numbers are masked, and API keys, realtime
//! tokens, webhook secrets and bearer credentials are cut, whatever the caller passed.

use std::io;
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub fn init(format: Option<&str>, dev: bool) {
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=warn"));
    let json = match format {
        Some("json") => true,
        Some("pretty") => false,
        _ => !dev,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting(std::io::stderr));
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    install_panic_hook();
}

/// Panics are logged with their location only: a panic message can carry request data
/// (a number, a body), which must never reach a log line.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(location = %location, "panic");
    }));
}

/// Wraps a log writer so every line is scrubbed before it is written.
#[derive(Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

pub struct RedactingWriter<W>(W);

impl<W: io::Write> io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter hands over one whole event per write, so patterns never straddle
        // two calls.
        self.0.write_all(&redact(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Credentials: the identifying prefix (if any) survives, the secret part does not.
static CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?P<key>pcl_(?:live|test)_[0-9A-Za-z]{4})[0-9A-Za-z]{8,}
        | (?P<tok>wst_|whsec_)[0-9A-Za-z+/=_-]{8,}
        | (?P<bearer>(?i:bearer)\s+)[^\s\x22,;]+",
    )
    .expect("valid pattern")
});

/// E.164 numbers (and `+`-prefixed digit runs that look like them).
/// A trailing run of `*` is matched too, so an already-masked number is left alone.
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+[1-9][0-9]{6,14}\**").expect("valid pattern"));

pub fn redact(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let pass = CREDENTIAL.replace_all(line, |c: &Captures| {
        let keep = c
            .name("key")
            .or_else(|| c.name("tok"))
            .or_else(|| c.name("bearer"))
            .map(|m| m.as_bytes())
            .unwrap_or_default();
        [keep, b"[redacted]"].concat()
    });
    match PHONE.replace_all(&pass, |c: &Captures| {
        let digits = &c[0];
        if digits.ends_with(b"*") {
            return digits.to_vec();
        }
        let mut out = digits[..digits.len() - 4].to_vec();
        out.extend_from_slice(b"****");
        out
    }) {
        std::borrow::Cow::Borrowed(_) => pass,
        std::borrow::Cow::Owned(o) => std::borrow::Cow::Owned(o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        String::from_utf8(redact(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn credentials_and_numbers_never_pass() {
        let key = "pcl_live_Ab3dEfGhIjKlMnOpQrStUvWxYz012345";
        let line = format!(
            r#"{{"msg":"oops","key":"{key}","auth":"Bearer {key}","to":"+14155550123","secret":"whsec_c2VjcmV0c2VjcmV0c2VjcmV0","tok":"wst_abcdefghijklmnop"}}"#
        );
        let out = r(&line);
        for leaked in [&key[13..], "0123", "c2VjcmV0c2VjcmV0", "abcdefghijklmnop"] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        assert!(out.contains("pcl_live_Ab3d[redacted]"), "{out}");
        assert!(out.contains("+1415555****"), "{out}");
        assert!(out.contains("Bearer [redacted]"), "{out}");
        assert!(out.contains("whsec_[redacted]"), "{out}");
    }

    #[test]
    fn ordinary_lines_are_untouched() {
        let line =
            r#"{"msg":"message sent","message_id":"msg_0AbC","latency_ms":12,"to":"+1415555****"}"#;
        assert_eq!(r(line), line);
    }

    #[test]
    fn the_writer_scrubs_what_tracing_writes() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::util::SubscriberInitExt;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(Redacting(move || sink.clone()))
            .finish();
        let _guard = subscriber.set_default();
        // A careless caller: the raw number and key as plain strings.
        tracing::warn!(
            phone = "+447700900123",
            key = "pcl_test_Zz9yXw8vUt7sRq6pOn5mLk4jIh3gFe2d",
            "careless"
        );
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("careless"), "{out}");
        assert!(!out.contains("0123") && !out.contains("Rq6pOn5m"), "{out}");
    }
}
