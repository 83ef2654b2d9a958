//! `portcullis bench`: a load generator that drives a *running* gateway over real HTTP and
//! prints what it measured.
//!
//! - Every request is `POST /v1/messages` with a unique recipient (`+1 NPA NXX XXXX`, last
//!   four digits never `0000`/`0001`, which the simulator fails) and a unique text, purpose
//!   `transactional`, over keep-alive connections: one connection per concurrent worker.
//! - Closed loop (default): `--concurrency` workers send back to back, as fast as the gateway
//!   answers. Latency is the time from writing the request to reading the whole response.
//! - Open loop (`--rate R`): request `k` is *scheduled* at `start + k / R`, whether or not
//!   earlier requests have been answered. A pacer thread releases the due requests; a free
//!   worker sends at once. Latency is measured from the scheduled time, so a stalled gateway
//!   shows up as latency of every request queued behind the stall instead of being hidden by
//!   a load generator that politely waits (coordinated omission). The service time (from
//!   the actual write) and how late sends left are reported too.
//! - `--wait-delivered` then waits until every accepted message reached a terminal status.
//!   It polls the gateway's `portcullis_messages_total{status=…}` counters on `GET /metrics`
//!   (open in dev mode, or with `--metrics-token`); where `/metrics` is not available it
//!   polls the last accepted message and then a random sample of the others.
//! - `--wait-sent` waits only until every accepted message was handed to the provider
//!   (`sent`, or refused): for a provider that sends no receipts, where `sent` is final.
//! - `--pid P` reads the gateway's peak RSS (`VmHWM`) and CPU time (`utime + stime`) from
//!   `/proc/P` before and after.
//!
//! The load path uses a bare hyper HTTP/1.1 connection per worker (the cheapest client
//! there is: on a small machine the load generator competes with the gateway for the same
//! cores); `--client reqwest` (and every `https://` URL) uses reqwest instead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Arguments of `portcullis bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Base URL of the running gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (sender role or above) to send with.
    #[arg(long, env = "PORTCULLIS_BENCH_KEY", hide_env_values = true)]
    pub key: String,
    /// Number of measured requests.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Concurrent keep-alive connections (closed loop: requests in flight; open loop: the
    /// most that can be in flight).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: target messages per second, sends scheduled at fixed intervals and
    /// latency measured from the scheduled time. Without it: closed loop, as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Unmeasured requests sent (closed loop, same connections) before the measured run.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Schedule every message this many seconds ahead (`send_at`): measures the accept
    /// path alone, with no dispatch or receipts competing for the database.
    #[arg(long, value_name = "SECONDS")]
    pub schedule_ahead: Option<u64>,
    /// The gateway's process id: report its peak RSS and CPU time from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// After the load, wait until every accepted message reached a terminal status and
    /// report the end-to-end rate.
    #[arg(long)]
    pub wait_delivered: bool,
    /// After the load, wait only until every accepted message was handed to the provider
    /// (`sent` or refused) and report that rate: for a provider without receipts, where a
    /// message stays `sent`. Needs `/metrics`.
    #[arg(long, conflicts_with = "wait_delivered")]
    pub wait_sent: bool,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_timeout: u64,
    /// Bearer token for GET /metrics (not needed in dev mode).
    #[arg(long, env = "PORTCULLIS_BENCH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// HTTP client for the load: `auto` (hyper for http://, reqwest for https://),
    /// `hyper` or `reqwest`.
    #[arg(long, value_enum, default_value_t = ClientKind::Auto)]
    pub client: ClientKind,
    /// PEM CA certificate to trust for https:// (instead of the system's roots), for a
    /// gateway with a private or self-signed certificate.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
    /// The messages' purpose (`transactional` by default; a non-essential purpose such as
    /// `notification` runs every rule of the guard: caps, footer, quiet hours).
    #[arg(long, default_value = "transactional")]
    pub purpose: String,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

// By hand, so that the key never lands in a debug print.
impl std::fmt::Debug for BenchArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchArgs")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .field("requests", &self.requests)
            .field("concurrency", &self.concurrency)
            .field("rate", &self.rate)
            .field("warmup", &self.warmup)
            .field("schedule_ahead", &self.schedule_ahead)
            .field("pid", &self.pid)
            .field("wait_delivered", &self.wait_delivered)
            .field("wait_sent", &self.wait_sent)
            .field("client", &self.client)
            .field("ca_file", &self.ca_file)
            .field("purpose", &self.purpose)
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

/// Which HTTP client drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    Auto,
    Hyper,
    Reqwest,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Auto => "auto",
            ClientKind::Hyper => "hyper",
            ClientKind::Reqwest => "reqwest",
        }
    }
}

