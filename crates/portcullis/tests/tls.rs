//! TLS termination, HTTPS enforcement and trusted proxies, over real loopback sockets.
//! Certificates are made per test with rcgen: one CA, leaves for `localhost`/127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use portcullis::config::Config;
use portcullis::server::Server;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::SupportedProtocolVersion;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

const BAD_KEY: &str = "pcl_live_0000000000000000000000000000bad0";

/// A test CA and the leaves it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM, plus the DER a client will see.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Portcullis test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    fn leaf(&self, cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }
}

/// Writes through a rename, as a careful operator (or certbot) would.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Gateway {
    server: Option<Server>,
    admin_key: String,
    app_id: String,
    key_id: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway; `tls` puts `leaf` on the main listener.
    async fn start(dev: bool, tls: Option<&Leaf>, edit: impl FnOnce(&mut Config)) -> Gateway {
        portcullis::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        let mut config = Config {
            dev,
            data_dir: dir.path().to_path_buf(),
            master_key: Some(
                portcullis_crypto::MasterKey::generate()
                    .to_base64()
                    .expose()
                    .clone(),
            ),
            simulator_delay_ms: 50,
            tls_reload_interval_ms: 100,
            ..Config::default()
        };
        if let Some(leaf) = tls {
            write_atomic(&cert_file, &leaf.cert_pem);
            write_atomic(&key_file, &leaf.key_pem);
            config.tls_cert_file = Some(cert_file.clone());
            config.tls_key_file = Some(key_file.clone());
        }
        edit(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::start(&config, listener, None)
            .await
            .expect("server starts");
        let boot = portcullis::bootstrap::bootstrap_dev(&server.store.db)
            .await
            .unwrap()
            .unwrap();
        Gateway {
            server: Some(server),
            admin_key: boot.key.expose().clone(),
            app_id: boot.app_id,
            key_id: boot.key_id,
            cert_file,
            key_file,
            _dir: dir,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    fn addr(&self) -> SocketAddr {
        self.server().addr
    }

    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr().port())
    }

    fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The IP the gateway last recorded for the bootstrap key (flushed every 2 s).
    async fn last_used_ip(&self) -> Option<String> {
        let app = portcullis_domain::AppId::parse(&self.app_id).unwrap();
        let key = portcullis_domain::KeyId::parse(&self.key_id).unwrap();
        portcullis_store::keys::get(&self.server().store.db, &app, &key)
            .await
            .unwrap()
            .last_used_ip
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("clean shutdown");
        }
    }
}

/// A reqwest client trusting only the test CA, resolving `localhost` to the gateway.
fn tls_client(pki: &Pki, addr: SocketAddr, local: Option<[u8; 4]>) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap()])
        .resolve("localhost", addr);
    if let Some(ip) = local {
        b = b.local_address(std::net::IpAddr::from(ip));
    }
    b
}

fn plain_client(local: Option<[u8; 4]>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().no_proxy();
    if let Some(ip) = local {
        b = b.local_address(std::net::IpAddr::from(ip));
    }
    b.build().unwrap()
}

