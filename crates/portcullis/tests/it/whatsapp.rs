//! WhatsApp Cloud API end to end, against a local stand-in for graph.facebook.com that
//! checks the Bearer token and the JSON Meta documents and answers Meta's response and
//! error bodies; webhooks are signed as Meta signs them (`X-Hub-Signature-256`: `sha256=`
//! followed by the hex HMAC-SHA256 of the raw body under the app secret), computed here
//! independently of the gateway's code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    the_window_decides_between_text_and_template,
    forged_webhooks_and_bad_handshakes_are_refused,
    graph_window_closed_fails_the_message,
    an_inbound_stop_over_whatsapp_suppresses,
);

const PHONE_NUMBER_ID: &str = "106540352242922";
/// The bootstrap app's sender, which is also the business number's display number.
const DISPLAY_NUMBER: &str = "14155550199";
const SUBSCRIBER: &str = "+14155552671";

static IDS: AtomicU64 = AtomicU64::new(1);

fn wamid() -> String {
    format!(
        "wamid.HBgLMTQxNTU1NTI2NzEVAgARGBI{:016X}{:08X}",
        IDS.fetch_add(1, Ordering::SeqCst),
        std::process::id()
    )
}

#[derive(Default)]
struct GraphState {
    token: String,
    /// Graph error codes to answer, by recipient (digits).
    script: HashMap<String, i64>,
    got: Vec<Value>,
}

struct FakeGraph {
    base_url: String,
    state: Arc<Mutex<GraphState>>,
}