/// Statuses after which a message never changes again.
const TERMINAL: [&str; 5] = ["delivered", "undelivered", "failed", "expired", "canceled"];
/// Messages checked one by one when `/metrics` is not available.
const SAMPLE: usize = 200;
const POLL: Duration = Duration::from_millis(20);

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.requests == 0 {
        bail!("--requests must be at least 1");
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive number of messages per second");
    }
    let base = reqwest::Url::parse(&args.url).context("--url is not a URL")?;
    if !matches!(base.scheme(), "http" | "https") {
        bail!("--url must be http:// or https://");
    }
    let kind = match (args.client, base.scheme()) {
        (ClientKind::Auto, "http") => ClientKind::Hyper,
        (ClientKind::Auto, _) => ClientKind::Reqwest,
        (ClientKind::Hyper, "https") => bail!("--client hyper speaks plain HTTP only"),
        (k, _) => k,
    };
    let ca = match &args.ca_file {
        Some(path) => Some(reqwest::Certificate::from_pem(
            &std::fs::read(path)
                .with_context(|| format!("reading --ca-file {}", path.display()))?,
        )?),
        None => None,
    };
    let target = Target::new(&base, &args.key, ca)?;
    let control = target.reqwest().timeout(Duration::from_secs(30)).build()?;

    // Fail early and clearly on a wrong URL or key.
    let res = control
        .get(target.endpoint("/v1/app"))
        .header("authorization", format!("Bearer {}", args.key))
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {}", target.base))?;
    // Any 2xx: a plain HTTP server answering everything (a loopback ceiling such as nginx
    // returning 202) can be measured the same way.
    match res.status().as_u16() {
        200..=299 => {}
        401 => bail!("the gateway rejected the API key (401)"),
        s => bail!(
            "GET /v1/app answered {s}; is {} a Portcullis gateway?",
            target.base
        ),
    }

    let wait = args.wait_delivered || args.wait_sent;
    let baseline = if wait {
        fetch_counters(&control, &target, args.metrics_token.as_deref()).await
    } else {
        None
    };
    if args.wait_sent && baseline.is_none() {
        bail!("--wait-sent needs the gateway's /metrics (dev mode, or --metrics-token)");
    }
    let run_tag = run_tag();
    let mut conns = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        conns.push(Conn::new(kind, &target).await?);
    }
    let keep_ids = args.wait_delivered && baseline.is_none();
    if wait && args.schedule_ahead.is_some() {
        bail!("--wait-delivered or --wait-sent and --schedule-ahead do not go together");
    }
    let purpose = portcullis_domain::Purpose::parse(&args.purpose)
        .map_err(|_| anyhow::anyhow!("--purpose must be one of otp, transactional, alert, notification, support, marketing"))?
        .as_str();
    let send_at = args
        .schedule_ahead
        .map(|s| format!(r#","send_at":"{}""#, rfc3339_in(s)))
        .unwrap_or_default();

    let mut warmup_accepted = 0;
    if args.warmup > 0 {
        let plan = Plan {
            offset: 0,
            total: args.warmup,
            rate: None,
            keep_ids: false,
            run_tag: run_tag.clone(),
            send_at: send_at.clone(),
            purpose,
        };
        let (back, r) = run_phase(conns, plan).await;
        conns = back;
        warmup_accepted = r.accepted();
    }

    let proc_before = args.pid.map(ProcStats::read).transpose()?;
    let self_before = ProcStats::read_self();
    let plan = Plan {
        offset: args.warmup,
        total: args.requests,
        rate: args.rate,
        keep_ids,
        run_tag,
        send_at,
        purpose,
    };
    let started = Instant::now();
    let started_unix_ms = unix_ms(SystemTime::now());
    let (conns, load) = run_phase(conns, plan).await;
    drop(conns);
    let proc_after_load = args.pid.map(ProcStats::read).transpose()?;
    let self_after = ProcStats::read_self();

    let delivery = if wait {
        let expect = warmup_accepted + load.accepted();
        let deadline = started + Duration::from_secs(args.wait_timeout);
        Some(match &baseline {
            Some(b) => {
                wait_by_metrics(&control, &target, &args, b, expect, started, deadline).await
            }
            None => wait_by_sample(&control, &target, &args.key, &load, started, deadline).await,
        })
    } else {
        None
    };
    let proc_after = args.pid.map(ProcStats::read).transpose()?;

    let report = Report {
        args: &args,
        kind,
        target: &target,
        load: &load,
        started_unix_ms,
        delivery: delivery.as_ref(),
        gateway: match (proc_before, proc_after_load, proc_after) {
            (Some(b), Some(l), Some(a)) => Some((b, l, a)),
            _ => None,
        },
        generator: match (self_before, self_after) {
            (Some(b), Some(a)) => Some((b, a)),
            _ => None,
        },
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Where the load goes.
struct Target {
    base: String,
    messages_url: String,
    addr: Option<SocketAddr>,
    host: HeaderValue,
    auth: HeaderValue,
    /// The only CA trusted for https://, when given.
    ca: Option<reqwest::Certificate>,
}

impl Target {
    fn new(base: &reqwest::Url, key: &str, ca: Option<reqwest::Certificate>) -> Result<Target> {
        let host = base.host_str().context("--url has no host")?.to_owned();
        let port = base.port_or_known_default().unwrap_or(80);
        let authority = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))
            .ok()
            .and_then(|mut a| a.next());
        let root = base.as_str().trim_end_matches('/').to_owned();
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not a valid header value")?;
        auth.set_sensitive(true);
        Ok(Target {
            messages_url: format!("{root}/v1/messages"),
            base: root,
            addr,
            host: HeaderValue::from_str(&authority)?,
            auth,
            ca,
        })
    }

    /// A reqwest client builder for this target: no proxy, and only `--ca-file` trusted
    /// when it was given.
    fn reqwest(&self) -> reqwest::ClientBuilder {
        let b = reqwest::Client::builder().no_proxy();
        match &self.ca {
            Some(ca) => b.tls_certs_only([ca.clone()]),
            None => b,
        }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// One keep-alive connection's worth of client.
enum Conn {
    Hyper {
        addr: SocketAddr,
        host: HeaderValue,
        auth: HeaderValue,
        sender: Option<SendRequest<Full<Bytes>>>,
    },
    Reqwest {
        client: reqwest::Client,
        url: String,
        auth: HeaderValue,
    },
}

impl Conn {
    async fn new(kind: ClientKind, target: &Target) -> Result<Conn> {
        Ok(match kind {
            ClientKind::Reqwest => Conn::Reqwest {
                // One client (and pool) per worker, so each worker keeps its own connection.
                client: target
                    .reqwest()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(60))
                    .build()?,
                url: target.messages_url.clone(),
                auth: target.auth.clone(),
            },
            _ => {
                let addr = target
                    .addr
                    .with_context(|| format!("cannot resolve {}", target.base))?;
                Conn::Hyper {
                    addr,
                    host: target.host.clone(),
                    auth: target.auth.clone(),
                    sender: Some(hyper_connect(addr).await?),
                }
            }
        })
    }

    /// Sends one message; returns the status and the response body.
    async fn post(&mut self, body: String) -> Result<(u16, Bytes)> {
        match self {
            Conn::Hyper {
                addr,
                host,
                auth,
                sender,
            } => {
                let mut s = match sender.take() {
                    Some(s) if !s.is_closed() => s,
                    _ => hyper_connect(*addr).await?,
                };
                s.ready().await?;
                let req = hyper::Request::post("/v1/messages")
                    .header(HOST, host.clone())
                    .header(AUTHORIZATION, auth.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(Full::new(Bytes::from(body)))?;
                let res = s.send_request(req).await?;
                let status = res.status().as_u16();
                let bytes = res.into_body().collect().await?.to_bytes();
                // Only a connection that answered in full goes back for reuse.
                *sender = Some(s);
                Ok((status, bytes))
            }
            Conn::Reqwest { client, url, auth } => {
                let res = client
                    .post(url.as_str())
                    .header(AUTHORIZATION, auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = res.status().as_u16();
                Ok((status, res.bytes().await?))
            }
        }
    }
}

async fn hyper_connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// What one phase sends.
#[derive(Clone)]
struct Plan {
    /// Index of the first request (recipients and texts stay unique across phases).
    offset: u64,
    total: u64,
    rate: Option<f64>,
    keep_ids: bool,
    run_tag: String,
    /// `"send_at"` member (with a leading comma) when messages are scheduled ahead.
    send_at: String,
    purpose: &'static str,
}

/// The recipient of request `i`: `+1 415 NXX XXXX`, unique for the first ~7.9 million
/// requests, the last four digits running 0002–9999 (0000 and 0001 make the simulator fail).
fn recipient(i: u64) -> String {
    let line = 2 + i % 9998;
    format!("+1415{:03}{line:04}", exchange(i / 9998))
}

/// The `n`-th exchange code, starting at 555: `200`–`999` without the N11 service codes.
fn exchange(n: u64) -> u64 {
    const VALID: u64 = 8 * 99;
    const START: u64 = 3 * 99 + 54; // 555
    let n = (START + n) % VALID;
    let (hundred, r) = (n / 99, n % 99);
    200 + hundred * 100 + r + u64::from(r >= 11)
}

fn message_body(i: u64, plan: &Plan) -> String {
    format!(
        r#"{{"to":"{}","body":"Portcullis bench {} message {i}: your order has shipped.","purpose":"{}"{}}}"#,
        recipient(i),
        plan.run_tag,
        plan.purpose,
        plan.send_at,
    )
}

/// Milliseconds since the Unix epoch.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// RFC 3339 (UTC) of now plus `secs`, for `send_at`.
fn rfc3339_in(secs: u64) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + secs;
    let (days, rem) = (t / 86_400, t % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn run_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}",
        (nanos as u64) ^ (u64::from(std::process::id()) << 40)
    )
}

/// What one worker saw.
#[derive(Default)]
struct WorkerResult {
    /// Microseconds from the scheduled time (open loop) or the send (closed loop) to the
    /// whole response.
    latency_us: Vec<u32>,
    /// Microseconds from the actual send to the whole response.
    service_us: Vec<u32>,
    /// Open loop: microseconds the send left after its scheduled time.
    late_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    first_error: BTreeMap<String, String>,
    transport_errors: u64,
    last_response: Option<Instant>,
    /// (request index, message id) of accepted messages, when asked to keep them.
    ids: Vec<(u64, String)>,
}

/// Everything a phase saw.
struct LoadResult {
    started: Instant,
    finished: Instant,
    requests: u64,
    rate: Option<f64>,
    concurrency: usize,
    latency_us: Vec<u32>,
    service_us: Vec<u32>,
    late_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    first_error: BTreeMap<String, String>,
    transport_errors: u64,
    ids: Vec<(u64, String)>,
}

impl LoadResult {
    fn accepted(&self) -> u64 {
        self.statuses.get(&202).copied().unwrap_or(0)
    }

    fn elapsed(&self) -> Duration {
        self.finished.saturating_duration_since(self.started)
    }

    fn accepted_per_sec(&self) -> f64 {
        let secs = self.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.accepted() as f64 / secs
        } else {
            0.0
        }
    }
}

async fn run_phase(conns: Vec<Conn>, plan: Plan) -> (Vec<Conn>, LoadResult) {
    let concurrency = conns.len();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let gate = plan.rate.map(|rate| {
        let sem = Arc::new(Semaphore::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let pacer = spawn_pacer(
            sem.clone(),
            stop.clone(),
            started,
            rate,
            plan.total,
            concurrency,
        );
        (sem, stop, pacer)
    });
    let plan = Arc::new(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        let next = next.clone();
        let plan = plan.clone();
        let sem = gate.as_ref().map(|g| g.0.clone());
        tasks.spawn(worker(conn, next, plan, sem, started));
    }
    let mut conns = Vec::with_capacity(concurrency);
    let mut all = LoadResult {
        started,
        finished: started,
        requests: plan.total,
        rate: plan.rate,
        concurrency,
        latency_us: Vec::with_capacity(plan.total as usize),
        service_us: Vec::with_capacity(plan.total as usize),
        late_us: Vec::new(),
        statuses: BTreeMap::new(),
        first_error: BTreeMap::new(),
        transport_errors: 0,
        ids: Vec::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        let Ok((conn, r)) = joined else { continue };
        conns.push(conn);
        all.latency_us.extend(r.latency_us);
        all.service_us.extend(r.service_us);
        all.late_us.extend(r.late_us);
        for (s, n) in r.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
        for (k, v) in r.first_error {
            all.first_error.entry(k).or_insert(v);
        }
        all.transport_errors += r.transport_errors;
        all.ids.extend(r.ids);
        if let Some(t) = r.last_response {
            all.finished = all.finished.max(t);
        }
    }
    if let Some((_, stop, pacer)) = gate {
        stop.store(true, Ordering::Relaxed);
        let _ = pacer.join();
    }
    all.latency_us.sort_unstable();
    all.service_us.sort_unstable();
    all.late_us.sort_unstable();
    all.ids.sort_unstable_by_key(|(i, _)| *i);
    (conns, all)
}

/// Releases one permit per request as its scheduled time comes, from a thread of its own:
/// OS sleeps are precise to tens of microseconds where the async timer rounds to
/// milliseconds. When every request is released, one more permit per worker lets idle
/// workers notice the end.
fn spawn_pacer(
    sem: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    start: Instant,
    rate: f64,
    total: u64,
    workers: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut released = 0u64;
        while released < total && !stop.load(Ordering::Relaxed) {
            let elapsed = start.elapsed().as_secs_f64();
            let due = ((elapsed * rate).floor() as u64 + 1).min(total);
            if due > released {
                sem.add_permits((due - released) as usize);
                released = due;
            }
            if released >= total {
                break;
            }
            let next = start + Duration::from_secs_f64(released as f64 / rate);
            std::thread::sleep(
                next.saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(50)),
            );
        }
        sem.add_permits(workers);
    })
}

