//! The canary scan: secrets and personal data sent through every route — succeeding,
//! failing validation, failing authentication, panicking — never appear in what the
//! product logs.
//!
//! The product's own log stack is installed (the JSON formatter behind the redacting
//! writer, and its panic hook) at TRACE for every crate, writing into memory. Each canary is
//! random; the scan looks for it plainly and in common encodings (hex, base64, URL-encoded).

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::helpers::{
    Backend, Capture, Options, TestApp, canary_number, find_encoded, random_alnum, status_json,
};

crate::both_backends!(no_route_logs_a_secret_or_a_number);

/// Installs the product's logging (once per test binary) into two captures: everything,
/// and the security stream.
fn product_logs() -> &'static (Capture, Capture) {
    static CAPTURE: OnceLock<(Capture, Capture)> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let security = Capture::default();
        let test_hook = std::panic::take_hook();
        portcullis::logging::init_with(
            Some("json"),
            false,
            EnvFilter::new(
                "trace,hyper=debug,h2=info,rustls=debug,tokio_tungstenite=debug,tungstenite=debug",
            ),
            capture.clone(),
            Some(security.clone()),
        )
        .expect("the hostile suite installs the binary's only global subscriber");
        // The product's hook runs for every panic; the test harness's hook too, except for
        // the panics the fault route injects, so a failing assertion still prints.
        std::panic::set_hook(Box::new(move |info| {
            portcullis::logging::log_panic(info);
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("fault injected"));
            if !injected {
                test_hook(info);
            }
        }));
        (capture, security)
    })
}

/// The pieces of a credential that must never be logged: everything after the part a log
/// may name (a key's 13-character prefix).
fn secret_part(credential: &str) -> String {
    if credential.starts_with("pcl_") {
        credential[13..].to_owned()
    } else if let Some(rest) = credential.strip_prefix("wst_") {
        rest.to_owned()
    } else if let Some(rest) = credential.strip_prefix("whsec_") {
        rest.to_owned()
    } else {
        // An access token: its signature, and its payload (which names nothing secret but
        // is the credential).
        credential.split('.').skip(1).collect::<Vec<_>>().join(".")
    }
}