impl FakeGraph {
    async fn start(token: &str) -> FakeGraph {
        let state = Arc::new(Mutex::new(GraphState {
            token: token.to_owned(),
            ..GraphState::default()
        }));
        let app = axum::Router::new()
            .route(
                "/v21.0/{phone_number_id}/messages",
                axum::routing::post(send),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGraph { base_url, state }
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.state.lock().unwrap().got.clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never got {n}: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn graph_json(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn graph_error(code: i64, message: &str) -> Value {
    json!({"error": {"message": message, "type": "OAuthException", "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "error_subcode": 2494010, "fbtrace_id": "A1b2C3d4E5f6"}})
}

/// `POST /v21.0/{phone_number_id}/messages`, checked as the Cloud API checks it.
async fn send(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path(phone_number_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(st.token.as_str()) {
        return graph_json(
            401,
            graph_error(190, "Error validating access token: Session has expired"),
        );
    }
    if phone_number_id != PHONE_NUMBER_ID {
        return graph_json(400, graph_error(100, "Unsupported post request."));
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return graph_json(400, graph_error(100, "Invalid parameter"));
    };
    let to = msg["to"].as_str().unwrap_or("").to_owned();
    let shape_ok = msg["messaging_product"] == "whatsapp"
        && msg["recipient_type"] == "individual"
        && !to.is_empty()
        && to.bytes().all(|b| b.is_ascii_digit())
        && match msg["type"].as_str() {
            Some("text") => msg["text"]["body"].is_string(),
            Some("template") => {
                msg["template"]["name"].is_string()
                    && msg["template"]["language"]["code"].is_string()
            }
            _ => false,
        };
    if !shape_ok {
        return graph_json(400, graph_error(100, "Invalid parameter"));
    }
    st.got.push(msg);
    if let Some(code) = st.script.get(&to) {
        return graph_json(400, graph_error(*code, "Re-engagement message"));
    }
    graph_json(
        200,
        json!({"messaging_product": "whatsapp",
               "contacts": [{"input": to, "wa_id": to}],
               "messages": [{"id": wamid()}]}),
    )
}

/// Meta's signature, computed by Python's `hmac` (an implementation independent of ours).
fn sign(secret: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; k=sys.argv[1].encode(); \
             print('sha256='+hmac.new(k, sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            secret,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Wa {
    conn: String,
    secret: String,
    fake: FakeGraph,
}

async fn setup(app: &TestApp) -> Wa {
    let token = format!("EAAG{}", crate::helpers::random_alnum(24));
    let secret = crate::helpers::random_alnum(32);
    let fake = FakeGraph::start(&token).await;
    let store = &app.server.as_ref().unwrap().store;
    let conn = store
        .create_connection(
            None,
            "whatsapp",
            "wa",
            &json!({"phone_number_id": PHONE_NUMBER_ID, "access_token": token,
                    "app_secret": secret, "verify_token": "verify-me",
                    "base_url": fake.base_url}),
        )
        .await
        .unwrap()
        .id
        .to_string();
    portcullis_store::apps::set_route(
        &store.db,
        &portcullis_domain::AppId::parse(&app.app_id).unwrap(),
        &Default::default(),
        &[portcullis_domain::ConnectionId::parse(&conn).unwrap()],
    )
    .await
    .unwrap();
    Wa { conn, secret, fake }
}

fn envelope(value: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
        "changes": [{"field": "messages", "value": value}]}]})
}

fn metadata() -> Value {
    json!({"display_phone_number": DISPLAY_NUMBER, "phone_number_id": PHONE_NUMBER_ID})
}

fn inbound(from: &str, text: &str) -> Value {
    let now = jiff::Timestamp::now().as_second().to_string();
    envelope(
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": "Ada"}, "wa_id": from.trim_start_matches('+')}],
        "messages": [{"from": from.trim_start_matches('+'), "id": wamid(), "timestamp": now,
                      "type": "text", "text": {"body": text}}]}),
    )
}

fn status(id: &str, status: &str) -> Value {
    let now = jiff::Timestamp::now().as_second().to_string();
    envelope(
        json!({"messaging_product": "whatsapp", "metadata": metadata(),
        "statuses": [{"id": id, "status": status, "timestamp": now,
                      "recipient_id": SUBSCRIBER.trim_start_matches('+')}]}),
    )
}

async fn post_event(app: &TestApp, wa: &Wa, body: &Value, signature: Option<String>) -> u16 {
    let raw = body.to_string();
    let sig = signature.unwrap_or_else(|| sign(&wa.secret, raw.as_bytes()));
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/providers/whatsapp/{}", app.base, wa.conn))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Hub-Signature-256", sig)
        .body(raw)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn send_wa(app: &TestApp, body: Value) -> (u16, Value) {
    app.post("/v1/messages", &app.admin_key, &body).await
}

async fn the_window_decides_between_text_and_template(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wa = setup(&app).await;

    let text = json!({"channel": "whatsapp", "to": SUBSCRIBER, "body": "Your order shipped",
                      "purpose": "transactional"});
    let (code, refused) = send_wa(&app, text.clone()).await;
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["code"], "whatsapp_window_closed");

    let (code, both) = send_wa(
        &app,
        json!({"channel": "sms", "to": SUBSCRIBER, "purpose": "transactional",
               "template": {"name": "order_update", "language": "en_US"}}),
    )
    .await;
    assert_eq!(code, 422, "{both}");

    let (code, accepted) = send_wa(
        &app,
        json!({"channel": "whatsapp", "to": SUBSCRIBER, "purpose": "transactional",
               "template": {"name": "order_update", "language": "en_US", "parameters": ["Ada"]}}),
    )
    .await;
    assert_eq!(code, 202, "{accepted}");
    let template_id = accepted["id"].as_str().unwrap().to_owned();
    let sent = app
        .wait_for_status(
            &template_id,
            &app.admin_key,
            "sent",
            Duration::from_secs(20),
        )
        .await;
    let template_wamid = sent["provider_message_id"].as_str().unwrap().to_owned();
    assert_eq!(sent["template"]["name"], "order_update");
    assert_eq!(sent["template"]["language"], "en_US");
    let got = wa.fake.wait_for(1).await;
    assert_eq!(got[0]["type"], "template");
    assert_eq!(got[0]["to"], SUBSCRIBER.trim_start_matches('+'));
    assert_eq!(
        got[0]["template"]["components"][0]["parameters"][0],
        json!({"type": "text", "text": "Ada"})
    );

    // The subscriber writes: the window opens.
    assert_eq!(
        post_event(&app, &wa, &inbound(SUBSCRIBER, "hello"), None).await,
        200
    );
    let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["channel"], "whatsapp");

    let (code, accepted) = send_wa(&app, text).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let sent = app
        .wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(20))
        .await;
    let got = wa.fake.wait_for(2).await;
    assert_eq!(got[1]["type"], "text");
    assert_eq!(got[1]["text"]["body"], "Your order shipped");
    let wamid = sent["provider_message_id"].as_str().unwrap().to_owned();
    assert!(wamid.starts_with("wamid."), "{sent}");

    assert_eq!(
        post_event(&app, &wa, &status(&wamid, "sent"), None).await,
        200
    );
    assert_eq!(
        post_event(&app, &wa, &status(&wamid, "delivered"), None).await,
        200
    );
    // Answered after recording: already delivered.
    let (_, msg) = app.get(&format!("/v1/messages/{id}"), &app.admin_key).await;
    assert_eq!(msg["status"], "delivered", "{msg}");
    assert_eq!(
        post_event(&app, &wa, &status(&wamid, "read"), None).await,
        200
    );
    let (_, msg) = app.get(&format!("/v1/messages/{id}"), &app.admin_key).await;
    assert_eq!(msg["status"], "delivered", "{msg}");
    let history = msg["history"].as_array().unwrap();
    let read = history.last().unwrap();
    assert_eq!(read["status"], "read", "{msg}");
    assert_eq!(read["connection_id"], wa.conn.as_str(), "{msg}");
    assert_eq!(read["provider_message_id"], wamid.as_str(), "{msg}");
    assert!(read["at"].as_str().is_some(), "{msg}");

    // A read that arrives with no delivery report before it implies the delivery.
    assert_eq!(
        post_event(&app, &wa, &status(&template_wamid, "read"), None).await,
        200
    );
    let (_, msg) = app
        .get(&format!("/v1/messages/{template_id}"), &app.admin_key)
        .await;
    assert_eq!(msg["status"], "delivered", "{msg}");
    let statuses: Vec<&str> = msg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"read"), "{msg}");
    app.stop().await;
}

