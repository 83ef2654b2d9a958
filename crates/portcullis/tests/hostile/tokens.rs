//! Access tokens from `POST /v1/oauth/token`, per-key IP allowlists, and the alert an app
//! gets when its keys are tried from many addresses.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, status_json};

both_backends!(
    client_credentials_grant_and_its_refusals,
    tokens_die_with_their_key,
    forged_tokens_are_refused,
    ip_allowlists_bind_keys_and_their_tokens,
    failures_from_many_addresses_alert_the_app_without_locking_it_out,
);

async fn token_request(
    app: &TestApp,
    from: u8,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut req = app
        .client_from(from)
        .post(app.url("/v1/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded_pairs(form));
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    status_json(req.send().await.unwrap()).await
}

fn serde_urlencoded_pairs(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&")
}

async fn client_credentials_grant_and_its_refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let sender = app.key_with_role("sender").await;
    let sender_id = id_of(&app, &sender).await;
    // Secret in the form.
    let (status, body) = token_request(
        &app,
        1,
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &sender),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "sender");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(
        !token.contains(&sender[13..]),
        "the key is not in the token"
    );
    // The token works as a bearer credential, with the key's role and app.
    let (status, me) = app.get("/v1/app", &token).await;
    assert_eq!(
        (status, me["id"].as_str()),
        (200, Some(app.app_id.as_str()))
    );
    let msg = json!({"to": "+14155550100", "body": "via token", "purpose": "otp"});
    assert_eq!(app.post("/v1/messages", &token, &msg).await.0, 202);
    assert_eq!(app.get("/v1/keys", &token).await.0, 403, "still a sender");
    // HTTP Basic with the key id as client_id, asking for a narrower role.
    let (status, body) = token_request(
        &app,
        1,
        &[("grant_type", "client_credentials"), ("scope", "reader")],
        Some((&sender_id, &sender)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reader_token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/messages", &reader_token).await.0, 200);
    assert_eq!(app.post("/v1/messages", &reader_token, &msg).await.0, 403);
    // Refusals, each from its own address so the brute-force table stays out of it.
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        Option<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            vec![("grant_type", "password"), ("client_secret", &sender)],
            None,
            400,
            "unsupported_grant_type",
        ),
        (
            vec![("client_secret", &sender)],
            None,
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &sender),
                ("scope", "admin"),
            ],
            None,
            400,
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &sender),
                ("scope", "root"),
            ],
            None,
            400,
            "invalid_scope",
        ),
        (
            vec![("grant_type", "client_credentials")],
            None,
            401,
            "unauthorized",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", "pcl_live_nope"),
            ],
            None,
            401,
            "unauthorized",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &sender),
                ("client_id", "key_someoneelse"),
            ],
            None,
            401,
            "unauthorized",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &sender),
            ],
            Some((&sender_id, &sender)),
            401,
            "unauthorized",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", &token),
            ],
            None,
            401,
            "unauthorized",
        ),
    ];
    for (i, (form, basic, status, code)) in cases.into_iter().enumerate() {
        let (got, body) = token_request(&app, 100 + i as u8, &form, basic).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "case {i}: {body}"
        );
    }
    // JSON is not a token request.
    let res = app
        .client
        .post(app.url("/v1/oauth/token"))
        .json(&json!({"grant_type": "client_credentials", "client_secret": sender}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    app.stop().await;
}

/// A key's id, from the admin key's listing.
async fn id_of(app: &TestApp, key: &str) -> String {
    let (status, list) = app.get("/v1/keys", &app.admin_key).await;
    assert_eq!(status, 200, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == key[..13])
        .and_then(|k| k["id"].as_str())
        .expect("key listed")
        .to_owned()
}

async fn mint(app: &TestApp, key: &str) -> String {
    mint_from(app, 1, key).await
}

/// A token for `key`, asked for from 127.0.0.`from`.
async fn mint_from(app: &TestApp, from: u8, key: &str) -> String {
    let (status, body) = token_request(
        app,
        from,
        &[("grant_type", "client_credentials"), ("client_secret", key)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn tokens_die_with_their_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key_with_role("sender").await;
    let id = id_of(&app, &key).await;
    let token = mint(&app, &key).await;
    assert_eq!(app.get("/v1/app", &token).await.0, 200);
    assert_eq!(
        app.delete(&format!("/v1/keys/{id}"), &app.admin_key)
            .await
            .0,
        200
    );
    let (status, body) = app.get("/v1/app", &token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("Invalid API key"))
    );
    // Rotation without grace ends the old key's tokens too; with grace they live as long
    // as the grace.
    let key = app.key_with_role("sender").await;
    let id = id_of(&app, &key).await;
    let token = mint(&app, &key).await;
    let (status, body) = app
        .post(
            &format!("/v1/keys/{id}/rotate"),
            &app.admin_key,
            &json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let next = body["key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/app", &token).await.0, 200, "inside the grace");
    let next_id = id_of(&app, &next).await;
    let next_token = mint(&app, &next).await;
    assert_eq!(
        app.post(
            &format!("/v1/keys/{next_id}/rotate"),
            &app.admin_key,
            &json!({})
        )
        .await
        .0,
        201
    );
    assert_eq!(app.get("/v1/app", &next_token).await.0, 401);
    assert_eq!(
        app.get("/v1/app", &token).await.0,
        401,
        "the earlier grace ended"
    );
    app.stop().await;
}

async fn forged_tokens_are_refused(backend: Backend) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let app = TestApp::spawn(backend).await;
    let reader = app.key_with_role("reader").await;
    let token = mint(&app, &reader).await;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["role"], "reader");
    claims["role"] = json!("admin");
    let elevated = B64.encode(claims.to_string());
    let (other_tenant, other_app, _) = app.other_tenant().await;
    let mut moved: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    moved["app"] = json!(other_app);
    moved["tnt"] = json!(other_tenant);
    let moved = B64.encode(moved.to_string());
    let mut expired: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    expired["exp"] = json!(1);
    let expired = B64.encode(expired.to_string());
    let none_header = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let hs512_header = B64.encode(r#"{"alg":"HS512","typ":"JWT"}"#);
    let forgeries = [
        format!("{}.{elevated}.{}", parts[0], parts[2]),
        format!("{}.{moved}.{}", parts[0], parts[2]),
        format!("{}.{expired}.{}", parts[0], parts[2]),
        format!("{none_header}.{}.", parts[1]),
        format!("{none_header}.{elevated}."),
        format!("{hs512_header}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.", parts[0], parts[1]),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}x", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], B64.encode([0u8; 32])),
        token.to_uppercase(),
    ];
    for (i, forged) in forgeries.iter().enumerate() {
        let res = app
            .client_from(120 + i as u8)
            .get(app.url("/v1/keys"))
            .bearer_auth(forged)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "forgery {i}");
    }
    // The genuine token still works, for what a reader may do.
    assert_eq!(app.get("/v1/app", &token).await.0, 200);
    assert_eq!(app.get("/v1/keys", &token).await.0, 403);
    app.stop().await;
}

