//! Credentials as an attacker presents them: malformed, misplaced, guessed, repeated.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::both_backends;
use crate::helpers::{Backend, Options, TestApp, status_json};

both_backends!(
    every_malformed_authorization_is_the_same_401,
    keys_anywhere_but_the_authorization_header_are_ignored,
    wrong_key_and_unknown_prefix_take_the_same_time,
    brute_force_cycle_over_raw_tcp,
    spoofed_forwarding_headers_from_an_untrusted_peer_change_nothing,
    a_trusted_proxy_names_the_client_by_its_last_untrusted_hop,
);

async fn every_malformed_authorization_is_the_same_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    let unknown = format!("pcl_live_{}", "A".repeat(32));
    let same_prefix_wrong_key = format!("{}{}", &key[..13], "Z".repeat(28));
    let forms: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("   ".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("bearer {key}")),
        Some(format!("BEARER {key}")),
        Some(format!("Bearer  {key}")),
        Some(format!("Bearer\t{key}")),
        Some(format!("Basic {key}")),
        Some(format!("Token {key}")),
        Some(key.clone()),
        Some(format!("Bearer {}", &key[..40])),
        Some(format!("Bearer {key}x")),
        Some(format!("Bearer {key},{key}")),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {same_prefix_wrong_key}")),
        Some(format!("Bearer {}", key.replace("pcl_live_", "pcl_test_"))),
        Some(format!("Bearer {}", key.replace("pcl_live_", "pcl_prod_"))),
        Some(format!("Bearer {}", key.to_uppercase())),
        Some("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJrZXlfMSJ9.".to_owned()),
        Some(format!("Bearer {}", "A".repeat(8000))),
    ];
    // Each from its own address: more than ten failures from one would (rightly) block it.
    for (n, form) in forms.into_iter().enumerate() {
        let mut req = app.client_from(10 + n as u8).get(app.url("/v1/app"));
        if let Some(h) = &form {
            req = req.header("Authorization", h);
        }
        let (status, body) = status_json(req.send().await.unwrap()).await;
        assert_eq!(status, 401, "{form:?}");
        assert_eq!(body["error"], "Invalid API key");
        assert_eq!(body["code"], "unauthorized");
    }
    // Two Authorization headers, the second one valid: refused, not "first wins".
    let res = app
        .client_from(60)
        .get(app.url("/v1/app"))
        .header("Authorization", "Bearer nonsense")
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (status, body) = app.get("/v1/app", &key).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

