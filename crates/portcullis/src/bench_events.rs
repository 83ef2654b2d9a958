//! `portcullis bench-events`: measures how fast, and how promptly, a *running* gateway gets
//! its events out — to webhook endpoints or to realtime WebSocket clients.
//!
//! - `--mode webhooks` starts a webhook receiver inside this process (answering 204 at
//!   once), registers `--endpoints` endpoints pointing at it, sends `--messages` messages
//!   and waits until every expected delivery arrived. The dev simulator produces two events
//!   per message (`message.sent`, `message.delivered`), so `2 × messages × endpoints`
//!   deliveries are expected. Deliveries are told apart by `(endpoint, webhook-id)`: a
//!   retry of something already received counts as a duplicate, not as progress. The
//!   endpoints are deleted again at the end, also after an error or Ctrl-C.
//! - `--mode realtime` opens `--clients` WebSocket streams (one single-use token each),
//!   sends the messages and waits until every client got `2 × messages` frames.
//!
//! Latency is from the event's own `timestamp` (taken by the gateway when the status
//! changed, so the simulator's receipt delay is not part of it) to the moment the receiver
//! here saw the request or frame. Both clocks are this machine's, so they agree; the
//! timestamp has millisecond resolution, which adds up to 1 ms (0.5 ms on average). The
//! receiver shares the machine with the gateway, so its own scheduling delays are part of
//! the figure: on a small machine that is a real cost, and `bench process CPU` shows it.
//!
//! Sending is closed loop (`--concurrency` requests back to back) or open loop (`--rate`):
//! message `k` leaves at `start + k / rate`, unless every connection is still busy, in
//! which case it leaves late (reported as send lateness) — the latency measured here does
//! not start at the send, so a late send does not hide anything.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use crate::bench::{ProcStats, USER_HZ, percentile};

/// Arguments of `portcullis bench-events`.
#[derive(clap::Args)]
pub struct Args {
    /// Base URL of the running gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key: admin for `--mode webhooks` (it manages endpoints), sender or admin for
    /// `--mode realtime`.
    #[arg(long, env = "PORTCULLIS_BENCH_KEY", hide_env_values = true)]
    pub key: String,
    /// Where the events go.
    #[arg(long, value_enum, default_value_t = Mode::Webhooks)]
    pub mode: Mode,
    /// Webhooks: endpoints to register (every one receives every event).
    #[arg(long, default_value_t = 1)]
    pub endpoints: u32,
    /// Realtime: WebSocket clients to open (every one receives every event).
    #[arg(long, default_value_t = 100)]
    pub clients: u32,
    /// Messages to send; each yields two events.
    #[arg(long, default_value_t = 1_000)]
    pub messages: u64,
    /// Open loop: messages per second, sent on a fixed schedule. Without it: closed loop,
    /// as fast as the gateway accepts.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Concurrent sending connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Give up waiting for the events this many seconds after sending began.
    #[arg(long, default_value_t = 300)]
    pub wait_timeout: u64,
    /// The gateway's process id: report its peak RSS and CPU time from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

// By hand, so that the key never lands in a debug print.
impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .field("mode", &self.mode)
            .field("endpoints", &self.endpoints)
            .field("clients", &self.clients)
            .field("messages", &self.messages)
            .field("rate", &self.rate)
            .field("concurrency", &self.concurrency)
            .field("wait_timeout", &self.wait_timeout)
            .field("pid", &self.pid)
            .field("json", &self.json)
            .finish()
    }
}

/// What `bench-events` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Webhooks,
    Realtime,
}

/// Events the dev simulator produces per message: `message.sent`, `message.delivered`.
const EVENTS_PER_MESSAGE: u64 = 2;
const POLL: Duration = Duration::from_millis(50);
/// How often a long wait says where it is (on stderr).
const PROGRESS: Duration = Duration::from_secs(10);
/// With nothing received this long after sending, look for blocked deliveries.
const BLOCKED_CHECK_AFTER: Duration = Duration::from_secs(10);
/// WebSocket connections opened at once.
const CONNECT_CONCURRENCY: usize = 32;

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args) -> Result<()> {
    if args.messages == 0 {
        bail!("--messages must be at least 1");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive number of messages per second");
    }
    let api = Arc::new(Api::new(&args.url, &args.key, args.concurrency)?);
    api.check().await?;
    let report = match args.mode {
        Mode::Webhooks => {
            if args.endpoints == 0 {
                bail!("--endpoints must be at least 1");
            }
            run_webhooks(&args, &api).await?
        }
        Mode::Realtime => {
            if args.clients == 0 {
                bail!("--clients must be at least 1");
            }
            run_realtime(&args, &api).await?
        }
    };
    if args.json {
        println!("{}", report.json(&args));
    } else {
        print!("{}", report.text(&args));
    }
    Ok(())
}

