//! Sender ids: the "from" of an outbound message.
//!
//! A sender is the app's own number or brand name, not a recipient's personal data, so unlike
//! [`E164`] it prints in full.

use std::fmt;

use crate::phone::{E164, PhoneError};

/// Longest alphanumeric sender id carriers accept (GSM 03.40 TP-OA with 7-bit letters).
pub const MAX_ALPHANUMERIC_SENDER_CHARS: usize = 11;

/// Why a string is not an acceptable sender id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// Looks like a phone number (no letters) but is not a valid E.164 number.
    #[error("sender number is invalid: {0}")]
    Phone(#[from] PhoneError),
    /// Has letters but is not 1 to 11 characters of `[A-Za-z0-9 ]`.
    #[error(
        "alphanumeric sender id must be 1 to 11 characters of A-Z, a-z, 0-9 and inner spaces, with at least one letter"
    )]
    Alphanumeric,
}

impl SenderError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        "invalid_sender"
    }
}

/// An E.164 number or an alphanumeric sender id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SenderId {
    /// A phone number the app sends from.
    Phone(E164),
    /// A brand name such as `Acme`, 1..=11 characters with at least one letter.
    Alphanumeric(String),
}

impl SenderId {
    /// Parses a sender: anything with an ASCII letter is an alphanumeric id, everything else
    /// must be a phone number (formatting is folded as for recipients).
    pub fn parse(input: &str) -> Result<SenderId, SenderError> {
        if !input.bytes().any(|b| b.is_ascii_alphabetic()) {
            return Ok(SenderId::Phone(E164::parse(input)?));
        }
        // `tel:` is a phone, whatever its letters say.
        if input
            .trim()
            .get(..4)
            .is_some_and(|s| s.eq_ignore_ascii_case("tel:"))
        {
            return Ok(SenderId::Phone(E164::parse(input)?));
        }
        let chars = input.chars().count();
        let valid = (1..=MAX_ALPHANUMERIC_SENDER_CHARS).contains(&chars)
            && input.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
            // Leading or trailing spaces are invisible on a handset and make two ids that
            // look the same compare different.
            && !input.starts_with(' ')
            && !input.ends_with(' ');
        if valid {
            Ok(SenderId::Alphanumeric(input.to_owned()))
        } else {
            Err(SenderError::Alphanumeric)
        }
    }

    /// The sender as handed to providers: the full number or the alphanumeric id.
    pub fn as_str(&self) -> &str {
        match self {
            SenderId::Phone(n) => n.as_str(),
            SenderId::Alphanumeric(s) => s,
        }
    }

    /// Whether this is a phone number (which can receive replies) rather than a name.
    pub fn is_phone(&self) -> bool {
        matches!(self, SenderId::Phone(_))
    }
}

impl From<E164> for SenderId {
    fn from(n: E164) -> Self {
        SenderId::Phone(n)
    }
}

impl fmt::Display for SenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SenderId {
    type Err = SenderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for SenderId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SenderId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        SenderId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let cases = [
            ("+14155550199", "+14155550199", true),
            ("+1 (415) 555-0199", "+14155550199", true),
            ("tel:+14155550199", "+14155550199", true),
            ("Acme", "Acme", false),
            ("A", "A", false),
            ("ACME Bank 1", "ACME Bank 1", false),
            ("2FA Code", "2FA Code", false),
            ("abcdefghijk", "abcdefghijk", false),
        ];
        for (input, shown, is_phone) in cases {
            let s = SenderId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(s.as_str(), shown, "{input}");
            assert_eq!(s.to_string(), shown, "{input}");
            assert_eq!(s.is_phone(), is_phone, "{input}");
        }
    }

    #[test]
    fn refused() {
        let cases = [
            ("", SenderError::Phone(PhoneError::NotE164)),
            ("12345", SenderError::Phone(PhoneError::NotE164)),
            (
                "+1 415 000 0000",
                SenderError::Phone(PhoneError::InvalidForRegion),
            ),
            ("abcdefghijkl", SenderError::Alphanumeric),
            (" Acme", SenderError::Alphanumeric),
            ("Acme ", SenderError::Alphanumeric),
            ("Acme-Bank", SenderError::Alphanumeric),
            ("Acme_Bank", SenderError::Alphanumeric),
            ("Acmé", SenderError::Alphanumeric),
            ("Ac\u{200B}me", SenderError::Alphanumeric),
            ("Acme\n", SenderError::Alphanumeric),
            ("tel:Acme", SenderError::Phone(PhoneError::NotE164)),
        ];
        for (input, expected) in cases {
            let got = SenderId::parse(input);
            assert_eq!(got, Err(expected), "{input:?}");
        }
        assert_eq!(SenderError::Alphanumeric.code(), "invalid_sender");
    }

    #[test]
    fn serde_round_trips_in_full() {
        for input in ["+14155550199", "Acme"] {
            let s = SenderId::parse(input).expect("valid");
            let json = serde_json::to_string(&s).expect("ser");
            assert_eq!(json, format!("\"{input}\""));
            let back: SenderId = serde_json::from_str(&json).expect("de");
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<SenderId>(r#""toolongsenderid""#).is_err());
    }
}
