//! Sending, tracking, listing and cancelling messages.

use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    message_is_delivered_through_the_simulator,
    simulator_failure_numbers,
    invalid_requests_are_refused_with_codes,
    idempotency_key_semantics,
    scheduled_message_can_be_canceled,
    listing_paginates_and_filters,
    simulator_inbound_is_listed,
    test_keys_route_to_simulator_without_a_route,
    a_message_past_its_validity_expires_instead_of_sending,
);

async fn message_is_delivered_through_the_simulator(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let sent = app.send("+1 (415) 555-0100", "Your code is 481516").await;
    assert_eq!(sent["status"], "queued");
    assert_eq!(sent["to"], "+1415555****");
    assert_eq!(sent["segments"], 1);
    assert_eq!(sent["encoding"], "gsm7");
    let id = sent["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"));
    let done = app
        .wait_for_status(id, &app.admin_key, "delivered", Duration::from_secs(10))
        .await;
    let history: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["queued", "sending", "sent", "delivered"]);
    assert_eq!(done["connection_id"], "conn_simulator");
    assert!(
        done["provider_message_id"]
            .as_str()
            .unwrap()
            .starts_with("sim-")
    );
    app.stop().await;
}

async fn simulator_failure_numbers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let undelivered = app.send("+14155550000", "hello").await;
    let failed = app.send("+14155550001", "hello").await;
    app.wait_for_status(
        undelivered["id"].as_str().unwrap(),
        &app.admin_key,
        "undelivered",
        Duration::from_secs(10),
    )
    .await;
    let f = app
        .wait_for_status(
            failed["id"].as_str().unwrap(),
            &app.admin_key,
            "failed",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(f["error_code"], "invalid_number");
    app.stop().await;
}

async fn invalid_requests_are_refused_with_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long_body = "a".repeat(1001);
    let cases = [
        (
            json!({"to": "14155550100", "body": "x", "purpose": "otp"}),
            "invalid_phone_number",
        ),
        (
            json!({"to": "+1415555", "body": "x", "purpose": "otp"}),
            "invalid_phone_number",
        ),
        (
            json!({"to": "+14155550100", "body": "", "purpose": "otp"}),
            "invalid_body",
        ),
        (
            json!({"to": "+14155550100", "body": "bell\u{7}", "purpose": "otp"}),
            "invalid_body",
        ),
        (
            json!({"to": "+14155550100", "body": long_body, "purpose": "otp"}),
            "body_too_long",
        ),
        (
            json!({"to": "+14155550100", "body": "x"}),
            "purpose_required",
        ),
        (
            json!({"to": "+14155550100", "body": "x", "purpose": "spam"}),
            "invalid_purpose",
        ),
        (
            json!({"to": "+14155550100", "body": "x", "purpose": "marketing"}),
            "purpose_not_allowed",
        ),
        (
            json!({"to": "+14155550100", "body": "x", "purpose": "otp", "from": "+14155550111"}),
            "sender_not_allowed",
        ),
        (
            json!({"to": "+14155550100", "body": "x", "purpose": "otp", "send_at": "tomorrow"}),
            "invalid_send_at",
        ),
        (
            json!({"to": "+14155550100", "body": "x", "purpose": "otp", "metadata": [1]}),
            "invalid_metadata",
        ),
        (
            json!({"to": "+14155550100", "body": "x", "purpose": "otp", "colour": "red"}),
            "invalid_request",
        ),
    ];
    for (body, code) in cases {
        let (status, json) = app.post("/v1/messages", &app.admin_key, &body).await;
        assert_eq!(status, 422, "{body} → {json}");
        assert_eq!(json["code"], code, "{body} → {json}");
        assert!(json["request_id"].as_str().unwrap().starts_with("req_"));
    }
    // A body of exactly the limit is fine; UCS-2 and segments are computed.
    let ok = "é".repeat(1000);
    let (status, json) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": "+14155550100", "body": ok, "purpose": "otp"}),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["encoding"], "gsm7");
    let (status, json) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": "+14155550100", "body": "😀".repeat(40), "purpose": "otp"}),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["encoding"], "ucs2");
    assert_eq!(json["segments"], 2);
    // Wrong content type.
    let res = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&app.admin_key)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    // Nothing refused was stored.
    let (_, list) = app.get("/v1/messages?limit=100", &app.admin_key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    app.stop().await;
}

