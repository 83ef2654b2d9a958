//! Twilio Programmable Messaging, driven over its REST API.
//!
//! The wire format, as Twilio documents it and its official SDKs implement it:
//!
//! - **Sending**: `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json` with the
//!   form-encoded parameters `To`, `From`, `Body` and `StatusCallback`, authenticated with
//!   HTTP Basic (account SID, auth token). Success is `201 Created` with the Message
//!   resource as JSON; its `sid` (`SM…`) is the provider message id. (Twilio's Message
//!   resource reference, twilio.com/docs/messaging/api/message-resource; twilio-go
//!   `rest/api/v2010/docs/AccountsMessagesApi.md`, operation `CreateMessage`.)
//! - **Errors**: a JSON body `{"code": 21211, "message": "…", "more_info":
//!   "https://www.twilio.com/docs/errors/21211", "status": 400}` (twilio.com/docs/usage/
//!   twilios-response, and the error dictionary at twilio.com/docs/api/errors: 21211 invalid
//!   `To` number, 21614 `To` is not a mobile number, 21610 the recipient replied STOP to
//!   this sender, 20429 too many requests, 20003 authentication failed).
//! - **Callbacks** (status callbacks and incoming messages) are form-encoded POSTs signed
//!   with `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the auth token, over the
//!   full URL Twilio called followed by every POST parameter, sorted by name, each name
//!   immediately followed by its value (twilio.com/docs/usage/webhooks/webhooks-security;
//!   twilio-python `twilio/request_validator.py`, whose `compute_signature` sorts the names
//!   and then each name's distinct values, and whose `validate` accepts the URL both with
//!   and without its port because Twilio is inconsistent about it). Status callbacks carry
//!   `MessageSid`, `MessageStatus` and, on failure, `ErrorCode`; incoming messages carry
//!   `MessageSid`, `From`, `To` and `Body` (twilio.com/docs/messaging/guides/webhook-request,
//!   twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks).
//!
//! Nothing here logs a message body, a full phone number or the auth token: numbers are
//! [`E164`](portcullis_domain::E164)s (masked when printed), the token is an [`AuthToken`]
//! (redacted when printed), and error details are built from Twilio's numeric codes, never
//! from its error text (which quotes the recipient's number).

use crate::config;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use portcullis_domain::{Channel, ConnectionId, MessageStatus};
use serde::Deserialize;
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{Accepted, INVALID_NUMBER, OutboundMessage, Provider, ProviderError};

/// The connection type (`connections create --type twilio`).
pub const KIND: &str = "twilio";

/// Twilio's API host, used when a connection names no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// The header carrying a callback's signature.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The REST API version every path starts with.
const API_VERSION: &str = "2010-04-01";

/// How long one send may take, connection included. Twilio answers in well under a second;
/// a send that takes longer is retried (see [`TwilioProvider::send`] on what that risks).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The configuration fields a Twilio connection may have (API.md, "Command line").
const FIELDS: [&str; 7] = [
    "account_sid",
    "auth_token",
    "api_key_sid",
    "api_key_secret",
    "from_numbers",
    "base_url",
    "sender_mps",
];

/// A Twilio auth token: the key of every callback signature and the password of every API
/// call. Printed as `AuthToken([REDACTED])`, wiped from memory when dropped, and reachable
/// only through the crate-private `expose`.
#[derive(Clone)]
pub struct AuthToken(Zeroizing<String>);

impl AuthToken {
    pub fn new(token: String) -> AuthToken {
        AuthToken(Zeroizing::new(token))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken([REDACTED])")
    }
}

/// Why a stored Twilio configuration cannot be used. The message names the field, never
/// its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("twilio connection configuration: {0}")]
pub struct ConfigError(String);

/// A Twilio connection's configuration, parsed from its (sealed) JSON.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `AC` followed by 32 hexadecimal digits.
    pub account_sid: String,
    pub auth_token: AuthToken,
    /// An API key (`SK…` and its secret) to call the API with instead of the auth token,
    /// which is then only the key of callback signatures (Twilio signs with it whatever
    /// credential made the request).
    pub api_key: Option<(String, AuthToken)>,
    /// The numbers (or alphanumeric sender ids) this account may send from, canonical; the
    /// first is the default.
    pub from_numbers: Vec<String>,
    /// The API host root without a trailing slash (`https://api.twilio.com`).
    pub base_url: String,
    /// Messages per second per sender (`sender_mps`); the pipeline paces sends to it.
    pub sender_mps: Option<f64>,
}

