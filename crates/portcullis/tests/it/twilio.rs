//! Twilio end to end, against a local stand-in that speaks Twilio's wire format: the
//! Messages API (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP
//! Basic auth with the account SID and auth token, Twilio's `201` resource and error
//! bodies), and callbacks signed by the official `twilio` package from PyPI
//! (`RequestValidator.compute_signature`), so our verification is checked against Twilio's
//! own code rather than against itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Options, TestApp};

both_backends!(
    send_then_a_signed_status_callback_delivers,
    forged_and_foreign_callbacks_change_nothing,
    an_invalid_number_fails_without_retry,
    throttling_is_retried,
    a_signed_inbound_stop_suppresses,
    a_tenants_connection_speaks_for_that_tenant_only,
    callbacks_are_verified_against_the_public_url,
    an_api_key_sends_and_the_auth_token_signs,
);

pub(crate) const SID_A: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const SID_B: &str = "ACfedcba9876543210fedcba9876543210";
/// The bootstrap app's sender, and the Twilio number the stand-in lets us send from.
pub(crate) const OUR_NUMBER: &str = "+14155550199";
const SUBSCRIBER: &str = "+14155552671";

fn token(name: &str) -> String {
    format!("{name}-{}", crate::helpers::random_alnum(24))
}

// ---------------------------------------------------------------------------------------
// The stand-in for api.twilio.com.

/// One `Messages.json` request the stand-in accepted or refused.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    pub(crate) to: String,
    pub(crate) from: String,
    pub(crate) body: String,
    pub(crate) status_callback: String,
    /// What it answered.
    pub(crate) status: u16,
    pub(crate) sid: Option<String>,
    /// When it arrived.
    pub(crate) at: std::time::Instant,
}

#[derive(Default)]
struct TwilioState {
    /// (AccountSid, AuthToken) pairs it knows.
    accounts: Vec<(String, String)>,
    /// (API key SID, secret, AccountSid): keys that may act for an account.
    api_keys: Vec<(String, String, String)>,
    /// The numbers its accounts may send from.
    numbers: Vec<String>,
    /// Canned answers by `To`, used in order before the normal `201`.
    script: HashMap<String, VecDeque<(u16, Value)>>,
    /// While set, every request is answered with this HTTP status (an outage).
    outage: Option<u16>,
    /// Requests still to be answered `429` (error 20429) with this `Retry-After`.
    throttle: Option<(u32, u64)>,
    got: Vec<Submitted>,
}

pub(crate) struct FakeTwilio {
    pub(crate) base_url: String,
    state: Arc<Mutex<TwilioState>>,
}

static SIDS: AtomicU64 = AtomicU64::new(1);

