//! Portcullis provider adapters: the [`Provider`] trait every carrier integration
//! implements, the events providers report back ([`ProviderEvent`]), the built-in
//! [`simulator`], [`twilio`], and the [`factory`] that builds providers for stored
//! connections.
//!
//! A provider knows nothing of the database. It is handed an [`OutboundMessage`], answers
//! with the provider's reference or a [`ProviderError`] that says whether a retry can help,
//! and later reports receipts and inbound messages through an [`EventSink`]. The pipeline
//! records those durably; an event that needs an acknowledgement towards the provider (an
//! SMPP `deliver_sm_resp`) carries an [`Ack`] that is fired only after the commit.

mod config;
pub mod factory;
mod http;
pub mod ringcentral;
pub mod simulator;
pub mod smpp;
pub mod twilio;
pub mod whatsapp;

use async_trait::async_trait;
use portcullis_domain::{AppId, Channel, ConnectionId, E164, Encoding, MessageId, Milestone};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// A message as handed to a provider.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub id: MessageId,
    pub to: E164,
    pub from: Option<String>,
    pub channel: Channel,
    /// The text. `Debug` of this struct would print it, so never log an OutboundMessage.
    pub body: String,
    pub encoding: Encoding,
    pub segments: u32,
    /// A WhatsApp template to send instead of `body` (which then holds a text rendering
    /// of it for the API and history).
    pub template: Option<portcullis_domain::template::WhatsappTemplate>,
    /// Parts (numbered from 1) of a concatenated message that an earlier attempt already
    /// handed to a provider: a provider that sends part by part skips them, so a message
    /// whose attempt broke off half-way does not reach the handset twice.
    pub parts_sent: Vec<u32>,
}

/// The provider's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's reference for the message (for one sent in parts, its first part
    /// submitted by this attempt).
    pub provider_message_id: String,
    /// For a message sent as separately acknowledged parts (SMPP concatenation): each part
    /// this attempt submitted, with the provider's reference for it. Receipts come per
    /// part. Empty when the provider took the message whole.
    pub parts: Vec<SentPart>,
}

impl Accepted {
    /// A message taken whole, under one reference.
    pub fn whole(provider_message_id: impl Into<String>) -> Accepted {
        Accepted {
            provider_message_id: provider_message_id.into(),
            parts: Vec::new(),
        }
    }
}

/// One part of a concatenated message as the provider acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPart {
    /// 1 for the first part.
    pub part: u32,
    pub provider_message_id: String,
}

/// The permanent-error code every provider uses for a destination the network says does
/// not exist (SMPP `ESME_RINVDSTADR`, Twilio 21211/21614, …). The guard counts these: many
/// of them in an hour is the signature of SMS pumping through random numbers.
pub const INVALID_NUMBER: &str = "invalid_number";

/// Why a provider did not accept a message.
///
/// The two retryable kinds are told apart because routing treats them differently: a
/// connection that is [`Unavailable`](ProviderError::Unavailable) counts towards opening
/// its circuit (and traffic moving to the next connection of the route), while one that is
/// [`Throttled`](ProviderError::Throttled) is working and only asks to be slowed down.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The provider is failing (its 5xx, timeouts, refused connections, a dropped bind):
    /// worth trying again, on this connection later or on the next one of the route.
    #[error("provider unavailable: {detail}")]
    Unavailable {
        detail: String,
        /// The provider's own `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The provider asks us to slow down (HTTP 429, `ESME_RTHROTTLED`): tried again after
    /// `retry_after` (or the pipeline's backoff), and the connection is slowed meanwhile.
    #[error("provider throttled the connection: {detail}")]
    Throttled {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (invalid destination, refused by the provider).
    #[error("provider refused the message ({code}): {detail}")]
    Permanent { code: String, detail: String },
    /// Some parts of a concatenated message were accepted before another part failed with
    /// `cause`. The accepted parts must be recorded (their receipts will come, and a
    /// retry must not send them again); the message's fate is `cause`'s.
    #[error("{cause} ({} part(s) already accepted)", parts.len())]
    PartlySent {
        parts: Vec<SentPart>,
        cause: Box<ProviderError>,
    },
}

impl ProviderError {
    /// An [`Unavailable`](ProviderError::Unavailable) without a `Retry-After`.
    pub fn unavailable(detail: impl Into<String>) -> ProviderError {
        ProviderError::Unavailable {
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// A [`Permanent`](ProviderError::Permanent) refusal.
    pub fn permanent(code: impl Into<String>, detail: impl Into<String>) -> ProviderError {
        ProviderError::Permanent {
            code: code.into(),
            detail: detail.into(),
        }
    }

    /// Whether trying again can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Permanent { .. } => false,
            ProviderError::PartlySent { cause, .. } => cause.is_retryable(),
            _ => true,
        }
    }

    /// The error without its accepted parts, and the parts: what the pipeline acts on
    /// and what it records.
    pub fn into_parts(self) -> (ProviderError, Vec<SentPart>) {
        match self {
            ProviderError::PartlySent { parts, cause } => (*cause, parts),
            e => (e, Vec::new()),
        }
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Unavailable { retry_after, .. }
            | ProviderError::Throttled { retry_after, .. } => *retry_after,
            ProviderError::Permanent { .. } => None,
            ProviderError::PartlySent { cause, .. } => cause.retry_after(),
        }
    }
}

