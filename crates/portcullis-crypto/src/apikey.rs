//! API keys: `pcl_live_` or `pcl_test_` followed by exactly 32 base62 characters.
//!
//! Keys are stored only as their SHA-256 hash plus the first [`KEY_PREFIX_LEN`] characters,
//! which identify a key to a human (`pcl_live_Ab3d`) without helping anyone use it. A plain
//! hash is enough, unlike for passwords: the 32 random characters carry about 190 bits of
//! entropy, so there is nothing to brute-force and a slow hash would only slow every request.

use core::fmt;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::random;
use crate::secret::Secret;

/// Length of the stored identification prefix: the 9-character mode prefix plus 4 random
/// characters, e.g. `pcl_live_Ab3d`.
pub const KEY_PREFIX_LEN: usize = 13;

/// Number of random base62 characters in a key.
pub const KEY_RANDOM_LEN: usize = 32;

/// Total length of an API key.
pub const API_KEY_LEN: usize = LIVE_PREFIX.len() + KEY_RANDOM_LEN;

const LIVE_PREFIX: &str = "pcl_live_";
const TEST_PREFIX: &str = "pcl_test_";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 248 = 4 × 62 is the largest multiple of 62 that fits in a byte. Bytes at or above it are
/// discarded, so each character is exactly uniform; `b % 62` over all 256 values would make the
/// first 8 characters more likely than the rest.
const BASE62_REJECT_FROM: u8 = 248;

/// Whether a key reaches real providers (`Live`) or only the simulator (`Test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// `pcl_live_…`
    Live,
    /// `pcl_test_…`
    Test,
}

impl KeyMode {
    /// The literal prefix keys of this mode start with: `pcl_live_` or `pcl_test_`.
    #[must_use]
    pub fn key_prefix(self) -> &'static str {
        match self {
            KeyMode::Live => LIVE_PREFIX,
            KeyMode::Test => TEST_PREFIX,
        }
    }

    /// `"live"` or `"test"`, for storage and JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }
}

/// A freshly generated key. `plaintext` is shown to the user once and must then be dropped;
/// only `prefix`, `hash` and `mode` are stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The full key, e.g. `pcl_live_Ab3d…` (41 characters).
    pub plaintext: Secret<String>,
    /// The first [`KEY_PREFIX_LEN`] characters.
    pub prefix: String,
    /// SHA-256 of the full key.
    pub hash: [u8; 32],
    /// Live or test.
    pub mode: KeyMode,
}

/// Generates a new API key from the operating system's CSPRNG.
#[must_use]
pub fn generate_api_key(mode: KeyMode) -> NewApiKey {
    let mut key = String::with_capacity(API_KEY_LEN);
    key.push_str(mode.key_prefix());
    push_random_base62(&mut key, KEY_RANDOM_LEN);
    let key = Secret::new(key);
    NewApiKey {
        prefix: key.expose()[..KEY_PREFIX_LEN].to_owned(),
        hash: sha256(key.expose().as_bytes()),
        plaintext: key,
        mode,
    }
}

/// A string that has the exact shape of an API key, ready to be looked up by prefix and hash.
/// It does not keep the key itself.
#[derive(Clone)]
pub struct PresentedKey {
    prefix: String,
    hash: [u8; 32],
    mode: KeyMode,
}

impl PresentedKey {
    /// The first [`KEY_PREFIX_LEN`] characters, e.g. `pcl_live_Ab3d`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// SHA-256 of the whole presented key, to compare with [`hash_matches`].
    #[must_use]
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// Live or test.
    #[must_use]
    pub fn mode(&self) -> KeyMode {
        self.mode
    }
}

impl fmt::Debug for PresentedKey {
    // The prefix is the part of a key that is meant to be displayed (it is shown in key lists);
    // the hash is omitted because it is what the database stores.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey")
            .field("prefix", &self.prefix)
            .field("mode", &self.mode)
            .field("hash", &"[REDACTED]")
            .finish()
    }
}

