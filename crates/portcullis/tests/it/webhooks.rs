//! Webhooks end to end: a real receiver on loopback (allowlisted, as an operator would for
//! a local receiver), real deliveries signed per Standard Webhooks, retries, replay,
//! rotation, the SSRF guard at save and at connection time, and the delivery log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use portcullis_crypto::WebhookSecret;
use portcullis_crypto::webhook::verify;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Options, TestApp};

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("json body")
    }
}

/// What a receiver records, and how often it has seen each webhook-id.
type ReceiverState = (
    Arc<Mutex<Vec<Received>>>,
    Arc<Mutex<HashMap<String, usize>>>,
);

/// A webhook receiver on 127.0.0.1 that fails the first `fail_first` attempts of every
/// webhook-id with 500 (or answers `status` to everything), recording every request.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    /// Most requests it was handling at once.
    pub max_concurrent: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(fail_first: usize, status: u16) -> Receiver {
        Self::start_with(fail_first, status, Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer each request.
    pub async fn start_with(fail_first: usize, status: u16, delay: Duration) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let current = Arc::new(AtomicUsize::new(0));
        let max_concurrent = Arc::new(AtomicUsize::new(0));
        let (cur, max) = (current.clone(), max_concurrent.clone());
        let state = (got.clone(), seen);
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    move |axum::extract::State((got, seen)): axum::extract::State<
                        ReceiverState,
                    >,
                          headers: HeaderMap,
                          body: String| async move {
                        let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        cur.fetch_sub(1, Ordering::SeqCst);
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let id = h("webhook-id");
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            let n = seen.entry(id.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let answer = if n <= fail_first { 500 } else { status };
                        got.lock().unwrap().push(Received {
                            id,
                            timestamp: h("webhook-timestamp"),
                            signature: h("webhook-signature"),
                            body,
                            status: answer,
                        });
                        StatusCode::from_u16(answer).unwrap()
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            got,
            max_concurrent,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `pred` holds over what was received.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; got {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Options for a gateway that may deliver to loopback receivers, retrying quickly.
pub fn local_receivers() -> Options {
    Options {
        configure: |c| {
            c.webhook_allowed_cidrs = Some("127.0.0.1/32".into());
            c.webhook_retry_schedule_ms = Some("100,100,100,100,100,100,100".into());
        },
        ..Options::default()
    }
}

fn ok_2xx(got: &[Received]) -> Vec<&Received> {
    got.iter()
        .filter(|r| (200..300).contains(&r.status))
        .collect()
}

async fn deliveries_are_signed_and_complete(backend: Backend) {
    let app = TestApp::spawn_with(backend, local_receivers()).await;
    let rx = Receiver::start(0, 200).await;
    let (status, ep) = app
        .post("/v1/webhooks", &app.admin_key, &json!({"url": rx.url}))
        .await;
    assert_eq!(status, 201, "{ep}");
    let secret = ep["secret"]
        .as_str()
        .expect("secret on the first endpoint")
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    assert!(ep["id"].as_str().unwrap().starts_with("whe_"));
    // Later endpoints share the secret and never show it.
    let (status, second) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": format!("{}?second=1", rx.url), "events": ["message.delivered"], "enabled": false}),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert!(second.get("secret").is_none(), "{second}");
    let (_, listed) = app.get("/v1/webhooks", &app.admin_key).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains("whsec_"));

    let msg = app.send("+14155550142", "hello").await;
    let id = msg["id"].as_str().unwrap();
    app.wait_for_status(id, &app.admin_key, "delivered", Duration::from_secs(10))
        .await;
    let got = rx
        .wait_for("sent and delivered", |g| ok_2xx(g).len() >= 2)
        .await;
    let secret = WebhookSecret::from_whsec(&secret).unwrap();
    let now = jiff::Timestamp::now().as_second();
    let mut types = Vec::new();
    for r in &got {
        let ts: i64 = r.timestamp.parse().unwrap();
        assert!(
            verify(
                std::slice::from_ref(&secret),
                &r.id,
                ts,
                r.body.as_bytes(),
                &r.signature,
                now,
                300
            ),
            "signature of {r:?}"
        );
        assert!(r.id.starts_with("evt_"));
        let body = r.json();
        assert_eq!(body["data"]["id"], id);
        assert_eq!(body["data"]["to"], "+1415555****", "masked by default");
        assert!(!r.body.contains("0142"));
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        types.push(body["type"].as_str().unwrap().to_owned());
    }
    types.sort();
    assert_eq!(types, ["message.delivered", "message.sent"]);
    let delivered = got
        .iter()
        .find(|r| r.json()["type"] == "message.delivered")
        .unwrap()
        .json();
    assert_eq!(delivered["data"]["status"], "delivered");
    assert_eq!(delivered["data"]["connection_id"], "conn_simulator");

    // The delivery log shows both, with their attempt. The receiver answers before the
    // gateway records its answer, so give the settlement a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let (status, log) = app
            .get("/v1/webhooks/deliveries?status=succeeded", &app.admin_key)
            .await;
        assert_eq!(status, 200, "{log}");
        if log["data"].as_array().unwrap().len() >= 2 || tokio::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let data = log["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{log}");
    for d in data {
        assert!(d["id"].as_str().unwrap().starts_with("dlv_"));
        assert_eq!(d["attempt_count"], 1);
        assert_eq!(d["attempts"][0]["outcome"], "sent");
        assert_eq!(d["attempts"][0]["status_code"], 200);
    }
    // An inbound reply is an event too.
    let (status, _) = app
        .post(
            "/v1/simulator/inbound",
            &app.admin_key,
            &json!({"from": "+14155550142", "to": "+14155550199", "body": "thanks"}),
        )
        .await;
    assert_eq!(status, 202);
    let got = rx
        .wait_for("inbound", |g| {
            g.iter().any(|r| r.json()["type"] == "message.inbound")
        })
        .await;
    let inbound = got
        .iter()
        .find(|r| r.json()["type"] == "message.inbound")
        .unwrap()
        .json();
    assert_eq!(inbound["data"]["body"], "thanks");
    assert_eq!(inbound["data"]["from"], "+1415555****");
    // STOP and START: the recipient's choices are events too.
    for (word, kind) in [
        ("STOP", "recipient.opted_out"),
        ("START", "recipient.opted_in"),
    ] {
        let (status, _) = app
            .post(
                "/v1/simulator/inbound",
                &app.admin_key,
                &json!({"from": "+14155550142", "to": "+14155550199", "body": word}),
            )
            .await;
        assert_eq!(status, 202);
        let got = rx
            .wait_for(kind, |g| g.iter().any(|r| r.json()["type"] == kind))
            .await;
        let e = got
            .iter()
            .find(|r| r.json()["type"] == kind)
            .unwrap()
            .json();
        assert_eq!(e["data"]["phone"], "+1415555****", "{e}");
        assert_eq!(e["data"]["source"], "inbound_keyword");
    }
    app.stop().await;
}

async fn a_receiver_down_for_three_attempts_gets_every_event_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, local_receivers()).await;
    let rx = Receiver::start(3, 200).await;
    let (status, _) = app
        .post("/v1/webhooks", &app.admin_key, &json!({"url": rx.url}))
        .await;
    assert_eq!(status, 201);
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = app.send(&format!("+1415555020{i}"), "retry me").await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "delivered", Duration::from_secs(10))
            .await;
    }
    // 5 messages × (sent, delivered), each failing three times first.
    let got = rx
        .wait_for("10 events acknowledged", |g| ok_2xx(g).len() >= 10)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = rx.received();
    assert_eq!(
        got.len(),
        got_after.len(),
        "nothing after every event was acknowledged"
    );
    let mut acks: HashMap<&str, usize> = HashMap::new();
    let mut attempts: HashMap<&str, usize> = HashMap::new();
    for r in &got_after {
        *attempts.entry(&r.id).or_default() += 1;
        if r.status == 200 {
            *acks.entry(&r.id).or_default() += 1;
        }
    }
    assert_eq!(acks.len(), 10, "{acks:?}");
    assert!(
        acks.values().all(|&n| n == 1),
        "each event acknowledged once: {acks:?}"
    );
    assert!(attempts.values().all(|&n| n == 4), "{attempts:?}");
    let (_, log) = app
        .get("/v1/webhooks/deliveries?limit=100", &app.admin_key)
        .await;
    for d in log["data"].as_array().unwrap() {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(d["attempt_count"], 4, "{d}");
        let outcomes: Vec<&str> = d["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["failed", "failed", "failed", "sent"]);
        assert_eq!(d["attempts"][0]["error_class"], "http_500");
    }
    app.stop().await;
}

async fn exhausted_deliveries_fail_and_replay_keeps_the_webhook_id(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| {
                c.webhook_allowed_cidrs = Some("127.0.0.1/32".into());
                c.webhook_retry_schedule_ms = Some("50,50".into());
            },
            ..Options::default()
        },
    )
    .await;
    let rx = Receiver::start(3, 200).await;
    let (_, ep) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": rx.url, "events": ["message.sent"]}),
        )
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    app.send("+14155550300", "x").await;
    // Three attempts, all failed: the delivery fails.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let (_, log) = app
            .get("/v1/webhooks/deliveries?status=failed", &app.admin_key)
            .await;
        if let Some(d) = log["data"].as_array().unwrap().first() {
            break d.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no failed delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["attempt_count"], 3);
    assert_eq!(rx.received().len(), 3);
    let event_id = failed["event_id"].as_str().unwrap().to_owned();
    // A manual replay is a new delivery of the same event.
    let (status, replay) = app
        .post(
            &format!(
                "/v1/webhooks/deliveries/{}/replay",
                failed["id"].as_str().unwrap()
            ),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 202, "{replay}");
    assert_ne!(replay["id"], failed["id"]);
    assert_eq!(replay["event_id"], event_id.as_str());
    let got = rx.wait_for("the replay", |g| ok_2xx(g).len() == 1).await;
    assert_eq!(ok_2xx(&got)[0].id, event_id, "same webhook-id");
    // Recover finds nothing more to send once... the original is still failed, so it is
    // sent again (and acknowledged again: receivers dedupe by webhook-id).
    let (status, rec) = app
        .post(
            &format!("/v1/webhooks/{ep_id}/recover"),
            &app.admin_key,
            &json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 202, "{rec}");
    assert_eq!(rec["queued"], 1);
    rx.wait_for("the recovered event", |g| ok_2xx(g).len() == 2)
        .await;
    // Another app cannot see or replay these deliveries.
    let (_, _, other_key) = app.other_app_same_tenant().await;
    let (status, _) = app
        .post(
            &format!(
                "/v1/webhooks/deliveries/{}/replay",
                failed["id"].as_str().unwrap()
            ),
            &other_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, theirs) = app.get("/v1/webhooks/deliveries", &other_key).await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0);
    let (status, _) = app.get(&format!("/v1/webhooks/{ep_id}"), &other_key).await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn rotated_secrets_both_sign_during_the_overlap(backend: Backend) {
    let app = TestApp::spawn_with(backend, local_receivers()).await;
    let rx = Receiver::start(0, 200).await;
    let (_, ep) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": rx.url, "events": ["message.sent"]}),
        )
        .await;
    let old = WebhookSecret::from_whsec(ep["secret"].as_str().unwrap()).unwrap();
    let (status, rotated) = app
        .post("/v1/webhooks/secret/rotate", &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = WebhookSecret::from_whsec(rotated["secret"].as_str().unwrap()).unwrap();
    app.send("+14155550301", "x").await;
    let got = rx.wait_for("one delivery", |g| ok_2xx(g).len() == 1).await;
    let r = &got[0];
    assert_eq!(r.signature.split(' ').count(), 2, "{}", r.signature);
    let ts: i64 = r.timestamp.parse().unwrap();
    let now = jiff::Timestamp::now().as_second();
    for s in [&old, &new] {
        assert!(verify(
            std::slice::from_ref(s),
            &r.id,
            ts,
            r.body.as_bytes(),
            &r.signature,
            now,
            300
        ));
    }
    let stranger = WebhookSecret::generate();
    assert!(!verify(
        &[stranger],
        &r.id,
        ts,
        r.body.as_bytes(),
        &r.signature,
        now,
        300
    ));
    // A captured delivery replayed later than the tolerance fails verification.
    assert!(!verify(
        &[new],
        &r.id,
        ts,
        r.body.as_bytes(),
        &r.signature,
        now + 301,
        300
    ));
    app.stop().await;
}

