//! A message cut into what its `submit_sm`s carry: one short message, concatenated parts
//! with a user data header (3GPP TS 23.040 §9.2.3.24.1, 8-bit reference: 153 GSM 7-bit
//! characters or 67 UCS-2 units a part), or the whole text in `message_payload`.
//!
//! rusmpp-extra can also build concatenated `submit_sm`s (with a chosen reference). The
//! cut is made here instead because the parts must be exactly the segments the message was
//! counted and charged as when it was accepted (`portcullis_domain::split_segments`, the
//! one implementation of the GSM-7/UCS-2 segment rules), and each part must stay
//! addressable by number so a retry sends only the missing ones. The reference is derived
//! from the message id, so a retry uses the one the handset already holds.

use portcullis_domain::{Encoding, MessageId, split_segments};
use sha2::{Digest, Sha256};

use super::{LongMessages, SmppConfig, TextCoding};
use crate::{OutboundMessage, ProviderError};

/// SMPP data coding values (SMPP 3.4 §5.2.19).
pub(crate) const DCS_GSM7: u8 = 0;
pub(crate) const DCS_LATIN1: u8 = 3;
pub(crate) const DCS_UCS2: u8 = 8;

/// Octets of one unconcatenated 8-bit or UCS-2 short message.
const SINGLE_OCTETS: usize = 140;
/// Octets of text in one concatenated part after the 6-octet header.
const PART_OCTETS: usize = SINGLE_OCTETS - 6;
/// Septets of one unconcatenated GSM 7-bit short message.
const SINGLE_SEPTETS: usize = 160;

/// What one `submit_sm` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// 1 for the first (or only) part.
    pub part: u32,
    pub data_coding: u8,
    /// The concatenation header of a part of a longer message.
    pub udh: Option<[u8; 6]>,
    /// The coded text (for GSM 7-bit, one septet per octet; the SMSC packs them).
    pub text: Vec<u8>,
    /// The text goes in `message_payload`, `short_message` stays empty.
    pub payload: bool,
}

impl Piece {
    /// The `short_message` octets: header then text.
    pub fn short_message(&self) -> Vec<u8> {
        match (&self.udh, self.payload) {
            (_, true) => Vec::new(),
            (Some(udh), false) => [udh.as_slice(), &self.text].concat(),
            (None, false) => self.text.clone(),
        }
    }
}

#[derive(Clone, Copy)]
enum Coding {
    Gsm7,
    Latin1,
    Ucs2,
}

impl Coding {
    fn encode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Coding::Gsm7 => portcullis_domain::gsm7_encode(text),
            Coding::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect(),
            Coding::Ucs2 => Some(text.encode_utf16().flat_map(u16::to_be_bytes).collect()),
        }
    }

    fn dcs(self) -> u8 {
        match self {
            Coding::Gsm7 => DCS_GSM7,
            Coding::Latin1 => DCS_LATIN1,
            Coding::Ucs2 => DCS_UCS2,
        }
    }

    fn fits_one(self, coded: &[u8]) -> bool {
        coded.len()
            <= match self {
                Coding::Gsm7 => SINGLE_SEPTETS,
                Coding::Latin1 | Coding::Ucs2 => SINGLE_OCTETS,
            }
    }
}

/// The pieces of `msg` for a connection configured as `config`.
pub(crate) fn pieces(
    config: &SmppConfig,
    msg: &OutboundMessage,
) -> Result<Vec<Piece>, ProviderError> {
    let latin1 = || msg.body.chars().all(|c| u32::from(c) <= 0xFF);
    let coding = match (msg.encoding, config.data_coding) {
        (Encoding::Gsm7, TextCoding::Gsm7) => Coding::Gsm7,
        (Encoding::Gsm7, TextCoding::Latin1) if latin1() => Coding::Latin1,
        _ => Coding::Ucs2,
    };
    let refused = |why: &str| ProviderError::permanent("provider_refused", format!("smpp: {why}"));
    let whole = coding
        .encode(&msg.body)
        .ok_or_else(|| refused("the text cannot be coded as the connection's data coding"))?;
    let piece = |part: u32, udh, text, payload| Piece {
        part,
        data_coding: coding.dcs(),
        udh,
        text,
        payload,
    };
    if coding.fits_one(&whole) {
        return Ok(vec![piece(1, None, whole, false)]);
    }
    if config.long_messages == LongMessages::MessagePayload {
        return Ok(vec![piece(1, None, whole, true)]);
    }
    let chunks = match coding {
        // Cut where the segment count the message was accepted with cuts it: escape and
        // surrogate pairs stay whole.
        Coding::Gsm7 | Coding::Ucs2 => split_segments(&msg.body),
        Coding::Latin1 => msg
            .body
            .chars()
            .collect::<Vec<_>>()
            .chunks(PART_OCTETS)
            .map(|c| c.iter().collect())
            .collect(),
    };
    let total =
        u8::try_from(chunks.len()).map_err(|_| refused("the text needs more than 255 parts"))?;
    let reference = reference(&msg.id);
    chunks
        .iter()
        .zip(1u8..)
        .map(|(chunk, seq)| {
            let text = coding
                .encode(chunk)
                .ok_or_else(|| refused("a part cannot be coded"))?;
            Ok(piece(
                u32::from(seq),
                Some([0x05, 0x00, 0x03, reference, total, seq]),
                text,
                false,
            ))
        })
        .collect()
}