// ------------------------------------------------------------------ the gateway's API

/// The gateway's REST API. One reqwest client (and so one connection pool) serves both the
/// control requests and the load; the pool keeps one connection per concurrent sender.
struct Api {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Api {
    fn new(url: &str, key: &str, concurrency: usize) -> Result<Api> {
        let base = reqwest::Url::parse(url).context("--url is not a URL")?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--url must be http:// or https://");
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(concurrency + 4)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Api {
            client,
            base: base.as_str().trim_end_matches('/').to_owned(),
            auth: format!("Bearer {key}"),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn request(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value)> {
        let res = req.header("authorization", &self.auth).send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.request(self.client.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.request(self.client.post(self.url(path)).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> Result<u16> {
        Ok(self.request(self.client.delete(self.url(path))).await?.0)
    }

    /// Fails early and clearly on a wrong URL or key.
    async fn check(&self) -> Result<()> {
        let (status, _) = self
            .get("/v1/app")
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        match status {
            200 => Ok(()),
            401 => bail!("the gateway rejected the API key (401)"),
            s => bail!(
                "GET /v1/app answered {s}; is {} a Portcullis gateway?",
                self.base
            ),
        }
    }
}

/// `"code"` (or the status) of an error answer, for messages and the report.
fn error_code(status: u16, body: &Value) -> String {
    body.get("code")
        .and_then(Value::as_str)
        .map(|c| format!("{status} {c}"))
        .unwrap_or_else(|| status.to_string())
}

// ------------------------------------------------------------------ sending

/// The recipient of message `i`: `+1 415 NXX XXXX`, unique for the first ~7.9 million
/// messages. The last four digits run 0002–9999 because the simulator fails 0000 and 0001,
/// and a failed message would not produce the two events counted on.
fn recipient(i: u64) -> String {
    let line = 2 + i % 9998;
    format!("+1415{:03}{line:04}", exchange(i / 9998))
}

/// The `n`-th exchange code from 555 on: `200`–`999` without the N11 service codes, which
/// are not valid numbers.
fn exchange(n: u64) -> u64 {
    const VALID: u64 = 8 * 99;
    const START: u64 = 3 * 99 + 54; // 555
    let n = (START + n) % VALID;
    let (hundred, r) = (n / 99, n % 99);
    200 + hundred * 100 + r + u64::from(r >= 11)
}

/// Tells this run's messages apart from an earlier run's in the gateway's logs.
fn run_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}", nanos as u64 ^ (u64::from(std::process::id()) << 40))
}

/// What the sending phase saw.
#[derive(Default)]
struct Sent {
    attempted: u64,
    accepted: u64,
    /// Refusals and transport errors by kind, each with how many.
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    /// Open loop: how much later than scheduled the latest send left.
    max_lateness: Option<Duration>,
}

impl Sent {
    fn per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn send_messages(api: &Arc<Api>, args: &Args) -> Sent {
    let total = args.messages;
    let rate = args.rate;
    let tag = Arc::new(run_tag());
    let next = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(total as usize) {
        let (api, tag, next) = (api.clone(), tag.clone(), next.clone());
        tasks.spawn(async move {
            let mut r = Sent::default();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let late = tokio::time::Instant::now().saturating_duration_since(due);
                    r.max_lateness = Some(r.max_lateness.unwrap_or_default().max(late));
                }
                let body = json!({
                    "to": recipient(k),
                    "body": format!("Portcullis bench-events {tag} message {k}: your order has shipped."),
                    "purpose": "transactional",
                });
                r.attempted += 1;
                match api.post("/v1/messages", &body).await {
                    Ok((202, _)) => r.accepted += 1,
                    Ok((s, b)) => *r.errors.entry(error_code(s, &b)).or_default() += 1,
                    Err(e) => {
                        *r.errors.entry(format!("transport: {e}")).or_default() += 1;
                        // Don't spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            r
        });
    }
    let mut all = Sent::default();
    while let Some(joined) = tasks.join_next().await {
        let Ok(r) = joined else { continue };
        all.attempted += r.attempted;
        all.accepted += r.accepted;
        for (k, n) in r.errors {
            *all.errors.entry(k).or_default() += n;
        }
        all.max_lateness = match (all.max_lateness, r.max_lateness) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    all.elapsed = start.elapsed();
    all
}

// ------------------------------------------------------------------ latency

/// The `"timestamp"` of a webhook body or realtime frame.
fn event_timestamp(json: &[u8]) -> Option<jiff::Timestamp> {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        timestamp: &'a str,
    }
    let event: Event = serde_json::from_slice(json).ok()?;
    event.timestamp.parse().ok()
}

/// Microseconds from the event's creation to its arrival here.
fn latency_us(created: jiff::Timestamp, arrived: SystemTime) -> Option<i64> {
    let arrived = jiff::Timestamp::try_from(arrived).ok()?;
    arrived
        .as_microsecond()
        .checked_sub(created.as_microsecond())
}

/// What arrived, wherever it arrived.
#[derive(Default)]
struct Arrivals {
    expected: u64,
    received: u64,
    duplicates: u64,
    /// Requests or frames without a usable id or timestamp.
    malformed: u64,
    /// Microseconds, sorted.
    latency_us: Vec<i64>,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
}

impl Arrivals {
    fn note_time(&mut self, at: SystemTime) {
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// From the first to the last arrival.
    fn window(&self) -> Option<Duration> {
        self.last?.duration_since(self.first?).ok()
    }

    fn per_sec(&self) -> Option<f64> {
        let w = self.window()?.as_secs_f64();
        (self.received > 1 && w > 0.0).then(|| self.received as f64 / w)
    }
}

// ------------------------------------------------------------------ /proc

/// Busy and total CPU time of the whole machine, in USER_HZ ticks, from `/proc/stat`.
fn host_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    // idle + iowait
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

/// CPU and memory of the gateway (with `--pid`), of this process and of the whole machine,
/// around a run. The machine's share tells whether something else (a build, another
/// benchmark) was competing for the cores, which would make the figures worthless.
struct Usage {
    gateway: Option<u32>,
    gateway_before: Option<ProcStats>,
    self_before: Option<ProcStats>,
    host_before: Option<(u64, u64)>,
    started: Instant,
}

/// What [`Usage`] measured.
struct UsageReport {
    wall: Duration,
    gateway: Option<(ProcStats, f64)>,
    self_cpu_secs: Option<f64>,
    /// CPU seconds the whole machine was busy, and how many cores it has.
    host: Option<(f64, f64)>,
}

impl UsageReport {
    fn cores(&self, cpu_secs: f64) -> f64 {
        cpu_secs / self.wall.as_secs_f64().max(1e-9)
    }

    /// Cores busy with neither the gateway nor this process (needs `--pid`).
    fn other_cores(&self) -> Option<f64> {
        let (host, _) = self.host?;
        let (_, gateway) = self.gateway?;
        Some(self.cores((host - gateway - self.self_cpu_secs?).max(0.0)))
    }
}

impl Usage {
    fn start(pid: Option<u32>) -> Result<Usage> {
        Ok(Usage {
            gateway: pid,
            gateway_before: pid.map(ProcStats::read).transpose()?,
            self_before: ProcStats::read_self(),
            host_before: host_ticks(),
            started: Instant::now(),
        })
    }

    fn finish(&self) -> UsageReport {
        let gateway = match (self.gateway, self.gateway_before) {
            (Some(pid), Some(before)) => ProcStats::read(pid)
                .ok()
                .map(|after| (after, after.cpu_secs - before.cpu_secs)),
            _ => None,
        };
        let self_cpu_secs = self
            .self_before
            .zip(ProcStats::read_self())
            .map(|(b, a)| a.cpu_secs - b.cpu_secs);
        let wall = self.started.elapsed();
        let host = self.host_before.zip(host_ticks()).map(|(b, a)| {
            let busy = a.0.saturating_sub(b.0) as f64 / USER_HZ;
            let total = a.1.saturating_sub(b.1) as f64 / USER_HZ;
            (busy, (total / wall.as_secs_f64().max(1e-9)).round())
        });
        UsageReport {
            wall,
            gateway,
            self_cpu_secs,
            host,
        }
    }
}

// ------------------------------------------------------------------ webhooks

/// The webhook receiver's tally.
#[derive(Default)]
struct Tally {
    seen: HashSet<(u32, Box<str>)>,
    arrivals: Arrivals,
}

#[derive(Default)]
struct Receiver {
    tally: Mutex<Tally>,
    /// Distinct deliveries, readable without the lock while waiting.
    distinct: AtomicU64,
}

impl Receiver {
    fn record(
        &self,
        endpoint: u32,
        id: Option<&str>,
        created: Option<jiff::Timestamp>,
        arrived: SystemTime,
    ) {
        let mut t = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        t.arrivals.note_time(arrived);
        let Some(id) = id else {
            t.arrivals.malformed += 1;
            return;
        };
        if !t.seen.insert((endpoint, id.into())) {
            t.arrivals.duplicates += 1;
            return;
        }
        t.arrivals.received += 1;
        self.distinct.fetch_add(1, Ordering::Relaxed);
        // A retry's latency says how long the retry took, not how fast delivery is: only
        // first arrivals are measured.
        match created.and_then(|c| latency_us(c, arrived)) {
            Some(us) => t.arrivals.latency_us.push(us),
            None => t.arrivals.malformed += 1,
        }
    }
}

async fn hook(
    State(rx): State<Arc<Receiver>>,
    Path(endpoint): Path<u32>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let arrived = SystemTime::now();
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
    rx.record(endpoint, id, event_timestamp(&body), arrived);
    StatusCode::NO_CONTENT
}

/// Starts the receiver on an ephemeral loopback port.
async fn start_receiver(
    rx: Arc<Receiver>,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the webhook receiver")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook/{endpoint}", axum::routing::post(hook))
        .with_state(rx);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            eprintln!("bench-events: the webhook receiver stopped: {e}");
        }
    });
    Ok((addr, task))
}

/// Everything a run measured, whichever the mode.
struct Report {
    mode: Mode,
    url: String,
    /// Endpoints or clients.
    sinks: u64,
    /// Realtime: clients that could not connect, or closed before the end, with why.
    sink_failures: BTreeMap<String, u64>,
    sent: Sent,
    arrivals: Arrivals,
    complete: bool,
    usage: UsageReport,
}

async fn run_webhooks(args: &Args, api: &Arc<Api>) -> Result<Report> {
    let rx = Arc::new(Receiver::default());
    let stop = CancellationToken::new();
    let (addr, server) = start_receiver(rx.clone(), stop.clone()).await?;
    let mut endpoints = Vec::new();
    // Ctrl-C ends the measurement but not the program, so that the endpoints still go.
    let outcome = tokio::select! {
        r = measure_webhooks(args, api, addr, &rx, &mut endpoints) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    for id in &endpoints {
        match api.delete(&format!("/v1/webhooks/{id}")).await {
            Ok(204 | 404) => {}
            Ok(s) => eprintln!("bench-events: deleting endpoint {id} answered {s}"),
            Err(e) => eprintln!("bench-events: deleting endpoint {id}: {e}"),
        }
    }
    stop.cancel();
    let _ = server.await;
    outcome
}

async fn measure_webhooks(
    args: &Args,
    api: &Arc<Api>,
    addr: SocketAddr,
    rx: &Receiver,
    endpoints: &mut Vec<String>,
) -> Result<Report> {
    for i in 0..args.endpoints {
        let url = format!("http://{addr}/hook/{i}");
        let (status, body) = api.post("/v1/webhooks", &json!({ "url": url })).await?;
        match status {
            201 => endpoints.push(
                body.get("id")
                    .and_then(Value::as_str)
                    .context("POST /v1/webhooks answered 201 without an id")?
                    .to_owned(),
            ),
            403 => bail!("managing webhooks needs an admin key (403)"),
            422 => bail!(
                "the gateway refused {url}: {body}; start it with \
                 PORTCULLIS_WEBHOOK_ALLOWED_CIDRS=127.0.0.1/32 to allow a loopback receiver"
            ),
            s => bail!("POST /v1/webhooks answered {s}: {body}"),
        }
    }

    let usage = Usage::start(args.pid)?;
    let started = Instant::now();
    let sent = send_messages(api, args).await;
    if sent.accepted == 0 {
        bail!("no message was accepted: {:?}", sent.errors);
    }
    let expected = EVENTS_PER_MESSAGE * sent.accepted * u64::from(args.endpoints);
    let deadline = started + Duration::from_secs(args.wait_timeout);
    let sending_done = Instant::now();
    let mut next_progress = sending_done + PROGRESS;
    let mut blocked_checked = false;
    let complete = loop {
        let got = rx.distinct.load(Ordering::Relaxed);
        if got >= expected {
            break true;
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        if got == 0 && !blocked_checked && now >= sending_done + BLOCKED_CHECK_AFTER {
            blocked_checked = true;
            let (status, body) = api
                .get("/v1/webhooks/deliveries?status=blocked&limit=1")
                .await?;
            if status == 200
                && body
                    .get("data")
                    .and_then(Value::as_array)
                    .is_some_and(|d| !d.is_empty())
            {
                bail!(
                    "the gateway blocks deliveries to {addr} (GET /v1/webhooks/deliveries?status=blocked); \
                     start it with PORTCULLIS_WEBHOOK_ALLOWED_CIDRS=127.0.0.1/32"
                );
            }
        }
        if now >= next_progress {
            next_progress = now + PROGRESS;
            eprintln!("bench-events: {got} of {expected} deliveries so far");
        }
        tokio::time::sleep(POLL).await;
    };
    let usage = usage.finish();
    let mut tally = std::mem::take(&mut *rx.tally.lock().unwrap_or_else(|p| p.into_inner()));
    tally.arrivals.expected = expected;
    tally.arrivals.latency_us.sort_unstable();
    Ok(Report {
        mode: Mode::Webhooks,
        url: api.base.clone(),
        sinks: u64::from(args.endpoints),
        sink_failures: BTreeMap::new(),
        sent,
        arrivals: tally.arrivals,
        complete,
        usage,
    })
}

// ------------------------------------------------------------------ realtime

/// One client's progress, visible while it runs.
#[derive(Default)]
struct Slot {
    frames: AtomicU64,
    /// The stream ended (closed by the server, or an error) before it was told to stop.
    ended: AtomicBool,
}

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    latency_us: Vec<i64>,
    malformed: u64,
    first: Option<SystemTime>,
    last: Option<SystemTime>,
    /// Why it could not connect, or why the stream ended early.
    failure: Option<String>,
}

/// `ws://…/v1/realtime?token=…` for the gateway at `base`.
fn stream_url(base: &str, token: &str) -> Result<String> {
    let rest = base
        .strip_prefix("http://")
        .context("realtime mode speaks plain ws:// only: give an http:// --url")?;
    Ok(format!("ws://{rest}/v1/realtime?token={token}"))
}

/// Mints a single-use token and opens the stream with it.
async fn connect_client(
    api: &Api,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let (status, body) = api.post("/v1/realtime/tokens", &json!({})).await?;
    if status != 201 {
        bail!("minting a token: {}", error_code(status, &body));
    }
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .context("the token answer has no token")?;
    let connect = tokio_tungstenite::connect_async(stream_url(&api.base, token)?);
    match tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .map_err(|_| anyhow!("the WebSocket handshake timed out"))?
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Io(e)) if e.raw_os_error() == Some(24) => {
            bail!("too many open files: raise the limit (ulimit -n) for this shell")
        }
        Err(tungstenite::Error::Http(res)) => bail!("the stream answered {}", res.status()),
        Err(e) => Err(e.into()),
    }
}

async fn client(
    api: Arc<Api>,
    connect_gate: Arc<Semaphore>,
    slot: Arc<Slot>,
    connected: tokio::sync::mpsc::Sender<bool>,
    stop: CancellationToken,
) -> ClientResult {
    let mut r = ClientResult::default();
    let ws = {
        let _permit = connect_gate.acquire().await;
        connect_client(&api).await
    };
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            r.failure = Some(format!("connect: {e:#}"));
            let _ = connected.send(false).await;
            return r;
        }
    };
    let _ = connected.send(true).await;
    drop(connected);
    // Made once: a `cancelled()` made per frame registers with the token shared by every
    // client, and a thousand clients doing that per frame cost this process (which shares
    // the cores with the gateway) more than reading the frames.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = &mut stopped => break,
        };
        let arrived = SystemTime::now();
        match msg {
            Some(Ok(tungstenite::Message::Text(text))) => {
                match event_timestamp(text.as_bytes()).and_then(|c| latency_us(c, arrived)) {
                    Some(us) => r.latency_us.push(us),
                    None => r.malformed += 1,
                }
                if r.first.is_none() {
                    r.first = Some(arrived);
                }
                r.last = Some(arrived);
                slot.frames.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(tungstenite::Message::Close(frame))) => {
                r.failure = Some(match frame {
                    Some(f) => format!(
                        "closed by the gateway: {} {}",
                        u16::from(f.code),
                        f.reason.as_str()
                    ),
                    None => "closed by the gateway".to_owned(),
                });
                break;
            }
            // tungstenite answers pings itself.
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                r.failure = Some(format!("stream error: {e}"));
                break;
            }
            None => {
                r.failure = Some("stream ended".to_owned());
                break;
            }
        }
    }
    if r.failure.is_some() {
        slot.ended.store(true, Ordering::Relaxed);
    } else {
        let _ = ws.close(None).await;
    }
    r
}

