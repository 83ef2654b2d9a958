//! SMPP 3.4 carrier connections: Portcullis as an ESME (client) of an SMSC.
//!
//! The PDU codec and the request/response plumbing of one TCP (or TLS) session come from
//! `rusmppc` on `rusmpp` (sequence numbers, response timeouts, `enquire_link`). What a
//! gateway that must never lose a receipt needs on top is written here: sessions as
//! long-lived actors that reconnect with backoff and jitter ([`session`]), a submit window
//! per connection, the mapping of `submit_sm_resp` command statuses to retryable or
//! permanent failures, receipts read from TLVs or text ([`receipt`]) and acknowledged with
//! `deliver_sm_resp` only once the pipeline has durably recorded them.
//!
//! Nothing here logs a message text, a full number or the password: numbers are masked
//! [`E164`]s, the password is a [`Secret`], and receipt details carry the SMSC's state and
//! error codes only.

mod parts;
pub mod receipt;
mod session;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_domain::{Channel, ConnectionId, E164, SenderId};
use rusmpp::CommandStatus;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    Accepted, EventSink, INVALID_NUMBER, OutboundMessage, Provider, ProviderError, Secret, SentPart,
};
use receipt::IdForm;

/// The connection type (`connections create --type smpp`).
pub const KIND: &str = "smpp";

/// How long a submit waits for a session to bind before it is retried later.
const BIND_WAIT: Duration = Duration::from_secs(2);

/// The configuration fields an SMPP connection may have.
const FIELDS: [&str; 18] = [
    "host",
    "port",
    "system_id",
    "password",
    "system_type",
    "bind_mode",
    "binds",
    "window",
    "tps",
    "tls",
    "source_addr",
    "source_ton",
    "source_npi",
    "receipt_ids",
    "enquire_link_seconds",
    "response_timeout_seconds",
    "data_coding",
    "long_messages",
];

/// Why a connection's configuration cannot be used. Never holds a configuration value.
#[derive(Debug, thiserror::Error)]
#[error("smpp connection configuration: {0}")]
pub struct ConfigError(String);

/// How the connection binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// One session both submits and receives (`bind_transceiver`).
    Transceiver,
    /// A `bind_transmitter` session for submits and a `bind_receiver` one for receipts and
    /// inbound messages, for SMSCs that do not offer transceiver binds.
    TransmitterReceiver,
}

/// How text that fits GSM 7-bit is coded for the SMSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCoding {
    /// Data coding 0, the SMSC default alphabet: GSM 7-bit, one septet per octet.
    Gsm7,
    /// Data coding 3, Latin-1, for SMSCs whose default alphabet is not GSM. A text with a
    /// GSM character Latin-1 lacks (Greek capitals, `€`) goes as UCS-2 instead.
    Latin1,
}

/// How a text too long for one SMS is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongMessages {
    /// Concatenated parts, each with a user data header naming the message and its place.
    Udh,
    /// One `submit_sm` carrying the whole text in the `message_payload` TLV; the SMSC cuts it.
    MessagePayload,
}

/// An SMPP connection's configuration, parsed from its (sealed) JSON.
#[derive(Debug, Clone)]
pub struct SmppConfig {
    pub host: String,
    pub port: u16,
    pub system_id: String,
    pub password: Secret,
    pub system_type: String,
    pub bind_mode: BindMode,
    /// Sessions (of each kind) kept bound.
    pub binds: usize,
    /// Outstanding `submit_sm` without their response, per session.
    pub window: usize,
    /// Messages per second for the whole connection (paced by the pipeline); `None`: no
    /// cap.
    pub tps: Option<f64>,
    pub tls: bool,
    /// The sender when a message names none.
    pub source_addr: Option<String>,
    /// TON/NPI of the source address; when absent, derived from the address (international
    /// E.164, alphanumeric, or short code).
    pub source_ton: Option<u8>,
    pub source_npi: Option<u8>,
    pub receipt_ids: IdForm,
    pub data_coding: TextCoding,
    pub long_messages: LongMessages,
    pub enquire_link: Duration,
    pub response_timeout: Duration,
}

