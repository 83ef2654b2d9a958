//! Routing across connections, through real HTTP against two Twilio stand-ins: an outage
//! opens the primary's circuit and traffic fails over to the backup (and comes back after
//! a probe), a `429` with `Retry-After` slows only that connection, `sender_mps` paces a
//! burst instead of letting the provider refuse it, and routes scoped by country.

use std::time::{Duration, Instant};

use portcullis_domain::route::RouteScope;
use portcullis_domain::{AppId, ConnectionId};
use portcullis_store::apps;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Options, TestApp};
use crate::twilio::{FakeTwilio, OUR_NUMBER, SID_A, SID_B};

both_backends!(
    an_outage_fails_over_and_the_circuit_recovers,
    retry_after_slows_only_that_connection,
    sender_pacing_queues_a_burst,
    routes_scoped_by_country,
);

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        Options {
            configure: |c| c.circuit_open_seconds = 2,
            ..Options::default()
        },
    )
    .await
}

async fn connection(
    app: &TestApp,
    sid: &str,
    token: &str,
    fake: &FakeTwilio,
    extra: Value,
) -> String {
    let mut config = json!({
        "account_sid": sid,
        "auth_token": token,
        "from_numbers": [OUR_NUMBER],
        "base_url": fake.base_url,
    });
    if let (Some(c), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    let store = &app.server.as_ref().unwrap().store;
    let conn = store
        .create_connection(None, "twilio", "twilio", &config)
        .await
        .unwrap();
    conn.id.to_string()
}

async fn route(app: &TestApp, scope: RouteScope, connections: &[&str]) {
    let db = &app.server.as_ref().unwrap().store.db;
    let ids: Vec<_> = connections
        .iter()
        .map(|c| ConnectionId::parse(c).unwrap())
        .collect();
    apps::set_route(db, &AppId::parse(&app.app_id).unwrap(), &scope, &ids)
        .await
        .unwrap();
}

async fn message(app: &TestApp, id: &str) -> Value {
    let (status, m) = app.get(&format!("/v1/messages/{id}"), &app.admin_key).await;
    assert_eq!(status, 200, "{m}");
    m
}

async fn primary_and_backup(app: &TestApp) -> (FakeTwilio, FakeTwilio, String, String) {
    let (token_a, token_b) = ("token-a-0123456789", "token-b-0123456789");
    let primary = FakeTwilio::start(&[(SID_A, token_a)], &[OUR_NUMBER]).await;
    let backup = FakeTwilio::start(&[(SID_B, token_b)], &[OUR_NUMBER]).await;
    let a = connection(app, SID_A, token_a, &primary, json!({})).await;
    let b = connection(app, SID_B, token_b, &backup, json!({})).await;
    (primary, backup, a, b)
}

async fn an_outage_fails_over_and_the_circuit_recovers(backend: Backend) {
    let app = spawn(backend).await;
    let (primary, backup, a, b) = primary_and_backup(&app).await;
    route(&app, RouteScope::default(), &[&a, &b]).await;

    // Healthy: the primary carries it.
    let m = app.send("+14155552001", "one").await;
    app.wait_for_status(
        m["id"].as_str().unwrap(),
        &app.admin_key,
        "sent",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(primary.submitted().len(), 1);

    // The primary answers 500 to everything: every message still goes, through the backup,
    // without spending an attempt, and its history names both connections.
    primary.outage(Some(500));
    let outage_started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..8 {
        let m = app
            .send(&format!("+1415555210{i}"), "during the outage")
            .await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(20))
            .await;
        let m = message(&app, id).await;
        let history = m["history"].as_array().unwrap();
        let sent = history.iter().find(|h| h["status"] == "sent").unwrap();
        assert_eq!(sent["connection_id"], b.as_str(), "{m}");
    }
    let failed_on_primary = primary.submitted().len() - 1;
    assert!(failed_on_primary >= 1, "the primary was tried");
    let first = message(&app, &ids[0]).await;
    let tried = first["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["connection_id"] == a.as_str())
        .unwrap_or_else(|| panic!("the failed attempt on the primary is in the history: {first}"));
    assert!(
        tried["detail"]
            .as_str()
            .unwrap()
            .contains("next connection"),
        "{tried}"
    );

    // Five failures in a row opened its circuit: new messages skip it entirely.
    let before = primary.submitted().len();
    for i in 0..4 {
        let m = app.send(&format!("+1415555220{i}"), "circuit open").await;
        app.wait_for_status(
            m["id"].as_str().unwrap(),
            &app.admin_key,
            "sent",
            Duration::from_secs(20),
        )
        .await;
    }
    if outage_started.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            primary.submitted().len(),
            before,
            "an open circuit sends nothing to the primary"
        );
    }

    // Readiness names the primary as not ok (open, or half-open once the open period is
    // over with no probe yet) and the gateway as degraded, still serving.
    let (code, ready) = app.get("/readyz", &app.admin_key).await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    let state = ready["checks"]["connections"][a.as_str()].as_str().unwrap();
    assert!(state.contains("circuit"), "{ready}");
    assert_eq!(ready["checks"]["connections"][b.as_str()], "ok", "{ready}");

    // The outage ends; after the open period one probe closes the circuit and the primary
    // carries traffic again.
    primary.outage(None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = app.send("+14155552300", "after the outage").await;
        let id = m["id"].as_str().unwrap().to_owned();
        app.wait_for_status(&id, &app.admin_key, "sent", Duration::from_secs(20))
            .await;
        let m = message(&app, &id).await;
        if m["connection_id"] == a.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the primary never came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(backup.submitted().len() >= 12);
    let (_, ready) = app.get("/readyz", &app.admin_key).await;
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["connections"][a.as_str()], "ok", "{ready}");
    app.stop().await;
}