async fn worker(
    mut conn: Conn,
    next: Arc<AtomicU64>,
    plan: Arc<Plan>,
    gate: Option<Arc<Semaphore>>,
    started: Instant,
) -> (Conn, WorkerResult) {
    let mut r = WorkerResult::default();
    loop {
        if let Some(sem) = &gate {
            match sem.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
        }
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= plan.total {
            break;
        }
        let body = message_body(plan.offset + k, &plan);
        let sent = Instant::now();
        let scheduled = match plan.rate {
            Some(rate) => started + Duration::from_secs_f64(k as f64 / rate),
            None => sent,
        };
        let outcome = conn.post(body).await;
        let done = Instant::now();
        r.last_response = Some(done);
        if plan.rate.is_some() {
            r.late_us
                .push(micros(sent.saturating_duration_since(scheduled)));
        }
        match outcome {
            Ok((status, bytes)) => {
                r.latency_us
                    .push(micros(done.saturating_duration_since(scheduled)));
                r.service_us
                    .push(micros(done.saturating_duration_since(sent)));
                *r.statuses.entry(status).or_default() += 1;
                if status == 202 {
                    if plan.keep_ids
                        && let Some(id) = message_id(&bytes)
                    {
                        r.ids.push((k, id));
                    }
                } else {
                    r.first_error
                        .entry(status.to_string())
                        .or_insert_with(|| error_code(&bytes));
                }
            }
            Err(e) => {
                r.transport_errors += 1;
                r.first_error
                    .entry("transport".to_owned())
                    .or_insert_with(|| format!("{e:#}"));
                // Don't spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    (conn, r)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The `"id"` of a 202 answer, without parsing the whole document.
fn message_id(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"id\":\"")? + 6;
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_owned())
}

/// The `"code"` of an error answer, for the report.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned())
}

/// Nearest-rank percentile of a sorted list.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Nearest-rank percentile of a sorted list of microseconds, in milliseconds.
fn percentile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    percentile(sorted, p).map(|us| f64::from(us) / 1000.0)
}

