//! Typed, prefixed resource ids (`msg_…`, `key_…`, …).
//!
//! A fresh id is its prefix followed by 24 base62 characters: 9 encode the creation time in
//! unix milliseconds, 15 are random. The alphabet is in ASCII order and the time part is fixed
//! width, so ids of one type sort by creation time as plain strings — which lets the store
//! page "newest first" by id alone. Fifteen random base62 characters carry about 89 bits, so
//! ids are not guessable even by someone who knows when a resource was created.
//!
//! Ids minted by one process within the same millisecond still sort in the order they were
//! minted: the random part of the next one steps forward from the last by a random amount
//! (up to 2^32, so the next id cannot be guessed from this one). One request can write
//! several rows within a millisecond (a key rotated and then revoked, say), and "newest
//! first" must list them in that order. Ids of different processes in the same
//! millisecond sort randomly among themselves.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt;

/// Base62 digits in ASCII order: lexicographic order of encoded strings equals numeric order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Width of the time part of a fresh id.
pub const TIME_CHARS: usize = 9;
/// Width of the random part of a fresh id.
pub const RANDOM_CHARS: usize = 15;
/// Longest body (the part after the prefix) [`parse`](MessageId::parse) accepts.
pub const MAX_ID_BODY_CHARS: usize = 64;

/// 62^9 - 1: the largest millisecond timestamp the time part can hold (year ~430 000).
const MAX_TIME_MS: u64 = 13_537_086_546_263_551;

/// Why a string is not an id of the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not start with the type's prefix, e.g. a `key_` id where a `msg_` id
    /// was expected.
    #[error("id must start with \"{expected}\"")]
    WrongPrefix {
        /// The prefix that was expected.
        expected: &'static str,
    },
    /// The part after the prefix is empty, too long or has characters outside `[0-9A-Za-z_]`.
    #[error(
        "id is malformed: expected \"{prefix}\" followed by 1 to 64 characters of [0-9A-Za-z_]"
    )]
    Malformed {
        /// The prefix of the expected id type.
        prefix: &'static str,
    },
}

impl IdError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        "invalid_id"
    }
}

/// Behaviour shared by every id type, for code that is generic over resources.
pub trait PrefixedId: Sized {
    /// The prefix including its underscore, e.g. `"msg_"`.
    const PREFIX: &'static str;
    /// Validates an id from untrusted input.
    fn parse(s: &str) -> Result<Self, IdError>;
    /// Wraps a value read back from our own storage without validating it.
    fn from_trusted(s: String) -> Self;
    /// The id as a string, prefix included.
    fn as_str(&self) -> &str;
}

/// Checks `s` against `prefix` + 1..=64 characters of `[0-9A-Za-z_]`.
fn validate(prefix: &'static str, s: &str) -> Result<(), IdError> {
    let Some(body) = s.strip_prefix(prefix) else {
        return Err(IdError::WrongPrefix { expected: prefix });
    };
    let well_formed = !body.is_empty()
        && body.len() <= MAX_ID_BODY_CHARS
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if well_formed {
        Ok(())
    } else {
        Err(IdError::Malformed { prefix })
    }
}

fn now_unix_ms() -> u64 {
    // A clock before 1970 is a broken host, not a reason to fail minting an id: clamp to 0.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// 62^15: the values the random part can take.
const RANDOM_SPAN: u128 = 62u128.pow(RANDOM_CHARS as u32);

/// The time and random part of the last id this process minted with [`fresh`].
static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

/// A new id for now, after every id this process minted before (see the module docs).
fn fresh(prefix: &str) -> String {
    let now = now_unix_ms().min(MAX_TIME_MS);
    let mut rng = rand::rng();
    let (ms, random) = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        // A new millisecond starts in the lower half, leaving the upper half for the
        // steps of ids minted in the same millisecond.
        let next = if now > last.0 {
            (now, rng.random_range(0..RANDOM_SPAN / 2))
        } else {
            // The same millisecond (or the clock stepped back): step forward from the last.
            let step = rng.random_range(1..=u128::from(u32::MAX));
            match last.1.checked_add(step).filter(|r| *r < RANDOM_SPAN) {
                Some(r) => (last.0, r),
                None => (last.0 + 1, rng.random_range(0..RANDOM_SPAN / 2)),
            }
        };
        *last = next;
        next
    };
    generate(prefix, ms, random)
}