/// The soft limit on open files of a process, from `/proc/<pid>/limits`.
fn open_files_limit(pid: &str) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

async fn run_realtime(args: &Args, api: &Arc<Api>) -> Result<Report> {
    stream_url(&api.base, "")?;
    let clients = u64::from(args.clients);
    // Every client is a socket here and one in the gateway; fail clearly rather than
    // half-way through connecting.
    let headroom = clients + args.concurrency as u64 + 64;
    if let Some(limit) = open_files_limit("self")
        && limit < headroom
    {
        bail!(
            "{clients} clients need about {headroom} open files but this process may open {limit}: raise the limit (ulimit -n)"
        );
    }
    if let Some(pid) = args.pid
        && let Some(limit) = open_files_limit(&pid.to_string())
        && limit < headroom
    {
        eprintln!(
            "bench-events: warning: the gateway may open only {limit} files; {clients} clients may not all connect"
        );
    }

    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel(args.clients as usize);
    let slots: Vec<Arc<Slot>> = (0..clients).map(|_| Arc::new(Slot::default())).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for slot in &slots {
        tasks.spawn(client(
            api.clone(),
            gate.clone(),
            slot.clone(),
            connected_tx.clone(),
            stop.clone(),
        ));
    }
    drop(connected_tx);
    let mut up = 0u64;
    while let Some(ok) = connected_rx.recv().await {
        up += u64::from(ok);
    }

    let outcome = if up == 0 {
        Err(anyhow!("no client could connect"))
    } else {
        tokio::select! {
            r = measure_realtime(args, api, &slots) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    };
    stop.cancel();
    let mut arrivals = Arrivals::default();
    let mut sink_failures = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok(r) = joined else { continue };
        arrivals.received += r.latency_us.len() as u64 + r.malformed;
        arrivals.malformed += r.malformed;
        arrivals.latency_us.extend(r.latency_us);
        for t in r.first.into_iter().chain(r.last) {
            arrivals.note_time(t);
        }
        if let Some(f) = r.failure {
            *sink_failures.entry(f).or_default() += 1;
        }
    }
    if up == 0 {
        let first = sink_failures.keys().next().cloned().unwrap_or_default();
        bail!("no client could connect ({first})");
    }
    let (sent, complete, usage) = outcome?;
    arrivals.expected = EVENTS_PER_MESSAGE * sent.accepted * up;
    arrivals.latency_us.sort_unstable();
    Ok(Report {
        mode: Mode::Realtime,
        url: api.base.clone(),
        sinks: up,
        sink_failures,
        sent,
        arrivals,
        complete,
        usage,
    })
}