// ------------------------------------------------------------------ delivery

/// The gateway's `portcullis_messages_total` counters by status.
type Counters = BTreeMap<String, f64>;

async fn fetch_counters(
    client: &reqwest::Client,
    target: &Target,
    token: Option<&str>,
) -> Option<Counters> {
    let mut req = client.get(target.endpoint("/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    Some(parse_counters(&res.text().await.ok()?))
}

fn parse_counters(text: &str) -> Counters {
    let mut out = Counters::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("portcullis_messages_total{") else {
            continue;
        };
        let Some(close) = rest.rfind('}') else {
            continue;
        };
        let labels = &rest[..close];
        let Some(status) = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("status=\""))
            .and_then(|s| s.strip_suffix('"'))
        else {
            continue;
        };
        if let Ok(v) = rest[close + 1..].trim().parse::<f64>() {
            *out.entry(status.to_owned()).or_default() += v;
        }
    }
    out
}

fn delta(now: &Counters, base: &Counters, status: &str) -> u64 {
    let d = now.get(status).copied().unwrap_or(0.0) - base.get(status).copied().unwrap_or(0.0);
    d.max(0.0) as u64
}

/// Messages handed to the provider (`sent`, whatever happened after, or refused:
/// `failed`) and messages in a terminal status, since `base`.
fn progress(now: &Counters, base: &Counters) -> (u64, u64) {
    let handed = delta(now, base, "sent") + delta(now, base, "failed");
    let terminal = TERMINAL.iter().map(|s| delta(now, base, s)).sum();
    (handed, terminal)
}

