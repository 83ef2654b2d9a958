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
use crate::helpers::{Backend, TestApp, cli};
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
    a_long_message_is_delivered_when_every_part_is,
    a_message_cut_off_half_way_sends_only_the_missing_parts,
    long_messages_as_message_payload,
    unmatched_receipts_are_kept_and_shown,
    an_inbound_message_missing_a_part_is_recorded_after_an_hour,
    a_burst_through_a_wide_window_does_not_stall,
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

/// Sends a message and waits until it is `sent` (the connection is then bound).
async fn sent(app: &TestApp, to: &str, body: &str) -> Value {
    let m = app.send(to, body).await;
    app.wait_for_status(m["id"].as_str().unwrap(), &app.admin_key, "sent", WAIT)
        .await
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
    let last = last_entry(&delivered);
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
    // And every part of a long message, each receipt ahead of its part's response.
    let long = app.send("+14155552689", &"early ".repeat(60)).await;
    assert_eq!(long["segments"], 3, "{long}");
    ids.push(long["id"].as_str().unwrap().to_owned());
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "delivered", WAIT)
            .await;
    }
    let m = message(&app, &ids[5]).await;
    assert_eq!(part_entries(&m, "delivered").len(), 3, "{m}");
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
    // Each says so in its history (and in portcullis_smpp_possible_duplicates_total).
    for m in [&a, &b] {
        let m = message(&app, m["id"].as_str().unwrap()).await;
        let flagged = m["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| {
                h["status"] == "queued"
                    && h["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("possibly a duplicate"))
            })
            .count();
        assert_eq!(flagged, 1, "{m}");
    }
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
    let last = last_entry(&m);
    assert_eq!(last["detail"], "smpp receipt stat:UNDELIV err:011", "{m}");
    app.stop().await;
}

async fn an_inbound_stop_suppresses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({})).await;
    // Bound once the first message went.
    sent(&app, "+14155552694", "hello").await;
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

    // A concatenated message, its parts in random order: each part is acknowledged once
    // kept, and the message is recorded once, whole, when the last part arrives.
    let text = "Where is my parcel today? It was due on Monday and the tracking page says nothing.";
    let answer = peer
        .mo(Mo {
            from: "+14155552695",
            to: "+14155550199",
            text,
            parts: 3,
            shuffle: true,
            ..Mo::default()
        })
        .await;
    let seqs: Vec<Value> = answer["sequence_numbers"].as_array().unwrap().clone();
    assert_eq!(seqs.len(), 3);
    acknowledged(&peer, &seqs).await;
    let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
    let bodies: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, [text, "STOP"], "{list}");

    // A keyword cut across parts is still a keyword.
    let answer = peer
        .mo(Mo {
            from: "+14155552696",
            to: "+14155550199",
            text: "STOP",
            parts: 2,
            ..Mo::default()
        })
        .await;
    acknowledged(&peer, answer["sequence_numbers"].as_array().unwrap()).await;
    for to in ["+14155552694", "+14155552696"] {
        let (code, refused) = app
            .post(
                "/v1/messages",
                &app.admin_key,
                &json!({"to": to, "body": "promo", "purpose": "notification"}),
            )
            .await;
        assert_eq!(code, 422, "{refused}");
        assert_eq!(refused["code"], "recipient_suppressed");
    }
    app.stop().await;
}

