//! Test harness: start the gateway on port 0 against a fresh database and talk to it.

use std::path::PathBuf;
use std::time::Duration;

use portcullis::config::Config;
use portcullis::server::Server;
use serde_json::Value;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn(Backend)` test once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("PORTCULLIS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A running gateway with a bootstrap tenant, app and admin key.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub server: Option<Server>,
    pub config: Config,
    pub tenant_id: String,
    pub app_id: String,
    pub admin_key: String,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

pub struct Options {
    pub simulator_delay_ms: u64,
    pub dev: bool,
    /// Last word on the configuration.
    pub configure: fn(&mut Config),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            simulator_delay_ms: 50,
            dev: true,
            configure: |_| {},
        }
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, opts: Options) -> TestApp {
        portcullis::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let name = format!(
                    "pcl_test_{}",
                    portcullis_crypto::random_token("", 12)
                        .expose()
                        .to_lowercase()
                );
                create_pg_database(&name).await;
                let admin = pg_admin_url();
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_owned())
                    .unwrap_or(admin);
                (Some(format!("{base}/{name}")), Some(name))
            }
        };
        let mut config = Config {
            dev: opts.dev,
            data_dir: dir.path().to_path_buf(),
            database_url,
            master_key: Some(
                portcullis_crypto::MasterKey::generate()
                    .to_base64()
                    .expose()
                    .clone(),
            ),
            simulator_delay_ms: opts.simulator_delay_ms,
            job_lease_seconds: 5,
            ..Config::default()
        };
        if !opts.dev {
            // Production refuses plain HTTP; the tests play a TLS-terminating proxy on
            // loopback (the client below says `X-Forwarded-Proto: https`).
            config.trusted_proxies = Some("127.0.0.1/32".into());
        }
        (opts.configure)(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Server::start(&config, listener, None)
            .await
            .expect("server starts");
        let boot = portcullis::bootstrap::bootstrap_dev(&server.store.db)
            .await
            .expect("bootstrap")
            .expect("fresh database bootstraps");
        TestApp {
            base: format!("http://{}", server.addr),
            client: reqwest::Client::builder()
                .no_proxy()
                .default_headers(
                    [(
                        reqwest::header::HeaderName::from_static("x-forwarded-proto"),
                        reqwest::header::HeaderValue::from_static("https"),
                    )]
                    .into_iter()
                    .collect(),
                )
                .build()
                .expect("client"),
            server: Some(server),
            config,
            tenant_id: boot.tenant_id,
            app_id: boot.app_id,
            admin_key: boot.key.expose().clone(),
            pg_database,
            _dir: dir,
        }
    }

    /// A client whose connections come from 127.0.0.`n`: a different address for the
    /// brute-force table (every 127/8 address is loopback on Linux).
    pub fn client_from(&self, n: u8) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from([127, 0, 0, n]))
            .build()
            .expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let res = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        status_json(res).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request");
        status_json(res).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (u16, Value) {
        let res = self
            .client
            .delete(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        status_json(res).await
    }

    /// Sends a message with the admin key and returns the 202 body.
    pub async fn send(&self, to: &str, body: &str) -> Value {
        let (status, json) = self
            .post(
                "/v1/messages",
                &self.admin_key,
                &serde_json::json!({"to": to, "body": body, "purpose": "transactional"}),
            )
            .await;
        assert_eq!(status, 202, "{json}");
        json
    }

    /// Polls a message until it reaches `status` (or panics after `timeout`).
    pub async fn wait_for_status(
        &self,
        id: &str,
        key: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (code, json) = self.get(&format!("/v1/messages/{id}"), key).await;
            assert_eq!(code, 200, "{json}");
            if json["status"] == status {
                return json;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "message {id} never reached {status}: {json}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Creates another tenant with an app and an admin key (directly in the store).
    pub async fn other_tenant(&self) -> (String, String, String) {
        let db = &self.server.as_ref().expect("running").store.db;
        let t = portcullis_store::tenants::create(db, "other")
            .await
            .expect("tenant");
        let a = portcullis_store::apps::create(db, &t.id, "other")
            .await
            .expect("app");
        portcullis_store::apps::set_senders(db, &a.id, &["+14155550199".to_owned()])
            .await
            .expect("senders");
        let (k, new) = portcullis_store::keys::create(
            db,
            &t.id,
            &a.id,
            portcullis_domain::Role::Admin,
            portcullis_crypto::KeyMode::Live,
            Default::default(),
        )
        .await
        .expect("key");
        let _ = k;
        (
            t.id.to_string(),
            a.id.to_string(),
            new.plaintext.expose().clone(),
        )
    }

    /// Creates another app in the bootstrap app's own tenant, with the same sender
    /// (`+14155550199`) and an admin key (directly in the store). Returns
    /// `(tenant_id, app_id, admin_key)`; the tenant is [`TestApp::tenant_id`].
    pub async fn other_app_same_tenant(&self) -> (String, String, String) {
        let db = &self.server.as_ref().expect("running").store.db;
        let tenant = portcullis_domain::TenantId::parse(&self.tenant_id).expect("tenant id");
        let a = portcullis_store::apps::create(db, &tenant, "sibling")
            .await
            .expect("app");
        portcullis_store::apps::set_senders(db, &a.id, &["+14155550199".to_owned()])
            .await
            .expect("senders");
        let (_, new) = portcullis_store::keys::create(
            db,
            &tenant,
            &a.id,
            portcullis_domain::Role::Admin,
            portcullis_crypto::KeyMode::Live,
            Default::default(),
        )
        .await
        .expect("key");
        (
            self.tenant_id.clone(),
            a.id.to_string(),
            new.plaintext.expose().clone(),
        )
    }

    /// The id (`key_…`) of `key`, looked up in its own app's key listing (`key` must be an
    /// admin key).
    pub async fn key_id_of(&self, key: &str) -> String {
        let (status, list) = self.get("/v1/keys", key).await;
        assert_eq!(status, 200, "{list}");
        list["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|k| k["prefix"] == key[..13])
            .and_then(|k| k["id"].as_str())
            .expect("the key is listed in its own app")
            .to_owned()
    }

    /// The database URL the server was started with.
    pub fn database_url(&self) -> String {
        self.config.database_url()
    }

    /// The SQLite database file (`data_dir/portcullis.db`); meaningless on PostgreSQL.
    pub fn sqlite_path(&self) -> PathBuf {
        self.config.data_dir.join("portcullis.db")
    }

    /// Creates a key of `role` on the bootstrap app through the API.
    pub async fn key_with_role(&self, role: &str) -> String {
        let (status, json) = self
            .post(
                "/v1/keys",
                &self.admin_key,
                &serde_json::json!({"role": role}),
            )
            .await;
        assert_eq!(status, 201, "{json}");
        json["key"].as_str().expect("key").to_owned()
    }

    /// Stops this app's own server but keeps its database (and key), so a test can start
    /// other instances against it. `stop()` still drops the database afterwards.
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean shutdown");
        }
    }

    /// Restarts the server on the same database with an edited configuration.
    pub async fn restart(&mut self, edit: impl FnOnce(&mut Config)) {
        self.stop_server().await;
        edit(&mut self.config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = Server::start(&self.config, listener, None)
            .await
            .expect("server restarts");
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Stops the server and drops the test's PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean shutdown");
        }
        if let Some(name) = self.pg_database.take() {
            drop_pg_database(&name).await;
        }
    }
}

/// Every row of every table of the `public` schema of the PostgreSQL database at `url`, one
/// `row_to_json` text per line (`bytea` columns appear as `\x…` hex), each prefixed by its
/// table name.
pub async fn dump_pg_database(url: &str) -> String {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect to the test database");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(&pool)
    .await
    .expect("list tables");
    assert!(!tables.is_empty(), "the test database has tables");
    let mut out = String::new();
    for (table,) in tables {
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM public.{quoted} t"
        )))
        .fetch_all(&pool)
        .await
        .expect("dump table");
        for (row,) in rows {
            out.push_str(&table);
            out.push(' ');
            out.push_str(&row);
            out.push('\n');
        }
    }
    pool.close().await;
    out
}

pub async fn status_json(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

async fn admin_pool() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg_admin_url())
        .await
        .expect("PostgreSQL reachable at PORTCULLIS_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres)")
}

async fn create_pg_database(name: &str) {
    let pool = admin_pool().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .expect("create database");
    pool.close().await;
}

async fn drop_pg_database(name: &str) {
    let pool = admin_pool().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
    pool.close().await;
}

/// A fresh random alphanumeric string, for canaries.
pub fn random_alnum(n: usize) -> String {
    portcullis_crypto::random_token("", n).expose().clone()
}

/// A random valid US number `+1415555XXXX` (XXXX in 2000..=9999: clear of the simulator's
/// `0000`/`0001` and of the `01XX` numbers other tests use), checked with
/// [`portcullis_domain::E164::parse`].
pub fn canary_number() -> String {
    loop {
        let digits: String = random_alnum(64)
            .chars()
            .filter(char::is_ascii_digit)
            .take(4)
            .collect();
        if digits.len() < 4 || digits.as_bytes()[0] < b'2' {
            continue;
        }
        let n = format!("+1415555{digits}");
        let parsed = portcullis_domain::E164::parse(&n).expect("canary number is valid");
        assert_eq!(parsed.as_str(), n, "canary number is canonical");
        return n;
    }
}

fn hex(bytes: &[u8], upper: bool) -> String {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    bytes
        .iter()
        .flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .map(char::from)
        .collect()
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The forms under which `needle` could sit in stored bytes or log text without being
/// encrypted: itself, hex (lower and upper case), UTF-16 (both byte orders), and base64
/// (standard and URL-safe) at each of the three alignments it can start at inside a
/// longer encoded value. A base64 substring depends on alignment, so for each alignment
/// only the characters encoding needle bytes alone (whole 3-byte groups inside the needle)
/// are searched for.
pub fn encoded_forms(needle: &[u8]) -> Vec<(String, Vec<u8>)> {
    assert!(
        needle.len() >= 8,
        "needles shorter than 8 bytes match by chance"
    );
    let mut forms = vec![
        ("plain".to_owned(), needle.to_vec()),
        ("hex".to_owned(), hex(needle, false).into_bytes()),
        ("HEX".to_owned(), hex(needle, true).into_bytes()),
        (
            "utf16le".to_owned(),
            needle.iter().flat_map(|&b| [b, 0]).collect(),
        ),
        (
            "utf16be".to_owned(),
            needle.iter().flat_map(|&b| [0, b]).collect(),
        ),
    ];
    for k in 0..3usize {
        let mut shifted = vec![b'#'; k];
        shifted.extend_from_slice(needle);
        let encoded = base64(&shifted);
        let first_group = k.div_ceil(3) * 3;
        let end_group = (shifted.len() / 3) * 3;
        let middle = &encoded[first_group / 3 * 4..end_group / 3 * 4];
        assert!(middle.len() >= 8, "stable base64 part too short");
        forms.push((format!("base64@{k}"), middle.as_bytes().to_vec()));
        let url: String = middle
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        forms.push((format!("base64url@{k}"), url.into_bytes()));
    }
    forms
}

/// The names of the forms of [`encoded_forms`] of `needle` found in `haystack`.
pub fn find_encoded(haystack: &[u8], needle: &[u8]) -> Vec<String> {
    encoded_forms(needle)
        .into_iter()
        .filter(|(_, form)| contains_bytes(haystack, form))
        .map(|(name, _)| name)
        .collect()
}

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// An in-memory log writer: everything a test binary's subscriber writes, for the log
/// scans to search.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// What a finished CLI run left behind.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The one JSON document a `--json` command prints.
    pub fn json(&self) -> Value {
        assert!(
            self.ok,
            "the command failed: {}\n{}",
            self.stderr, self.stdout
        );
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.stdout))
    }
}

/// Runs `portcullis ARGS` against `app`'s database (and data dir) with its master key, as
/// an operator would, and no other `PORTCULLIS_*` variable of the test's own environment.
pub async fn cli(app: &TestApp, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PORTCULLIS_") {
            cmd.env_remove(name);
        }
    }
    if let Some(key) = &app.config.master_key {
        cmd.env("PORTCULLIS_MASTER_KEY", key);
    }
    let out = cmd
        .arg("--data-dir")
        .arg(&app.config.data_dir)
        .arg("--database-url")
        .arg(app.database_url())
        .args(args)
        .env("PORTCULLIS_LOG", "warn")
        .current_dir(&app.config.data_dir)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run portcullis");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
