//! Messages per second through the Twilio adapter, against a local stand-in for
//! api.twilio.com, with the token and signature work included.
//!
//! ```sh
//! cargo bench -p portcullis-providers --bench twilio
//! TWILIO_BENCH_MESSAGES=20000 TWILIO_BENCH_CONCURRENCY=1,8,32,128 \
//!   cargo bench -p portcullis-providers --bench twilio
//! ```
//!
//! - **The stand-in** is an axum server on 127.0.0.1 speaking Twilio's Messages API:
//!   `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded. For every
//!   request it checks HTTP Basic auth (decodes the header and compares account SID and
//!   auth token), parses the form, checks `To`, `From`, `Body` and `StatusCallback`, mints
//!   an `SM` + 32 hex sid and answers `201` with the JSON body Twilio sends. It runs on its
//!   own runtime and threads (`standin-*`), so its CPU is counted apart from the adapter's.
//! - **The adapter** is the real [`TwilioProvider`], driven through the [`Provider`] trait
//!   with the real shared HTTP client ([`twilio::http_client`]): `concurrency` tasks send
//!   back to back (closed loop) until `messages` sends are done, on their own runtime
//!   (`adapter-*` threads). No `sender_mps` is configured, and the adapter does not pace
//!   anyway (pacing is the pipeline's), so nothing here waits for a rate limit.
//! - **The signature work**: after each `201`, the task plays Twilio and signs the status
//!   callback Twilio would send for that message (`X-Twilio-Signature`, computed here
//!   independently: base64 of HMAC-SHA1 keyed with the auth token over the callback URL
//!   followed by the sorted parameters), form-encodes it, then plays the gateway: parses the
//!   form body as the callback route does and checks the signature with the gateway's own
//!   [`twilio::verify_signature`] and [`twilio::receipt_status`]. Every one must verify.
//! - **Reported**: messages/s (sends done / wall time of the measured phase), latency of
//!   `Provider::send` (p50, p90, p99, max), the mean cost of signing and of verifying, and
//!   CPU time per message from the kernel's per-thread accounting (`/proc/self/task/*/stat`,
//!   the same utime + stime that `getrusage` sums), split into adapter threads and stand-in
//!   threads.
//!
//! Environment: `TWILIO_BENCH_MESSAGES` (default 20000), `TWILIO_BENCH_CONCURRENCY` (a
//! comma-separated list, default `1,8,32,128`), `TWILIO_BENCH_WARMUP` (default 2000, per
//! concurrency), `TWILIO_BENCH_ADAPTER_THREADS` and `TWILIO_BENCH_STANDIN_THREADS` (worker
//! threads of each runtime, default 1 each).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use portcullis_domain::{Channel, ConnectionId, E164, Encoding, MessageId, MessageStatus};
use portcullis_providers::twilio::{self, AuthToken, TwilioConfig, TwilioProvider};
use portcullis_providers::{OutboundMessage, Provider};
use serde_json::json;
use sha1::Sha1;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "bench-auth-token-0123456789abcdef";
const FROM: &str = "+14155550199";
const PUBLIC_URL: &str = "https://gateway.example.com";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// The stand-in for api.twilio.com.

struct StandIn {
    account_sid: String,
    auth_token: String,
    from_numbers: Vec<String>,
    sids: AtomicU64,
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        })
        .to_string(),
    )
        .into_response()
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, checked as Twilio checks it.
async fn create_message(
    State(st): State<Arc<StandIn>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let authenticated = account == st.account_sid
        && credentials.as_deref().and_then(|c| c.split_once(':'))
            == Some((st.account_sid.as_str(), st.auth_token.as_str()));
    if !authenticated {
        return twilio_error(401, 20003, "Authenticate");
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return twilio_error(400, 21604, "A 'To' phone number is required.");
    }
    let (mut to, mut from, mut text, mut callback) = (None, None, None, None);
    for (k, v) in url::form_urlencoded::parse(&body) {
        let slot = match k.as_ref() {
            "To" => &mut to,
            "From" => &mut from,
            "Body" => &mut text,
            "StatusCallback" => &mut callback,
            other => return twilio_error(400, 20001, &format!("Unexpected parameter {other}")),
        };
        if slot.replace(v.into_owned()).is_some() {
            return twilio_error(400, 20001, &format!("Repeated parameter {k}"));
        }
    }
    let (Some(to), Some(from), Some(text), Some(_callback)) = (to, from, text, callback) else {
        return twilio_error(400, 21602, "Message body is required.");
    };
    if !st.from_numbers.contains(&from) {
        return twilio_error(
            400,
            21606,
            "The From phone number is not a valid, SMS-capable inbound phone number or short code for your account.",
        );
    }
    let n = st.sids.fetch_add(1, Ordering::Relaxed);
    let sid = format!(
        "SM{:032x}",
        (u128::from(std::process::id()) << 64) | u128::from(n)
    );
    let date = "Mon, 23 Nov 2026 09:30:00 +0000";
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": text,
            "date_created": date,
            "date_sent": null,
            "date_updated": date,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": from,
            "messaging_service_sid": null,
            "num_media": "0",
            "num_segments": "1",
            "price": null,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {
                "media": format!("/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json")
            },
            "to": to,
            "uri": format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json"),
        })
        .to_string(),
    )
        .into_response()
}