impl SmppConfig {
    /// Parses and checks a connection's configuration object.
    pub fn from_json(value: &serde_json::Value) -> Result<SmppConfig, ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        let obj = crate::config::object(value, &FIELDS).map_err(ConfigError)?;
        let string = |name: &str| crate::config::string(obj, name).map_err(ConfigError);
        let number = |name: &str, min: u64, max: u64, default: u64| -> Result<u64, ConfigError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        ConfigError(format!("{name} must be a number from {min} to {max}"))
                    }),
            }
        };
        let Some(host) = string("host")?.filter(|h| !h.trim().is_empty()) else {
            return err("host is required");
        };
        if host.len() > 253
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return err("host must be a host name or an IP address");
        }
        let port = u16::try_from(number("port", 1, 65_535, 2775)?).unwrap_or(2775);
        // SMPP 3.4 §5.2: system_id at most 15 octets, password 8, system_type 12.
        let Some(system_id) = string("system_id")?.filter(|s| !s.is_empty()) else {
            return err("system_id is required");
        };
        if system_id.len() > 15 || !system_id.bytes().all(|b| b.is_ascii_graphic()) {
            return err("system_id must be at most 15 printable ASCII characters");
        }
        let password = match string("password")? {
            Some(p) if p.len() <= 8 && p.bytes().all(|b| b.is_ascii_graphic()) => {
                Secret::new(p.to_owned())
            }
            Some(_) => return err("password must be at most 8 printable ASCII characters"),
            None => return err("password is required"),
        };
        let system_type = string("system_type")?.unwrap_or("");
        if system_type.len() > 12 || !system_type.bytes().all(|b| b.is_ascii_graphic()) {
            return err("system_type must be at most 12 printable ASCII characters");
        }
        let bind_mode = match string("bind_mode")?.unwrap_or("transceiver") {
            "transceiver" => BindMode::Transceiver,
            "transmitter_receiver" => BindMode::TransmitterReceiver,
            _ => return err("bind_mode must be transceiver or transmitter_receiver"),
        };
        let tps = crate::config::rate(obj, "tps").map_err(ConfigError)?;
        let tls = match obj.get("tls") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return err("tls must be true or false"),
        };
        let source_addr = match string("source_addr")? {
            None => None,
            Some(s) => Some(
                SenderId::parse(s)
                    .map(|id| id.as_str().to_owned())
                    .map_err(|e| ConfigError(format!("source_addr: {e}")))?,
            ),
        };
        let ton_npi = |name: &str| -> Result<Option<u8>, ConfigError> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| ConfigError(format!("{name} must be a number from 0 to 255"))),
            }
        };
        let receipt_ids = match string("receipt_ids")? {
            None => IdForm::Same,
            Some(v) => IdForm::parse(v).ok_or_else(|| {
                ConfigError(
                    "receipt_ids must be same, hex_submit_decimal_receipt or decimal_submit_hex_receipt"
                        .to_owned(),
                )
            })?,
        };
        let data_coding = match string("data_coding")? {
            None | Some("gsm7") => TextCoding::Gsm7,
            Some("latin1") => TextCoding::Latin1,
            Some(_) => return err("data_coding must be gsm7 or latin1"),
        };
        let long_messages = match string("long_messages")? {
            None | Some("udh") => LongMessages::Udh,
            Some("message_payload") => LongMessages::MessagePayload,
            Some(_) => return err("long_messages must be udh or message_payload"),
        };
        Ok(SmppConfig {
            host: host.to_owned(),
            port,
            system_id: system_id.to_owned(),
            password,
            system_type: system_type.to_owned(),
            bind_mode,
            binds: number("binds", 1, 16, 1)? as usize,
            window: number("window", 1, 1000, 10)? as usize,
            tps,
            tls,
            source_addr,
            source_ton: ton_npi("source_ton")?,
            source_npi: ton_npi("source_npi")?,
            receipt_ids,
            data_coding,
            long_messages,
            enquire_link: Duration::from_secs(number("enquire_link_seconds", 5, 3600, 30)?),
            response_timeout: Duration::from_secs(number("response_timeout_seconds", 1, 20, 10)?),
        })
    }

    /// `smpp://host:port` or `ssmpp://…` for TLS.
    fn url(&self) -> String {
        let scheme = if self.tls { "ssmpp" } else { "smpp" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// TON and NPI for a source address: as configured, else international/E.164 for a
    /// `+` number, alphanumeric for one with letters, national/unknown for a short code.
    fn source_ton_npi(&self, source: &str) -> (u8, u8) {
        let derived = if source.starts_with('+') {
            (1, 1)
        } else if source.bytes().any(|b| !b.is_ascii_digit()) {
            (5, 0)
        } else {
            (3, 0)
        };
        (
            self.source_ton.unwrap_or(derived.0),
            self.source_npi.unwrap_or(derived.1),
        )
    }
}

/// One SMPP connection: its sessions, and the window they share. Dropping it unbinds its
/// sessions, as the gateway's shutdown does.
pub struct SmppProvider {
    shared: Arc<Shared>,
    _sessions: DropGuard,
}

pub(crate) struct Shared {
    connection_id: ConnectionId,
    config: SmppConfig,
    /// The bound sessions that can submit, one slot per bind.
    submitters: RwLock<Vec<Option<rusmppc::Client>>>,
    /// Outstanding submits over every session: `window` per bind.
    window: Semaphore,
    /// Round-robin over the bound sessions.
    next: AtomicUsize,
    /// Woken whenever a session binds for submits.
    bound: Notify,
}

impl SmppProvider {
    /// A provider for `connection_id` and its session actors, which bind and stay bound
    /// until `stop` turns true, then unbind. Receipts and inbound messages go to `events`.
    pub fn start(
        connection_id: ConnectionId,
        config: SmppConfig,
        events: Option<EventSink>,
        stop: watch::Receiver<bool>,
    ) -> SmppProvider {
        let binds = config.binds;
        let shared = Arc::new(Shared {
            connection_id,
            window: Semaphore::new(config.window * binds),
            submitters: RwLock::new(vec![None; binds]),
            next: AtomicUsize::new(0),
            bound: Notify::new(),
            config,
        });
        let sessions = CancellationToken::new();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let cancel = sessions.clone();
            let mut stop = stop;
            handle.spawn(async move {
                tokio::select! {
                    _ = stop.wait_for(|stopped| *stopped) => cancel.cancel(),
                    _ = cancel.cancelled() => {}
                }
            });
            for slot in 0..binds {
                let roles = match shared.config.bind_mode {
                    BindMode::Transceiver => vec![session::Role::Transceiver],
                    BindMode::TransmitterReceiver => {
                        vec![session::Role::Transmitter, session::Role::Receiver]
                    }
                };
                for role in roles {
                    handle.spawn(session::run(
                        shared.clone(),
                        slot,
                        role,
                        events.clone(),
                        sessions.clone(),
                    ));
                }
            }
        }
        SmppProvider {
            shared,
            _sessions: sessions.drop_guard(),
        }
    }
}