async fn measure_realtime(
    args: &Args,
    api: &Arc<Api>,
    slots: &[Arc<Slot>],
) -> Result<(Sent, bool, UsageReport)> {
    let usage = Usage::start(args.pid)?;
    let started = Instant::now();
    let sent = send_messages(api, args).await;
    if sent.accepted == 0 {
        bail!("no message was accepted: {:?}", sent.errors);
    }
    let per_client = EVENTS_PER_MESSAGE * sent.accepted;
    let deadline = started + Duration::from_secs(args.wait_timeout);
    let mut next_progress = Instant::now() + PROGRESS;
    let complete = loop {
        // A client that failed to connect or was closed early will never catch up; waiting
        // for it would only run into the timeout.
        let (mut behind, mut frames) = (0u64, 0u64);
        for s in slots {
            let n = s.frames.load(Ordering::Relaxed);
            frames += n;
            if n < per_client && !s.ended.load(Ordering::Relaxed) {
                behind += 1;
            }
        }
        if behind == 0 {
            break true;
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        if now >= next_progress {
            next_progress = now + PROGRESS;
            eprintln!("bench-events: {frames} frames so far, {behind} clients still waiting");
        }
        tokio::time::sleep(POLL).await;
    };
    Ok((sent, complete, usage.finish()))
}

// ------------------------------------------------------------------ report

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

fn ms(us: i64) -> f64 {
    round(us as f64 / 1000.0, 2)
}

impl Report {
    fn latency(&self, p: f64) -> Option<f64> {
        percentile(&self.arrivals.latency_us, p).map(ms)
    }

    fn json(&self, args: &Args) -> Value {
        let a = &self.arrivals;
        let u = &self.usage;
        let (sink_name, unit) = match self.mode {
            Mode::Webhooks => ("endpoints", "deliveries"),
            Mode::Realtime => ("clients", "frames"),
        };
        json!({
            "mode": match self.mode { Mode::Webhooks => "webhooks", Mode::Realtime => "realtime" },
            "url": self.url,
            sink_name: self.sinks,
            "sink_failures": self.sink_failures,
            "send": {
                "loop": if args.rate.is_some() { "open" } else { "closed" },
                "target_rate": args.rate,
                "concurrency": args.concurrency,
                "attempted": self.sent.attempted,
                "accepted": self.sent.accepted,
                "errors": self.sent.errors,
                "seconds": round(self.sent.elapsed.as_secs_f64(), 3),
                "msgs_per_sec": round(self.sent.per_sec(), 1),
                "max_lateness_ms": self.sent.max_lateness.map(|d| round(d.as_secs_f64() * 1000.0, 2)),
            },
            unit: {
                "expected": a.expected,
                "received": a.received,
                "duplicates": a.duplicates,
                "malformed": a.malformed,
                "complete": self.complete,
                "window_seconds": a.window().map(|w| round(w.as_secs_f64(), 3)),
                "per_sec": a.per_sec().map(|r| round(r, 1)),
            },
            "latency_ms": {
                "basis": "event timestamp to arrival",
                "p50": self.latency(50.0), "p90": self.latency(90.0),
                "p99": self.latency(99.0), "p99_9": self.latency(99.9),
                "max": self.latency(100.0),
            },
            "gateway": u.gateway.map(|(after, cpu)| json!({
                "pid": args.pid,
                "peak_rss_mib": round(after.hwm_kib as f64 / 1024.0, 1),
                "cpu_seconds": round(cpu, 2),
                "cores": round(u.cores(cpu), 2),
            })),
            "host": u.host.map(|(busy, cores)| json!({
                "cores": cores,
                "busy_cores": round(u.cores(busy), 2),
                "other_processes_cores": u.other_cores().map(|c| round(c, 2)),
            })),
            "wall_seconds": round(u.wall.as_secs_f64(), 3),
            "bench_process_cpu_seconds": u.self_cpu_secs.map(|c| round(c, 2)),
        })
    }

    fn text(&self, args: &Args) -> String {
        use std::fmt::Write;
        let a = &self.arrivals;
        let s = &self.sent;
        let u = &self.usage;
        let mut o = String::new();
        let (sinks, unit) = match self.mode {
            Mode::Webhooks => (format!("{} endpoints", self.sinks), "deliveries"),
            Mode::Realtime => (format!("{} clients", self.sinks), "frames"),
        };
        let sending = match args.rate {
            Some(r) => format!("open loop at {r} msgs/s"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            o,
            "portcullis bench-events: {} to {sinks} ({sending}, {} connections) at {}",
            match self.mode {
                Mode::Webhooks => "webhooks",
                Mode::Realtime => "realtime",
            },
            args.concurrency,
            self.url
        );
        for (why, n) in &self.sink_failures {
            let _ = writeln!(o, "  client failures   {n}: {why}");
        }
        let _ = writeln!(
            o,
            "  messages          {} accepted of {} in {:.3} s: {:.0} msgs/s",
            s.accepted,
            s.attempted,
            s.elapsed.as_secs_f64(),
            s.per_sec()
        );
        if !s.errors.is_empty() {
            let list: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(o, "  send errors       {}", list.join(", "));
        }
        if let Some(late) = s.max_lateness {
            let _ = writeln!(
                o,
                "  send lateness     max {:.2} ms behind schedule",
                late.as_secs_f64() * 1000.0
            );
        }
        let _ = writeln!(
            o,
            "  {unit:<17} expected {}  received {}  duplicates {}{}{}",
            a.expected,
            a.received,
            a.duplicates,
            if a.malformed > 0 {
                format!("  malformed {}", a.malformed)
            } else {
                String::new()
            },
            if self.complete {
                ""
            } else {
                "  (INCOMPLETE: timed out)"
            }
        );
        if let (Some(rate), Some(w)) = (a.per_sec(), a.window()) {
            let _ = writeln!(
                o,
                "  {:<17} {rate:.0}/s  ({} in {:.3} s, first to last arrival)",
                format!("{unit}/s"),
                a.received,
                w.as_secs_f64()
            );
        }
        let p = |q| {
            self.latency(q)
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            o,
            "  latency           p50 {}  p90 {}  p99 {}  p99.9 {}  max {} ms  (event timestamp to arrival)",
            p(50.0),
            p(90.0),
            p(99.0),
            p(99.9),
            p(100.0)
        );
        if let Some((after, cpu)) = u.gateway {
            let _ = writeln!(
                o,
                "  gateway           peak RSS {:.1} MiB, CPU {cpu:.2} s ({:.2} cores over {:.1} s)",
                after.hwm_kib as f64 / 1024.0,
                u.cores(cpu),
                u.wall.as_secs_f64()
            );
        }
        if let Some(cpu) = u.self_cpu_secs {
            let _ = writeln!(
                o,
                "  bench process     CPU {cpu:.2} s ({:.2} cores)",
                u.cores(cpu)
            );
        }
        if let Some((busy, cores)) = u.host {
            let other = u
                .other_cores()
                .map(|c| format!("; other processes {c:.2} cores"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  machine           {:.2} of {cores:.0} cores busy{other}",
                u.cores(busy)
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_runs_from_the_event_timestamp_to_arrival() {
        let created = event_timestamp(
            br#"{"type":"message.sent","timestamp":"2025-03-01T12:00:00.250Z","data":{}}"#,
        )
        .unwrap();
        let arrived = UNIX_EPOCH
            + Duration::from_millis(
                "2025-03-01T12:00:00.262Z"
                    .parse::<jiff::Timestamp>()
                    .unwrap()
                    .as_millisecond() as u64,
            )
            + Duration::from_micros(500);
        assert_eq!(latency_us(created, arrived), Some(12_500));
        // Realtime frames carry the id first; a whole second prints without a fraction.
        let frame = br#"{"id":"evt_1","type":"message.delivered","timestamp":"2025-03-01T12:00:01Z","data":{}}"#;
        assert_eq!(
            event_timestamp(frame).unwrap().as_millisecond(),
            created.as_millisecond() + 750
        );
        assert!(event_timestamp(br#"{"timestamp":"yesterday"}"#).is_none());
        assert!(event_timestamp(b"not json").is_none());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile::<i64>(&[], 50.0), None);
    }

    #[test]
    fn recipients_are_unique_and_never_the_failing_numbers() {
        let all: HashSet<String> = (0..30_000).map(recipient).collect();
        assert_eq!(all.len(), 30_000);
        for r in &all {
            assert_eq!(r.len(), 12);
            assert!(r.starts_with("+1415"));
            assert!(!r.ends_with("0000") && !r.ends_with("0001"));
            assert_ne!(&r[6..8], "11", "N11 exchange in {r}");
        }
        assert_eq!(recipient(0), "+14155550002");
    }

    #[test]
    fn duplicates_do_not_count_as_progress() {
        let rx = Receiver::default();
        let ts = jiff::Timestamp::now();
        let now = SystemTime::now();
        rx.record(0, Some("evt_1"), Some(ts), now);
        rx.record(0, Some("evt_1"), Some(ts), now);
        rx.record(1, Some("evt_1"), Some(ts), now);
        rx.record(1, None, Some(ts), now);
        let t = rx.tally.lock().unwrap();
        assert_eq!(rx.distinct.load(Ordering::Relaxed), 2);
        assert_eq!(t.arrivals.received, 2);
        assert_eq!(t.arrivals.duplicates, 1);
        assert_eq!(t.arrivals.malformed, 1);
        assert_eq!(t.arrivals.latency_us.len(), 2);
    }

    #[test]
    fn stream_urls_are_ws() {
        assert_eq!(
            stream_url("http://127.0.0.1:8080", "wst_x").unwrap(),
            "ws://127.0.0.1:8080/v1/realtime?token=wst_x"
        );
        assert!(stream_url("https://gw.example.com", "wst_x").is_err());
    }
}
