//! One SMPP session as a long-lived actor: connect, bind, serve what the SMSC sends until
//! the session ends, then reconnect with backoff and jitter; unbind at shutdown.
//!
//! Receipts and inbound messages become provider events carrying an acknowledgement; the
//! `deliver_sm_resp` is written only when the pipeline fires it, i.e. once the event is
//! durably recorded. An event that cannot be recorded gets no response, so the SMSC sends
//! it again (SMPP's own retry), instead of a response that would make it forget a receipt
//! we do not have.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use portcullis_domain::{Channel, E164};
use rusmpp::Pdu;
use rusmpp::pdus::{
    BindReceiver, BindTransceiver, BindTransmitter, DeliverSm, DeliverSmResp, SubmitSm,
};
use rusmpp::tlvs::{MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::types::{AnyOctetString, COctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, InterfaceVersion, MessagePayload, Npi, RegisteredDelivery, ServiceType,
    Ton,
};
use rusmppc::{Client, ConnectionBuilder, Event};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::parts::Piece;
use super::{Shared, SmppConfig, address, receipt};
use crate::{
    EventSink, InboundEvent, InboundPart, ProviderError, ProviderEvent, ReceiptEvent, now_ms,
};

/// What a session is bound as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Transceiver,
    Transmitter,
    Receiver,
}

impl Role {
    fn submits(self) -> bool {
        self != Role::Receiver
    }

    fn name(self) -> &'static str {
        match self {
            Role::Transceiver => "transceiver",
            Role::Transmitter => "transmitter",
            Role::Receiver => "receiver",
        }
    }
}

/// The first wait after a failed bind or a dropped session, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long the `unbind` at shutdown (and then the close) may take.
const UNBIND_GRACE: Duration = Duration::from_secs(2);

