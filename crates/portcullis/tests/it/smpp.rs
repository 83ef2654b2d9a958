//! SMPP connections end to end, against `tests/peers/smsc.js` (node-smpp, an SMSC we did
//! not write) on loopback: a message goes from `POST /v1/messages` to `submit_sm`, its
//! receipt comes back as `deliver_sm` and is answered only after it is recorded; command
//! statuses, binds that fail, a bind dropped mid-window, receipts that overtake their
//! response or use the other base for the id, and a restart between submit and receipt.

use std::time::Duration;

use portcullis_domain::{AppId, ConnectionId};
use portcullis_store::apps;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};
use crate::smpp_peer::{IdFormat, Mo, Receipt, SmppPeer, unhex};

both_backends!(
    send_then_a_receipt_delivers,
    bad_credentials_are_retried_without_sending,
    command_statuses_decide_retry_or_failure,
    a_receipt_before_its_response_is_not_lost,
    receipt_ids_in_the_other_base_are_matched,
    a_dropped_bind_loses_nothing,
    receipts_after_a_restart_are_matched,
    an_inbound_stop_suppresses,
    tps_paces_a_burst,
);

const SYSTEM_ID: &str = "portcullis";
const PASSWORD: &str = "s3cr3t";
const WAIT: Duration = Duration::from_secs(20);

/// Makes an SMPP connection to `peer` and routes the app through it.
async fn connection(app: &TestApp, peer: &SmppPeer, extra: Value) -> String {
    let mut config = json!({
        "host": "127.0.0.1",
        "port": peer.port(),
        "system_id": SYSTEM_ID,
        "password": PASSWORD,
        "window": 4,
        "response_timeout_seconds": 2,
    });
    if let (Some(c), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    let store = &app.server.as_ref().unwrap().store;
    let conn = store
        .create_connection(None, "smpp", "carrier", &config)
        .await
        .unwrap();
    apps::set_route(
        &store.db,
        &AppId::parse(&app.app_id).unwrap(),
        &Default::default(),
        &[ConnectionId::parse(conn.id.as_str()).unwrap()],
    )
    .await
    .unwrap();
    conn.id.to_string()
}

async fn message(app: &TestApp, id: &str) -> Value {
    let (status, m) = app.get(&format!("/v1/messages/{id}"), &app.admin_key).await;
    assert_eq!(status, 200, "{m}");
    m
}

/// The submits the peer received for `to` (without its `+`).
fn submits_to(state: &Value, to: &str) -> Vec<Value> {
    state["submits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["destination_addr"] == to.trim_start_matches('+'))
        .cloned()
        .collect()
}

async fn send_then_a_receipt_delivers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    let conn = connection(&app, &peer, json!({})).await;

    let accepted = app.send("+14155552671", "Your code is 481516").await;
    let id = accepted["id"].as_str().unwrap();
    let sent = app.wait_for_status(id, &app.admin_key, "sent", WAIT).await;
    let state = peer.state().await;
    let submit = &submits_to(&state, "+14155552671")[0];
    assert_eq!(sent["provider_message_id"], submit["message_id"], "{sent}");
    assert_eq!(sent["connection_id"], conn.as_str());
    // International TON/NPI, the SMSC default alphabet one septet per octet, and a final
    // receipt asked for.
    assert_eq!(submit["dest_addr_ton"], 1);
    assert_eq!(submit["dest_addr_npi"], 1);
    assert_eq!(submit["data_coding"], 0);
    assert_eq!(submit["registered_delivery"], 1);
    assert_eq!(
        unhex(submit["short_message"].as_str().unwrap()),
        b"Your code is 481516"
    );
    assert_eq!(state["binds"][0]["kind"], "bind_transceiver");

    let seq = peer
        .receipt(Receipt {
            message_id: submit["message_id"].as_str().unwrap(),
            ..Receipt::default()
        })
        .await;
    let delivered = app
        .wait_for_status(id, &app.admin_key, "delivered", WAIT)
        .await;
    let last = delivered["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["detail"], "smpp receipt stat:DELIVRD err:000",
        "{delivered}"
    );
    // Answered, with ESME_ROK, once recorded.
    let state = peer
        .wait_for(
            |s| {
                s["deliver_resps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["sequence_number"] == seq)
            },
            WAIT,
        )
        .await;
    let resp = state["deliver_resps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sequence_number"] == seq)
        .unwrap()
        .clone();
    assert_eq!(resp["command_status"], 0);

    let (_, ready) = app.get("/readyz", &app.admin_key).await;
    assert_eq!(
        ready["checks"]["connections"][conn.as_str()],
        "ok",
        "{ready}"
    );
    app.stop().await;
    // A clean stop unbinds.
    peer.wait_for(|s| s["unbinds"].as_u64() >= Some(1), WAIT)
        .await;
}

async fn bad_credentials_are_retried_without_sending(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, "other", IdFormat::Hex).await;
    let conn = connection(&app, &peer, json!({})).await;
    let accepted = app.send("+14155552672", "hello").await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    // Refused, and tried again (with backoff), without the gateway falling over.
    let state = peer
        .wait_for(|s| s["binds"].as_array().unwrap().len() >= 3, WAIT)
        .await;
    for bind in state["binds"].as_array().unwrap() {
        assert_eq!(bind["accepted"], false, "{state}");
        assert_eq!(bind["command_status"], 0x0E, "{state}");
    }
    assert!(submits_to(&state, "+14155552672").is_empty());
    let m = message(&app, &id).await;
    assert!(
        ["queued", "sending"].contains(&m["status"].as_str().unwrap()),
        "a message waits for a bind: {m}"
    );
    let (_, ready) = app.get("/readyz", &app.admin_key).await;
    assert_eq!(
        ready["checks"]["connections"][conn.as_str()],
        "down: not bound",
        "{ready}"
    );
    assert_eq!(ready["status"], "degraded");
    app.stop().await;
}