impl Shared {
    /// A bound session to submit on, taking turns.
    fn submitter(&self) -> Option<rusmppc::Client> {
        let slots = self.submitters.read().unwrap_or_else(|p| p.into_inner());
        let n = slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| slots[(start + i) % n].clone())
    }

    fn set_submitter(&self, slot: usize, client: Option<rusmppc::Client>) {
        let binding = client.is_some();
        {
            let mut slots = self.submitters.write().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = slots.get_mut(slot) {
                *s = client;
            }
        }
        if binding {
            self.bound.notify_waiters();
        }
    }

    /// A bound session, waiting up to [`BIND_WAIT`] for one: a connection just loaded, or
    /// reconnecting after a drop, is usually bound a moment later.
    async fn wait_for_submitter(&self) -> Option<rusmppc::Client> {
        let bound = self.bound.notified();
        tokio::pin!(bound);
        // Registered before looking, so a bind in between is not missed.
        bound.as_mut().enable();
        if let Some(client) = self.submitter() {
            return Some(client);
        }
        let _ = tokio::time::timeout(BIND_WAIT, bound).await;
        self.submitter()
    }

    /// Whether any session is bound for submits.
    fn bound(&self) -> bool {
        self.submitters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(Option::is_some)
    }
}

/// What a `submit_sm_resp` command status means for the message (SMPP 3.4 §5.1.3): the
/// SMSC being busy or its bind in trouble is retryable, a refused address is not.
pub fn map_status(status: u32) -> ProviderError {
    let detail = format!(
        "smpp command_status 0x{status:08X} ({})",
        status_name(status)
    );
    match status {
        // ESME_RTHROTTLED, ESME_RMSGQFUL: slow down, nothing is wrong with the message.
        0x58 | 0x14 => ProviderError::Throttled {
            detail,
            retry_after: Some(Duration::from_secs(1)),
        },
        // ESME_RSYSERR, ESME_RINVBNDSTS, ESME_RALYBND, ESME_RSUBMITFAIL, ESME_RX_T_APPN,
        // ESME_RDELIVERYFAILURE, ESME_RUNKNOWNERR: the SMSC's trouble, not the message's.
        0x08 | 0x04 | 0x05 | 0x45 | 0x64 | 0xFE | 0xFF => ProviderError::Unavailable {
            detail,
            retry_after: None,
        },
        // ESME_RINVDSTADR, ESME_RINVDSTTON, ESME_RINVDSTNPI.
        0x0B | 0x50 | 0x51 => ProviderError::permanent(INVALID_NUMBER, detail),
        _ => ProviderError::permanent("provider_refused", detail),
    }
}