fn twilio_error(code: u32, status: u16, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

fn json_response(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl FakeTwilio {
    pub(crate) async fn start(accounts: &[(&str, &str)], numbers: &[&str]) -> FakeTwilio {
        let state = Arc::new(Mutex::new(TwilioState {
            accounts: accounts
                .iter()
                .map(|(s, t)| ((*s).to_owned(), (*t).to_owned()))
                .collect(),
            numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
            ..TwilioState::default()
        }));
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                axum::routing::post(create_message),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeTwilio { base_url, state }
    }

    /// Answers every request with `status` until called with `None`.
    pub(crate) fn outage(&self, status: Option<u16>) {
        self.state.lock().unwrap().outage = status;
    }

    /// Answers the next `n` requests `429` with `Retry-After: {seconds}`.
    pub(crate) fn throttle(&self, n: u32, seconds: u64) {
        self.state.lock().unwrap().throttle = Some((n, seconds));
    }

    fn script(&self, to: &str, answers: Vec<(u16, Value)>) {
        self.state
            .lock()
            .unwrap()
            .script
            .insert(to.to_owned(), answers.into());
    }

    pub(crate) fn submitted(&self) -> Vec<Submitted> {
        self.state.lock().unwrap().got.clone()
    }

    pub(crate) fn submitted_to(&self, to: &str) -> Vec<Submitted> {
        self.submitted()
            .into_iter()
            .filter(|s| s.to == to)
            .collect()
    }

    pub(crate) async fn wait_for_to(&self, to: &str, n: usize) -> Vec<Submitted> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.submitted_to(to);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stand-in never got {n} messages to {to}: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, checked as Twilio checks it.
async fn create_message(
    State(state): State<Arc<Mutex<TwilioState>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let authenticated = credentials.is_some_and(|c| {
        st.accounts
            .iter()
            .any(|(sid, tok)| *sid == account && c == format!("{sid}:{tok}"))
            || st
                .api_keys
                .iter()
                .any(|(key, secret, acct)| *acct == account && c == format!("{key}:{secret}"))
    });
    if !authenticated {
        return json_response(401, &twilio_error(20003, 401, "Authenticate"));
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return json_response(
            400,
            &twilio_error(21604, 400, "A 'To' phone number is required."),
        );
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &params {
        let known = ["To", "From", "Body", "StatusCallback"].contains(&k.as_str());
        if !known || fields.insert(k.as_str(), v.as_str()).is_some() {
            // We send exactly these four, once each.
            return json_response(
                400,
                &twilio_error(20001, 400, &format!("Unexpected parameter {k}")),
            );
        }
    }
    let (Some(to), Some(from), Some(text), Some(callback)) = (
        fields.get("To"),
        fields.get("From"),
        fields.get("Body"),
        fields.get("StatusCallback"),
    ) else {
        return json_response(400, &twilio_error(21602, 400, "Message body is required."));
    };
    let (to, from, text, callback) = (
        (*to).to_owned(),
        (*from).to_owned(),
        (*text).to_owned(),
        (*callback).to_owned(),
    );
    let mut record = Submitted {
        to: to.clone(),
        from: from.clone(),
        body: text.clone(),
        status_callback: callback,
        status: 0,
        sid: None,
        at: std::time::Instant::now(),
    };
    if let Some(status) = st.outage {
        record.status = status;
        st.got.push(record);
        return json_response(
            status,
            &twilio_error(20500, status, "Internal Server Error"),
        );
    }
    if let Some((n, seconds)) = st.throttle.take() {
        if n > 1 {
            st.throttle = Some((n - 1, seconds));
        }
        record.status = 429;
        st.got.push(record);
        let mut res = json_response(429, &twilio_error(20429, 429, "Too Many Requests"));
        res.headers_mut()
            .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
        return res;
    }
    if !st.numbers.contains(&from) {
        record.status = 400;
        st.got.push(record);
        return json_response(
            400,
            &twilio_error(
                21606,
                400,
                "The From phone number is not a valid, SMS-capable inbound phone number or short code for your account.",
            ),
        );
    }
    if let Some((status, answer)) = st.script.get_mut(&to).and_then(VecDeque::pop_front) {
        record.status = status;
        st.got.push(record);
        return json_response(status, &answer);
    }
    let sid = format!(
        "SM{:032x}",
        (u128::from(std::process::id()) << 64) | u128::from(SIDS.fetch_add(1, Ordering::SeqCst))
    );
    record.status = 201;
    record.sid = Some(sid.clone());
    st.got.push(record);
    let date = "Mon, 23 Nov 2026 09:30:00 +0000";
    json_response(
        201,
        &json!({
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
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Signing with the official library.

/// A Python with the official `twilio` package importable: installed from PyPI into the
/// target dir on first use (pinned; `--no-deps`, since `twilio.request_validator` needs
/// only the standard library), so the suite needs no manual setup.
fn python_with_twilio() -> std::path::PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let vendor = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyvendor-twilio");
    let importable = || {
        std::process::Command::new("python3")
            .args(["-c", "import twilio.request_validator"])
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
                "--no-deps",
                "--target",
            ])
            .arg(&vendor)
            .arg(TWILIO_PACKAGE)
            .output()
            .expect("python3 -m pip runs");
        assert!(
            out.status.success() && importable(),
            "installing the official twilio package from PyPI failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    vendor
}

const TWILIO_PACKAGE: &str = "twilio==9.8.7";

/// What to sign: the auth token, the URL and the POST parameters.
type SignCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// `X-Twilio-Signature` values from `RequestValidator(token).compute_signature(url, params)`.
async fn twilio_signatures(cases: &[SignCase<'_>]) -> Vec<String> {
    let vendor = tokio::task::spawn_blocking(python_with_twilio)
        .await
        .unwrap();
    let input: Vec<Value> = cases
        .iter()
        .map(|(token, url, params)| {
            let params: serde_json::Map<String, Value> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect();
            json!({"token": token, "url": url, "params": params})
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py/twilio_sign.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .env("PYTHONPATH", &vendor)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(Value::Array(input).to_string().as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "signing with the twilio package: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    twilio_signatures(&[(token, url, params)]).await.remove(0)
}

/// POSTs a form to `url` as Twilio does, with `signature` (if any).
async fn post_callback(
    url: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> (u16, String, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::USER_AGENT, "TwilioProxy/1.1")
        .body(body);
    if let Some(sig) = signature {
        req = req.header("X-Twilio-Signature", sig);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, content_type, res.text().await.unwrap())
}

// ---------------------------------------------------------------------------------------
// Gateway-side set-up.

/// Creates a Twilio connection as `portcullis connections create --type twilio` does (the
/// server is already running: it must pick the connection up when a route names it).
async fn an_api_key_sends_and_the_auth_token_signs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token_a = token("a");
    // The stand-in takes only the API key for the account: the auth token would be refused.
    let fake = FakeTwilio::start(&[(SID_A, "not-the-connections-token")], &[OUR_NUMBER]).await;
    let (key_sid, key_secret) = ("SK0123456789abcdef0123456789abcdef", "api-key-secret-value");
    fake.state.lock().unwrap().api_keys.push((
        key_sid.to_owned(),
        key_secret.to_owned(),
        SID_A.to_owned(),
    ));
    let store = &app.server.as_ref().unwrap().store;
    let conn = store
        .create_connection(
            None,
            "twilio",
            "twilio",
            &json!({
                "account_sid": SID_A,
                "auth_token": token_a,
                "api_key_sid": key_sid,
                "api_key_secret": key_secret,
                "from_numbers": [OUR_NUMBER],
                "base_url": fake.base_url,
            }),
        )
        .await
        .unwrap()
        .id
        .to_string();
    route(&app, &app.app_id, &[&conn]).await;
    let accepted = app.send(SUBSCRIBER, "via an API key").await;
    let id = accepted["id"].as_str().unwrap();
    let sent = app
        .wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(10))
        .await;
    let sid = sent["provider_message_id"].as_str().unwrap().to_owned();
    // Callbacks are still signed with the account's auth token.
    let url = format!("{}/providers/twilio/{conn}/status", app.base);
    let params = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", SID_A),
    ];
    let signature = twilio_signatures(&[(&token_a, &url, &params)])
        .await
        .remove(0);
    let (code, _, _) = post_callback(&url, &params, Some(&signature)).await;
    assert_eq!(code, 200);
    app.wait_for_status(id, &app.admin_key, "delivered", Duration::from_secs(10))
        .await;
    app.stop().await;
}

async fn twilio_connection(
    app: &TestApp,
    tenant: Option<&str>,
    account_sid: &str,
    auth_token: &str,
    fake: &FakeTwilio,
) -> String {
    let store = &app.server.as_ref().unwrap().store;
    let tenant = tenant.map(|t| portcullis_domain::TenantId::parse(t).unwrap());
    let conn = store
        .create_connection(
            tenant.as_ref(),
            "twilio",
            "twilio",
            &json!({
                "account_sid": account_sid,
                "auth_token": auth_token,
                "from_numbers": [OUR_NUMBER],
                "base_url": fake.base_url,
            }),
        )
        .await
        .unwrap();
    conn.id.to_string()
}

async fn route(app: &TestApp, app_id: &str, connections: &[&str]) {
    let db = &app.server.as_ref().unwrap().store.db;
    let route: Vec<_> = connections
        .iter()
        .map(|c| portcullis_domain::ConnectionId::parse(c).unwrap())
        .collect();
    portcullis_store::apps::set_route(
        db,
        &portcullis_domain::AppId::parse(app_id).unwrap(),
        &Default::default(),
        &route,
    )
    .await
    .unwrap();
}

/// What Twilio posts to a StatusCallback URL.
fn status_params<'a>(
    sid: &'a str,
    account: &'a str,
    to: &'a str,
    status: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SmsSid", sid),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", to),
        ("MessageSid", sid),
        ("AccountSid", account),
        ("From", OUR_NUMBER),
        ("ApiVersion", "2010-04-01"),
    ]
}

/// What Twilio posts to a number's incoming-message webhook.
fn inbound_params<'a>(
    sid: &'a str,
    account: &'a str,
    from: &'a str,
    to: &'a str,
    body: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", "SAN FRANCISCO"),
        ("FromZip", "94105"),
        ("SmsSid", sid),
        ("FromState", "CA"),
        ("SmsStatus", "received"),
        ("FromCity", "SAN FRANCISCO"),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", to),
        ("ToZip", "94105"),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", account),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
}

fn inbound_sid() -> String {
    format!(
        "SM{:032x}",
        (u128::from(std::process::id()) << 96) | u128::from(SIDS.fetch_add(1, Ordering::SeqCst))
    )
}

async fn message(app: &TestApp, id: &str) -> Value {
    let (status, json) = app.get(&format!("/v1/messages/{id}"), &app.admin_key).await;
    assert_eq!(status, 200, "{json}");
    json
}

async fn suppressions(app: &TestApp, key: &str) -> usize {
    let (status, sups) = app.get("/v1/suppressions", key).await;
    assert_eq!(status, 200, "{sups}");
    sups["data"].as_array().unwrap().len()
}

fn history_of(msg: &Value, status: &str) -> usize {
    msg["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["status"] == status)
        .count()
}

// ---------------------------------------------------------------------------------------
// The tests.

async fn send_then_a_signed_status_callback_delivers(backend: Backend) {
    let app = TestApp::spawn_with(backend, crate::webhooks::local_receivers()).await;
    // The app hears of each transition once, through its webhook.
    let rx = crate::webhooks::Receiver::start(0, 200).await;
    let (status, ep) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": rx.url, "events": ["message.delivered"]}),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    let token_a = token("a");
    let fake = FakeTwilio::start(&[(SID_A, &token_a)], &[OUR_NUMBER]).await;
    let conn = twilio_connection(&app, None, SID_A, &token_a, &fake).await;
    route(&app, &app.app_id, &[&conn]).await;

    let accepted = app.send(SUBSCRIBER, "Your code is 481516").await;
    let id = accepted["id"].as_str().unwrap();
    let sent = app
        .wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(10))
        .await;
    let got = fake.submitted_to(SUBSCRIBER);
    assert_eq!(got.len(), 1, "{got:?}");
    let s = &got[0];
    assert_eq!(s.from, OUR_NUMBER);
    assert_eq!(s.body, "Your code is 481516");
    let callback = format!("{}/providers/twilio/{conn}/status", app.base);
    assert_eq!(s.status_callback, callback);
    let sid = s.sid.clone().unwrap();
    assert_eq!(sent["provider_message_id"], sid.as_str());
    assert_eq!(sent["connection_id"], conn.as_str());

    // Twilio reports delivery to the StatusCallback it was given, signed with the token.
    let params = status_params(&sid, SID_A, SUBSCRIBER, "delivered");
    let sig = twilio_signature(&token_a, &s.status_callback, &params).await;
    let (status, _, body) = post_callback(&s.status_callback, &params, Some(&sig)).await;
    assert_eq!(status, 200, "{body}");
    let delivered = message(&app, id).await;
    assert_eq!(delivered["status"], "delivered", "{delivered}");

    // Twilio retries and replays: the same callback again is one transition, not two.
    // (The history keeps a line for everything the provider said, repeats included; the
    // status moves once and the app is told once.)
    let (status, _, body) = post_callback(&s.status_callback, &params, Some(&sig)).await;
    assert_eq!(status, 200, "{body}");
    let after = message(&app, id).await;
    assert_eq!(after["status"], "delivered");
    let last = after["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "delivered");
    assert_eq!(last["connection_id"], conn.as_str());
    assert_eq!(last["provider_message_id"], sid.as_str());
    rx.wait_for("the delivered event", |got| !got.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let told: Vec<Value> = rx.received().iter().map(|r| r.json()).collect();
    assert_eq!(told.len(), 1, "one transition, one event: {told:?}");
    assert_eq!(told[0]["type"], "message.delivered");

    // Intermediate statuses say nothing new: acknowledged, nothing recorded.
    let params = status_params(&sid, SID_A, SUBSCRIBER, "sent");
    let sig = twilio_signature(&token_a, &s.status_callback, &params).await;
    let (status, _, _) = post_callback(&s.status_callback, &params, Some(&sig)).await;
    assert_eq!(status, 200);
    assert_eq!(
        message(&app, id).await["history"].as_array().unwrap().len(),
        after["history"].as_array().unwrap().len()
    );

    // After a restart the connection is loaded at start-up, and callbacks follow the
    // listener (no PORTCULLIS_PUBLIC_URL set).
    let mut app = app;
    app.restart(|_| {}).await;
    let again = app.send(SUBSCRIBER, "Second").await;
    app.wait_for_status(
        again["id"].as_str().unwrap(),
        &app.admin_key,
        "sent",
        Duration::from_secs(10),
    )
    .await;
    let second = fake.wait_for_to(SUBSCRIBER, 2).await;
    assert_eq!(
        second[1].status_callback,
        format!("{}/providers/twilio/{conn}/status", app.base)
    );
    app.stop().await;
}

async fn forged_and_foreign_callbacks_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (token_a, token_b) = (token("a"), token("b"));
    let fake = FakeTwilio::start(&[(SID_A, &token_a), (SID_B, &token_b)], &[OUR_NUMBER]).await;
    let conn_a = twilio_connection(&app, None, SID_A, &token_a, &fake).await;
    let conn_b = twilio_connection(&app, None, SID_B, &token_b, &fake).await;
    let smpp = app
        .server
        .as_ref()
        .unwrap()
        .store
        .create_connection(None, "smpp", "carrier", &json!({"password": token_a}))
        .await
        .unwrap()
        .id
        .to_string();
    route(&app, &app.app_id, &[&conn_a]).await;

    let accepted = app.send(SUBSCRIBER, "hello").await;
    let id = accepted["id"].as_str().unwrap();
    app.wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(10))
        .await;
    let sid = fake.submitted_to(SUBSCRIBER)[0].sid.clone().unwrap();
    let url_a = format!("{}/providers/twilio/{conn_a}/status", app.base);
    let url_b = format!("{}/providers/twilio/{conn_b}/status", app.base);
    let url_smpp = format!("{}/providers/twilio/{smpp}/status", app.base);
    let url_unknown = format!(
        "{}/providers/twilio/conn_01HZZZZZZZZZZZZZZZZZZZZZZZ/status",
        app.base
    );
    let params = status_params(&sid, SID_A, SUBSCRIBER, "delivered");
    let p = params.as_slice();
    let sigs = twilio_signatures(&[
        (token_b.as_str(), url_a.as_str(), p),
        (token_a.as_str(), url_b.as_str(), p),
        (token_a.as_str(), url_smpp.as_str(), p),
        (token_a.as_str(), url_unknown.as_str(), p),
        (token_b.as_str(), url_b.as_str(), p),
    ])
    .await;
    let mut tampered = params.clone();
    tampered[2] = ("MessageStatus", "undelivered");
    let genuine = twilio_signature(&token_a, &url_a, &params).await;

    let refusals = [
        // Another connection's token.
        (url_a.as_str(), params.clone(), Some(sigs[0].as_str())),
        // Our token, but the signature of another URL (another connection's callback).
        (url_a.as_str(), params.clone(), Some(sigs[1].as_str())),
        // A genuine signature over other parameters.
        (url_a.as_str(), tampered, Some(genuine.as_str())),
        // No signature at all.
        (url_a.as_str(), params.clone(), None),
        // A connection of another type, and one that does not exist.
        (url_smpp.as_str(), params.clone(), Some(sigs[2].as_str())),
        (url_unknown.as_str(), params.clone(), Some(sigs[3].as_str())),
    ];
    let mut bodies = Vec::new();
    for (url, params, sig) in refusals {
        let (status, content_type, body) = post_callback(url, &params, sig).await;
        assert_eq!(status, 403, "{url}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "Forbidden");
        assert_eq!(json["code"], "forbidden");
        bodies.push((json["error"].clone(), json["code"].clone()));
    }
    // Never says which check failed.
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    // Connection B's genuine callback about A's message sid is B's business only: it
    // cannot move a message A sent.
    let (status, _, body) = post_callback(&url_b, &params, Some(&sigs[4])).await;
    assert_eq!(status, 200, "{body}");

    let msg = message(&app, id).await;
    assert_eq!(msg["status"], "sent", "{msg}");
    assert_eq!(
        history_of(&msg, "delivered") + history_of(&msg, "undelivered"),
        0
    );

    // The genuine one still works afterwards.
    let (status, _, _) = post_callback(&url_a, &params, Some(&genuine)).await;
    assert_eq!(status, 200);
    assert_eq!(message(&app, id).await["status"], "delivered");
    app.stop().await;
}

async fn an_invalid_number_fails_without_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token_a = token("a");
    let fake = FakeTwilio::start(&[(SID_A, &token_a)], &[OUR_NUMBER]).await;
    let conn = twilio_connection(&app, None, SID_A, &token_a, &fake).await;
    route(&app, &app.app_id, &[&conn]).await;
    let to = "+14155552672";
    fake.script(
        to,
        vec![(
            400,
            twilio_error(21211, 400, &format!("Invalid 'To' Phone Number: {to}")),
        )],
    );
    let accepted = app.send(to, "hello").await;
    let id = accepted["id"].as_str().unwrap();
    let failed = app
        .wait_for_status(id, &app.admin_key, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(failed["error_code"], "invalid_number", "{failed}");
    let detail = failed["history"].as_array().unwrap().last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("21211"), "{detail}");
    assert!(
        !detail.contains("5552672"),
        "the number stays out of the detail: {detail}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.submitted_to(to).len(),
        1,
        "a permanent error is not retried"
    );
    app.stop().await;
}

async fn throttling_is_retried(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token_a = token("a");
    let fake = FakeTwilio::start(&[(SID_A, &token_a)], &[OUR_NUMBER]).await;
    let conn = twilio_connection(&app, None, SID_A, &token_a, &fake).await;
    route(&app, &app.app_id, &[&conn]).await;
    let to = "+14155552673";
    fake.script(
        to,
        vec![(429, twilio_error(20429, 429, "Too Many Requests"))],
    );
    let accepted = app.send(to, "hello").await;
    let id = accepted["id"].as_str().unwrap();
    let sent = app
        .wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(30))
        .await;
    let got = fake.submitted_to(to);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].status, got[1].status), (429, 201));
    assert_eq!(
        sent["provider_message_id"],
        got[1].sid.clone().unwrap().as_str()
    );
    assert!(history_of(&sent, "sending") >= 2, "{sent}");
    app.stop().await;
}