/// Starts the stand-in on its own runtime and threads; returns its base URL.
fn start_stand_in(threads: usize) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("standin-main".to_owned())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("standin-worker")
                .enable_all()
                .build()
                .expect("stand-in runtime");
            rt.block_on(async move {
                let state = Arc::new(StandIn {
                    account_sid: ACCOUNT_SID.to_owned(),
                    auth_token: AUTH_TOKEN.to_owned(),
                    from_numbers: vec![FROM.to_owned()],
                    sids: AtomicU64::new(1),
                });
                let app = axum::Router::new()
                    .route(
                        "/2010-04-01/Accounts/{account}/Messages.json",
                        axum::routing::post(create_message),
                    )
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("address");
                tx.send(format!("http://{addr}")).expect("report address");
                axum::serve(listener, app).await.expect("stand-in serves");
            });
        })
        .expect("stand-in thread");
    rx.recv().expect("stand-in address")
}

// ---------------------------------------------------------------------------------------
// Playing Twilio's side of a status callback, then the gateway's.

/// `X-Twilio-Signature`, written here from Twilio's documentation rather than taken from
/// the crate: base64(HMAC-SHA1(auth token, url + every name and value, sorted by name)).
fn twilio_signs(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(token.as_bytes()).expect("any key size");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The form body and signature of the `delivered` status callback for `sid`.
fn status_callback(url: &str, sid: &str, to: &str) -> (String, String) {
    let params = [
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("From", FROM),
        ("MessageSid", sid),
        ("MessageStatus", "delivered"),
        ("SmsSid", sid),
        ("SmsStatus", "delivered"),
        ("To", to),
    ];
    let signature = twilio_signs(AUTH_TOKEN, url, &params);
    let body = serde_urlencoded::to_string(params).expect("form");
    (body, signature)
}

/// What the callback route does with it: parse the form, check the signature, read the
/// status.
fn gateway_verifies(token: &AuthToken, url: &str, body: &str, signature: &str) -> bool {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    twilio::verify_signature(token, url, &params, signature)
        && params
            .iter()
            .find(|(k, _)| k == "MessageStatus")
            .and_then(|(_, v)| twilio::receipt_status(v))
            == Some(MessageStatus::Delivered)
}

// ---------------------------------------------------------------------------------------
// The load.

/// `+1 415 NXX XXXX`, distinct for every `i` below 7,992,000.
fn recipient(i: u64) -> E164 {
    let exchange = 200 + (i / 9_990) % 800;
    let line = 10 + i % 9_990;
    E164::parse(&format!("+1415{exchange:03}{line:04}")).expect("valid number")
}

#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    sign_ns: u128,
    verify_ns: u128,
    failures: u64,
}

async fn sender(
    provider: Arc<dyn Provider>,
    token: AuthToken,
    callback_url: Arc<str>,
    next: Arc<AtomicU64>,
    end: u64,
) -> TaskResult {
    let mut r = TaskResult::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= end {
            return r;
        }
        let msg = OutboundMessage {
            id: MessageId::new(),
            to: recipient(i),
            from: Some(FROM.to_owned()),
            channel: Channel::Sms,
            body: format!(
                "Your code is {:06}. Message {i} of the Twilio adapter bench.",
                i % 1_000_000
            ),
            encoding: Encoding::Gsm7,
            segments: 1,
            template: None,
            parts_sent: Vec::new(),
        };
        let started = Instant::now();
        let sent = provider.send(&msg).await;
        r.latencies_us
            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        let accepted = match sent {
            Ok(a) => a,
            Err(e) => {
                r.failures += 1;
                if r.failures <= 3 {
                    eprintln!("send failed: {e}");
                }
                continue;
            }
        };
        let t = Instant::now();
        let (body, signature) = status_callback(
            &callback_url,
            &accepted.provider_message_id,
            msg.to.as_str(),
        );
        let signed = Instant::now();
        let ok = gateway_verifies(&token, &callback_url, &body, &signature);
        r.verify_ns += signed.elapsed().as_nanos();
        r.sign_ns += signed.duration_since(t).as_nanos();
        assert!(ok, "a correctly signed callback did not verify");
    }
}

/// CPU seconds (utime + stime) of this process's threads, by name prefix, from
/// `/proc/self/task/*/stat`.
fn thread_cpu() -> (f64, f64, f64) {
    const USER_HZ: f64 = 100.0;
    let (mut adapter, mut standin, mut total) = (0.0, 0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0, 0.0);
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        let secs = (ticks(11) + ticks(12)) / USER_HZ;
        total += secs;
        if comm.starts_with("adapter") {
            adapter += secs;
        } else if comm.starts_with("standin") {
            standin += secs;
        }
    }
    (adapter, standin, total)
}

