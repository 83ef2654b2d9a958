//! Delivery receipts as SMSCs write them.
//!
//! A receipt is a `deliver_sm` whose `esm_class` says so. Where the SMSC sets the
//! `receipted_message_id` and `message_state` TLVs they are authoritative; otherwise (many
//! SMSC implementations) everything is in the short message, in the de-facto format of
//! SMPP 3.4 Appendix B: `id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done
//! date:YYMMDDhhmm stat:DDDDDDD err:E text: . . .`. Real SMSCs vary the case of the keys
//! and the spacing, so the text is read by key, not by position.

use portcullis_domain::MessageStatus;

/// What a receipt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The message id the SMSC gave in its `submit_sm_resp`, as the receipt writes it;
    /// `None` when the receipt carries none (it can then match no message, but is still
    /// kept).
    pub message_id: Option<String>,
    /// The final state, when the receipt reports one (intermediate `ENROUTE`/`ACCEPTD`
    /// receipts carry none).
    pub status: Option<MessageStatus>,
    /// The SMSC's state and error code, for the history (`stat:UNDELIV err:011`): short
    /// codes only, never the text the SMSC echoes back.
    pub detail: String,
}

/// The `message_state` TLV value (SMPP 3.4 §5.2.28) as a status; `None` for states that
/// are not final.
pub fn state_status(state: u8) -> Option<MessageStatus> {
    match state {
        2 => Some(MessageStatus::Delivered),
        3 => Some(MessageStatus::Expired),
        4 | 5 => Some(MessageStatus::Undelivered),
        8 => Some(MessageStatus::Failed),
        _ => None,
    }
}

/// The same for the `stat:` word of the text.
pub fn stat_status(stat: &str) -> Option<MessageStatus> {
    match stat.to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => Some(MessageStatus::Delivered),
        "EXPIRED" => Some(MessageStatus::Expired),
        "DELETED" | "UNDELIV" | "UNDELIVERABLE" => Some(MessageStatus::Undelivered),
        "REJECTD" | "REJECTED" => Some(MessageStatus::Failed),
        _ => None,
    }
}

/// The value after `key:` in a receipt text (keys matched without regard to case), up to
/// the next space.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(key) {
        let start = from + at;
        // A key starts the text or follows a space: `err:` must not match in `xerr:`.
        let at_word = start == 0 || lower.as_bytes()[start - 1] == b' ';
        let value_at = start + key.len();
        if at_word && lower[value_at..].starts_with(':') {
            let value = &text[value_at + 1..];
            let end = value.find(' ').unwrap_or(value.len());
            return Some(&value[..end]);
        }
        from = value_at;
    }
    None
}

/// Reads a receipt from the `receipted_message_id` and `message_state` TLVs (when
/// present) and the short message text.
pub fn parse(tlv_id: Option<&str>, tlv_state: Option<u8>, text: &[u8]) -> Receipt {
    let text = String::from_utf8_lossy(text);
    let text_id = field(&text, "id").filter(|id| !id.trim().is_empty());
    let message_id = tlv_id
        .filter(|id| !id.trim().is_empty())
        .or(text_id)
        .map(|id| id.trim().to_owned());
    let stat = field(&text, "stat");
    let err = field(&text, "err")
        .filter(|e| e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()));
    let status = tlv_state
        .and_then(state_status)
        .or_else(|| stat.and_then(stat_status));
    let stat_word = stat
        .filter(|s| s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .or_else(|| tlv_state.map(|s| format!("message_state {s}")))
        .unwrap_or_else(|| "no state".to_owned());
    let detail = match err {
        Some(e) => format!("smpp receipt stat:{stat_word} err:{e}"),
        None => format!("smpp receipt stat:{stat_word}"),
    };
    Receipt {
        message_id,
        status,
        detail,
    }
}

/// How the message ids of receipts relate to those of `submit_sm_resp` on a connection.
/// Some SMSCs answer the submit with a hexadecimal id and write the receipt's in decimal
/// (or the reverse); the connection says which, and the receipt's id is turned back into
/// the submit's form before it is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdForm {
    /// The same text in both (SMPP 3.4's intent).
    #[default]
    Same,
    /// `submit_sm_resp` in hexadecimal, receipts in decimal.
    HexSubmitDecimalReceipt,
    /// `submit_sm_resp` in decimal, receipts in hexadecimal.
    DecimalSubmitHexReceipt,
}

impl IdForm {
    /// Parses the configuration value (`same`, `hex_submit_decimal_receipt`,
    /// `decimal_submit_hex_receipt`).
    pub fn parse(value: &str) -> Option<IdForm> {
        match value {
            "same" => Some(IdForm::Same),
            "hex_submit_decimal_receipt" => Some(IdForm::HexSubmitDecimalReceipt),
            "decimal_submit_hex_receipt" => Some(IdForm::DecimalSubmitHexReceipt),
            _ => None,
        }
    }

