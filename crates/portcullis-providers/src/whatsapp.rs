//! The WhatsApp Business Cloud API (Meta's Graph API), driven over HTTPS.
//!
//! The wire format, as Meta documents it (developers.facebook.com/docs/whatsapp/cloud-api:
//! "Messages" reference, "Webhooks" and "Error codes"; the same shapes appear in public
//! integrations, e.g. the webhook notes of InstruktAI/TeleClaude
//! `docs/third-party/whatsapp/webhooks.md`):
//!
//! - **Sending**: `POST {base_url}/{version}/{phone_number_id}/messages` with
//!   `Authorization: Bearer {access_token}` and a JSON body
//!   `{"messaging_product":"whatsapp","recipient_type":"individual","to":"<digits>",
//!   "type":"text","text":{"body":…}}`, or `"type":"template","template":{"name",
//!   "language":{"code"},"components":[{"type":"body","parameters":[{"type":"text",
//!   "text":…}]}]}`. Success is `200` with `{"messaging_product":"whatsapp","contacts":
//!   [{"input","wa_id"}],"messages":[{"id":"wamid.…"}]}`; the `wamid` is the provider
//!   message id that status webhooks later name.
//! - **Errors**: `{"error":{"message","type","code","error_subcode","error_data",
//!   "fbtrace_id"}}`. 131047 "Re-engagement message" (more than 24 hours since the user
//!   last wrote), 131026 "Message undeliverable" (not a WhatsApp user, or cannot receive),
//!   130429 "Rate limit hit", 131048 "Spam rate limit hit", 131056 "Pair rate limit hit"
//!   (too many messages to one recipient), 80007 the WABA's rate limit; 190 an expired or
//!   invalid access token.
//! - **Callbacks**: a `GET` verification request with `hub.mode=subscribe`,
//!   `hub.verify_token` (the token configured in the app dashboard) and `hub.challenge`
//!   (echoed back as the body); then `POST`s of JSON signed with
//!   `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the app
//!   secret>`.
//!
//! Nothing here logs a message body, a full phone number or a secret: the access token,
//! app secret and verify token are [`Secret`]s (redacted when printed, wiped on drop), and
//! error details are built from Graph's numeric codes, never its message text (which can
//! quote the recipient).

use crate::config;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use portcullis_domain::{Channel, ConnectionId};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{Accepted, INVALID_NUMBER, OutboundMessage, Provider, ProviderError};

/// The connection type (`connections create --type whatsapp`).
pub const KIND: &str = "whatsapp";

/// Meta's Graph API host, used when a connection names no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";

/// The Graph API version used when a connection names none.
pub const DEFAULT_API_VERSION: &str = "v21.0";

/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The permanent-error code of a free-form message outside the 24-hour customer service
/// window (Graph error 131047), and of the API refusing such a message up front.
pub const WINDOW_CLOSED: &str = "whatsapp_window_closed";

/// How long the customer service window stays open after the user's last message.
pub const SERVICE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// The configuration fields a WhatsApp connection may have (API.md, "Command line").
const FIELDS: [&str; 7] = [
    "phone_number_id",
    "access_token",
    "app_secret",
    "verify_token",
    "base_url",
    "api_version",
    "sender_mps",
];

/// A credential of the connection. Printed as `Secret([REDACTED])`, wiped from memory when
/// dropped; its value is reachable only inside this crate or through the constant-time
/// checks below.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals this secret, compared in constant time (for the
    /// webhook verification handshake's `hub.verify_token`).
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.expose().as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Why a stored WhatsApp configuration cannot be used. Names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("whatsapp connection configuration: {0}")]
pub struct ConfigError(String);

/// A WhatsApp connection's configuration, parsed from its (sealed) JSON.
#[derive(Debug, Clone)]
pub struct WhatsappConfig {
    /// The business phone number's Graph id (digits).
    pub phone_number_id: String,
    pub access_token: Secret,
    /// Keys the `X-Hub-Signature-256` of every webhook.
    pub app_secret: Secret,
    /// What Meta echoes in the verification handshake.
    pub verify_token: Secret,
    /// The API host root without a trailing slash.
    pub base_url: String,
    /// `v21.0` and the like.
    pub api_version: String,
    pub sender_mps: Option<f64>,
}

impl WhatsappConfig {
    /// Parses and checks a connection's configuration object. `base_url` must be
    /// `https://` (plain `http://` only for a loopback stand-in), since every request
    /// carries the access token.
    pub fn from_json(value: &serde_json::Value) -> Result<WhatsappConfig, ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let obj = config::object(value, &FIELDS).map_err(ConfigError)?;
        let string = |name: &str| config::string(obj, name).map_err(ConfigError);
        let secret = |name: &str| -> Result<Secret, ConfigError> {
            match string(name)? {
                Some(t) if !t.trim().is_empty() => Ok(Secret::new(t.to_owned())),
                _ => Err(ConfigError(format!("{name} is required"))),
            }
        };

