//! The guard against real sockets on loopback: a DNS server this test controls, canary
//! listeners that count every connection they accept, and an allowlisted receiver.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use bytes::Bytes;
use portcullis_egress::{Egress, EgressError, EgressPolicy, Resolver};
use tokio::net::{TcpListener, UdpSocket};
use url::Url;

const PUBLIC: Ipv4Addr = Ipv4Addr::new(93, 184, 215, 14);
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;

fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

// ---------------------------------------------------------------------------------------------
// A small authoritative DNS server for A/AAAA (and CNAME) questions.

enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(&'static str),
}

struct Reply {
    nxdomain: bool,
    records: Vec<(String, Rdata)>,
}

/// Answers for `name` and `qtype`, given how many times that question was asked before.
fn zone(name: &str, qtype: u16, asked_before: usize) -> Reply {
    let a = |ip: [u8; 4]| Rdata::A(Ipv4Addr::from(ip));
    let aaaa = |s: &str| Rdata::Aaaa(s.parse().unwrap());
    let (v4, v6): (Vec<Rdata>, Vec<Rdata>) = match name {
        "private.example" => (vec![a([10, 0, 0, 1])], vec![]),
        "loop.example" => (vec![a([127, 0, 0, 1])], vec![]),
        "loop2.example" => (vec![a([127, 0, 0, 2])], vec![]),
        "mixed.example" => (vec![Rdata::A(PUBLIC), a([127, 0, 0, 1])], vec![]),
        "mixed6.example" => (vec![Rdata::A(PUBLIC)], vec![aaaa("::1")]),
        "cgnat.example" => (vec![a([100, 64, 0, 1])], vec![]),
        "metadata.example" => (vec![a([169, 254, 169, 254])], vec![]),
        "meta6.example" => (vec![], vec![aaaa("fd00:ec2::254")]),
        "v6loop.example" => (vec![], vec![aaaa("::1")]),
        "mapped.example" => (vec![], vec![aaaa("::ffff:127.0.0.1")]),
        "nat64.example" => (vec![], vec![aaaa("64:ff9b::7f00:1")]),
        "sixtofour.example" => (vec![], vec![aaaa("2002:7f00:1::1")]),
        "teredo.example" => (vec![], vec![aaaa("2001:0:4136:e378:8000:63bf:80ff:fffe")]),
        "ula.example" => (vec![], vec![aaaa("fd12:3456::1")]),
        "zero.example" => (vec![a([0, 0, 0, 0])], vec![]),
        "azure.example" => (vec![a([168, 63, 129, 16])], vec![]),
        "bench.example" => (vec![a([198, 18, 0, 1])], vec![]),
        "receiver.example" => (vec![a([127, 0, 0, 1])], vec![]),
        "dual.example" => (vec![a([127, 0, 0, 1])], vec![aaaa("::1")]),
        // Classic rebinding: harmless the first time, loopback ever after.
        "rebind.example" if asked_before == 0 => (vec![Rdata::A(PUBLIC)], vec![]),
        "rebind.example" => (vec![a([127, 0, 0, 1])], vec![]),
        // The same against an allowlisted receiver: allowed first, an unlisted canary after.
        "rebind-local.example" if asked_before == 0 => (vec![a([127, 0, 0, 1])], vec![]),
        "rebind-local.example" => (vec![a([127, 0, 0, 2])], vec![]),
        "cname.example" => {
            let mut records = vec![(name.to_owned(), Rdata::Cname("loop.example"))];
            if qtype == TYPE_A {
                records.push(("loop.example".to_owned(), a([127, 0, 0, 1])));
            }
            return Reply {
                nxdomain: false,
                records,
            };
        }
        "nx.example" => {
            return Reply {
                nxdomain: true,
                records: vec![],
            };
        }
        // Whatever name a parser trick produces lands on the canaries.
        _ => (vec![a([127, 0, 0, 1])], vec![aaaa("::1")]),
    };
    let chosen = match qtype {
        TYPE_A => v4,
        TYPE_AAAA => v6,
        _ => vec![],
    };
    Reply {
        nxdomain: false,
        records: chosen.into_iter().map(|r| (name.to_owned(), r)).collect(),
    }
}

type Asked = Arc<Mutex<HashMap<(String, u16), usize>>>;

struct DnsServer {
    addr: SocketAddr,
    asked: Asked,
}