    /// The receipt's id as `submit_sm_resp` wrote it. An id that does not read in the
    /// expected base is left as it is (it then stays unmatched, and visible).
    pub fn submit_id(self, receipt_id: &str) -> String {
        match self {
            IdForm::Same => receipt_id.to_owned(),
            IdForm::HexSubmitDecimalReceipt => receipt_id
                .parse::<u128>()
                .map(|n| format!("{n:x}"))
                .unwrap_or_else(|_| receipt_id.to_owned()),
            IdForm::DecimalSubmitHexReceipt => u128::from_str_radix(receipt_id, 16)
                .map(|n| n.to_string())
                .unwrap_or_else(|_| receipt_id.to_owned()),
        }
    }

    /// A `submit_sm_resp` id in its canonical spelling, so `0A3F` and `a3f` match.
    pub fn canonical_submit_id(self, id: &str) -> String {
        match self {
            IdForm::HexSubmitDecimalReceipt => u128::from_str_radix(id, 16)
                .map(|n| format!("{n:x}"))
                .unwrap_or_else(|_| id.to_owned()),
            IdForm::DecimalSubmitHexReceipt => id
                .parse::<u128>()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| id.to_owned()),
            IdForm::Same => id.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPENDIX_B: &[u8] = b"id:0123456789 sub:001 dlvrd:001 submit date:2611221530 done date:2611221531 stat:DELIVRD err:000 text:Your code is 48";

    #[test]
    fn reads_the_appendix_b_text() {
        let r = parse(None, None, APPENDIX_B);
        assert_eq!(r.message_id.as_deref(), Some("0123456789"));
        assert_eq!(r.status, Some(MessageStatus::Delivered));
        assert_eq!(r.detail, "smpp receipt stat:DELIVRD err:000");
        // The echoed message text never reaches the detail.
        assert!(!r.detail.contains("code"));
    }

    #[test]
    fn tlvs_win_over_the_text_and_case_and_order_vary() {
        let r = parse(Some("a1b2"), Some(5), b"Id:zzz Stat:DELIVRD Err:000");
        assert_eq!(r.message_id.as_deref(), Some("a1b2"));
        assert_eq!(r.status, Some(MessageStatus::Undelivered));
        let r = parse(None, None, b"stat:UNDELIV id:77 err:011 text:");
        assert_eq!(r.message_id.as_deref(), Some("77"));
        assert_eq!(r.status, Some(MessageStatus::Undelivered));
        assert_eq!(r.detail, "smpp receipt stat:UNDELIV err:011");
    }

    #[test]
    fn intermediate_receipts_and_receipts_without_an_id() {
        let r = parse(None, None, b"id:9 stat:ENROUTE err:000");
        assert_eq!(r.status, None);
        // Without an id the state is still read: the receipt is kept, unmatched.
        let r = parse(None, None, b"stat:DELIVRD");
        assert_eq!(r.message_id, None);
        assert_eq!(r.status, Some(MessageStatus::Delivered));
        assert_eq!(
            parse(Some(" "), None, b"id: sub:001 stat:UNDELIV").message_id,
            None
        );
        assert_eq!(parse(Some(""), None, b"no id here").status, None);
        // `xid:` is not `id:`.
        assert_eq!(parse(None, None, b"xid:5 stat:DELIVRD").message_id, None);
    }

    #[test]
    fn every_final_state_maps() {
        for (stat, state, status) in [
            ("DELIVRD", 2, MessageStatus::Delivered),
            ("EXPIRED", 3, MessageStatus::Expired),
            ("DELETED", 4, MessageStatus::Undelivered),
            ("UNDELIV", 5, MessageStatus::Undelivered),
            ("REJECTD", 8, MessageStatus::Failed),
        ] {
            assert_eq!(stat_status(stat), Some(status));
            assert_eq!(state_status(state), Some(status));
        }
        assert_eq!(state_status(6), None);
        assert_eq!(state_status(7), None);
    }

    #[test]
    fn hex_and_decimal_ids_are_reconciled() {
        let f = IdForm::HexSubmitDecimalReceipt;
        assert_eq!(f.submit_id("2623"), "a3f");
        assert_eq!(f.canonical_submit_id("0A3F"), "a3f");
        let f = IdForm::DecimalSubmitHexReceipt;
        assert_eq!(f.submit_id("A3F"), "2623");
        assert_eq!(f.canonical_submit_id("02623"), "2623");
        assert_eq!(IdForm::Same.submit_id("A3F"), "A3F");
        assert_eq!(
            IdForm::HexSubmitDecimalReceipt.submit_id("not-a-number"),
            "not-a-number"
        );
    }
}
