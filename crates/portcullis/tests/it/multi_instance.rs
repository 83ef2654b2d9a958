//! Several gateway instances sharing one PostgreSQL database: every message is handed to
//! the provider exactly once (no kills here), whichever instance accepted it.

use std::collections::HashMap;
use std::time::Duration;

use portcullis::server::Server;
use serde_json::json;

use crate::helpers::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_never_send_twice() {
    let mut first = TestApp::spawn(Backend::Postgres).await;
    let log_a = first.config.data_dir.join("a.log");
    let log_b = first.config.data_dir.join("b.log");
    // Restart the first instance with a submission log, and start a second one beside it.
    let mut config = first.config.clone();
    config.simulator_log_file = Some(log_a.clone());
    let mut second_config = first.config.clone();
    second_config.simulator_log_file = Some(log_b.clone());
    first.stop_server().await;
    let a = Server::start(
        &config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
    .await
    .unwrap();
    let b = Server::start(
        &second_config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
    .await
    .unwrap();
    let bases = [format!("http://{}", a.addr), format!("http://{}", b.addr)];

    let mut ids = Vec::new();
    for i in 0..400 {
        let base = &bases[i % 2];
        let (status, body) = crate::helpers::status_json(
            first
                .client
                .post(format!("{base}/v1/messages"))
                .bearer_auth(&first.admin_key)
                .json(&json!({"to": format!("+1415555{:04}", 2000 + i), "body": format!("m{i}"), "purpose": "otp"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let last = ids.last().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log_a).unwrap_or_default()
            + &std::fs::read_to_string(&log_b).unwrap_or_default();
        if text.lines().count() >= ids.len() && text.contains(&last) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every message reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let any straggling duplicate show itself before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_text = std::fs::read_to_string(&log_a).unwrap_or_default();
    let b_text = std::fs::read_to_string(&log_b).unwrap_or_default();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in a_text.lines().chain(b_text.lines()) {
        *counts.entry(line).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(counts.get(id.as_str()), Some(&1), "{id} handed over once");
    }
    assert!(
        a_text.lines().count() > 0 && b_text.lines().count() > 0,
        "both instances did work"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    first.stop().await;
}