/// A raw rustls handshake limited to `versions`.
async fn handshake(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The leaf certificate a fresh connection is served.
async fn served_leaf(addr: SocketAddr, pki: &Pki) -> CertificateDer<'static> {
    let tls = handshake(addr, &pki.ca_der(), rustls::ALL_VERSIONS, &[])
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn status_json(res: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_https_required(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "HTTPS required", "{body}");
    assert_eq!(body["code"], "https_required", "{body}");
    assert!(
        body["request_id"].as_str().unwrap().starts_with("req_"),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert!(headers.get("location").is_none(), "never a redirect");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

const SECURITY_HEADERS: [(&str, &str); 7] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "0"),
    ("content-security-policy", "default-src 'none'"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1_with_security_headers() {
    let pki = Pki::new();
    let leaf = pki.leaf("gateway-1");
    let gw = Gateway::start(false, Some(&leaf), |_| {}).await;
    assert!(gw.server().tls);

    // ALPN picks h2 when the client offers it.
    let h2 = tls_client(&pki, gw.addr(), None).build().unwrap();
    let res = h2
        .get(gw.https("/v1/keys"))
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    let (status, headers, body) = status_json(res).await;
    assert_eq!(status, 200, "{body}");
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(headers[name], value, "{name}");
    }
    assert!(headers.contains_key("x-request-id"));

    let h1 = tls_client(&pki, gw.addr(), None)
        .http1_only()
        .build()
        .unwrap();
    let res = h1
        .get(gw.https("/v1/keys"))
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    let (status, headers, _) = status_json(res).await;
    assert_eq!(status, 200);
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(headers[name], value, "{name}");
    }
    // Errors over TLS keep the usual shape.
    let (status, _, body) = status_json(
        h1.get(gw.https("/v1/keys"))
            .bearer_auth(BAD_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");

    // Plain HTTP to the TLS port is not HTTP at all: the connection fails.
    assert!(
        plain_client(None)
            .get(gw.http("/healthz"))
            .send()
            .await
            .is_err()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_with_modern_suites_and_alpn() {
    let pki = Pki::new();
    let leaf = pki.leaf("gateway-versions");
    let gw = Gateway::start(false, Some(&leaf), |_| {}).await;
    let ca = pki.ca_der();

    let tls12 = handshake(gw.addr(), &ca, &[&rustls::version::TLS12], &[b"h2"])
        .await
        .expect("a TLS 1.2-only client connects");
    let conn = tls12.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let suite = conn.negotiated_cipher_suite().unwrap().suite();
    let name = format!("{suite:?}");
    assert!(
        name.starts_with("TLS_ECDHE_") && (name.contains("_GCM_") || name.contains("CHACHA20")),
        "{name}"
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));

    let tls13 = handshake(gw.addr(), &ca, &[&rustls::version::TLS13], &[b"http/1.1"])
        .await
        .expect("a TLS 1.3-only client connects");
    let conn = tls13.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    // A client offering only ALPN protocols the server does not speak is refused (RFC 7301
    // no_application_protocol); one offering none at all is served (see `served_leaf`).
    let other = handshake(gw.addr(), &ca, rustls::ALL_VERSIONS, &[b"spdy/3"]).await;
    assert!(other.is_err(), "an unknown ALPN protocol is refused");

    // TLS 1.1 and 1.0 need a client that still speaks them: the OpenSSL CLI, when present.
    if let Some(openssl) = which("openssl") {
        let port = gw.addr().port();
        for (flag, expect_ok) in [("-tls1", false), ("-tls1_1", false), ("-tls1_2", true)] {
            let out = tokio::task::spawn_blocking({
                let openssl = openssl.clone();
                move || {
                    std::process::Command::new(openssl)
                        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                        .args(["-servername", "localhost", flag])
                        // Let the client offer the old protocols at all: a refusal must
                        // come from the server, not from the client's own policy.
                        .args(["-cipher", "DEFAULT@SECLEVEL=0"])
                        .stdin(std::process::Stdio::null())
                        .output()
                        .unwrap()
                }
            })
            .await
            .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if expect_ok {
                assert!(out.status.success(), "{flag}: {text}");
                assert!(text.contains("TLSv1.2"), "{flag}: {text}");
            } else {
                assert!(!out.status.success(), "{flag} must fail: {text}");
                // The server's alert (protocol_version, or handshake_failure when nothing
                // in the hello is acceptable), not the client declining to try.
                let lower = text.to_lowercase();
                assert!(
                    lower.contains("alert protocol version")
                        || lower.contains("alert handshake failure"),
                    "{flag}: refused by the server: {text}"
                );
                assert!(text.contains("Cipher is (NONE)"), "{flag}: {text}");
                assert!(!lower.contains("no protocols available"), "{flag}: {text}");
            }
        }
    } else {
        eprintln!("openssl CLI not found: TLS 1.0/1.1 refusal checked by rustls's build only");
    }
    gw.stop().await;
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Polls until fresh connections are served `want` (or panics).
async fn wait_for_leaf(addr: SocketAddr, pki: &Pki, want: &CertificateDer<'static>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_leaf(addr, pki).await != *want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_change_and_a_broken_pair_keeps_the_old_one() {
    let pki = Pki::new();
    let first = pki.leaf("gateway-first");
    let gw = Gateway::start(false, Some(&first), |_| {}).await;
    assert_eq!(served_leaf(gw.addr(), &pki).await, first.der);

    // An HTTP/1.1 keep-alive connection opened before the renewal keeps working.
    let client = tls_client(&pki, gw.addr(), None)
        .http1_only()
        .build()
        .unwrap();
    let get = |c: reqwest::Client, url: String, key: String| async move {
        c.get(url).bearer_auth(key).send().await.unwrap().status()
    };
    assert_eq!(
        get(client.clone(), gw.https("/v1/keys"), gw.admin_key.clone()).await,
        200
    );

    let second = pki.leaf("gateway-second");
    assert_ne!(second.der, first.der);
    write_atomic(&gw.key_file, &second.key_pem);
    write_atomic(&gw.cert_file, &second.cert_pem);
    wait_for_leaf(gw.addr(), &pki, &second.der).await;
    assert_eq!(
        get(client.clone(), gw.https("/v1/keys"), gw.admin_key.clone()).await,
        200
    );

    // A garbled certificate file: logged, and the second pair keeps serving.
    std::fs::write(&gw.cert_file, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_leaf(gw.addr(), &pki).await, second.der);
    // A certificate whose key has not been replaced yet (key mismatch): still the second.
    let third = pki.leaf("gateway-third");
    write_atomic(&gw.cert_file, &third.cert_pem);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_leaf(gw.addr(), &pki).await, second.der);
    let fresh = tls_client(&pki, gw.addr(), None).build().unwrap();
    assert_eq!(
        get(fresh, gw.https("/v1/keys"), gw.admin_key.clone()).await,
        200
    );
    // An empty key file: still the second.
    std::fs::write(&gw.key_file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served_leaf(gw.addr(), &pki).await, second.der);
    // Once the matching key arrives, the third pair is served.
    write_atomic(&gw.key_file, &third.key_pem);
    wait_for_leaf(gw.addr(), &pki, &third.der).await;
    gw.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    let pki = Pki::new();
    let first = pki.leaf("gateway-hup-1");
    // Polling effectively off: only the signal can cause the reload.
    let gw = Gateway::start(false, Some(&first), |c| {
        c.tls_reload_interval_ms = 3_600_000;
    })
    .await;
    let second = pki.leaf("gateway-hup-2");
    write_atomic(&gw.key_file, &second.key_pem);
    write_atomic(&gw.cert_file, &second.cert_pem);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_leaf(gw.addr(), &pki).await, first.der, "not yet");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_leaf(gw.addr(), &pki, &second.der).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_plain_http_and_dev_serves_it() {
    let pki = Pki::new();
    let leaf = pki.leaf("gateway-plain");
    // Production with TLS and the optional plain listener: everything on it is refused.
    let gw = Gateway::start(false, Some(&leaf), |c| {
        c.listen_http = Some("127.0.0.1:0".to_owned());
    })
    .await;
    let http_addr = gw.server().http_addr.expect("plain listener bound");
    let plain = plain_client(None);
    for (method, path, key) in [
        ("GET", "/v1/keys", Some(gw.admin_key.as_str())),
        ("GET", "/v1/keys", Some(BAD_KEY)),
        ("GET", "/v1/openapi.json", None),
        ("GET", "/metrics", None),
        ("GET", "/no/such/route", None),
        ("POST", "/v1/messages", Some(gw.admin_key.as_str())),
    ] {
        let mut req = plain.request(method.parse().unwrap(), format!("http://{http_addr}{path}"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let (status, headers, body) = status_json(req.send().await.unwrap()).await;
        assert_https_required(status, &headers, &body);
    }
    // Health probes are the exception: load balancers send them in plain.
    let res = plain
        .get(format!("http://{http_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Even a trusted-proxy header does not make the plain listener HTTPS.
    let (status, headers, body) = status_json(
        plain
            .get(format!("http://{http_addr}/v1/keys"))
            .header("x-forwarded-proto", "https")
            .bearer_auth(&gw.admin_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_https_required(status, &headers, &body);
    // The TLS listener next to it serves.
    let tls = tls_client(&pki, gw.addr(), None).build().unwrap();
    let res = tls
        .get(gw.https("/v1/keys"))
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.stop().await;

    // Production without TLS (as if behind a proxy that is not configured): refused too.
    let gw = Gateway::start(false, None, |_| {}).await;
    assert!(!gw.server().tls);
    let (status, headers, body) = status_json(
        plain
            .get(gw.http("/v1/keys"))
            .bearer_auth(&gw.admin_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_https_required(status, &headers, &body);
    gw.stop().await;

    // Dev mode: plain HTTP works, on the main and on the extra listener.
    let gw = Gateway::start(true, None, |c| {
        c.listen_http = Some("127.0.0.1:0".to_owned());
    })
    .await;
    let http_addr = gw.server().http_addr.unwrap();
    for url in [gw.http("/v1/keys"), format!("http://{http_addr}/v1/keys")] {
        let res = plain
            .get(&url)
            .bearer_auth(&gw.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
    }
    gw.stop().await;
}

/// `n` failed authentications from `client`, each answered 401.
async fn fail_auth(req: impl Fn() -> reqwest::RequestBuilder, n: usize) {
    for _ in 0..n {
        let res = req().bearer_auth(BAD_KEY).send().await.unwrap();
        assert_eq!(res.status(), 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    // Production behind a proxy at 127.0.0.1; 127.0.0.2 plays a client that reached the
    // gateway directly and tries to pass as the proxy.
    let gw = Gateway::start(false, None, |c| {
        c.trusted_proxies = Some("127.0.0.1/32, 10.0.0.0/8".to_owned());
    })
    .await;
    let proxy = plain_client(Some([127, 0, 0, 1]));
    let direct = plain_client(Some([127, 0, 0, 2]));
    let url = gw.http("/v1/keys");

    // From the proxy: X-Forwarded-Proto: https passes the HTTPS check…
    let res = proxy
        .get(&url)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "198.51.100.23")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // …as does RFC 7239 Forwarded.
    let res = proxy
        .get(&url)
        .header("forwarded", "for=198.51.100.24;proto=https")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The proxy saying the client used plain HTTP, or saying nothing: refused.
    for headers in [
        vec![("x-forwarded-proto", "http")],
        vec![("forwarded", "for=198.51.100.24;proto=http")],
        vec![],
    ] {
        let mut req = proxy.get(&url).bearer_auth(&gw.admin_key);
        for (n, v) in &headers {
            req = req.header(*n, *v);
        }
        let (status, h, body) = status_json(req.send().await.unwrap()).await;
        assert_https_required(status, &h, &body);
    }
    // From an untrusted peer the same headers are ignored: still plain HTTP, still 403.
    for (name, value) in [
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=127.0.0.1;proto=https"),
    ] {
        let (status, h, body) = status_json(
            direct
                .get(&url)
                .header(name, value)
                .header("x-forwarded-for", "127.0.0.1")
                .bearer_auth(&gw.admin_key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_https_required(status, &h, &body);
    }

    // The client address is the right-most untrusted hop: the key's last use records it…
    let res = proxy
        .get(&url)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "192.0.2.66, 203.0.113.50, 10.1.2.3")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ip = gw.last_used_ip().await;
        if ip.as_deref() == Some("203.0.113.50") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_used_ip {ip:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // …and brute-force blocking applies to that address alone.
    let via_proxy = |client_ip: &'static str| {
        let proxy = proxy.clone();
        let url = url.clone();
        move || {
            proxy
                .get(&url)
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-for", client_ip)
        }
    };
    fail_auth(via_proxy("203.0.113.7"), 10).await;
    let res = via_proxy("203.0.113.7")()
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "203.0.113.7 is blocked");
    let res = via_proxy("203.0.113.8")()
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "its neighbour is not");
    let res = proxy
        .get(&url)
        .header("x-forwarded-proto", "https")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "nor is the proxy itself");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_client_address_from_an_untrusted_peer_is_ignored() {
    let pki = Pki::new();
    let leaf = pki.leaf("gateway-spoof");
    let gw = Gateway::start(false, Some(&leaf), |c| {
        c.trusted_proxies = Some("127.0.0.1".to_owned());
    })
    .await;
    let direct = tls_client(&pki, gw.addr(), Some([127, 0, 0, 2]))
        .build()
        .unwrap();
    let proxy = tls_client(&pki, gw.addr(), Some([127, 0, 0, 1]))
        .build()
        .unwrap();
    let url = gw.https("/v1/keys");

    // The untrusted peer names someone else in X-Forwarded-For: the gateway records the
    // peer, so the failures block the peer, not the named address.
    let res = direct
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .header("forwarded", "for=203.0.113.7")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ip = gw.last_used_ip().await;
        if ip.as_deref() == Some("127.0.0.2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_used_ip {ip:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail_auth(
        || direct.get(&url).header("x-forwarded-for", "203.0.113.7"),
        10,
    )
    .await;
    let res = direct
        .get(&url)
        .header("x-forwarded-for", "203.0.113.9")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "the peer itself is blocked");
    let res = proxy
        .get(&url)
        .header("x-forwarded-for", "203.0.113.7")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the named address was never blamed");

    // Over TLS, a trusted proxy saying its client came in plain HTTP is believed.
    let res = proxy
        .get(&url)
        .header("x-forwarded-proto", "http")
        .bearer_auth(&gw.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_checks_name_what_to_set() {
    let pki = Pki::new();
    let leaf = pki.leaf("gateway-checks");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let base = Config {
        data_dir: dir.path().to_path_buf(),
        master_key: Some(
            portcullis_crypto::MasterKey::generate()
                .to_base64()
                .expose()
                .clone(),
        ),
        ..Config::default()
    };

    let err = base.check_production().unwrap_err().to_string();
    assert!(
        err.contains("PORTCULLIS_TLS_CERT_FILE") && err.contains("PORTCULLIS_TRUSTED_PROXIES"),
        "{err}"
    );
    let with_tls = Config {
        tls_cert_file: Some(cert.clone()),
        tls_key_file: Some(key.clone()),
        ..base.clone()
    };
    with_tls.check_production().unwrap();
    let proxies = Config {
        trusted_proxies: Some("10.0.0.0/8,192.0.2.1".to_owned()),
        ..base.clone()
    };
    proxies.check_production().unwrap();
    let bad_cidr = Config {
        trusted_proxies: Some("10.0.0.0/33".to_owned()),
        ..base.clone()
    };
    let err = bad_cidr.check_production().unwrap_err().to_string();
    assert!(err.contains("PORTCULLIS_TRUSTED_PROXIES"), "{err}");
    let half = Config {
        tls_cert_file: Some(cert.clone()),
        ..base.clone()
    };
    let err = half.check_production().unwrap_err().to_string();
    assert!(err.contains("PORTCULLIS_TLS_KEY_FILE"), "{err}");
    assert!(
        Config {
            dev: true,
            ..base.clone()
        }
        .check_production()
        .is_ok()
    );

    // A certificate that cannot be served stops start-up, naming the file; the key's
    // contents are never echoed.
    portcullis::install_crypto_provider();
    let other = pki.leaf("someone-else");
    let mismatched = dir.path().join("other-key.pem");
    std::fs::write(&mismatched, &other.key_pem).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n",
    )
    .unwrap();
    for (c, k, expect) in [
        (&cert, &mismatched, "PORTCULLIS_TLS_KEY_FILE"),
        (&cert, &garbage, "PORTCULLIS_TLS_KEY_FILE"),
        (&garbage, &key, "PORTCULLIS_TLS_CERT_FILE"),
        (
            &dir.path().join("missing.pem"),
            &key,
            "PORTCULLIS_TLS_CERT_FILE",
        ),
    ] {
        let config = Config {
            tls_cert_file: Some(c.clone()),
            tls_key_file: Some(k.clone()),
            ..base.clone()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = match Server::start(&config, listener, None).await {
            Ok(_) => panic!("{} / {} must not start", c.display(), k.display()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expect), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(!err.contains(&other.key_pem[40..80]), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_certificates_from_the_client_ca() {
    let pki = Pki::new();
    let leaf = pki.leaf("gateway-mtls");
    let operators = Pki::new();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("operators.pem");
    std::fs::write(&ca_file, operators.ca_pem()).unwrap();
    let ca_path = ca_file.clone();
    let gw = Gateway::start(true, Some(&leaf), move |c| {
        c.tls_client_ca_file = Some(ca_path);
    })
    .await;
    let call = |identity: Option<&Leaf>| {
        let mut b = tls_client(&pki, gw.addr(), None);
        if let Some(id) = identity {
            let pem = format!("{}{}", id.cert_pem, id.key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        let client = b.build().unwrap();
        let url = gw.https("/v1/app");
        let key = gw.admin_key.clone();
        async move { client.get(url).bearer_auth(key).send().await }
    };
    assert!(call(None).await.is_err(), "no client certificate");
    let stranger = pki.leaf("not-an-operator");
    assert!(
        call(Some(&stranger)).await.is_err(),
        "certificate from another CA"
    );
    let operator = operators.leaf("operator");
    let res = call(Some(&operator))
        .await
        .expect("an operator's certificate is admitted");
    assert_eq!(res.status(), 200);
    gw.stop().await;

    // A client CA without a server certificate is a configuration error, named.
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        dev: true,
        data_dir: dir.path().to_path_buf(),
        master_key: Some(
            portcullis_crypto::MasterKey::generate()
                .to_base64()
                .expose()
                .clone(),
        ),
        tls_client_ca_file: Some(ca_file),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Server::start(&config, listener, None)
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("PORTCULLIS_TLS_CLIENT_CA_FILE"),
        "{err:#}"
    );
}