/// How the accepted messages fared after acceptance.
struct Delivery {
    method: &'static str,
    expected: u64,
    /// Every message reached what was waited for (terminal, or with `--wait-sent` handed
    /// to the provider).
    complete: bool,
    /// Time from the start of the load until every message had been handed to the
    /// provider (metrics method only).
    all_sent_after: Option<Duration>,
    /// Time from the start of the load until every message reached a terminal status.
    all_terminal_after: Option<Duration>,
    by_status: BTreeMap<String, u64>,
}

async fn wait_by_metrics(
    client: &reqwest::Client,
    target: &Target,
    args: &BenchArgs,
    baseline: &Counters,
    expected: u64,
    started: Instant,
    deadline: Instant,
) -> Delivery {
    let mut all_sent_after = None;
    let mut last = baseline.clone();
    loop {
        if let Some(now) = fetch_counters(client, target, args.metrics_token.as_deref()).await {
            let at = started.elapsed();
            let (handed, terminal) = progress(&now, baseline);
            if all_sent_after.is_none() && handed >= expected {
                all_sent_after = Some(at);
            }
            last = now;
            if args.wait_sent && handed >= expected {
                return Delivery {
                    method: "metrics",
                    expected,
                    complete: true,
                    all_sent_after,
                    all_terminal_after: None,
                    by_status: status_deltas(&last, baseline),
                };
            }
            if terminal >= expected {
                return Delivery {
                    method: "metrics",
                    expected,
                    complete: true,
                    all_sent_after: all_sent_after.or(Some(at)),
                    all_terminal_after: Some(at),
                    by_status: status_deltas(&last, baseline),
                };
            }
        }
        if Instant::now() >= deadline {
            return Delivery {
                method: "metrics",
                expected,
                complete: false,
                all_sent_after,
                all_terminal_after: None,
                by_status: status_deltas(&last, baseline),
            };
        }
        tokio::time::sleep(POLL).await;
    }
}

