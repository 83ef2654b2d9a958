//! The operator's guard commands, run as the real binary against the test's database while
//! the server runs: `apps update` policy flags, `tenants update`, and the kill switches
//! (`pause`, `resume`, `pauses list`), which a running server picks up from the database.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, cli};

both_backends!(
    apps_update_sets_the_guard_policy,
    apps_update_refuses_bad_values_and_changes_nothing,
    tenants_update_sets_zone_and_quotas,
    pause_and_resume_an_app,
    global_tenant_and_connection_pauses
);

async fn app_view(app: &TestApp) -> Value {
    let (status, view) = app.get("/v1/app", &app.admin_key).await;
    assert_eq!(status, 200, "{view}");
    view
}

/// Polls `GET /v1/app` until `done` holds (the server's board reloads every second).
async fn wait_for_app(app: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let view = app_view(app).await;
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn try_send(app: &TestApp) -> (u16, Value) {
    app.post(
        "/v1/messages",
        &app.admin_key,
        &json!({"to": "+14155550142", "body": "status update", "purpose": "transactional"}),
    )
    .await
}

/// Polls sending until it is refused with `sending_paused` (`paused`) or accepted again.
async fn wait_for_sending(app: &TestApp, paused: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = try_send(app).await;
        let now_paused = status == 422 && body["code"] == "sending_paused";
        if now_paused == paused {
            if !paused {
                assert_eq!(status, 202, "{body}");
            }
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sending never became {}: {status} {body}",
            if paused { "paused" } else { "possible" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn audit_actions(app: &TestApp, action: &str) -> Vec<Value> {
    let (status, trail) = app
        .get(&format!("/v1/audit-events?action={action}"), &app.admin_key)
        .await;
    assert_eq!(status, 200, "{trail}");
    trail["data"].as_array().expect("data").clone()
}

async fn apps_update_sets_the_guard_policy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.app_id.as_str();
    let out = cli(
        &app,
        &[
            "apps",
            "update",
            id,
            "--daily-quota",
            "500",
            "--monthly-quota",
            "10000",
            "--recipient-daily-cap",
            "5",
            "--burst-min-per-minute",
            "0",
            "--high-risk-per-hour",
            "7",
            "--hold-after-invalid-failures",
            "0",
            "--block-url-shorteners",
            "true",
            "--blocked-domains",
            "Evil.example.COM, b.org",
            "--opt-out-footer",
            "true",
            "--opt-out-footer-text",
            "Text STOP to quit",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(out["id"], id);
    assert_eq!(out["policy"]["daily_segment_quota"], 500);
    assert_eq!(
        out["policy"]["blocked_domains"],
        json!(["evil.example.com", "b.org"])
    );

    let view = app_view(&app).await;
    let p = &view["policy"];
    assert_eq!(p["daily_segment_quota"], 500, "{view}");
    assert_eq!(p["monthly_segment_quota"], 10000);
    assert_eq!(p["recipient_daily_cap"], 5);
    assert_eq!(p["burst_min_per_minute"], Value::Null, "0 turns bursts off");
    assert_eq!(p["burst_factor"], Value::Null);
    assert_eq!(p["high_risk_per_hour"], 7);
    assert_eq!(p["hold_after_invalid_failures"], Value::Null, "0 is off");
    assert_eq!(p["block_url_shorteners"], true);
    assert_eq!(p["blocked_domains"], json!(["evil.example.com", "b.org"]));
    assert_eq!(p["opt_out_footer"], "Text STOP to quit");

    // A second update changes only what it names; `none` lifts a limit.
    let out = cli(
        &app,
        &[
            "apps",
            "update",
            id,
            "--burst-min-per-minute",
            "100",
            "--burst-factor",
            "3",
            "--hold-after-invalid-failures",
            "9",
            "--daily-quota",
            "none",
            "--recipient-daily-cap",
            "none",
            "--blocked-domains",
            "none",
            "--opt-out-footer",
            "false",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let view = app_view(&app).await;
    let p = &view["policy"];
    assert_eq!(p["burst_min_per_minute"], 100, "{view}");
    assert_eq!(p["burst_factor"], 3);
    assert_eq!(p["hold_after_invalid_failures"], 9);
    assert_eq!(p["daily_segment_quota"], Value::Null);
    assert_eq!(p["recipient_daily_cap"], Value::Null);
    assert_eq!(p["blocked_domains"], json!([]));
    assert_eq!(p["opt_out_footer"], Value::Null);
    assert_eq!(p["monthly_segment_quota"], 10000, "left alone");
    assert_eq!(p["high_risk_per_hour"], 7, "left alone");
    assert_eq!(p["block_url_shorteners"], true, "left alone");

    // The footer text is kept while the footer is off.
    let out = cli(&app, &["apps", "update", id, "--opt-out-footer", "true"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        app_view(&app).await["policy"]["opt_out_footer"],
        "Text STOP to quit"
    );
    assert!(
        !audit_actions(&app, "app.updated").await.is_empty(),
        "the updates are in the audit trail"
    );
    app.stop().await;
}

async fn apps_update_refuses_bad_values_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.app_id.as_str();
    let before = app_view(&app).await;
    let long_footer = "x".repeat(101);
    let cases: &[(&[&str], &str)] = &[
        (&["--daily-quota", "lots"], "--daily-quota"),
        (&["--daily-quota=-5"], "--daily-quota"),
        (&["--daily-quota", "0"], "--daily-quota"),
        (&["--monthly-quota", "1.5"], "--monthly-quota"),
        (
            &["--recipient-daily-cap", "99999999999"],
            "--recipient-daily-cap",
        ),
        (&["--burst-min-per-minute=-1"], "--burst-min-per-minute"),
        (&["--burst-factor", "0"], "--burst-factor"),
        (&["--high-risk-per-hour", "many"], "--high-risk-per-hour"),
        (
            &["--hold-after-invalid-failures", "x"],
            "--hold-after-invalid-failures",
        ),
        (
            &["--block-url-shorteners", "yes please"],
            "--block-url-shorteners",
        ),
        (
            &["--blocked-domains", "https://evil.com/x"],
            "--blocked-domains",
        ),
        (&["--blocked-domains", "localhost"], "--blocked-domains"),
        (
            &["--blocked-domains", "ok.com,bad_domain.com"],
            "--blocked-domains",
        ),
        (&["--opt-out-footer", "maybe"], "--opt-out-footer"),
        (
            &["--opt-out-footer-text", &long_footer],
            "--opt-out-footer-text",
        ),
        (&["--opt-out-footer-text", " "], "--opt-out-footer-text"),
        (
            &["--opt-out-footer-text", "STOP\u{7}"],
            "--opt-out-footer-text",
        ),
        (&["--stop-queue"], "--paused"),
        (
            &["--paused", "false", "--paused-reason", "why"],
            "--paused-reason",
        ),
        (
            &["--paused", "true", "--paused-reason", " "],
            "--paused-reason",
        ),
        // A good value next to a bad one: neither is applied.
        (
            &["--daily-quota", "7", "--realtime-origins", "not an origin"],
            "--realtime-origins",
        ),
        (
            &["--monthly-quota", "7", "--quiet-hours", "sometimes"],
            "--quiet-hours",
        ),
    ];
    for (args, flag) in cases {
        let mut full = vec!["apps", "update", id];
        full.extend_from_slice(args);
        let out = cli(&app, &full).await;
        assert!(!out.ok, "{args:?} was accepted: {}", out.stdout);
        assert!(
            out.stderr.contains(flag),
            "the error for {args:?} names {flag}: {}",
            out.stderr
        );
    }
    let after = app_view(&app).await;
    assert_eq!(before, after, "nothing changed");
    let unknown = portcullis_domain::AppId::new();
    let out = cli(
        &app,
        &["apps", "update", unknown.as_str(), "--daily-quota", "5"],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("no app"), "{}", out.stderr);
    app.stop().await;
}

async fn tenants_update_sets_zone_and_quotas(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.tenant_id.as_str();
    let out = cli(
        &app,
        &[
            "tenants",
            "update",
            tenant,
            "--timezone",
            "Europe/Berlin",
            "--daily-quota",
            "100",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(out["id"], tenant);
    assert_eq!(
        out["settings"],
        json!({"timezone": "Europe/Berlin", "daily_segment_quota": 100, "monthly_segment_quota": null})
    );
    let view = wait_for_app(&app, "the tenant's quota", |v| {
        v["policy"]["tenant_daily_segment_quota"] == 100
    })
    .await;
    assert_eq!(view["policy"]["tenant_monthly_segment_quota"], Value::Null);

    // Refused: an unknown zone, a bad quota, an unknown tenant. Nothing changes.
    for (args, needle) in [
        (
            vec!["tenants", "update", tenant, "--timezone", "Mars/Olympus"],
            "--timezone",
        ),
        (
            vec![
                "tenants",
                "update",
                tenant,
                "--timezone",
                "utc",
                "--monthly-quota",
                "-",
            ],
            "--monthly-quota",
        ),
        (
            vec!["tenants", "update", "nonsense", "--daily-quota", "5"],
            "tenant id",
        ),
    ] {
        let out = cli(&app, &args).await;
        assert!(!out.ok, "{args:?} was accepted");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    let unknown = portcullis_domain::TenantId::new();
    let out = cli(
        &app,
        &["tenants", "update", unknown.as_str(), "--daily-quota", "5"],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("no tenant"), "{}", out.stderr);

    // `utc` restores the default zone; other settings stay.
    let out = cli(
        &app,
        &[
            "tenants",
            "update",
            tenant,
            "--timezone",
            "UTC",
            "--monthly-quota",
            "5000",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        out["settings"],
        json!({"timezone": null, "daily_segment_quota": 100, "monthly_segment_quota": 5000})
    );
    wait_for_app(&app, "the tenant's monthly quota", |v| {
        v["policy"]["tenant_monthly_segment_quota"] == 5000
            && v["policy"]["tenant_daily_segment_quota"] == 100
    })
    .await;
    let listed = cli(&app, &["tenants", "list", "--json"]).await.json();
    assert_eq!(listed["data"][0]["settings"]["monthly_segment_quota"], 5000);
    app.stop().await;
}

async fn pause_and_resume_an_app(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.app_id.as_str();
    assert_eq!(try_send(&app).await.0, 202);

    let out = cli(
        &app,
        &["pause", "--app", id, "--reason", "incident", "--json"],
    )
    .await
    .json();
    assert_eq!(
        out,
        json!({"scope": "app", "target": id, "stop_queue": false, "reason": "incident"})
    );
    wait_for_sending(&app, true).await;
    let view = app_view(&app).await;
    assert_eq!(
        view["pause"],
        json!({"scope": "app", "stop_queue": false, "reason": "incident"})
    );
    assert_eq!(view["policy"]["paused"], true);

    let list = cli(&app, &["pauses", "list", "--json"]).await.json();
    let data = list["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["scope"], "app");
    assert_eq!(data[0]["target"], id);
    assert_eq!(data[0]["reason"], "incident");
    assert_eq!(data[0]["source"], "cli");
    let paused_events = audit_actions(&app, "app.paused").await;
    assert_eq!(paused_events.len(), 1, "{paused_events:?}");
    assert_eq!(paused_events[0]["actor_type"], "cli");
    assert_eq!(paused_events[0]["target_id"], id);

    let out = cli(&app, &["resume", "--app", id, "--json"]).await.json();
    assert_eq!(out, json!({"scope": "app", "target": id, "resumed": true}));
    wait_for_sending(&app, false).await;
    assert_eq!(app_view(&app).await["pause"], Value::Null);
    let out = cli(&app, &["resume", "--app", id, "--json"]).await.json();
    assert_eq!(out["resumed"], false, "nothing left to lift");
    assert_eq!(audit_actions(&app, "app.resumed").await.len(), 1);

    // `apps update --paused true` with a reason and a stopped queue, then `false`.
    let out = cli(
        &app,
        &[
            "apps",
            "update",
            id,
            "--paused",
            "true",
            "--paused-reason",
            "leaked key",
            "--stop-queue",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let view = wait_for_app(&app, "the app's pause", |v| !v["pause"].is_null()).await;
    assert_eq!(
        view["pause"],
        json!({"scope": "app", "stop_queue": true, "reason": "leaked key"})
    );
    let out = cli(&app, &["apps", "update", id, "--paused", "true"]).await;
    assert!(out.ok, "{}", out.stderr);
    wait_for_app(&app, "the default reason", |v| {
        v["pause"]["reason"] == "paused by the operator" && v["pause"]["stop_queue"] == false
    })
    .await;
    let out = cli(&app, &["apps", "update", id, "--paused", "false"]).await;
    assert!(out.ok, "{}", out.stderr);
    wait_for_sending(&app, false).await;

    // Refused: no target, two targets, no reason, an unknown app.
    for args in [
        vec!["pause", "--reason", "x"],
        vec!["pause", "--app", id, "--global", "--reason", "x"],
        vec!["pause", "--app", id],
        vec!["pause", "--app", id, "--reason", ""],
        vec!["resume"],
    ] {
        let out = cli(&app, &args).await;
        assert!(!out.ok, "{args:?} was accepted");
    }
    let unknown = portcullis_domain::AppId::new();
    let out = cli(&app, &["pause", "--app", unknown.as_str(), "--reason", "x"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("no app"), "{}", out.stderr);
    let list = cli(&app, &["pauses", "list", "--json"]).await.json();
    assert_eq!(list, json!({"data": []}), "refused commands set nothing");
    app.stop().await;
}

async fn global_tenant_and_connection_pauses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = app.tenant_id.as_str();

    let out = cli(
        &app,
        &[
            "pause",
            "--global",
            "--reason",
            "maintenance",
            "--stop-queue",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        out,
        json!({"scope": "global", "target": "", "stop_queue": true, "reason": "maintenance"})
    );
    wait_for_sending(&app, true).await;
    assert_eq!(app_view(&app).await["pause"]["scope"], "global");

    let out = cli(
        &app,
        &["pause", "--tenant", tenant, "--reason", "billing", "--json"],
    )
    .await
    .json();
    assert_eq!(out["scope"], "tenant");
    assert_eq!(out["target"], tenant);

    let conn = app
        .server
        .as_ref()
        .expect("running")
        .store
        .create_connection(None, "simulator", "sim", &json!({}))
        .await
        .expect("connection");
    let conn_id = conn.id.as_str();
    let out = cli(
        &app,
        &[
            "pause",
            "--connection",
            conn_id,
            "--reason",
            "provider outage",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        out,
        json!({"scope": "connection", "target": conn_id, "stop_queue": false, "reason": "provider outage"})
    );
    let out = cli(
        &app,
        &[
            "pause",
            "--connection",
            conn_id,
            "--reason",
            "x",
            "--stop-queue",
        ],
    )
    .await;
    assert!(!out.ok, "--stop-queue means nothing for a connection");
    assert!(out.stderr.contains("--stop-queue"), "{}", out.stderr);

    let list = cli(&app, &["pauses", "list", "--json"]).await.json();
    let mut seen: Vec<(String, String, bool)> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| {
            (
                p["scope"].as_str().unwrap().to_owned(),
                p["target"].as_str().unwrap().to_owned(),
                p["stop_queue"].as_bool().unwrap(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("connection".to_owned(), conn_id.to_owned(), false),
            ("global".to_owned(), String::new(), true),
            ("tenant".to_owned(), tenant.to_owned(), false),
        ]
    );
    let text = cli(&app, &["pauses", "list"]).await;
    assert!(
        text.ok && text.stdout.contains("the gateway"),
        "{}",
        text.stdout
    );

    // Lifting the gateway's pause leaves the tenant's.
    let out = cli(&app, &["resume", "--global", "--json"]).await.json();
    assert_eq!(
        out,
        json!({"scope": "global", "target": "", "resumed": true})
    );
    wait_for_app(&app, "the tenant's pause", |v| {
        v["pause"]["scope"] == "tenant"
    })
    .await;
    let out = cli(&app, &["resume", "--tenant", tenant, "--json"])
        .await
        .json();
    assert_eq!(out["resumed"], true);
    wait_for_sending(&app, false).await;
    let out = cli(&app, &["resume", "--connection", conn_id, "--json"])
        .await
        .json();
    assert_eq!(
        out,
        json!({"scope": "connection", "target": conn_id, "resumed": true})
    );
    let list = cli(&app, &["pauses", "list", "--json"]).await.json();
    assert_eq!(list, json!({"data": []}));

    // Unknown targets are named.
    let unknown_tenant = portcullis_domain::TenantId::new();
    let out = cli(
        &app,
        &[
            "pause",
            "--tenant",
            unknown_tenant.as_str(),
            "--reason",
            "x",
        ],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("no tenant"), "{}", out.stderr);
    let unknown_conn = portcullis_domain::ConnectionId::new();
    let out = cli(&app, &["resume", "--connection", unknown_conn.as_str()]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("no connection"), "{}", out.stderr);
    app.stop().await;
}