/// Checks that `s` is shaped exactly like an API key (no trimming, no case folding) and hashes
/// it. Anything else is `None`, so a string that cannot be a key never costs a database lookup.
pub fn parse_presented_key(s: &str) -> Option<PresentedKey> {
    let bytes = s.as_bytes();
    if bytes.len() != API_KEY_LEN {
        return None;
    }
    let mode = if s.starts_with(LIVE_PREFIX) {
        KeyMode::Live
    } else if s.starts_with(TEST_PREFIX) {
        KeyMode::Test
    } else {
        return None;
    };
    // Checking bytes also rejects any non-ASCII character, whatever its length.
    if !bytes[LIVE_PREFIX.len()..]
        .iter()
        .all(u8::is_ascii_alphanumeric)
    {
        return None;
    }
    Some(PresentedKey {
        prefix: s[..KEY_PREFIX_LEN].to_owned(),
        hash: sha256(bytes),
        mode,
    })
}

/// Compares a stored key hash with a presented one in constant time.
///
/// A stored value of the wrong length (a corrupt row) never matches, and the content comparison
/// still runs in full so timing does not depend on any byte of either hash.
#[must_use]
pub fn hash_matches(stored: &[u8], presented: &[u8; 32]) -> bool {
    let mut candidate = [0u8; 32];
    let right_length = stored.len() == candidate.len();
    if right_length {
        candidate.copy_from_slice(stored);
    }
    (candidate.ct_eq(presented) & Choice::from(u8::from(right_length))).into()
}

/// `prefix` followed by `n_chars` uniformly random base62 characters from the OS CSPRNG, for
/// opaque bearer tokens such as realtime `wst_…` tokens.
#[must_use]
pub fn random_token(prefix: &str, n_chars: usize) -> Secret<String> {
    let mut token = String::with_capacity(prefix.len() + n_chars);
    token.push_str(prefix);
    push_random_base62(&mut token, n_chars);
    Secret::new(token)
}

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality of two byte strings. Lengths are treated as public: slices of
/// different lengths compare unequal immediately, but equal-length contents are always compared
/// in full.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Appends `n` uniform base62 characters. `out` should already have the capacity, so that no
/// reallocation leaves a partial copy of the secret in freed memory.
fn push_random_base62(out: &mut String, n: usize) {
    let mut buf = Zeroizing::new([0u8; 64]);
    let mut remaining = n;
    while remaining > 0 {
        random::fill(buf.as_mut_slice());
        remaining -= push_base62_accepted(out, buf.as_slice(), remaining);
    }
}

