//! Encryption at rest: recipient numbers, bodies, metadata and inbound senders and bodies
//! never reach the database in a readable form. The tests read the raw database — the
//! SQLite file and its write-ahead log, or every row of every PostgreSQL table — while the
//! server runs and again after it stopped, and look for canary values in plain text, hex,
//! base64 and UTF-16.

use std::time::Duration;

use serde_json::json;

use crate::both_backends;
use crate::helpers::{
    Backend, TestApp, base64, canary_number, contains_bytes, dump_pg_database, encoded_forms,
    find_encoded, random_alnum, status_json,
};

both_backends!(personal_data_is_sealed_at_rest);

/// The same with the delivered message sent under an `Idempotency-Key`: the stored replay
/// response must not hold the body or metadata readably either. Ignored while the bug it
/// shows is open: `idempotency_keys.response` keeps the 202 body — message body and
/// metadata included — in plain text (see `portcullis-store/src/idempotency.rs`, `claim`).
mod idempotent_sends_are_sealed_at_rest {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::sealed_at_rest(Backend::Sqlite, true).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::sealed_at_rest(Backend::Postgres, true).await
    }
}

/// The values that must never be readable in the database.
struct Canaries {
    to: String,
    body: String,
    scheduled_body: String,
    metadata: String,
    inbound_from: String,
    inbound_body: String,
}

impl Canaries {
    fn new() -> Canaries {
        let to = canary_number();
        let inbound_from = loop {
            let n = canary_number();
            if n != to {
                break n;
            }
        };
        Canaries {
            to,
            body: format!("CanaryBody-{}", random_alnum(20)),
            scheduled_body: format!("CanaryLater-{}", random_alnum(20)),
            metadata: format!("CanaryMeta-{}", random_alnum(20)),
            inbound_from,
            inbound_body: format!("CanaryInbound-{}", random_alnum(20)),
        }
    }

    /// Every needle, with the phone numbers also without their `+`.
    fn needles(&self) -> Vec<(&'static str, String)> {
        vec![
            ("recipient", self.to.clone()),
            ("recipient digits", self.to[1..].to_owned()),
            ("body", self.body.clone()),
            ("scheduled body", self.scheduled_body.clone()),
            ("metadata value", self.metadata.clone()),
            ("inbound sender", self.inbound_from.clone()),
            ("inbound sender digits", self.inbound_from[1..].to_owned()),
            ("inbound body", self.inbound_body.clone()),
        ]
    }
}

/// What we know is stored readably, to prove that the scan sees the database at all.
struct Known {
    message_id: String,
    /// The SHA-256 of the admin key, stored as raw bytes (SQLite) or shown as hex
    /// (PostgreSQL `bytea` in JSON): proves the scan finds encoded forms too.
    admin_key_hash: [u8; 32],
}

/// The raw database: SQLite's main file, WAL and shared-memory index (whichever exist), or
/// a dump of every PostgreSQL row.
async fn raw_database(backend: Backend, url: &str, sqlite_path: &std::path::Path) -> Vec<u8> {
    match backend {
        Backend::Sqlite => {
            let mut bytes = std::fs::read(sqlite_path).expect("read the SQLite file");
            assert!(!bytes.is_empty(), "the SQLite file has content");
            for suffix in ["-wal", "-shm"] {
                let mut p = sqlite_path.as_os_str().to_owned();
                p.push(suffix);
                if let Ok(more) = std::fs::read(&p) {
                    bytes.extend_from_slice(&more);
                }
            }
            bytes
        }
        Backend::Postgres => dump_pg_database(url).await.into_bytes(),
    }
}