async fn a_signed_inbound_stop_suppresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token_a = token("a");
    let fake = FakeTwilio::start(&[(SID_A, &token_a)], &[OUR_NUMBER]).await;
    let conn = twilio_connection(&app, None, SID_A, &token_a, &fake).await;
    route(&app, &app.app_id, &[&conn]).await;
    let url = format!("{}/providers/twilio/{conn}/inbound", app.base);

    // A forged STOP for another subscriber first: refused, nothing recorded.
    let other = "+14155552674";
    let forged_sid = inbound_sid();
    let forged = inbound_params(&forged_sid, SID_A, other, OUR_NUMBER, "STOP");
    let wrong = twilio_signature(&token("x"), &url, &forged).await;
    let (status, _, _) = post_callback(&url, &forged, Some(&wrong)).await;
    assert_eq!(status, 403);

    let sid = inbound_sid();
    let params = inbound_params(&sid, SID_A, SUBSCRIBER, OUR_NUMBER, "STOP");
    let sig = twilio_signature(&token_a, &url, &params).await;
    let (status, content_type, body) = post_callback(&url, &params, Some(&sig)).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert!(body.contains("<Response></Response>"), "{body}");

    // Answered only after it was recorded: the suppression is already there.
    let (_, sups) = app.get("/v1/suppressions", &app.admin_key).await;
    assert_eq!(sups["data"].as_array().unwrap().len(), 1, "{sups}");
    assert_eq!(sups["data"][0]["source"], "inbound_keyword");
    let (status, refused) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": SUBSCRIBER, "body": "Big sale", "purpose": "notification"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["code"], "recipient_suppressed");
    let (_, inbound) = app.get("/v1/inbound", &app.admin_key).await;
    let list = inbound["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{inbound}");
    assert_eq!(list[0]["connection_id"], conn.as_str());
    assert_eq!(list[0]["body"], "STOP");

    // Twilio redelivers: one inbound message, one confirmation.
    let (status, _, _) = post_callback(&url, &params, Some(&sig)).await;
    assert_eq!(status, 200);
    let (_, inbound) = app.get("/v1/inbound", &app.admin_key).await;
    assert_eq!(inbound["data"].as_array().unwrap().len(), 1, "{inbound}");
    // The confirmation goes out through the app's route: Twilio.
    let confirmations = fake.wait_for_to(SUBSCRIBER, 1).await;
    assert!(
        confirmations[0].body.contains("unsubscribed"),
        "{confirmations:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.submitted_to(SUBSCRIBER).len(),
        1,
        "exactly one confirmation"
    );
    assert!(fake.submitted_to(other).is_empty());
    app.stop().await;
}