impl TwilioConfig {
    /// Parses and checks a connection's configuration object.
    ///
    /// `base_url` must be `https://`; plain `http://` is accepted only for a loopback host (a
    /// local stand-in), since every request carries the auth token.
    pub fn from_json(value: &serde_json::Value) -> Result<TwilioConfig, ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let obj = config::object(value, &FIELDS).map_err(ConfigError)?;
        let string = |name: &str| config::string(obj, name).map_err(ConfigError);

        let Some(account_sid) = string("account_sid")? else {
            return err("account_sid is required".into());
        };
        // It becomes a path segment of every request: nothing but the documented shape.
        if !(account_sid.len() == 34
            && account_sid.starts_with("AC")
            && account_sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return err("account_sid must be AC followed by 32 hexadecimal digits".into());
        }

        let auth_token = match string("auth_token")? {
            Some(t) if !t.trim().is_empty() => AuthToken::new(t.to_owned()),
            _ => return err("auth_token is required".into()),
        };

        let api_key = match (string("api_key_sid")?, string("api_key_secret")?) {
            (None, None) => None,
            (Some(sid), Some(secret)) if !secret.trim().is_empty() => {
                if !(sid.len() == 34
                    && sid.starts_with("SK")
                    && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return err("api_key_sid must be SK followed by 32 hexadecimal digits".into());
                }
                Some((sid.to_owned(), AuthToken::new(secret.to_owned())))
            }
            _ => return err("api_key_sid and api_key_secret go together".into()),
        };

        let from_numbers = config::senders(obj, "from_numbers").map_err(ConfigError)?;

        let base_url = config::base_url(
            string("base_url")?.unwrap_or(DEFAULT_BASE_URL),
            DEFAULT_BASE_URL,
        )
        .map_err(ConfigError)?;

        let sender_mps = config::rate(obj, "sender_mps").map_err(ConfigError)?;

        Ok(TwilioConfig {
            account_sid: account_sid.to_owned(),
            auth_token,
            api_key,
            from_numbers,
            base_url,
            sender_mps,
        })
    }

    /// `{base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}/Messages.json",
            self.base_url, self.account_sid
        )
    }

    /// The sender for a message: its own `from` when this account may send from it, else
    /// the connection's first number.
    pub fn from_for<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        match requested {
            Some(from) if self.from_numbers.iter().any(|n| n == from) => from,
            // Never empty when parsed by `from_json`.
            _ => self.from_numbers.first().map_or("", String::as_str),
        }
    }
}

/// The URL Twilio is told to call for a connection's callbacks (`leaf` is `status` or
/// `inbound`): `{public_url}/providers/twilio/{connection}/{leaf}`.
pub fn callback_url(public_url: &str, connection: &ConnectionId, leaf: &str) -> String {
    format!(
        "{}/providers/{KIND}/{connection}/{leaf}",
        public_url.trim_end_matches('/')
    )
}

/// The HTTP client Twilio connections share: rustls (the process's one crypto provider),
/// no redirects (a redirected request would carry the credentials elsewhere), no proxy from
/// the environment (the credentials go only where the operator pointed them), bounded time.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One Twilio connection.
pub struct TwilioProvider {
    connection_id: ConnectionId,
    config: TwilioConfig,
    messages_url: String,
    status_callback: String,
    client: reqwest::Client,
}

impl TwilioProvider {
    /// A provider for `connection_id`, whose status callbacks Twilio is told to send to
    /// [`callback_url`]`(public_url, connection_id, "status")`.
    pub fn new(
        connection_id: ConnectionId,
        config: TwilioConfig,
        public_url: &str,
        client: reqwest::Client,
    ) -> TwilioProvider {
        TwilioProvider {
            status_callback: callback_url(public_url, &connection_id, "status"),
            messages_url: config.messages_url(),
            connection_id,
            config,
            client,
        }
    }
}