async fn forged_webhooks_and_bad_handshakes_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wa = setup(&app).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/providers/whatsapp/{}", app.base, wa.conn);

    let good = client
        .get(format!(
            "{url}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-me"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status().as_u16(), 200);
    assert!(
        good.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(good.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-mf",
        "hub.mode=subscribe&hub.challenge=1158201444",
        "hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token=verify-me",
    ] {
        let res = client.get(format!("{url}?{query}")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 403, "{query}");
    }
    let res = client
        .get(format!(
            "{}/providers/whatsapp/conn_nope?hub.mode=subscribe&hub.challenge=1&hub.verify_token=verify-me",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);

    let stop = inbound(SUBSCRIBER, "STOP");
    let forged = sign("not-the-secret", stop.to_string().as_bytes());
    assert_eq!(post_event(&app, &wa, &stop, Some(forged)).await, 403);
    assert_eq!(post_event(&app, &wa, &stop, Some(String::new())).await, 403);
    let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
    assert!(list["data"].as_array().unwrap().is_empty(), "{list}");
    let (_, sups) = app.get("/v1/suppressions", &app.admin_key).await;
    assert!(sups["data"].as_array().unwrap().is_empty(), "{sups}");
    app.stop().await;
}

async fn graph_window_closed_fails_the_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wa = setup(&app).await;
    wa.fake
        .state
        .lock()
        .unwrap()
        .script
        .insert(SUBSCRIBER.trim_start_matches('+').to_owned(), 131047);
    let (code, accepted) = send_wa(
        &app,
        json!({"channel": "whatsapp", "to": SUBSCRIBER, "purpose": "transactional",
               "template": {"name": "order_update", "language": "en"}}),
    )
    .await;
    assert_eq!(code, 202, "{accepted}");
    let failed = app
        .wait_for_status(
            accepted["id"].as_str().unwrap(),
            &app.admin_key,
            "failed",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(failed["error_code"], "whatsapp_window_closed", "{failed}");
    assert_eq!(wa.fake.wait_for(1).await.len(), 1, "not retried");
    app.stop().await;
}

async fn an_inbound_stop_over_whatsapp_suppresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wa = setup(&app).await;
    let stop = inbound(SUBSCRIBER, "STOP");
    assert_eq!(post_event(&app, &wa, &stop, None).await, 200);
    // Meta redelivers: deduplicated.
    assert_eq!(post_event(&app, &wa, &stop, None).await, 200);
    let (_, sups) = app.get("/v1/suppressions", &app.admin_key).await;
    assert_eq!(sups["data"].as_array().unwrap().len(), 1, "{sups}");
    let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    let (code, refused) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": SUBSCRIBER, "body": "Big sale", "purpose": "notification"}),
        )
        .await;
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["code"], "recipient_suppressed");
    app.stop().await;
}
