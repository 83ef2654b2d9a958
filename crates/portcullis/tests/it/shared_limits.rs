//! Rate limits and brute-force blocking shared through Redis (`redis_url`): two instances
//! on one PostgreSQL database and one Redis count together; with Redis unreachable the API
//! still answers and the limits still apply, in process. Every test uses its own Redis key
//! prefix, so runs and parallel tests never share counters.

use portcullis::config::Config;
use portcullis::server::Server;
use serde_json::Value;

use crate::helpers::{Backend, Options, TestApp, random_alnum, status_json};

const BAD_KEY: &str = "pcl_live_0000000000000000000000000000bad0";

/// The Redis the tests use (`PORTCULLIS_TEST_REDIS_URL`, default the local one).
fn redis_url() -> String {
    std::env::var("PORTCULLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    format!("portcullis-it-{}", random_alnum(12).to_lowercase())
}

/// A Redis URL at a local port nothing listens on.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("redis://:not-a-real-password@127.0.0.1:{port}")
}

/// Stops `app`'s own server and starts two instances side by side on its database, both
/// with `edit` applied to the configuration.
async fn two_instances(app: &mut TestApp, edit: impl Fn(&mut Config)) -> (Server, Server) {
    app.stop_server().await;
    let mut config = app.config.clone();
    edit(&mut config);
    let start = async || {
        Server::start(
            &config,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            None,
        )
        .await
        .expect("instance starts")
    };
    (start().await, start().await)
}

fn base(server: &Server) -> String {
    format!("http://{}", server.addr)
}

async fn get(client: &reqwest::Client, url: String, key: &str) -> reqwest::Response {
    client
        .get(url)
        .bearer_auth(key)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("request")
}

/// Asserts the brute-force block's answer: `429 too_many_requests`, about 15 minutes.
async fn assert_blocked(res: reqwest::Response) {
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((890..=900).contains(&retry), "{retry}");
    let (_, body) = status_json(res).await;
    assert_eq!(body["code"], "too_many_requests", "{body}");
}

/// Asserts a rate limit's answer with its headers, for a limit of `burst` per minute.
async fn assert_rate_limited(res: reqwest::Response, burst: u32) {
    assert_eq!(res.status(), 429);
    let h = res.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-limit"], burst.to_string().as_str());
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-policy"], format!("{burst};w=60").as_str());
    let (_, body): (u16, Value) = status_json(res).await;
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert_eq!(body["error"], "Too many requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_split_across_instances_block_the_address_on_both() {
    let mut app = TestApp::spawn(Backend::Postgres).await;
    let prefix = unique_prefix();
    let (a, b) = two_instances(&mut app, |c| {
        c.redis_url = Some(redis_url());
        c.redis_key_prefix = prefix.clone();
    })
    .await;
    let bases = [base(&a), base(&b)];
    // Nine failures, alternating: neither instance alone has seen ten.
    for i in 0..9 {
        let res = get(&app.client, format!("{}/v1/app", bases[i % 2]), BAD_KEY).await;
        assert_eq!(res.status(), 401);
    }
    for base in &bases {
        let res = get(&app.client, format!("{base}/v1/app"), &app.admin_key).await;
        assert_eq!(res.status(), 200, "nine failures do not block");
    }
    // The tenth, on the second instance, blocks the address on both.
    let res = get(&app.client, format!("{}/v1/app", bases[1]), BAD_KEY).await;
    assert_eq!(res.status(), 401);
    for base in &bases {
        assert_blocked(get(&app.client, format!("{base}/v1/app"), &app.admin_key).await).await;
    }
    // Another address is not affected, on either instance.
    let other = app.client_from(2);
    for base in &bases {
        let res = get(&other, format!("{base}/v1/app"), &app.admin_key).await;
        assert_eq!(res.status(), 200);
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_counts_requests_on_every_instance() {
    let mut app = TestApp::spawn(Backend::Postgres).await;
    let reader = app.key_with_role("reader").await;
    let prefix = unique_prefix();
    let (a, b) = two_instances(&mut app, |c| {
        c.redis_url = Some(redis_url());
        c.redis_key_prefix = prefix.clone();
        c.rate_limit_per_key = Some("1/m,burst=4".into());
    })
    .await;
    let bases = [base(&a), base(&b)];
    // Four requests, two on each instance: the burst is spent in total, not per instance.
    for i in 0..4 {
        let res = get(&app.client, format!("{}/v1/app", bases[i % 2]), &reader).await;
        assert_eq!(res.status(), 200, "request {i}");
    }
    for base in &bases {
        assert_rate_limited(get(&app.client, format!("{base}/v1/app"), &reader).await, 4).await;
    }
    // Another key has its own allowance.
    for base in &bases {
        let res = get(&app.client, format!("{base}/v1/app"), &app.admin_key).await;
        assert_eq!(res.status(), 200);
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    app.stop().await;
}

/// Redis unreachable: every request is still answered, the rate limit and the brute-force
/// block still apply (in process), and start-up did not wait for Redis.
async fn unreachable_redis_falls_back_in_process(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| {
                c.redis_url = Some(closed_port_url());
                c.redis_key_prefix = unique_prefix();
                c.rate_limit_per_key = Some("1/m,burst=3".into());
            },
            ..Default::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let reader = app.key_with_role("reader").await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/app", &reader).await.0, 200);
    }
    assert_rate_limited(get(&app.client, app.url("/v1/app"), &reader).await, 3).await;
    for _ in 0..10 {
        assert_eq!(app.get("/v1/app", BAD_KEY).await.0, 401);
    }
    assert_blocked(get(&app.client, app.url("/v1/app"), &app.admin_key).await).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "an outage costs at most one slow request a second: {:?}",
        started.elapsed()
    );
    app.stop().await;
}

crate::both_backends!(unreachable_redis_falls_back_in_process);

/// The single-instance answers of `auth.rs` (block, rate limit, headers) in Redis mode.
async fn redis_mode_answers_like_in_process(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| {
                c.redis_url = Some(redis_url());
                c.redis_key_prefix = unique_prefix();
                c.rate_limit_per_key = Some("1/m,burst=3".into());
            },
            ..Default::default()
        },
    )
    .await;
    let reader = app.key_with_role("reader").await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/app", &reader).await.0, 200);
    }
    let res = get(&app.client, app.url("/v1/app"), &reader).await;
    assert!(res.headers().contains_key("x-request-id"));
    assert_rate_limited(res, 3).await;
    for _ in 0..10 {
        assert_eq!(app.get("/v1/app", BAD_KEY).await.0, 401);
    }
    let res = get(&app.client, app.url("/v1/app"), &app.admin_key).await;
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_blocked(res).await;
    let res = get(&app.client_from(2), app.url("/v1/app"), &app.admin_key).await;
    assert_eq!(res.status(), 200, "another address is not affected");
    app.stop().await;
}

crate::both_backends!(redis_mode_answers_like_in_process);
