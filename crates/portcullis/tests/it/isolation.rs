//! Tenant and app isolation: another tenant's resource, and another app's resource inside
//! the same tenant, answer exactly as a resource that does not exist — same status, same
//! body but for the request id — and nothing happens to them. Listings and their filters
//! show the caller's app only.

use std::collections::BTreeSet;

use portcullis_domain::{KeyId, MessageId};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, status_json};

both_backends!(
    foreign_ids_answer_exactly_like_missing_ones,
    listings_and_filters_show_only_the_callers_app,
    malformed_ids_are_not_found,
);

/// One app taking part: its admin key and resources other apps will reach for.
struct Party {
    name: &'static str,
    app_id: String,
    admin_key: String,
    admin_key_id: String,
    sender_key: String,
    sender_key_id: String,
    /// A scheduled (so still cancelable) message.
    scheduled_id: String,
}

impl Party {
    async fn new(app: &TestApp, name: &'static str, app_id: String, admin_key: String) -> Party {
        let admin_key_id = app.key_id_of(&admin_key).await;
        let (status, created) = app
            .post("/v1/keys", &admin_key, &json!({"role": "sender"}))
            .await;
        assert_eq!(status, 201, "{created}");
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
        let (status, msg) = app
            .post(
                "/v1/messages",
                &admin_key,
                &json!({"to": "+14155550142", "body": format!("{name} later"),
                        "purpose": "alert", "send_at": at.to_string()}),
            )
            .await;
        assert_eq!(status, 202, "{msg}");
        assert_eq!(msg["status"], "scheduled");
        Party {
            name,
            app_id,
            admin_key,
            admin_key_id,
            sender_key: created["key"].as_str().unwrap().to_owned(),
            sender_key_id: created["id"].as_str().unwrap().to_owned(),
            scheduled_id: msg["id"].as_str().unwrap().to_owned(),
        }
    }
}

/// The bootstrap app, an app of another tenant, and another app of the bootstrap tenant.
async fn three_parties(app: &TestApp) -> Vec<Party> {
    let (other_tenant_id, b_app, b_key) = app.other_tenant().await;
    assert_ne!(other_tenant_id, app.tenant_id);
    let (same_tenant_id, c_app, c_key) = app.other_app_same_tenant().await;
    assert_eq!(same_tenant_id, app.tenant_id);
    assert_ne!(c_app, app.app_id);
    vec![
        Party::new(
            app,
            "bootstrap app",
            app.app_id.clone(),
            app.admin_key.clone(),
        )
        .await,
        Party::new(app, "other tenant's app", b_app, b_key).await,
        Party::new(app, "same tenant's other app", c_app, c_key).await,
    ]
}

async fn call(app: &TestApp, method: &str, path: &str, key: &str) -> (u16, Value) {
    let req = match method {
        "GET" => app.client.get(app.url(path)),
        "DELETE" => app.client.delete(app.url(path)),
        "POST" => app.client.post(app.url(path)).json(&json!({})),
        "POST grace" => app
            .client
            .post(app.url(path))
            .json(&json!({"grace_seconds": 60})),
        other => panic!("unknown method {other}"),
    };
    status_json(req.bearer_auth(key).send().await.expect("request")).await
}

/// `got` is the 404 that `missing` is, body for body, but for its own request id.
fn assert_like_missing(what: &str, got: &(u16, Value), missing: &(u16, Value)) {
    assert_eq!(
        missing.0, 404,
        "{what}: the missing id itself: {}",
        missing.1
    );
    assert_eq!(got.0, 404, "{what}: {}", got.1);
    let rid = |v: &Value| v["request_id"].as_str().map(str::to_owned);
    let (got_rid, missing_rid) = (rid(&got.1), rid(&missing.1));
    assert!(
        got_rid.as_deref().is_some_and(|r| r.starts_with("req_")),
        "{what}: {}",
        got.1
    );
    assert_ne!(got_rid, missing_rid, "{what}: request ids are per request");
    let strip = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().expect("object body").remove("request_id");
        v
    };
    assert_eq!(
        strip(&got.1),
        strip(&missing.1),
        "{what}: a foreign id must answer exactly like a missing one"
    );
    assert_eq!(got.1["code"], "not_found", "{what}");
}

