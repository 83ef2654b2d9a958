//! Key management: create, list, rotate with grace, revoke.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    keys_are_shown_once_and_listed_without_secret,
    rotation_and_revocation
);

async fn keys_are_shown_once_and_listed_without_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, created) = app
        .post("/v1/keys", &app.admin_key, &json!({"role": "reader"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("pcl_live_") && key.len() == 41);
    assert_eq!(created["prefix"], &key[..13]);
    let (status, list) = app.get("/v1/keys", &app.admin_key).await;
    assert_eq!(status, 200);
    let text = list.to_string();
    assert!(!text.contains(key), "a listing never contains a key");
    assert!(!text.contains(&app.admin_key));
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (status, bad) = app
        .post("/v1/keys", &app.admin_key, &json!({"role": "root"}))
        .await;
    assert_eq!((status, bad["code"].as_str()), (422, Some("invalid_role")));
    app.stop().await;
}

async fn rotation_and_revocation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, a) = app
        .post("/v1/keys", &app.admin_key, &json!({"role": "sender"}))
        .await;
    let a_id = a["id"].as_str().unwrap();
    let a_key = a["key"].as_str().unwrap();
    // Rotation without grace: the old key stops at once.
    let (status, b) = app
        .post(
            &format!("/v1/keys/{a_id}/rotate"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    assert_ne!(b["id"], a["id"]);
    let b_id = b["id"].as_str().unwrap();
    let b_key = b["key"].as_str().unwrap();
    assert_eq!(app.get("/v1/messages", a_key).await.0, 401);
    assert_eq!(app.get("/v1/messages", b_key).await.0, 200);
    // Rotation with grace: both work …
    let (status, c) = app
        .post(
            &format!("/v1/keys/{b_id}/rotate"),
            &app.admin_key,
            &json!({"grace_seconds": 3600}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let c_id = c["id"].as_str().unwrap();
    let c_key = c["key"].as_str().unwrap();
    assert_eq!(app.get("/v1/messages", b_key).await.0, 200);
    assert_eq!(app.get("/v1/messages", c_key).await.0, 200);
    let (_, list) = app.get("/v1/keys", &app.admin_key).await;
    let b_listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == b["id"])
        .unwrap()
        .clone();
    assert_eq!(b_listed["status"], "rotated");
    assert!(b_listed["expires_at"].is_string());
    // … until the new key is rotated again, which ends the old grace.
    let (status, d) = app
        .post(
            &format!("/v1/keys/{c_id}/rotate"),
            &app.admin_key,
            &json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(
        app.get("/v1/messages", b_key).await.0,
        401,
        "grace of the key replaced earlier ended"
    );
    assert_eq!(
        app.get("/v1/messages", c_key).await.0,
        200,
        "the key just rotated is inside its own grace"
    );
    let (status, bad) = app
        .post(
            &format!("/v1/keys/{c_id}/rotate"),
            &app.admin_key,
            &json!({"grace_seconds": 86401}),
        )
        .await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (422, Some("invalid_grace_seconds"))
    );
    // Revocation is effective on the next request.
    let d_id = d["id"].as_str().unwrap();
    let d_key = d["key"].as_str().unwrap();
    assert_eq!(app.get("/v1/messages", d_key).await.0, 200);
    let (status, revoked) = app
        .delete(&format!("/v1/keys/{d_id}"), &app.admin_key)
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    let (status, body) = app.get("/v1/messages", d_key).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "Invalid API key");
    app.stop().await;
}