async fn retry_after_slows_only_that_connection(backend: Backend) {
    let app = spawn(backend).await;
    let (primary, backup, a, b) = primary_and_backup(&app).await;

    // Alone on its route, a throttled connection makes the message wait for the
    // provider's Retry-After, then sends it there, without spending an attempt.
    route(&app, RouteScope::default(), &[&a]).await;
    primary.throttle(1, 2);
    let m = app.send("+14155553001", "slow down").await;
    let id = m["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, &app.admin_key, "sent", Duration::from_secs(20))
        .await;
    let got = primary.submitted();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].status, 429);
    let waited = got[1].at.duration_since(got[0].at);
    assert!(waited >= Duration::from_millis(1900), "waited {waited:?}");
    let m = message(&app, &id).await;
    assert_eq!(m["connection_id"], a.as_str());
    assert!(
        m["history"].as_array().unwrap().iter().any(|h| h["detail"]
            .as_str()
            .is_some_and(|d| d.contains("throttled"))),
        "{m}"
    );

    // With a backup, a throttled primary hands its traffic over while it rests, and the
    // backup is not slowed.
    route(&app, RouteScope::default(), &[&a, &b]).await;
    primary.throttle(1, 30);
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = app.send(&format!("+1415555310{i}"), "busy primary").await;
        ids.push(m["id"].as_str().unwrap().to_owned());
        // One at a time, so the first finds the 429 before the others are claimed.
        app.wait_for_status(
            ids.last().unwrap(),
            &app.admin_key,
            "sent",
            Duration::from_secs(20),
        )
        .await;
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        primary.submitted().len(),
        3,
        "one 429, then the primary rests"
    );
    assert_eq!(backup.submitted().len(), 5);
    app.stop().await;
}

async fn sender_pacing_queues_a_burst(backend: Backend) {
    let app = spawn(backend).await;
    let token = "token-p-0123456789";
    let fake = FakeTwilio::start(&[(SID_A, token)], &[OUR_NUMBER]).await;
    let conn = connection(&app, SID_A, token, &fake, json!({"sender_mps": 5})).await;
    route(&app, RouteScope::default(), &[&conn]).await;

    let mut ids = Vec::new();
    for i in 0..10 {
        let m = app.send(&format!("+1415555400{i}"), "burst").await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "sent", Duration::from_secs(30))
            .await;
    }
    let got = fake.submitted();
    assert_eq!(got.len(), 10, "each sent once, none refused");
    let mut times: Vec<Instant> = got.iter().map(|s| s.at).collect();
    times.sort();
    // 5 per second: ten messages span at least 9 intervals of 200 ms (allowing for
    // timer granularity), and no second holds more than the cap plus one.
    let span = times[9].duration_since(times[0]);
    assert!(span >= Duration::from_millis(1600), "span {span:?}");
    for w in times.windows(6) {
        assert!(
            w[5].duration_since(w[0]) >= Duration::from_millis(800),
            "six sends within {:?}",
            w[5].duration_since(w[0])
        );
    }
    app.stop().await;
}

async fn routes_scoped_by_country(backend: Backend) {
    let app = spawn(backend).await;
    let (us, canada, to_us, to_ca) = primary_and_backup(&app).await;
    {
        let db = &app.server.as_ref().unwrap().store.db;
        let id = AppId::parse(&app.app_id).unwrap();
        let mut current = apps::get_any_tenant(db, &id).await.unwrap();
        current.policy.allowed_countries = Some(vec!["US".into(), "CA".into()]);
        apps::set_policy(db, &id, &current.policy).await.unwrap();
    }
    route(&app, RouteScope::default(), &[&to_us]).await;
    route(
        &app,
        RouteScope::new(None, &["CA".to_owned()]).unwrap(),
        &[&to_ca, &to_us],
    )
    .await;

    let m = app.send("+16135550123", "to Ottawa").await;
    let ca_id = m["id"].as_str().unwrap().to_owned();
    let m = app.send("+14155554001", "to San Francisco").await;
    let us_id = m["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&ca_id, &app.admin_key, "sent", Duration::from_secs(20))
        .await;
    app.wait_for_status(&us_id, &app.admin_key, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(message(&app, &ca_id).await["connection_id"], to_ca.as_str());
    assert_eq!(message(&app, &us_id).await["connection_id"], to_us.as_str());
    assert_eq!(canada.submitted().len(), 1);
    assert_eq!(us.submitted().len(), 1);

    // The Canadian connection down: Canada fails over to the unscoped one.
    canada.outage(Some(503));
    let m = app.send("+16135550124", "to Ottawa again").await;
    let id = m["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, &app.admin_key, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(message(&app, &id).await["connection_id"], to_us.as_str());
    app.stop().await;
}