async fn command_statuses_decide_retry_or_failure(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({})).await;

    // ESME_RTHROTTLED twice: slowed down and tried again, then taken.
    peer.script(0x58, 2).await;
    let throttled = app.send("+14155552673", "throttled").await;
    let sent = app
        .wait_for_status(
            throttled["id"].as_str().unwrap(),
            &app.admin_key,
            "sent",
            WAIT,
        )
        .await;
    let state = peer.state().await;
    let tries = submits_to(&state, "+14155552673");
    assert_eq!(tries.len(), 3, "{state}");
    assert_eq!(tries[0]["command_status"], 0x58);
    assert_eq!(sent["provider_message_id"], tries[2]["message_id"]);

    // ESME_RINVDSTADR: failed at once, the status recorded.
    peer.script(0x0B, 1).await;
    let invalid = app.send("+14155552674", "nobody").await;
    let failed = app
        .wait_for_status(
            invalid["id"].as_str().unwrap(),
            &app.admin_key,
            "failed",
            WAIT,
        )
        .await;
    assert_eq!(failed["error_code"], "invalid_number", "{failed}");
    let history = failed["history"].to_string();
    assert!(history.contains("0x0000000B (ESME_RINVDSTADR)"), "{failed}");
    assert_eq!(submits_to(&peer.state().await, "+14155552674").len(), 1);
    app.stop().await;
}

async fn a_receipt_before_its_response_is_not_lost(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({})).await;
    peer.receipt_mode(true).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let m = app.send(&format!("+1415555268{n}"), "early receipt").await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "delivered", WAIT)
            .await;
    }
    app.stop().await;
}

async fn receipt_ids_in_the_other_base_are_matched(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(
        &app,
        &peer,
        json!({"receipt_ids": "hex_submit_decimal_receipt"}),
    )
    .await;
    let mut sent = Vec::new();
    for n in 0..12 {
        let m = app.send(&format!("+1415555269{}", n % 10), "quirk").await;
        let id = m["id"].as_str().unwrap().to_owned();
        let s = app.wait_for_status(&id, &app.admin_key, "sent", WAIT).await;
        sent.push((id, s["provider_message_id"].as_str().unwrap().to_owned()));
    }
    for (_, pid) in &sent {
        peer.receipt(Receipt {
            message_id: pid,
            tlvs: false,
            id_format: Some(IdFormat::Decimal),
            ..Receipt::default()
        })
        .await;
    }
    for (id, _) in &sent {
        app.wait_for_status(id, &app.admin_key, "delivered", WAIT)
            .await;
    }
    app.stop().await;
}