/// Right after a foreign request: the victim's message is still scheduled and its keys
/// still work.
async fn assert_untouched(app: &TestApp, victim: &Party, after: &str) {
    let (status, msg) = app
        .get(
            &format!("/v1/messages/{}", victim.scheduled_id),
            &victim.admin_key,
        )
        .await;
    assert_eq!(
        status, 200,
        "after {after}: the victim's admin key stopped working: {msg}"
    );
    assert_eq!(
        msg["status"], "scheduled",
        "after {after}: the victim's message changed"
    );
    let (status, body) = app.get("/v1/messages", &victim.sender_key).await;
    assert_eq!(
        status, 200,
        "after {after}: the victim's sender key stopped working: {body}"
    );
}

/// The id routes, as (method, path template); `{}` is the id.
const MESSAGE_ROUTES: [(&str, &str); 2] = [
    ("GET", "/v1/messages/{}"),
    ("POST", "/v1/messages/{}/cancel"),
];
const KEY_ROUTES: [(&str, &str); 3] = [
    ("POST", "/v1/keys/{}/rotate"),
    ("POST grace", "/v1/keys/{}/rotate"),
    ("DELETE", "/v1/keys/{}"),
];

async fn foreign_ids_answer_exactly_like_missing_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let parties = three_parties(&app).await;
    // Each party reaches its own resources (so the ids below are real and live).
    for p in &parties {
        let (status, own) = app
            .get(&format!("/v1/messages/{}", p.scheduled_id), &p.admin_key)
            .await;
        assert_eq!(status, 200, "{}: {own}", p.name);
        assert_eq!(own["status"], "scheduled");
    }
    let missing_msg = MessageId::new().into_string();
    let missing_key = KeyId::new().into_string();

    for attacker in &parties {
        for victim in parties.iter().filter(|v| v.app_id != attacker.app_id) {
            for (method, template) in MESSAGE_ROUTES {
                let path = template.replace("{}", &victim.scheduled_id);
                let what = format!("{} → {}: {method} {path}", attacker.name, victim.name);
                let missing = call(
                    &app,
                    method,
                    &template.replace("{}", &missing_msg),
                    &attacker.admin_key,
                )
                .await;
                let got = call(&app, method, &path, &attacker.admin_key).await;
                assert_like_missing(&what, &got, &missing);
                assert_untouched(&app, victim, &what).await;
            }
            for key_id in [&victim.sender_key_id, &victim.admin_key_id] {
                for (method, template) in KEY_ROUTES {
                    let path = template.replace("{}", key_id);
                    let what = format!("{} → {}: {method} {path}", attacker.name, victim.name);
                    let missing = call(
                        &app,
                        method,
                        &template.replace("{}", &missing_key),
                        &attacker.admin_key,
                    )
                    .await;
                    let got = call(&app, method, &path, &attacker.admin_key).await;
                    assert_like_missing(&what, &got, &missing);
                    assert_untouched(&app, victim, &what).await;
                }
            }
        }
    }

    // Nothing happened to anyone.
    for p in &parties {
        let (status, msg) = app
            .get(&format!("/v1/messages/{}", p.scheduled_id), &p.admin_key)
            .await;
        assert_eq!(status, 200, "{}: {msg}", p.name);
        assert_eq!(msg["status"], "scheduled", "{}: not canceled", p.name);
        assert_eq!(
            msg["history"].as_array().map(Vec::len),
            Some(1),
            "{}: no history entry was added: {msg}",
            p.name
        );
        for key in [&p.admin_key, &p.sender_key] {
            assert_eq!(
                app.get("/v1/messages", key).await.0,
                200,
                "{}: its keys still work",
                p.name
            );
        }
        let (_, keys) = app.get("/v1/keys", &p.admin_key).await;
        let keys = keys["data"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "{}: no key was added by a rotation", p.name);
        for k in keys {
            assert_eq!(k["status"], "active", "{}: {k}", p.name);
            assert!(k["revoked_at"].is_null(), "{}: {k}", p.name);
            assert!(k["replaced_by"].is_null(), "{}: {k}", p.name);
            assert!(k["expires_at"].is_null(), "{}: {k}", p.name);
        }
    }

    // Controls: the owner can do what the others could not, with the same requests.
    for p in &parties {
        let (status, canceled) = call(
            &app,
            "POST",
            &format!("/v1/messages/{}/cancel", p.scheduled_id),
            &p.admin_key,
        )
        .await;
        assert_eq!(status, 200, "{}: {canceled}", p.name);
        assert_eq!(canceled["status"], "canceled");
        let (status, rotated) = call(
            &app,
            "POST",
            &format!("/v1/keys/{}/rotate", p.sender_key_id),
            &p.admin_key,
        )
        .await;
        assert_eq!(status, 201, "{}: {rotated}", p.name);
        let (status, revoked) = call(
            &app,
            "DELETE",
            &format!("/v1/keys/{}", rotated["id"].as_str().unwrap()),
            &p.admin_key,
        )
        .await;
        assert_eq!(status, 200, "{}: {revoked}", p.name);
        assert_eq!(app.get("/v1/messages", &p.sender_key).await.0, 401);
    }
    app.stop().await;
}

