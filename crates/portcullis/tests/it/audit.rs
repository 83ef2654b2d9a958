//! The audit trail: privileged actions are recorded with actor, address and request id,
//! scoped to their app, and the table refuses to be rewritten.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, Options, TestApp};

async fn privileged_actions_are_recorded(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            configure: |c| c.webhook_allowed_cidrs = Some("127.0.0.1/32".into()),
            ..Options::default()
        },
    )
    .await;
    let admin_id = app.key_id_of(&app.admin_key).await;
    let (_, created) = app
        .post("/v1/keys", &app.admin_key, &json!({"role": "sender"}))
        .await;
    let key_id = created["id"].as_str().unwrap().to_owned();
    let plaintext = created["key"].as_str().unwrap().to_owned();
    let (status, rotated) = app
        .post(
            &format!("/v1/keys/{key_id}/rotate"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 201);
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    app.delete(&format!("/v1/keys/{new_id}"), &app.admin_key)
        .await;
    let (_, sup) = app
        .post(
            "/v1/suppressions",
            &app.admin_key,
            &json!({"phone": "+14155550777"}),
        )
        .await;
    app.delete(
        &format!("/v1/suppressions/{}", sup["id"].as_str().unwrap()),
        &app.admin_key,
    )
    .await;
    let (status, ep) = app
        .post(
            "/v1/webhooks",
            &app.admin_key,
            &json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    app.delete(
        &format!("/v1/webhooks/{}", ep["id"].as_str().unwrap()),
        &app.admin_key,
    )
    .await;

    let (status, trail) = app.get("/v1/audit-events?limit=100", &app.admin_key).await;
    assert_eq!(status, 200, "{trail}");
    let events = trail["data"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "webhook.deleted",
            "webhook.created",
            "suppression.deleted",
            "suppression.created",
            "key.revoked",
            "key.rotated",
            "key.created",
        ],
        "newest first"
    );
    for e in events {
        assert_eq!(e["actor_type"], "api_key");
        assert_eq!(e["actor_id"], admin_id.as_str());
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert!(e["request_id"].as_str().unwrap().starts_with("req_"));
        assert!(e["id"].as_str().unwrap().starts_with("aud_"));
    }
    let rotated_event = events
        .iter()
        .find(|e| e["action"] == "key.rotated")
        .unwrap();
    assert_eq!(rotated_event["target_id"], key_id.as_str());
    assert_eq!(rotated_event["detail"]["new_key_id"], new_id.as_str());
    let text = trail.to_string();
    assert!(!text.contains(&plaintext), "no key in the trail");
    assert!(!text.contains("whsec_"), "no secret in the trail");
    assert!(!text.contains("0777"), "no number in the trail");

    // Filters, roles, and other apps.
    let (_, only) = app
        .get("/v1/audit-events?action=key.created", &app.admin_key)
        .await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    let sender = app.key_with_role("sender").await;
    assert_eq!(app.get("/v1/audit-events", &sender).await.0, 403);
    let (_, _, other_key) = app.other_app_same_tenant().await;
    let (_, theirs) = app.get("/v1/audit-events", &other_key).await;
    assert!(
        theirs["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["target_id"] != key_id.as_str()),
        "{theirs}"
    );

    // Append-only, even for the application's own database connection.
    let db = app.server.as_ref().unwrap().store.db.clone();
    let update = portcullis_store::on_pool!(db.write(), |p| sqlx::query(
        "UPDATE audit_events SET action = 'nothing.happened'"
    )
    .execute(p)
    .await
    .map(|_| ()));
    assert!(update.is_err(), "UPDATE must be refused");
    let delete =
        portcullis_store::on_pool!(db.write(), |p| sqlx::query("DELETE FROM audit_events")
            .execute(p)
            .await
            .map(|_| ()));
    assert!(delete.is_err(), "DELETE must be refused");
    app.stop().await;
}

both_backends!(privileged_actions_are_recorded);
