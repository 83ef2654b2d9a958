//! Standard Webhooks signing (<https://www.standardwebhooks.com>).
//!
//! The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, the signature is
//! `v1,` + base64(HMAC-SHA256(secret, content)), and during a secret rotation the
//! `webhook-signature` header carries several signatures separated by spaces. Matching the
//! specification byte for byte is what lets receivers verify Portcullis deliveries with the
//! official `standardwebhooks` libraries unchanged.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::CryptoError;
use crate::random;
use crate::secret::Secret;

/// Prefix of the textual form of a secret.
pub const WHSEC_PREFIX: &str = "whsec_";

/// How far a `webhook-timestamp` may be from the receiver's clock (five minutes, as the
/// specification and the API contract say).
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// Length of secrets [`WebhookSecret::generate`] creates.
pub const SECRET_LEN: usize = 32;

// The specification recommends secrets of 24 to 64 bytes; shorter ones are too weak to accept
// and longer ones are not interoperable with every library.
const MIN_SECRET_LEN: usize = 24;
const MAX_SECRET_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// An app's webhook signing secret: raw bytes, zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct WebhookSecret {
    bytes: Vec<u8>,
}

impl WebhookSecret {
    /// A new secret of [`SECRET_LEN`] random bytes from the operating system's CSPRNG.
    #[must_use]
    pub fn generate() -> WebhookSecret {
        let mut bytes = vec![0u8; SECRET_LEN];
        random::fill(&mut bytes);
        WebhookSecret { bytes }
    }

    /// The form shown to users and accepted by the official libraries: `whsec_` + base64.
    #[must_use]
    pub fn to_whsec_string(&self) -> Secret<String> {
        let mut s = String::with_capacity(WHSEC_PREFIX.len() + 4 * SECRET_LEN.div_ceil(3) + 4);
        s.push_str(WHSEC_PREFIX);
        STANDARD.encode_string(&self.bytes, &mut s);
        Secret::new(s)
    }

    /// Parses `whsec_<base64>`, or the bare base64 as the official libraries also accept.
    /// Surrounding whitespace and missing `=` padding are tolerated.
    ///
    /// # Errors
    /// [`CryptoError::InvalidWebhookSecret`] if the text is not base64 or decodes to fewer than
    /// 24 or more than 64 bytes.
    pub fn from_whsec(s: &str) -> Result<WebhookSecret, CryptoError> {
        let s = s.trim();
        let b64 = s.strip_prefix(WHSEC_PREFIX).unwrap_or(s);
        let bytes = STANDARD_PAD_INDIFFERENT.decode(b64).map_err(|_| {
            CryptoError::InvalidWebhookSecret("it is not valid standard base64".to_owned())
        })?;
        let secret = WebhookSecret { bytes };
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.bytes.len()) {
            return Err(CryptoError::InvalidWebhookSecret(format!(
                "it decodes to {} bytes",
                secret.bytes.len()
            )));
        }
        Ok(secret)
    }

    /// Builds a secret from raw bytes (for example after opening a sealed column).
    ///
    /// # Errors
    /// [`CryptoError::InvalidWebhookSecret`] if `bytes` is not 24 to 64 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<WebhookSecret, CryptoError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(CryptoError::InvalidWebhookSecret(format!(
                "it is {} bytes long",
                bytes.len()
            )));
        }
        Ok(WebhookSecret {
            bytes: bytes.to_vec(),
        })
    }

    /// The raw key bytes, e.g. to seal them for storage.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(&self.bytes).expect("HMAC takes any key size");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// The `webhook-signature` value for one secret: `v1,<base64>`.
#[must_use]
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(secret.mac(msg_id, timestamp, body))
    )
}

