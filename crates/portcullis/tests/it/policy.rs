//! The guard end to end through the simulator: STOP → suppression → non-essential refused,
//! essential allowed → START → allowed again; consents; policy events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    stop_and_start_through_the_simulator,
    suppressions_and_consents_api
);

const SUBSCRIBER: &str = "+14155550142";

/// What a non-essential message to `to` should be accepted as right now: quiet hours may
/// defer it, and the test must hold at any time of day.
fn expected_non_essential_status(to: &str) -> &'static str {
    let number = portcullis_domain::E164::parse(to).unwrap();
    let rules = portcullis_domain::quiet_hours::QuietRules::builtin();
    match portcullis_domain::quiet_hours::next_allowed(&number, jiff::Timestamp::now(), rules) {
        Some(_) => "scheduled",
        None => "queued",
    }
}

async fn inject(app: &TestApp, body: &str) {
    let (status, json) = app
        .post(
            "/v1/simulator/inbound",
            &app.admin_key,
            &json!({"from": SUBSCRIBER, "to": "+14155550199", "body": body}),
        )
        .await;
    assert_eq!(status, 202, "{json}");
}

async fn messages_to_subscriber(app: &TestApp) -> Vec<Value> {
    let (_, list) = app
        .get(
            &format!("/v1/messages?to={}", SUBSCRIBER.replace('+', "%2B")),
            &app.admin_key,
        )
        .await;
    list["data"].as_array().unwrap().clone()
}