        // It becomes a path segment of every request: nothing but digits.
        let phone_number_id = match string("phone_number_id")? {
            Some(id) if (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) => {
                id.to_owned()
            }
            Some(_) => return err("phone_number_id must be the number's Graph id (digits)".into()),
            None => return err("phone_number_id is required".into()),
        };
        let access_token = secret("access_token")?;
        let app_secret = secret("app_secret")?;
        let verify_token = secret("verify_token")?;
        let base_url = config::base_url(
            string("base_url")?.unwrap_or(DEFAULT_BASE_URL),
            DEFAULT_BASE_URL,
        )
        .map_err(ConfigError)?;
        let api_version = match string("api_version")? {
            None => DEFAULT_API_VERSION.to_owned(),
            Some(v)
                if v.len() <= 8
                    && v.starts_with('v')
                    && v[1..].split('.').count() == 2
                    && v[1..]
                        .split('.')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                v.to_owned()
            }
            Some(_) => return err("api_version must look like v21.0".into()),
        };
        let sender_mps = config::rate(obj, "sender_mps").map_err(ConfigError)?;
        Ok(WhatsappConfig {
            phone_number_id,
            access_token,
            app_secret,
            verify_token,
            base_url,
            api_version,
            sender_mps,
        })
    }

    /// `{base_url}/{version}/{phone_number_id}/messages`.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/{}/{}/messages",
            self.base_url, self.api_version, self.phone_number_id
        )
    }
}

/// The JSON body of a send. The recipient is E.164 without its `+`, as Meta's examples
/// write it (Meta accepts both).
pub fn request_body(msg: &OutboundMessage) -> serde_json::Value {
    let to = msg.to.as_str().trim_start_matches('+');
    match &msg.template {
        Some(t) => {
            let mut template = serde_json::json!({
                "name": t.name,
                "language": {"code": t.language},
            });
            if !t.parameters.is_empty() {
                let params: Vec<_> = t
                    .parameters
                    .iter()
                    .map(|p| serde_json::json!({"type": "text", "text": p}))
                    .collect();
                template["components"] =
                    serde_json::json!([{"type": "body", "parameters": params}]);
            }
            serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": template,
            })
        }
        None => serde_json::json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"body": msg.body},
        }),
    }
}

/// One WhatsApp Cloud API connection (one business phone number).
pub struct WhatsappProvider {
    connection_id: ConnectionId,
    config: WhatsappConfig,
    messages_url: String,
    client: reqwest::Client,
}

impl WhatsappProvider {
    pub fn new(
        connection_id: ConnectionId,
        config: WhatsappConfig,
        client: reqwest::Client,
    ) -> WhatsappProvider {
        WhatsappProvider {
            messages_url: config.messages_url(),
            connection_id,
            config,
            client,
        }
    }
}

#[async_trait]
impl Provider for WhatsappProvider {
    fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Whatsapp]
    }

    fn sender_rate(&self) -> Option<f64> {
        self.config.sender_mps
    }

    /// One `POST …/messages`. As with Twilio, a timeout after Meta took the message is
    /// retried, so it can reach the user twice; losing it would be worse.
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, ProviderError> {
        if msg.channel != Channel::Whatsapp {
            return Err(ProviderError::permanent(
                "channel_not_supported",
                format!(
                    "this WhatsApp connection sends WhatsApp, not {}",
                    msg.channel
                ),
            ));
        }
        let body = serde_json::to_vec(&request_body(msg)).map_err(|e| {
            ProviderError::permanent("provider_refused", format!("encoding failed: {e}"))
        })?;
        let response = self
            .client
            .post(&self.messages_url)
            .bearer_auth(self.config.access_token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await;
        let (status, retry_after, body) = crate::http::read("whatsapp", response).await?;
        let outcome = map_response(status, retry_after, &body);
        match &outcome {
            Err(ProviderError::Permanent { detail, .. }) if status == 401 => tracing::error!(
                connection = %self.connection_id,
                detail,
                "WhatsApp refused this connection's access token: check access_token"
            ),
            Err(e) => tracing::debug!(
                connection = %self.connection_id,
                message = %msg.id,
                to = %msg.to,
                error = %e,
                "WhatsApp did not accept a message"
            ),
            Ok(_) => {}
        }
        outcome
    }
}

#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    messages: Vec<SentId>,
}