/// The `webhook-signature` value during a rotation: one `v1,` signature per secret, separated
/// by spaces, so receivers holding either the old or the new secret accept the delivery.
#[must_use]
pub fn sign_all(secrets: &[WebhookSecret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a `webhook-signature` header as a receiver would: true if the timestamp is within
/// `tolerance_secs` of `now_unix` (either direction, so neither stale replays nor post-dated
/// messages pass) and any `v1,` signature in the header matches any of `secrets`.
///
/// Signatures with other version tags are ignored, as the specification requires. Every
/// candidate is compared against every secret in constant time, without stopping at the first
/// match.
#[must_use]
pub fn verify(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    signature_header: &str,
    now_unix: i64,
    tolerance_secs: i64,
) -> bool {
    // `abs_diff` cannot overflow, so hostile timestamps such as i64::MIN are simply rejected.
    let Ok(tolerance) = u64::try_from(tolerance_secs) else {
        return false;
    };
    if now_unix.abs_diff(timestamp) > tolerance {
        return false;
    }

    let expected: Vec<Zeroizing<[u8; 32]>> = secrets
        .iter()
        .map(|s| Zeroizing::new(s.mac(msg_id, timestamp, body)))
        .collect();

    let mut matched = Choice::from(0);
    for candidate in signature_header.split(' ') {
        let Some(("v1", b64)) = candidate.split_once(',') else {
            continue;
        };
        let Ok(presented) = STANDARD.decode(b64) else {
            continue;
        };
        for mac in &expected {
            matched |= mac.as_slice().ct_eq(&presented);
        }
    }
    matched.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks specification and used by the
    // official libraries' test suites.
    const KAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const KAT_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const KAT_TS: i64 = 1_614_265_330;
    const KAT_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const KAT_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn kat_secret() -> WebhookSecret {
        WebhookSecret::from_whsec(KAT_SECRET).unwrap()
    }

    #[test]
    fn known_answer() {
        let secret = kat_secret();
        assert_eq!(sign(&secret, KAT_ID, KAT_TS, KAT_BODY), KAT_SIG);
        assert!(verify(
            &[secret],
            KAT_ID,
            KAT_TS,
            KAT_BODY,
            KAT_SIG,
            KAT_TS,
            DEFAULT_TOLERANCE_SECS
        ));
    }

    #[test]
    fn secret_without_prefix_is_the_same_secret() {
        let bare = WebhookSecret::from_whsec("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(bare.as_bytes(), kat_secret().as_bytes());
        assert_eq!(bare.to_whsec_string().expose(), KAT_SECRET);
    }

    #[test]
    fn generated_secret_roundtrips() {
        let s = WebhookSecret::generate();
        assert_eq!(s.as_bytes().len(), SECRET_LEN);
        let text = s.to_whsec_string();
        assert!(text.expose().starts_with("whsec_"));
        let back = WebhookSecret::from_whsec(text.expose()).unwrap();
        assert_eq!(back.as_bytes(), s.as_bytes());
        assert_eq!(
            WebhookSecret::from_bytes(s.as_bytes()).unwrap().as_bytes(),
            s.as_bytes()
        );
        assert_ne!(WebhookSecret::generate().as_bytes(), s.as_bytes());
    }

    #[test]
    fn bad_secrets_are_rejected() {
        for bad in [
            "",
            "whsec_",
            "whsec_!!!!",
            "whsec_AAAA",                                     // 3 bytes
            &format!("whsec_{}", STANDARD.encode([1u8; 23])), // too short
            &format!("whsec_{}", STANDARD.encode([1u8; 65])), // too long
        ] {
            let err = WebhookSecret::from_whsec(bad).unwrap_err();
            assert!(matches!(err, CryptoError::InvalidWebhookSecret(_)), "{bad}");
        }
        assert!(WebhookSecret::from_bytes(&[0u8; 23]).is_err());
        assert!(WebhookSecret::from_bytes(&[0u8; 65]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let s = kat_secret();
        let dbg = format!("{s:?}");
        assert_eq!(dbg, "WebhookSecret([REDACTED])");
        assert_eq!(format!("{:?}", s.to_whsec_string()), "Secret([REDACTED])");
    }

    #[test]
    fn rotation_two_secrets() {
        let old = kat_secret();
        let new = WebhookSecret::generate();
        let header = sign_all(&[new.clone(), old.clone()], KAT_ID, KAT_TS, KAT_BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.ends_with(KAT_SIG));

        let check = |secrets: &[WebhookSecret], header: &str| {
            verify(
                secrets,
                KAT_ID,
                KAT_TS,
                KAT_BODY,
                header,
                KAT_TS + 10,
                DEFAULT_TOLERANCE_SECS,
            )
        };
        // A receiver with only one of the secrets accepts the rotated header.
        assert!(check(std::slice::from_ref(&old), &header));
        assert!(check(std::slice::from_ref(&new), &header));
        // A receiver holding both secrets accepts a header signed by either.
        assert!(check(&[old.clone(), new.clone()], KAT_SIG));
        let new_only = sign(&new, KAT_ID, KAT_TS, KAT_BODY);
        assert!(check(&[old.clone(), new.clone()], &new_only));
        // An unrelated secret does not.
        assert!(!check(&[WebhookSecret::generate()], &header));
        assert!(!check(&[], &header));
    }

    #[test]
    fn timestamp_tolerance() {
        let s = [kat_secret()];
        let at = |now: i64, tolerance: i64| {
            verify(&s, KAT_ID, KAT_TS, KAT_BODY, KAT_SIG, now, tolerance)
        };
        assert!(at(KAT_TS + 300, 300));
        assert!(!at(KAT_TS + 301, 300), "expired timestamp accepted");
        assert!(at(KAT_TS - 300, 300));
        assert!(!at(KAT_TS - 301, 300), "timestamp from the future accepted");
        assert!(!at(KAT_TS, -1));
        assert!(!at(i64::MAX, 300));
        assert!(!verify(
            &s,
            KAT_ID,
            i64::MIN,
            KAT_BODY,
            KAT_SIG,
            i64::MAX,
            i64::MAX
        ));
    }

    #[test]
    fn tampering_is_rejected() {
        let s = [kat_secret()];
        let ok = |id: &str, ts: i64, body: &[u8], header: &str| {
            verify(&s, id, ts, body, header, KAT_TS, DEFAULT_TOLERANCE_SECS)
        };
        assert!(ok(KAT_ID, KAT_TS, KAT_BODY, KAT_SIG));
        assert!(!ok("msg_other", KAT_TS, KAT_BODY, KAT_SIG));
        assert!(!ok(KAT_ID, KAT_TS + 1, KAT_BODY, KAT_SIG));
        assert!(!ok(KAT_ID, KAT_TS, br#"{"test": 2432232315}"#, KAT_SIG));
        // Wrong version tag, missing tag, garbage and truncated signatures.
        assert!(!ok(
            KAT_ID,
            KAT_TS,
            KAT_BODY,
            &KAT_SIG.replace("v1,", "v2,")
        ));
        assert!(!ok(KAT_ID, KAT_TS, KAT_BODY, &KAT_SIG[3..]));
        assert!(!ok(KAT_ID, KAT_TS, KAT_BODY, ""));
        assert!(!ok(KAT_ID, KAT_TS, KAT_BODY, "v1,"));
        assert!(!ok(KAT_ID, KAT_TS, KAT_BODY, "v1,not-base64!"));
        assert!(!ok(KAT_ID, KAT_TS, KAT_BODY, &KAT_SIG[..KAT_SIG.len() - 4]));
        // Unknown versions and junk next to a valid signature do not hide it.
        assert!(ok(
            KAT_ID,
            KAT_TS,
            KAT_BODY,
            &format!("v1a,AAAA junk {KAT_SIG}")
        ));
    }
}