async fn idempotency_key_semantics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"to": "+14155550100", "body": "once", "purpose": "otp"});
    let send = |key: &'static str, body: serde_json::Value| {
        let req = app
            .client
            .post(app.url("/v1/messages"))
            .bearer_auth(&app.admin_key)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { crate::helpers::status_json(req.send().await.unwrap()).await }
    };
    let (s1, first) = send("order-17", body.clone()).await;
    let (s2, second) = send("order-17", body.clone()).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(
        first, second,
        "the same key and body answer the same response"
    );
    let (s3, conflict) = send(
        "order-17",
        json!({"to": "+14155550100", "body": "twice", "purpose": "otp"}),
    )
    .await;
    assert_eq!(s3, 409);
    assert_eq!(conflict["code"], "idempotency_key_reused");
    // A replay answers the first response even when the guard would now refuse.
    let notify = json!({"to": "+14155550166", "body": "parcel", "purpose": "otp"});
    let (s_a, first_a) = send("before-stop", notify.clone()).await;
    assert_eq!(s_a, 202);
    let (paused, _) = app
        .post(
            "/v1/app/pause",
            &app.admin_key,
            &json!({"reason": "testing replays"}),
        )
        .await;
    assert_eq!(paused, 200);
    let (s_b, replayed) = send("before-stop", notify.clone()).await;
    assert_eq!((s_b, &replayed), (202, &first_a));
    let (s_c, refused) = send("after-pause", notify).await;
    assert_eq!(
        (s_c, refused["code"].as_str()),
        (422, Some("sending_paused"))
    );
    let (resumed, _) = app.post("/v1/app/resume", &app.admin_key, &json!({})).await;
    assert_eq!(resumed, 200);
    // A request that fails validation is not remembered under its key.
    let (s4, _) = send(
        "fresh-key",
        json!({"to": "nope", "body": "x", "purpose": "otp"}),
    )
    .await;
    assert_eq!(s4, 422);
    let (s5, _) = send("fresh-key", body.clone()).await;
    assert_eq!(s5, 202);
    // Concurrent duplicates create one message.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let req = app
            .client
            .post(app.url("/v1/messages"))
            .bearer_auth(&app.admin_key)
            .header("Idempotency-Key", "burst")
            .json(&json!({"to": "+14155550123", "body": "burst", "purpose": "otp"}));
        set.spawn(async move { crate::helpers::status_json(req.send().await.unwrap()).await });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(r) = set.join_next().await {
        let (status, json) = r.unwrap();
        assert_eq!(status, 202, "{json}");
        ids.insert(json["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    let (_, list) = app.get("/v1/messages?limit=100", &app.admin_key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 4);
    app.stop().await;
}

async fn scheduled_message_can_be_canceled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let (status, json) = app
        .post("/v1/messages", &app.admin_key, &json!({"to": "+14155550100", "body": "later", "purpose": "alert", "send_at": at.to_string()}))
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["status"], "scheduled");
    let id = json["id"].as_str().unwrap();
    let (status, canceled) = app
        .post(
            &format!("/v1/messages/{id}/cancel"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    // Delivered messages cannot be canceled.
    let sent = app.send("+14155550100", "now").await;
    let sid = sent["id"].as_str().unwrap();
    app.wait_for_status(sid, &app.admin_key, "delivered", Duration::from_secs(10))
        .await;
    let (status, json) = app
        .post(
            &format!("/v1/messages/{sid}/cancel"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{json}");
    app.stop().await;
}

async fn listing_paginates_and_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        app.send("+14155550100", &format!("a{i}")).await;
    }
    app.send("+14155550177", "other recipient").await;
    let (_, page1) = app.get("/v1/messages?limit=4", &app.admin_key).await;
    assert_eq!(page1["data"].as_array().unwrap().len(), 4);
    assert_eq!(page1["data"][0]["body"], "other recipient", "newest first");
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .get(
            &format!("/v1/messages?limit=4&cursor={cursor}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_null());
    let (_, filtered) = app
        .get("/v1/messages?to=%2B14155550177", &app.admin_key)
        .await;
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["data"][0]["to"], "+1415555****");
    let (status, bad) = app.get("/v1/messages?status=bogus", &app.admin_key).await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (422, Some("invalid_status"))
    );
    let (status, bad) = app.get("/v1/messages?cursor=zzz", &app.admin_key).await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (422, Some("invalid_cursor"))
    );
    app.stop().await;
}

async fn simulator_inbound_is_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, json) = app
        .post(
            "/v1/simulator/inbound",
            &app.admin_key,
            &json!({"from": "+14155550142", "to": "+14155550199", "body": "hello there"}),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["from"], "+1415555****");
    assert_eq!(data[0]["body"], "hello there");
    assert!(data[0]["id"].as_str().unwrap().starts_with("inb_"));
    let (status, _) = app
        .post(
            "/v1/simulator/inbound",
            &app.admin_key,
            &json!({"from": "+14155550142", "to": "+14155550100", "body": "x"}),
        )
        .await;
    assert_eq!(status, 422, "to must be one of the app's senders");
    app.stop().await;
}