async fn a_tenants_connection_speaks_for_that_tenant_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Tenant 2's app sends from the same number as the bootstrap app (tenant 1).
    let (t2, _app2, key2) = app.other_tenant().await;
    let db = &app.server.as_ref().unwrap().store.db;
    let only_ours = "+14155550142";
    portcullis_store::apps::set_senders(
        db,
        &portcullis_domain::AppId::parse(&app.app_id).unwrap(),
        &[OUR_NUMBER.to_owned(), only_ours.to_owned()],
    )
    .await
    .unwrap();
    let (token_2, token_p) = (token("t2"), token("platform"));
    let fake = FakeTwilio::start(&[(SID_B, &token_2), (SID_A, &token_p)], &[OUR_NUMBER]).await;
    let conn_t2 = twilio_connection(&app, Some(&t2), SID_B, &token_2, &fake).await;
    let conn_p = twilio_connection(&app, None, SID_A, &token_p, &fake).await;
    let url_t2 = format!("{}/providers/twilio/{conn_t2}/inbound", app.base);
    let url_p = format!("{}/providers/twilio/{conn_p}/inbound", app.base);

    let (s1, s2, s3) = (inbound_sid(), inbound_sid(), inbound_sid());
    // Tenant 2's genuine credentials, a STOP to a number only tenant 1 sends from.
    let forged = inbound_params(&s1, SID_B, SUBSCRIBER, only_ours, "STOP");
    // Tenant 2's credentials, a STOP to the number both tenants send from.
    let shared = inbound_params(&s2, SID_B, SUBSCRIBER, OUR_NUMBER, "STOP");
    // The platform connection, a STOP to tenant 1's own number.
    let platform = inbound_params(&s3, SID_A, SUBSCRIBER, only_ours, "STOP");
    let sigs = twilio_signatures(&[
        (token_2.as_str(), url_t2.as_str(), forged.as_slice()),
        (token_2.as_str(), url_t2.as_str(), shared.as_slice()),
        (token_p.as_str(), url_p.as_str(), platform.as_slice()),
    ])
    .await;

    let (status, _, body) = post_callback(&url_t2, &forged, Some(&sigs[0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        suppressions(&app, &app.admin_key).await,
        0,
        "tenant 2 opted tenant 1's subscriber out"
    );
    let (_, inbound) = app.get("/v1/inbound", &app.admin_key).await;
    assert!(inbound["data"].as_array().unwrap().is_empty(), "{inbound}");

    // On the shared number, tenant 2's connection reaches tenant 2's app only.
    let (status, _, body) = post_callback(&url_t2, &shared, Some(&sigs[1])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(suppressions(&app, &key2).await, 1);
    assert_eq!(suppressions(&app, &app.admin_key).await, 0);
    let (_, inbound2) = app.get("/v1/inbound", &key2).await;
    assert_eq!(inbound2["data"].as_array().unwrap().len(), 1, "{inbound2}");

    // A platform connection may deliver to tenant 1: the refusal above was the tenant rule.
    let (status, _, body) = post_callback(&url_p, &platform, Some(&sigs[2])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(suppressions(&app, &app.admin_key).await, 1);

    // Outbound too: tenant 2's own connection never carries tenant 1's messages.
    route(&app, &app.app_id, &[&conn_t2]).await;
    let accepted = app.send("+14155552675", "hello").await;
    let failed = app
        .wait_for_status(
            accepted["id"].as_str().unwrap(),
            &app.admin_key,
            "failed",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(failed["error_code"], "no_route", "{failed}");
    assert!(fake.submitted_to("+14155552675").is_empty());
    app.stop().await;
}

async fn callbacks_are_verified_against_the_public_url(backend: Backend) {
    // Behind a proxy that publishes the gateway under a path prefix and strips it.
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| c.public_url = Some("https://gateway.example.com/pcl/".into()),
            ..Options::default()
        },
    )
    .await;
    let token_a = token("a");
    let fake = FakeTwilio::start(&[(SID_A, &token_a)], &[OUR_NUMBER]).await;
    let conn = twilio_connection(&app, None, SID_A, &token_a, &fake).await;
    route(&app, &app.app_id, &[&conn]).await;
    let accepted = app.send(SUBSCRIBER, "hello").await;
    let id = accepted["id"].as_str().unwrap();
    app.wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(10))
        .await;
    let s = fake.submitted_to(SUBSCRIBER).remove(0);
    let public = format!("https://gateway.example.com/pcl/providers/twilio/{conn}/status");
    assert_eq!(s.status_callback, public);
    let sid = s.sid.unwrap();
    let params = status_params(&sid, SID_A, SUBSCRIBER, "undelivered");
    let local = format!("{}/providers/twilio/{conn}/status", app.base);
    let sigs = twilio_signatures(&[
        (token_a.as_str(), local.as_str(), params.as_slice()),
        (token_a.as_str(), public.as_str(), params.as_slice()),
    ])
    .await;
    // Signed over the address the request happened to reach: not what Twilio signs.
    let (status, _, _) = post_callback(&local, &params, Some(&sigs[0])).await;
    assert_eq!(status, 403);
    assert_eq!(message(&app, id).await["status"], "sent");
    // Signed over the public URL Twilio was given, delivered through the "proxy".
    let (status, _, body) = post_callback(&local, &params, Some(&sigs[1])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(message(&app, id).await["status"], "undelivered");
    app.stop().await;
}