#[async_trait]
impl Provider for TwilioProvider {
    fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    fn sender_rate(&self) -> Option<f64> {
        self.config.sender_mps
    }

    /// One `POST …/Messages.json`. A timeout or a dropped connection is retryable even
    /// though Twilio may already have created the message: like a crash between send and
    /// record, that can deliver a message twice, and is the price of not losing it.
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, ProviderError> {
        if msg.channel != Channel::Sms {
            return Err(ProviderError::Permanent {
                code: "channel_not_supported".to_owned(),
                detail: format!("this Twilio connection sends SMS, not {}", msg.channel),
            });
        }
        let form = serde_urlencoded::to_string([
            ("To", msg.to.as_str()),
            ("From", self.config.from_for(msg.from.as_deref())),
            ("Body", msg.body.as_str()),
            ("StatusCallback", self.status_callback.as_str()),
        ])
        .map_err(|e| ProviderError::Permanent {
            code: "provider_refused".to_owned(),
            detail: format!("encoding the Twilio request failed: {e}"),
        })?;
        // Basic auth: an API key where one is configured, else the account and its token.
        let (user, password) = match &self.config.api_key {
            Some((sid, secret)) => (sid.as_str(), secret.expose()),
            None => (
                self.config.account_sid.as_str(),
                self.config.auth_token.expose(),
            ),
        };
        let response = self
            .client
            .post(&self.messages_url)
            .basic_auth(user, Some(password))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await;
        let (status, retry_after, body) = crate::http::read("twilio", response).await?;
        let outcome = map_response(status, retry_after, &body);
        match &outcome {
            Err(ProviderError::Permanent { detail, .. }) if status == 401 => {
                tracing::error!(
                    connection = %self.connection_id,
                    detail,
                    "Twilio refused this connection's credentials: check its account_sid and auth_token"
                );
            }
            Err(e) => tracing::debug!(
                connection = %self.connection_id,
                message = %msg.id,
                to = %msg.to,
                error = %e,
                "Twilio did not accept a message"
            ),
            Ok(_) => {}
        }
        outcome
    }
}

#[derive(Deserialize)]
struct CreatedMessage {
    sid: Option<String>,
}

#[derive(Deserialize)]
struct TwilioErrorBody {
    code: Option<u32>,
}