async fn gone_disables_and_the_guard_blocks_at_connection(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, local_receivers()).await;
    let gone = Receiver::start(0, 410).await;
    let watcher = Receiver::start(0, 200).await;
    let (status, _) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": watcher.url, "events": ["webhook.endpoint_disabled"]}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, ep) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": gone.url, "events": ["message.sent"]}),
        )
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    app.send("+14155550302", "x").await;
    gone.wait_for("the 410", |g| g.len() == 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, e) = app
            .get(&format!("/v1/webhooks/{ep_id}"), &app.admin_key)
            .await;
        if e["enabled"] == false {
            assert!(
                e["disabled_reason"].as_str().unwrap().contains("410"),
                "{e}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not disabled: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The app is told, through its other endpoints.
    let told = watcher
        .wait_for("the disabled event", |g| g.len() == 1)
        .await;
    let e = told[0].json();
    assert_eq!(e["type"], "webhook.endpoint_disabled");
    assert_eq!(e["data"]["endpoint_id"], ep_id.as_str());
    // A receiver that was allowed when saved but is not any more (the operator removed
    // the allowlist): the address dialled is checked, the attempt is blocked, not sent.
    let rx = Receiver::start(0, 200).await;
    let (status, _) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": rx.url, "events": ["message.sent"]}),
        )
        .await;
    assert_eq!(status, 201);
    app.restart(|c| c.webhook_allowed_cidrs = None).await;
    app.send("+14155550303", "x").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        let (_, log) = app
            .get("/v1/webhooks/deliveries?status=blocked", &app.admin_key)
            .await;
        if let Some(d) = log["data"].as_array().unwrap().first() {
            break d.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no blocked delivery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(blocked["attempts"][0]["outcome"], "blocked", "{blocked}");
    assert!(
        blocked["attempts"][0]["excerpt"].as_str().is_some(),
        "{blocked}"
    );
    assert!(rx.received().is_empty(), "nothing reached the receiver");
    // And saving such a URL now is refused.
    let (status, err) = app
        .post("/v1/webhooks", &app.admin_key, &json!({"url": rx.url}))
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["code"], "invalid_webhook_url");
    app.stop().await;
}