async fn ip_allowlists_bind_keys_and_their_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let create = |cidrs: Value| {
        let app = &app;
        async move {
            app.post(
                "/v1/keys",
                &app.admin_key,
                &json!({"role": "sender", "allowed_cidrs": cidrs}),
            )
            .await
        }
    };
    for bad in [
        json!(["10.0.0.0/33"]),
        json!(["example.com"]),
        json!(["10.0.0.1/8", 7]),
    ] {
        let (status, body) = create(bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    assert_eq!(create(json!(many)).await.0, 422);

    let (status, body) = create(json!(["127.0.0.2", "10.0.0.0/8", "2001:db8::/32"])).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["allowed_cidrs"],
        json!(["127.0.0.2/32", "10.0.0.0/8", "2001:db8::/32"])
    );
    let key = body["key"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    let from = |n: u8, credential: String| {
        let app = &app;
        async move {
            app.client_from(n)
                .get(app.url("/v1/app"))
                .bearer_auth(credential)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(from(2, key.clone()).await, 200);
    assert_eq!(from(3, key.clone()).await, 401, "outside the allowlist");
    // A token minted inside the allowlist does not carry the key outside it.
    let token = mint_from(&app, 2, &key).await;
    assert_eq!(from(2, token.clone()).await, 200);
    assert_eq!(from(4, token).await, 401);
    let (status, body) = token_request(
        &app,
        5,
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", &key),
        ],
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // Listed, with where it was last used from (flushed in the background), and kept by
    // rotation.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, list) = app.get("/v1/keys", &app.admin_key).await;
        let listed = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(listed["allowed_cidrs"].as_array().unwrap().len(), 3);
        if listed["last_used_ip"] == "127.0.0.2" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = app
        .post(&format!("/v1/keys/{id}/rotate"), &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["allowed_cidrs"].as_array().unwrap().len(), 3);
    let next = body["key"].as_str().unwrap().to_owned();
    assert_eq!(from(2, next.clone()).await, 200);
    assert_eq!(from(6, next).await, 401);
    app.stop().await;
}

async fn failures_from_many_addresses_alert_the_app_without_locking_it_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Someone holds the identifying prefix of the admin key and guesses the rest, from
    // several addresses, a few tries each (under the per-address block).
    let prefix = &app.admin_key[..13];
    for n in 0..6u8 {
        for t in 0..3 {
            let guess = format!("{prefix}{}{:027}", n, t);
            let res = app
                .client_from(200 + n)
                .get(app.url("/v1/app"))
                .bearer_auth(guess)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 401);
        }
    }
    // The owner is not blocked.
    assert_eq!(app.get("/v1/app", &app.admin_key).await.0, 200);
    // The app is told: an audit entry now, and an event on its stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let (status, body) = app
            .get(
                "/v1/audit-events?action=security.auth_failures",
                &app.admin_key,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if let Some(e) = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "security.auth_failures")
        {
            break e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert in the audit trail"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["actor_type"], "system", "{entry}");
    assert!(
        entry["detail"]["addresses"].as_u64().unwrap() >= 5,
        "{entry}"
    );
    // Once per cooldown: more failures do not repeat it.
    for n in 0..3u8 {
        let _ = app
            .client_from(210 + n)
            .get(app.url("/v1/app"))
            .bearer_auth(format!("{prefix}{:028}", n))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = app.get("/v1/audit-events", &app.admin_key).await;
    let alerts = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "security.auth_failures")
        .count();
    assert_eq!(alerts, 1);
    app.stop().await;
}
