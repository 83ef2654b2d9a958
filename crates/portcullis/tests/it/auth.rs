//! Authentication and roles, from outside.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    malformed_authorization_is_401,
    roles_nest_and_refuse_with_403,
    error_shape_and_headers
);

async fn malformed_authorization_is_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    let unknown = format!("pcl_live_{}", "A".repeat(32));
    let same_prefix_wrong_key = format!("{}{}", &key[..13], "Z".repeat(28));
    let forms: Vec<Option<String>> = vec![
        None,
        Some(String::new()),
        Some("   ".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some(format!("bearer {key}")),
        Some(format!("Bearer  {key}")),
        Some(format!("Basic {key}")),
        Some(key.clone()),
        Some(format!("Bearer {}", &key[..40])),
        Some(format!("Bearer {key}x")),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {same_prefix_wrong_key}")),
        Some(format!("Bearer {}", key.replace("pcl_live_", "pcl_test_"))),
    ];
    // Each from its own address: more than ten failures from one would (rightly) block it.
    for (n, form) in forms.into_iter().enumerate() {
        let mut req = app.client_from(10 + n as u8).get(app.url("/v1/app"));
        if let Some(h) = &form {
            req = req.header("Authorization", h);
        }
        let (status, body) = crate::helpers::status_json(req.send().await.unwrap()).await;
        assert_eq!(status, 401, "{form:?}");
        assert_eq!(body["error"], "Invalid API key");
        assert_eq!(body["code"], "unauthorized");
    }
    // A key in the query string is ignored.
    let res = app
        .client
        .get(app.url(&format!("/v1/app?api_key={key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (status, body) = app.get("/v1/app", &key).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["senders"], json!(["+14155550199"]));
    app.stop().await;
}

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

async fn error_shape_and_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (path, expected) in [("/v1/nope", 404), ("/v1/app", 401)] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), expected);
        let h = res.headers().clone();
        for name in [
            "strict-transport-security",
            "x-frame-options",
            "x-content-type-options",
            "x-xss-protection",
            "content-security-policy",
            "referrer-policy",
            "cache-control",
            "x-request-id",
        ] {
            assert!(h.contains_key(name), "{path}: missing {name}");
        }
        let rid = h["x-request-id"].to_str().unwrap().to_owned();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["request_id"], rid);
        assert!(body["error"].is_string() && body["code"].is_string());
    }
    // Method not allowed, and the 413 boundary.
    let res = app
        .client
        .put(app.url("/v1/messages"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let padding = |n: usize| {
        let base = r#"{"to":"+14155550100","purpose":"otp","body":""}"#;
        let mut s = String::from(r#"{"to":"+14155550100","purpose":"otp","body":""#);
        s.push_str(&"a".repeat(n - base.len()));
        s.push_str(r#""}"#);
        assert_eq!(s.len(), n);
        s
    };
    for (size, expected) in [(102_400, 422), (102_401, 413)] {
        let res = app
            .client
            .post(app.url("/v1/messages"))
            .bearer_auth(&app.admin_key)
            .header("content-type", "application/json")
            .body(padding(size))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(status, expected, "{size} bytes: {body}");
        if expected == 413 {
            assert_eq!(body["error"], "Payload too large");
        } else {
            assert_eq!(body["code"], "body_too_long");
        }
    }
    app.stop().await;
}

async fn repeated_failures_block_the_address_only(backend: crate::helpers::Backend) {
    let app = crate::helpers::TestApp::spawn(backend).await;
    for _ in 0..10 {
        let (status, _) = app
            .get("/v1/app", "pcl_live_0000000000000000000000000000bad0")
            .await;
        assert_eq!(status, 401);
    }
    // Blocked now: even the right key gets 429, with the usual shape and headers.
    let res = app
        .client
        .get(app.url("/v1/app"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((890..=900).contains(&retry), "{retry}");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert!(res.headers().contains_key("x-request-id"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "Too many requests");
    assert_eq!(body["code"], "too_many_requests");
    // Another address is not affected.
    let res = app
        .client_from(2)
        .get(app.url("/v1/app"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}

crate::both_backends!(repeated_failures_block_the_address_only);

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
