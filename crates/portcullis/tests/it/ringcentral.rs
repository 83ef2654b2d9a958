//! RingCentral end to end, against a local stand-in for platform.ringcentral.com that
//! speaks its wire format: the OAuth token endpoint (HTTP Basic client credentials, the
//! JWT bearer and refresh-token grants, single-use refresh tokens, short-lived access
//! tokens), the SMS endpoint (bearer token, `{"from","to","text"}`, RingCentral's error
//! envelope), and WebHook subscriptions whose creation performs the `Validation-Token`
//! handshake against our callback before answering, as RingCentral does. Notifications are
//! posted with the subscription's `Verification-Token`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    send_then_a_status_notification_delivers,
    concurrent_sends_share_one_refresh,
    a_user_authorized_connection_exchanges_its_code_once,
    an_inbound_stop_suppresses,
    the_subscription_is_renewed_before_it_expires,
    throttling_is_retried_after_retry_after,
);

const CLIENT_ID: &str = "rc-client-id";
const OUR_NUMBER: &str = "+14155550199";
const SUBSCRIBER: &str = "+14155552671";
const REDIRECT_URI: &str = "https://admin.example/oauth/ringcentral";

#[derive(Default)]
struct RcState {
    secret: String,
    jwt: String,
    /// Lifetime of the next access token issued, in seconds.
    next_expires_in: u64,
    /// Lifetime the stand-in grants subscriptions (it may cut what is asked).
    subscription_seconds: u64,
    access: HashMap<String, tokio::time::Instant>,
    refresh: HashSet<String>,
    jwt_grants: usize,
    /// Authorization codes not yet exchanged (each is single-use).
    codes: HashSet<String>,
    code_grants: usize,
    refreshes: usize,
    sms: Vec<(String, String, String, u16, Option<String>)>,
    script: HashMap<String, VecDeque<Scripted>>,
    /// (id, address, verification token)
    subscriptions: Vec<(String, String, String)>,
    renewals: usize,
    /// The message store's outbound records by id, and the ids in the order they changed
    /// (what the message sync reads from).
    records: HashMap<String, Value>,
    changes: Vec<String>,
    /// Sync tokens handed out: token → position in `changes`.
    sync_tokens: HashMap<String, usize>,
    full_syncs: usize,
    incremental_syncs: usize,
    handshakes_ok: usize,
}

/// A scripted answer: status, JSON body, optional `Retry-After`.
type Scripted = (u16, Value, Option<&'static str>);

#[derive(Clone)]
struct Fake {
    base_url: String,
    state: Arc<Mutex<RcState>>,
}

static IDS: AtomicU64 = AtomicU64::new(1_724_000_000_000);

fn next_id() -> String {
    IDS.fetch_add(1, Ordering::SeqCst).to_string()
}

fn rc_error(status: u16, code: &str, param: Option<&str>) -> Response {
    let mut item = json!({"errorCode": code, "message": "refused"});
    if let Some(p) = param {
        item["parameterName"] = json!(p);
    }
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"errorCode": code, "message": "refused", "errors": [item]})),
    )
        .into_response()
}

