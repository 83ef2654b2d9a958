//! The guard's second half end to end: quotas (exact under concurrency), per-recipient
//! caps, the default country allowlist, SMS pumping to high-risk prefixes, links and the
//! opt-out footer, holds and their review, kill switches (with and without stopping the
//! queue), the failure-storm breaker, and policy events with their filters.

use std::time::Duration;

use portcullis_domain::AppId;
use portcullis_store::apps::{self, PolicySettings};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Options, TestApp};

both_backends!(
    quotas_count_segments_exactly,
    caps_countries_and_pumping,
    links_and_the_opt_out_footer,
    holds_are_reviewed,
    kill_switches,
    failure_storm_pauses_the_app,
    concurrent_requests_each_get_their_own_standing,
    the_recipient_cap_holds_for_concurrent_requests,
);

/// Edits the test app's policy settings in the store (the operator's `apps update`).
async fn set_policy(app: &TestApp, edit: impl FnOnce(&mut PolicySettings)) {
    let db = &app.server.as_ref().unwrap().store.db;
    let id = AppId::parse(&app.app_id).unwrap();
    let mut current = apps::get_any_tenant(db, &id).await.unwrap();
    edit(&mut current.policy);
    apps::set_policy(db, &id, &current.policy).await.unwrap();
}

async fn send(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.post("/v1/messages", key, &body).await
}

async fn otp(app: &TestApp, to: &str, text: &str) -> (u16, Value) {
    send(
        app,
        &app.admin_key,
        json!({"to": to, "body": text, "purpose": "otp"}),
    )
    .await
}

/// Sends every body to `POST /v1/messages` at once: each answer's index, status and JSON.
async fn send_at_once(app: &TestApp, bodies: Vec<Value>) -> Vec<(usize, u16, Value)> {
    let mut set = tokio::task::JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let request = app
            .client
            .post(app.url("/v1/messages"))
            .bearer_auth(&app.admin_key)
            .json(&body);
        set.spawn(async move {
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            (i, status, res.json::<Value>().await.unwrap())
        });
    }
    set.join_all().await
}

async fn policy_events(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, page) = app
        .get(&format!("/v1/policy-events?{query}"), &app.admin_key)
        .await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