fn status_deltas(now: &Counters, base: &Counters) -> BTreeMap<String, u64> {
    now.keys()
        .map(|s| (s.clone(), delta(now, base, s)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Without `/metrics`: poll the last accepted message until it is terminal (dispatch is
/// roughly first in, first out), then check a random sample of the rest the same way.
async fn wait_by_sample(
    client: &reqwest::Client,
    target: &Target,
    key: &str,
    load: &LoadResult,
    started: Instant,
    deadline: Instant,
) -> Delivery {
    let mut by_status = BTreeMap::new();
    let Some((_, last_id)) = load.ids.last() else {
        return Delivery {
            method: "sample",
            expected: 0,
            complete: true,
            all_sent_after: None,
            all_terminal_after: Some(Duration::ZERO),
            by_status,
        };
    };
    let mut ids: Vec<String> = vec![last_id.clone()];
    let mut rng = SplitMix(started.elapsed().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let n = load.ids.len();
    for _ in 0..SAMPLE.min(n.saturating_sub(1)) {
        ids.push(load.ids[(rng.next() % n as u64) as usize].1.clone());
    }
    ids.sort_unstable();
    ids.dedup();
    let auth = format!("Bearer {key}");
    let mut complete = true;
    let mut latest = Duration::ZERO;
    // The last message first (it bounds the end-to-end time), then the sample, 16 at a time.
    let last = poll_terminal(client, target, &auth, last_id, deadline).await;
    let mut results = vec![last];
    let sem = Arc::new(Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.into_iter().filter(|i| i != last_id) {
        let (client, sem, auth) = (client.clone(), sem.clone(), auth.clone());
        let url = target.endpoint(&format!("/v1/messages/{id}"));
        tasks.spawn(async move {
            let _p = sem.acquire_owned().await.ok();
            poll_url(&client, &url, &auth, deadline).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        results.push(r.unwrap_or(None));
    }
    for r in results {
        match r {
            Some(status) => *by_status.entry(status).or_default() += 1,
            None => complete = false,
        }
        latest = latest.max(started.elapsed());
    }
    Delivery {
        method: "sample",
        expected: by_status.values().sum::<u64>(),
        complete,
        all_sent_after: None,
        all_terminal_after: complete.then_some(latest),
        by_status,
    }
}

async fn poll_terminal(
    client: &reqwest::Client,
    target: &Target,
    auth: &str,
    id: &str,
    deadline: Instant,
) -> Option<String> {
    let url = target.endpoint(&format!("/v1/messages/{id}"));
    poll_url(client, &url, auth, deadline).await
}

async fn poll_url(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    deadline: Instant,
) -> Option<String> {
    loop {
        if let Ok(res) = client.get(url).header("authorization", auth).send().await
            && res.status().is_success()
            && let Ok(v) = res.json::<Value>().await
            && let Some(s) = v.get("status").and_then(Value::as_str)
            && TERMINAL.contains(&s)
        {
            return Some(s.to_owned());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL * 5).await;
    }
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

// ------------------------------------------------------------------ /proc

/// Memory and CPU of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcStats {
    /// Peak resident set (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// Resident set now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// `utime + stime`, seconds.
    pub cpu_secs: f64,
}

/// `/proc` reports CPU times in USER_HZ, which is 100 on every Linux ABI in use.
pub(crate) const USER_HZ: f64 = 100.0;

impl ProcStats {
    pub(crate) fn read(pid: u32) -> Result<ProcStats> {
        Self::read_path(&pid.to_string())
            .with_context(|| format!("reading /proc/{pid} (is --pid the gateway's pid?)"))
    }

    pub(crate) fn read_self() -> Option<ProcStats> {
        Self::read_path("self").ok()
    }

    fn read_path(pid: &str) -> Result<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("unexpected /proc stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11, 12.
        let ticks = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
        Ok(ProcStats {
            hwm_kib: field("VmHWM:"),
            rss_kib: field("VmRSS:"),
            cpu_secs: (ticks(11) + ticks(12)) as f64 / USER_HZ,
        })
    }
}

// ------------------------------------------------------------------ report

struct Report<'a> {
    args: &'a BenchArgs,
    kind: ClientKind,
    target: &'a Target,
    load: &'a LoadResult,
    /// Wall-clock start of the measured load (to line it up with a peer's own clock).
    started_unix_ms: u64,
    delivery: Option<&'a Delivery>,
    /// Gateway before the load, after the load, after deliveries.
    gateway: Option<(ProcStats, ProcStats, ProcStats)>,
    generator: Option<(ProcStats, ProcStats)>,
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

impl Report<'_> {
    fn errors(&self) -> BTreeMap<String, u64> {
        let mut e: BTreeMap<String, u64> = self
            .load
            .statuses
            .iter()
            .filter(|(s, _)| **s != 202)
            .map(|(s, n)| (s.to_string(), *n))
            .collect();
        if self.load.transport_errors > 0 {
            e.insert("transport".to_owned(), self.load.transport_errors);
        }
        e
    }

    fn latency_json(sorted: &[u32]) -> Value {
        let p = |q| percentile_ms(sorted, q).map(|v| round(v, 3));
        json!({
            "p50": p(50.0), "p90": p(90.0), "p99": p(99.0), "p99_9": p(99.9),
            "max": sorted.last().map(|v| round(f64::from(*v) / 1000.0, 3)),
        })
    }

    fn end_to_end(&self) -> Option<(f64, f64)> {
        let d = self.delivery?;
        let after = d.all_terminal_after?;
        let n = self.load.accepted();
        Some((
            after.as_secs_f64(),
            n as f64 / after.as_secs_f64().max(1e-9),
        ))
    }

    fn json(&self) -> Value {
        let l = self.load;
        let gateway = self.gateway.map(|(b, m, a)| {
            let n = l.accepted().max(1) as f64;
            json!({
                "pid": self.args.pid,
                "peak_rss_mib": round(a.hwm_kib as f64 / 1024.0, 1),
                "peak_rss_mib_before": round(b.hwm_kib as f64 / 1024.0, 1),
                "rss_mib_after": round(a.rss_kib as f64 / 1024.0, 1),
                "cpu_seconds_load": round(m.cpu_secs - b.cpu_secs, 2),
                "cpu_seconds_total": round(a.cpu_secs - b.cpu_secs, 2),
                "cpu_seconds_per_1000_msgs_load": round((m.cpu_secs - b.cpu_secs) / n * 1000.0, 4),
                "cpu_seconds_per_1000_msgs_total": round((a.cpu_secs - b.cpu_secs) / n * 1000.0, 4),
                "cores_during_load": round((m.cpu_secs - b.cpu_secs) / l.elapsed().as_secs_f64().max(1e-9), 2),
            })
        });
        let delivery = self.delivery.map(|d| {
            json!({
                "method": d.method,
                "expected": d.expected,
                "complete": d.complete,
                "by_status": d.by_status,
                "all_sent_seconds": d.all_sent_after.map(|t| round(t.as_secs_f64(), 3)),
                "all_terminal_seconds": d.all_terminal_after.map(|t| round(t.as_secs_f64(), 3)),
                "sent_msgs_per_sec": d.all_sent_after.map(|t| round(l.accepted() as f64 / t.as_secs_f64().max(1e-9), 1)),
                "end_to_end_msgs_per_sec": self.end_to_end().map(|(_, r)| round(r, 1)),
            })
        });
        json!({
            "url": self.target.messages_url,
            "mode": if l.rate.is_some() { "open" } else { "closed" },
            "client": self.kind.name(),
            "concurrency": l.concurrency,
            "target_rate": l.rate,
            "warmup": self.args.warmup,
            "schedule_ahead_seconds": self.args.schedule_ahead,
            "requests": l.requests,
            "accepted": l.accepted(),
            "errors": self.errors(),
            "error_codes": l.first_error,
            "started_unix_ms": self.started_unix_ms,
            "duration_seconds": round(l.elapsed().as_secs_f64(), 3),
            "accepted_msgs_per_sec": round(l.accepted_per_sec(), 1),
            "latency_ms": Self::latency_json(&l.latency_us),
            "latency_basis": if l.rate.is_some() { "scheduled send time" } else { "actual send time" },
            "service_time_ms": Self::latency_json(&l.service_us),
            "send_lateness_ms": if l.rate.is_some() { Self::latency_json(&l.late_us) } else { Value::Null },
            "delivery": delivery,
            "gateway": gateway,
            "load_generator_cpu_seconds": self.generator.map(|(b, a)| round(a.cpu_secs - b.cpu_secs, 2)),
        })
    }

    fn text(&self) -> String {
        use std::fmt::Write;
        let l = self.load;
        let mut o = String::new();
        let ms = |sorted: &[u32], q: f64| {
            percentile_ms(sorted, q)
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into())
        };
        let line = |sorted: &[u32]| {
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {} ms",
                ms(sorted, 50.0),
                ms(sorted, 90.0),
                ms(sorted, 99.0),
                ms(sorted, 99.9),
                ms(sorted, 100.0)
            )
        };
        let mut mode = match l.rate {
            Some(r) => format!("open loop at {r} msgs/s, up to {} in flight", l.concurrency),
            None => format!("closed loop, {} connections", l.concurrency),
        };
        if let Some(s) = self.args.schedule_ahead {
            let _ = write!(mode, ", scheduled {s} s ahead");
        }
        let _ = writeln!(
            o,
            "portcullis bench: POST {} ({mode}, {} client)",
            self.target.messages_url,
            self.kind.name()
        );
        let _ = writeln!(o, "  requests          {}", l.requests);
        let _ = writeln!(o, "  accepted (202)    {}", l.accepted());
        let errors = self.errors();
        if errors.is_empty() {
            let _ = writeln!(o, "  errors            none");
        } else {
            let list: Vec<String> = errors
                .iter()
                .map(|(s, n)| match l.first_error.get(s) {
                    Some(code) => format!("{s}: {n} ({code})"),
                    None => format!("{s}: {n}"),
                })
                .collect();
            let _ = writeln!(o, "  errors            {}", list.join(", "));
        }
        let _ = writeln!(
            o,
            "  accepted msgs/s   {:.0}  ({} in {:.3} s, first request to last response)",
            l.accepted_per_sec(),
            l.accepted(),
            l.elapsed().as_secs_f64()
        );
        if l.rate.is_some() {
            let _ = writeln!(
                o,
                "  latency           {}  (from scheduled time)",
                line(&l.latency_us)
            );
            let _ = writeln!(
                o,
                "  service time      {}  (from actual send)",
                line(&l.service_us)
            );
            let _ = writeln!(o, "  send lateness     {}", line(&l.late_us));
        } else {
            let _ = writeln!(o, "  latency           {}", line(&l.latency_us));
        }
        if let Some(d) = self.delivery {
            let statuses: Vec<String> = d
                .by_status
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            if let Some(t) = d.all_sent_after {
                let _ = writeln!(
                    o,
                    "  all sent          after {:.3} s from start: {:.0} msgs/s to the provider",
                    t.as_secs_f64(),
                    l.accepted() as f64 / t.as_secs_f64().max(1e-9)
                );
            }
            match self.end_to_end() {
                None if self.args.wait_sent && d.complete => {
                    let _ = writeln!(
                        o,
                        "  statuses          {} ({}; not waited for terminal statuses)",
                        statuses.join(", "),
                        d.method
                    );
                }
                Some((secs, rate)) => {
                    let _ = writeln!(
                        o,
                        "  end to end        all terminal after {secs:.3} s from start: {rate:.0} msgs/s ({}: {})",
                        d.method,
                        statuses.join(", ")
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "  {}INCOMPLETE after {} s ({}: {})",
                        if self.args.wait_sent {
                            "all sent          "
                        } else {
                            "end to end        "
                        },
                        self.args.wait_timeout,
                        d.method,
                        statuses.join(", ")
                    );
                }
            }
        }
        if let Some((b, m, a)) = self.gateway {
            let n = l.accepted().max(1) as f64;
            let _ = writeln!(
                o,
                "  gateway memory    peak RSS {:.1} MiB (VmHWM; {:.1} before), RSS now {:.1} MiB",
                a.hwm_kib as f64 / 1024.0,
                b.hwm_kib as f64 / 1024.0,
                a.rss_kib as f64 / 1024.0
            );
            let _ = writeln!(
                o,
                "  gateway CPU       {:.2} s during load ({:.3} s per 1000 msgs, {:.2} cores); {:.2} s incl. delivery ({:.3} s per 1000 msgs)",
                m.cpu_secs - b.cpu_secs,
                (m.cpu_secs - b.cpu_secs) / n * 1000.0,
                (m.cpu_secs - b.cpu_secs) / l.elapsed().as_secs_f64().max(1e-9),
                a.cpu_secs - b.cpu_secs,
                (a.cpu_secs - b.cpu_secs) / n * 1000.0
            );
        }
        if let Some((b, a)) = self.generator {
            let _ = writeln!(
                o,
                "  load generator    {:.2} s CPU during load",
                a.cpu_secs - b.cpu_secs
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_unique_and_avoid_failing_numbers() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..60_000 {
            let r = recipient(i);
            assert_eq!(r.len(), 12, "{r}");
            assert!(!r.ends_with("0000") && !r.ends_with("0001"), "{r}");
            assert!(seen.insert(r));
        }
    }

    #[test]
    fn recipients_are_valid_numbers() {
        assert_eq!(recipient(0), "+14155550002");
        assert_eq!(recipient(9997), "+14155559999");
        assert_eq!(recipient(9998), "+14155560002");
        for block in 0..8 * 99 {
            let r = recipient(block * 9998 + block % 9998);
            portcullis_domain::phone::E164::parse(&r).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&v, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&v, 100.0), Some(100.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let text = "# TYPE portcullis_messages_total counter\n\
            portcullis_messages_total{status=\"sent\"} 12\n\
            portcullis_messages_total{status=\"delivered\"} 10\n\
            portcullis_messages_accepted_total 12\n";
        let c = parse_counters(text);
        assert_eq!(c.get("sent"), Some(&12.0));
        assert_eq!(c.get("delivered"), Some(&10.0));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn progress_counts_handed_and_terminal_since_the_baseline() {
        let counters = |pairs: &[(&str, f64)]| -> Counters {
            pairs.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
        };
        let base = counters(&[("sent", 5.0), ("delivered", 5.0), ("queued", 7.0)]);
        // 10 handed since the baseline (8 sent, 2 refused), of which 4 delivered.
        let now = counters(&[
            ("sent", 13.0),
            ("failed", 2.0),
            ("delivered", 9.0),
            ("queued", 30.0),
        ]);
        assert_eq!(progress(&now, &base), (10, 6));
        assert_eq!(progress(&base, &base), (0, 0));
        // A counter that went backwards (a restarted gateway) never counts negative.
        assert_eq!(progress(&base, &now), (0, 0));
    }

    #[test]
    fn send_at_is_rfc3339() {
        let s = rfc3339_in(0);
        assert_eq!(s.len(), 20, "{s}");
        let parsed: jiff::Timestamp = s.parse().unwrap();
        let now = jiff::Timestamp::now();
        assert!((now.as_second() - parsed.as_second()).abs() <= 2);
    }

    #[test]
    fn message_id_is_found() {
        let body = br#"{"id":"msg_abc","status":"queued"}"#;
        assert_eq!(message_id(body).as_deref(), Some("msg_abc"));
    }
}
