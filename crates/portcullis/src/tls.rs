//! TLS termination: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3 only, rustls's
//! default (AEAD, forward-secret) cipher suites, ALPN `h2` then `http/1.1`.
//!
//! The certificate is held behind a resolver so a renewal swaps it in place: new
//! handshakes get the new pair, established connections keep theirs. The files are
//! re-read when their modification time or size changes (polled) and on SIGHUP; a pair
//! that does not load, or whose key does not match its certificate, is logged and the
//! previous one keeps serving.
//!
//! Optionally mutual: with a client CA file, a client without a certificate issued under
//! it never completes a handshake, so nothing it sends reaches HTTP.
//!
//! Handshakes run in their own tasks with a deadline, so a client that connects and says
//! nothing holds neither the accept loop nor a connection slot for long.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// A client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond are closed at once rather than
/// queued, so a flood of idle connections cannot pile up memory.
const MAX_HANDSHAKES: usize = 1024;

/// The serving certificate, replaceable while handshakes read it.
#[derive(Debug)]
struct CertResolver(RwLock<Arc<CertifiedKey>>);

impl CertResolver {
    fn current(&self) -> Arc<CertifiedKey> {
        // Writers only swap an Arc; a poisoned lock still holds a whole value.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TLS configuration bound to its certificate and key files.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the pair and builds the server configuration; fails if the pair is unusable.
    /// With `client_ca`, every client must present a certificate chaining to one of the
    /// CA certificates in that PEM file (mutual TLS, for listeners only operators reach).
    pub fn load(cert_file: &Path, key_file: &Path, client_ca: Option<&Path>) -> Result<Tls> {
        // Explicit rather than the process default, so what is offered never depends on
        // which other crate installed a provider first.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = load_pair(cert_file, key_file, &provider)?;
        let resolver = Arc::new(CertResolver(RwLock::new(Arc::new(key))));
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, &provider)?),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Re-reads the files; on success new handshakes use the new pair, on failure nothing
    /// changes.
    pub fn reload(&self) -> Result<()> {
        let key = load_pair(&self.cert_file, &self.key_file, &self.provider)?;
        self.resolver.replace(Arc::new(key));
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    fn stamp(&self) -> Option<FileStamp> {
        Some((stamp(&self.cert_file)?, stamp(&self.key_file)?))
    }

    /// Reloads when the files change (checked every `interval`) and on SIGHUP, until
    /// `shutdown`.
    pub fn spawn_reloader(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let mut hangup = hangup_signal();
        tokio::spawn(async move {
            let mut last = self.stamp();
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let forced = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => false,
                    Some(()) = recv(&mut hangup) => true,
                };
                let now = self.stamp();
                if !forced && now == last {
                    continue;
                }
                // Remembered whether or not the load works: a broken pair is reported once,
                // not every interval, and the next change is tried again.
                last = now;
                let trigger = if forced { "SIGHUP" } else { "file change" };
                match self.reload() {
                    Ok(()) => tracing::info!(
                        cert_file = %self.cert_file.display(),
                        trigger,
                        "TLS certificate reloaded"
                    ),
                    Err(e) => {
                        metrics::counter!("portcullis_tls_reload_failures_total").increment(1);
                        tracing::error!(
                            cert_file = %self.cert_file.display(),
                            key_file = %self.key_file.display(),
                            trigger,
                            error = %format!("{e:#}"),
                            "TLS certificate reload failed; still serving the previous certificate"
                        );
                    }
                }
            }
        })
    }
}

type FileStamp = ((SystemTime, u64), (SystemTime, u64));

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

/// Registered before the reloader starts, so a SIGHUP sent once `Server::start` has
/// returned is never the default action (which would end the process).
#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are still polled");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn recv(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

/// A verifier accepting only client certificates issued under the CAs in `ca_file`.
fn client_verifier(
    ca_file: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let pem = std::fs::read(ca_file).with_context(|| {
        format!(
            "reading PORTCULLIS_TLS_CLIENT_CA_FILE {}",
            ca_file.display()
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| anyhow!("PORTCULLIS_TLS_CLIENT_CA_FILE {}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow!("PORTCULLIS_TLS_CLIENT_CA_FILE {}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!(
            "PORTCULLIS_TLS_CLIENT_CA_FILE {}: no PEM certificate in it",
            ca_file.display()
        );
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| anyhow!("PORTCULLIS_TLS_CLIENT_CA_FILE {}: {e}", ca_file.display()))
}

/// Reads and checks a certificate chain and its key.
fn load_pair(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let cert_pem = std::fs::read(cert_file)
        .with_context(|| format!("reading PORTCULLIS_TLS_CERT_FILE {}", cert_file.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("PORTCULLIS_TLS_CERT_FILE {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "PORTCULLIS_TLS_CERT_FILE {}: no PEM certificate in it",
            cert_file.display()
        );
    }
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(key_file)
            .with_context(|| format!("reading PORTCULLIS_TLS_KEY_FILE {}", key_file.display()))?,
    );
    // The parser's error may quote a line of the file: say only what was expected.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        anyhow!(
            "PORTCULLIS_TLS_KEY_FILE {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
            key_file.display()
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        anyhow!(
            "PORTCULLIS_TLS_KEY_FILE {} with PORTCULLIS_TLS_CERT_FILE {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(certified)
}

/// A listener that hands axum connections whose TLS handshake is complete.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` and handshakes with `acceptor` until `shutdown`.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        shutdown: CancellationToken,
    ) -> Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, acceptor, tx, shutdown));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("portcullis_tls_handshake_failures_total", "reason" => "overload")
                .increment(1);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let reason = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    drop(slot);
                    let _ = ready.send((stream, peer)).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    "handshake"
                }
                Err(_) => "timeout",
            };
            metrics::counter!("portcullis_tls_handshake_failures_total", "reason" => reason)
                .increment(1);
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