fn assert_nothing_readable(stage: &str, raw: &[u8], canaries: &Canaries, known: &Known) {
    // Positive controls: the same scan finds what is stored readably.
    assert!(
        contains_bytes(raw, known.message_id.as_bytes()),
        "{stage}: the scan does not see the message id {} — is it reading the database?",
        known.message_id
    );
    assert!(
        !find_encoded(raw, b"+14155550199").is_empty(),
        "{stage}: the scan does not see the app's sender +14155550199"
    );
    let hash_forms = find_encoded(raw, &known.admin_key_hash);
    assert!(
        !hash_forms.is_empty(),
        "{stage}: the scan does not see the admin key's hash in any encoding"
    );
    // The canaries appear in no form at all.
    let leaks: Vec<String> = canaries
        .needles()
        .into_iter()
        .filter_map(|(what, needle)| {
            let found = find_encoded(raw, needle.as_bytes());
            (!found.is_empty()).then(|| format!("the {what} {needle:?} as {found:?}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "{stage}: readable in the database: {}",
        leaks.join("; ")
    );
}

async fn personal_data_is_sealed_at_rest(backend: Backend) {
    sealed_at_rest(backend, false).await
}

async fn sealed_at_rest(backend: Backend, idempotency_key: bool) {
    let app = TestApp::spawn(backend).await;
    let c = Canaries::new();

    // A message that is delivered, with metadata…
    let mut req = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&app.admin_key)
        .json(
            &json!({"to": c.to, "body": c.body, "purpose": "transactional",
                      "metadata": {"ref": c.metadata}}),
        );
    if idempotency_key {
        req = req.header("Idempotency-Key", format!("order-{}", random_alnum(12)));
    }
    let (status, sent) = status_json(req.send().await.expect("request")).await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["id"].as_str().unwrap().to_owned();
    // …one that waits in the database as scheduled…
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let (status, scheduled) = app
        .post(
            "/v1/messages",
            &app.admin_key,
            &json!({"to": c.to, "body": c.scheduled_body, "purpose": "alert",
                    "send_at": at.to_string(), "metadata": {"ref": c.metadata}}),
        )
        .await;
    assert_eq!(status, 202, "{scheduled}");
    assert_eq!(scheduled["status"], "scheduled");
    // …and an inbound message.
    let (status, injected) = app
        .post(
            "/v1/simulator/inbound",
            &app.admin_key,
            &json!({"from": c.inbound_from, "to": "+14155550199", "body": c.inbound_body}),
        )
        .await;
    assert_eq!(status, 202, "{injected}");
    let done = app
        .wait_for_status(&id, &app.admin_key, "delivered", Duration::from_secs(10))
        .await;

    // Everything was stored and reads back: the canaries are in the database, sealed.
    assert_eq!(done["body"], c.body.as_str());
    assert_eq!(done["metadata"], json!({"ref": c.metadata}));
    let (_, filtered) = app
        .get(
            &format!("/v1/messages?to={}", c.to.replace('+', "%2B")),
            &app.admin_key,
        )
        .await;
    assert_eq!(
        filtered["data"].as_array().map(Vec::len),
        Some(2),
        "{filtered}"
    );
    let (_, inbound) = app.get("/v1/inbound", &app.admin_key).await;
    assert_eq!(
        inbound["data"][0]["body"],
        c.inbound_body.as_str(),
        "{inbound}"
    );

    let known = Known {
        message_id: id.clone(),
        admin_key_hash: portcullis_crypto::sha256(app.admin_key.as_bytes()),
    };

    // While running: the WAL may still hold the freshest pages.
    if backend == Backend::Sqlite {
        let mut wal = app.sqlite_path().into_os_string();
        wal.push("-wal");
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "a running SQLite database has a write-ahead log");
    }
    let raw = raw_database(backend, &app.database_url(), &app.sqlite_path()).await;
    assert_nothing_readable("while running", &raw, &c, &known);

    // After a clean stop: nothing is cached anywhere, the WAL has been folded in.
    let mut app = app;
    app.stop_server().await;
    let raw = raw_database(backend, &app.database_url(), &app.sqlite_path()).await;
    assert_nothing_readable("after stop", &raw, &c, &known);
    app.stop().await;
}

/// The scanner itself: every encoded form of a needle is found wherever it sits in a longer
/// value, and a haystack without it is clean. Without this the at-rest test could pass by
/// looking for the wrong thing.
#[test]
fn the_scan_finds_every_encoding() {
    let needle = format!("CanaryBody-{}", random_alnum(20));
    let n = needle.as_bytes();
    let junk = random_alnum(300).into_bytes();
    assert!(find_encoded(&junk, n).is_empty());
    let wrap = |middle: &[u8]| {
        let mut h = junk.clone();
        h.extend_from_slice(middle);
        h.extend_from_slice(&junk);
        h
    };
    // Each form, embedded in noise, is found under its own name.
    for (name, form) in encoded_forms(n) {
        let found = find_encoded(&wrap(&form), n);
        assert!(found.contains(&name), "{name} not found: {found:?}");
    }
    // Base64 of a longer value holding the needle at any offset is found, both alphabets.
    for prefix in ["", "x", "xy", "xyz", "{\"body\":\""] {
        let value = [prefix.as_bytes(), n, b"\",\"tail\":1}"].concat();
        let standard = base64(&value);
        assert!(
            !find_encoded(&wrap(standard.as_bytes()), n).is_empty(),
            "base64 with prefix {prefix:?}"
        );
        let url: String = standard
            .chars()
            .map(|ch| match ch {
                '+' => '-',
                '/' => '_',
                ch => ch,
            })
            .collect();
        assert!(
            !find_encoded(&wrap(url.as_bytes()), n).is_empty(),
            "base64url with prefix {prefix:?}"
        );
    }
    // Sanity of the encoder against RFC 4648 test vectors.
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    // Hex of a number's digits is found, upper and lower case.
    let digits = b"14155557321";
    assert!(find_encoded(&wrap(b"3134313535353537333231"), digits).contains(&"hex".to_owned()));
}
