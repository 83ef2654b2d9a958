//! Failover time through the real gateway: how long after a primary Twilio connection
//! starts failing does traffic flow on the backup, while a steady stream of messages is
//! being sent.
//!
//! ```sh
//! cargo bench -p portcullis --bench failover
//! FAILOVER_BENCH_REPS=5 FAILOVER_BENCH_RATE=50 cargo bench -p portcullis --bench failover
//! ```
//!
//! Each repetition starts a fresh gateway in this process ([`Server::start`], SQLite in a
//! temporary directory, dev mode, the default circuit breaker) and two local stand-ins for
//! api.twilio.com that speak its Messages API (HTTP Basic auth checked, form parsed, `201`
//! with Twilio's JSON body). Two Twilio connections point at them, and the bootstrap app's
//! route is primary → backup. Then, open loop: message *k* is `POST /v1/messages` at
//! `start + k / rate`, each from its own task, so a slow answer delays nothing else.
//!
//! 1. `healthy` seconds: everything goes to the primary.
//! 2. The primary answers `500` (Twilio error 20500) to everything for `outage` seconds.
//! 3. It answers normally again; the stream goes on for `recovery` seconds, then stops, and
//!    the bench waits until every message reached a stand-in that accepted it.
//!
//! Both stand-ins stamp each request with [`Instant::now`] as they answer it, so times are
//! taken from one clock, at the providers' side. Reported per repetition:
//!
//! - **failover**: from the primary's first `500` to the first message the backup accepted
//!   after it;
//! - **opened in**: from the first `500` to the last one before the circuit opened and
//!   the primary got no more traffic (with how many `500`s that took, and how many probes
//!   of the half-open circuit met the outage later);
//! - how the outage's messages went: **via failover** (tried on the primary, `500`, sent on
//!   the backup), **straight to backup** (the primary's circuit was open), and **waited**
//!   (reached a provider more than 1 s after the gateway accepted it: a retry with backoff
//!   or a deferral, not a failover in the same round);
//! - the latency from the gateway's `202` to the provider's `201` during the outage
//!   (p50 / max);
//! - **recovery**: from the end of the outage to the primary's next `201` (the circuit's
//!   open period, then one probe).
//!
//! Environment: `FAILOVER_BENCH_REPS` (5), `FAILOVER_BENCH_RATE` (messages/s, 50),
//! `FAILOVER_BENCH_HEALTHY` (seconds, 2), `FAILOVER_BENCH_OUTAGE` (seconds, 5),
//! `FAILOVER_BENCH_RECOVERY` (seconds, circuit open period + 3),
//! `FAILOVER_BENCH_CIRCUIT_OPEN` (`circuit_open_seconds`, 10: the default).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use portcullis::config::Config;
use portcullis::server::Server;
use portcullis_domain::route::RouteScope;
use portcullis_domain::{AppId, ConnectionId};
use portcullis_store::apps;
use serde_json::{Value, json};

const SID_A: &str = "AC0123456789abcdef0123456789abcdef";
const SID_B: &str = "ACfedcba9876543210fedcba9876543210";
/// The bootstrap app's sender.
const OUR_NUMBER: &str = "+14155550199";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// A stand-in for api.twilio.com that records when it answered what.

#[derive(Debug, Clone, Copy)]
struct Hit {
    at: Instant,
    seq: u64,
    status: u16,
}

struct StandIn {
    sid: &'static str,
    token: String,
    /// While non-zero, every request is answered with this status.
    outage: AtomicU16,
    sids: AtomicU64,
    hits: Mutex<Vec<Hit>>,
}

struct Twilio {
    base_url: String,
    state: Arc<StandIn>,
}

