//! The realtime stream over a real WebSocket: tokens (single use, revoked with their key,
//! scoped to their app), frames, resume, origins, and two instances on one PostgreSQL.

use std::time::Duration;

use futures_util::StreamExt;
use portcullis::server::Server;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn token(app: &TestApp, key: &str) -> String {
    let (status, t) = app.post("/v1/realtime/tokens", key, &json!({})).await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["expires_in"], 60);
    let tok = t["token"].as_str().unwrap().to_owned();
    assert!(tok.starts_with("wst_"));
    tok
}

fn ws_url(base: &str, token: &str, since: Option<&str>) -> String {
    let mut u = format!(
        "{}/v1/realtime?token={token}",
        base.replace("http://", "ws://")
    );
    if let Some(s) = since {
        u.push_str(&format!("&since={s}"));
    }
    u
}

/// Connects, or returns the HTTP status the upgrade was refused with.
async fn connect(url: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// The next event frame (pings are skipped).
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let msg = ws.next().await.expect("stream open").expect("frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn frames_until(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), next_frame(ws)).await {
            Ok(f) => out.push(f),
            Err(_) => panic!("only {} of {n} frames: {out:#?}", out.len()),
        }
    }
    out
}

async fn the_stream_carries_the_apps_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let sender = app.key_with_role("sender").await;
    let reader = app.key_with_role("reader").await;
    let (status, _) = app.post("/v1/realtime/tokens", &reader, &json!({})).await;
    assert_eq!(status, 403, "readers may not stream");

    let tok = token(&app, &sender).await;
    let mut ws = connect(&ws_url(&app.base, &tok, None), None).await.unwrap();
    // Single use.
    assert_eq!(
        connect(&ws_url(&app.base, &tok, None), None).await.err(),
        Some(401)
    );
    assert_eq!(
        connect(&ws_url(&app.base, "wst_nope", None), None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        connect(
            &format!("{}/v1/realtime", app.base.replace("http://", "ws://")),
            None
        )
        .await
        .err(),
        Some(401)
    );

    // Another app's messages never reach this stream; this app's do.
    let (_, _, other_key) = app.other_app_same_tenant().await;
    let (status, _) = app
        .post(
            "/v1/messages",
            &other_key,
            &json!({"to": "+14155550401", "body": "not yours", "purpose": "transactional"}),
        )
        .await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msg = app.send("+14155550402", "yours").await;
    let frames = frames_until(&mut ws, 2).await;
    for f in &frames {
        assert_eq!(f["data"]["id"], msg["id"], "{f}");
        assert!(f["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(f["data"]["to"], "+1415555****");
    }
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["message.sent", "message.delivered"]);

    // Resume: events missed while disconnected arrive first on reconnect.
    let last = frames[1]["id"].as_str().unwrap().to_owned();
    drop(ws);
    let missed = app.send("+14155550403", "while away").await;
    app.wait_for_status(
        missed["id"].as_str().unwrap(),
        &app.admin_key,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let tok = token(&app, &sender).await;
    let mut ws = connect(&ws_url(&app.base, &tok, Some(&last)), None)
        .await
        .unwrap();
    let frames = frames_until(&mut ws, 2).await;
    for f in &frames {
        assert_eq!(f["data"]["id"], missed["id"], "{f}");
    }
    // Then the live stream continues, without repeats.
    let live = app.send("+14155550404", "live").await;
    let f = frames_until(&mut ws, 1).await.remove(0);
    assert_eq!(f["data"]["id"], live["id"], "{f}");

    // A browser origin must be on the app's list; none is by default.
    let tok = token(&app, &sender).await;
    assert_eq!(
        connect(&ws_url(&app.base, &tok, None), Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    app.stop().await;
}

async fn revoking_a_key_invalidates_its_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, created) = app
        .post("/v1/keys", &app.admin_key, &json!({"role": "sender"}))
        .await;
    assert_eq!(status, 201);
    let sender = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    let tok = token(&app, &sender).await;
    let (status, _) = app
        .delete(&format!("/v1/keys/{key_id}"), &app.admin_key)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        connect(&ws_url(&app.base, &tok, None), None).await.err(),
        Some(401)
    );
    app.stop().await;
}

both_backends!(
    the_stream_carries_the_apps_events,
    revoking_a_key_invalidates_its_tokens,
);

/// A client connected to one instance receives the events of messages another instance
/// accepted and sent (LISTEN/NOTIFY carries them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_streams_every_event_of_the_app() {
    let mut first = TestApp::spawn(Backend::Postgres).await;
    let config = first.config.clone();
    first.stop_server().await;
    let a = Server::start(
        &config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
    .await
    .unwrap();
    let b = Server::start(
        &config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
    .await
    .unwrap();
    let base_a = format!("http://{}", a.addr);
    let base_b = format!("http://{}", b.addr);
    first.base = base_b.clone();
    let tok = token(&first, &first.admin_key.clone()).await;
    let mut ws = connect(&ws_url(&base_b, &tok, None), None).await.unwrap();
    first.base = base_a;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(first.send(&format!("+1415555050{i}"), "via a").await["id"].clone());
    }
    let frames = frames_until(&mut ws, 20).await;
    for id in &ids {
        let n = frames.iter().filter(|f| &f["data"]["id"] == id).count();
        assert_eq!(n, 2, "sent and delivered for {id}");
    }
    drop(ws);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    first.stop().await;
}
