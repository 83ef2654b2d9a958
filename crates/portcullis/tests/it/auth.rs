//! Roles and rate limits, from outside.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

// Malformed credentials, brute force, the security headers and body limits are in the
// hostile suite (`tests/hostile`).
both_backends!(roles_nest_and_refuse_with_403);

async fn roles_nest_and_refuse_with_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let reader = app.key_with_role("reader").await;
    let sender = app.key_with_role("sender").await;
    let msg = json!({"to": "+14155550100", "body": "hi", "purpose": "otp"});
    // reader: reads only
    assert_eq!(app.get("/v1/messages", &reader).await.0, 200);
    assert_eq!(app.get("/v1/app", &reader).await.0, 200);
    let (status, body) = app.post("/v1/messages", &reader, &msg).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(body["error"], "Forbidden");
    assert_eq!(app.get("/v1/keys", &reader).await.0, 403);
    // sender: sends and reads, no key management
    assert_eq!(app.post("/v1/messages", &sender, &msg).await.0, 202);
    assert_eq!(app.get("/v1/messages", &sender).await.0, 200);
    assert_eq!(app.get("/v1/keys", &sender).await.0, 403);
    assert_eq!(
        app.post("/v1/keys", &sender, &json!({"role": "admin"}))
            .await
            .0,
        403
    );
    // admin: everything
    assert_eq!(app.get("/v1/keys", &app.admin_key).await.0, 200);
    app.stop().await;
}

async fn rate_limited_keys_get_429_with_headers(backend: crate::helpers::Backend) {
    let app = crate::helpers::TestApp::spawn_with(
        backend,
        crate::helpers::Options {
            configure: |c| c.rate_limit_per_key = Some("1/m,burst=3".into()),
            ..Default::default()
        },
    )
    .await;
    let other = app.key_with_role("reader").await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/app", &other).await.0, 200);
    }
    let res = app
        .client
        .get(app.url("/v1/app"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let h = res.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-policy"], "3;w=60");
    assert!(h.contains_key("x-request-id"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["error"], "Too many requests");
    // The admin key has its own allowance (it spent one creating the reader).
    assert_eq!(app.get("/v1/app", &app.admin_key).await.0, 200);
    app.stop().await;
}

crate::both_backends!(rate_limited_keys_get_429_with_headers);