async fn test_keys_route_to_simulator_without_a_route(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        crate::helpers::Options {
            dev: false,
            ..Default::default()
        },
    )
    .await;
    // Outside dev mode an app without a route cannot send with a live key…
    let live = app.send("+14155550100", "live").await;
    let f = app
        .wait_for_status(
            live["id"].as_str().unwrap(),
            &app.admin_key,
            "failed",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(f["error_code"], "no_route");
    // …but a test key always reaches the simulator.
    let (status, created) = app
        .post(
            "/v1/keys",
            &app.admin_key,
            &json!({"role": "sender", "test": true}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let test_key = created["key"].as_str().unwrap();
    assert!(test_key.starts_with("pcl_test_"));
    let (status, sent) = app
        .post(
            "/v1/messages",
            test_key,
            &json!({"to": "+14155550100", "body": "t", "purpose": "otp"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["test"], true);
    app.wait_for_status(
        sent["id"].as_str().unwrap(),
        test_key,
        "delivered",
        Duration::from_secs(10),
    )
    .await;
    app.stop().await;
}

async fn a_message_past_its_validity_expires_instead_of_sending(backend: Backend) {
    use portcullis_domain::*;
    let app = TestApp::spawn(backend).await;
    let store = &app.server.as_ref().unwrap().store;
    let now = portcullis_store::now_ms();
    // A message that waited in the queue past its validity (as if every provider had been
    // down): enqueued directly, due now, expired a second ago.
    let msg = portcullis_store::messages::NewMessage {
        id: MessageId::new(),
        tenant_id: TenantId::parse(&app.tenant_id).unwrap(),
        app_id: AppId::parse(&app.app_id).unwrap(),
        key_id: KeyId::new(),
        to: E164::parse("+14155550100").unwrap(),
        from: None,
        channel: Channel::Sms,
        purpose: Purpose::Otp,
        body: "late code".to_owned(),
        metadata: None,
        encoding: Encoding::Gsm7,
        segments: 1,
        status: MessageStatus::Queued,
        test_mode: false,
        send_at: None,
        expires_at: now - 1000,
        created_at: now - 5000,
    };
    let mut tx = store.db.begin().await.unwrap();
    let id = msg.id.clone();
    let sealed = store.seal_message(msg).unwrap();
    store.insert_messages(&mut tx, &[&sealed]).await.unwrap();
    portcullis_queue::enqueue(
        &mut tx,
        &[portcullis_queue::NewJob {
            queue: "send",
            payload: id.to_string(),
            run_at: now,
            max_attempts: 3,
        }],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let expired = app
        .wait_for_status(
            id.as_str(),
            &app.admin_key,
            "expired",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(expired["error_code"], "validity_expired");
    assert!(
        expired["connection_id"].is_null(),
        "never handed to a provider"
    );
    // A fresh message carries its default expiry ten hours out.
    let sent = app.send("+14155550100", "fresh").await;
    let created: jiff::Timestamp = sent["created_at"].as_str().unwrap().parse().unwrap();
    let expires: jiff::Timestamp = sent["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - created).get_seconds(), 36_000);
    app.stop().await;
}