/// Builds `prefix` + 9 base62 time characters + 15 base62 characters of `random` (below
/// [`RANDOM_SPAN`]).
fn generate(prefix: &str, unix_ms: u64, random: u128) -> String {
    let mut out = String::with_capacity(prefix.len() + TIME_CHARS + RANDOM_CHARS);
    out.push_str(prefix);

    let mut time = [b'0'; TIME_CHARS];
    let mut rest = unix_ms.min(MAX_TIME_MS);
    for slot in time.iter_mut().rev() {
        *slot = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    out.extend(time.iter().map(|&b| char::from(b)));

    let mut digits = [b'0'; RANDOM_CHARS];
    let mut rest = random;
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    out.extend(digits.iter().map(|&b| char::from(b)));
    out
}

/// Reads back the creation time of a fresh-format id body.
fn decode_time(body: &str) -> Option<u64> {
    let time = body.get(..TIME_CHARS)?;
    if body.len() != TIME_CHARS + RANDOM_CHARS {
        return None;
    }
    time.bytes().try_fold(0u64, |acc, b| {
        let digit = BASE62.iter().position(|&c| c == b)? as u64;
        Some(acc * 62 + digit)
    })
}

/// Declares one id newtype with its prefix.
macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix including its underscore.
            pub const PREFIX: &'static str = $prefix;

            /// Mints a fresh id stamped with the current time.
            #[expect(
                clippy::new_without_default,
                reason = "a Default that mints a random id would surprise derive(Default) users"
            )]
            pub fn new() -> Self {
                Self(fresh($prefix))
            }

            /// Mints a fresh id stamped with the given unix time in milliseconds; for
            /// building pagination bounds and for tests.
            pub fn with_timestamp(unix_ms: u64) -> Self {
                Self(generate($prefix, unix_ms, rand::rng().random_range(0..RANDOM_SPAN)))
            }

            /// Validates an id from untrusted input.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate($prefix, s)?;
                Ok(Self(s.to_owned()))
            }

            /// Wraps a value read back from our own storage without validating it.
            pub fn from_trusted(s: String) -> Self {
                Self(s)
            }

            /// The id as a string, prefix included.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string, prefix included.
            pub fn into_string(self) -> String {
                self.0
            }

            /// The creation time in unix milliseconds, for ids minted by [`Self::new`];
            /// `None` for ids of another shape.
            pub fn timestamp_ms(&self) -> Option<u64> {
                decode_time(self.0.strip_prefix($prefix)?)
            }
        }

        impl PrefixedId for $name {
            const PREFIX: &'static str = $prefix;

            fn parse(s: &str) -> Result<Self, IdError> {
                $name::parse(s)
            }

            fn from_trusted(s: String) -> Self {
                $name::from_trusted(s)
            }

            fn as_str(&self) -> &str {
                $name::as_str(self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.0).finish()
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(deserializer)?;
                validate($prefix, &s).map_err(::serde::de::Error::custom)?;
                Ok(Self(s))
            }
        }
    };
}