/// Maps random bytes to base62 by rejection sampling; returns how many characters it pushed
/// (at most `want`).
fn push_base62_accepted(out: &mut String, random: &[u8], want: usize) -> usize {
    let mut pushed = 0;
    for &b in random {
        if pushed == want {
            break;
        }
        if b < BASE62_REJECT_FROM {
            out.push(char::from(BASE62[usize::from(b % 62)]));
            pushed += 1;
        }
    }
    pushed
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz012345";

    #[test]
    fn generated_keys_have_the_documented_shape() {
        for mode in [KeyMode::Live, KeyMode::Test] {
            let k = generate_api_key(mode);
            let text = k.plaintext.expose();
            assert_eq!(text.len(), 41);
            assert!(text.starts_with(mode.key_prefix()));
            assert_eq!(k.prefix.len(), KEY_PREFIX_LEN);
            assert_eq!(k.prefix, text[..13]);
            assert_eq!(k.hash, sha256(text.as_bytes()));
            assert_eq!(k.mode, mode);

            let p = parse_presented_key(text).expect("generated key parses");
            assert_eq!(p.prefix(), k.prefix);
            assert_eq!(p.mode(), mode);
            assert!(hash_matches(&k.hash, &p.hash()));
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate_api_key(KeyMode::Live);
        let b = generate_api_key(KeyMode::Live);
        assert_ne!(a.plaintext.expose(), b.plaintext.expose());
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn key_format_table() {
        assert_eq!(GOOD.len(), 41);
        let cases: &[(&str, bool, &str)] = &[
            (GOOD, true, "valid live key"),
            (
                "pcl_test_Ab3dEFGHijklMNOPqrstUVWXyz012345",
                true,
                "valid test key",
            ),
            (
                "pcl_prod_Ab3dEFGHijklMNOPqrstUVWXyz012345",
                false,
                "unknown mode",
            ),
            (
                "PCL_LIVE_Ab3dEFGHijklMNOPqrstUVWXyz012345",
                false,
                "prefix is case-sensitive",
            ),
            (
                "xcl_live_Ab3dEFGHijklMNOPqrstUVWXyz012345",
                false,
                "wrong prefix",
            ),
            (
                "pcl_live-Ab3dEFGHijklMNOPqrstUVWXyz012345",
                false,
                "wrong separator",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz01234",
                false,
                "31 characters",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz0123456",
                false,
                "33 characters",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz01234_",
                false,
                "underscore",
            ),
            ("pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz01234-", false, "hyphen"),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz01234+",
                false,
                "base64 character",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz0123é",
                false,
                "unicode (same byte length)",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz01234é",
                false,
                "unicode (32 chars)",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz0123٣",
                false,
                "non-ASCII digit",
            ),
            (
                " pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz012345",
                false,
                "leading space",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz012345\n",
                false,
                "trailing newline",
            ),
            (
                "pcl_live_Ab3dEFGHijklMNOPqrst VWXyz012345",
                false,
                "inner space",
            ),
            ("pcl_live_Ab3dEFGHijklMNOPqrst\0VWXyz012345", false, "NUL"),
            ("", false, "empty"),
            ("pcl_live_", false, "prefix only"),
            (
                "Bearer pcl_live_Ab3dEFGHijklMNOPqrstUVWXyz012345",
                false,
                "scheme included",
            ),
        ];
        for (input, ok, why) in cases {
            assert_eq!(
                parse_presented_key(input).is_some(),
                *ok,
                "{why}: {input:?}"
            );
        }
    }

    #[test]
    fn presented_key_parts() {
        let p = parse_presented_key(GOOD).unwrap();
        assert_eq!(p.prefix(), "pcl_live_Ab3d");
        assert_eq!(p.prefix().len(), KEY_PREFIX_LEN);
        assert_eq!(p.mode(), KeyMode::Live);
        assert_eq!(p.hash(), sha256(GOOD.as_bytes()));
        let dbg = format!("{p:?}");
        assert!(!dbg.contains(GOOD));
        assert!(!dbg.contains(&crate::keyring::to_hex(&p.hash())));
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            crate::keyring::to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hash_matches_behaviour() {
        let h = sha256(GOOD.as_bytes());
        assert!(hash_matches(&h, &h));
        let mut other = h;
        other[31] ^= 1;
        assert!(!hash_matches(&other, &h));
        other = h;
        other[0] ^= 0x80;
        assert!(!hash_matches(&other, &h));
        assert!(!hash_matches(&h[..31], &h));
        assert!(!hash_matches(&[], &h));
        let mut longer = h.to_vec();
        longer.push(0);
        assert!(!hash_matches(&longer, &h));
        // A short stored value must not match a presented hash that happens to be zero-padded.
        assert!(!hash_matches(&[], &[0u8; 32]));
    }

    #[test]
    fn constant_time_eq_behaviour() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn random_tokens() {
        let t = random_token("wst_", 40);
        assert_eq!(t.expose().len(), 44);
        assert!(t.expose().starts_with("wst_"));
        assert!(t.expose()[4..].bytes().all(|b| BASE62.contains(&b)));
        assert_ne!(t.expose(), random_token("wst_", 40).expose());
        assert_eq!(random_token("x_", 0).expose(), "x_");
        assert_eq!(format!("{t:?}"), "Secret([REDACTED])");
    }

    #[test]
    fn rejection_sampling_discards_biased_bytes() {
        let mut out = String::new();
        let n = push_base62_accepted(&mut out, &[0, 61, 62, 247, 248, 255, 123], 10);
        // 248 and 255 are discarded; 62 wraps to '0'; 247 (the largest accepted) and 123 map to 'z'.
        assert_eq!(out, "0z0zz");
        assert_eq!(n, 5);
        let mut out = String::new();
        assert_eq!(push_base62_accepted(&mut out, &[1, 2, 3], 2), 2);
        assert_eq!(out, "12");
    }

    #[test]
    fn alphabet_is_fully_used() {
        // 62 symbols over 200 × 32 draws: all should appear (missing one has p ≈ 62·e^-103).
        let mut seen = [false; 256];
        for _ in 0..200 {
            for b in generate_api_key(KeyMode::Test).plaintext.expose()[9..].bytes() {
                seen[usize::from(b)] = true;
            }
        }
        assert!(BASE62.iter().all(|&b| seen[usize::from(b)]));
        assert_eq!(seen.iter().filter(|&&s| s).count(), 62);
    }
}