impl Fake {
    async fn start() -> Fake {
        let state = Arc::new(Mutex::new(RcState {
            secret: crate::helpers::random_alnum(24),
            jwt: format!("eyJ{}", crate::helpers::random_alnum(40)),
            next_expires_in: 3600,
            subscription_seconds: 604_800,
            ..RcState::default()
        }));
        let app = axum::Router::new()
            .route("/restapi/oauth/token", axum::routing::post(token))
            .route(
                "/restapi/v1.0/account/~/extension/~/sms",
                axum::routing::post(sms),
            )
            .route("/restapi/v1.0/subscription", axum::routing::post(subscribe))
            .route(
                "/restapi/v1.0/account/~/extension/~/message-sync",
                axum::routing::get(message_sync),
            )
            .route(
                "/restapi/v1.0/subscription/{id}/renew",
                axum::routing::post(renew),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { base_url, state }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, RcState> {
        self.state.lock().unwrap()
    }

    async fn wait(&self, what: &str, done: impl Fn(&RcState) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&self.st()) {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Posts a notification as RingCentral does, with `token` as `Verification-Token`.
    async fn notify(&self, token: Option<&str>, event: &str, body: Value) -> u16 {
        let (id, address, _) = self.st().subscriptions.last().cloned().unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = client
            .post(&address)
            .header("x-forwarded-proto", "https")
            .json(&json!({
                "uuid": format!("uuid-{}", next_id()),
                "event": event,
                "timestamp": "2026-11-23T09:30:00.000Z",
                "subscriptionId": id,
                "ownerId": "1",
                "body": body,
            }));
        if let Some(t) = token {
            req = req.header("Verification-Token", t);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// Moves an outbound record to `status` in the message store, as the carrier's report
    /// does on RingCentral's side.
    fn set_status(&self, id: &str, status: &str, error_code: Option<&str>) {
        let mut st = self.st();
        let record = st.records.get_mut(id).expect("a record the gateway sent");
        record["messageStatus"] = json!(status);
        record["lastModifiedTime"] = json!(jiff::Timestamp::now().to_string());
        if let Some(code) = error_code {
            record["deliveryErrorCode"] = json!(code);
        }
        st.changes.push(id.to_owned());
    }

    fn verification_token(&self) -> String {
        self.st().subscriptions.last().unwrap().2.clone()
    }
}

async fn token(
    State(state): State<Arc<Mutex<RcState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if basic != Some(format!("{CLIENT_ID}:{}", st.secret)) {
        return rc_error(401, "OAU-123", None);
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
            if form.get("assertion") == Some(&st.jwt) =>
        {
            st.jwt_grants += 1
        }
        Some("authorization_code")
            if form.get("redirect_uri").map(String::as_str) == Some(REDIRECT_URI)
                && form.get("code").is_some_and(|c| st.codes.remove(c)) =>
        {
            st.code_grants += 1
        }
        Some("refresh_token")
            if form
                .get("refresh_token")
                .is_some_and(|r| st.refresh.remove(r)) =>
        {
            st.refreshes += 1
        }
        _ => return rc_error(400, "OAU-140", None),
    }
    let access = format!("U0pDMT{}", crate::helpers::random_alnum(40));
    let refresh = format!("UkVGUk{}", crate::helpers::random_alnum(40));
    let expires_in = st.next_expires_in;
    st.access.insert(
        access.clone(),
        tokio::time::Instant::now() + Duration::from_secs(expires_in),
    );
    st.refresh.insert(refresh.clone());
    Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": expires_in,
        "refresh_token": refresh,
        "refresh_token_expires_in": 604_800,
        "scope": "SMS ReadMessages SubscriptionWebhook",
        "owner_id": "1",
    }))
    .into_response()
}

fn bearer_ok(st: &RcState, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| st.access.get(t))
        .is_some_and(|exp| *exp > tokio::time::Instant::now())
}

async fn sms(
    State(state): State<Arc<Mutex<RcState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut st = state.lock().unwrap();
    if !bearer_ok(&st, &headers) {
        return rc_error(401, "OAU-128", None);
    }
    let to = body["to"][0]["phoneNumber"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let from = body["from"]["phoneNumber"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let text = body["text"].as_str().unwrap_or("").to_owned();
    if let Some((status, answer, retry_after)) =
        st.script.get_mut(&to).and_then(VecDeque::pop_front)
    {
        st.sms.push((to, from, text, status, None));
        let mut r = (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response();
        if let Some(ra) = retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, ra.parse().unwrap());
        }
        return r;
    }
    let id = next_id();
    st.sms.push((
        to.clone(),
        from.clone(),
        text.clone(),
        200,
        Some(id.clone()),
    ));
    let record = json!({
        "uri": format!("https://platform.ringcentral.com/restapi/v1.0/account/1/extension/1/message-store/{id}"),
        "id": id.parse::<u64>().unwrap(),
        "to": [{"phoneNumber": to}],
        "from": {"phoneNumber": from},
        "type": "SMS",
        "direction": "Outbound",
        "messageStatus": "Queued",
        "readStatus": "Read",
        "creationTime": jiff::Timestamp::now().to_string(),
        "lastModifiedTime": jiff::Timestamp::now().to_string(),
        "subject": text,
    });
    st.records.insert(id.clone(), record.clone());
    st.changes.push(id);
    Json(record).into_response()
}

/// `GET …/message-sync`: a full sync (`FSync`, from `dateFrom`) or the records changed
/// since a token (`ISync`), each answered with a new token, as RingCentral documents.
async fn message_sync(
    State(state): State<Arc<Mutex<RcState>>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = state.lock().unwrap();
    if !bearer_ok(&st, &headers) {
        return rc_error(401, "OAU-128", None);
    }
    let (ids, sync_type): (Vec<String>, &str) = match q.get("syncType").map(String::as_str) {
        Some("FSync") => {
            let Some(from) = q
                .get("dateFrom")
                .and_then(|d| d.parse::<jiff::Timestamp>().ok())
            else {
                return rc_error(400, "CMN-101", Some("dateFrom"));
            };
            assert_eq!(q.get("messageType").map(String::as_str), Some("SMS"));
            st.full_syncs += 1;
            let ids = st
                .records
                .iter()
                .filter(|(_, r)| {
                    r["creationTime"]
                        .as_str()
                        .unwrap()
                        .parse::<jiff::Timestamp>()
                        .unwrap()
                        >= from
                })
                .map(|(id, _)| id.clone())
                .collect();
            (ids, "FSync")
        }
        Some("ISync") => {
            let Some(&at) = q.get("syncToken").and_then(|t| st.sync_tokens.get(t)) else {
                return rc_error(400, "MSG-333", Some("syncToken"));
            };
            st.incremental_syncs += 1;
            let mut ids: Vec<String> = st.changes[at..].to_vec();
            ids.dedup();
            (ids, "ISync")
        }
        _ => return rc_error(400, "CMN-101", Some("syncType")),
    };
    let token = format!("dGVzdC1zeW5j{}", crate::helpers::random_alnum(16));
    let position = st.changes.len();
    st.sync_tokens.insert(token.clone(), position);
    let records: Vec<Value> = ids
        .iter()
        .filter_map(|id| st.records.get(id).cloned())
        .collect();
    Json(json!({
        "records": records,
        "syncInfo": {"syncType": sync_type, "syncToken": token,
                     "syncTime": jiff::Timestamp::now().to_string(), "olderRecords": false},
    }))
    .into_response()
}

/// Creates a subscription after the `Validation-Token` handshake with its address.
async fn subscribe(
    State(state): State<Arc<Mutex<RcState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !bearer_ok(&state.lock().unwrap(), &headers) {
        return rc_error(401, "OAU-128", None);
    }
    let filters = body["eventFilters"].as_array().cloned().unwrap_or_default();
    assert!(
        filters
            .iter()
            .any(|f| f == "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS"),
        "{body}"
    );
    let mode = &body["deliveryMode"];
    assert_eq!(mode["transportType"], "WebHook");
    let address = mode["address"].as_str().unwrap().to_owned();
    let verification = mode["verificationToken"].as_str().unwrap().to_owned();
    let challenge = crate::helpers::random_alnum(32);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .post(&address)
        .header("Validation-Token", &challenge)
        .header("x-forwarded-proto", "https")
        .send()
        .await;
    let echoed = answer.is_ok_and(|r| {
        r.status() == 200
            && r.headers()
                .get("validation-token")
                .is_some_and(|v| v.as_bytes() == challenge.as_bytes())
    });
    if !echoed {
        return rc_error(400, "SUB-525", None);
    }
    let mut st = state.lock().unwrap();
    st.handshakes_ok += 1;
    let asked = body["expiresIn"].as_u64().unwrap_or(604_800);
    let granted = asked.min(st.subscription_seconds);
    let id = format!("sub-{}", next_id());
    st.subscriptions
        .push((id.clone(), address.clone(), verification));
    Json(json!({
        "id": id,
        "status": "Active",
        "eventFilters": filters,
        "expiresIn": granted,
        "deliveryMode": {"transportType": "WebHook", "address": address},
    }))
    .into_response()
}

async fn renew(
    State(state): State<Arc<Mutex<RcState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    if !bearer_ok(&st, &headers) {
        return rc_error(401, "OAU-128", None);
    }
    if !st.subscriptions.iter().any(|s| s.0 == id) {
        return rc_error(404, "SUB-522", None);
    }
    st.renewals += 1;
    Json(json!({"id": id, "status": "Active", "expiresIn": st.subscription_seconds}))
        .into_response()
}

async fn connection(app: &TestApp, fake: &Fake, extra: Value) -> String {
    let server = app.server.as_ref().unwrap();
    let (secret, jwt) = {
        let st = fake.st();
        (st.secret.clone(), st.jwt.clone())
    };
    let mut config = json!({
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "jwt": jwt,
        "from_numbers": [OUR_NUMBER],
        "base_url": fake.base_url,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            config.as_object_mut().unwrap().remove(k);
        } else {
            config[k] = v.clone();
        }
    }
    let conn = server
        .store
        .create_connection(None, "ringcentral", "rc", &config)
        .await
        .unwrap();
    let route = vec![conn.id.clone()];
    portcullis_store::apps::set_route(
        &server.store.db,
        &portcullis_domain::AppId::parse(&app.app_id).unwrap(),
        &Default::default(),
        &route,
    )
    .await
    .unwrap();
    conn.id.to_string()
}

const STATUS_EVENT: &str = "/restapi/v1.0/account/1/extension/1/message-store";
const INSTANT_EVENT: &str = "/restapi/v1.0/account/1/extension/1/message-store/instant?type=SMS";

async fn send_then_a_status_notification_delivers(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let fake = Fake::start().await;
    let conn = connection(&app, &fake, json!({})).await;
    let accepted = app.send(SUBSCRIBER, "Your code is 481516").await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    let sent = app
        .wait_for_status(&id, &app.admin_key, "sent", Duration::from_secs(15))
        .await;
    let pid = fake.st().sms[0].4.clone().unwrap();
    assert_eq!(sent["provider_message_id"], pid.as_str());
    assert_eq!(fake.st().sms[0].1, OUR_NUMBER);
    fake.wait("a subscription", |s| !s.subscriptions.is_empty())
        .await;
    assert_eq!(
        fake.st().subscriptions[0].1,
        format!("{}/providers/ringcentral/{conn}", app.base)
    );

    // The carrier reports delivery; RingCentral's notification says only that a record
    // changed. A forged one (wrong or no Verification-Token): 403, nothing changes.
    fake.set_status(&pid, "Delivered", None);
    let delivered = json!({"extensionId": "1", "ownerId": "1",
        "lastUpdated": jiff::Timestamp::now().to_string(),
        "changes": [{"type": "SMS", "newCount": 0, "updatedCount": 1}]});
    assert_eq!(
        fake.notify(Some("forged"), STATUS_EVENT, delivered.clone())
            .await,
        403
    );
    assert_eq!(
        fake.notify(None, STATUS_EVENT, delivered.clone()).await,
        403
    );
    let (_, still) = app.get(&format!("/v1/messages/{id}"), &app.admin_key).await;
    assert_eq!(still["status"], "sent");

    let token = fake.verification_token();
    assert_eq!(
        fake.notify(Some(&token), STATUS_EVENT, delivered.clone())
            .await,
        200
    );
    // The notification wakes the provider's message sync, which reads the record.
    let now = app
        .wait_for_status(&id, &app.admin_key, "delivered", Duration::from_secs(15))
        .await;
    assert!(fake.st().incremental_syncs >= 1);
    assert_eq!(
        now["history"].as_array().unwrap().last().unwrap()["connection_id"],
        conn.as_str(),
        "{now}"
    );
    // A replay is harmless.
    assert_eq!(
        fake.notify(Some(&token), STATUS_EVENT, delivered.clone())
            .await,
        200
    );

    // Tokens are sealed at rest: the access token is nowhere in the raw database.
    let access: Vec<String> = fake.st().access.keys().cloned().collect();
    let raw = match backend {
        Backend::Sqlite => {
            let mut bytes = std::fs::read(app.sqlite_path()).unwrap();
            let wal = app.sqlite_path().with_extension("db-wal");
            bytes.extend(std::fs::read(wal).unwrap_or_default());
            bytes
        }
        Backend::Postgres => crate::helpers::dump_pg_database(&app.database_url())
            .await
            .into_bytes(),
    };
    for t in &access {
        assert!(!crate::helpers::contains_bytes(&raw, t.as_bytes()));
    }

    // After a restart the stored tokens are used: no new grant.
    let grants = fake.st().jwt_grants;
    assert_eq!(grants, 1);
    app.restart(|_| {}).await;
    let again = app.send(SUBSCRIBER, "Second").await;
    let again_id = again["id"].as_str().unwrap();
    let sent = app
        .wait_for_status(again_id, &app.admin_key, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(fake.st().jwt_grants, 1);
    assert_eq!(fake.st().refreshes, 0);

    // The sync token survived the restart too: a failure report is read incrementally.
    let pid = sent["provider_message_id"].as_str().unwrap();
    fake.set_status(pid, "DeliveryFailed", Some("SMS-CAR-411"));
    let token = fake.verification_token();
    assert_eq!(
        fake.notify(Some(&token), STATUS_EVENT, delivered).await,
        200
    );
    let failed = app
        .wait_for_status(
            again_id,
            &app.admin_key,
            "undelivered",
            Duration::from_secs(15),
        )
        .await;
    let last = failed["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["detail"], "ringcentral error SMS-CAR-411", "{failed}");
    assert_eq!(fake.st().full_syncs, 1);
    app.stop().await;
}

async fn concurrent_sends_share_one_refresh(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fake = Fake::start().await;
    // The first token is refreshed once less than a minute of it is left: after ~2 s.
    fake.st().next_expires_in = 62;
    connection(&app, &fake, json!({})).await;
    let first = app.send(SUBSCRIBER, "warm-up").await;
    app.wait_for_status(
        first["id"].as_str().unwrap(),
        &app.admin_key,
        "sent",
        Duration::from_secs(15),
    )
    .await;
    fake.wait("a subscription", |s| !s.subscriptions.is_empty())
        .await;
    fake.st().next_expires_in = 3600;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut set = tokio::task::JoinSet::new();
    for n in 0..50 {
        let client = app.client.clone();
        let url = app.url("/v1/messages");
        let key = app.admin_key.clone();
        set.spawn(async move {
            let to = format!("+1415555{:04}", 3000 + n);
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"to": to, "body": "load", "purpose": "transactional"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        });
    }
    let ids: Vec<String> = set.join_all().await;
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(30))
            .await;
    }
    let counts = {
        let st = fake.st();
        (st.jwt_grants, st.refreshes)
    };
    assert_eq!(counts, (1, 1));
    app.stop().await;
}

/// Sends one message and waits until the provider has taken it.
async fn sent(app: &TestApp, text: &str) {
    let m = app.send(SUBSCRIBER, text).await;
    app.wait_for_status(
        m["id"].as_str().unwrap(),
        &app.admin_key,
        "sent",
        Duration::from_secs(15),
    )
    .await;
}

async fn a_user_authorized_connection_exchanges_its_code_once(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let fake = Fake::start().await;
    let code = format!(
        "U0pDMTFQMDFQQVMwMnxBQUJ{}",
        crate::helpers::random_alnum(20)
    );
    {
        let mut st = fake.st();
        st.codes.insert(code.clone());
        // Refreshed once less than a minute of it is left: after ~2 s.
        st.next_expires_in = 62;
    }
    connection(
        &app,
        &fake,
        json!({"jwt": null, "authorization_code": code, "redirect_uri": REDIRECT_URI}),
    )
    .await;
    sent(&app, "first").await;
    fake.st().next_expires_in = 3600;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sent(&app, "after expiry").await;
    let counts = |fake: &Fake| {
        let st = fake.st();
        (st.code_grants, st.refreshes, st.jwt_grants)
    };
    // The code went once; the connection then lives on the refresh token.
    assert_eq!(counts(&fake), (1, 1, 0));

    // After a restart the sealed tokens carry on; the spent code is never sent again.
    app.restart(|_| {}).await;
    sent(&app, "after restart").await;
    assert_eq!(counts(&fake), (1, 1, 0));
    app.stop().await;
}

async fn an_inbound_stop_suppresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fake = Fake::start().await;
    connection(&app, &fake, json!({})).await;
    let first = app.send(SUBSCRIBER, "hello").await;
    app.wait_for_status(
        first["id"].as_str().unwrap(),
        &app.admin_key,
        "sent",
        Duration::from_secs(15),
    )
    .await;
    fake.wait("a subscription", |s| !s.subscriptions.is_empty())
        .await;
    let stop = |id: &str| {
        json!({
            "id": id, "type": "SMS", "direction": "Inbound", "messageStatus": "Received",
            "from": {"phoneNumber": SUBSCRIBER}, "to": [{"phoneNumber": OUR_NUMBER}],
            "subject": "STOP", "readStatus": "Unread",
        })
    };
    assert_eq!(
        fake.notify(Some("wrong"), INSTANT_EVENT, stop("1")).await,
        403
    );
    let (_, sups) = app.get("/v1/suppressions", &app.admin_key).await;
    assert_eq!(sups["data"].as_array().unwrap().len(), 0, "{sups}");
    let token = fake.verification_token();
    let inbound_id = next_id();
    assert_eq!(
        fake.notify(Some(&token), INSTANT_EVENT, stop(&inbound_id))
            .await,
        200
    );
    assert_eq!(
        fake.notify(Some(&token), INSTANT_EVENT, stop(&inbound_id))
            .await,
        200
    );
    let (_, sups) = app.get("/v1/suppressions", &app.admin_key).await;
    assert_eq!(sups["data"].as_array().unwrap().len(), 1, "{sups}");
    let (_, inbound) = app.get("/v1/inbound", &app.admin_key).await;
    assert_eq!(inbound["data"].as_array().unwrap().len(), 1, "{inbound}");
    app.stop().await;
}

async fn the_subscription_is_renewed_before_it_expires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fake = Fake::start().await;
    fake.st().subscription_seconds = 4;
    connection(&app, &fake, json!({"subscription_expires_in": 4})).await;
    let first = app.send(SUBSCRIBER, "hello").await;
    app.wait_for_status(
        first["id"].as_str().unwrap(),
        &app.admin_key,
        "sent",
        Duration::from_secs(15),
    )
    .await;
    fake.wait("two renewals", |s| s.renewals >= 2).await;
    assert_eq!(fake.st().subscriptions.len(), 1, "renewed, not recreated");
    app.stop().await;
}

async fn throttling_is_retried_after_retry_after(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let fake = Fake::start().await;
    connection(&app, &fake, json!({})).await;
    let to = "+14155552673";
    fake.st().script.insert(
        to.to_owned(),
        VecDeque::from([(
            429,
            json!({"errorCode": "CMN-301", "message": "Request rate exceeded"}),
            Some("1"),
        )]),
    );
    let accepted = app.send(to, "hello").await;
    app.wait_for_status(
        accepted["id"].as_str().unwrap(),
        &app.admin_key,
        "sent",
        Duration::from_secs(30),
    )
    .await;
    let statuses: Vec<u16> = fake
        .st()
        .sms
        .iter()
        .filter(|s| s.0 == to)
        .map(|s| s.3)
        .collect();
    assert_eq!(statuses, vec![429, 200]);
    app.stop().await;
}