prefixed_id!(
    /// A tenant (`tnt_…`).
    TenantId,
    "tnt_"
);
prefixed_id!(
    /// An app (`app_…`).
    AppId,
    "app_"
);
prefixed_id!(
    /// An API key record (`key_…`); not the key itself.
    KeyId,
    "key_"
);
prefixed_id!(
    /// An outbound message (`msg_…`).
    MessageId,
    "msg_"
);
prefixed_id!(
    /// A provider connection (`conn_…`).
    ConnectionId,
    "conn_"
);
prefixed_id!(
    /// An inbound (MO) message (`inb_…`).
    InboundId,
    "inb_"
);
prefixed_id!(
    /// An event, also the webhook id (`evt_…`).
    EventId,
    "evt_"
);
prefixed_id!(
    /// A queue job (`job_…`).
    JobId,
    "job_"
);
prefixed_id!(
    /// A webhook endpoint (`whe_…`).
    WebhookEndpointId,
    "whe_"
);
prefixed_id!(
    /// A webhook delivery (`dlv_…`).
    DeliveryId,
    "dlv_"
);
prefixed_id!(
    /// A consent record (`cns_…`).
    ConsentId,
    "cns_"
);
prefixed_id!(
    /// A suppression (`sup_…`).
    SuppressionId,
    "sup_"
);
prefixed_id!(
    /// An audit event (`aud_…`).
    AuditEventId,
    "aud_"
);

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn max_time_constant_is_62_pow_9_minus_1() {
        assert_eq!(MAX_TIME_MS, 62u64.pow(9) - 1);
    }

    #[test]
    fn ids_minted_in_one_millisecond_keep_their_order() {
        // Thousands of ids a millisecond: each sorts after the one before, none repeats.
        let ids: Vec<String> = (0..20_000)
            .map(|_| AuditEventId::new().into_string())
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn fresh_id_shape() {
        let id = MessageId::new();
        let s = id.as_str();
        assert!(s.starts_with("msg_"));
        assert_eq!(s.len(), 4 + TIME_CHARS + RANDOM_CHARS);
        assert!(s[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(MessageId::parse(s).as_ref(), Ok(&id));
    }

    #[test]
    fn every_type_has_its_prefix() {
        let fresh = [
            TenantId::new().into_string(),
            AppId::new().into_string(),
            KeyId::new().into_string(),
            MessageId::new().into_string(),
            ConnectionId::new().into_string(),
            InboundId::new().into_string(),
            EventId::new().into_string(),
            JobId::new().into_string(),
            WebhookEndpointId::new().into_string(),
            DeliveryId::new().into_string(),
            ConsentId::new().into_string(),
            SuppressionId::new().into_string(),
            AuditEventId::new().into_string(),
        ];
        let prefixes = [
            "tnt_", "app_", "key_", "msg_", "conn_", "inb_", "evt_", "job_", "whe_", "dlv_",
            "cns_", "sup_", "aud_",
        ];
        for (id, prefix) in fresh.iter().zip(prefixes) {
            assert!(id.starts_with(prefix), "{id} lacks {prefix}");
            assert_eq!(id.len(), prefix.len() + 24);
        }
        assert_eq!(ConnectionId::PREFIX, "conn_");
        assert_eq!(<SuppressionId as PrefixedId>::PREFIX, "sup_");
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let times = [
            0u64,
            1,
            61,
            62,
            999,
            1_000_000,
            1_700_000_000_000,
            1_700_000_000_001,
            1_700_000_060_000,
            4_102_444_800_000,
            MAX_TIME_MS,
        ];
        let ids: Vec<MessageId> = times
            .iter()
            .map(|&t| MessageId::with_timestamp(t))
            .collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
            assert!(pair[0].as_str() < pair[1].as_str());
        }
        for (id, t) in ids.iter().zip(times) {
            assert_eq!(id.timestamp_ms(), Some(t));
        }
    }

    #[test]
    fn time_part_saturates_instead_of_overflowing() {
        let id = EventId::with_timestamp(u64::MAX);
        assert_eq!(&id.as_str()[4..13], "zzzzzzzzz");
        assert_eq!(id.timestamp_ms(), Some(MAX_TIME_MS));
    }

    #[test]
    fn fresh_ids_carry_now() {
        let before = now_unix_ms();
        let id = JobId::new();
        let after = now_unix_ms();
        let t = id.timestamp_ms().expect("fresh id has a timestamp");
        assert!((before..=after).contains(&t));
    }

    #[test]
    fn random_part_differs() {
        let ids: HashSet<String> = (0..2000)
            .map(|_| MessageId::with_timestamp(42).into_string())
            .collect();
        assert_eq!(ids.len(), 2000);
    }

    #[test]
    fn parse_table() {
        let long_ok = format!("msg_{}", "a".repeat(64));
        let too_long = format!("msg_{}", "a".repeat(65));
        let cases: &[(&str, Result<(), IdError>)] = &[
            ("msg_1", Ok(())),
            ("msg_abcXYZ019", Ok(())),
            ("msg_with_underscores_", Ok(())),
            (&long_ok, Ok(())),
            ("msg_", Err(IdError::Malformed { prefix: "msg_" })),
            (&too_long, Err(IdError::Malformed { prefix: "msg_" })),
            ("msg_abc-def", Err(IdError::Malformed { prefix: "msg_" })),
            ("msg_abc def", Err(IdError::Malformed { prefix: "msg_" })),
            ("msg_abc/../x", Err(IdError::Malformed { prefix: "msg_" })),
            ("msg_é", Err(IdError::Malformed { prefix: "msg_" })),
            ("msg_abc\0", Err(IdError::Malformed { prefix: "msg_" })),
            ("MSG_abc", Err(IdError::WrongPrefix { expected: "msg_" })),
            ("key_abc", Err(IdError::WrongPrefix { expected: "msg_" })),
            ("msgabc", Err(IdError::WrongPrefix { expected: "msg_" })),
            ("", Err(IdError::WrongPrefix { expected: "msg_" })),
            (" msg_abc", Err(IdError::WrongPrefix { expected: "msg_" })),
        ];
        for (input, expected) in cases {
            let got = MessageId::parse(input).map(|_| ());
            assert_eq!(&got, expected, "input {input:?}");
            if let Err(e) = got {
                assert_eq!(e.code(), "invalid_id");
            }
        }
    }

    #[test]
    fn wrong_type_is_refused() {
        let key = KeyId::new();
        assert_eq!(
            MessageId::parse(key.as_str()),
            Err(IdError::WrongPrefix { expected: "msg_" })
        );
        // "conn_" must not be mistaken for a shorter prefix sharing its start.
        assert!(ConsentId::parse("conn_abc").is_err());
    }

    #[test]
    fn display_debug_fromstr() {
        let id = AppId::parse("app_abc123").expect("valid");
        assert_eq!(id.to_string(), "app_abc123");
        assert_eq!(format!("{id:?}"), r#"AppId("app_abc123")"#);
        let parsed: AppId = "app_abc123".parse().expect("valid");
        assert_eq!(parsed, id);
        assert!("tnt_abc".parse::<AppId>().is_err());
    }

    #[test]
    fn serde_is_a_plain_validated_string() {
        let id = WebhookEndpointId::parse("whe_abc").expect("valid");
        assert_eq!(serde_json::to_string(&id).expect("ser"), r#""whe_abc""#);
        let back: WebhookEndpointId = serde_json::from_str(r#""whe_abc""#).expect("de");
        assert_eq!(back, id);
        assert!(serde_json::from_str::<WebhookEndpointId>(r#""dlv_abc""#).is_err());
        assert!(serde_json::from_str::<WebhookEndpointId>(r#""whe_""#).is_err());
        assert!(serde_json::from_str::<WebhookEndpointId>("17").is_err());
    }

    #[test]
    fn from_trusted_skips_validation() {
        let id = TenantId::from_trusted("legacy-id".to_owned());
        assert_eq!(id.as_str(), "legacy-id");
        assert_eq!(id.timestamp_ms(), None);
    }

    #[test]
    fn timestamp_of_foreign_shapes_is_none() {
        let cases = [
            "msg_short",
            "msg_abcdefghijklmnopqrstuvwxyz",
            "msg_____________________",
        ];
        for s in cases {
            let id = MessageId::parse(s).expect("valid");
            assert_eq!(id.timestamp_ms(), None, "{s}");
        }
    }
}