async fn webhook_urls_are_vetted_when_saved(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for url in [
        "http://127.0.0.1/hook",
        "http://localhost:8080/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://192.168.1.1/",
        "http://user:pass@example.com/",
        "http://metadata.google.internal/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "not a url",
    ] {
        let (status, err) = app
            .post("/v1/webhooks", &app.admin_key, &json!({"url": url}))
            .await;
        assert_eq!(status, 422, "{url}: {err}");
        assert_eq!(err["code"], "invalid_webhook_url", "{url}");
    }
    let (status, err) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": "https://example.com/", "events": ["message.*"]}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(err["code"], "invalid_event_type");
    // Roles: a sender may not manage webhooks.
    let sender = app.key_with_role("sender").await;
    let (status, _) = app.get("/v1/webhooks", &sender).await;
    assert_eq!(status, 403);
    app.stop().await;
}

both_backends!(
    deliveries_are_signed_and_complete,
    a_receiver_down_for_three_attempts_gets_every_event_once,
    exhausted_deliveries_fail_and_replay_keeps_the_webhook_id,
    rotated_secrets_both_sign_during_the_overlap,
    gone_disables_and_the_guard_blocks_at_connection,
    webhook_urls_are_vetted_when_saved,
);

/// A Python with the official `standardwebhooks` package importable: installed from PyPI
/// into the target dir on first use (pinned), so the suite needs no manual setup.
fn python_with_standardwebhooks() -> std::path::PathBuf {
    // Tests run in parallel; one installs, the others wait for it.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let vendor = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyvendor");
    let importable = || {
        std::process::Command::new("python3")
            .args(["-c", "import standardwebhooks.webhooks"])
            .env("PYTHONPATH", &vendor)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !importable() {
        let out = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
            ])
            .arg(&vendor)
            .arg("standardwebhooks==1.1.0")
            .output()
            .expect("python3 -m pip runs");
        assert!(
            out.status.success() && importable(),
            "installing the official standardwebhooks package from PyPI failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    vendor
}

async fn the_official_library_verifies_real_deliveries(backend: Backend) {
    let vendor = python_with_standardwebhooks();
    let app = TestApp::spawn_with(backend, local_receivers()).await;
    let rx = Receiver::start(0, 200).await;
    let (_, ep) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": rx.url, "events": ["message.delivered"]}),
        )
        .await;
    let old = ep["secret"].as_str().unwrap().to_owned();
    let (_, rotated) = app
        .post("/v1/webhooks/secret/rotate", &app.admin_key, &json!({}))
        .await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    app.send("+14155550310", "verify me").await;
    let got = rx.wait_for("a delivery", |g| ok_2xx(g).len() == 1).await;
    let r = &got[0];
    let case = json!({
        "body": r.body,
        "headers": {
            "webhook-id": r.id,
            "webhook-timestamp": r.timestamp,
            "webhook-signature": r.signature,
        },
        "secrets": [old, new],
        "stranger": WebhookSecret::generate().to_whsec_string().expose(),
        "type": "message.delivered",
    });
    let file = app.config.data_dir.join("case.json");
    std::fs::write(&file, case.to_string()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/py/verify_official.py"
    );
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .env("PYTHONPATH", &vendor)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "official library: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    app.stop().await;
}

