//! Short-lived access tokens: JSON Web Tokens (RFC 7519) signed HS256 with the keyring's
//! token-signing key.
//!
//! Written here rather than with a JWT crate because the signing key never leaves the
//! [`Keyring`] (a crate would need its bytes), and because the one format we issue is also
//! the only one we accept: the header must be byte-for-byte ours, so `alg: none`, algorithm
//! confusion and `kid`/`jku` tricks have nothing to parse. Claims are checked after the MAC.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::Secret;
use crate::keyring::Keyring;

/// `{"alg":"HS256","typ":"JWT"}`, the only header issued or accepted.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
const ISSUER: &str = "portcullis";
/// Longest token accepted; ours are ~350 bytes.
const MAX_TOKEN_LEN: usize = 1024;

/// What a token says: which key minted it, for which app, with which role, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Always `portcullis`.
    pub iss: String,
    /// The minting API key's id (`key_…`).
    pub sub: String,
    /// App id.
    pub app: String,
    /// Tenant id.
    pub tnt: String,
    /// Role granted (the key's, or a narrower one asked for).
    pub role: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

impl AccessClaims {
    /// Claims for a token minted by `key_id` now, valid `ttl_secs`.
    #[must_use]
    pub fn new(
        key_id: &str,
        app: &str,
        tenant: &str,
        role: &str,
        now_secs: i64,
        ttl_secs: i64,
    ) -> Self {
        AccessClaims {
            iss: ISSUER.to_owned(),
            sub: key_id.to_owned(),
            app: app.to_owned(),
            tnt: tenant.to_owned(),
            role: role.to_owned(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
            jti: crate::random_token("jti_", 22).expose().clone(),
        }
    }
}

/// Whether a bearer credential looks like one of our access tokens (rather than an API key).
#[must_use]
pub fn is_access_token(s: &str) -> bool {
    s.starts_with(HEADER) && s.as_bytes().get(HEADER.len()) == Some(&b'.')
}

/// Signs `claims` into a compact JWT.
#[must_use]
pub fn issue(keyring: &Keyring, claims: &AccessClaims) -> Secret<String> {
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    let mut token = String::with_capacity(400);
    token.push_str(HEADER);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let mac = keyring.sign_token(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(mac, &mut token);
    Secret::new(token)
}

/// The claims of a token we issued whose MAC verifies and which has not expired at
/// `now_secs`; `None` for anything else, with no reason given (every failure is the same 401).
#[must_use]
pub fn verify(keyring: &Keyring, token: &str, now_secs: i64) -> Option<AccessClaims> {
    if token.len() > MAX_TOKEN_LEN || !is_access_token(token) {
        return None;
    }
    let (signed, mac_b64) = token.rsplit_once('.')?;
    let payload_b64 = signed.strip_prefix(HEADER)?.strip_prefix('.')?;
    let mac = URL_SAFE_NO_PAD.decode(mac_b64).ok()?;
    if !keyring.verify_token_mac(signed.as_bytes(), &mac) {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
    let claims: AccessClaims = serde_json::from_slice(&payload).ok()?;
    (claims.iss == ISSUER && claims.iat <= now_secs + 60 && now_secs < claims.exp).then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    fn claims(now: i64) -> AccessClaims {
        AccessClaims::new("key_1", "app_1", "tnt_1", "sender", now, 900)
    }

    #[test]
    fn the_header_constant_is_what_it_claims() {
        let h = URL_SAFE_NO_PAD.decode(HEADER).unwrap();
        assert_eq!(h, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    #[test]
    fn round_trip_and_expiry() {
        let k = Keyring::new(&MasterKey::generate());
        let c = claims(1_000);
        let t = issue(&k, &c);
        assert!(is_access_token(t.expose()));
        assert_eq!(verify(&k, t.expose(), 1_000), Some(c.clone()));
        assert_eq!(verify(&k, t.expose(), 1_899), Some(c));
        assert_eq!(verify(&k, t.expose(), 1_900), None, "expired");
        assert_eq!(verify(&k, t.expose(), 800), None, "issued in the future");
    }

    #[test]
    fn other_keys_tampering_and_other_algorithms_fail() {
        let k = Keyring::new(&MasterKey::generate());
        let other = Keyring::new(&MasterKey::generate());
        let t = issue(&k, &claims(1_000));
        let t = t.expose();
        assert_eq!(verify(&other, t, 1_000), None);
        // Swap in a payload naming another role, keeping the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&AccessClaims {
                role: "admin".into(),
                ..claims(1_000)
            })
            .unwrap(),
        );
        parts[1] = &forged;
        assert_eq!(verify(&k, &parts.join("."), 1_000), None);
        // alg=none with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(verify(&k, &none, 1_000), None);
        assert_eq!(verify(&k, &format!("{t}x"), 1_000), None);
        assert_eq!(verify(&k, "", 1_000), None);
        assert_eq!(verify(&k, &"a".repeat(5000), 1_000), None);
    }
}