fn ids(list: &Value) -> BTreeSet<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn listings_and_filters_show_only_the_callers_app(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let parties = three_parties(&app).await;
    // A recipient all three apps write to, and one per app.
    let shared = "+14155550143";
    let own_numbers = ["+14155550151", "+14155550152", "+14155550153"];
    let mut messages = Vec::new();
    let mut to_shared = Vec::new();
    let mut inbound_bodies = Vec::new();
    let mut key_ids = Vec::new();
    for (p, own) in parties.iter().zip(own_numbers) {
        let mut mine: BTreeSet<String> = [p.scheduled_id.clone()].into();
        for (to, body) in [(shared, "shared"), (own, "own"), (own, "own again")] {
            let (status, sent) = app
                .post(
                    "/v1/messages",
                    &p.admin_key,
                    &json!({"to": to, "body": format!("{} {body}", p.name), "purpose": "otp"}),
                )
                .await;
            assert_eq!(status, 202, "{sent}");
            let id = sent["id"].as_str().unwrap().to_owned();
            if to == shared {
                to_shared.push(id.clone());
            }
            mine.insert(id);
        }
        messages.push(mine);
        let body = format!("inbound for {}", p.name);
        let (status, injected) = app
            .post(
                "/v1/simulator/inbound",
                &p.admin_key,
                &json!({"from": "+14155550144", "to": "+14155550199", "body": body}),
            )
            .await;
        assert_eq!(status, 202, "{injected}");
        inbound_bodies.push(body);
        key_ids.push(BTreeSet::from([
            p.admin_key_id.clone(),
            p.sender_key_id.clone(),
        ]));
    }

    for (i, p) in parties.iter().enumerate() {
        let (status, list) = app.get("/v1/messages?limit=100", &p.admin_key).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(ids(&list), messages[i], "{}: messages", p.name);

        let (_, inbound) = app.get("/v1/inbound?limit=100", &p.admin_key).await;
        let bodies: Vec<&str> = inbound["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, [inbound_bodies[i].as_str()], "{}: inbound", p.name);

        let (_, keys) = app.get("/v1/keys", &p.admin_key).await;
        assert_eq!(ids(&keys), key_ids[i], "{}: keys", p.name);

        // The recipient filter goes through a blind index shared by every app: only the
        // app scope keeps the others' rows out.
        let (_, filtered) = app
            .get(
                &format!("/v1/messages?to={}", shared.replace('+', "%2B")),
                &p.admin_key,
            )
            .await;
        let expected: BTreeSet<String> = [to_shared[i].clone()].into();
        assert_eq!(ids(&filtered), expected, "{}: ?to= shared", p.name);
        for (j, number) in own_numbers.iter().enumerate() {
            let (status, filtered) = app
                .get(
                    &format!("/v1/messages?to={}", number.replace('+', "%2B")),
                    &p.admin_key,
                )
                .await;
            assert_eq!(status, 200, "{filtered}");
            let n = filtered["data"].as_array().unwrap().len();
            assert_eq!(n, if i == j { 2 } else { 0 }, "{}: ?to={number}", p.name);
        }

        // Another app's cursor pages through the caller's own rows only.
        for (j, other) in parties.iter().enumerate().filter(|(j, _)| *j != i) {
            let (_, page) = app.get("/v1/messages?limit=1", &other.admin_key).await;
            let cursor = page["next_cursor"].as_str().expect("more than one page");
            let (status, paged) = app
                .get(
                    &format!("/v1/messages?limit=100&cursor={cursor}"),
                    &p.admin_key,
                )
                .await;
            assert_eq!(status, 200, "{paged}");
            assert!(
                ids(&paged).is_subset(&messages[i]),
                "{} with {}'s cursor: {paged}",
                p.name,
                parties[j].name
            );
        }
    }
    app.stop().await;
}

async fn malformed_ids_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    // Real ids of the caller's own app, of the wrong type for the other routes.
    let own_message = app.send("+14155550100", "mine").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let own_key = app.key_id_of(&key).await;
    let missing_msg = MessageId::new().into_string();
    let missing_key = KeyId::new().into_string();
    let garbage = |prefix: &str, real: &str| -> Vec<String> {
        vec![
            "garbage".to_owned(),
            prefix.to_owned(),
            format!("{prefix}{}", "a".repeat(65)),
            format!("{prefix}abc-def"),
            format!("{prefix}abc%20def"),
            format!("{prefix}1'%20OR%20'1'%3D'1"),
            format!("{prefix}%C3%A9t%C3%A9"),
            format!("{prefix}abc%00"),
            // Not valid UTF-8 once decoded: still just "not found".
            format!("{prefix}%FF%FE"),
            real.to_uppercase(),
            format!("%20{real}"),
            format!("{real}%20"),
            format!("{real}x").replace(prefix, &prefix[..prefix.len() - 1]),
            "*".to_owned(),
        ]
    };
    let mut cases: Vec<(&str, &str, String, &String)> = Vec::new();
    for (method, template) in MESSAGE_ROUTES {
        for id in garbage("msg_", &own_message)
            .into_iter()
            .chain([own_key.clone(), missing_key.clone()])
        {
            cases.push((method, template, id, &missing_msg));
        }
    }
    for (method, template) in KEY_ROUTES {
        for id in garbage("key_", &own_key)
            .into_iter()
            .chain([own_message.clone(), missing_msg.clone()])
        {
            cases.push((method, template, id, &missing_key));
        }
    }
    for (method, template, id, missing) in cases {
        let what = format!("{method} {}", template.replace("{}", &id));
        let missing = call(&app, method, &template.replace("{}", missing), &key).await;
        let got = call(&app, method, &template.replace("{}", &id), &key).await;
        assert_like_missing(&what, &got, &missing);
    }
    // The real ids themselves still work, and nothing above touched them.
    let (status, msg) = app.get(&format!("/v1/messages/{own_message}"), &key).await;
    assert_eq!(status, 200, "{msg}");
    assert_eq!(app.get("/v1/keys", &key).await.0, 200);
    app.stop().await;
}