impl DnsServer {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let asked: Asked = Arc::default();
        let counts = Arc::clone(&asked);
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                if let Some(reply) = answer(&buf[..n], &counts) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Self { addr, asked }
    }

    fn asked(&self, name: &str, qtype: u16) -> usize {
        let asked = self.asked.lock().unwrap();
        asked.get(&(name.to_owned(), qtype)).copied().unwrap_or(0)
    }
}

fn answer(query: &[u8], asked: &Asked) -> Option<Vec<u8>> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = &query[12..at + 4];
    let name = labels.join(".");
    let before = {
        let mut asked = asked.lock().unwrap();
        let n = asked.entry((name.clone(), qtype)).or_insert(0);
        *n += 1;
        *n - 1
    };
    let reply = zone(&name, qtype, before);

    let rd = query[2] & 0x01;
    let rcode = if reply.nxdomain { 3 } else { 0 };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    out.push(0x84 | rd); // response, authoritative
    out.push(0x80 | rcode); // recursion available
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(reply.records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (owner, rdata) in &reply.records {
        encode_name(&mut out, owner);
        let (rtype, data) = match rdata {
            Rdata::A(ip) => (TYPE_A, ip.octets().to_vec()),
            Rdata::Aaaa(ip) => (TYPE_AAAA, ip.octets().to_vec()),
            Rdata::Cname(target) => {
                let mut data = Vec::new();
                encode_name(&mut data, target);
                (TYPE_CNAME, data)
            }
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        // TTL 0: every lookup reaches this server, as a rebinding attacker would arrange.
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

fn encode_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

// ---------------------------------------------------------------------------------------------
// Canaries and the receiver.

struct Canary {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn canary(ip: IpAddr) -> Option<Canary> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.ok()?;
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Some(Canary { port, hits })
}

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    redirect_to: Arc<Mutex<String>>,
}

struct Receiver {
    port: u16,
    connections: Arc<AtomicUsize>,
    seen: Seen,
}

async fn receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let seen = Seen::default();
    let app = Router::new()
        .route("/ok", post(ok))
        .route("/busy", post(busy))
        .route("/unavailable", post(unavailable))
        .route("/long", post(long))
        .route("/slow", post(slow))
        .route("/redirect", post(redirect))
        .with_state(seen.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Receiver {
        port,
        connections,
        seen,
    }
}

async fn ok(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> &'static str {
    seen.requests.lock().unwrap().push((headers, body));
    "accepted"
}

async fn busy() -> impl IntoResponse {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "7")],
        "slow down\r\n\x1b[31mplease\x07",
    )
}

async fn unavailable() -> impl IntoResponse {
    let when = std::time::SystemTime::now() + Duration::from_secs(120);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, httpdate::fmt_http_date(when))],
        "maintenance",
    )
}

