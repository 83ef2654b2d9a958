//! Crash safety with the real binary: messages are sent over HTTP while the process is
//! killed with SIGKILL at random moments and restarted. Every message that got a 202 must
//! reach a terminal status; none may be lost; the number handed to the provider twice is
//! counted (from the simulator's submission log) and must stay within what was in flight
//! at the kills.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

const MESSAGES: usize = 2000;
const CONCURRENCY: usize = 16;
const KILLS: usize = 5;
/// Jobs one process can have in flight: dispatchers × claim batch (see PipelineConfig).
const IN_FLIGHT_BOUND: usize = 2 * 256;

struct Gateway {
    data_dir: PathBuf,
    port: u16,
    database_url: Option<String>,
    child: Option<Child>,
    /// The bootstrap app, from the first start.
    app_id: Option<String>,
}

impl Gateway {
    async fn start(&mut self) -> Option<String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.arg("serve")
            .arg("--dev")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("PORTCULLIS_LOG", "warn")
            .env("PORTCULLIS_SIMULATOR_DELAY_MS", "20")
            .env("PORTCULLIS_JOB_LEASE_SECONDS", "2")
            .env(
                "PORTCULLIS_SIMULATOR_LOG_FILE",
                self.data_dir.join("simulator.log"),
            )
            .env_remove("PORTCULLIS_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd.spawn().expect("start portcullis");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let key = Arc::new(Mutex::new(None::<String>));
        let key2 = key.clone();
        let app = Arc::new(Mutex::new(None::<String>));
        let app2 = app.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix("bootstrap: ") {
                    let v: Value = serde_json::from_str(json).expect("bootstrap json");
                    *key2.lock().await = v["key"].as_str().map(str::to_owned);
                    *app2.lock().await = v["app_id"].as_str().map(str::to_owned);
                }
            }
        });
        self.child = Some(child);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{}/readyz", self.port))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "gateway did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The bootstrap line is printed right after the listener is up.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(app) = app.lock().await.clone() {
            self.app_id = Some(app);
        }
        key.lock().await.clone()
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL");
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn recipient(i: usize) -> String {
    // +1415555xxxx, never ending in 0000/0001 (the simulator's failure numbers).
    format!("+1415555{:04}", 2000 + i % 7000)
}

async fn crash_run(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway {
        data_dir: dir.path().to_path_buf(),
        port: free_port(),
        database_url,
        child: None,
        app_id: None,
    };
    let key = gw
        .start()
        .await
        .expect("first start prints the bootstrap key");
    // Two thousand messages in seconds from a new app is exactly what burst detection
    // holds for review; this test is about crashes, so the operator turns it off.
    let app_id = gw.app_id.clone().expect("bootstrap app id");
    let mut cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cli.args([
        "apps",
        "update",
        &app_id,
        "--burst-min-per-minute",
        "0",
        "--data-dir",
    ])
    .arg(&gw.data_dir);
    if let Some(url) = &gw.database_url {
        cli.arg("--database-url").arg(url);
    }
    let out = cli.output().await.expect("run the CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server reads app settings with each key lookup: nothing to wait for.
    let base = format!("http://127.0.0.1:{}", gw.port);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Senders: each message is retried (same Idempotency-Key) until it gets a 202.
    let accepted = Arc::new(Mutex::new(HashMap::<usize, String>::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, base, key, accepted, next) = (
            client.clone(),
            base.clone(),
            key.clone(),
            accepted.clone(),
            next.clone(),
        );
        senders.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= MESSAGES {
                    return;
                }
                loop {
                    let res = client
                        .post(format!("{base}/v1/messages"))
                        .bearer_auth(&key)
                        .header("Idempotency-Key", format!("crash-{i}"))
                        .json(&json!({"to": recipient(i), "body": format!("crash test {i}"), "purpose": "transactional"}))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if let Some(id) = v["id"].as_str() {
                                accepted.lock().await.insert(i, id.to_owned());
                                break;
                            }
                        }
                        Ok(r) => assert!(r.status().is_server_error() || r.status() == 429, "unexpected {}", r.status()),
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }

    // The killer: SIGKILL at pseudo-random moments while the load runs.
    let mut rng_state = 0x9e3779b97f4a7c15u64 ^ u64::from(gw.port);
    let mut kills_during_load = 0;
    for _ in 0..KILLS {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        tokio::time::sleep(Duration::from_millis(100 + rng_state % 300)).await;
        if next.load(std::sync::atomic::Ordering::SeqCst) < MESSAGES {
            kills_during_load += 1;
        }
        gw.kill().await;
        gw.start().await;
    }
    assert!(
        kills_during_load >= KILLS - 1,
        "only {kills_during_load} kills hit the load; slow it down"
    );
    while let Some(r) = senders.join_next().await {
        r.expect("sender task");
    }
    let accepted = accepted.lock().await.clone();
    assert_eq!(
        accepted.len(),
        MESSAGES,
        "every message was eventually accepted"
    );

    // Every accepted message reaches a terminal status.
    let ids: HashSet<String> = accepted.values().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let statuses = loop {
        let statuses = all_statuses(&client, &base, &key).await;
        let done = ids.iter().all(|id| {
            statuses.get(id).is_some_and(|s| {
                ["delivered", "undelivered", "failed", "expired", "canceled"].contains(&s.as_str())
            })
        });
        if done {
            break statuses;
        }
        if Instant::now() >= deadline {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for id in &ids {
                *counts
                    .entry(statuses.get(id).map(String::as_str).unwrap_or("missing"))
                    .or_default() += 1;
            }
            panic!("not every accepted message reached a terminal status: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for id in &ids {
        assert_eq!(statuses[id], "delivered", "{id}");
    }

    // What the "carrier" received: every message at least once; duplicates counted.
    let log = std::fs::read_to_string(dir.path().join("simulator.log")).unwrap();
    let mut handed: HashMap<&str, usize> = HashMap::new();
    for line in log.lines() {
        *handed.entry(line.trim()).or_default() += 1;
    }
    for id in &ids {
        assert!(
            handed.contains_key(id.as_str()),
            "{id} never reached the provider"
        );
    }
    let duplicates: usize = handed.values().map(|n| n - 1).sum();
    println!(
        "crash test ({}): {MESSAGES} accepted, {KILLS} kills, {} handed to the provider, {duplicates} duplicate hand-overs (bound {})",
        if gw.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        handed.values().sum::<usize>(),
        KILLS * IN_FLIGHT_BOUND
    );
    assert!(
        duplicates <= KILLS * IN_FLIGHT_BOUND,
        "{duplicates} duplicates exceed the in-flight bound"
    );
    gw.kill().await;
}

async fn all_statuses(client: &reqwest::Client, base: &str, key: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/messages?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in page["data"].as_array().unwrap() {
            out.insert(
                m["id"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill() {
    crash_run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill() {
    let admin = std::env::var("PORTCULLIS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("pcl_crash_{}", std::process::id());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("PostgreSQL reachable");
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
    crash_run(Some(format!("{base}/{name}"))).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}
