//! Reading an HTTP provider's answer: the status, its `Retry-After` and the body, or a
//! retryable error when no answer came. Shared by the HTTP providers.

use std::fmt;
use std::time::Duration;

use crate::{ProviderError, parse_retry_after};

/// An answer: status, `Retry-After` (when sent), body.
pub(crate) type Answer = (u16, Option<Duration>, Vec<u8>);

/// The answer to `response` from `provider` (`"twilio"`, …, for error texts).
pub(crate) async fn read(
    provider: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<Answer, ProviderError> {
    let r = response.map_err(|e| transport_error(provider, &e))?;
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let bytes = r
        .bytes()
        .await
        .map_err(|e| transport_error(provider, &e))?
        .to_vec();
    Ok((status, retry_after, bytes))
}

/// No answer at all: retryable. The URL (and so nothing of a request) is left out of the
/// text, which reqwest's own `Display` would include.
fn transport_error(provider: &str, e: &reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    ProviderError::unavailable(format!("{provider}: {what}: {}", TextOnly(e)))
}

/// A reqwest error's text without the URL it was for: its sources only.
struct TextOnly<'a>(&'a reqwest::Error);

impl fmt::Display for TextOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(self.0);
        let mut first = true;
        while let Some(s) = source {
            if !first {
                f.write_str(": ")?;
            }
            write!(f, "{s}")?;
            first = false;
            source = s.source();
        }
        if first {
            f.write_str("no further detail")?;
        }
        Ok(())
    }
}
