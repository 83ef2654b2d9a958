//! Portcullis cryptography: everything that touches key material lives here, so that the rest
//! of the workspace handles secrets only through types that cannot leak them by accident.
//!
//! - [`secret`]: [`Secret<T>`], a wrapper with redacted `Debug`/`Display` that zeroizes on drop.
//! - [`keyring`]: the [`MasterKey`] and the [`Keyring`] derived from it — AES-256-GCM field
//!   sealing bound to its row and column, blind indexes for looking values up without storing
//!   them, and MACs for short-lived tokens.
//! - [`apikey`]: the `pcl_live_…`/`pcl_test_…` API-key format, generation, SHA-256 hashing and
//!   constant-time comparison.
//! - [`access_token`]: short-lived HS256 access tokens minted from an API key.
//! - [`webhook`]: Standard Webhooks (`whsec_…` secrets, `v1,` signatures).
//!
//! Every fallible operation returns [`CryptoError`]. Its messages never contain key material or
//! the input that failed to parse, so they are safe to log and to show an operator.

pub mod access_token;
pub mod apikey;
mod error;
pub mod keyring;
mod random;
pub mod secret;
pub mod webhook;

pub use apikey::{
    KEY_PREFIX_LEN, KeyMode, NewApiKey, PresentedKey, constant_time_eq, generate_api_key,
    hash_matches, parse_presented_key, random_token, sha256,
};
pub use error::CryptoError;
pub use keyring::{Keyring, MasterKey};
pub use secret::Secret;
pub use webhook::WebhookSecret;