both_backends!(the_official_library_verifies_real_deliveries);

async fn a_slow_receiver_does_not_hold_up_the_others(backend: Backend) {
    let app = TestApp::spawn_with(backend, local_receivers()).await;
    let slow = Receiver::start_with(0, 200, Duration::from_millis(1500)).await;
    let fast = Receiver::start(0, 200).await;
    for url in [&slow.url, &fast.url] {
        let (status, _) = app
            .post(
                "/v1/webhooks",
                &app.admin_key,
                &json!({"url": url, "events": ["message.sent"]}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let n = 60;
    for i in 0..n {
        app.send(&format!("+141555506{i:02}"), "x").await;
    }
    fast.wait_for("every event at the fast receiver", |g| ok_2xx(g).len() == n)
        .await;
    // The slow one has had at most its share of the workers (16 at a time by default)…
    let slow_so_far = slow.received().len();
    assert!(
        slow_so_far < n,
        "the slow receiver was not the bottleneck: {slow_so_far}"
    );
    // …and still gets every event, exactly once, in the end.
    slow.wait_for("every event at the slow receiver", |g| ok_2xx(g).len() == n)
        .await;
    let max = slow.max_concurrent.load(Ordering::SeqCst);
    assert!((2..=16).contains(&max), "per-endpoint concurrency: {max}");
    let mut ids: Vec<String> = slow.received().into_iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    app.stop().await;
}

both_backends!(a_slow_receiver_does_not_hold_up_the_others);
