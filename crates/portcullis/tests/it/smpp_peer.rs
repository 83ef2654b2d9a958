//! A scriptable SMSC for the SMPP provider's tests: `tests/peers/smsc.js`, a server on the
//! npm `smpp` package (node-smpp, pinned), run as a real process on loopback, so the
//! gateway's ESME client is checked against an SMPP implementation we did not write.
//! The package is installed from the npm registry into the target dir on first use.
//!
//! The peer records every bind, submit_sm, deliver_sm_resp and enquire_link, and is steered
//! over a small JSON control API (see the header of `smsc.js`); [`SmppPeer`] wraps it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

const SMPP_PACKAGE: &str = "smpp@0.5.1";
const SMPP_VERSION: &str = "0.5.1";

/// How the peer writes the message ids it gives in submit_sm_resp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFormat {
    Hex,
    Decimal,
}

impl IdFormat {
    fn as_str(self) -> &'static str {
        match self {
            IdFormat::Hex => "hex",
            IdFormat::Decimal => "decimal",
        }
    }
}

/// One delivery receipt for [`SmppPeer::receipt`].
#[derive(Debug, Clone)]
pub struct Receipt<'a> {
    /// The id as submit_sm_resp gave it.
    pub message_id: &'a str,
    /// `DELIVRD`, `UNDELIV`, `REJECTD`, `EXPIRED`, ...
    pub stat: &'a str,
    pub err: &'a str,
    /// Also send the receipted_message_id and message_state TLVs.
    pub tlvs: bool,
    /// Re-render the id in this base in the receipt (a carrier quirk).
    pub id_format: Option<IdFormat>,
}

impl Default for Receipt<'_> {
    fn default() -> Self {
        Receipt {
            message_id: "",
            stat: "DELIVRD",
            err: "000",
            tlvs: true,
            id_format: None,
        }
    }
}

/// One mobile-originated message for [`SmppPeer::mo`].
#[derive(Debug, Clone, Default)]
pub struct Mo<'a> {
    /// `+15551234567` goes out as ton 1/npi 1 without the `+`.
    pub from: &'a str,
    pub to: &'a str,
    pub text: &'a str,
    /// Split into this many concatenated parts (UDH 05 00 03 ref total seq); 0 or 1: one.
    pub parts: u32,
    /// Send the parts in random order.
    pub shuffle: bool,
    /// 0 (GSM 03.38, unpacked), 3 (Latin-1) or 8 (UCS-2 big-endian).
    pub data_coding: u8,
}

/// A running `smsc.js`; killed when dropped (and it exits by itself when its stdin closes).
pub struct SmppPeer {
    smpp_port: u16,
    control: String,
    client: reqwest::Client,
    _child: Child,
    _stdin: ChildStdin,
    _stdout: BufReader<ChildStdout>,
}

