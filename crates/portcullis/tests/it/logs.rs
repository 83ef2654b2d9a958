//! Log redaction: phone numbers, message bodies, metadata and API keys never reach a log
//! line, whatever the request did — succeed, fail validation, fail authentication — and
//! whatever the background pipeline did with it.
//!
//! The server logs through `tracing`. These tests install, once per test binary, a global
//! JSON subscriber at TRACE for the Portcullis crates (DEBUG for sqlx, INFO for everything
//! else) that writes into memory. The buffer is shared by every test running in the
//! binary, so each test looks only for its own random canaries and its own resource ids.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use tracing_subscriber::util::SubscriberInitExt;

use crate::both_backends;
use crate::helpers::{
    Backend, Capture, TestApp, base64, canary_number, find_encoded, random_alnum,
};

both_backends!(
    messages_and_inbound_never_log_numbers_or_bodies,
    keys_and_failed_authentication_never_log_keys,
);

/// Installs the capturing subscriber (once) and returns it.
fn captured_logs() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let filter = tracing_subscriber::EnvFilter::new(
            "info,portcullis=trace,portcullis_api=trace,portcullis_store=trace,\
             portcullis_pipeline=trace,portcullis_providers=trace,portcullis_queue=trace,\
             portcullis_crypto=trace,portcullis_domain=trace,sqlx=debug,tower_http=debug",
        );
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(capture.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .finish()
            .try_init()
            .expect("the log tests install the test binary's only global subscriber");
        capture
    })
}

