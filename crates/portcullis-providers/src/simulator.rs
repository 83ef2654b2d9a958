//! The built-in simulator provider: accepts every valid send and reports a receipt after a
//! configurable delay, through the same event path a real provider uses.
//!
//! Recipients ending in `0000` are reported `undelivered`; recipients ending in `0001` are
//! refused at submission (`failed`). With a log file configured, every accepted submission
//! is appended to it, so a test can count what a "carrier" really received — including
//! duplicates caused by a crash between handing a message over and recording that we did.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_domain::{Channel, ConnectionId, E164, MessageStatus};

use crate::{
    Accepted, EventSink, OutboundMessage, Provider, ProviderError, ProviderEvent, ReceiptEvent,
    now_ms,
};

/// The connection id receipts of the built-in simulator carry.
pub const BUILTIN_CONNECTION_ID: &str = "conn_simulator";

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// How long after acceptance the receipt is reported.
    pub delivery_delay: Duration,
    /// Append-only record of accepted submissions (message id per line).
    pub log_file: Option<PathBuf>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            delivery_delay: Duration::from_millis(200),
            log_file: None,
        }
    }
}

pub struct Simulator {
    connection_id: ConnectionId,
    config: SimulatorConfig,
    sink: EventSink,
    log: Option<Mutex<std::fs::File>>,
}

impl Simulator {
    pub fn new(
        connection_id: ConnectionId,
        config: SimulatorConfig,
        sink: EventSink,
    ) -> std::io::Result<Simulator> {
        let log = match &config.log_file {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        Ok(Simulator {
            connection_id,
            config,
            sink,
            log,
        })
    }

    fn outcome_for(to: &E164) -> Result<MessageStatus, ProviderError> {
        let digits = to.as_str();
        if digits.ends_with("0001") {
            Err(ProviderError::Permanent {
                code: crate::INVALID_NUMBER.to_owned(),
                detail: "the simulator refuses recipients ending in 0001, as a carrier refuses an invalid number".to_owned(),
            })
        } else if digits.ends_with("0000") {
            Ok(MessageStatus::Undelivered)
        } else {
            Ok(MessageStatus::Delivered)
        }
    }

    fn schedule_receipt(
        &self,
        provider_message_id: String,
        status: MessageStatus,
        delay: Duration,
    ) {
        let sink = self.sink.clone();
        let connection_id = self.connection_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let detail = (status == MessageStatus::Undelivered)
                .then(|| "the simulator reports recipients ending in 0000 undelivered".to_owned());
            let event = ReceiptEvent {
                connection_id,
                provider_message_id,
                status: status.into(),
                detail,
                at: now_ms(),
            };
            // A closed sink means the process is shutting down; the receipt is re-issued
            // by `resume` at the next start.
            let _ = sink.send(ProviderEvent::Receipt(event, None)).await;
        });
    }
}

#[async_trait]
impl Provider for Simulator {
    fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    /// Both, so WhatsApp can be tried in dev mode and with test keys without a Meta account.
    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Whatsapp]
    }

    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, ProviderError> {
        let status = Self::outcome_for(&msg.to)?;
        let provider_message_id = format!("sim-{}", msg.id.as_str().trim_start_matches("msg_"));
        if let Some(log) = &self.log {
            // One write per line: `writeln!` writes the id and the newline separately, and a
            // process killed between the two leaves a line the next start appends to.
            let line = format!("{}\n", msg.id.as_str());
            let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(line.as_bytes())
                .map_err(|e| ProviderError::unavailable(format!("simulator log: {e}")))?;
        }
        self.schedule_receipt(
            provider_message_id.clone(),
            status,
            self.config.delivery_delay,
        );
        Ok(Accepted::whole(provider_message_id))
    }

    async fn resume(&self, awaiting: Vec<(String, E164)>) {
        for (provider_message_id, to) in awaiting {
            if let Ok(status) = Self::outcome_for(&to) {
                self.schedule_receipt(provider_message_id, status, self.config.delivery_delay);
            }
        }
    }
}