/// The concatenation reference of a message: the same on every attempt.
fn reference(id: &MessageId) -> u8 {
    Sha256::digest(id.as_str().as_bytes())[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_domain::{Channel, E164, segment_info};
    use serde_json::json;

    fn config(extra: serde_json::Value) -> SmppConfig {
        let mut c = json!({"host": "smsc.example", "system_id": "p", "password": "x"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        SmppConfig::from_json(&c).unwrap()
    }

    fn message(body: &str) -> OutboundMessage {
        let info = segment_info(body);
        OutboundMessage {
            id: MessageId::new(),
            to: E164::parse("+14155550100").unwrap(),
            from: None,
            channel: Channel::Sms,
            body: body.to_owned(),
            encoding: info.encoding,
            segments: info.segments,
            template: None,
            parts_sent: Vec::new(),
        }
    }

    #[test]
    fn a_short_text_is_one_plain_short_message() {
        let p = pieces(&config(json!({})), &message("Hi@")).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].data_coding, p[0].udh), (DCS_GSM7, None));
        assert_eq!(p[0].short_message(), vec![0x48, 0x69, 0x00]);
        let p = pieces(&config(json!({})), &message("Привет")).unwrap();
        assert_eq!(
            (p[0].data_coding, p[0].short_message().len()),
            (DCS_UCS2, 12)
        );
    }

    #[test]
    fn long_gsm_text_is_cut_at_153_with_one_reference() {
        let msg = message(&"a".repeat(400));
        let p = pieces(&config(json!({})), &msg).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(msg.segments, 3);
        let reference = p[0].udh.unwrap()[3];
        for (i, piece) in p.iter().enumerate() {
            let udh = piece.udh.unwrap();
            assert_eq!(udh, [5, 0, 3, reference, 3, i as u8 + 1]);
            assert_eq!(piece.part, i as u32 + 1);
        }
        assert_eq!(p[0].text.len(), 153);
        assert_eq!(p[2].text.len(), 400 - 306);
        assert_eq!(p[0].short_message().len(), 159);
        // The same message cut again (a retry) keeps its reference.
        assert_eq!(pieces(&config(json!({})), &msg).unwrap(), p);
    }

    #[test]
    fn ucs2_parts_hold_67_units_and_never_split_a_surrogate_pair() {
        let body = format!("{}😀{}", "ж".repeat(66), "ж".repeat(80));
        let msg = message(&body);
        let p = pieces(&config(json!({})), &msg).unwrap();
        assert_eq!(p.len() as u32, msg.segments);
        // 66 units then a pair that does not fit: the first part stops before it.
        assert_eq!(p[0].text.len(), 66 * 2);
        assert!(
            p.iter()
                .all(|x| x.text.len() <= 134 && x.data_coding == DCS_UCS2)
        );
        let joined: Vec<u8> = p.iter().flat_map(|x| x.text.clone()).collect();
        let units: Vec<u16> = joined
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&units).unwrap(), body);
    }

    #[test]
    fn message_payload_carries_the_whole_text() {
        let body = "b".repeat(500);
        let p = pieces(
            &config(json!({"long_messages": "message_payload"})),
            &message(&body),
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].payload && p[0].short_message().is_empty());
        assert_eq!(p[0].text.len(), 500);
    }

    #[test]
    fn latin1_connections_code_latin1_and_fall_back_to_ucs2() {
        let latin1 = config(json!({"data_coding": "latin1"}));
        let p = pieces(&latin1, &message("café")).unwrap();
        assert_eq!(
            (p[0].data_coding, p[0].text.clone()),
            (DCS_LATIN1, b"caf\xe9".to_vec())
        );
        let p = pieces(&latin1, &message(&"é".repeat(300))).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].text.len(), 134);
        // `€` is GSM (extension table) but not Latin-1.
        let p = pieces(&latin1, &message("5 €")).unwrap();
        assert_eq!(p[0].data_coding, DCS_UCS2);
    }
}
