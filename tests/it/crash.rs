//! The outbox survives `kill -9`: 10,000 webhook jobs, the service killed mid-flight and
//! restarted, every job delivered, and every duplicate explained by an `abandoned`
//! attempt (a request that was in flight at the kill). The same for a campaign's fan-out:
//! 3,000 recipients in jobs of 100, every recipient reached, and every recipient reached
//! twice belongs to a fan-out job whose lease the kill abandoned.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use qunfa::db::DatabaseUrl;
use qunfa::db::testing::TestDb;
use qunfa::delivery::{NewJob, Outbox};
use standardwebhooks::Webhook;

const JOBS: usize = 10_000;
const CONCURRENCY: usize = 32;
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[derive(Default)]
struct Received {
    by_id: HashMap<String, usize>,
    forged: usize,
}

/// A receiver that checks each signature the way a customer's endpoint would.
async fn start_receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let verifier = Arc::new(Webhook::new(SECRET).expect("valid secret"));
    let state = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            let verifier = verifier.clone();
            async move {
                // A little latency so that sends are really in flight when the kill lands.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let mut received = state.lock().expect("receiver lock");
                if verifier.verify(&body, &headers).is_err() {
                    received.forged += 1;
                    return axum::http::StatusCode::UNAUTHORIZED;
                }
                *received.by_id.entry(id).or_default() += 1;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn write_rules(dir: &Path, hook_url: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        format!(
            r#"
[delivery]
http_timeout = "2s"
lease = "3s"
concurrency = {CONCURRENCY}
poll_interval = "50ms"
[delivery.retry]
schedule = ["200ms"]
jitter = 0.0
max_age = "1h"

[[inbound]]
id = "shell"
platform = "shell"

[[operator]]
platform = "shell"
user = "local"
role = "admin"

[[channel]]
id = "hooks"
kind = "webhook"
url = "{hook_url}"
secret_env = "QUNFA_CRASH_TEST_SECRET"
"#
        ),
    )
    .unwrap();
}