async fn long() -> String {
    "x".repeat(5000)
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

async fn redirect(State(seen): State<Seen>) -> impl IntoResponse {
    let to = seen.redirect_to.lock().unwrap().clone();
    (StatusCode::FOUND, [(header::LOCATION, to)], "moved")
}

fn allowlisted(dns: Option<&DnsServer>) -> Egress {
    let policy = EgressPolicy {
        allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        ..EgressPolicy::development()
    };
    let resolver = match dns {
        Some(dns) => Resolver::Nameservers(vec![dns.addr]),
        None => Resolver::Nameservers(vec!["127.0.0.1:9".parse().unwrap()]),
    };
    Egress::new(policy, resolver).unwrap()
}

async fn post_to(
    egress: &Egress,
    raw: &str,
    timeout: Duration,
) -> Result<portcullis_egress::EgressResponse, EgressError> {
    let url = Url::parse(raw).unwrap();
    egress
        .post(&url, HeaderMap::new(), Bytes::from_static(b"{}"), timeout)
        .await
}

// ---------------------------------------------------------------------------------------------
// Hostile URLs.

/// `p4` is the canary on 127.0.0.1, `p2` the one on 127.0.0.2, `p6` the one on [::1].
///
/// Order matters for safety: forms that would land on a loopback canary come first in each
/// group, so a regression fails on a canary before any later form could send a packet to a
/// private or public address off this machine.
fn hostile_urls(p4: u16, p2: u16, p6: u16) -> Vec<String> {
    let forms: &[&str] = &[
        // IPv4 spelled every way a WHATWG parser accepts.
        "http://127.0.0.1:{p4}/",
        "http://127.1:{p4}/",
        "http://127.0.1:{p4}/",
        "http://2130706433:{p4}/",
        "http://0x7f000001:{p4}/",
        "http://0x7f.0x0.0x0.0x1:{p4}/",
        "http://0x7f.1:{p4}/",
        "http://0X7F.1:{p4}/",
        "http://0177.0.0.1:{p4}/",
        "http://0177.1:{p4}/",
        "http://017700000001:{p4}/",
        "http://0x7f.0.0.0x1:{p4}/",
        "http://127.000.000.001:{p4}/",
        "http://127.0.0.1.:{p4}/",
        "http://0:{p4}/",
        "http://0.0.0.0:{p4}/",
        "http://0x0:{p4}/",
        "http://127.127.127.127:{p4}/",
        "http://127.0.0.2:{p2}/",
        "http://2130706434:{p2}/",
        "http://%31%32%37.0.0.1:{p4}/",
        "http://127%2e0%2e0%2e1:{p4}/",
        "http://①②⑦.⓪.⓪.①:{p4}/",
        "http://１２７．０．０．１:{p4}/",
        "http://127。0。0。1:{p4}/",
        "http://127.0.0.1:0{p4}/",
        "HTTP://127.0.0.1:{p4}/",
        "https://127.0.0.1:{p4}/",
        "http://127.0.\t0.1:{p4}/",
        "  http://127.0.0.1:{p4}/  ",
        "http:/\\127.0.0.1:{p4}/",
        "http:\\\\127.0.0.1:{p4}\\",
        "http:127.0.0.1:{p4}/",
        // IPv6 literals and IPv4 embedded in IPv6.
        "http://[::1]:{p6}/",
        "http://[0:0:0:0:0:0:0:1]:{p6}/",
        "http://[::]:{p6}/",
        "http://[::]:{p4}/",
        "http://[::ffff:127.0.0.1]:{p4}/",
        "http://[::ffff:7f00:1]:{p4}/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]:{p4}/",
        "http://[::ffff:127.0.0.2]:{p2}/",
        "http://[::ffff:0:127.0.0.1]:{p4}/",
        "http://[::127.0.0.1]:{p4}/",
        "http://[::7f00:1]:{p4}/",
        "http://[64:ff9b::127.0.0.1]:{p4}/",
        "http://[64:ff9b::7f00:1]:{p4}/",
        "http://[64:ff9b:1::7f00:1]:{p4}/",
        "http://[2002:7f00:1::]:{p4}/",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{p4}/",
        "http://[2001:db8::1]:{p4}/",
        "http://[fe80::1]:{p6}/",
        "http://[fc00::1]:{p6}/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fec0::1]:{p6}/",
        "http://[ff02::1]:{p6}/",
        "http://[100::1]:{p6}/",
        "http://[3fff::1]:{p6}/",
        "http://[5f00::1]:{p6}/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a00:1]:{p4}/",
        // Private, shared, metadata and other special-purpose IPv4.
        "http://10.0.0.1:{p4}/",
        "http://10.255.255.255:{p4}/",
        "http://172.16.0.1:{p4}/",
        "http://172.31.255.255:{p4}/",
        "http://192.168.0.1:{p4}/",
        "http://192.168.255.254:{p4}/",
        "http://100.64.0.1:{p4}/",
        "http://100.127.255.254:{p4}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254:{p4}/",
        "http://169.254.170.2/v2/credentials",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://100.100.100.200/latest/meta-data/",
        "http://168.63.129.16/machine",
        "http://192.0.0.192/",
        "http://192.0.0.1:{p4}/",
        "http://192.0.2.1:{p4}/",
        "http://192.88.99.1:{p4}/",
        "http://198.18.0.1:{p4}/",
        "http://198.51.100.1:{p4}/",
        "http://203.0.113.1:{p4}/",
        "http://224.0.0.1:{p4}/",
        "http://239.255.255.250:1900/",
        "http://240.0.0.1:{p4}/",
        "http://255.255.255.255:{p4}/",
        // Names refused outright or resolving inward.
        "http://loop.example:{p4}/",
        "http://localhost:{p4}/",
        "http://LOCALHOST:{p4}/",
        "http://localhost.:{p4}/",
        "http://foo.localhost:{p4}/",
        "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{p4}/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata.google.internal./computeMetadata/v1/",
        "http://printer.local:{p4}/",
        "http://router.home.arpa:{p4}/",
        "http://service.internal:{p4}/",
        "http://private.example:{p4}/",
        "http://loop.example.:{p4}/",
        "http://LOOP.EXAMPLE:{p4}/",
        "http://loop.example..:{p4}/",
        "https://loop.example:{p4}/",
        "http://loop2.example:{p2}/",
        "http://mixed.example:{p4}/",
        "http://mixed6.example:{p6}/",
        "http://dual.example:{p4}/",
        "http://cgnat.example:{p4}/",
        "http://metadata.example/latest/meta-data/",
        "http://meta6.example/latest/meta-data/",
        "http://v6loop.example:{p6}/",
        "http://mapped.example:{p4}/",
        "http://nat64.example:{p4}/",
        "http://sixtofour.example:{p4}/",
        "http://teredo.example:{p4}/",
        "http://ula.example:{p6}/",
        "http://zero.example:{p4}/",
        "http://azure.example/machine",
        "http://bench.example:{p4}/",
        "http://cname.example:{p4}/",
        "http://nx.example:{p4}/",
        "http://bücher.example:{p4}/",
        "http://xn--bcher-kva.example:{p4}/",
        "http://ᴸᴼᴼᴾ.example:{p4}/",
        "http://unknown:{p4}/",
        // Userinfo, fragments and separators that make a reader see another host.
        "http://good.example@127.0.0.1:{p4}/",
        "http://good.example:443@127.0.0.1:{p4}/",
        "http://user:pass@loop.example:{p4}/",
        "http://%40@127.0.0.1:{p4}/",
        "http://:@127.0.0.1:{p4}/",
        "http://127.0.0.1:{p4}#@good.example/",
        "http://127.0.0.1:{p4}?@good.example/",
        "http://good.example\\@127.0.0.1:{p4}/",
        "http://127.0.0.1:{p4}\\@good.example/",
        "http://good.example%40127.0.0.1:{p4}/",
        "http://good.example%2f@127.0.0.1:{p4}/",
        "http://good.example#@127.0.0.1:{p4}/",
        "http://127.0.0.1:{p4}:80/",
        "http://127.0.0.1 :{p4}/",
        "http://[::1]@good.example:{p6}/",
        // Schemes that are not HTTP.
        "file:///etc/passwd",
        "gopher://127.0.0.1:{p4}/_GET",
        "ftp://127.0.0.1:{p4}/",
        "ws://127.0.0.1:{p4}/",
        "dict://127.0.0.1:{p4}/",
        "data:text/plain,hello",
        "javascript:alert(1)",
        "//127.0.0.1:{p4}/",
        "",
        "http://",
    ];
    forms
        .iter()
        .map(|f| {
            f.replace("{p4}", &p4.to_string())
                .replace("{p2}", &p2.to_string())
                .replace("{p6}", &p6.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_urls_never_reach_the_canaries() {
    install_crypto();
    let c4 = canary(Ipv4Addr::LOCALHOST.into()).await.unwrap();
    let c2 = canary(Ipv4Addr::new(127, 0, 0, 2).into()).await.unwrap();
    // IPv6 may be disabled on the host; the IPv6 forms are still refused, just not dialable.
    let c6 = canary(Ipv6Addr::LOCALHOST.into()).await;
    let p6 = c6.as_ref().map_or(c4.port, |c| c.port);
    let dns = DnsServer::start().await;
    let egress = Egress::new(
        EgressPolicy::development(),
        Resolver::Nameservers(vec![dns.addr]),
    )
    .unwrap();

    let urls = hostile_urls(c4.port, c2.port, p6);
    assert!(urls.len() >= 100, "only {} hostile URLs", urls.len());
    let mut codes: HashMap<&'static str, usize> = HashMap::new();
    let mut posted = 0;
    for raw in &urls {
        match egress.vet_url(raw).await {
            Ok(url) => panic!("vet_url accepted {raw:?} as {url}"),
            Err(b) => *codes.entry(b.code()).or_default() += 1,
        }
        // A string that does not even parse can never be posted to.
        let Ok(url) = Url::parse(raw) else { continue };
        posted += 1;
        let result = egress
            .post(
                &url,
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                Duration::from_secs(3),
            )
            .await;
        match result {
            Ok(r) => panic!("post to {raw:?} got a response: {}", r.status),
            Err(EgressError::Blocked(_)) => {}
            // Only a name that does not exist fails any other way.
            Err(e) if raw.contains("nx.example") => assert_eq!(e.class(), "connect", "{e}"),
            Err(e) => panic!(
                "post to {raw:?} failed as {} rather than blocked: {e}",
                e.class()
            ),
        }
    }
    println!(
        "{} hostile URLs, {posted} posted; refusals by code: {codes:?}",
        urls.len()
    );

    // DNS rebinding: the answer is public when the URL is saved, loopback at delivery.
    let rebind = format!("http://rebind.example:{}/hook", c4.port);
    assert!(
        egress.vet_url(&rebind).await.is_ok(),
        "first answer is public"
    );
    assert_eq!(dns.asked("rebind.example", TYPE_A), 1);
    // Prove nothing cached the public answer before posting (so a broken guard could only
    // ever dial loopback, never the outside world).
    assert_eq!(
        egress.vet_url(&rebind).await.unwrap_err().code(),
        "non_public_address"
    );
    let err = post_to(&egress, &rebind, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert_eq!(err.class(), "blocked", "{err}");
    assert!(
        dns.asked("rebind.example", TYPE_A) >= 3,
        "post must resolve afresh"
    );

    // Rebinding against an allowlisted receiver: allowed at save time, an unlisted address
    // at delivery.
    let allow = allowlisted(Some(&dns));
    let rebind_local = format!("http://rebind-local.example:{}/", c2.port);
    assert!(allow.vet_url(&rebind_local).await.is_ok());
    let err = post_to(&allow, &rebind_local, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert_eq!(err.class(), "blocked", "{err}");

    // An allowlisted receiver answering with redirects inward: the 3xx is the response.
    let rx = receiver().await;
    for target in [
        format!("http://127.0.0.2:{}/", c2.port),
        format!("http://loop2.example:{}/", c2.port),
        format!("http://[::1]:{p6}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        *rx.seen.redirect_to.lock().unwrap() = target.clone();
        for host in ["127.0.0.1", "receiver.example"] {
            let url = format!("http://{host}:{}/redirect", rx.port);
            let response = post_to(&allow, &url, Duration::from_secs(3)).await.unwrap();
            assert_eq!(response.status, 302, "redirect to {target}");
            assert_eq!(response.excerpt, "moved");
        }
    }

    // Give any connection a broken guard might have started time to land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c4.hits.load(Ordering::SeqCst),
        0,
        "canary on 127.0.0.1 was reached"
    );
    assert_eq!(
        c2.hits.load(Ordering::SeqCst),
        0,
        "canary on 127.0.0.2 was reached"
    );
    if let Some(c6) = &c6 {
        assert_eq!(
            c6.hits.load(Ordering::SeqCst),
            0,
            "canary on [::1] was reached"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What must work.

#[tokio::test]
async fn post_to_an_allowlisted_receiver() {
    install_crypto();
    let rx = receiver().await;
    let egress = allowlisted(None);
    let base = format!("http://127.0.0.1:{}", rx.port);

    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", "msg_1".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    let url = Url::parse(&format!("{base}/ok?token=secret")).unwrap();
    let body = Bytes::from_static(br#"{"type":"message.delivered"}"#);
    let response = egress
        .post(&url, headers, body.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.excerpt, "accepted");
    assert_eq!(response.retry_after, None);
    assert!(response.latency > Duration::ZERO && response.latency < Duration::from_secs(5));
    {
        let seen = rx.seen.requests.lock().unwrap();
        let (headers, received) = seen.last().unwrap();
        assert_eq!(headers["webhook-id"], "msg_1");
        assert_eq!(received, &body);
    }

    let busy = post_to(&egress, &format!("{base}/busy"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(busy.status, 429);
    assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(busy.excerpt, "slow down  \u{FFFD}[31mplease\u{FFFD}");

    let unavailable = post_to(
        &egress,
        &format!("{base}/unavailable"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(unavailable.status, 503);
    let wait = unavailable.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );

    let long = post_to(&egress, &format!("{base}/long"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(long.status, 200);
    assert_eq!(long.excerpt, "x".repeat(200));

    assert!(egress.vet_url(&format!("{base}/ok")).await.is_ok());
}

#[tokio::test]
async fn connections_are_pooled_across_posts_and_clones() {
    install_crypto();
    let rx = receiver().await;
    let egress = allowlisted(None);
    let url = format!("http://127.0.0.1:{}/ok", rx.port);
    for i in 0..20 {
        let e = if i % 2 == 0 {
            egress.clone()
        } else {
            egress.clone().clone()
        };
        let r = post_to(&e, &url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(rx.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn names_are_dialled_only_at_vetted_addresses() {
    install_crypto();
    let rx = receiver().await;
    let dns = DnsServer::start().await;
    let egress = allowlisted(Some(&dns));
    let url = format!("http://receiver.example:{}/ok", rx.port);
    assert!(egress.vet_url(&url).await.is_ok());
    let r = post_to(&egress, &url, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let host = rx.seen.requests.lock().unwrap().last().unwrap().0[header::HOST]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(host, format!("receiver.example:{}", rx.port));

    // 127.0.0.1 is allowlisted but ::1 is not: one refused record refuses the name.
    let dual = format!("http://dual.example:{}/ok", rx.port);
    assert_eq!(
        egress.vet_url(&dual).await.unwrap_err().code(),
        "non_public_address"
    );
    assert_eq!(
        post_to(&egress, &dual, Duration::from_secs(5))
            .await
            .unwrap_err()
            .class(),
        "blocked"
    );
    let nx = format!("http://nx.example:{}/ok", rx.port);
    assert_eq!(
        egress.vet_url(&nx).await.unwrap_err().code(),
        "unresolvable"
    );
}

#[tokio::test]
async fn port_allowlist_applies() {
    install_crypto();
    let rx = receiver().await;
    let url = format!("http://127.0.0.1:{}/ok", rx.port);
    let make = |ports: Vec<u16>| {
        let policy = EgressPolicy {
            allow_http: true,
            allowed_ports: Some(ports),
            allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        };
        Egress::new(
            policy,
            Resolver::Nameservers(vec!["127.0.0.1:9".parse().unwrap()]),
        )
        .unwrap()
    };

    let open = make(vec![443, rx.port]);
    assert_eq!(
        open.policy().allowed_ports.as_deref(),
        Some(&[443, rx.port][..])
    );
    assert_eq!(
        post_to(&open, &url, Duration::from_secs(5))
            .await
            .unwrap()
            .status,
        200
    );

    let closed = make(EgressPolicy::PRODUCTION_PORTS.to_vec());
    assert_eq!(closed.vet_url(&url).await.unwrap_err().code(), "port");
    match post_to(&closed, &url, Duration::from_secs(5)).await {
        Err(EgressError::Blocked(b)) => assert_eq!(b.code(), "port"),
        other => panic!("expected a port refusal, got {other:?}"),
    }
    assert_eq!(rx.seen.requests.lock().unwrap().len(), 1);

    let production = EgressPolicy {
        allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        ..EgressPolicy::production()
    };
    assert_eq!(
        production
            .check_url(&format!("http://127.0.0.1:{}/", rx.port))
            .unwrap_err()
            .code(),
        "insecure_scheme"
    );
    assert!(production.check_url("https://127.0.0.1:8443/").is_ok());
    assert_eq!(
        production
            .check_url("https://127.0.0.1:8080/")
            .unwrap_err()
            .code(),
        "port"
    );
}

#[tokio::test]
async fn a_slow_receiver_times_out() {
    install_crypto();
    let rx = receiver().await;
    let egress = allowlisted(None);
    let started = std::time::Instant::now();
    let err = post_to(
        &egress,
        &format!("http://127.0.0.1:{}/slow", rx.port),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert_eq!(err, EgressError::Timeout);
    assert_eq!(err.class(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    install_crypto();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let egress = allowlisted(None);
    let err = post_to(
        &egress,
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), "connect", "{err}");
    assert!(
        !err.to_string().contains("http://"),
        "no URL in errors: {err}"
    );
}

#[tokio::test]
async fn a_failed_handshake_is_a_tls_error() {
    install_crypto();
    let rx = receiver().await;
    let policy = EgressPolicy {
        allow_http: false,
        allowed_ports: None,
        allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
    };
    let egress = Egress::new(
        policy,
        Resolver::Nameservers(vec!["127.0.0.1:9".parse().unwrap()]),
    )
    .unwrap();
    // A plain-HTTP server answers the ClientHello with an HTTP error page.
    let err = post_to(
        &egress,
        &format!("https://127.0.0.1:{}/ok", rx.port),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), "tls", "{err}");
}