async fn stop_and_start_through_the_simulator(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let notification = json!({"to": SUBSCRIBER, "body": "Your parcel is out for delivery", "purpose": "notification"});
    let otp = json!({"to": SUBSCRIBER, "body": "Your code is 123456", "purpose": "otp"});

    // The subscriber texts STOP (with a homoglyph and punctuation, as people do).
    inject(&app, "S\u{0422}OP!!").await;
    let (_, sups) = app.get("/v1/suppressions", &app.admin_key).await;
    assert_eq!(sups["data"].as_array().unwrap().len(), 1, "{sups}");
    assert_eq!(sups["data"][0]["source"], "inbound_keyword");
    assert_eq!(sups["data"][0]["phone"], "+1415555****");
    // One confirmation, even when STOP is repeated.
    inject(&app, "stop").await;
    let replies = messages_to_subscriber(&app).await;
    assert_eq!(
        replies.len(),
        1,
        "exactly one opt-out confirmation: {replies:?}"
    );
    assert!(
        replies[0]["body"]
            .as_str()
            .unwrap()
            .contains("unsubscribed")
    );
    app.wait_for_status(
        replies[0]["id"].as_str().unwrap(),
        &app.admin_key,
        "delivered",
        Duration::from_secs(10),
    )
    .await;

    // Non-essential refused, essential allowed (and marked so).
    let (status, refused) = app
        .post("/v1/messages", &app.admin_key, &notification)
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["code"], "recipient_suppressed");
    let (status, sent) = app.post("/v1/messages", &app.admin_key, &otp).await;
    assert_eq!(status, 202, "{sent}");
    app.wait_for_status(
        sent["id"].as_str().unwrap(),
        &app.admin_key,
        "delivered",
        Duration::from_secs(10),
    )
    .await;

    let (_, events) = app.get("/v1/policy-events", &app.admin_key).await;
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"opted_out"), "{events}");
    assert!(kinds.contains(&"refused"), "{events}");
    assert!(kinds.contains(&"allowed_exempt"), "{events}");
    let exempt = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "allowed_exempt")
        .unwrap();
    assert_eq!(exempt["message_id"], sent["id"]);
    // The message's own history says it went out under the exemption.
    let (_, shown) = app
        .get(
            &format!("/v1/messages/{}", sent["id"].as_str().unwrap()),
            &app.admin_key,
        )
        .await;
    assert!(
        shown["history"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("exempt")),
        "{shown}"
    );
    assert!(
        !events.to_string().contains(SUBSCRIBER),
        "numbers are masked in policy events"
    );

    // A keyword in passing is only recorded for review.
    inject(&app, "where is the bus stop?").await;
    let (_, review) = app
        .get("/v1/policy-events?kind=possible_opt_out", &app.admin_key)
        .await;
    assert_eq!(review["data"].as_array().unwrap().len(), 1, "{review}");

    // START lifts the suppression; non-essential flows again.
    inject(&app, "START").await;
    let (_, sups) = app.get("/v1/suppressions", &app.admin_key).await;
    assert!(sups["data"].as_array().unwrap().is_empty(), "{sups}");
    let (status, again) = app
        .post("/v1/messages", &app.admin_key, &notification)
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["status"], expected_non_essential_status(SUBSCRIBER));
    let (_, optin) = app
        .get("/v1/policy-events?kind=opted_in", &app.admin_key)
        .await;
    assert_eq!(optin["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn suppressions_and_consents_api(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Marketing: off by default, then enabled but needing consent.
    let marketing = json!({"to": "+14155550143", "body": "20% off today", "purpose": "marketing"});
    let (status, body) = app.post("/v1/messages", &app.admin_key, &marketing).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("purpose_not_allowed"))
    );
    let db = &app.server.as_ref().unwrap().store.db;
    let app_id = portcullis_domain::AppId::parse(&app.app_id).unwrap();
    let mut purposes = portcullis_domain::PurposeSet::default_for_new_app();
    purposes.insert(portcullis_domain::Purpose::Marketing);
    portcullis_store::apps::set_allowed_purposes(db, &app_id, &purposes)
        .await
        .unwrap();
    let (status, body) = app.post("/v1/messages", &app.admin_key, &marketing).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("consent_required"))
    );

    let consent = json!({"phone": "+1 415 555 0143", "channel": "sms", "scope": "marketing",
        "source": "checkout form", "proof": "ticked box v3", "ip": "203.0.113.9", "double_opt_in": true});
    let (status, created) = app.post("/v1/consents", &app.admin_key, &consent).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["phone"], "+1415555****");
    assert!(created["id"].as_str().unwrap().starts_with("cns_"));
    let (_, listed) = app
        .get("/v1/consents?phone=%2B14155550143", &app.admin_key)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["proof"], "ticked box v3");
    let (status, body) = app.post("/v1/messages", &app.admin_key, &marketing).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["status"],
        expected_non_essential_status("+14155550143")
    );

    // Withdrawn consent: refused again.
    let cid = created["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/consents/{cid}"), &app.admin_key)
            .await
            .0,
        204
    );
    let (status, body) = app.post("/v1/messages", &app.admin_key, &marketing).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("consent_required"))
    );
    let (status, bad) = app.post("/v1/consents", &app.admin_key, &json!({"phone": "+14155550143", "channel": "sms", "scope": "everything", "source": "x", "proof": "y"})).await;
    assert_eq!((status, bad["code"].as_str()), (422, Some("invalid_scope")));

    // Suppressions by API: created once, listed, deleted.
    let (status, sup) = app
        .post(
            "/v1/suppressions",
            &app.admin_key,
            &json!({"phone": "+14155550144", "reason": "asked by phone"}),
        )
        .await;
    assert_eq!(status, 201, "{sup}");
    let (status, again) = app
        .post(
            "/v1/suppressions",
            &app.admin_key,
            &json!({"phone": "+14155550144"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], sup["id"]);
    let (status, body) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": "+14155550144", "body": "hi", "purpose": "support"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("recipient_suppressed"))
    );
    let sid = sup["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/suppressions/{sid}"), &app.admin_key)
            .await
            .0,
        204
    );
    assert_eq!(
        app.delete(&format!("/v1/suppressions/{sid}"), &app.admin_key)
            .await
            .0,
        404
    );
    // Sender keys cannot manage suppressions.
    let sender = app.key_with_role("sender").await;
    assert_eq!(app.get("/v1/suppressions", &sender).await.0, 403);
    app.stop().await;
}
