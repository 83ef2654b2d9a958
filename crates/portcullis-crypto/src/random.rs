//! The crate's single source of randomness.

use rand::TryRng;
use rand::rngs::SysRng;

/// Fills `dest` straight from the operating system's CSPRNG.
///
/// Keys, nonces and API keys all come from here rather than from a user-space generator, so
/// there is no generator state that a `fork` could duplicate or a memory dump could reveal.
///
/// # Panics
/// If the operating system cannot provide randomness. There is no safe fallback for key or
/// nonce generation, and on supported platforms this does not happen once the system is booted.
pub(crate) fn fill(dest: &mut [u8]) {
    SysRng
        .try_fill_bytes(dest)
        .expect("the operating system random number generator failed");
}

/// Returns `N` random bytes. The caller is responsible for zeroizing them if they are secret.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}