async fn quotas_count_segments_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    set_policy(&app, |p| p.daily_segment_quota = Some(4)).await;
    // Two one-segment messages: 2 of 4 used.
    for i in 0..2 {
        let (s, j) = otp(&app, "+14155550110", &format!("code {i}")).await;
        assert_eq!(s, 202, "{j}");
    }
    // A 3-segment message with 2 units left is refused whole.
    let long = "x".repeat(400);
    let (s, refused) = otp(&app, "+14155550110", &long).await;
    assert_eq!(
        (s, refused["code"].as_str()),
        (422, Some("quota_exceeded")),
        "{refused}"
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("daily quota of 4"),
        "{refused}"
    );
    // A 2-segment one fits exactly; then nothing more does.
    let (s, j) = otp(&app, "+14155550110", &"y".repeat(200)).await;
    assert_eq!((s, j["segments"].as_u64()), (202, Some(2)), "{j}");
    let (s, j) = otp(&app, "+14155550110", "one more").await;
    assert_eq!((s, j["code"].as_str()), (422, Some("quota_exceeded")));
    let events = policy_events(&app, "code=quota_exceeded").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["kind"], "refused");
    assert_eq!(events[0]["phone"], "+1415555****");

    // Concurrent requests cannot overrun a quota together: 30 at once against 12 units.
    let app = TestApp::spawn(backend).await;
    set_policy(&app, |p| p.daily_segment_quota = Some(12)).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (client, url, key) = (
            app.client.clone(),
            app.url("/v1/messages"),
            app.admin_key.clone(),
        );
        set.spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"to": format!("+1415555{:04}", 2000 + i), "body": "hi", "purpose": "otp"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut accepted = 0;
    let mut refused = 0;
    while let Some(s) = set.join_next().await {
        match s.unwrap() {
            202 => accepted += 1,
            422 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((accepted, refused), (12, 18));

    // The tenant's quota counts too (the board picks tenant settings up within a second).
    let db = &app.server.as_ref().unwrap().store.db;
    let tenant = portcullis_domain::TenantId::parse(&app.tenant_id).unwrap();
    set_policy(&app, |p| p.daily_segment_quota = None).await;
    // The zone's day must be UTC's (the day the 12 units were counted in): Berlin's runs
    // ahead from 22:00 or 23:00 UTC, Reykjavik's never does.
    let utc_hour = portcullis_store::now_ms() / 3_600_000 % 24;
    let zone = if utc_hour < 21 {
        "Europe/Berlin"
    } else {
        "Atlantic/Reykjavik"
    };
    portcullis_store::tenants::set_settings(
        db,
        &tenant,
        &portcullis_store::tenants::TenantSettings {
            timezone: Some(zone.into()),
            daily_segment_quota: Some(15),
            monthly_segment_quota: None,
        },
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, view) = app.get("/v1/app", &app.admin_key).await;
        if view["policy"]["tenant_daily_segment_quota"] == 15 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The tenant's 12 units used so far count against its quota of 15 (its day counted
    // in its own zone).
    for i in 0..3 {
        let (s, j) = otp(&app, "+14155550111", &format!("t{i}")).await;
        assert_eq!(s, 202, "{j}");
    }
    let (s, j) = otp(&app, "+14155550111", "over").await;
    assert_eq!(
        (s, j["code"].as_str()),
        (422, Some("quota_exceeded")),
        "{j}"
    );
    assert!(
        j["error"].as_str().unwrap().contains("tenant's daily"),
        "{j}"
    );
    app.stop().await;
}

async fn caps_countries_and_pumping(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Per-recipient daily cap on non-essential messages; essential ones are not capped.
    set_policy(&app, |p| p.recipient_daily_cap = Some(2)).await;
    let note = json!({"to": "+14155550120", "body": "Your parcel", "purpose": "notification"});
    for _ in 0..2 {
        let (s, j) = send(&app, &app.admin_key, note.clone()).await;
        assert_eq!(s, 202, "{j}");
    }
    let (s, j) = send(&app, &app.admin_key, note.clone()).await;
    assert_eq!(
        (s, j["code"].as_str()),
        (422, Some("recipient_frequency_capped")),
        "{j}"
    );
    let (s, j) = otp(&app, "+14155550120", "code 1").await;
    assert_eq!(s, 202, "{j}");
    // Another recipient is not affected.
    let (s, _) = send(
        &app,
        &app.admin_key,
        json!({"to": "+14155550121", "body": "Your parcel", "purpose": "notification"}),
    )
    .await;
    assert_eq!(s, 202);

    // By default the app sends only to its senders' countries (+14155550199: US).
    let (s, j) = otp(&app, "+447911123456", "code").await;
    assert_eq!(
        (s, j["code"].as_str()),
        (422, Some("destination_not_allowed")),
        "{j}"
    );
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("allowed countries (US)"),
        "{j}"
    );

    // A pumping burst to a high-risk prefix (Cuba, +53) from an app allowed to send
    // there: the first few pass, then every one is refused.
    set_policy(&app, |p| {
        p.allowed_countries = Some(vec!["US".into(), "CU".into()])
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let (s, j) = otp(
            &app,
            &format!("+535{:07}", 1_234_000 + i),
            "Your code is 4711",
        )
        .await;
        codes.push(if s == 202 {
            "accepted".to_owned()
        } else {
            j["code"].as_str().unwrap().to_owned()
        });
    }
    assert_eq!(
        codes[..3],
        ["accepted", "accepted", "accepted"],
        "{codes:?}"
    );
    assert!(
        codes[3..].iter().all(|c| c == "destination_high_risk"),
        "{codes:?}"
    );
    let events = policy_events(&app, "code=destination_high_risk&limit=100").await;
    assert_eq!(events.len(), 17);
    assert!(
        events[0]["reason"].as_str().unwrap().contains("+53"),
        "{}",
        events[0]
    );
    // Ordinary destinations still go.
    let (s, _) = otp(&app, "+14155550122", "code").await;
    assert_eq!(s, 202);
    // Events filter by recipient and time.
    let about = policy_events(&app, "phone=%2B14155550120&kind=refused").await;
    assert_eq!(about.len(), 1, "{about:?}");
    assert_eq!(about[0]["code"], "recipient_frequency_capped");
    let later = policy_events(&app, "since=2999-01-01T00:00:00Z").await;
    assert!(later.is_empty());
    app.stop().await;
}

async fn links_and_the_opt_out_footer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    set_policy(&app, |p| {
        p.block_url_shorteners = true;
        p.blocked_domains = vec!["evil.com".into()];
        p.opt_out_footer = true;
    })
    .await;
    let (s, j) = otp(&app, "+14155550130", "Log in at HTTPS://BIT.LY/x1").await;
    assert_eq!(
        (s, j["code"].as_str()),
        (422, Some("link_shortener_not_allowed")),
        "{j}"
    );
    assert!(
        !j["error"].as_str().unwrap().contains("x1"),
        "only the host is named: {j}"
    );
    let (s, j) = otp(&app, "+14155550130", "see login.evil.com/reset").await;
    assert_eq!(
        (s, j["code"].as_str()),
        (422, Some("link_not_allowed")),
        "{j}"
    );
    let (s, j) = otp(&app, "+14155550130", "see https://example.com/reset").await;
    assert_eq!(s, 202, "{j}");
    assert_eq!(
        j["body"], "see https://example.com/reset",
        "no footer on essential messages"
    );
    // Non-essential messages get the footer, counted in the segments.
    let body = "z".repeat(150);
    let (s, j) = send(
        &app,
        &app.admin_key,
        json!({"to": "+14155550130", "body": body, "purpose": "notification"}),
    )
    .await;
    assert_eq!(s, 202, "{j}");
    assert_eq!(j["body"], format!("{body}\nReply STOP to opt out"));
    assert_eq!(j["segments"], 2);
    // A body that already says how to opt out is left alone.
    let (_, j) = send(&app, &app.admin_key, json!({"to": "+14155550130", "body": "Sale today. Text STOP to end", "purpose": "notification"})).await;
    assert_eq!(j["body"], "Sale today. Text STOP to end");
    app.stop().await;
}