async fn no_route_logs_a_secret_or_a_number(backend: Backend) {
    let (logs, security_logs) = product_logs();
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| c.webhook_allowed_cidrs = Some("127.0.0.1/32".into()),
            ..Default::default()
        },
    )
    .await;
    // A receiver that takes connections and answers 200, for the webhook endpoint.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = receiver.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let key = app.admin_key.clone();
    let c = &app.client;
    let mut needles: Vec<(&'static str, String)> = Vec::new();
    needles.push(("admin key", secret_part(&key)));

    // Messages: accepted, refused, listed by recipient, read, cancelled.
    let to = canary_number();
    let body_text = format!("CanaryBody-{}", random_alnum(16));
    let meta = format!("CanaryMeta-{}", random_alnum(16));
    needles.extend([
        ("recipient", to.trim_start_matches('+').to_owned()),
        ("body", body_text.clone()),
        ("metadata", meta.clone()),
    ]);
    let send_at = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(240)).to_string();
    let (status, msg) = app
        .post(
            "/v1/messages",
            &key,
            &json!({"to": to, "body": body_text, "purpose": "otp", "metadata": {"m": meta},
                    "send_at": send_at}),
        )
        .await;
    assert_eq!(status, 202, "{msg}");
    let msg_id = msg["id"].as_str().unwrap().to_owned();
    // Country code 999 does not exist.
    let bad_number = format!("+999{}", &canary_number()[4..]);
    needles.push((
        "invalid number",
        bad_number.trim_start_matches('+').to_owned(),
    ));
    for bad in [
        json!({"to": bad_number, "body": body_text, "purpose": "otp"}),
        json!({"to": to, "body": body_text, "purpose": "nope", "metadata": {"m": meta}}),
        json!({"to": to, "body": body_text.repeat(2000), "purpose": "otp"}),
        json!({"to": to, "body": body_text, "purpose": "otp", "extra": meta}),
    ] {
        let (status, body) = app.post("/v1/messages", &key, &bad).await;
        assert!((400..500).contains(&status), "{body}");
    }
    let res = c
        .post(app.url("/v1/messages"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(format!("{{\"to\":\"{to}\",\"body\":\"{body_text}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let encoded_to = to.replace('+', "%2B");
    assert_eq!(
        app.get(&format!("/v1/messages?to={encoded_to}"), &key)
            .await
            .0,
        200
    );
    assert_eq!(
        app.get(&format!("/v1/messages?to={to}"), &key).await.0 / 100,
        4
    );
    assert_eq!(
        app.get(&format!("/v1/messages/{msg_id}"), &key).await.0,
        200
    );
    assert_eq!(app.get(&format!("/v1/messages/{to}"), &key).await.0, 404);
    assert_eq!(
        app.post(&format!("/v1/messages/{msg_id}/cancel"), &key, &json!({}))
            .await
            .0,
        200
    );

    // Inbound, with a STOP from another canary number.
    let from = canary_number();
    let inbound_text = format!("CanaryInbound-{}", random_alnum(12));
    needles.extend([
        ("inbound sender", from.trim_start_matches('+').to_owned()),
        ("inbound body", inbound_text.clone()),
    ]);
    for text in [inbound_text.as_str(), "STOP"] {
        let (status, body) = app
            .post(
                "/v1/simulator/inbound",
                &key,
                &json!({"from": from, "to": "+14155550199", "body": text}),
            )
            .await;
        assert_eq!(status / 100, 2, "{body}");
    }
    assert_eq!(app.get("/v1/inbound", &key).await.0, 200);

    // Keys: created, listed, rotated, revoked; a wrong key with a real prefix.
    let (status, created) = app
        .post(
            "/v1/keys",
            &key,
            &json!({"role": "sender", "allowed_cidrs": ["127.0.0.0/8"]}),
        )
        .await;
    assert_eq!(status, 201);
    let sender = created["key"].as_str().unwrap().to_owned();
    let sender_id = created["id"].as_str().unwrap().to_owned();
    needles.push(("created key", secret_part(&sender)));
    assert_eq!(app.get("/v1/keys", &key).await.0, 200);
    let (status, rotated) = app
        .post(
            &format!("/v1/keys/{sender_id}/rotate"),
            &key,
            &json!({"grace_seconds": 30}),
        )
        .await;
    assert_eq!(status, 201);
    let rotated_key = rotated["key"].as_str().unwrap().to_owned();
    needles.push(("rotated key", secret_part(&rotated_key)));
    let wrong = format!("{}{}", &key[..13], random_alnum(28));
    needles.push(("wrong key", secret_part(&wrong)));
    assert_eq!(
        app.client_from(9)
            .get(app.url("/v1/app"))
            .bearer_auth(&wrong)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let malformed = format!("pcl_live_{}", random_alnum(40));
    needles.push(("malformed key", malformed[9..].to_owned()));
    let res = app
        .client_from(9)
        .get(app.url("/v1/app"))
        .header("authorization", format!("Basic {malformed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Access tokens: minted, used, refused.
    let res = c
        .post(app.url("/v1/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_secret={rotated_key}"
        ))
        .send()
        .await
        .unwrap();
    let (status, token) = status_json(res).await;
    assert_eq!(status, 200, "{token}");
    let access = token["access_token"].as_str().unwrap().to_owned();
    needles.push(("access token", secret_part(&access)));
    assert_eq!(app.get("/v1/app", &access).await.0, 200);
    let res = app
        .client_from(8)
        .post(app.url("/v1/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_secret={wrong}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        app.delete(&format!("/v1/keys/{sender_id}"), &key).await.0,
        200
    );

    // Consents and suppressions.
    let consent_phone = canary_number();
    let proof = format!("CanaryProof-{}", random_alnum(16));
    needles.extend([
        (
            "consent phone",
            consent_phone.trim_start_matches('+').to_owned(),
        ),
        ("consent proof", proof.clone()),
    ]);
    let (status, consent) = app
        .post(
            "/v1/consents",
            &key,
            &json!({"phone": consent_phone, "channel": "sms", "scope": "marketing",
                    "source": "web", "proof": proof, "ip": "198.51.100.23"}),
        )
        .await;
    assert_eq!(status, 201, "{consent}");
    assert_eq!(
        app.get(
            &format!("/v1/consents?phone={}", consent_phone.replace('+', "%2B")),
            &key
        )
        .await
        .0,
        200
    );
    let consent_id = consent["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/consents/{consent_id}"), &key)
            .await
            .0
            / 100,
        2
    );
    let (status, sup) = app
        .post(
            "/v1/suppressions",
            &key,
            &json!({"phone": consent_phone, "reason": proof}),
        )
        .await;
    assert_eq!(status, 201, "{sup}");
    assert_eq!(app.get("/v1/suppressions", &key).await.0, 200);
    let sup_id = sup["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/suppressions/{sup_id}"), &key)
            .await
            .0
            / 100,
        2
    );
    assert_eq!(app.get("/v1/policy-events", &key).await.0, 200);
    assert_eq!(app.get("/v1/audit-events", &key).await.0, 200);

    // Webhooks: an endpoint whose URL carries a secret, the signing secret, the log.
    let url_secret = format!("CanaryUrl{}", random_alnum(16));
    needles.push(("webhook URL secret", url_secret.clone()));
    let (status, endpoint) = app
        .post(
            "/v1/webhooks",
            &key,
            &json!({"url": format!("http://{receiver_addr}/in?token={url_secret}")}),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    if let Some(secret) = endpoint["secret"].as_str() {
        needles.push(("webhook secret", secret_part(secret)));
    }
    let (status, refused) = app
        .post(
            "/v1/webhooks",
            &key,
            &json!({"url": format!("http://169.254.169.254/latest?x={url_secret}")}),
        )
        .await;
    assert_eq!(status / 100, 4, "{refused}");
    assert_eq!(app.get("/v1/webhooks", &key).await.0, 200);
    assert_eq!(
        app.get(&format!("/v1/webhooks/{endpoint_id}"), &key)
            .await
            .0,
        200
    );
    let res = c
        .patch(app.url(&format!("/v1/webhooks/{endpoint_id}")))
        .bearer_auth(&key)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, rotated) = app
        .post("/v1/webhooks/secret/rotate", &key, &json!({}))
        .await;
    assert_eq!(status / 100, 2, "{rotated}");
    if let Some(secret) = rotated["secret"].as_str() {
        needles.push(("rotated webhook secret", secret_part(secret)));
    }
    assert_eq!(app.get("/v1/webhooks/deliveries", &key).await.0, 200);
    assert_eq!(
        app.post("/v1/webhooks/deliveries/dlv_nope/replay", &key, &json!({}))
            .await
            .0,
        404
    );
    assert_eq!(
        app.post(
            &format!("/v1/webhooks/{endpoint_id}/recover"),
            &key,
            &json!({"since": "2020-01-01T00:00:00Z"})
        )
        .await
        .0 / 100,
        2
    );
    assert_eq!(
        app.delete(&format!("/v1/webhooks/{endpoint_id}"), &key)
            .await
            .0
            / 100,
        2
    );

    // The realtime stream: a token, used once, then reused.
    let (status, rt) = app.post("/v1/realtime/tokens", &key, &json!({})).await;
    assert_eq!(status, 201, "{rt}");
    let wst = rt["token"].as_str().unwrap().to_owned();
    needles.push(("realtime token", secret_part(&wst)));
    let ws_url = format!(
        "{}/v1/realtime?token={wst}",
        app.base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    ws.close(None).await.ok();
    assert!(
        tokio_tungstenite::connect_async(&ws_url).await.is_err(),
        "single use"
    );

    // Open routes, and a panic whose message carries canaries.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"] {
        assert_eq!(
            c.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let panic_text = format!("CanaryPanic-{} {to} {key}", random_alnum(12));
    needles.push(("panic payload", panic_text[..30].to_owned()));
    let res = c
        .post(app.url("/v1/__fault/panic"))
        .body(panic_text)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);

    // Let background work (dispatch, receipts, webhooks, last-used flush) log what it will.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.stop().await;

    // A control canary, through the same stack: the scan below can find what is there.
    let control = format!("CanaryControl-{}", random_alnum(20));
    tracing::error!(target: "portcullis_api::routes", detail = %control, "control line");
    let text = logs.text();
    assert!(
        !find_encoded(text.as_bytes(), control.as_bytes()).is_empty(),
        "a value logged through the product's stack is found by the scan"
    );
    // The capture works, and holds this test's traffic: the scan below can fail.
    assert!(
        text.contains(&sender_id),
        "the created key's id (not the key) is logged: the capture holds this test's traffic"
    );
    assert!(
        text.contains("\"panic\""),
        "the panic was logged (location only)"
    );
    // The security stream: only security events, this test's refused webhook URL among them.
    let security = security_logs.text();
    assert!(security.contains("webhook URL refused"), "{security}");
    for line in security.lines() {
        assert!(line.contains(r#""target":"security""#), "{line}");
    }
    for (what, needle) in &needles {
        let found = find_encoded(text.as_bytes(), needle.as_bytes());
        if !found.is_empty() {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !find_encoded(l.as_bytes(), needle.as_bytes()).is_empty())
                .take(3)
                .collect();
            panic!(
                "the {what} {needle:?} was logged as {found:?}:\n{}",
                lines.join("\n")
            );
        }
    }
}