fn serve(rules: &Path, database: &str, workdir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_qunfa"))
        .args(["serve", "--listen", "127.0.0.1:0", "--rules"])
        .arg(rules)
        .arg("--database")
        .arg(database)
        .current_dir(workdir)
        .env("QUNFA_CRASH_TEST_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qunfa serve")
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_loses_nothing_on_sqlite() {
    crash_and_recover(TestDb::sqlite().await.expect("SQLite test database")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_loses_nothing_on_postgres() {
    let Some(test_db) = TestDb::postgres().await.expect("PostgreSQL test database") else {
        eprintln!("QUNFA_TEST_POSTGRES_URL is not set: PostgreSQL half not run");
        return;
    };
    crash_and_recover(test_db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_fan_out_loses_no_recipient_on_sqlite() {
    fan_out_crash_and_recover(TestDb::sqlite().await.expect("SQLite test database")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_fan_out_loses_no_recipient_on_postgres() {
    let Some(test_db) = TestDb::postgres().await.expect("PostgreSQL test database") else {
        eprintln!("QUNFA_TEST_POSTGRES_URL is not set: PostgreSQL half not run");
        return;
    };
    fan_out_crash_and_recover(test_db).await;
}

const FAN_OUT_RECIPIENTS: usize = 3_000;
const FAN_OUT_JOB: usize = 100;

/// Fans out to the recipients, SIGKILLs a serve mid-run, restarts it and checks that every
/// recipient was reached and that each one reached twice was in an abandoned fan-out job.
/// The webhook channel sends one recipient per call, each with its own `webhook-id`
/// (`<fan-out key>/<address>`), which is how the receiver tells recipients apart. A job of
/// 100 calls is the worst case: a kill makes its whole list go again, which is why
/// campaigns size fan-out jobs to the channel's batch size (one call per job).
async fn fan_out_crash_and_recover(test_db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let (hook_url, received) = start_receiver().await;
    let rules = dir.path().join("bot-rules");
    write_rules(&rules, &hook_url);
    let database = match test_db.db.url() {
        DatabaseUrl::Sqlite(path) => path.display().to_string(),
        DatabaseUrl::Postgres(url) => url.clone(),
    };
    let db = test_db.db.clone();
    let outbox = Outbox::new(db.clone());
    let addresses: Vec<String> = (0..FAN_OUT_RECIPIENTS)
        .map(|i| format!("u{i:04}"))
        .collect();
    let recipients: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let now = qunfa::clock::Clock::now_ms(&qunfa::clock::SystemClock);
    let created = outbox
        .fan_out(
            "campaign-7",
            "hooks",
            r#"{"text":"双十一快乐"}"#,
            &recipients,
            FAN_OUT_JOB,
            now,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let jobs = FAN_OUT_RECIPIENTS / FAN_OUT_JOB;
    assert_eq!(created, jobs);

    let mut first = serve(&rules, &database, dir.path());
    let count = |received: &Arc<Mutex<Received>>| received.lock().unwrap().by_id.len();
    wait_until(
        "a third of the recipients were reached",
        Duration::from_secs(120),
        || count(&received) >= FAN_OUT_RECIPIENTS / 3,
    )
    .await;
    first.kill().expect("SIGKILL qunfa serve");
    first.wait().unwrap();
    let at_kill = count(&received);
    assert!(at_kill < FAN_OUT_RECIPIENTS, "the kill must land mid-run");

    let mut second = serve(&rules, &database, dir.path());
    wait_until(
        "every recipient was reached",
        Duration::from_secs(180),
        || count(&received) == FAN_OUT_RECIPIENTS,
    )
    .await;
    let summary = loop {
        let summary = outbox.summary(0).await.unwrap();
        if summary.sent as usize == jobs {
            break summary;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(second.wait().unwrap().success(), "SIGTERM exits 0");
    assert_eq!(
        (
            summary.queued,
            summary.retry_wait,
            summary.dead,
            summary.failed
        ),
        (0, 0, 0, 0),
        "no recipient was split off: every call delivered"
    );

    let (forged, duplicates): (usize, Vec<String>) = {
        let received = received.lock().unwrap();
        let duplicates = received
            .by_id
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect();
        (received.forged, duplicates)
    };
    assert_eq!(forged, 0);
    let abandoned: Vec<(String,)> = sqlx::query_as(
        "SELECT j.idempotency_key FROM delivery_attempts a JOIN delivery_jobs j ON j.id = a.job_id \
         WHERE a.outcome = 'abandoned'",
    )
    .fetch_all(db.reader())
    .await
    .unwrap();
    let abandoned: std::collections::HashSet<String> =
        abandoned.into_iter().map(|(k,)| k).collect();
    for key in &duplicates {
        let fan_out = key.split('/').next().unwrap_or_default();
        assert!(
            abandoned.contains(fan_out),
            "recipient {key} was reached twice without an abandoned fan-out job"
        );
    }
    eprintln!(
        "fan-out crash test: {FAN_OUT_RECIPIENTS} recipients in {jobs} jobs, {at_kill} reached before SIGKILL, {} reached twice, {} fan-out jobs abandoned",
        duplicates.len(),
        abandoned.len()
    );
    test_db.cleanup().await.expect("remove the test database");
}

/// Enqueues the jobs, SIGKILLs a serve mid-run, restarts it and checks the outcome.
async fn crash_and_recover(test_db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let (hook_url, received) = start_receiver().await;
    let rules = dir.path().join("bot-rules");
    write_rules(&rules, &hook_url);
    let database = match test_db.db.url() {
        DatabaseUrl::Sqlite(path) => path.display().to_string(),
        DatabaseUrl::Postgres(url) => url.clone(),
    };
    let db = test_db.db.clone();
    let outbox = Outbox::new(db.clone());
    let keys: Vec<String> = (0..JOBS).map(|i| format!("crash-{i:05}")).collect();
    let payload = r#"{"text":"双十一快乐"}"#;
    let jobs: Vec<NewJob<'_>> = keys
        .iter()
        .map(|key| NewJob {
            idempotency_key: key,
            channel: "hooks",
            recipient: "u",
            payload,
        })
        .collect();
    outbox
        .enqueue_all(
            &jobs,
            qunfa::clock::Clock::now_ms(&qunfa::clock::SystemClock),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();

    let mut first = serve(&rules, &database, dir.path());
    let count = |received: &Arc<Mutex<Received>>| received.lock().unwrap().by_id.len();
    wait_until(
        "a third of the jobs arrived",
        Duration::from_secs(120),
        || count(&received) >= JOBS / 3,
    )
    .await;
    first.kill().expect("SIGKILL qunfa serve");
    first.wait().unwrap();
    let at_kill = count(&received);
    assert!(
        at_kill < JOBS,
        "the kill must land mid-run ({at_kill} delivered)"
    );

    let mut second = serve(&rules, &database, dir.path());
    wait_until("every job arrived", Duration::from_secs(180), || {
        count(&received) == JOBS
    })
    .await;
    let summary = loop {
        let summary = outbox.summary(0).await.unwrap();
        if summary.sent as usize == JOBS {
            break summary;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(second.wait().unwrap().success(), "SIGTERM exits 0");

    let (forged, duplicates): (usize, Vec<String>) = {
        let received = received.lock().unwrap();
        let duplicates = received
            .by_id
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect();
        (received.forged, duplicates)
    };
    assert_eq!(forged, 0);
    assert_eq!((summary.dead, summary.failed), (0, 0));
    // Only sends whose outcome was not yet durable at the kill can repeat: the sends in
    // flight, the outcomes queued for the recorder (at most one record batch, 512) and the
    // batch being written (512).
    assert!(
        duplicates.len() <= CONCURRENCY + 2 * 512,
        "{} duplicates",
        duplicates.len()
    );
    let abandoned: Vec<(String,)> = sqlx::query_as(
        "SELECT j.idempotency_key FROM delivery_attempts a JOIN delivery_jobs j ON j.id = a.job_id \
         WHERE a.outcome = 'abandoned'",
    )
    .fetch_all(db.reader())
    .await
    .unwrap();
    let abandoned: std::collections::HashSet<String> =
        abandoned.into_iter().map(|(k,)| k).collect();
    for key in &duplicates {
        assert!(
            abandoned.contains(key),
            "duplicate {key} has no abandoned attempt"
        );
    }
    eprintln!(
        "crash test: {JOBS} jobs, {at_kill} delivered before SIGKILL, {} duplicates, {} abandoned attempts",
        duplicates.len(),
        abandoned.len()
    );
    test_db.cleanup().await.expect("remove the test database");
}