#[derive(Deserialize)]
struct SentId {
    id: String,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    code: Option<i64>,
    error_subcode: Option<i64>,
}

/// Whether `s` can be a WhatsApp message id (`wamid.` + base64): what we accept as a
/// provider message id, from Meta's answer or a webhook.
pub fn is_message_id(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'=' | b'+' | b'/')
        })
}

/// What Meta's answer to a send means.
///
/// - 2xx with `messages[0].id`: accepted.
/// - HTTP 429 and Graph codes 130429, 131048, 131056, 80007 (and the generic 4/80004
///   application throttles): throttled, after `Retry-After` when sent.
/// - 5xx, 408 and Graph code 131000/131016 ("something went wrong", "service
///   unavailable"): unavailable.
/// - 131047: `whatsapp_window_closed`; 131026 and 131030 (recipient not on WhatsApp /
///   not in the test allow-list): [`INVALID_NUMBER`]; anything else: `provider_refused`
///   with the code.
pub fn map_response(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Accepted, ProviderError> {
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<SendResponse>(body)
            .ok()
            .and_then(|r| r.messages.into_iter().next())
            .map(|m| m.id)
            .filter(|id| is_message_id(id))
        {
            Some(provider_message_id) => Ok(Accepted::whole(provider_message_id)),
            // Not retried: Meta may have taken the message.
            None => Err(ProviderError::permanent(
                "provider_response_unreadable",
                format!("whatsapp answered HTTP {status} without a message id"),
            )),
        };
    }
    let error = serde_json::from_slice::<GraphErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let code = error.as_ref().and_then(|e| e.code);
    let subcode = error.as_ref().and_then(|e| e.error_subcode);
    let detail = match (code, subcode) {
        (Some(c), Some(s)) => format!("whatsapp HTTP {status}, error {c} (subcode {s})"),
        (Some(c), None) => format!("whatsapp HTTP {status}, error {c}"),
        _ => format!("whatsapp HTTP {status}"),
    };
    if status == 429 || matches!(code, Some(130429 | 131048 | 131056 | 80007 | 4 | 80004)) {
        return Err(ProviderError::Throttled {
            detail,
            retry_after,
        });
    }
    if status == 408 || status >= 500 || matches!(code, Some(131000 | 131016)) {
        return Err(ProviderError::Unavailable {
            detail,
            retry_after,
        });
    }
    match code {
        Some(131047) => Err(ProviderError::permanent(
            WINDOW_CLOSED,
            "whatsapp error 131047: more than 24 hours since the recipient last wrote; send a template",
        )),
        Some(131026 | 131030) => Err(ProviderError::permanent(INVALID_NUMBER, detail)),
        _ => Err(ProviderError::permanent("provider_refused", detail)),
    }
}

/// `sha256=` + hex of HMAC-SHA256 of `body` keyed with the app secret: the
/// `X-Hub-Signature-256` Meta puts on every webhook.
pub fn compute_signature(app_secret: &Secret, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret.expose().as_bytes())
        .expect("HMAC takes any key size");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `header` is Meta's signature of `body`, in constant time. Hex case is ignored
