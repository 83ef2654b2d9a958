//! The edge every request crosses: the security headers on every answer, the error shape,
//! and the limits on what a request may be (body size, JSON shape, header size, media type).

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    every_answer_carries_the_security_headers,
    the_413_boundary,
    json_bombs_are_refused_before_parsing,
    oversized_headers_are_431,
);

const SECURITY_HEADERS: [(&str, &str); 7] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "0"),
    ("content-security-policy", "default-src 'none'"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// Checks the header set and, for errors, the JSON shape; returns the body.
async fn check(what: &str, res: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "{what}");
    let h = res.headers().clone();
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            h.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: {name}"
        );
    }
    let rid = h["x-request-id"].to_str().unwrap().to_owned();
    assert!(rid.starts_with("req_"), "{what}: {rid}");
    let text = res.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or(json!(null));
    if status >= 400 {
        assert_eq!(body["request_id"], rid, "{what}: {text}");
        assert!(
            body["error"].is_string() && body["code"].is_string(),
            "{what}: {text}"
        );
    }
    body
}

async fn every_answer_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let c = &app.client;
    let key = &app.admin_key;
    let reader = app.key_with_role("reader").await;
    check(
        "200",
        c.get(app.url("/v1/app"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    check(
        "healthz",
        c.get(app.url("/healthz")).send().await.unwrap(),
        200,
    )
    .await;
    check(
        "404 route",
        c.get(app.url("/v1/nope")).send().await.unwrap(),
        404,
    )
    .await;
    check(
        "404 resource",
        c.get(app.url("/v1/messages/msg_nope"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    check("401", c.get(app.url("/v1/app")).send().await.unwrap(), 401).await;
    check(
        "403",
        c.get(app.url("/v1/keys"))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    check(
        "405",
        c.put(app.url("/v1/messages"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
    let body = check(
        "415",
        c.post(app.url("/v1/messages"))
            .bearer_auth(key)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    assert_eq!(body["code"], "unsupported_media_type");
    check(
        "422",
        c.post(app.url("/v1/messages"))
            .bearer_auth(key)
            .json(&json!({"to": "12345", "body": "x", "purpose": "otp"}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    // A handler that panics (a route only test builds have): the opaque 500, headers intact.
    let body = check(
        "500",
        c.post(app.url("/v1/__fault/panic"))
            .body("boom")
            .send()
            .await
            .unwrap(),
        500,
    )
    .await;
    assert_eq!(body["error"], "Internal server error");
    assert_eq!(body["code"], "internal");
    // The server survived it.
    check(
        "after the panic",
        c.get(app.url("/healthz")).send().await.unwrap(),
        200,
    )
    .await;
    app.stop().await;
}

async fn the_413_boundary(backend: Backend) {
    let app = TestApp::spawn(backend).await;
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
        let body = check(&format!("{size} bytes"), res, expected).await;
        if expected == 413 {
            assert_eq!(body["error"], "Payload too large");
        } else {
            // Read whole, and refused for what it says (too long a text), not for its size.
            assert_eq!(body["code"], "body_too_long");
        }
    }
    // Chunked, with no Content-Length to refuse up front: cut off at the limit just the same.
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.admin_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in padding(200_000).as_bytes().chunks(8192) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break; // the server may answer and close before the end
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""error":"Payload too large""#),
        "{answer}"
    );
    app.stop().await;
}

async fn json_bombs_are_refused_before_parsing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = |body: String| {
        app.client
            .post(app.url("/v1/messages"))
            .bearer_auth(&app.admin_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // 50,000 levels of nesting in 100 KB: refused at level 33, no stack blown.
    let bomb = format!(
        r#"{{"to":"+14155550100","purpose":"otp","body":"x","metadata":{}{}}}"#,
        "[".repeat(49_000),
        "]".repeat(49_000)
    );
    let body = check("nesting bomb", send(bomb).await.unwrap(), 422).await;
    assert_eq!(body["code"], "json_too_deep");
    // Unterminated, too.
    let body = check(
        "open bomb",
        send("{\"a\":".repeat(20_000)).await.unwrap(),
        422,
    )
    .await;
    assert_eq!(body["code"], "json_too_deep");
    // Tens of thousands of tiny values, well inside the body limit.
    let wide = format!(
        r#"{{"to":"+14155550100","purpose":"otp","body":"x","metadata":[{}]}}"#,
        vec!["0"; 30_000].join(",")
    );
    let body = check("field flood", send(wide).await.unwrap(), 422).await;
    assert_eq!(body["code"], "json_too_many_values");
    // Brackets inside strings are text, not structure.
    let fine = json!({"to": "+14155550100", "purpose": "otp", "body": "[[[[{{{{".repeat(50)});
    let res = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&app.admin_key)
        .json(&fine)
        .send()
        .await
        .unwrap();
    check("brackets in a string", res, 202).await;
    app.stop().await;
}

async fn oversized_headers_are_431(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .client
        .get(app.url("/v1/app"))
        .bearer_auth(&app.admin_key)
        .header("x-filler", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    let body = check("one huge header", res, 431).await;
    assert_eq!(body["code"], "headers_too_large");
    let mut req = app
        .client
        .get(app.url("/v1/app"))
        .bearer_auth(&app.admin_key);
    for i in 0..40 {
        req = req.header(format!("x-filler-{i}"), "b".repeat(500));
    }
    check("many headers", req.send().await.unwrap(), 431).await;
    // Just under the limit is served.
    let res = app
        .client
        .get(app.url("/v1/app"))
        .bearer_auth(&app.admin_key)
        .header("x-filler", "c".repeat(12_000))
        .send()
        .await
        .unwrap();
    check("under the limit", res, 200).await;
    app.stop().await;
}
