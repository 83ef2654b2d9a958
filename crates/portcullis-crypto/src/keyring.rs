//! The master key and the keyring derived from it.
//!
//! One master key (32 random bytes, configured as base64) is the only secret an operator has to
//! keep. Every working key is derived from it with HKDF-SHA256 under a distinct label, so a key
//! used for one purpose can never be confused with — or reveal — a key used for another:
//!
//! | purpose                          | HKDF info                      |
//! |----------------------------------|--------------------------------|
//! | sealing columns, key version `n` | `portcullis/data-key/v{n}`     |
//! | blind indexes                    | `portcullis/blind-index/v1`    |
//! | short-lived token MACs           | `portcullis/token-signing/v1`  |
//!
//! # Sealed format
//!
//! `[key version: u8] || nonce (12 bytes) || AES-256-GCM ciphertext || tag (16 bytes)`.
//!
//! The version byte lets a later master-key rotation keep reading rows sealed under an older key
//! while writing new ones under the current key ([`Keyring::with_previous`]); the authenticated
//! data is `version || caller AAD`, so the version cannot be changed without detection either.
//! Callers pass AAD naming the row and column (`b"messages.body:msg_123"`), which binds each
//! ciphertext to its place: a value copied into another row or column fails to open.

use core::fmt;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::CryptoError;
use crate::random;
use crate::secret::Secret;

/// Length of a master key and of every derived key, in bytes.
pub const KEY_LEN: usize = 32;

/// The key version [`Keyring::new`] seals under.
pub const INITIAL_KEY_VERSION: u8 = 1;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;

/// The smallest sealed value: header plus tag, for an empty plaintext.
pub const SEALED_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

// A fixed, public salt: HKDF's extract step only needs the salt to be independent of the input
// key, and a domain string also separates Portcullis keys from any other use of the same bytes.
const HKDF_SALT: &[u8] = b"portcullis keyring v1";
const INFO_BLIND_INDEX: &[u8] = b"portcullis/blind-index/v1";
const INFO_TOKEN_SIGNING: &[u8] = b"portcullis/token-signing/v1";

type HmacSha256 = Hmac<Sha256>;

/// The root secret: 32 random bytes, zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
}

impl MasterKey {
    /// Parses a master key from standard base64. Surrounding whitespace is ignored (a key file
    /// ends in a newline) and so is missing `=` padding (some tools strip it).
    ///
    /// # Errors
    /// [`CryptoError::InvalidMasterKey`] if the text is not base64 or does not decode to exactly
    /// 32 bytes. The message explains the expected format and never echoes the input.
    pub fn from_base64(s: &str) -> Result<MasterKey, CryptoError> {
        let decoded = Zeroizing::new(STANDARD_PAD_INDIFFERENT.decode(s.trim()).map_err(|_| {
            CryptoError::InvalidMasterKey("it is not valid standard base64".to_owned())
        })?);
        if decoded.len() != KEY_LEN {
            return Err(CryptoError::InvalidMasterKey(format!(
                "it decodes to {} bytes, not {KEY_LEN}",
                decoded.len()
            )));
        }
        let mut key = MasterKey {
            bytes: [0; KEY_LEN],
        };
        key.bytes.copy_from_slice(&decoded);
        Ok(key)
    }

    /// Generates a fresh master key from the operating system's CSPRNG.
    #[must_use]
    pub fn generate() -> MasterKey {
        let mut key = MasterKey {
            bytes: [0; KEY_LEN],
        };
        random::fill(&mut key.bytes);
        key
    }

    /// The key as standard base64, the form [`MasterKey::from_base64`] reads back.
    #[must_use]
    pub fn to_base64(&self) -> Secret<String> {
        Secret::new(STANDARD.encode(self.bytes))
    }

