//! The pieces `benches/inbound.rs` drives: `wrk` runs and their parsed summary, a real
//! `qunfa serve` child process, the bare axum reference handlers that verify one
//! HMAC-SHA256, and the signing helpers both sides share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use qunfa::db::testing::TestDb;
use qunfa::db::{DatabaseUrl, Db};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const WRK_THREADS: u32 = 2;
pub const WRK_CONNECTIONS: u32 = 32;

/// HMAC-SHA256 of the concatenated parts.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The Standard Webhooks `webhook-signature` entry for one request.
pub fn standard_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", BASE64.encode(digest))
}

/// DingTalk's `sign` header: it covers the timestamp and the secret, not the body.
pub fn dingtalk_sign(secret: &[u8], timestamp: &str) -> String {
    BASE64.encode(hmac_sha256(secret, &[timestamp.as_bytes(), b"\n", secret]))
}

/// What one `wrk` run reported.
#[derive(Debug, Clone)]
pub struct WrkSummary {
    pub requests: u64,
    pub per_second: f64,
    pub non_2xx: u64,
    pub latency_avg: String,
    pub socket_errors: Option<String>,
}

/// Reads wrk's plain-text summary; `None` when a figure the benchmark needs is missing.
pub fn parse_wrk(output: &str) -> Option<WrkSummary> {
    let mut requests = None;
    let mut per_second = None;
    let mut non_2xx = 0;
    let mut latency_avg = String::from("?");
    let mut socket_errors = None;
    for line in output.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            per_second = rate.trim().parse().ok();
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = count.trim().parse().ok()?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            socket_errors = Some(errors.trim().to_string());
        } else if let Some(stats) = line.strip_prefix("Latency") {
            latency_avg = stats.split_whitespace().next().unwrap_or("?").to_string();
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    Some(WrkSummary {
        requests: requests?,
        per_second: per_second?,
        non_2xx,
        latency_avg,
        socket_errors,
    })
}