/// Asserts that no form of any needle (plain, hex, base64, UTF-16; see
/// [`crate::helpers::encoded_forms`]) is in the captured logs.
fn assert_not_logged(logs: &str, needles: &[(&str, String)]) {
    for (what, needle) in needles {
        let found = find_encoded(logs.as_bytes(), needle.as_bytes());
        if !found.is_empty() {
            let lines: Vec<&str> = logs
                .lines()
                .filter(|l| !find_encoded(l.as_bytes(), needle.as_bytes()).is_empty())
                .take(5)
                .collect();
            panic!(
                "the {what} {needle:?} was logged as {found:?}:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// Logs a control canary, plainly and base64-encoded, through the same global subscriber
/// and checks that the scan finds both in the capture: the negative checks can fail.
fn assert_capture_detects_leaks(logs: &Capture) {
    let plain = format!("CanaryControl-{}", random_alnum(20));
    let encoded = format!("CanaryEncoded-{}", random_alnum(20));
    tracing::info!(target: "portcullis::it", control = %plain, "log capture control");
    tracing::debug!(
        target: "portcullis::it",
        control = %base64(format!("xy{encoded}z").as_bytes()),
        "log capture control"
    );
    let text = logs.text();
    assert!(
        find_encoded(text.as_bytes(), plain.as_bytes()).contains(&"plain".to_owned()),
        "a value logged through tracing is not found in the capture"
    );
    assert!(
        find_encoded(text.as_bytes(), encoded.as_bytes())
            .iter()
            .any(|f| f.starts_with("base64")),
        "a base64-encoded value logged through tracing is not found in the capture"
    );
}

/// The captured lines that mention `needle`.
fn lines_with<'a>(logs: &'a str, needle: &str) -> Vec<&'a str> {
    logs.lines().filter(|l| l.contains(needle)).collect()
}

async fn messages_and_inbound_never_log_numbers_or_bodies(backend: Backend) {
    let logs = captured_logs();
    let app = TestApp::spawn(backend).await;
    let to = canary_number();
    let from = loop {
        let n = canary_number();
        if n != to {
            break n;
        }
    };
    let body = format!("CanaryBody-{}", random_alnum(20));
    let metadata = format!("CanaryMeta-{}", random_alnum(20));
    let bad_body = format!("CanaryBell-{}", random_alnum(20));
    let long_body = format!("CanaryLong-{}", random_alnum(20));
    let refused_body = format!("CanaryRefused-{}", random_alnum(20));
    let provider_failed_body = format!("CanaryFailed-{}", random_alnum(20));
    let inbound_body = format!("CanaryInbound-{}", random_alnum(20));
    let digits = &to[1..];

    // A successful send, with metadata, delivered through the pipeline.
    let (status, sent) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": to, "body": body, "purpose": "otp", "metadata": {"ref": metadata}}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap().to_owned();
    // One the provider refuses (the simulator's 0001 rule).
    let failed = app.send("+14155550001", &provider_failed_body).await;
    // Refused requests carrying the canaries.
    let refusals = [
        (
            json!({"to": format!("+{digits}99"), "body": body, "purpose": "otp"}),
            "invalid_phone_number",
        ),
        (
            json!({"to": digits, "body": body, "purpose": "otp"}),
            "invalid_phone_number",
        ),
        (
            json!({"to": format!("tel:{to}x"), "body": body, "purpose": "otp"}),
            "invalid_phone_number",
        ),
        (
            json!({"to": to, "body": format!("{bad_body}\u{7}"), "purpose": "otp"}),
            "invalid_body",
        ),
        (
            json!({"to": to, "body": format!("{long_body}{}", "x".repeat(1000)), "purpose": "otp"}),
            "body_too_long",
        ),
        (
            json!({"to": to, "body": refused_body, "purpose": "marketing"}),
            "purpose_not_allowed",
        ),
        (
            json!({"to": to, "body": body, "purpose": "otp", "metadata": {"ref": metadata, "n": 1}}),
            "invalid_metadata",
        ),
        (
            json!({"to": to, "body": body, "purpose": "otp", "extra": metadata}),
            "invalid_request",
        ),
    ];
    for (req, code) in &refusals {
        let (status, json) = app.post("/v1/messages", &app.admin_key, req).await;
        assert_eq!((status, json["code"].as_str()), (422, Some(*code)), "{req}");
    }
    // A body that is not JSON at all.
    let res = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body(format!("{{\"to\": \"{to}\", \"body\": \"{body}"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
    // An inbound message, and lookups by the number.
    let (status, injected) = app
        .post(
            "/v1/simulator/inbound",
            &app.admin_key,
            &json!({"from": from, "to": "+14155550199", "body": inbound_body}),
        )
        .await;
    assert_eq!(status, 202, "{injected}");
    let (status, bad_inbound) = app
        .post(
            "/v1/simulator/inbound",
            &app.admin_key,
            &json!({"from": from, "to": "+14155550100", "body": inbound_body}),
        )
        .await;
    assert_eq!(status, 422, "{bad_inbound}");
    let (status, _) = app
        .get(
            &format!("/v1/messages?to={}", to.replace('+', "%2B")),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .get(&format!("/v1/messages?to={digits}x"), &app.admin_key)
        .await;
    assert_eq!(status, 422);
    app.wait_for_status(&id, &app.admin_key, "delivered", Duration::from_secs(10))
        .await;
    app.wait_for_status(
        failed["id"].as_str().unwrap(),
        &app.admin_key,
        "failed",
        Duration::from_secs(10),
    )
    .await;
    // A key created in this test: its log line is the positive control below.
    let (status, created) = app
        .post("/v1/keys", &app.admin_key, &json!({"role": "reader"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key_id = created["id"].as_str().unwrap().to_owned();
    let reader_key = created["key"].as_str().unwrap().to_owned();
    let admin_key = app.admin_key.clone();
    app.stop().await;

    assert_capture_detects_leaks(logs);
    let text = logs.text();
    // Positive control: this test's own activity was captured.
    assert!(
        lines_with(&text, &key_id)
            .iter()
            .any(|l| l.contains("api key created")),
        "the log capture saw no \"api key created\" line for {key_id}"
    );
    assert_not_logged(
        &text,
        &[
            ("recipient", to.clone()),
            ("recipient digits", digits.to_owned()),
            ("inbound sender", from.clone()),
            ("inbound sender digits", from[1..].to_owned()),
            ("body", body),
            ("metadata value", metadata),
            ("refused body", bad_body),
            ("too long body", long_body),
            ("purpose-refused body", refused_body),
            ("provider-refused body", provider_failed_body),
            ("inbound body", inbound_body),
            ("reader key", reader_key.clone()),
            ("reader key secret", reader_key[13..].to_owned()),
            ("admin key", admin_key[13..].to_owned()),
        ],
    );
}

async fn keys_and_failed_authentication_never_log_keys(backend: Backend) {
    let logs = captured_logs();
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_key.clone();

    let create = |body: serde_json::Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let (status, created) = app.post("/v1/keys", &admin, &body).await;
            assert_eq!(status, 201, "{created}");
            (
                created["id"].as_str().unwrap().to_owned(),
                created["key"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (sender_id, sender_key) = create(json!({"role": "sender"})).await;
    let (test_id, test_key) = create(json!({"role": "sender", "test": true})).await;
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let (expiring_id, expiring_key) =
        create(json!({"role": "reader", "expires_at": expires.to_string()})).await;
    // Rotation with and without grace, then revocation.
    let rotate = |id: String, body: serde_json::Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let (status, rotated) = app
                .post(&format!("/v1/keys/{id}/rotate"), &admin, &body)
                .await;
            assert_eq!(status, 201, "{rotated}");
            (
                rotated["id"].as_str().unwrap().to_owned(),
                rotated["key"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (graced_id, graced_key) = rotate(sender_id.clone(), json!({"grace_seconds": 60})).await;
    let (rotated_id, rotated_key) = rotate(graced_id.clone(), json!({})).await;
    let (status, _) = app.delete(&format!("/v1/keys/{rotated_id}"), &admin).await;
    assert_eq!(status, 200);
    // Every key is used once, successfully where it should work.
    assert_eq!(app.get("/v1/messages", &test_key).await.0, 200);
    assert_eq!(app.get("/v1/messages", &expiring_key).await.0, 200);
    assert_eq!(
        app.get("/v1/messages", &sender_key).await.0,
        401,
        "rotated out"
    );
    assert_eq!(
        app.get("/v1/messages", &graced_key).await.0,
        401,
        "rotated out"
    );
    assert_eq!(
        app.get("/v1/messages", &rotated_key).await.0,
        401,
        "revoked"
    );

    // Failed authentication with tokens nobody issued.
    let unknown = format!("pcl_live_{}", random_alnum(32));
    let unknown_test = format!("pcl_test_{}", random_alnum(32));
    let garbage = format!("CanaryToken-{}", random_alnum(24));
    let same_prefix = format!("{}{}", &admin[..13], random_alnum(28));
    // Each token from its own address, so the brute-force block does not answer first.
    for (n, token) in [&unknown, &unknown_test, &garbage, &same_prefix]
        .into_iter()
        .enumerate()
    {
        let client = app.client_from(20 + n as u8);
        let res = client
            .get(app.url("/v1/app"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{token}");
        let res = client
            .get(app.url("/v1/messages"))
            .header("Authorization", format!("Basic {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        // In the query string, where some servers look for keys.
        let res = client
            .get(app.url(&format!("/v1/app?api_key={token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    // A key refused for its role is still a key that must not be logged.
    let (status, _) = app
        .post("/v1/keys", &expiring_key, &json!({"role": "admin"}))
        .await;
    assert_eq!(status, 403);
    // A key in a request body.
    let (status, _) = app
        .post(
            "/v1/keys",
            &admin,
            &json!({"role": "reader", "key": unknown}),
        )
        .await;
    assert_eq!(status, 422);
    app.stop().await;

    assert_capture_detects_leaks(logs);
    let text = logs.text();
    // Positive control: this test's key operations were logged, by id and prefix.
    for (id, event) in [
        (&sender_id, "api key created"),
        (&test_id, "api key created"),
        (&expiring_id, "api key created"),
        (&graced_id, "api key rotated"),
        (&rotated_id, "api key rotated"),
        (&rotated_id, "api key revoked"),
    ] {
        assert!(
            lines_with(&text, id).iter().any(|l| l.contains(event)),
            "the log capture saw no {event:?} line for {id}"
        );
    }
    assert!(
        !lines_with(&text, &sender_key[..13]).is_empty(),
        "the key's identification prefix is logged (and is not the key)"
    );
    // No key, nor the secret part after its 13-character prefix, in any form.
    let mut needles = Vec::new();
    for (what, key) in [
        ("admin key", &admin),
        ("sender key", &sender_key),
        ("test key", &test_key),
        ("expiring key", &expiring_key),
        ("graced key", &graced_key),
        ("rotated key", &rotated_key),
        ("unknown key", &unknown),
        ("unknown test key", &unknown_test),
        ("garbage token", &garbage),
        ("same-prefix key", &same_prefix),
    ] {
        needles.push((what, key.clone()));
        needles.push((what, key[13..].to_owned()));
    }
    assert_not_logged(&text, &needles);
}