async fn a_dropped_bind_loses_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({})).await;
    // The peer takes two submits and never answers them, then the TCP connection drops.
    peer.hold(2).await;
    let a = app.send("+14155552691", "in flight 1").await;
    let b = app.send("+14155552692", "in flight 2").await;
    peer.wait_for(
        |s| {
            s["submits"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["held"] == true)
                .count()
                == 2
        },
        WAIT,
    )
    .await;
    assert_eq!(peer.drop_sessions().await, 1);
    // Both are submitted again on the new bind: exactly one duplicate each, nothing lost.
    for m in [&a, &b] {
        app.wait_for_status(m["id"].as_str().unwrap(), &app.admin_key, "sent", WAIT)
            .await;
    }
    let state = peer.state().await;
    assert_eq!(submits_to(&state, "+14155552691").len(), 2, "{state}");
    assert_eq!(submits_to(&state, "+14155552692").len(), 2, "{state}");
    assert!(state["binds"].as_array().unwrap().len() >= 2);
    app.stop().await;
}

async fn receipts_after_a_restart_are_matched(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Decimal).await;
    connection(&app, &peer, json!({})).await;
    let m = app.send("+14155552693", "before the restart").await;
    let id = m["id"].as_str().unwrap().to_owned();
    let sent = app.wait_for_status(&id, &app.admin_key, "sent", WAIT).await;
    let pid = sent["provider_message_id"].as_str().unwrap().to_owned();
    app.restart(|_| {}).await;
    // The restarted gateway binds again (the connection is loaded at start-up) and the
    // receipt finds the message submitted by the previous process.
    peer.wait_for(|s| s["binds"].as_array().unwrap().len() >= 2, WAIT)
        .await;
    peer.receipt(Receipt {
        message_id: &pid,
        stat: "UNDELIV",
        err: "011",
        ..Receipt::default()
    })
    .await;
    let m = app
        .wait_for_status(&id, &app.admin_key, "undelivered", WAIT)
        .await;
    let last = m["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["detail"], "smpp receipt stat:UNDELIV err:011", "{m}");
    app.stop().await;
}

async fn an_inbound_stop_suppresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({})).await;
    // Bound once the first message went.
    let first = app.send("+14155552694", "hello").await;
    app.wait_for_status(first["id"].as_str().unwrap(), &app.admin_key, "sent", WAIT)
        .await;
    let answer = peer
        .mo(Mo {
            from: "+14155552694",
            to: "+14155550199",
            text: "STOP",
            ..Mo::default()
        })
        .await;
    let seq = answer["sequence_numbers"][0].clone();
    peer.wait_for(
        |s| {
            s["deliver_resps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["sequence_number"] == seq && r["command_status"] == 0)
        },
        WAIT,
    )
    .await;
    let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
    assert_eq!(list["data"][0]["body"], "STOP", "{list}");

    // A concatenated message's parts are not reassembled yet, but none is lost: each is
    // recorded (and acknowledged) on its own, its text without the user data header.
    let answer = peer
        .mo(Mo {
            from: "+14155552695",
            to: "+14155550199",
            text: "Where is my parcel today?",
            parts: 2,
            ..Mo::default()
        })
        .await;
    let seqs: Vec<Value> = answer["sequence_numbers"].as_array().unwrap().clone();
    assert_eq!(seqs.len(), 2);
    peer.wait_for(
        |s| {
            seqs.iter().all(|q| {
                s["deliver_resps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| &r["sequence_number"] == q && r["command_status"] == 0)
            })
        },
        WAIT,
    )
    .await;
    let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
    let mut parts: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["from"]
                .as_str()
                .is_some_and(|f| f.starts_with("+1415555"))
        })
        .filter_map(|m| m["body"].as_str().map(str::to_owned))
        .filter(|b| b != "STOP")
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 2, "{list}");
    assert_eq!(
        parts.concat().len(),
        "Where is my parcel today?".len(),
        "{list}"
    );
    let (code, refused) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": "+14155552694", "body": "promo", "purpose": "notification"}),
        )
        .await;
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["code"], "recipient_suppressed");
    app.stop().await;
}

async fn tps_paces_a_burst(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({"tps": 5})).await;
    // 11 messages at 5/s: the last leaves about 2 s after the first, none refused.
    let mut ids = Vec::new();
    for n in 0..11 {
        let m = app.send(&format!("+14155553{n:03}"), "burst").await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "sent", WAIT).await;
    }
    let state = peer.state().await;
    let mut times: Vec<f64> = state["submits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let at: jiff::Timestamp = s["time"].as_str().unwrap().parse().unwrap();
            at.as_millisecond() as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(times.len(), 11, "{state}");
    // Any window of 1 s holds at most 5 submits, plus one for slot rounding.
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|u| **u - t < 1000.0).count();
        assert!(within <= 6, "{within} submits within 1 s: {times:?}");
    }
    assert!(times[10] - times[0] >= 1500.0, "{times:?}");
    app.stop().await;
}
