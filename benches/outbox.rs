//! Outbox throughput, side by side with a bare reqwest loop in the same run.
//!
//! Enqueues N webhook-channel jobs (default 100,000; `QUNFA_BENCH_JOBS`), drains them
//! through the real dispatcher (durable claims, signed requests, batched outcome
//! records) to a local mock endpoint, then sends the same number of plain POSTs to the
//! same endpoint with a bare reqwest loop at the same concurrency, and prints both rates
//! and their ratio. SQLite by default; `QUNFA_TEST_POSTGRES_URL` adds a PostgreSQL run.
//!
//! Run with: `cargo bench --bench outbox`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use futures::StreamExt as _;
use qunfa::channels::{ChannelStatus, WebhookChannel};
use qunfa::clock::{SharedClock, SystemClock};
use qunfa::db::testing::TestDb;
use qunfa::delivery::{DeliverySetup, Dispatcher, NewJob, Outbox};
use qunfa::rules::DeliverySettings;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 32;

struct Setup {
    settings: DeliverySettings,
    channel: ChannelStatus,
}

impl DeliverySetup for Setup {
    fn settings(&self) -> DeliverySettings {
        self.settings.clone()
    }
    fn channel(&self, _id: &str) -> Option<ChannelStatus> {
        Some(self.channel.clone())
    }
}

async fn mock_provider() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/hook",
        post(move |_body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

async fn bare_loop(url: &str, n: usize) -> f64 {
    let client = reqwest::Client::new();
    let body = r#"{"type":"message.send","data":{"to":"u","message":{"text":"hi"}}}"#;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |_| {
            let client = client.clone();
            async move {
                let _ = client.post(url).body(body).send().await;
            }
        })
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

async fn outbox_run(label: &str, test_db: TestDb, url: &str, hits: &AtomicUsize, n: usize) -> f64 {
    let clock: SharedClock = Arc::new(SystemClock);
    let outbox = Outbox::new(test_db.db.clone());
    let keys: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let payload = r#"{"text":"hi"}"#;
    let enqueue_started = Instant::now();
    for chunk in keys.chunks(10_000) {
        let jobs: Vec<NewJob<'_>> = chunk
            .iter()
            .map(|key| NewJob {
                idempotency_key: key,
                channel: "hooks",
                recipient: "u",
                payload,
            })
            .collect();
        outbox
            .enqueue_all(&jobs, clock.now_ms(), Duration::from_secs(3600))
            .await
            .expect("enqueue");
    }
    let enqueue_rate = n as f64 / enqueue_started.elapsed().as_secs_f64();
    let secret = SecretString::from("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    let channel =
        WebhookChannel::new(url, &secret, Duration::from_secs(10), clock.clone()).expect("channel");
    let setup = Setup {
        settings: DeliverySettings {
            concurrency: CONCURRENCY,
            poll_interval: Duration::from_millis(20),
            ..DeliverySettings::default()
        },
        channel: ChannelStatus::Ready(Arc::new(channel)),
    };
    let dispatcher = Dispatcher::new(outbox.clone(), Arc::new(setup), clock, "bench".into());
    let hits_before = hits.load(Ordering::Relaxed);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(dispatcher.run(cancel.clone(), Duration::from_secs(10)));
    // Watch the mock's counter while sending (a COUNT over the outbox every few
    // milliseconds would compete for the CPU being measured), then wait until every
    // outcome is recorded: a job is only done once the database says so.
    while hits.load(Ordering::Relaxed) < hits_before + n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        let summary = outbox.summary(0).await.expect("summary");
        if summary.sent as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = run.await;
    println!("{label:<10} enqueue {enqueue_rate:>9.0} jobs/s   drain {rate:>9.0} jobs/s");
    test_db.cleanup().await.expect("cleanup");
    rate
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("QUNFA_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (url, hits) = mock_provider().await;
    println!("outbox benchmark: {n} jobs, concurrency {CONCURRENCY}, mock endpoint {url}");
    let bare = bare_loop(&url, n).await;
    println!("{:<10} send    {bare:>9.0} req/s", "bare loop");
    let sqlite = outbox_run(
        "sqlite",
        TestDb::sqlite().await.expect("sqlite"),
        &url,
        &hits,
        n,
    )
    .await;
    println!("ratio sqlite/bare: {:.2}", sqlite / bare);
    if let Some(pg) = TestDb::postgres().await.expect("postgres") {
        let postgres = outbox_run("postgres", pg, &url, &hits, n).await;
        println!("ratio postgres/bare: {:.2}", postgres / bare);
    }
    println!(
        "mock endpoint received {} requests",
        hits.load(Ordering::Relaxed)
    );
}