/// (Meta sends lowercase).
pub fn verify_signature(app_secret: &Secret, body: &[u8], header: &str) -> bool {
    let expected = compute_signature(app_secret, body);
    let given = header.trim().to_ascii_lowercase();
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_domain::template::WhatsappTemplate;
    use portcullis_domain::{E164, Encoding, MessageId};
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({
            "phone_number_id": "106540352242922",
            "access_token": "EAAG-s3cr3t-token",
            "app_secret": "app-s3cr3t",
            "verify_token": "verify-s3cr3t",
        })
    }

    #[test]
    fn config_parses_and_defaults() {
        let c = WhatsappConfig::from_json(&valid()).unwrap();
        assert_eq!(
            c.messages_url(),
            "https://graph.facebook.com/v21.0/106540352242922/messages"
        );
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        let mut local = valid();
        local["base_url"] = json!("http://127.0.0.1:4010/");
        local["api_version"] = json!("v19.0");
        assert_eq!(
            WhatsappConfig::from_json(&local).unwrap().messages_url(),
            "http://127.0.0.1:4010/v19.0/106540352242922/messages"
        );
    }

    #[test]
    fn config_refusals_name_the_field_not_the_value() {
        let with = |k: &str, v: serde_json::Value| {
            let mut c = valid();
            c[k] = v;
            WhatsappConfig::from_json(&c).unwrap_err().to_string()
        };
        assert!(with("phone_number_id", json!("12/../x")).contains("phone_number_id"));
        assert!(with("access_token", json!("")).contains("access_token"));
        assert!(with("app_secret", json!(null)).contains("app_secret"));
        assert!(with("verify_token", json!(7)).contains("verify_token"));
        assert!(with("base_url", json!("http://graph.facebook.com")).contains("https"));
        assert!(with("base_url", json!("https://graph.facebook.com/v21.0")).contains("host root"));
        assert!(with("api_version", json!("21")).contains("api_version"));
        assert!(with("sender_mps", json!(-1)).contains("sender_mps"));
        let e = with("acess_token", json!("s3cr3t"));
        assert!(e.contains("acess_token") && !e.contains("s3cr3t"), "{e}");
    }

    fn message(template: Option<WhatsappTemplate>) -> OutboundMessage {
        OutboundMessage {
            id: MessageId::new(),
            to: E164::parse("+14155550100").unwrap(),
            from: None,
            channel: Channel::Whatsapp,
            body: "hello".to_owned(),
            encoding: Encoding::Gsm7,
            segments: 1,
            template,
            parts_sent: Vec::new(),
        }
    }

    #[test]
    fn request_bodies() {
        assert_eq!(
            request_body(&message(None)),
            json!({"messaging_product":"whatsapp","recipient_type":"individual",
                   "to":"14155550100","type":"text","text":{"body":"hello"}})
        );
        let t = WhatsappTemplate::new("order_update", "en_US", vec!["Ada".into()]).unwrap();
        assert_eq!(
            request_body(&message(Some(t))),
            json!({"messaging_product":"whatsapp","recipient_type":"individual",
                   "to":"14155550100","type":"template","template":{
                     "name":"order_update","language":{"code":"en_US"},
                     "components":[{"type":"body","parameters":[{"type":"text","text":"Ada"}]}]}})
        );
    }

    fn graph_error(code: i64) -> String {
        format!(
            r#"{{"error":{{"message":"(#{code}) Message failed to send to +14155550100","type":"OAuthException","code":{code},"error_data":{{"messaging_product":"whatsapp","details":"x"}},"error_subcode":2494010,"fbtrace_id":"AbCdEf"}}}}"#
        )
    }

    #[test]
    fn responses_map_to_outcomes() {
        let ok = br#"{"messaging_product":"whatsapp","contacts":[{"input":"14155550100","wa_id":"14155550100"}],"messages":[{"id":"wamid.HBgLMTQxNTU1NTAxMDAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}"#;
        assert_eq!(
            map_response(200, None, ok).unwrap().provider_message_id,
            "wamid.HBgLMTQxNTU1NTAxMDAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
        );
        let permanent = |status: u16, body: &str| match map_response(status, None, body.as_bytes())
        {
            Err(ProviderError::Permanent { code, detail }) => {
                assert!(!detail.contains("5550100"), "{detail}");
                (code, detail)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(permanent(400, &graph_error(131047)).0, WINDOW_CLOSED);
        assert_eq!(permanent(400, &graph_error(131026)).0, INVALID_NUMBER);
        let (code, detail) = permanent(400, &graph_error(132001));
        assert_eq!(code, "provider_refused");
        assert!(detail.contains("132001"), "{detail}");
        assert_eq!(permanent(401, &graph_error(190)).0, "provider_refused");
        assert_eq!(permanent(200, "{}").0, "provider_response_unreadable");
        let wait = Some(Duration::from_secs(9));
        for (status, code) in [
            (400, 130429),
            (400, 131048),
            (400, 131056),
            (400, 80007),
            (429, 1),
        ] {
            match map_response(status, wait, graph_error(code).as_bytes()) {
                Err(ProviderError::Throttled { retry_after, .. }) => assert_eq!(retry_after, wait),
                other => panic!("{code}: {other:?}"),
            }
        }
        for status in [500, 502, 503, 408] {
            assert!(matches!(
                map_response(status, None, b"<html>"),
                Err(ProviderError::Unavailable { .. })
            ));
        }
    }

    #[test]
    fn signatures() {
        let secret = Secret::new("app-s3cr3t".to_owned());
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = compute_signature(&secret, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 71);
        assert!(verify_signature(&secret, body, &sig));
        assert!(verify_signature(
            &secret,
            body,
            &sig.to_uppercase().replace("SHA256", "sha256")
        ));
        assert!(!verify_signature(&secret, b"{}", &sig));
        assert!(!verify_signature(&Secret::new("other".into()), body, &sig));
        assert!(!verify_signature(&secret, body, &sig[7..]));
        assert!(!verify_signature(&secret, body, ""));
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
        assert_eq!(
            compute_signature(&Secret::new("Jefe".into()), b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(Secret::new("tok".into()).matches("tok"));
        assert!(!Secret::new("tok".into()).matches("tok2"));
    }
}