async fn holds_are_reviewed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A quiet app: anything above 3 a minute is a burst.
    set_policy(&app, |p| {
        p.burst_min_per_minute = 3;
        p.burst_factor = 10;
    })
    .await;
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, j) = otp(&app, &format!("+1415555{:04}", 3000 + i), "code").await;
        assert_eq!(s, 202, "{j}");
        statuses.push(j["status"].as_str().unwrap().to_owned());
        ids.push(j["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["queued", "queued", "queued", "held", "held"]);
    // Held messages are not sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, held) = app
        .get(&format!("/v1/messages/{}", ids[3]), &app.admin_key)
        .await;
    assert_eq!(held["status"], "held", "{held}");

    let (s, list) = app.get("/v1/admin/reviews", &app.admin_key).await;
    assert_eq!(s, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{list}");
    assert_eq!(data[0]["hold_code"], "burst_detected");
    assert!(
        data[0]["hold_reason"]
            .as_str()
            .unwrap()
            .contains("baseline"),
        "{list}"
    );
    assert_eq!(data[0]["message"]["to"], "+1415555****");

    // A sender key cannot release what the guard held.
    let sender = app.key_with_role("sender").await;
    let (s, _) = app
        .post(
            &format!("/v1/admin/reviews/{}/approve", ids[3]),
            &sender,
            &json!({}),
        )
        .await;
    assert_eq!(s, 403);
    // Another tenant sees nothing.
    let (_, _, other_key) = app.other_tenant().await;
    let (s, _) = app
        .post(
            &format!("/v1/admin/reviews/{}/approve", ids[3]),
            &other_key,
            &json!({}),
        )
        .await;
    assert_eq!(s, 404);

    let (s, approved) = app
        .post(
            &format!("/v1/admin/reviews/{}/approve", ids[3]),
            &app.admin_key,
            &json!({"note": "checked with the customer"}),
        )
        .await;
    assert_eq!(s, 200, "{approved}");
    app.wait_for_status(
        &ids[3],
        &app.admin_key,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let (s, rejected) = app
        .post(
            &format!("/v1/admin/reviews/{}/reject", ids[4]),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, rejected["status"].as_str()),
        (200, Some("canceled")),
        "{rejected}"
    );
    let history: Vec<&str> = rejected["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["held", "canceled"], "{rejected}");
    // The history says why it was held.
    assert!(
        rejected["history"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("messages this minute"),
        "{rejected}"
    );
    // Deciding twice is a conflict, not a second decision.
    let (s, again) = app
        .post(
            &format!("/v1/admin/reviews/{}/approve", ids[4]),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!((s, again["code"].as_str()), (409, Some("not_held")));
    let (_, list) = app.get("/v1/admin/reviews", &app.admin_key).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    // Audited, and recorded as policy events.
    let (_, audit) = app.get("/v1/audit-events?limit=100", &app.admin_key).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"review.approved") && actions.contains(&"review.rejected"),
        "{actions:?}"
    );
    let kinds: Vec<String> = policy_events(&app, "limit=100")
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for k in ["held", "approved", "rejected"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }

    // Invalid-number failures (the simulator refuses numbers ending in 0001 as invalid)
    // hold the next messages.
    let app = TestApp::spawn(backend).await;
    set_policy(&app, |p| p.hold_after_invalid_failures = 2).await;
    for n in ["+14155550001", "+14155560001"] {
        let (_, j) = otp(&app, n, "code").await;
        let failed = app
            .wait_for_status(
                j["id"].as_str().unwrap(),
                &app.admin_key,
                "failed",
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(failed["error_code"], "invalid_number");
    }
    let (s, j) = otp(&app, "+14155550140", "code").await;
    assert_eq!((s, j["status"].as_str()), (202, Some("held")), "{j}");
    let (_, list) = app.get("/v1/admin/reviews", &app.admin_key).await;
    assert_eq!(list["data"][0]["hold_code"], "invalid_number_failures");
    app.stop().await;
}

async fn kill_switches(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let soon = || (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)).to_string();
    // A pause that stops the queue: a message already accepted waits.
    let (s, scheduled) = send(
        &app,
        &app.admin_key,
        json!({"to": "+14155550150", "body": "code", "purpose": "otp", "send_at": soon()}),
    )
    .await;
    assert_eq!(s, 202, "{scheduled}");
    let id = scheduled["id"].as_str().unwrap();
    let (s, view) = app
        .post(
            "/v1/app/pause",
            &app.admin_key,
            &json!({"reason": "key leaked", "stop_queue": true}),
        )
        .await;
    assert_eq!(s, 200, "{view}");
    assert_eq!(view["pause"]["scope"], "app");
    assert_eq!(view["policy"]["paused"], true);
    let (s, j) = otp(&app, "+14155550151", "code").await;
    assert_eq!(
        (s, j["code"].as_str()),
        (422, Some("sending_paused")),
        "{j}"
    );
    assert!(j["error"].as_str().unwrap().contains("key leaked"), "{j}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, m) = app.get(&format!("/v1/messages/{id}"), &app.admin_key).await;
    assert_eq!(m["status"], "scheduled", "the queue is held: {m}");
    // Only admins may pause; bad input changes nothing.
    let sender = app.key_with_role("sender").await;
    let (s, _) = app.post("/v1/app/resume", &sender, &json!({})).await;
    assert_eq!(s, 403);
    let (s, j) = app
        .post("/v1/app/pause", &app.admin_key, &json!({"reason": ""}))
        .await;
    assert_eq!((s, j["code"].as_str()), (422, Some("invalid_reason")));
    let (s, _) = app.post("/v1/app/resume", &app.admin_key, &json!({})).await;
    assert_eq!(s, 200);
    app.wait_for_status(id, &app.admin_key, "delivered", Duration::from_secs(10))
        .await;
    let (s, j) = app.post("/v1/app/resume", &app.admin_key, &json!({})).await;
    assert_eq!((s, j["code"].as_str()), (409, Some("not_paused")));

    // A pause that lets the queue drain: new sends refused, accepted ones still go.
    let (_, scheduled) = send(
        &app,
        &app.admin_key,
        json!({"to": "+14155550152", "body": "code", "purpose": "otp", "send_at": soon()}),
    )
    .await;
    let (s, _) = app
        .post(
            "/v1/app/pause",
            &app.admin_key,
            &json!({"reason": "campaign stopped"}),
        )
        .await;
    assert_eq!(s, 200);
    app.wait_for_status(
        scheduled["id"].as_str().unwrap(),
        &app.admin_key,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    let (s, _) = app.post("/v1/app/resume", &app.admin_key, &json!({})).await;
    assert_eq!(s, 200);

    // The operator's switches (global, tenant), as the CLI writes them: picked up by the
    // board within a second.
    let db = &app.server.as_ref().unwrap().store.db;
    for (scope, target) in [("global", String::new()), ("tenant", app.tenant_id.clone())] {
        portcullis_store::guard::set_pause(
            db,
            &portcullis_store::guard::PauseRecord {
                scope: scope.into(),
                target: target.clone(),
                stop_queue: false,
                reason: "maintenance".into(),
                source: "cli".into(),
                created_at: portcullis_store::now_ms(),
                until_at: None,
            },
        )
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (s, j) = otp(&app, "+14155550153", "code").await;
            if s == 422 {
                assert_eq!(j["code"], "sending_paused");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{scope} pause not applied"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, view) = app.get("/v1/app", &app.admin_key).await;
        assert_eq!(view["pause"]["scope"], scope, "{view}");
        // The app's own resume does not lift an operator's pause.
        let (s, _) = app.post("/v1/app/resume", &app.admin_key, &json!({})).await;
        assert_eq!(s, 409);
        portcullis_store::guard::clear_pause(db, scope, &target)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, view) = app.get("/v1/app", &app.admin_key).await;
            if view["pause"].is_null() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{scope} pause not lifted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, audit) = app.get("/v1/audit-events?limit=100", &app.admin_key).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"app.paused") && actions.contains(&"app.resumed"),
        "{actions:?}"
    );
    app.stop().await;
}

async fn failure_storm_pauses_the_app(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| {
                c.breaker_min_attempts = 6;
                c.breaker_failure_ratio = 0.5;
            },
            ..Options::default()
        },
    )
    .await;
    set_policy(&app, |p| p.hold_after_invalid_failures = 0).await;
    // Sends the provider refuses, one after another.
    for i in 0..6 {
        let (s, j) = otp(&app, &format!("+141555{}0001", i + 1), "code").await;
        assert_eq!(s, 202, "{j}");
        app.wait_for_status(
            j["id"].as_str().unwrap(),
            &app.admin_key,
            "failed",
            Duration::from_secs(10),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let view = loop {
        let (_, view) = app.get("/v1/app", &app.admin_key).await;
        if !view["pause"].is_null() {
            break view;
        }
        assert!(tokio::time::Instant::now() < deadline, "not paused: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["pause"]["scope"], "app");
    assert_eq!(view["pause"]["stop_queue"], true);
    assert!(
        view["pause"]["reason"]
            .as_str()
            .unwrap()
            .contains("failure storm"),
        "{view}"
    );
    let (s, j) = otp(&app, "+14155550160", "code").await;
    assert_eq!((s, j["code"].as_str()), (422, Some("sending_paused")));
    let events = policy_events(&app, "kind=paused").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["code"], "failure_storm");
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .contains("6 of the app's last 6"),
        "{events:?}"
    );
    // A person looks, then resumes.
    let (s, _) = app.post("/v1/app/resume", &app.admin_key, &json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = otp(&app, "+14155550160", "code").await;
    assert_eq!(s, 202);
    app.stop().await;
}

/// The guard's reads are batched across requests: sent all at once, each request still
/// gets its own recipient's standing, and requests that fail before their read (a bad
/// number, an empty body) get their own error, not an answer meant for another.
async fn concurrent_requests_each_get_their_own_standing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, sup) = app
        .post(
            "/v1/suppressions",
            &app.admin_key,
            &json!({"phone": "+14155550180", "reason": "STOP"}),
        )
        .await;
    assert_eq!(status, 201, "{sup}");
    let mut expected = Vec::new();
    let bodies = (0..96usize).map(|i| {
        let (to, body, expect) = match i % 4 {
            0 => (
                "+14155550180".to_owned(),
                "hi",
                Some("recipient_suppressed"),
            ),
            1 => (format!("+1415555{:04}", 3000 + i), "hi", None),
            2 => ("+1415".to_owned(), "hi", Some("invalid_phone_number")),
            _ => (format!("+1415555{:04}", 3000 + i), "", Some("invalid_body")),
        };
        expected.push(expect);
        json!({"to": to, "body": body, "purpose": "support"})
    });
    let bodies: Vec<Value> = bodies.collect();
    for (i, status, answer) in send_at_once(&app, bodies).await {
        match expected[i] {
            None => assert_eq!(status, 202, "request {i}: {answer}"),
            Some(code) => {
                assert_eq!(status, 422, "request {i}: {answer}");
                assert_eq!(answer["code"], code, "request {i}: {answer}");
            }
        }
    }
    app.stop().await;
}

/// Requests racing to one recipient cannot together pass its daily cap: each is decided
/// on what its committer read, plus what that committer's batches not yet committed add,
/// plus the batch's earlier messages to the same recipient. SQLite has one committer, so the cap is
/// exact; PostgreSQL's four commit side by side, each exact on its own.
async fn the_recipient_cap_holds_for_concurrent_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    set_policy(&app, |p| p.recipient_daily_cap = Some(3)).await;
    // Every fourth is an OTP: essential, never capped, and not counted.
    let purpose = |i: usize| {
        if i.is_multiple_of(4) {
            "otp"
        } else {
            "notification"
        }
    };
    let bodies = (0..40)
        .map(|i| json!({"to": "+14155550190", "body": format!("note {i}"), "purpose": purpose(i)}))
        .collect();
    let (mut notes, mut capped, mut otps) = (0, 0, 0);
    for (i, status, answer) in send_at_once(&app, bodies).await {
        match (purpose(i), status) {
            ("otp", 202) => otps += 1,
            ("notification", 202) => notes += 1,
            ("notification", 422) => {
                assert_eq!(answer["code"], "recipient_frequency_capped", "{answer}");
                capped += 1;
            }
            (p, _) => panic!("{p}: {status} {answer}"),
        }
    }
    assert_eq!((notes + capped, otps), (30, 10));
    match backend {
        Backend::Sqlite => assert_eq!(notes, 3),
        Backend::Postgres => assert!((3..=12).contains(&notes), "{notes} accepted"),
    }
    app.stop().await;
}