/// The `node_modules` holding `smpp`, installed from npm into the target dir once.
fn node_modules_with_smpp() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("npm-smpp");
    let modules = prefix.join("node_modules");
    let installed = || {
        std::fs::read_to_string(modules.join("smpp/package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|p| p["version"] == SMPP_VERSION)
    };
    if !installed() {
        std::fs::create_dir_all(&prefix).expect("npm prefix dir");
        let out = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(SMPP_PACKAGE)
            .output()
            .expect("npm runs");
        assert!(
            out.status.success() && installed(),
            "installing {SMPP_PACKAGE} from npm failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    modules
}

impl SmppPeer {
    /// Starts a peer accepting binds with these credentials only.
    pub async fn start(system_id: &str, password: &str, id_format: IdFormat) -> SmppPeer {
        let modules = tokio::task::spawn_blocking(node_modules_with_smpp)
            .await
            .unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smsc.js");
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .args([
                "--port",
                "0",
                "--system-id",
                system_id,
                "--password",
                password,
            ])
            .args(["--id-format", id_format.as_str()])
            .env("NODE_PATH", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .expect("smsc.js prints its ports within 30 s")
            .expect("smsc.js stdout");
        let ports: Vec<u16> = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line from smsc.js: {line:?}"))
            .split_whitespace()
            .map(|p| p.parse().expect("port"))
            .collect();
        let [smpp_port, control_port] = ports[..] else {
            panic!("unexpected first line from smsc.js: {line:?}");
        };
        SmppPeer {
            smpp_port,
            control: format!("http://127.0.0.1:{control_port}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            _child: child,
            _stdin: stdin,
            _stdout: stdout,
        }
    }

    /// The SMPP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.smpp_port
    }

    /// Everything recorded so far: `binds`, `submits`, `deliver_resps`, `delivers`,
    /// `sessions`, `enquire_links`, `unbinds`, `sessions_open`, ...
    pub async fn state(&self) -> Value {
        let resp = self
            .client
            .get(format!("{}/state", self.control))
            .send()
            .await
            .expect("GET /state");
        assert!(resp.status().is_success());
        resp.json().await.unwrap()
    }

    /// Any control request; panics unless the peer answers 2xx.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "POST {path} -> {status}: {answer}");
        answer
    }

    /// The next `count` submit_sm are answered with `status` and no message id.
    pub async fn script(&self, status: u32, count: u32) {
        self.post("/script", json!({"status": status, "count": count}))
            .await;
    }

    /// The next `count` submit_sm get no answer until [`SmppPeer::release`].
    pub async fn hold(&self, count: u32) {
        self.post("/hold", json!({"count": count})).await;
    }

    /// Answers the held submit_sm whose session is still open; returns the ids given.
    pub async fn release(&self) -> Vec<String> {
        let answer = self.post("/release", json!({})).await;
        serde_json::from_value(answer["released"].clone()).unwrap()
    }

    /// Destroys every open TCP session at once (no unbind); returns how many.
    pub async fn drop_sessions(&self) -> u64 {
        self.post("/drop", json!({})).await["dropped"]
            .as_u64()
            .unwrap()
    }

    /// Sends a delivery receipt on the first session that can receive; returns its
    /// deliver_sm sequence number.
    pub async fn receipt(&self, receipt: Receipt<'_>) -> u32 {
        let mut body = json!({
            "message_id": receipt.message_id,
            "stat": receipt.stat,
            "err": receipt.err,
            "tlvs": receipt.tlvs,
        });
        if let Some(format) = receipt.id_format {
            body["id_format"] = json!(format.as_str());
        }
        let answer = self.post("/receipt", body).await;
        answer["sequence_number"].as_u64().unwrap() as u32
    }

    /// From now on, each accepted submit_sm's DELIVRD receipt goes out before its
    /// submit_sm_resp.
    /// A plain `DELIVRD` receipt (with TLVs) for `message_id`; its sequence number.
    pub async fn delivered(&self, message_id: &str) -> u32 {
        self.receipt(Receipt {
            message_id,
            ..Receipt::default()
        })
        .await
    }

    pub async fn receipt_mode(&self, before_response: bool) {
        self.post("/receipt_mode", json!({"before_response": before_response}))
            .await;
    }

    /// Sends a mobile-originated message; the answer has `sequence_numbers` (in sending
    /// order) and, for parts, `order` (the part numbers in sending order) and `ref`.
    pub async fn mo(&self, mo: Mo<'_>) -> Value {
        self.post(
            "/mo",
            json!({
                "from": mo.from,
                "to": mo.to,
                "text": mo.text,
                "parts": mo.parts,
                "shuffle": mo.shuffle,
                "data_coding": mo.data_coding,
            }),
        )
        .await
    }

    /// Polls `/state` until `done` holds; panics with the last state after `timeout`.
    pub async fn wait_for(&self, done: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.state().await;
            if done(&state) {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the SMPP peer never reached the expected state; last: {state:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The bytes of a hex string from `/state` (`short_message`, `message_payload`).
pub fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The peer itself, checked with hand-built PDUs (no gateway involved).

/// A bind_transceiver PDU (SMPP 3.4 §4.1.5).
fn bind_transceiver(sequence: u32, system_id: &str, password: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for field in [system_id, password, ""] {
        // system_id, password, system_type: C-octet strings
        body.extend_from_slice(field.as_bytes());
        body.push(0);
    }
    body.extend_from_slice(&[0x34, 0, 0, 0]); // interface_version, addr_ton, addr_npi, address_range ""
    let mut pdu = Vec::new();
    pdu.extend_from_slice(&(16 + body.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&0x0000_0009u32.to_be_bytes());
    pdu.extend_from_slice(&0u32.to_be_bytes());
    pdu.extend_from_slice(&sequence.to_be_bytes());
    pdu.extend_from_slice(&body);
    pdu
}

/// Binds on a fresh connection; returns (command_id, command_status, sequence_number).
async fn bind_once(port: u16, system_id: &str, password: &str) -> (u32, u32, u32) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(&bind_transceiver(1, system_id, password))
        .await
        .unwrap();
    let mut header = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut header))
        .await
        .expect("bind_transceiver_resp within 10 s")
        .unwrap();
    let word = |i: usize| u32::from_be_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
    let mut body = vec![0u8; word(0) as usize - 16];
    stream.read_exact(&mut body).await.unwrap();
    (word(1), word(2), word(3))
}

#[tokio::test]
async fn peer_answers_binds_and_records_them() {
    let peer = SmppPeer::start("portcullis", "s3cret", IdFormat::Hex).await;

    let (id, status, seq) = bind_once(peer.port(), "portcullis", "s3cret").await;
    assert_eq!(
        (id, status, seq),
        (0x8000_0009, 0, 1),
        "good credentials bind"
    );
    let (id, status, seq) = bind_once(peer.port(), "portcullis", "wrong").await;
    assert_eq!(
        (id, status, seq),
        (0x8000_0009, 0x0E, 1),
        "ESME_RINVPASWD for bad credentials"
    );

    let state = peer
        .wait_for(
            |s| s["binds"].as_array().is_some_and(|b| b.len() == 2),
            Duration::from_secs(10),
        )
        .await;
    let binds: Vec<(&str, &str, bool)> = state["binds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["system_id"].as_str().unwrap(),
                b["kind"].as_str().unwrap(),
                b["accepted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        binds,
        [
            ("portcullis", "bind_transceiver", true),
            ("portcullis", "bind_transceiver", false),
        ]
    );
}
