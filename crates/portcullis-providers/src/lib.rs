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

pub mod factory;
pub mod simulator;
pub mod twilio;

use async_trait::async_trait;
use portcullis_domain::{AppId, Channel, ConnectionId, E164, Encoding, MessageId, MessageStatus};
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
}

/// The provider's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub provider_message_id: String,
}

/// The permanent-error code every provider uses for a destination the network says does
/// not exist (SMPP `ESME_RINVDSTADR`, Twilio 21211/21614, …). The guard counts these: many
/// of them in an hour is the signature of SMS pumping through random numbers.
pub const INVALID_NUMBER: &str = "invalid_number";

/// Why a provider did not accept a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Worth trying again later (throttling, timeouts, the provider's 5xx, a dropped bind).
    #[error("retryable provider error: {detail}")]
    Retryable { detail: String },
    /// Trying again cannot help (invalid destination, refused by the provider).
    #[error("provider refused the message ({code}): {detail}")]
    Permanent { code: String, detail: String },
}

/// One provider connection.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The connection this provider instance serves.
    fn connection_id(&self) -> &ConnectionId;

    /// Hands one message to the provider.
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, ProviderError>;

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
    pub status: MessageStatus,
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