/// The SMPP 3.4 name of a command status, for the history.
fn status_name(status: u32) -> &'static str {
    match status {
        0x04 => "ESME_RINVBNDSTS",
        0x05 => "ESME_RALYBND",
        0x08 => "ESME_RSYSERR",
        0x0A => "ESME_RINVSRCADR",
        0x0B => "ESME_RINVDSTADR",
        0x0D => "ESME_RBINDFAIL",
        0x0E => "ESME_RINVPASWD",
        0x0F => "ESME_RINVSYSID",
        0x14 => "ESME_RMSGQFUL",
        0x45 => "ESME_RSUBMITFAIL",
        0x48 => "ESME_RINVSRCTON",
        0x49 => "ESME_RINVSRCNPI",
        0x50 => "ESME_RINVDSTTON",
        0x51 => "ESME_RINVDSTNPI",
        0x58 => "ESME_RTHROTTLED",
        0x61 => "ESME_RINVSCHED",
        0x62 => "ESME_RINVEXPIRY",
        0x64 => "ESME_RX_T_APPN",
        0x65 => "ESME_RX_P_APPN",
        0x66 => "ESME_RX_R_APPN",
        0xFE => "ESME_RDELIVERYFAILURE",
        0xFF => "ESME_RUNKNOWNERR",
        _ => "unnamed",
    }
}

#[async_trait]
impl Provider for SmppProvider {
    fn connection_id(&self) -> &ConnectionId {
        &self.shared.connection_id
    }

    fn connection_rate(&self) -> Option<f64> {
        self.shared.config.tps
    }

