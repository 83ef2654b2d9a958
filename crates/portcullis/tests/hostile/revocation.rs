//! Revocation across instances: two gateways sharing one PostgreSQL database and one Redis.
//! A key revoked through one stops on the other on the very next request, and so do the
//! access tokens it minted; an address blocked on one is blocked on both.

use portcullis::server::Server;
use serde_json::json;

use crate::helpers::{Backend, TestApp, random_alnum};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_immediate_on_every_instance() {
    let mut first = TestApp::spawn(Backend::Postgres).await;
    let mut config = first.config.clone();
    config.redis_url = Some(
        std::env::var("PORTCULLIS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    );
    // Private to this run, shared by the two instances.
    config.redis_key_prefix = format!("hostile-{}", random_alnum(12));
    first.stop_server().await;
    let listener = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let a = Server::start(&config, listener().await, None)
        .await
        .unwrap();
    let b = Server::start(&config, listener().await, None)
        .await
        .unwrap();
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let client = &first.client;
    let get = |base: &str, credential: &str| {
        client
            .get(format!("{base}/v1/app"))
            .bearer_auth(credential)
            .send()
    };

    // A sender key, created on A, used on B.
    let res = client
        .post(format!("{url_a}/v1/keys"))
        .bearer_auth(&first.admin_key)
        .json(&json!({"role": "sender"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = res.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(get(&url_b, &key).await.unwrap().status(), 200);
    // A token minted on B, used on A.
    let res = client
        .post(format!("{url_b}/v1/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=client_credentials&client_secret={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token: serde_json::Value = res.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get(&url_a, &token).await.unwrap().status(), 200);

    // Revoked on A: the next request on B, with the key or its token, is refused.
    let res = client
        .delete(format!("{url_a}/v1/keys/{id}"))
        .bearer_auth(&first.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(get(&url_b, &key).await.unwrap().status(), 401);
    assert_eq!(get(&url_b, &token).await.unwrap().status(), 401);
    assert_eq!(get(&url_a, &token).await.unwrap().status(), 401);

    // Failures split over both instances block the address on both (shared in Redis).
    // That was 3 failures so far from 127.0.0.1; 7 more, alternating.
    for i in 0..7 {
        let base = if i % 2 == 0 { &url_a } else { &url_b };
        let status = get(base, &format!("pcl_live_{:032}", i))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    assert_eq!(get(&url_a, &first.admin_key).await.unwrap().status(), 429);
    assert_eq!(get(&url_b, &first.admin_key).await.unwrap().status(), 429);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    first.stop().await;
}