    fn derive(&self, info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.bytes);
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        hkdf.expand(info, okm.as_mut_slice())
            .expect("32 bytes is far below HKDF-SHA256's output limit");
        okm
    }

    fn derive_data_key(&self, version: u8) -> Aes256Gcm {
        let info = format!("portcullis/data-key/v{version}");
        let key = self.derive(info.as_bytes());
        Aes256Gcm::new((&*key).into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

/// A 32-byte HMAC key that wipes itself on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct MacKey([u8; KEY_LEN]);

impl MacKey {
    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

/// All working keys, derived once from the master key(s) at start-up.
///
/// Share one instance (for example behind an `Arc`); it is cheap to use and holds no mutable
/// state. Cipher states are wiped when it drops.
#[derive(Clone)]
pub struct Keyring {
    current_version: u8,
    /// Small (one entry per master key still in use), so a linear scan beats a map.
    data_keys: Vec<(u8, Aes256Gcm)>,
    blind_index_key: MacKey,
    token_key: MacKey,
}

impl Keyring {
    /// A keyring with a single master key, sealing under version [`INITIAL_KEY_VERSION`].
    #[must_use]
    pub fn new(master: &MasterKey) -> Keyring {
        Keyring {
            current_version: INITIAL_KEY_VERSION,
            data_keys: vec![(
                INITIAL_KEY_VERSION,
                master.derive_data_key(INITIAL_KEY_VERSION),
            )],
            blind_index_key: MacKey(*master.derive(INFO_BLIND_INDEX)),
            token_key: MacKey(*master.derive(INFO_TOKEN_SIGNING)),
        }
    }

    /// A keyring for master-key rotation: seals under `current` as `current_version`, and still
    /// opens values sealed under each `(version, key)` in `previous`.
    ///
    /// Blind indexes and token MACs always use the current master key, so after a rotation the
    /// stored blind indexes must be recomputed (and old values re-sealed, see
    /// [`Keyring::needs_reseal`]) before a previous key is removed.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeyVersion`] if any version is 0 (reserved, so that a zero-filled
    /// buffer is never mistaken for a sealed value) or appears twice.
    pub fn with_previous(
        current: &MasterKey,
        current_version: u8,
        previous: &[(u8, MasterKey)],
    ) -> Result<Keyring, CryptoError> {
        let mut keyring = Keyring::new(current);
        if current_version != INITIAL_KEY_VERSION {
            keyring.current_version = current_version;
            keyring.data_keys = vec![(current_version, current.derive_data_key(current_version))];
        }
        for (version, key) in previous {
            if keyring.data_keys.iter().any(|(v, _)| v == version) {
                return Err(CryptoError::InvalidKeyVersion(format!(
                    "key version {version} is configured more than once"
                )));
            }
            keyring
                .data_keys
                .push((*version, key.derive_data_key(*version)));
        }
        if keyring.data_keys.iter().any(|(v, _)| *v == 0) {
            return Err(CryptoError::InvalidKeyVersion(
                "key version 0 is reserved; number master keys from 1".to_owned(),
            ));
        }
        Ok(keyring)
    }

    /// The version new values are sealed under.
    #[must_use]
    pub fn current_version(&self) -> u8 {
        self.current_version
    }

    /// The key version a sealed value names, without opening it.
    #[must_use]
    pub fn sealed_version(sealed: &[u8]) -> Option<u8> {
        sealed.first().copied()
    }

    /// Whether a sealed value was written under an older key and should be re-sealed by a
    /// rotation job.
    #[must_use]
    pub fn needs_reseal(&self, sealed: &[u8]) -> bool {
        Self::sealed_version(sealed).is_some_and(|v| v != self.current_version)
    }

    fn data_key(&self, version: u8) -> Option<&Aes256Gcm> {
        self.data_keys
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, cipher)| cipher)
    }

    /// Encrypts `plaintext` under the current key, bound to `aad` (name the row and column).
    ///
    /// Nonces are random rather than counters because several instances may write with the same
    /// key and share no state. 96 random bits keep the collision risk negligible up to about
    /// 2^32 seals per key version (NIST SP 800-38D), far beyond one deployment's volume; a
    /// master-key rotation starts a fresh budget.
    ///
    /// # Panics
    /// Only if the OS random generator fails or `plaintext` exceeds AES-GCM's 64 GiB limit.
    #[must_use]
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let version = self.current_version;
        let cipher = self
            .data_key(version)
            .expect("a keyring always holds its current key");
        let nonce: [u8; NONCE_LEN] = random::bytes();

        // Exact capacity: the buffer never reallocates, so no stray copy of the plaintext is
        // left behind in freed memory; it is encrypted where it lies.
        let mut out = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
        out.push(version);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_inout_detached(
                (&nonce).into(),
                &full_aad(version, aad),
                (&mut out[HEADER_LEN..]).into(),
            )
            .expect("plaintext within AES-GCM limits");
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypts a value produced by [`Keyring::seal`] with the same `aad`.
    ///
    /// # Errors
    /// [`CryptoError::SealedTooShort`], [`CryptoError::UnknownKeyVersion`], or
    /// [`CryptoError::Decryption`] when the key, the AAD or any byte does not match.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < SEALED_OVERHEAD {
            return Err(CryptoError::SealedTooShort);
        }
        let version = sealed[0];
        let cipher = self
            .data_key(version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce =
            <&[u8; NONCE_LEN]>::try_from(&header[1..]).map_err(|_| CryptoError::SealedTooShort)?;
        let tag = <&[u8; TAG_LEN]>::try_from(tag).map_err(|_| CryptoError::SealedTooShort)?;

        let mut out = ciphertext.to_vec();
        match cipher.decrypt_inout_detached(
            nonce.into(),
            &full_aad(version, aad),
            out.as_mut_slice().into(),
            tag.into(),
        ) {
            Ok(()) => Ok(out),
            Err(_) => {
                out.zeroize();
                Err(CryptoError::Decryption)
            }
        }
    }

    /// [`Keyring::seal`] for text.
    #[must_use]
    pub fn seal_str(&self, plaintext: &str, aad: &[u8]) -> Vec<u8> {
        self.seal(plaintext.as_bytes(), aad)
    }

    /// [`Keyring::open`] for text sealed with [`Keyring::seal_str`].
    ///
    /// # Errors
    /// As [`Keyring::open`], plus [`CryptoError::InvalidUtf8`].
    pub fn open_string(&self, sealed: &[u8], aad: &[u8]) -> Result<String, CryptoError> {
        let bytes = self.open(sealed, aad)?;
        String::from_utf8(bytes).map_err(|e| {
            e.into_bytes().zeroize();
            CryptoError::InvalidUtf8
        })
    }

    /// A deterministic keyed hash of `value`, for finding rows by a value that is only stored
    /// sealed (for example a recipient's phone number).
    ///
    /// `domain` names what is being indexed (`"recipient.e164"`), so equal values in different
    /// columns give unrelated indexes. It is separated from `value` by a NUL byte and so must not
    /// contain one; use fixed, code-defined strings.
    #[must_use]
    pub fn blind_index(&self, domain: &str, value: &[u8]) -> [u8; 32] {
        debug_assert!(
            !domain.contains('\0'),
            "blind-index domains must not contain NUL"
        );
        let mut mac = self.blind_index_key.mac();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// [`Keyring::blind_index`] as 64 lowercase hex characters, for text columns.
    #[must_use]
    pub fn blind_index_hex(&self, domain: &str, value: &[u8]) -> String {
        to_hex(&self.blind_index(domain, value))
    }

    /// HMAC-SHA256 of `data` under the token-signing key, for short-lived tokens the server
    /// issues and later checks itself.
    #[must_use]
    pub fn sign_token(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.token_key.mac();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Checks a MAC from [`Keyring::sign_token`] in constant time. A MAC of the wrong length is
    /// rejected.
    #[must_use]
    pub fn verify_token_mac(&self, data: &[u8], mac: &[u8]) -> bool {
        let mut expected = self.token_key.mac();
        expected.update(data);
        expected.verify_slice(mac).is_ok()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions: Vec<u8> = self.data_keys.iter().map(|(v, _)| *v).collect();
        f.debug_struct("Keyring")
            .field("current_version", &self.current_version)
            .field("versions", &versions)
            .field("keys", &"[REDACTED]")
            .finish()
    }
}

fn full_aad(version: u8, aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(version);
    full.extend_from_slice(aad);
    full
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring::new(&MasterKey::generate())
    }

    #[test]
    fn shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Keyring>();
        assert_send_sync::<MasterKey>();
    }

    #[test]
    fn seal_open_roundtrip() {
        let k = keyring();
        for plaintext in [&b""[..], b"x", b"hello world", &[0u8; 1000]] {
            let sealed = k.seal(plaintext, b"messages.body:msg_1");
            assert_eq!(sealed.len(), SEALED_OVERHEAD + plaintext.len());
            assert_eq!(sealed[0], INITIAL_KEY_VERSION);
            assert_eq!(k.open(&sealed, b"messages.body:msg_1").unwrap(), plaintext);
        }
    }

    #[test]
    fn string_roundtrip_and_non_utf8() {
        let k = keyring();
        let sealed = k.seal_str("héllo ☃", b"a");
        assert_eq!(k.open_string(&sealed, b"a").unwrap(), "héllo ☃");
        let sealed = k.seal(&[0xff, 0xfe], b"a");
        assert!(matches!(
            k.open_string(&sealed, b"a"),
            Err(CryptoError::InvalidUtf8)
        ));
    }

    #[test]
    fn wrong_aad_fails() {
        let k = keyring();
        let sealed = k.seal(b"+15551234567", b"messages.to:msg_1");
        assert!(matches!(
            k.open(&sealed, b"messages.to:msg_2"),
            Err(CryptoError::Decryption)
        ));
        assert!(k.open(&sealed, b"messages.body:msg_1").is_err());
        assert!(k.open(&sealed, b"").is_err());
    }

    #[test]
    fn every_tampered_byte_fails() {
        let k = keyring();
        let sealed = k.seal(b"secret body", b"aad");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(k.open(&t, b"aad").is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = keyring().seal(b"secret", b"aad");
        assert!(matches!(
            keyring().open(&sealed, b"aad"),
            Err(CryptoError::Decryption)
        ));
    }

    #[test]
    fn truncated_input_errors_without_panicking() {
        let k = keyring();
        let sealed = k.seal(b"secret", b"aad");
        for len in 0..sealed.len() {
            assert!(k.open(&sealed[..len], b"aad").is_err(), "length {len}");
        }
        for len in 0..SEALED_OVERHEAD {
            assert!(matches!(
                k.open(&sealed[..len], b"aad"),
                Err(CryptoError::SealedTooShort)
            ));
        }
    }

    #[test]
    fn unknown_version_errors() {
        let k = keyring();
        let mut sealed = k.seal(b"secret", b"aad");
        sealed[0] = 9;
        assert!(matches!(
            k.open(&sealed, b"aad"),
            Err(CryptoError::UnknownKeyVersion(9))
        ));
    }

    #[test]
    fn nonces_are_unique() {
        let k = keyring();
        let a = k.seal(b"same", b"aad");
        let b = k.seal(b"same", b"aad");
        assert_ne!(a, b);
        assert_ne!(a[1..HEADER_LEN], b[1..HEADER_LEN]);
    }

    #[test]
    fn same_master_key_gives_same_keys() {
        let m = MasterKey::generate();
        let m2 = MasterKey::from_base64(m.to_base64().expose()).unwrap();
        let sealed = Keyring::new(&m).seal(b"v", b"aad");
        assert_eq!(Keyring::new(&m2).open(&sealed, b"aad").unwrap(), b"v");
        assert_eq!(
            Keyring::new(&m).blind_index("d", b"v"),
            Keyring::new(&m2).blind_index("d", b"v")
        );
    }

    #[test]
    fn derived_keys_are_separated() {
        let k = keyring();
        // The token key and the blind-index key must differ even on identical input.
        assert_ne!(k.sign_token(b"x\0y"), k.blind_index("x", b"y"));
    }

    #[test]
    fn blind_index_deterministic_and_domain_separated() {
        let k = keyring();
        let a = k.blind_index("recipient.e164", b"+15551234567");
        assert_eq!(a, k.blind_index("recipient.e164", b"+15551234567"));
        assert_ne!(a, k.blind_index("recipient.e164", b"+15551234568"));
        assert_ne!(a, k.blind_index("suppression.e164", b"+15551234567"));
        // The separator stops ("ab", "c") colliding with ("a", "bc").
        assert_ne!(k.blind_index("ab", b"c"), k.blind_index("a", b"bc"));
        assert_ne!(a, keyring().blind_index("recipient.e164", b"+15551234567"));
        let hex = k.blind_index_hex("recipient.e164", b"+15551234567");
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, to_hex(&a));
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn token_mac() {
        let k = keyring();
        let mac = k.sign_token(b"wst_abc|app_1|exp=123");
        assert!(k.verify_token_mac(b"wst_abc|app_1|exp=123", &mac));
        assert!(!k.verify_token_mac(b"wst_abc|app_1|exp=124", &mac));
        assert!(!k.verify_token_mac(b"wst_abc|app_1|exp=123", &mac[..31]));
        assert!(!k.verify_token_mac(b"wst_abc|app_1|exp=123", &[]));
        assert!(!keyring().verify_token_mac(b"wst_abc|app_1|exp=123", &mac));
    }

    #[test]
    fn master_key_parsing() {
        let m = MasterKey::generate();
        let b64 = m.to_base64();
        assert!(MasterKey::from_base64(b64.expose()).is_ok());
        assert!(MasterKey::from_base64(&format!("  {}\n", b64.expose())).is_ok());
        assert!(MasterKey::from_base64(b64.expose().trim_end_matches('=')).is_ok());
        for bad in [
            "",
            "not base64!!",
            "AAAA",
            // 31 and 33 bytes.
            &STANDARD.encode([7u8; 31]),
            &STANDARD.encode([7u8; 33]),
            // URL-safe alphabet is not standard base64.
            &base64::engine::general_purpose::URL_SAFE.encode([0xfbu8; 32]),
        ] {
            let err = MasterKey::from_base64(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("32 random bytes"), "{msg}");
            assert!(bad.is_empty() || !msg.contains(bad), "error echoes input");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let m = MasterKey::generate();
        let b64 = m.to_base64();
        assert_eq!(format!("{m:?}"), "MasterKey([REDACTED])");
        let k = Keyring::new(&m);
        let dbg = format!("{k:?}");
        assert!(dbg.contains("REDACTED"));
        assert!(!dbg.contains(b64.expose().as_str()));
        assert_eq!(format!("{b64:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn rotation_opens_old_and_seals_new() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let old_ring = Keyring::new(&old);
        let sealed_old = old_ring.seal(b"old value", b"aad");

        let ring = Keyring::with_previous(&new, 2, &[(1, old.clone())]).unwrap();
        assert_eq!(ring.current_version(), 2);
        assert_eq!(ring.open(&sealed_old, b"aad").unwrap(), b"old value");
        assert!(ring.needs_reseal(&sealed_old));

        let sealed_new = ring.seal(b"new value", b"aad");
        assert_eq!(Keyring::sealed_version(&sealed_new), Some(2));
        assert!(!ring.needs_reseal(&sealed_new));
        assert_eq!(ring.open(&sealed_new, b"aad").unwrap(), b"new value");
        assert!(matches!(
            old_ring.open(&sealed_new, b"aad"),
            Err(CryptoError::UnknownKeyVersion(2))
        ));

        // Relabelling an old ciphertext as the new version must not open it.
        let mut relabelled = sealed_old.clone();
        relabelled[0] = 2;
        assert!(ring.open(&relabelled, b"aad").is_err());
    }

    #[test]
    fn rotation_rejects_bad_versions() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert!(Keyring::with_previous(&a, 0, &[]).is_err());
        assert!(Keyring::with_previous(&a, 2, &[(0, b.clone())]).is_err());
        assert!(Keyring::with_previous(&a, 2, &[(2, b.clone())]).is_err());
        assert!(Keyring::with_previous(&a, 2, &[(1, b.clone()), (1, b.clone())]).is_err());
        let same = Keyring::with_previous(&a, 1, &[]).unwrap();
        let sealed = Keyring::new(&a).seal(b"v", b"aad");
        assert_eq!(same.open(&sealed, b"aad").unwrap(), b"v");
    }
}