    fn down(&self) -> Option<&'static str> {
        (!self.shared.bound()).then_some("not bound")
    }

    /// One `submit_sm` per part on the bound sessions, within the connection's window. No
    /// bound session, a dropped bind or a missing response are retryable: the message goes
    /// round again (a submit whose response never came may then reach the handset twice,
    /// which is counted in `portcullis_smpp_possible_duplicates_total`). The parts of a
    /// long message go out together; those accepted before another failed are reported
    /// ([`ProviderError::PartlySent`]) and skipped when the message is tried again.
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, ProviderError> {
        if msg.channel != Channel::Sms {
            return Err(ProviderError::permanent(
                "channel_not_supported",
                format!("an SMPP connection sends SMS, not {}", msg.channel),
            ));
        }
        let shared = &self.shared;
        let pieces = parts::pieces(&shared.config, msg)?;
        let source = msg
            .from
            .as_deref()
            .or(shared.config.source_addr.as_deref())
            .unwrap_or("");
        if let [piece] = pieces.as_slice() {
            return shared
                .submit(&msg.to, source, piece)
                .await
                .map(Accepted::whole);
        }
        let todo = pieces.iter().filter(|p| !msg.parts_sent.contains(&p.part));
        let answers = futures_util::future::join_all(
            todo.map(|p| async move { (p.part, shared.submit(&msg.to, source, p).await) }),
        )
        .await;
        let mut sent = Vec::new();
        let mut failure: Option<ProviderError> = None;
        for (part, answer) in answers {
            match answer {
                Ok(provider_message_id) => sent.push(SentPart {
                    part,
                    provider_message_id,
                }),
                // The gravest failure decides: one refused part fails the message.
                Err(e) => {
                    if failure.as_ref().is_none_or(|f| gravity(&e) > gravity(f)) {
                        failure = Some(e);
                    }
                }
            }
        }
        match failure {
            None => Ok(Accepted {
                provider_message_id: sent
                    .first()
                    .map(|p| p.provider_message_id.clone())
                    .unwrap_or_default(),
                parts: sent,
            }),
            Some(e) if sent.is_empty() => Err(e),
            Some(e) => Err(ProviderError::PartlySent {
                parts: sent,
                cause: Box::new(e),
            }),
        }
    }
}

/// How badly a part's failure bears on its message: a refusal over an outage over a
/// request to slow down.
fn gravity(e: &ProviderError) -> u8 {
    match e {
        ProviderError::Throttled { .. } => 0,
        ProviderError::Unavailable { .. } => 1,
        ProviderError::Permanent { .. } | ProviderError::PartlySent { .. } => 2,
    }
}

