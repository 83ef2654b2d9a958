//! The Portcullis binary's library half: configuration ([`config`]), wiring and serving
//! ([`server`]), the command line ([`cli`]) and the dev-mode bootstrap ([`bootstrap`]).
//! `main.rs` only parses arguments and calls [`cli::run`]; tests start [`server::Server`]
//! directly.

pub mod bench;
pub mod bench_events;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod logging;
pub mod server;
pub mod tls;

/// Installs the process-wide rustls crypto provider. Two providers end up in the
/// dependency tree (aws-lc-rs through reqwest, ring through others) and rustls panics at
/// first use unless one is chosen explicitly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