/// Waits until the peer has ESME_ROK answers to the `deliver_sm`s numbered `seqs`.
async fn acknowledged(peer: &SmppPeer, seqs: &[Value]) -> Value {
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
    .await
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

/// The concatenation header of a submitted part: (reference, total, seq).
fn udh(submit: &Value) -> (u8, u8, u8) {
    let sm = unhex(submit["short_message"].as_str().unwrap());
    assert_eq!(&sm[..3], [0x05, 0x00, 0x03], "{submit}");
    (sm[3], sm[4], sm[5])
}

/// The history entries of `m` with the given status that name a part, as (part, provider
/// message id).
fn part_entries(m: &Value, status: &str) -> Vec<(u64, String)> {
    let mut parts: Vec<(u64, String)> = m["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["status"] == status && h["part"].is_u64())
        .map(|h| {
            (
                h["part"].as_u64().unwrap(),
                h["provider_message_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    parts.sort();
    parts
}

async fn a_long_message_is_delivered_when_every_part_is(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({})).await;
    let text: String = (0..400)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let accepted = app.send("+14155552701", &text).await;
    assert_eq!(accepted["segments"], 3, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let sent = app.wait_for_status(id, &app.admin_key, "sent", WAIT).await;

    // Three submit_sm with UDHI set, one reference, parts of 153 septets.
    let state = peer.state().await;
    let mut submits = submits_to(&state, "+14155552701");
    submits.sort_by_key(udh);
    assert_eq!(submits.len(), 3, "{state}");
    let reference = udh(&submits[0]).0;
    let mut rebuilt = Vec::new();
    for (i, submit) in submits.iter().enumerate() {
        assert_eq!(submit["esm_class"], 0x40);
        assert_eq!(udh(submit), (reference, 3, i as u8 + 1));
        rebuilt.extend_from_slice(&unhex(submit["short_message"].as_str().unwrap())[6..]);
    }
    assert_eq!(rebuilt, text.as_bytes());
    assert_eq!(
        unhex(submits[0]["short_message"].as_str().unwrap()).len(),
        6 + 153
    );

    // The history has a `sent` entry per part with the part's own id.
    let ids: Vec<(u64, String)> = submits
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, s["message_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(part_entries(&sent, "sent"), ids, "{sent}");

    // Receipts in random order: the message is delivered with the last of them, not
    // before.
    for n in [2usize, 0] {
        peer.receipt(Receipt {
            message_id: &ids[n].1,
            // One by TLVs, one by text only.
            tlvs: n == 2,
            ..Receipt::default()
        })
        .await;
    }
    let m = wait_for_part_entries(&app, id, "delivered", 2).await;
    assert_eq!(m["status"], "sent", "{m}");
    peer.delivered(&ids[1].1).await;
    let delivered = app
        .wait_for_status(id, &app.admin_key, "delivered", WAIT)
        .await;
    assert_eq!(part_entries(&delivered, "delivered"), ids, "{delivered}");
    let last = last_entry(&delivered);
    assert_eq!(last["detail"], "all 3 parts delivered", "{delivered}");

    // One part that is not delivered settles the message at once, whatever the others say
    // later (still recorded, per part).
    let accepted = app.send("+14155552702", &text).await;
    let id = accepted["id"].as_str().unwrap();
    app.wait_for_status(id, &app.admin_key, "sent", WAIT).await;
    let state = peer.state().await;
    let mut submits = submits_to(&state, "+14155552702");
    submits.sort_by_key(udh);
    let ids: Vec<&str> = submits
        .iter()
        .map(|s| s["message_id"].as_str().unwrap())
        .collect();
    peer.receipt(Receipt {
        message_id: ids[1],
        stat: "UNDELIV",
        err: "001",
        ..Receipt::default()
    })
    .await;
    let undelivered = app
        .wait_for_status(id, &app.admin_key, "undelivered", WAIT)
        .await;
    let last = last_entry(&undelivered);
    assert_eq!(last["detail"], "part 2 of 3 undelivered", "{undelivered}");
    for pid in [ids[0], ids[2]] {
        peer.delivered(pid).await;
    }
    let m = wait_for_part_entries(&app, id, "delivered", 2).await;
    assert_eq!(m["status"], "undelivered", "{m}");
    app.stop().await;
}

/// Waits until the history of message `id` has `n` part entries with `status`.
async fn wait_for_part_entries(app: &TestApp, id: &str, status: &str, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = message(app, id).await;
        if part_entries(&m, status).len() >= n {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_message_cut_off_half_way_sends_only_the_missing_parts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({})).await;
    // Bound before the long message goes, so its three parts are submitted together.
    sent(&app, "+14155552703", "warm up").await;
    // The first part to arrive is throttled; the other two are accepted.
    peer.script(0x58, 1).await;
    let text = "Ж".repeat(150);
    let accepted = app.send("+14155552704", &text).await;
    assert_eq!(accepted["segments"], 3, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let sent = app.wait_for_status(id, &app.admin_key, "sent", WAIT).await;

    // Four submits: three, then only the throttled part again, under the same reference.
    let state = peer.state().await;
    let submits = submits_to(&state, "+14155552704");
    assert_eq!(submits.len(), 4, "{state}");
    let throttled: Vec<&Value> = submits
        .iter()
        .filter(|s| s["command_status"] == 0x58)
        .collect();
    assert_eq!(throttled.len(), 1, "{state}");
    assert_eq!(udh(&submits[3]), udh(throttled[0]), "{state}");
    let mut accepted_parts: Vec<(u8, u8, u8)> = submits
        .iter()
        .filter(|s| s["command_status"] == 0)
        .map(udh)
        .collect();
    accepted_parts.sort();
    let reference = accepted_parts[0].0;
    assert_eq!(
        accepted_parts,
        [(reference, 3, 1), (reference, 3, 2), (reference, 3, 3)]
    );
    assert!(submits.iter().all(|s| s["data_coding"] == 8));
    let parts = part_entries(&sent, "sent");
    assert_eq!(parts.len(), 3, "{sent}");
    // The retry is in the history between the parts.
    assert!(
        sent["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["status"] == "queued"
                && h["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("ESME_RTHROTTLED"))),
        "{sent}"
    );
    for (_, pid) in &parts {
        peer.delivered(pid).await;
    }
    app.wait_for_status(id, &app.admin_key, "delivered", WAIT)
        .await;
    app.stop().await;
}

async fn long_messages_as_message_payload(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(&app, &peer, json!({"long_messages": "message_payload"})).await;
    let text = "p".repeat(300);
    let accepted = app.send("+14155552705", &text).await;
    let id = accepted["id"].as_str().unwrap();
    let sent = app.wait_for_status(id, &app.admin_key, "sent", WAIT).await;
    let state = peer.state().await;
    let submits = submits_to(&state, "+14155552705");
    assert_eq!(submits.len(), 1, "{state}");
    assert_eq!(submits[0]["short_message"], "");
    assert_eq!(
        unhex(submits[0]["message_payload"].as_str().unwrap()),
        text.as_bytes()
    );
    assert_eq!(sent["provider_message_id"], submits[0]["message_id"]);
    peer.delivered(submits[0]["message_id"].as_str().unwrap())
        .await;
    app.wait_for_status(id, &app.admin_key, "delivered", WAIT)
        .await;
    app.stop().await;
}

async fn unmatched_receipts_are_kept_and_shown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    let conn = connection(&app, &peer, json!({})).await;
    sent(&app, "+14155552706", "bind first").await;
    // A receipt for an id the gateway never had: acknowledged once kept, and shown.
    let seq = peer
        .receipt(Receipt {
            message_id: "DEADBEEF42",
            stat: "UNDELIV",
            ..Receipt::default()
        })
        .await;
    acknowledged(&peer, &[json!(seq)]).await;
    // One that names no message at all (`id:` empty, no TLVs): kept too, not dropped.
    let without_id = peer
        .receipt(Receipt {
            message_id: "",
            stat: "REJECTD",
            err: "088",
            tlvs: false,
            ..Receipt::default()
        })
        .await;
    acknowledged(&peer, &[json!(seq), json!(without_id)]).await;
    let shown = cli(&app, &["connections", "show", &conn, "--json"])
        .await
        .json();
    assert_eq!(shown["id"], conn.as_str());
    assert_eq!(shown["unmatched_receipts"]["count"], 2, "{shown}");
    let recent = shown["unmatched_receipts"]["recent"].as_array().unwrap();
    let named = recent
        .iter()
        .find(|k| k["provider_message_id"] == "DEADBEEF42")
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(named["status"], "undelivered");
    let nameless = recent
        .iter()
        .find(|k| k["provider_message_id"].is_null())
        .unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(nameless["status"], "failed", "{shown}");
    assert_eq!(
        nameless["detail"], "smpp receipt stat:REJECTD err:088 (no message id)",
        "{shown}"
    );
    assert!(!shown.to_string().contains(PASSWORD), "{shown}");

    // Configurations are checked for their type when written, naming the field only.
    let bad = app.config.data_dir.join("bad-smpp.json");
    std::fs::write(
        &bad,
        r#"{"host": "127.0.0.1", "system_id": "x", "password": "far-too-long-secret"}"#,
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        vec!["connections", "update", conn.as_str(), "--config-file", bad],
        vec![
            "connections",
            "create",
            "--type",
            "smpp",
            "--name",
            "n",
            "--config-file",
            bad,
        ],
    ] {
        let run = cli(&app, &args).await;
        assert!(!run.ok, "{}", run.stdout);
        assert!(run.stderr.contains("password"), "{}", run.stderr);
        assert!(!run.stderr.contains("far-too-long"), "{}", run.stderr);
    }
    let good = app.config.data_dir.join("good-smpp.json");
    std::fs::write(
        &good,
        json!({"host": "127.0.0.1", "port": peer.port(), "system_id": SYSTEM_ID, "password": PASSWORD, "window": 8})
            .to_string(),
    )
    .unwrap();
    let run = cli(
        &app,
        &[
            "connections",
            "update",
            conn.as_str(),
            "--config-file",
            good.to_str().unwrap(),
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let store = &app.server.as_ref().unwrap().store;
    let (_, config) = store
        .connection_with_config(&ConnectionId::parse(&conn).unwrap())
        .await
        .unwrap();
    assert_eq!(config["window"], 8);
    app.stop().await;
}

async fn an_inbound_message_missing_a_part_is_recorded_after_an_hour(backend: Backend) {
    use portcullis_domain::{Channel, E164, InboundId, TenantId};
    use portcullis_store::inbound::{InboundMessage, PartPlace};

    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    let conn = connection(&app, &peer, json!({})).await;
    // Parts 1 and 3 of 3 arrived two hours ago (kept as the recorder keeps them); part 2
    // never came. The recorder's sweep records what there is, the gap marked.
    let store = &app.server.as_ref().unwrap().store;
    let two_hours_ago = portcullis_store::now_ms() - 2 * 3600 * 1000;
    let mut tx = store.db.begin().await.unwrap();
    for (seq, text) in [(1u8, "Where is "), (3, "today?")] {
        let part = InboundMessage {
            id: InboundId::new(),
            tenant_id: TenantId::parse(&app.tenant_id).unwrap(),
            app_id: AppId::parse(&app.app_id).unwrap(),
            connection_id: ConnectionId::parse(&conn).unwrap(),
            provider_message_id: format!("part-{seq}"),
            from: E164::parse("+14155552707").unwrap(),
            to: "+14155550199".to_owned(),
            channel: Channel::Sms,
            body: text.to_owned(),
            received_at: two_hours_ago,
        };
        let place = PartPlace {
            reference: 7,
            total: 3,
            seq,
        };
        assert!(
            store
                .add_inbound_part(&mut tx, &part, place)
                .await
                .unwrap()
                .is_none()
        );
        // Kept once: the same part again is a duplicate.
        assert!(
            store
                .add_inbound_part(&mut tx, &part, place)
                .await
                .unwrap()
                .is_none()
        );
    }
    tx.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, list) = app.get("/v1/inbound", &app.admin_key).await;
        if let Some(m) = list["data"].as_array().unwrap().first() {
            assert_eq!(m["body"], "Where is [part 2 of 3 missing]today?", "{list}");
            assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

async fn a_burst_through_a_wide_window_does_not_stall(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let peer = SmppPeer::start(SYSTEM_ID, PASSWORD, IdFormat::Hex).await;
    connection(
        &app,
        &peer,
        json!({"window": 100, "response_timeout_seconds": 15}),
    )
    .await;
    sent(&app, "+14155552708", "bind first").await;
    // A full window of submits queued on one session at once while the SMSC answers
    // nothing: every one must still be written (rusmppc 0.4.0 wrote five per wake-up and
    // then slept with the rest queued; see third_party/rusmppc).
    // All due at the same moment, so one dispatch round submits them together.
    const N: usize = 100;
    peer.hold(N as u32).await;
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2)).to_string();
    let sends = (0..N).map(|i| {
        let (app, at) = (&app, &at);
        async move {
            let (status, m) = app
                .post(
                    "/v1/messages",
                    &app.admin_key,
                    &json!({"to": format!("+1415556{i:04}"), "body": "burst",
                            "purpose": "transactional", "send_at": at}),
                )
                .await;
            assert_eq!(status, 202, "{m}");
            m["id"].as_str().unwrap().to_owned()
        }
    });
    let ids = futures_util::future::join_all(sends).await;
    let held = |s: &Value| {
        s["submits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["held"] == true)
            .count()
    };
    peer.wait_for(|s| held(s) == N, Duration::from_secs(10))
        .await;
    peer.release().await;
    for id in &ids {
        app.wait_for_status(id, &app.admin_key, "sent", WAIT).await;
    }
    let state = peer.state().await;
    assert_eq!(
        state["submits"].as_array().unwrap().len(),
        N + 1,
        "no duplicates"
    );
    app.stop().await;
}

/// The last entry of a message's history.
fn last_entry(m: &Value) -> Value {
    m["history"].as_array().unwrap().last().unwrap().clone()
}