impl Shared {
    /// Submits one piece of a message on a bound session and returns the SMSC's id for it.
    async fn submit(
        &self,
        to: &E164,
        source: &str,
        piece: &parts::Piece,
    ) -> Result<String, ProviderError> {
        // Bounded, like everything in a send: a job's lease (30 s by default) must not run
        // out while its message waits here, or another worker would send it as well.
        let _permit =
            match tokio::time::timeout(self.config.response_timeout, self.window.acquire()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => {
                    return Err(ProviderError::unavailable(
                        "the connection is shutting down",
                    ));
                }
                Err(_) => {
                    return Err(ProviderError::unavailable(
                        "smpp: the submit window stayed full",
                    ));
                }
            };
        let Some(client) = self.wait_for_submitter().await else {
            return Err(ProviderError::unavailable("smpp: no session is bound"));
        };
        let pdu = session::submit_sm(&self.config, source, to, piece)?;
        let conn = self.connection_id.as_str().to_owned();
        let capacity = self.config.window * self.config.binds;
        metrics::gauge!("portcullis_smpp_window_in_use", "connection" => conn.clone())
            .set((capacity - self.window.available_permits()) as f64);
        let started = std::time::Instant::now();
        // rusmppc times the response from when the request is written; ours covers the
        // wait to be written as well.
        let answer = tokio::time::timeout(
            self.config.response_timeout + Duration::from_secs(1),
            client
                .response_timeout(self.config.response_timeout)
                .submit_sm(pdu),
        )
        .await
        .unwrap_or_else(|_| {
            Err(rusmppc::error::Error::ResponseTimeout {
                sequence_number: 0,
                timeout: self.config.response_timeout,
            })
        });
        metrics::histogram!("portcullis_smpp_submit_seconds", "connection" => conn.clone())
            .record(started.elapsed().as_secs_f64());
        let status = |s: u32| {
            metrics::counter!("portcullis_smpp_command_status_total", "connection" => conn.clone(), "status" => format!("0x{s:08X}")).increment(1);
        };
        match answer {
            Ok(resp) => {
                status(0);
                let id = resp.message_id().as_str().trim().to_owned();
                if id.is_empty() {
                    return Err(ProviderError::permanent(
                        "provider_refused",
                        "smpp: submit_sm_resp without a message id",
                    ));
                }
                Ok(self.config.receipt_ids.canonical_submit_id(&id))
            }
            Err(rusmppc::error::Error::UnexpectedResponse { response }) => {
                let code = u32::from(response.status());
                status(code);
                if code == u32::from(CommandStatus::EsmeRok) {
                    return Err(ProviderError::unavailable("smpp: an unexpected response"));
                }
                Err(map_status(code))
            }
            Err(e) => {
                metrics::counter!("portcullis_smpp_possible_duplicates_total", "connection" => conn).increment(1);
                tracing::warn!(connection = %self.connection_id, to = %to, error = %session::describe(&e), "smpp: no submit_sm_resp; the message will be retried and may arrive twice");
                Err(ProviderError::unavailable(format!(
                    "smpp: no submit_sm_resp ({}); retried, possibly a duplicate",
                    session::describe(&e)
                )))
            }
        }
    }
}

/// An E.164 number as an SMPP address: its digits, without the `+`.
pub(crate) fn address(number: &E164) -> String {
    number.as_str().trim_start_matches('+').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({"host": "smsc.example", "port": 2775, "system_id": "portcullis", "password": "s3cret"})
    }

    #[test]
    fn config_parses_with_defaults() {
        let c = SmppConfig::from_json(&valid()).unwrap();
        assert_eq!((c.binds, c.window, c.tls), (1, 10, false));
        assert_eq!(c.bind_mode, BindMode::Transceiver);
        assert_eq!(c.url(), "smpp://smsc.example:2775");
        assert_eq!(c.source_ton_npi("+14155550199"), (1, 1));
        assert_eq!(c.source_ton_npi("ACME"), (5, 0));
        assert_eq!(c.source_ton_npi("12345"), (3, 0));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn config_refusals_name_the_field_not_the_value() {
        let with = |k: &str, v: serde_json::Value| {
            let mut c = valid();
            c[k] = v;
            SmppConfig::from_json(&c).unwrap_err().to_string()
        };
        let e = with("password", json!("far-too-long-password"));
        assert!(e.contains("password") && !e.contains("far-too-long"), "{e}");
        assert!(with("system_id", json!("")).contains("system_id"));
        assert!(with("window", json!(0)).contains("window"));
        assert!(with("binds", json!(17)).contains("binds"));
        assert!(with("bind_mode", json!("receiver")).contains("bind_mode"));
        assert!(with("receipt_ids", json!("octal")).contains("receipt_ids"));
        assert!(with("passwd", json!("x")).contains("passwd"));
    }

    #[test]
    fn command_statuses_map_to_retry_or_not() {
        assert!(matches!(map_status(0x58), ProviderError::Throttled { .. }));
        assert!(map_status(0x08).is_retryable());
        assert!(map_status(0x45).is_retryable());
        match map_status(0x0B) {
            ProviderError::Permanent { code, detail } => {
                assert_eq!(code, INVALID_NUMBER);
                assert_eq!(detail, "smpp command_status 0x0000000B (ESME_RINVDSTADR)");
            }
            other => panic!("{other:?}"),
        }
        assert!(!map_status(0x0A).is_retryable());
    }
}