/// Runs one session of `shared`'s connection until `stop`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    slot: usize,
    role: Role,
    events: Option<EventSink>,
    stop: CancellationToken,
) {
    let conn = shared.connection_id.clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if stop.is_cancelled() {
            return;
        }
        match bind(&shared.config, role).await {
            Ok((client, incoming)) => {
                tracing::info!(connection = %conn, session = slot, role = role.name(), "smpp: bound");
                backoff = FIRST_BACKOFF;
                if role.submits() {
                    shared.set_submitter(slot, Some(client.clone()));
                }
                gauge(&shared, role, 1.0);
                let stopped = serve(&shared, &client, incoming, events.as_ref(), &stop).await;
                if role.submits() {
                    shared.set_submitter(slot, None);
                }
                gauge(&shared, role, -1.0);
                if stopped {
                    if tokio::time::timeout(UNBIND_GRACE, client.unbind())
                        .await
                        .is_err()
                    {
                        tracing::info!(connection = %conn, "smpp: no unbind_resp; closing");
                    }
                    // Bounded too: a session that stopped answering must not hold up the
                    // gateway's shutdown.
                    let _ = tokio::time::timeout(UNBIND_GRACE, client.close()).await;
                    tracing::info!(connection = %conn, session = slot, "smpp: unbound");
                    return;
                }
                tracing::warn!(connection = %conn, session = slot, role = role.name(), "smpp: session ended; reconnecting");
            }
            Err(BindError::Refused(status)) => {
                tracing::error!(
                    connection = %conn,
                    session = slot,
                    status = %format!("0x{status:08X} ({})", super::status_name(status)),
                    "smpp: the SMSC refused the bind: check the connection's system_id, password and system_type"
                );
            }
            Err(BindError::Failed(e)) => {
                tracing::warn!(connection = %conn, session = slot, error = %e, "smpp: cannot bind");
            }
        }
        // Full jitter, so binds of many sessions do not retry in step.
        let wait = jitter(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

fn gauge(shared: &Shared, role: Role, delta: f64) {
    metrics::gauge!(
        "portcullis_smpp_binds_up",
        "connection" => shared.connection_id.as_str().to_owned(),
        "role" => role.name()
    )
    .increment(delta);
}

/// A wait between half of `backoff` and all of it.
fn jitter(backoff: Duration) -> Duration {
    use rand::RngExt;
    let half = backoff / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

enum BindError {
    /// The SMSC answered the bind with this command status.
    Refused(u32),
    Failed(String),
}

type Incoming = Box<dyn futures_util::Stream<Item = Event> + Send + Unpin>;

async fn bind(config: &SmppConfig, role: Role) -> Result<(Client, Incoming), BindError> {
    let (client, incoming) = ConnectionBuilder::new()
        // We bind as 3.4; rusmppc speaks 5.0 and would refuse a 3.4 SMSC's answer.
        .disable_interface_version_check()
        .enquire_link_interval(config.enquire_link)
        .response_timeout(config.response_timeout)
        .connect(config.url())
        .await
        .map_err(|e| BindError::Failed(describe(&e)))?;
    let system_id = bind_field(&config.system_id)?;
    let password = bind_field(config.password.expose())?;
    let system_type = bind_field(&config.system_type)?;
    // The three bind PDUs have the same fields but are distinct types.
    macro_rules! bind_as {
        ($method:ident, $pdu:ident) => {
            client
                .$method(
                    $pdu::builder()
                        .system_id(system_id)
                        .password(password)
                        .system_type(system_type)
                        .interface_version(InterfaceVersion::Smpp3_4)
                        .addr_ton(Ton::Unknown)
                        .addr_npi(Npi::Unknown)
                        .address_range(COctetString::empty())
                        .build(),
                )
                .await
                .map(|_| ())
        };
    }
    let answer = match role {
        Role::Transceiver => bind_as!(bind_transceiver, BindTransceiver),
        Role::Transmitter => bind_as!(bind_transmitter, BindTransmitter),
        Role::Receiver => bind_as!(bind_receiver, BindReceiver),
    };
    match answer {
        Ok(()) => Ok((client, Box::new(incoming))),
        Err(rusmppc::error::Error::UnexpectedResponse { response }) => {
            let _ = client.close().await;
            Err(BindError::Refused(u32::from(response.status())))
        }
        Err(e) => {
            let _ = client.close().await;
            Err(BindError::Failed(describe(&e)))
        }
    }
}

/// A bind field as a C-octet string of the size SMPP gives it.
fn bind_field<const MIN: usize, const MAX: usize>(
    value: &str,
) -> Result<COctetString<MIN, MAX>, BindError> {
    COctetString::from_str(value)
        .map_err(|_| BindError::Failed("a bind field cannot be encoded".to_owned()))
}

/// Serves one bound session until it ends (`false`) or `stop` (`true`).
async fn serve(
    shared: &Shared,
    client: &Client,
    mut incoming: Incoming,
    events: Option<&EventSink>,
    stop: &CancellationToken,
) -> bool {
    loop {
        let event = tokio::select! {
            e = incoming.next() => e,
            _ = stop.cancelled() => return true,
        };
        match event {
            None => return false,
            Some(Event::Error(e)) => {
                tracing::warn!(connection = %shared.connection_id, error = %describe(&e), "smpp: session error");
            }
            Some(Event::Incoming(command)) => {
                let seq = command.sequence_number();
                match command.pdu() {
                    Some(Pdu::DeliverSm(deliver)) => {
                        deliver_sm(shared, client, seq, deliver, events).await;
                    }
                    Some(Pdu::Unbind) => {
                        let _ = client.unbind_resp(seq).await;
                        return false;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A `deliver_sm`: a receipt or an inbound message, answered once recorded.
async fn deliver_sm(
    shared: &Shared,
    client: &Client,
    seq: u32,
    deliver: &DeliverSm,
    events: Option<&EventSink>,
) {
    let conn = &shared.connection_id;
    let esm = u8::from(deliver.esm_class);
    let mut receipted_id = None;
    let mut state = None;
    for tlv in deliver.tlvs() {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => receipted_id = Some(id.as_str().to_owned()),
            Some(TlvValue::MessageState(s)) => state = Some(u8::from(*s)),
            _ => {}
        }
    }
    let short_message: &[u8] = deliver.short_message().as_ref();
    // SMPP 3.4 §5.2.12: message type bits 2–5; 0b0001 (0x04) is an SMSC delivery receipt.
    let is_receipt = esm & 0x3C == 0x04 || receipted_id.is_some();
    let Some(events) = events else {
        // Nowhere to record it: no response, so the SMSC keeps it.
        return;
    };
    let event = if is_receipt {
        let r = receipt::parse(receipted_id.as_deref(), state, short_message);
        let Some(status) = r.status else {
            // ENROUTE, ACCEPTD, UNKNOWN: not a final state, nothing to record.
            let _ = client.deliver_sm_resp(seq, DeliverSmResp::default()).await;
            return;
        };
        metrics::counter!("portcullis_smpp_receipts_total", "connection" => conn.as_str().to_owned(), "result" => "received").increment(1);
        // A receipt without a message id can match nothing, but it is still recorded (as
        // unmatched, under the empty reference no sent message has) before it is
        // acknowledged: it is the only trace of what the carrier said.
        let (provider_message_id, detail) = match &r.message_id {
            Some(id) => (shared.config.receipt_ids.submit_id(id), r.detail),
            None => {
                tracing::warn!(connection = %conn, "smpp: a receipt without a message id; kept unmatched");
                (String::new(), format!("{} (no message id)", r.detail))
            }
        };
        let (ack, recorded) = oneshot::channel();
        let event = ReceiptEvent {
            connection_id: conn.clone(),
            provider_message_id,
            status: status.into(),
            detail: Some(detail),
            at: now_ms(),
        };
        (ProviderEvent::Receipt(event, Some(ack)), recorded)
    } else {
        match inbound(shared, deliver, short_message, esm) {
            Some(m) => {
                let (ack, recorded) = oneshot::channel();
                (ProviderEvent::Inbound(m, Some(ack)), recorded)
            }
            None => {
                let _ = client.deliver_sm_resp(seq, DeliverSmResp::default()).await;
                return;
            }
        }
    };
    let (event, recorded) = event;
    if events.send(event).await.is_err() {
        return;
    }
    // Answered from its own task, so the session goes on reading while the recorder
    // commits (the SMSC's window, not ours, bounds how many wait).
    let client = client.clone();
    tokio::spawn(async move {
        if recorded.await.is_ok() {
            let _ = client.deliver_sm_resp(seq, DeliverSmResp::default()).await;
        }
    });
}

/// An inbound (MO) message, decoded; `None` for one that is not a text from a phone number.
/// A part of a concatenated message comes out as an event naming its place; the pipeline
/// keeps the parts until the message is whole.
fn inbound(
    shared: &Shared,
    deliver: &DeliverSm,
    short_message: &[u8],
    esm: u8,
) -> Option<InboundEvent> {
    let conn = &shared.connection_id;
    let mut payload = None;
    let mut sar = (None, None, None);
    for tlv in deliver.tlvs() {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref()),
            Some(TlvValue::SarMsgRefNum(r)) => sar.0 = Some(*r),
            Some(TlvValue::SarTotalSegments(t)) => sar.1 = Some(*t),
            Some(TlvValue::SarSegmentSeqnum(n)) => sar.2 = Some(*n),
            _ => {}
        }
    }
    // A long message may come whole in `message_payload` instead of `short_message`.
    let user_data = match payload {
        Some(p) if short_message.is_empty() => p,
        _ => short_message,
    };
    // esm_class UDHI: the user data starts with a header, which may place it in a
    // concatenated message; SMSCs that do not forward headers use the SAR TLVs instead.
    let (text, mut part) = if esm & 0x40 != 0 {
        split_udh(user_data)?
    } else {
        (user_data, None)
    };
    if let (Some(reference), Some(total), Some(seq)) = sar {
        part = Some(InboundPart {
            reference,
            total,
            seq,
        });
    }
    let part = part.filter(|p| p.total > 1 && (1..=p.total).contains(&p.seq));
    let source = deliver.source_addr.as_str();
    let Ok(from) = E164::parse(&format!("+{}", source.trim_start_matches('+'))) else {
        tracing::info!(connection = %conn, "smpp: inbound message from a sender that is not a phone number; not stored");
        return None;
    };
    let body = decode(u8::from(deliver.data_coding), text);
    let to = deliver.destination_addr.as_str();
    let to = if to.bytes().all(|b| b.is_ascii_digit()) && !to.is_empty() {
        format!("+{to}")
    } else {
        to.to_owned()
    };
    // SMPP gives an inbound message no id. The SMSC redelivers the same PDU when our
    // response did not reach it, so the id is a digest of what it carries, within a
    // ten-minute window: a redelivery is a duplicate, the same words sent again later are
    // a new message.
    let window = now_ms() / 600_000;
    let mut digest = Sha256::new();
    for part in [
        conn.as_str().as_bytes(),
        source.as_bytes(),
        to.as_bytes(),
        user_data,
    ] {
        digest.update((part.len() as u32).to_be_bytes());
        digest.update(part);
    }
    digest.update(window.to_be_bytes());
    let id: String = digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(InboundEvent {
        connection_id: conn.clone(),
        app_id: None,
        provider_message_id: format!("smpp-mo-{id}"),
        from,
        to,
        channel: Channel::Sms,
        body,
        at: now_ms(),
        part,
    })
}

/// Splits user data that starts with a user data header (3GPP TS 23.040 §9.2.3.24) into
/// the text and, when the header holds a concatenation element (8-bit or 16-bit
/// reference), the part's place. `None` when the header's length runs past the data.
fn split_udh(user_data: &[u8]) -> Option<(&[u8], Option<InboundPart>)> {
    let header_len = usize::from(*user_data.first()?);
    let header = user_data.get(1..=header_len)?;
    let text = &user_data[header_len + 1..];
    let mut part = None;
    let mut rest = header;
    while let [iei, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let Some(value) = tail.get(..len) else { break };
        part = match (iei, value) {
            (0x00, [reference, total, seq]) => Some(InboundPart {
                reference: u16::from(*reference),
                total: *total,
                seq: *seq,
            }),
            (0x08, [hi, lo, total, seq]) => Some(InboundPart {
                reference: u16::from_be_bytes([*hi, *lo]),
                total: *total,
                seq: *seq,
            }),
            _ => part,
        };
        rest = &tail[len..];
    }
    Some((text, part))
}

/// A short message's text by its data coding (SMPP 3.4 §5.2.19): the SMSC default alphabet
/// (GSM 7-bit, one septet per octet), Latin-1, or UCS-2 big-endian; anything else is read
/// as UTF-8 with replacement characters.
fn decode(data_coding: u8, bytes: &[u8]) -> String {
    match data_coding {
        0 | 1 => portcullis_domain::gsm7_decode(bytes),
        3 => bytes.iter().map(|&b| char::from(b)).collect(),
        8 => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The `submit_sm` of one piece of a message, asking for a final receipt.
pub(crate) fn submit_sm(
    config: &SmppConfig,
    source: &str,
    to: &E164,
    piece: &Piece,
) -> Result<SubmitSm, ProviderError> {
    let bad = |what: &str| {
        ProviderError::permanent(
            "provider_refused",
            format!("smpp: {what} cannot be encoded"),
        )
    };
    let (ton, npi) = config.source_ton_npi(source);
    let source = source.trim_start_matches('+');
    // SMPP 3.4 §5.2.12: UDHI (0x40) says the short message starts with a user data header.
    let esm_class = if piece.udh.is_some() { 0x40 } else { 0x00 };
    let mut pdu = SubmitSm::builder()
        .service_type(ServiceType::default())
        .source_addr_ton(Ton::from(ton))
        .source_addr_npi(Npi::from(npi))
        .source_addr(COctetString::from_str(source).map_err(|_| bad("the sender"))?)
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(COctetString::from_str(&address(to)).map_err(|_| bad("the recipient"))?)
        .esm_class(EsmClass::from(esm_class))
        .registered_delivery(RegisteredDelivery::from(0x01))
        .data_coding(DataCoding::from(piece.data_coding))
        .short_message(OctetString::from_vec(piece.short_message()).map_err(|_| bad("the text"))?);
    if piece.payload {
        pdu = pdu.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from_vec(piece.text.clone())),
        ));
    }
    Ok(pdu.build())
}

/// A client error in words, without anything of a PDU.
pub(crate) fn describe(e: &rusmppc::error::Error) -> String {
    use rusmppc::error::Error;
    match e {
        Error::Connect(io) => format!("cannot connect: {}", io.kind()),
        Error::Io(io) => format!("i/o: {}", io.kind()),
        Error::ConnectionClosed | Error::ConnectionClosedByPeer => "the session closed".to_owned(),
        Error::ResponseTimeout { timeout, .. } => format!("no response within {timeout:?}"),
        Error::EnquireLinkTimeout { .. } => "enquire_link unanswered".to_owned(),
        Error::UnexpectedResponse { response } => {
            format!(
                "unexpected response, status 0x{:08X}",
                u32::from(response.status())
            )
        }
        Error::Encode(_) | Error::Decode(_) => "a PDU could not be encoded or decoded".to_owned(),
        _ => "session error".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenation_headers_place_a_part() {
        let eight = [0x05, 0x00, 0x03, 0x2A, 0x03, 0x02, b'h', b'i'];
        assert_eq!(
            split_udh(&eight),
            Some((
                &b"hi"[..],
                Some(InboundPart {
                    reference: 0x2A,
                    total: 3,
                    seq: 2
                })
            ))
        );
        // A 16-bit reference after an element we do not read (a port address).
        let sixteen = [
            0x0C, 0x05, 0x04, 0x0B, 0x84, 0x23, 0xF0, 0x08, 0x04, 0x12, 0x34, 0x02, 0x01, b'x',
        ];
        assert_eq!(
            split_udh(&sixteen).unwrap().1,
            Some(InboundPart {
                reference: 0x1234,
                total: 2,
                seq: 1
            })
        );
        // No concatenation element: text only.
        assert_eq!(split_udh(&[0x00, b'o', b'k']), Some((&b"ok"[..], None)));
        // A header longer than the data is not read as text.
        assert_eq!(split_udh(&[0x09, 0x00, 0x03]), None);
    }
}