impl Twilio {
    async fn start(sid: &'static str, token: &str) -> Twilio {
        let state = Arc::new(StandIn {
            sid,
            token: token.to_owned(),
            outage: AtomicU16::new(0),
            sids: AtomicU64::new(1),
            hits: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                axum::routing::post(create_message),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Twilio { base_url, state }
    }

    fn outage(&self, status: u16) {
        self.state.outage.store(status, Ordering::SeqCst);
    }

    fn hits(&self) -> Vec<Hit> {
        self.state
            .hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn twilio_json(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    twilio_json(
        status,
        &json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

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
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if account != st.sid
        || credentials.as_deref().and_then(|c| c.split_once(':'))
            != Some((st.sid, st.token.as_str()))
    {
        return twilio_error(401, 20003, "Authenticate");
    }
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let (Some(to), Some(from), Some(text), Some(_)) = (
        fields.get("To"),
        fields.get("From"),
        fields.get("Body"),
        fields.get("StatusCallback"),
    ) else {
        return twilio_error(400, 21602, "Message body is required.");
    };
    // The bench's bodies end with the message's sequence number.
    let seq = text
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let outage = st.outage.load(Ordering::SeqCst);
    let status = if outage != 0 { outage } else { 201 };
    st.hits.lock().unwrap_or_else(|p| p.into_inner()).push(Hit {
        at: Instant::now(),
        seq,
        status,
    });
    if outage != 0 {
        return twilio_error(outage, 20500, "Internal Server Error");
    }
    let n = st.sids.fetch_add(1, Ordering::Relaxed);
    let sid = format!(
        "SM{:032x}",
        (u128::from(std::process::id()) << 64) | u128::from(n)
    );
    twilio_json(
        201,
        &json!({
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": text,
            "date_created": "Mon, 23 Nov 2026 09:30:00 +0000",
            "date_sent": null,
            "date_updated": "Mon, 23 Nov 2026 09:30:00 +0000",
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
        }),
    )
}

// ---------------------------------------------------------------------------------------
// One repetition.

struct Plan {
    rate: f64,
    healthy: Duration,
    outage: Duration,
    recovery: Duration,
    circuit_open: u64,
}

struct Rep {
    messages: u64,
    failover: Option<Duration>,
    primary_tried_for: Option<Duration>,
    /// 500s until the circuit opened.
    primary_500s: usize,
    /// 500s answered to probes of the half-open circuit during the outage.
    probes: usize,
    via_failover: usize,
    straight_to_backup: usize,
    waited: usize,
    /// Of the messages accepted during the outage: gateway 202 → provider 201, sorted.
    outage_latency: Vec<Duration>,
    healthy_latency: Vec<Duration>,
    recovery: Option<Duration>,
    lost: u64,
}

fn recipient(i: u64) -> String {
    format!("+1415{:03}{:04}", 200 + (i / 9_990) % 800, 10 + i % 9_990)
}

async fn repetition(rep: u64, plan: &Plan) -> Rep {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        dev: true,
        data_dir: dir.path().to_path_buf(),
        master_key: Some(
            portcullis_crypto::MasterKey::generate()
                .to_base64()
                .expose()
                .clone(),
        ),
        circuit_open_seconds: plan.circuit_open,
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start(&config, listener, None)
        .await
        .expect("gateway starts");
    let boot = portcullis::bootstrap::bootstrap_dev(&server.store.db)
        .await
        .expect("bootstrap")
        .expect("fresh database");
    let base = format!("http://{}", server.addr);
    let key = boot.key.expose().clone();

    let (token_a, token_b) = ("token-a-0123456789abcdef", "token-b-0123456789abcdef");
    let primary = Twilio::start(SID_A, token_a).await;
    let backup = Twilio::start(SID_B, token_b).await;
    let mut ids = Vec::new();
    for (sid, token, fake) in [(SID_A, token_a, &primary), (SID_B, token_b, &backup)] {
        let conn = server
            .store
            .create_connection(
                None,
                "twilio",
                "twilio",
                &json!({
                    "account_sid": sid,
                    "auth_token": token,
                    "from_numbers": [OUR_NUMBER],
                    "base_url": fake.base_url,
                }),
            )
            .await
            .expect("connection");
        ids.push(ConnectionId::parse(conn.id.as_str()).expect("connection id"));
    }
    let app_id = AppId::parse(&boot.app_id).expect("app id");
    apps::set_route(&server.store.db, &app_id, &RouteScope::default(), &ids)
        .await
        .expect("route");
    // Burst detection would hold a fresh app's 601st message of a minute for review; the
    // stream is steady by design, so it is off.
    let mut app = apps::get_any_tenant(&server.store.db, &app_id)
        .await
        .expect("app");
    app.policy.burst_min_per_minute = 0;
    apps::set_policy(&server.store.db, &app_id, &app.policy)
        .await
        .expect("policy");

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // Unmeasured: the first message on a fresh gateway, through the primary.
    let warm = send(&client, &base, &key, rep, 0).await;
    assert!(warm.is_some(), "the gateway accepts a message");
    while primary.hits().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The stream: message k at start + k / rate, each from its own task.
    let total = (plan.healthy + plan.outage + plan.recovery).as_secs_f64();
    let count = (total * plan.rate) as u64;
    let accepted: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let start = Instant::now();
    let outage_at = start + plan.healthy;
    let outage_end = outage_at + plan.outage;
    let mut outage_on = false;
    let mut outage_off = false;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 1..=count {
        let due = start + Duration::from_secs_f64((k - 1) as f64 / plan.rate);
        // The outage starts and ends on the stream's clock.
        loop {
            let next = if !outage_on {
                outage_at.min(due)
            } else if !outage_off {
                outage_end.min(due)
            } else {
                due
            };
            tokio::time::sleep_until(next.into()).await;
            if !outage_on && Instant::now() >= outage_at {
                primary.outage(500);
                outage_on = true;
            } else if outage_on && !outage_off && Instant::now() >= outage_end {
                primary.outage(0);
                outage_off = true;
            }
            if Instant::now() >= due {
                break;
            }
        }
        let (client, base, key, accepted) =
            (client.clone(), base.clone(), key.clone(), accepted.clone());
        tasks.spawn(async move {
            if send(&client, &base, &key, rep, k).await.is_some() {
                accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(k, Instant::now());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    if !outage_off {
        primary.outage(0);
    }

    // Every accepted message reaches a provider that takes it.
    let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = |p: &[Hit], b: &[Hit]| -> HashMap<u64, Instant> {
        let mut first: HashMap<u64, Instant> = HashMap::new();
        for h in p.iter().chain(b).filter(|h| h.status == 201) {
            first
                .entry(h.seq)
                .and_modify(|t| *t = (*t).min(h.at))
                .or_insert(h.at);
        }
        first
    };
    let (p, b) = loop {
        let (p, b) = (primary.hits(), backup.hits());
        let got = delivered(&p, &b);
        if accepted.keys().all(|k| got.contains_key(k)) || Instant::now() > deadline {
            break (p, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got = delivered(&p, &b);
    let lost = accepted.keys().filter(|k| !got.contains_key(k)).count() as u64;

    let mut fails: Vec<&Hit> = p.iter().filter(|h| h.status == 500).collect();
    fails.sort_by_key(|h| h.at);
    let first_500 = fails.first().map(|h| h.at);
    // The 500s in a row until the circuit opened: a gap of half a second or more (at
    // tens of messages a second) means the primary got no traffic, and a later 500 is
    // the probe of a half-open circuit.
    let opened = fails
        .windows(2)
        .position(|w| w[1].at - w[0].at >= Duration::from_millis(500))
        .map_or(fails.len(), |i| i + 1);
    let last_before_open = fails.get(opened.wrapping_sub(1)).map(|h| h.at);
    let failover = first_500.and_then(|t0| {
        b.iter()
            .filter(|h| h.status == 201 && h.at >= t0)
            .map(|h| h.at)
            .min()
            .map(|t1| t1 - t0)
    });
    let recovery = p
        .iter()
        .filter(|h| h.status == 201 && h.at >= outage_end)
        .map(|h| h.at)
        .min()
        .map(|t| t - outage_end);

    // How the outage's messages went.
    let failed_seqs: std::collections::HashSet<u64> = fails.iter().map(|h| h.seq).collect();
    let on_backup: std::collections::HashSet<u64> = b
        .iter()
        .filter(|h| h.status == 201)
        .map(|h| h.seq)
        .collect();
    let (mut via_failover, mut straight, mut waited) = (0, 0, 0);
    let mut outage_latency = Vec::new();
    let mut healthy_latency = Vec::new();
    for (k, at) in &accepted {
        let Some(reached) = got.get(k) else { continue };
        let latency = reached.saturating_duration_since(*at);
        let in_outage = (*at >= outage_at && *at < outage_end) || failed_seqs.contains(k);
        if !in_outage {
            if *at < outage_at {
                healthy_latency.push(latency);
            }
            continue;
        }
        outage_latency.push(latency);
        if latency > Duration::from_secs(1) {
            waited += 1;
        }
        if failed_seqs.contains(k) && on_backup.contains(k) {
            via_failover += 1;
        } else if on_backup.contains(k) {
            straight += 1;
        }
    }
    outage_latency.sort();
    healthy_latency.sort();
    server.stop().await.expect("gateway stops");
    Rep {
        messages: accepted.len() as u64,
        failover,
        primary_tried_for: first_500.zip(last_before_open).map(|(a, z)| z - a),
        primary_500s: opened,
        probes: fails.len() - opened,
        via_failover,
        straight_to_backup: straight,
        waited,
        outage_latency,
        healthy_latency,
        recovery,
        lost,
    }
}

/// `POST /v1/messages`; the message id of a `202`.
async fn send(client: &reqwest::Client, base: &str, key: &str, rep: u64, k: u64) -> Option<String> {
    let res = client
        .post(format!("{base}/v1/messages"))
        .bearer_auth(key)
        .json(&json!({
            "to": recipient(rep * 100_000 + k),
            "body": format!("failover bench {rep} {k}"),
            "purpose": "transactional",
        }))
        .send()
        .await
        .ok()?;
    if res.status().as_u16() != 202 {
        eprintln!("message {k}: HTTP {}", res.status());
        return None;
    }
    let body: Value = res.json().await.ok()?;
    body["id"].as_str().map(str::to_owned)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "–".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64() * 1000.0),
    )
}

fn pct(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn summary(name: &str, mut values: Vec<Duration>) {
    values.sort();
    println!(
        "{name}: min {} / median {} / max {} ms (n = {})",
        ms(values.first().copied()),
        ms(pct(&values, 50.0)),
        ms(values.last().copied()),
        values.len()
    );
}

fn main() {
    portcullis::install_crypto_provider();
    let circuit_open: u64 = env_or("FAILOVER_BENCH_CIRCUIT_OPEN", 10);
    let plan = Plan {
        rate: env_or("FAILOVER_BENCH_RATE", 50.0),
        healthy: Duration::from_secs_f64(env_or("FAILOVER_BENCH_HEALTHY", 2.0)),
        outage: Duration::from_secs_f64(env_or("FAILOVER_BENCH_OUTAGE", 5.0)),
        recovery: Duration::from_secs_f64(env_or(
            "FAILOVER_BENCH_RECOVERY",
            circuit_open as f64 + 3.0,
        )),
        circuit_open,
    };
    let reps: u64 = env_or("FAILOVER_BENCH_REPS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "failover: {reps} repetitions at {} msgs/s; healthy {:?}, primary answers 500 for {:?}, then {:?}; circuit open {circuit_open} s",
        plan.rate, plan.healthy, plan.outage, plan.recovery
    );
    println!(
        "{:>3} {:>5} {:>11} {:>12} {:>5} {:>6} {:>9} {:>9} {:>6} {:>14} {:>14} {:>11} {:>4}",
        "rep",
        "msgs",
        "failover ms",
        "opened in ms",
        "500s",
        "probes",
        "failover",
        "straight",
        "waited",
        "outage p50 ms",
        "outage max ms",
        "recovery ms",
        "lost"
    );
    let mut all = Vec::new();
    for rep in 1..=reps {
        let r = rt.block_on(repetition(rep, &plan));
        println!(
            "{:>3} {:>5} {:>11} {:>12} {:>5} {:>6} {:>9} {:>9} {:>6} {:>14} {:>14} {:>11} {:>4}",
            rep,
            r.messages,
            ms(r.failover),
            ms(r.primary_tried_for),
            r.primary_500s,
            r.probes,
            r.via_failover,
            r.straight_to_backup,
            r.waited,
            ms(pct(&r.outage_latency, 50.0)),
            ms(r.outage_latency.last().copied()),
            ms(r.recovery),
            r.lost,
        );
        all.push(r);
    }
    summary(
        "failover (first 500 on the primary -> first 201 on the backup)",
        all.iter().filter_map(|r| r.failover).collect(),
    );
    summary(
        "circuit opened in (first 500 -> last 500 before the circuit opened)",
        all.iter().filter_map(|r| r.primary_tried_for).collect(),
    );
    summary(
        "recovery (outage end -> primary's next 201)",
        all.iter().filter_map(|r| r.recovery).collect(),
    );
    let healthy: Vec<Duration> = all
        .iter()
        .flat_map(|r| r.healthy_latency.iter().copied())
        .collect();
    summary("202 -> provider 201 before the outage", healthy);
    let outage: Vec<Duration> = all
        .iter()
        .flat_map(|r| r.outage_latency.iter().copied())
        .collect();
    summary("202 -> provider 201 during the outage", outage);
    println!(
        "outage messages: {} via failover, {} straight to the backup, {} waited > 1 s; {} lost",
        all.iter().map(|r| r.via_failover).sum::<usize>(),
        all.iter().map(|r| r.straight_to_backup).sum::<usize>(),
        all.iter().map(|r| r.waited).sum::<usize>(),
        all.iter().map(|r| r.lost).sum::<u64>(),
    );
}
