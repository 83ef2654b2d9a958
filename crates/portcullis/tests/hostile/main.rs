//! The hostile suite: the perimeter as an attacker meets it, from outside the process, over
//! real TCP. Malformed and misplaced credentials, timing, brute force, spoofed forwarding
//! headers, oversized and nested bodies, forged and revoked tokens, keys used from the wrong
//! network, revocation across instances, and a scan of everything the product logs for the
//! secrets and personal data it was sent.
//!
//! A separate test target from `it` so a security review can run it alone:
//! `cargo test -p portcullis --test hostile`.

#[allow(dead_code)]
#[path = "../it/helpers.rs"]
mod helpers;

mod canary;
mod credentials;
mod perimeter;
mod revocation;
mod tokens;