/// What Twilio's answer to a send means.
///
/// - 2xx with a message `sid`: accepted.
/// - 429 and Twilio error 20429: throttled; 408 and 5xx: unavailable. Both are retried,
///   after Twilio's `Retry-After` when it sent one.
/// - 21211 and 21614: [`INVALID_NUMBER`] (counted by the guard); 21610:
///   `recipient_unsubscribed`; any other refusal: `provider_refused` with Twilio's code.
pub fn map_response(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Accepted, ProviderError> {
    if (200..300).contains(&status) {
        let sid = serde_json::from_slice::<CreatedMessage>(body)
            .ok()
            .and_then(|m| m.sid)
            .filter(|sid| is_sid(sid));
        return match sid {
            Some(provider_message_id) => Ok(Accepted::whole(provider_message_id)),
            // Not retried: Twilio may well have taken the message, and a retry would send
            // it twice.
            None => Err(ProviderError::Permanent {
                code: "provider_response_unreadable".to_owned(),
                detail: format!("twilio answered HTTP {status} without a message sid"),
            }),
        };
    }
    let code = serde_json::from_slice::<TwilioErrorBody>(body)
        .ok()
        .and_then(|e| e.code);
    let detail = || match code {
        Some(c) => format!("twilio HTTP {status}, error {c}"),
        None => format!("twilio HTTP {status}"),
    };
    if status == 429 || code == Some(20429) {
        return Err(ProviderError::Throttled {
            detail: detail(),
            retry_after,
        });
    }
    if status == 408 || status >= 500 {
        return Err(ProviderError::Unavailable {
            detail: detail(),
            retry_after,
        });
    }
    let permanent = |code: &str, detail: String| {
        Err(ProviderError::Permanent {
            code: code.to_owned(),
            detail,
        })
    };
    match code {
        Some(21211) => permanent(
            INVALID_NUMBER,
            "twilio error 21211: the 'To' number is not a valid phone number".to_owned(),
        ),
        Some(21614) => permanent(
            INVALID_NUMBER,
            "twilio error 21614: the 'To' number is not a mobile number".to_owned(),
        ),
        Some(21610) => permanent(
            "recipient_unsubscribed",
            "twilio error 21610: the recipient has unsubscribed from this sender (replied STOP to it)"
                .to_owned(),
        ),
        Some(c) => permanent(
            "provider_refused",
            format!("twilio error {c} (HTTP {status}), see https://www.twilio.com/docs/errors/{c}"),
        ),
        None => permanent("provider_refused", format!("twilio HTTP {status}")),
    }
}

/// Whether `s` has the shape of a Twilio resource sid (two letters and hex digits; we
/// accept any short alphanumeric string, which is all a provider message id must be).
pub fn is_sid(s: &str) -> bool {
    (2..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// What a status callback's `MessageStatus` means for our message, if anything.
///
/// `delivered`, `undelivered` and `failed` are final and recorded. `queued`, `accepted`,
/// `scheduled`, `sending` and `sent` say no more than the `201` already did (our `sent`),
/// and `read`, `canceled` and anything new are not statuses we track: ignored.
pub fn receipt_status(message_status: &str) -> Option<MessageStatus> {
    match message_status {
        "delivered" => Some(MessageStatus::Delivered),
        "undelivered" => Some(MessageStatus::Undelivered),
        "failed" => Some(MessageStatus::Failed),
        _ => None,
    }
}

/// `X-Twilio-Signature` of a request to `url` with the POST parameters `params`: base64 of
/// HMAC-SHA1 keyed with the auth token over the URL followed by every parameter, sorted by
/// name and then value, each name immediately followed by its value. Repeated identical
/// pairs count once, as in Twilio's own validator.
pub fn compute_signature(token: &AuthToken, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Byte order of UTF-8 is code point order, which is how Twilio's SDKs sort.
    sorted.sort_unstable();
    sorted.dedup();
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(token.expose().as_bytes())
        .expect("HMAC takes any key size");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    let digest: [u8; 20] = mac.finalize().into_bytes().into();
    STANDARD.encode(digest)
}

/// Whether `signature` is Twilio's signature of a request to `url` with `params`, compared
/// in constant time. Like Twilio's validators, the URL is tried without its port and with
/// it (the scheme's default port when it names none).
pub fn verify_signature(
    token: &AuthToken,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let (without_port, with_port) = port_variants(url);
    let a = compute_signature(token, &without_port, params);
    let b = compute_signature(token, &with_port, params);
    let given = signature.trim().as_bytes();
    bool::from(a.as_bytes().ct_eq(given) | b.as_bytes().ct_eq(given))
}

/// `url` without the port of its authority, and with one (its own, or the scheme's
/// default).
fn port_variants(url: &str) -> (String, String) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), url.to_owned());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = if authority.starts_with('[') {
        match authority.split_once("]:") {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (format!("{h}]"), Some(p))
            }
            _ => (authority.to_owned(), None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_owned(), Some(p))
            }
            _ => (authority.to_owned(), None),
        }
    };
    let default = match scheme {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    };
    let without = format!("{scheme}://{host}{tail}");
    let with = match port.or(default) {
        Some(p) => format!("{scheme}://{host}:{p}{tail}"),
        None => without.clone(),
    };
    (without, with)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The example of Twilio's security documentation and of twilio-python's
    /// `tests/unit/test_request_validator.py`: token `12345`.
    fn documented() -> (AuthToken, &'static str, Vec<(String, String)>) {
        (
            AuthToken::new("12345".to_owned()),
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            pairs(&[
                ("CallSid", "CA1234567890ABCDE"),
                ("Digits", "1234"),
                ("From", "+14158675309"),
                ("To", "+18005551212"),
                ("Caller", "+14158675309"),
            ]),
        )
    }

    #[test]
    fn the_documented_example_signature() {
        let (token, url, params) = documented();
        assert_eq!(
            compute_signature(&token, url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify_signature(
            &token,
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn twilio_python_port_vectors() {
        let (token, url, params) = documented();
        // Signed over the URL without a port, presented with one: still valid.
        let with_port = url.replace(".com", ".com:1234");
        assert!(verify_signature(
            &token,
            &with_port,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Signed over the URL with :443 added.
        assert!(verify_signature(
            &token,
            url,
            &params,
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        // Plain http: signed with :80 added, and signed with its own port.
        let http = url.replace("https", "http");
        assert!(verify_signature(
            &token,
            &http,
            &params,
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        let http_1234 = http.replace(".com", ".com:1234");
        assert!(verify_signature(
            &token,
            &http_1234,
            &params,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
    }

    #[test]
    fn repeated_parameters_sort_by_value_as_twilio_does() {
        // twilio-python `test_compute_signature_duplicate_multi_dict`.
        let token = AuthToken::new("12345".to_owned());
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            compute_signature(
                &token,
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn anything_changed_fails() {
        let (token, url, params) = documented();
        let good = compute_signature(&token, url, &params);
        let other = AuthToken::new("54321".to_owned());
        assert!(!verify_signature(&other, url, &params, &good));
        assert!(!verify_signature(
            &token,
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            &good
        ));
        let mut tampered = params.clone();
        tampered[1].1 = "1235".to_owned();
        assert!(!verify_signature(&token, url, &tampered, &good));
        let mut added = params.clone();
        added.push(("Body".to_owned(), "STOP".to_owned()));
        assert!(!verify_signature(&token, url, &added, &good));
        assert!(!verify_signature(&token, url, &params, ""));
        assert!(!verify_signature(
            &token,
            url,
            &params,
            &good[..good.len() - 1]
        ));
    }

    #[test]
    fn port_variants_cover_both_forms() {
        assert_eq!(
            port_variants("https://a.example/x?y=1"),
            (
                "https://a.example/x?y=1".to_owned(),
                "https://a.example:443/x?y=1".to_owned()
            )
        );
        assert_eq!(
            port_variants("http://127.0.0.1:8080/p"),
            (
                "http://127.0.0.1/p".to_owned(),
                "http://127.0.0.1:8080/p".to_owned()
            )
        );
        assert_eq!(
            port_variants("http://[::1]:8080/p"),
            (
                "http://[::1]/p".to_owned(),
                "http://[::1]:8080/p".to_owned()
            )
        );
        assert_eq!(
            port_variants("https://[::1]"),
            ("https://[::1]".to_owned(), "https://[::1]:443".to_owned())
        );
    }

    fn config(v: serde_json::Value) -> Result<TwilioConfig, ConfigError> {
        TwilioConfig::from_json(&v)
    }

    fn valid() -> serde_json::Value {
        json!({
            "account_sid": "AC0123456789abcdef0123456789abcdef",
            "auth_token": "s3cr3t-t0ken-value",
            "from_numbers": ["+14155550199", "+14155550100"],
        })
    }

    #[test]
    fn config_parses_and_defaults() {
        let c = config(valid()).unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert_eq!(
            c.messages_url(),
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
        );
        assert_eq!(c.from_for(Some("+14155550100")), "+14155550100");
        assert_eq!(c.from_for(Some("+14155550111")), "+14155550199");
        assert_eq!(c.from_for(None), "+14155550199");
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("AuthToken([REDACTED])"));
    }

    #[test]
    fn config_refusals_name_the_field_not_the_value() {
        let with = |k: &str, v: serde_json::Value| {
            let mut c = valid();
            c[k] = v;
            config(c).unwrap_err().to_string()
        };
        assert!(with("account_sid", json!("AC123")).contains("account_sid"));
        assert!(
            with(
                "account_sid",
                json!("AC0123456789abcdef0123456789abcdef/../x")
            )
            .contains("account_sid")
        );
        assert!(with("auth_token", json!("")).contains("auth_token"));
        let e = with("auth_token", json!(12345));
        assert!(e.contains("auth_token") && !e.contains("12345"), "{e}");
        assert!(with("from_numbers", json!([])).contains("from_numbers"));
        assert!(with("from_numbers", json!(["12"])).contains("from_numbers"));
        assert!(with("base_url", json!("http://api.twilio.com")).contains("https"));
        assert!(with("base_url", json!("https://api.twilio.com/2010-04-01")).contains("host root"));
        assert!(with("base_url", json!("https://u:p@api.twilio.com")).contains("credentials"));
        assert!(with("sender_mps", json!(0)).contains("sender_mps"));
        assert!(
            with("api_key_sid", json!("SK0123456789abcdef0123456789abcdef")).contains("together")
        );
        let mut keyed = valid();
        keyed["api_key_sid"] = json!("SK0123");
        keyed["api_key_secret"] = json!("k3y-s3cret");
        let e = config(keyed.clone()).unwrap_err().to_string();
        assert!(
            e.contains("api_key_sid") && !e.contains("k3y-s3cret"),
            "{e}"
        );
        keyed["api_key_sid"] = json!("SK0123456789abcdef0123456789abcdef");
        let keyed = config(keyed).unwrap();
        assert!(keyed.api_key.is_some());
        assert!(!format!("{keyed:?}").contains("k3y-s3cret"));
        let e = with("auth_tokn", json!("s3cr3t"));
        assert!(e.contains("auth_tokn") && !e.contains("s3cr3t"), "{e}");
        // A loopback stand-in may be plain HTTP.
        let mut local = valid();
        local["base_url"] = json!("http://127.0.0.1:4010/");
        assert_eq!(config(local).unwrap().base_url, "http://127.0.0.1:4010");
    }

    #[test]
    fn responses_map_to_outcomes() {
        let created = br#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
        assert_eq!(
            map_response(201, None, created)
                .unwrap()
                .provider_message_id,
            "SM0123456789abcdef0123456789abcdef"
        );
        let error = |code: u32, status: u16| {
            format!(
                r#"{{"code":{code},"message":"The 'To' number +15005550001 is not valid.","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
            )
        };
        let permanent = |status: u16, body: &str| match map_response(status, None, body.as_bytes())
        {
            Err(ProviderError::Permanent { code, detail }) => {
                assert!(!detail.contains("5005550001"), "{detail}");
                code
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(permanent(400, &error(21211, 400)), INVALID_NUMBER);
        assert_eq!(permanent(400, &error(21614, 400)), INVALID_NUMBER);
        assert_eq!(permanent(400, &error(21610, 400)), "recipient_unsubscribed");
        assert_eq!(permanent(400, &error(21606, 400)), "provider_refused");
        assert_eq!(permanent(401, &error(20003, 401)), "provider_refused");
        assert_eq!(permanent(404, "not json"), "provider_refused");
        assert_eq!(permanent(201, "{}"), "provider_response_unreadable");
        let wait = Some(Duration::from_secs(7));
        for (status, body) in [(429, error(20429, 429)), (400, error(20429, 400))] {
            match map_response(status, wait, body.as_bytes()) {
                Err(ProviderError::Throttled { retry_after, .. }) => {
                    assert_eq!(retry_after, wait, "{status}")
                }
                other => panic!("{status} {body}: {other:?}"),
            }
        }
        for (status, body) in [
            (500, "oops".to_owned()),
            (503, error(20500, 503)),
            (408, String::new()),
        ] {
            match map_response(status, wait, body.as_bytes()) {
                Err(ProviderError::Unavailable { retry_after, .. }) => {
                    assert_eq!(retry_after, wait, "{status}")
                }
                other => panic!("{status} {body}: {other:?}"),
            }
        }
    }

    #[test]
    fn callback_statuses() {
        assert_eq!(receipt_status("delivered"), Some(MessageStatus::Delivered));
        assert_eq!(
            receipt_status("undelivered"),
            Some(MessageStatus::Undelivered)
        );
        assert_eq!(receipt_status("failed"), Some(MessageStatus::Failed));
        for ignored in [
            "queued", "accepted", "sending", "sent", "read", "canceled", "",
        ] {
            assert_eq!(receipt_status(ignored), None, "{ignored}");
        }
        let conn = ConnectionId::from_trusted("conn_x".to_owned());
        assert_eq!(
            callback_url("https://gw.example/", &conn, "status"),
            "https://gw.example/providers/twilio/conn_x/status"
        );
    }
}
