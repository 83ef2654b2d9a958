//! Log set-up: JSON lines outside dev mode, human-readable in dev; always to stderr so
//! stdout stays clean for `--json` output.
//!
//! Every line passes through [`Redacting`] on its way out. The code is written so that
//! nothing sensitive is logged in the first place (`E164` masks itself, `Secret` redacts,
//! bodies do not serialize); the writer is the second line, for what a careless field or a
//! dependency's message might carry: phone numbers are masked, and API keys, access and
//! realtime tokens, webhook secrets and bearer credentials are cut, whatever the caller
//! passed.
//!
//! Security events (target `security`) can also go to a file of their own
//! (`PORTCULLIS_SECURITY_LOG_FILE`), JSON lines, for alerting.

use std::io;
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use regex::bytes::{Captures, Regex};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The target of security events (authentication failures, blocks, refused credentials,
/// SSRF refusals, signature failures): `tracing::warn!(target: "security", …)`.
pub const SECURITY_TARGET: &str = "security";

/// Logs to stderr and, with `security_log`, copies security events as JSON lines to that
/// file too, a stream of their own to alert on. An unopenable file is an error: a security
/// log silently missing is worse than a gateway that will not start.
pub fn init(format: Option<&str>, dev: bool, security_log: Option<&Path>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=warn"));
    let security = match security_log {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "opening PORTCULLIS_SECURITY_LOG_FILE {}: {e}",
                        path.display()
                    )
                })?,
        )),
        None => None,
    };
    let _ = init_with(format, dev, filter, std::io::stderr, security);
    Ok(())
}

/// The same subscriber as [`init`] over any writers and filter (the hostile tests capture
/// what the product would log). Fails if a global subscriber is already set.
pub fn init_with<W, S>(
    format: Option<&str>,
    dev: bool,
    filter: EnvFilter,
    writer: W,
    security: Option<S>,
) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    S: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let json = match format {
        Some("json") => true,
        Some("pretty") => false,
        _ => !dev,
    };
    let main = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(Redacting(writer))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(Redacting(writer))
            .boxed()
    };
    let security = security.map(|w| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(Redacting(w))
            .with_filter(Targets::new().with_target(SECURITY_TARGET, tracing::Level::TRACE))
    });
    tracing_subscriber::registry()
        .with(main.with_filter(filter))
        .with(security)
        .try_init()?;
    std::panic::set_hook(Box::new(log_panic));
    Ok(())
}

/// The panic hook: panics are logged with their location only, since a panic message can
/// carry request data (a number, a body), which must never reach a log line.
pub fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    tracing::error!(location = %location, "panic");
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
        | (?P<jwt>eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9\.)[0-9A-Za-z_-]+(?:\.[0-9A-Za-z_-]*)?
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
            .or_else(|| c.name("jwt"))
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
        let jwt =
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJrZXlfMSJ9.c2lnbmF0dXJlX3NpZ25hdHVyZQ";
        let out = r(&format!(r#"{{"token":"{jwt}"}}"#));
        assert_eq!(
            out,
            r#"{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.[redacted]"}"#
        );
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