async fn keys_anywhere_but_the_authorization_header_are_ignored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    for (n, q) in [
        "api_key",
        "key",
        "access_token",
        "token",
        "apikey",
        "authorization",
    ]
    .iter()
    .enumerate()
    {
        let res = app
            .client_from(20 + n as u8)
            .get(app.url(&format!("/v1/app?{q}={key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "?{q}=");
    }
    for (n, h) in ["x-api-key", "api-key", "x-auth-token", "cookie"]
        .iter()
        .enumerate()
    {
        let value = if *h == "cookie" {
            format!("api_key={key}")
        } else {
            key.clone()
        };
        let res = app
            .client_from(30 + n as u8)
            .get(app.url("/v1/app"))
            .header(*h, value)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{h}");
    }
    // Nor in a body.
    let res = app
        .client_from(40)
        .post(app.url("/v1/messages"))
        .json(&json!({"api_key": key, "to": "+14155550100", "body": "x", "purpose": "otp"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;
}

/// A wrong key whose prefix exists and a key whose prefix does not must cost the same: a
/// difference would let an attacker confirm prefixes one request at a time. Both kinds are
/// interleaved over one connection (forwarded from a trusted proxy, each with its own
/// client address, so the brute-force table does not step in), and the medians compared.
async fn wrong_key_and_unknown_prefix_take_the_same_time(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| c.trusted_proxies = Some("127.0.0.1/32".into()),
            ..Default::default()
        },
    )
    .await;
    let key = app.admin_key.clone();
    let wrong = format!("{}{}", &key[..13], "Q".repeat(28));
    let unknown = format!("pcl_live_Zz9Y{}", "Q".repeat(28));
    let mut n = 0u32;
    let mut time = |credential: String| {
        n += 1;
        let client = app.client.clone();
        let url = app.url("/v1/app");
        let xff = format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
        async move {
            let started = Instant::now();
            let res = client
                .get(url)
                .bearer_auth(credential)
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap();
            let took = started.elapsed();
            assert_eq!(res.status(), 401);
            took
        }
    };
    for _ in 0..30 {
        time(wrong.clone()).await;
        time(unknown.clone()).await;
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        a.push(time(wrong.clone()).await);
        b.push(time(unknown.clone()).await);
    }
    a.sort();
    b.sort();
    let (ma, mb) = (a[a.len() / 2], b[b.len() / 2]);
    let diff = ma.abs_diff(mb);
    let tolerance = Duration::from_micros(150).max(ma.min(mb) / 10);
    assert!(
        diff <= tolerance,
        "median wrong-key {ma:?} vs unknown-prefix {mb:?}: {diff:?} apart (tolerance {tolerance:?})"
    );
    app.stop().await;
}

/// One raw HTTP/1.1 exchange on a fresh connection from 127.0.0.`from`.
async fn raw_request(addr: SocketAddr, from: u8, request: &str) -> (u16, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, from], 0)))
        .unwrap();
    let mut stream: TcpStream = socket.connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get_app(key: &str) -> String {
    format!(
        "GET /v1/app HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
}

async fn brute_force_cycle_over_raw_tcp(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let addr: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let guess = |i: usize| format!("pcl_live_{:032}", i);
    for i in 0..10 {
        let (status, _) = raw_request(addr, 77, &get_app(&guess(i))).await;
        assert_eq!(status, 401, "guess {i}");
    }
    // The eleventh request is refused before authentication, even with the right key.
    let (status, text) = raw_request(addr, 77, &get_app(&app.admin_key)).await;
    assert_eq!(status, 429, "{text}");
    let lower = text.to_ascii_lowercase();
    let retry: u64 = lower
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((890..=900).contains(&retry), "{retry}");
    assert!(lower.contains("x-content-type-options: nosniff"));
    assert!(text.contains(r#""error":"Too many requests""#), "{text}");
    // Every route, including ones without authentication.
    let (status, _) = raw_request(
        addr,
        77,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 429);
    // The neighbour is untouched.
    let (status, text) = raw_request(addr, 78, &get_app(&app.admin_key)).await;
    assert_eq!(status, 200, "{text}");
    app.stop().await;
}

async fn spoofed_forwarding_headers_from_an_untrusted_peer_change_nothing(backend: Backend) {
    // Dev mode trusts no proxy: forwarding headers from the peer are just text.
    let app = TestApp::spawn(backend).await;
    let client = app.client_from(90);
    for i in 0..10 {
        let res = client
            .get(app.url("/v1/app"))
            .bearer_auth(format!("pcl_live_{:032}", i))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=203.0.113.{i};proto=https"))
            .header("x-real-ip", format!("192.0.2.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    // Rotating the claimed address did not spread the failures: the peer is blocked.
    let res = client
        .get(app.url("/v1/app"))
        .bearer_auth(&app.admin_key)
        .header("x-forwarded-for", "192.0.2.250")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    app.stop().await;
}

async fn a_trusted_proxy_names_the_client_by_its_last_untrusted_hop(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| c.trusted_proxies = Some("127.0.0.1/32,10.0.0.0/8".into()),
            ..Default::default()
        },
    )
    .await;
    // The client forges leftmost entries; the proxies append what they saw.
    for i in 0..10 {
        let res = app
            .client
            .get(app.url("/v1/app"))
            .bearer_auth(format!("pcl_live_{:032}", i))
            .header(
                "x-forwarded-for",
                format!("192.0.2.{i}, 203.0.113.7, 10.1.1.1"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let as_client = |xff: &'static str| {
        app.client
            .get(app.url("/v1/app"))
            .bearer_auth(&app.admin_key)
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(as_client("203.0.113.7").await.unwrap().status(), 429);
    assert_eq!(
        as_client("192.0.2.99, 203.0.113.7, 10.9.9.9")
            .await
            .unwrap()
            .status(),
        429
    );
    // The proxy itself, and other clients behind it, are not blocked.
    assert_eq!(as_client("203.0.113.8").await.unwrap().status(), 200);
    assert_eq!(as_client("10.2.2.2").await.unwrap().status(), 200);
    app.stop().await;
}
