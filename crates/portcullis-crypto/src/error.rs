//! The one error type of this crate.

/// Why a cryptographic operation failed.
///
/// Messages are written for an operator reading a log: they say what is wrong and, where it is
/// a configuration problem, how to fix it. They never include key material or the rejected input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The configured master key is not usable.
    #[error(
        "invalid master key ({0}): it must be the standard base64 encoding of exactly 32 random \
         bytes, for example the output of `openssl rand -base64 32`"
    )]
    InvalidMasterKey(String),

    /// A keyring was configured with an impossible set of key versions.
    #[error("invalid keyring configuration: {0}")]
    InvalidKeyVersion(String),

    /// A sealed value is shorter than the smallest possible sealed value.
    #[error("sealed value is truncated: too short to contain a version, nonce and tag")]
    SealedTooShort,

    /// A sealed value names a key version this keyring does not hold.
    #[error(
        "sealed value uses key version {0}, which this keyring does not have (was a previous \
         master key removed too early?)"
    )]
    UnknownKeyVersion(u8),

    /// Authenticated decryption failed.
    #[error(
        "decryption failed: wrong key, wrong associated data (row/column), or the ciphertext was \
         modified"
    )]
    Decryption,

    /// A sealed string decrypted fine but is not UTF-8, so it was not sealed with `seal_str`.
    #[error("decrypted value is not valid UTF-8")]
    InvalidUtf8,

    /// A webhook signing secret could not be parsed.
    #[error(
        "invalid webhook secret ({0}): expected `whsec_` followed by the standard base64 encoding \
         of 24 to 64 random bytes"
    )]
    InvalidWebhookSecret(String),
}