/// Reads an HTTP `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
/// Capped at an hour: a provider asking for longer is treated as asking for an hour, so a
/// bad header cannot park a connection indefinitely.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(CAP));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(CAP))
}

/// One provider connection.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The connection this provider instance serves.
    fn connection_id(&self) -> &ConnectionId;

    /// Hands one message to the provider.
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, ProviderError>;

    /// The channels this connection carries. Routing skips a connection for messages of
    /// other channels, so one route can hold an SMS provider and a WhatsApp one.
    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms]
    }

    /// The most messages per second one sender (a `from` number) may send through this
    /// connection (`sender_mps`; carriers limit long codes to about 1/s). `None`: no cap.
    /// The pipeline paces sends to it, so a burst waits in the queue rather than being
    /// refused by the provider.
    fn sender_rate(&self) -> Option<f64> {
        None
    }

    /// The most messages per second the whole connection may send (SMPP `tps`); `None`:
    /// no cap. Paced like [`Provider::sender_rate`], so a burst queues.
    fn connection_rate(&self) -> Option<f64> {
        None
    }

    /// Why the connection cannot send at all right now (an SMPP connection with no bound
    /// session), for `/readyz`; `None` when it can, or cannot tell.
    fn down(&self) -> Option<&'static str> {
        None
    }

    /// The provider's notification said its records changed without saying how
    /// (RingCentral's message-store events carry counts, not statuses): look them up now.
    /// Providers whose callbacks carry the status ignore this.
    fn records_changed(&self) {}

    /// Called once at start-up with the messages this connection accepted earlier and has
    /// not yet reported on, so providers that keep state outside our process can pick them
    /// up again. Most providers report by themselves and ignore this.
    async fn resume(&self, _awaiting: Vec<(String, E164)>) {}
}

/// A delivery receipt as a provider reports it.
#[derive(Debug, Clone)]
pub struct ReceiptEvent {
    pub connection_id: ConnectionId,
    pub provider_message_id: String,
    pub status: Milestone,
    pub detail: Option<String>,
    pub at: i64,
}

/// An inbound (MO) message as a provider reports it.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub connection_id: ConnectionId,
    /// Set by channels that already know the app (the simulator's injection endpoint);
    /// otherwise the app is found from the number the message was sent to.
    pub app_id: Option<AppId>,
    pub provider_message_id: String,
    pub from: E164,
    pub to: String,
    pub channel: Channel,
    pub body: String,
    pub at: i64,
    /// Set when this is one part of a concatenated message: the pipeline keeps the parts
    /// and records the message once all have arrived.
    pub part: Option<InboundPart>,
}

/// Where a part of a concatenated inbound message belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundPart {
    /// The sender's reference, shared by the parts of one message.
    pub reference: u16,
    pub total: u8,
    /// 1 for the first part.
    pub seq: u8,
}

/// Fired once the event it belongs to is durably recorded.
pub type Ack = oneshot::Sender<()>;

/// What providers report back.
#[derive(Debug)]
pub enum ProviderEvent {
    Receipt(ReceiptEvent, Option<Ack>),
    Inbound(InboundEvent, Option<Ack>),
}

/// Where providers send their events. Bounded: a provider that outruns the recorder waits
/// (and so, for SMPP, stops acknowledging), which is the back-pressure we want.
pub type EventSink = mpsc::Sender<ProviderEvent>;

/// A credential or token: printed as `Secret([REDACTED])`, wiped from memory when dropped,
/// and readable only inside this crate.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: String) -> Secret {
        Secret(zeroize::Zeroizing::new(value))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The value, for a [`StateStore`](ringcentral::StateStore) to seal it (the one use outside this crate).
    pub fn expose_to_store(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::parse_retry_after;

    #[test]
    fn retry_after_as_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("999999", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
