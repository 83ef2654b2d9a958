//! Outbound message bodies.
//!
//! A body is the most sensitive thing Portcullis handles (one-time codes, account details),
//! so [`MessageBody`] has no `Display` and no `Serialize`, and its `Debug` shows only the
//! length: getting the text out takes an explicit [`MessageBody::as_str`].

use std::fmt;

use crate::encoding::{SegmentInfo, segment_info};

/// The body limit of an app that has not set its own, in Unicode scalar values.
pub const DEFAULT_MAX_BODY_CHARS: usize = 1000;

/// Why a body was refused. Nothing is ever stripped or truncated to make it acceptable: the
/// caller must see exactly what will be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Empty or whitespace only.
    #[error("body must not be empty")]
    Empty,
    /// A control character other than newline or tab.
    #[error(
        "body contains a control character at position {position}; only newline and tab are allowed"
    )]
    ControlCharacter {
        /// Index of the offending character, counted in Unicode scalar values from 0.
        position: usize,
    },
    /// Longer than the app's limit.
    #[error("body is longer than {max} characters")]
    TooLong {
        /// The limit, in Unicode scalar values.
        max: usize,
    },
}

impl BodyError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLong { .. } => "body_too_long",
            BodyError::Empty | BodyError::ControlCharacter { .. } => "invalid_body",
        }
    }
}

/// A validated message body: not blank, no control characters but `\n` and `\t`, at most the
/// app's limit of characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageBody(String);

impl MessageBody {
    /// Validates untrusted text against a limit of `max_chars` Unicode scalar values.
    ///
    /// `\r` is refused like any other control character, `\r\n` included: handsets render a
    /// carriage return inconsistently, and accepting it would mean either sending something
    /// the caller did not see or rewriting their text.
    pub fn parse(input: &str, max_chars: usize) -> Result<MessageBody, BodyError> {
        if input.trim().is_empty() {
            return Err(BodyError::Empty);
        }
        let mut count = 0usize;
        for (position, c) in input.chars().enumerate() {
            if c.is_control() && c != '\n' && c != '\t' {
                return Err(BodyError::ControlCharacter { position });
            }
            count = position + 1;
        }
        if count > max_chars {
            return Err(BodyError::TooLong { max: max_chars });
        }
        Ok(MessageBody(input.to_owned()))
    }

    /// Wraps a body read back from our own (decrypted) storage without re-validating it: an
    /// app's limit may have shrunk since the message was accepted.
    pub fn from_trusted(s: String) -> Self {
        MessageBody(s)
    }

    /// The text. Never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as an owned string. Never log it.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// Length in Unicode scalar values, the unit of the body limit.
    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }

    /// The SMS encoding and segment count this body needs.
    pub fn segment_info(&self) -> SegmentInfo {
        segment_info(&self.0)
    }
}

impl fmt::Debug for MessageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageBody(<{} chars redacted>)", self.char_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let max = 10;
        let cases: &[(&str, Result<(), BodyError>)] = &[
            ("hello", Ok(())),
            ("ln1\nln2", Ok(())),
            ("a\tb", Ok(())),
            ("0123456789", Ok(())),
            ("éééééééééé", Ok(())),
            ("😀😀😀😀😀😀😀😀😀😀", Ok(())),
            ("  x  ", Ok(())),
            ("\u{202E}rtl", Ok(())),
            ("", Err(BodyError::Empty)),
            ("   ", Err(BodyError::Empty)),
            ("\n\t \n", Err(BodyError::Empty)),
            ("\u{3000}", Err(BodyError::Empty)),
            ("01234567890", Err(BodyError::TooLong { max: 10 })),
            (
                "😀😀😀😀😀😀😀😀😀😀😀",
                Err(BodyError::TooLong { max: 10 }),
            ),
            ("a\rb", Err(BodyError::ControlCharacter { position: 1 })),
            ("a\r\nb", Err(BodyError::ControlCharacter { position: 1 })),
            ("\0abc", Err(BodyError::ControlCharacter { position: 0 })),
            ("éé\u{7}", Err(BodyError::ControlCharacter { position: 2 })),
            (
                "ab\u{1B}[31m",
                Err(BodyError::ControlCharacter { position: 2 }),
            ),
            ("x\u{7F}", Err(BodyError::ControlCharacter { position: 1 })),
            ("x\u{85}", Err(BodyError::ControlCharacter { position: 1 })),
            ("x\u{9B}", Err(BodyError::ControlCharacter { position: 1 })),
            ("x\u{0B}y", Err(BodyError::ControlCharacter { position: 1 })),
            ("x\u{0C}y", Err(BodyError::ControlCharacter { position: 1 })),
            // A control character is reported even when the body is also too long.
            (
                "0123456789\0",
                Err(BodyError::ControlCharacter { position: 10 }),
            ),
        ];
        for (input, expected) in cases {
            let got = MessageBody::parse(input, max).map(|b| {
                assert_eq!(b.as_str(), *input, "never altered");
            });
            assert_eq!(&got, expected, "{input:?}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(BodyError::Empty.code(), "invalid_body");
        assert_eq!(
            BodyError::ControlCharacter { position: 3 }.code(),
            "invalid_body"
        );
        assert_eq!(BodyError::TooLong { max: 5 }.code(), "body_too_long");
    }

    #[test]
    fn default_limit() {
        let ok = "a".repeat(DEFAULT_MAX_BODY_CHARS);
        let long = "a".repeat(DEFAULT_MAX_BODY_CHARS + 1);
        assert!(MessageBody::parse(&ok, DEFAULT_MAX_BODY_CHARS).is_ok());
        assert_eq!(
            MessageBody::parse(&long, DEFAULT_MAX_BODY_CHARS),
            Err(BodyError::TooLong { max: 1000 })
        );
    }

    #[test]
    fn debug_is_redacted() {
        let b = MessageBody::parse("Your code is 481516", 100).expect("valid");
        let dbg = format!("{b:?}");
        assert_eq!(dbg, "MessageBody(<19 chars redacted>)");
        assert!(!dbg.contains("481516"));
        assert_eq!(b.into_inner(), "Your code is 481516");
    }

    #[test]
    fn segment_info_of_body() {
        let b = MessageBody::parse("hi", 100).expect("valid");
        assert_eq!(b.segment_info().segments, 1);
        assert_eq!(b.char_count(), 2);
    }
}