/// The process's own CPU time (all threads, including exited ones), from
/// `/proc/self/stat`.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

async fn phase(
    provider: &Arc<dyn Provider>,
    token: &AuthToken,
    callback_url: &Arc<str>,
    first: u64,
    count: u64,
    concurrency: usize,
) -> (Duration, TaskResult) {
    let next = Arc::new(AtomicU64::new(first));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        tasks.spawn(sender(
            provider.clone(),
            token.clone(),
            callback_url.clone(),
            next.clone(),
            first + count,
        ));
    }
    let mut all = TaskResult::default();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("sender task");
        all.latencies_us.extend(r.latencies_us);
        all.sign_ns += r.sign_ns;
        all.verify_ns += r.verify_ns;
        all.failures += r.failures;
    }
    (started.elapsed(), all)
}

fn main() {
    let messages: u64 = env_or("TWILIO_BENCH_MESSAGES", 20_000);
    let warmup: u64 = env_or("TWILIO_BENCH_WARMUP", 2_000);
    let concurrencies: Vec<usize> = std::env::var("TWILIO_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32,128".to_owned())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .filter(|c| *c > 0)
        .collect();
    let adapter_threads: usize = env_or("TWILIO_BENCH_ADAPTER_THREADS", 1);
    let standin_threads: usize = env_or("TWILIO_BENCH_STANDIN_THREADS", 1);
    // `cargo bench` passes `--bench`; arguments are ignored.
    let base_url = start_stand_in(standin_threads.max(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(adapter_threads.max(1))
        .thread_name("adapter-worker")
        .enable_all()
        .build()
        .expect("adapter runtime");

    let config = TwilioConfig::from_json(&json!({
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_numbers": [FROM],
        "base_url": base_url,
    }))
    .expect("configuration");
    assert!(config.sender_mps.is_none(), "no pacing configured");
    let token = config.auth_token.clone();
    let connection = ConnectionId::from_trusted("conn_twiliobench".to_owned());
    let callback_url: Arc<str> = twilio::callback_url(PUBLIC_URL, &connection, "status").into();
    let client = twilio::http_client().expect("HTTP client");
    let provider: Arc<dyn Provider> =
        Arc::new(TwilioProvider::new(connection, config, PUBLIC_URL, client));
    assert!(provider.sender_rate().is_none());

    // The verification is not vacuous.
    let (body, signature) = status_callback(
        &callback_url,
        "SM0123456789abcdef0123456789abcdef",
        "+14155552671",
    );
    assert!(gateway_verifies(&token, &callback_url, &body, &signature));
    assert!(!gateway_verifies(
        &token,
        &callback_url,
        &body.replace("delivered", "failed"),
        &signature
    ));
    assert!(!gateway_verifies(
        &AuthToken::new("another-token".to_owned()),
        &callback_url,
        &body,
        &signature
    ));

    println!(
        "Twilio adapter -> local stand-in ({base_url}), {messages} messages per run, warm-up {warmup}, \
         adapter threads {adapter_threads}, stand-in threads {standin_threads}"
    );
    println!(
        "{:>11} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>11} {:>11} {:>11}",
        "concurrency",
        "msgs/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "sign µs",
        "verify µs",
        "adapter µs",
        "stand-in µs",
        "process µs"
    );
    let mut first = 0u64;
    for &concurrency in &concurrencies {
        rt.block_on(async {
            let (_, w) = phase(&provider, &token, &callback_url, first, warmup, concurrency).await;
            assert_eq!(w.failures, 0, "warm-up sends failed");
            first += warmup;
            let (a0, s0, _) = thread_cpu();
            let p0 = process_cpu();
            let (elapsed, mut r) =
                phase(&provider, &token, &callback_url, first, messages, concurrency).await;
            let (a1, s1, _) = thread_cpu();
            let p1 = process_cpu();
            first += messages;
            assert_eq!(r.failures, 0, "sends failed");
            r.latencies_us.sort_unstable();
            let n = r.latencies_us.len() as f64;
            let per_msg_us = |secs: f64| secs * 1e6 / n;
            println!(
                "{:>11} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.2} {:>9.2} {:>11.1} {:>11.1} {:>11.1}",
                concurrency,
                n / elapsed.as_secs_f64(),
                percentile_ms(&r.latencies_us, 50.0),
                percentile_ms(&r.latencies_us, 90.0),
                percentile_ms(&r.latencies_us, 99.0),
                percentile_ms(&r.latencies_us, 100.0),
                r.sign_ns as f64 / n / 1000.0,
                r.verify_ns as f64 / n / 1000.0,
                per_msg_us(a1 - a0),
                per_msg_us(s1 - s0),
                per_msg_us(p1 - p0),
            );
        });
    }
}