/// Runs `wrk -t<threads> -c<connections> -d<seconds>s -s <script> <url> -- <args>`.
pub async fn wrk(
    url: &str,
    script: &Path,
    args: &[&str],
    seconds: u64,
    (threads, connections): (u32, u32),
) -> WrkSummary {
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .arg("--")
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| {
            panic!("cannot run `wrk` ({error}); install it with `apt-get install wrk`")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // wrk reports Lua errors on stderr and still prints a summary; any of them is fatal.
    if !output.status.success() || !stderr.trim().is_empty() {
        panic!("wrk failed ({}):\n{stdout}\n{stderr}", output.status);
    }
    parse_wrk(&stdout).unwrap_or_else(|| panic!("cannot read wrk's summary:\n{stdout}"))
}

/// The first fixed-input request the Lua signer produced, kept by `/capture`.
#[derive(Debug, Clone)]
pub struct Captured {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

#[derive(Clone)]
struct Reference {
    standard_key: Arc<Vec<u8>>,
    dingtalk_secret: Arc<Vec<u8>>,
    captured: Arc<Mutex<Option<Captured>>>,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

const REFERENCE_ANSWER: &str = r#"{"replies":[{"text":"ok"}]}"#;

/// Verifies one Standard Webhooks HMAC over id, timestamp and body, nothing else.
async fn reference_standard(
    State(reference): State<Reference>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let id = header(&headers, "webhook-id");
    let timestamp = header(&headers, "webhook-timestamp");
    let expected = hmac_sha256(
        &reference.standard_key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", &body],
    );
    let matched = header(&headers, "webhook-signature")
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .any(|claimed| bool::from(expected.as_slice().ct_eq(&claimed)));
    if matched {
        (StatusCode::OK, REFERENCE_ANSWER)
    } else {
        (StatusCode::UNAUTHORIZED, "bad signature")
    }
}

/// Verifies one DingTalk `sign` HMAC, nothing else.
async fn reference_dingtalk(
    State(reference): State<Reference>,
    headers: HeaderMap,
    _body: Bytes,
) -> (StatusCode, &'static str) {
    let expected = dingtalk_sign(&reference.dingtalk_secret, header(&headers, "timestamp"));
    if bool::from(
        expected
            .as_bytes()
            .ct_eq(header(&headers, "sign").as_bytes()),
    ) {
        (StatusCode::OK, REFERENCE_ANSWER)
    } else {
        (StatusCode::UNAUTHORIZED, "bad signature")
    }
}

async fn capture(
    State(reference): State<Reference>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut slot = reference.captured.lock().expect("capture lock");
    slot.get_or_insert_with(|| Captured {
        id: header(&headers, "webhook-id").to_string(),
        timestamp: header(&headers, "webhook-timestamp").to_string(),
        signature: header(&headers, "webhook-signature").to_string(),
        body: body.to_vec(),
    });
    StatusCode::OK
}

/// The reference server: `/standard`, `/dingtalk` and `/capture` on a local port.
pub struct ReferenceServer {
    pub root: String,
    captured: Arc<Mutex<Option<Captured>>>,
}

impl ReferenceServer {
    pub async fn start(standard_key: &[u8], dingtalk_secret: &[u8]) -> Self {
        let captured = Arc::new(Mutex::new(None));
        let state = Reference {
            standard_key: Arc::new(standard_key.to_vec()),
            dingtalk_secret: Arc::new(dingtalk_secret.to_vec()),
            captured: captured.clone(),
        };
        let app = Router::new()
            .route("/standard", post(reference_standard))
            .route("/dingtalk", post(reference_dingtalk))
            .route("/capture", post(capture))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the reference server");
        let root = format!("http://{}", listener.local_addr().expect("local address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { root, captured }
    }

    pub fn captured(&self) -> Option<Captured> {
        self.captured.lock().expect("capture lock").clone()
    }
}

/// Where a benchmarked `qunfa serve` keeps its data: a SQLite file in its own directory, or
/// a fresh PostgreSQL database (created for the run and dropped after it).
pub enum Database {
    Sqlite,
    Postgres(TestDb),
}

impl Database {
    pub fn name(&self) -> &'static str {
        match self {
            Database::Sqlite => "SQLite",
            Database::Postgres(_) => "PostgreSQL",
        }
    }

    /// A fresh PostgreSQL database when `QUNFA_TEST_POSTGRES_URL` is set.
    pub async fn postgres() -> Option<Self> {
        TestDb::postgres()
            .await
            .unwrap_or_else(|error| panic!("cannot create the PostgreSQL database: {error}"))
            .map(Database::Postgres)
    }
}

/// A `qunfa serve` child process on a fresh rules directory and database.
pub struct Qunfa {
    child: Child,
    dir: tempfile::TempDir,
    database: Database,
    /// The server root from the token file, e.g. `http://127.0.0.1:41234`.
    pub root: String,
}

impl Qunfa {
    pub fn start(rules: &str, env: &[(&str, &str)], database: Database) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir(&rules_dir).expect("rules dir");
        std::fs::write(rules_dir.join("bench.toml"), rules).expect("write rules");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log file");
        let url = match &database {
            Database::Sqlite => DatabaseUrl::Sqlite(dir.path().join("q.db")),
            Database::Postgres(test_db) => test_db.db.url().clone(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_qunfa"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--rules"])
            .arg(&rules_dir)
            .arg("--database")
            .arg(match &url {
                DatabaseUrl::Sqlite(path) => path.as_os_str().to_owned(),
                DatabaseUrl::Postgres(raw) => raw.into(),
            })
            // The token file of a PostgreSQL run goes to the working directory.
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start qunfa serve");
        let mut qunfa = Self {
            child,
            dir,
            database,
            root: String::new(),
        };
        qunfa.root = qunfa.wait_for_url(&url);
        qunfa
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn database_name(&self) -> &'static str {
        self.database.name()
    }

    fn wait_for_url(&mut self, database: &DatabaseUrl) -> String {
        let token_file = match database {
            DatabaseUrl::Sqlite(path) => PathBuf::from(format!("{}.shell-token", path.display())),
            DatabaseUrl::Postgres(_) => self.dir.path().join("qunfa.shell-token"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("qunfa serve exited with {status}:\n{}", self.log());
            }
            let url = std::fs::read(&token_file)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .and_then(|json| json["url"].as_str().map(str::to_string));
            if let Some(url) = url {
                return url.trim_end_matches('/').to_string();
            }
            assert!(
                Instant::now() < deadline,
                "qunfa serve wrote no token file within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as an operator would (SIGTERM), which drains the rows still queued
    /// for the database, then counts the rows of `command_audit`: one per command that
    /// really ran. Drops the PostgreSQL database afterwards.
    pub async fn stop_and_count_audited(mut self) -> i64 {
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(signalled.success(), "cannot signal qunfa serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for qunfa serve") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "qunfa serve did not stop within 60 s of SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "qunfa serve exited with {status} after SIGTERM:\n{}",
            self.log()
        );
        let database = std::mem::replace(&mut self.database, Database::Sqlite);
        let url = match &database {
            Database::Sqlite => DatabaseUrl::Sqlite(self.dir.path().join("q.db")),
            Database::Postgres(test_db) => test_db.db.url().clone(),
        };
        let db = Db::connect(&url)
            .await
            .expect("open the benchmark database");
        let audited: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM command_audit")
            .fetch_one(db.reader())
            .await
            .expect("count command_audit rows");
        db.close().await;
        if let Database::Postgres(test_db) = database {
            test_db
                .cleanup()
                .await
                .expect("drop the benchmark's PostgreSQL database");
        }
        audited
    }
}

impl Drop for Qunfa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
