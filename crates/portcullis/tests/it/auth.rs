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

both_backends!(concurrent_requests_each_authenticate_as_their_own_key);

/// Keys presented together are looked up together (one query per batch): each request
/// must still come out as its own key's app, and a revoked key or a wrong secret under a
/// real prefix as 401, whatever else shared its batch.
async fn concurrent_requests_each_authenticate_as_their_own_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, other_app, other_key) = app.other_tenant().await;
    let (_, sibling_app, sibling_key) = app.other_app_same_tenant().await;
    let reader = app.key_with_role("reader").await;
    let revoked = app.key_with_role("reader").await;
    let revoked_id = {
        let (_, list) = app.get("/v1/keys", &app.admin_key).await;
        let prefix = &revoked[..13];
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["prefix"].as_str() == Some(prefix))
            .expect("the key to revoke is listed")["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        app.delete(&format!("/v1/keys/{revoked_id}"), &app.admin_key)
            .await
            .0,
        200
    );
    // The admin key's prefix with another secret.
    let mut wrong = app.admin_key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });

    let expect: Vec<(&str, Option<&str>)> = vec![
        (&app.admin_key, Some(app.app_id.as_str())),
        (&reader, Some(app.app_id.as_str())),
        (&other_key, Some(other_app.as_str())),
        (&sibling_key, Some(sibling_app.as_str())),
        (&revoked, None),
        (&wrong, None),
    ];
    // 96 requests at once, 8 of them refused: few enough, from their own address, to stay
    // below the brute-force threshold.
    let failing = app.client_from(7);
    let requests = (0..96).map(|i| {
        let (key, app_id) = match i % 24 {
            5 => expect[4],
            17 => expect[5],
            _ => expect[i % 4],
        };
        let client = if app_id.is_some() {
            &app.client
        } else {
            &failing
        };
        let req = client.get(app.url("/v1/app")).bearer_auth(key).send();
        async move { (req.await.expect("request"), app_id) }
    });
    let mut failures = 0;
    for (res, app_id) in futures_util::future::join_all(requests).await {
        let (status, body) = crate::helpers::status_json(res).await;
        match app_id {
            Some(id) => assert_eq!((status, body["id"].as_str()), (200, Some(id)), "{body}"),
            None => {
                assert_eq!(status, 401, "{body}");
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 8);
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

/// The batched readers (API keys, the guard) keep a PostgreSQL connection of their own
/// rather than borrowing one from the pool per query, so the pool's ping never looks at
/// it. When the server drops it (a restart, an idle timeout, an operator's
/// `pg_terminate_backend`), the read runs again on a fresh connection: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_survive_postgres_dropping_their_connections() {
    use sqlx::Connection;

    let app = TestApp::spawn(Backend::Postgres).await;
    // Once a message has been accepted, both readers hold a connection.
    app.send("+14155550190", "before").await;
    let mut admin = sqlx::PgConnection::connect(&app.database_url())
        .await
        .unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(killed.len() >= 2, "{killed:?}");
    for i in 0..5 {
        // `send` asserts the 202: the key lookup and the guard's read both succeeded.
        app.send(&format!("+1415555{:04}", 191 + i), "after").await;
    }
    admin.close().await.unwrap();
    app.stop().await;
}
