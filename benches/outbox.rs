//! Outbox throughput, side by side with a bare reqwest loop in the same run.
//!
//! Sends N plain POSTs (default 100,000; `QUNFA_BENCH_JOBS`) to a local mock provider with
//! a bare reqwest loop, then enqueues N jobs and drains them through the real dispatcher
//! (durable claims, quotas and breakers consulted, batched outcome records) twice:
//! - one HTTP call per recipient: the signed webhook channel (target: 0.40 of the bare
//!   loop's messages/s);
//! - a batching channel: a campaign's fan-out (one job per 1000 recipients) through WeCom
//!   app messages, 1000 recipients per `message/send` call, the token fetched once (target:
//!   5× the bare loop's messages/s).
//!
//! SQLite by default; `QUNFA_TEST_POSTGRES_URL` adds PostgreSQL runs.
//!
//! Run with: `cargo bench --bench outbox`

/// The allocator `qunfa serve` runs with (see Cargo.toml), so the dispatcher is measured as
/// it runs in the service; the bare loop shares it.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use futures::StreamExt as _;
use qunfa::channels::{ChannelStatus, WebhookChannel, WecomAppChannel};
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
    batch_size: usize,
}

impl DeliverySetup for Setup {
    fn settings(&self) -> DeliverySettings {
        self.settings.clone()
    }
    fn channel(&self, _id: &str) -> Option<ChannelStatus> {
        Some(self.channel.clone())
    }
    fn batch_size(&self, _id: &str) -> usize {
        self.batch_size
    }
    fn largest_batch(&self) -> usize {
        self.batch_size
    }
}

/// The mock provider: `/hook` takes one message per request; `/cgi-bin/message/send`
/// answers like WeCom for every `|`-separated recipient. `messages` counts recipients.
async fn mock_provider() -> (String, Arc<AtomicUsize>) {
    let messages = Arc::new(AtomicUsize::new(0));
    let hook_counter = messages.clone();
    let wecom_counter = messages.clone();
    let app = Router::new()
        .route(
            "/hook",
            post(move |_body: axum::body::Bytes| {
                let counter = hook_counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/cgi-bin/gettoken",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok", "access_token": "bench-token", "expires_in": 7200}))
            }),
        )
        .route(
            "/cgi-bin/message/send",
            post(move |body: axum::body::Bytes| {
                let counter = wecom_counter.clone();
                async move {
                    let body: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let recipients = body["touser"].as_str().map_or(0, |to| to.split('|').count());
                    counter.fetch_add(recipients, Ordering::Relaxed);
                    axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": "m"}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, messages)
}

/// Which channel a run drains through.
#[derive(Clone, Copy)]
enum Mode {
    PerRecipient,
    Batching,
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

async fn outbox_run(
    label: &str,
    mode: Mode,
    test_db: TestDb,
    url: &str,
    hits: &AtomicUsize,
    n: usize,
) -> f64 {
    let clock: SharedClock = Arc::new(SystemClock);
    let outbox = Outbox::new(test_db.db.clone());
    let keys: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
    let payload = r#"{"text":"hi"}"#;
    let enqueue_started = Instant::now();
    // One job per recipient, or a campaign's fan-out: one job per provider call.
    let jobs = match mode {
        Mode::PerRecipient => {
            for chunk in keys.chunks(10_000) {
                let jobs: Vec<NewJob<'_>> = chunk
                    .iter()
                    .map(|key| NewJob {
                        idempotency_key: key,
                        channel: "bench",
                        recipient: key,
                        payload,
                    })
                    .collect();
                outbox
                    .enqueue_all(&jobs, clock.now_ms(), Duration::from_secs(3600))
                    .await
                    .expect("enqueue");
            }
            n
        }
        Mode::Batching => {
            let recipients: Vec<&str> = keys.iter().map(String::as_str).collect();
            outbox
                .fan_out(
                    "bench",
                    "bench",
                    payload,
                    &recipients,
                    1000,
                    clock.now_ms(),
                    Duration::from_secs(3600),
                )
                .await
                .expect("fan out")
        }
    };
    let enqueue_rate = n as f64 / enqueue_started.elapsed().as_secs_f64();
    let timeout = Duration::from_secs(10);
    let (channel, batch_size): (ChannelStatus, usize) = match mode {
        Mode::PerRecipient => {
            let secret = SecretString::from("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
            let hook = format!("{url}/hook");
            let channel =
                WebhookChannel::new(&hook, &secret, timeout, clock.clone()).expect("channel");
            (ChannelStatus::Ready(Arc::new(channel)), 1)
        }
        Mode::Batching => {
            let channel = WecomAppChannel::new(
                url,
                "ww-bench",
                1_000_002,
                SecretString::from("bench-secret"),
                None,
                timeout,
                clock.clone(),
            );
            (ChannelStatus::Ready(Arc::new(channel)), 1000)
        }
    };
    let setup = Setup {
        settings: DeliverySettings {
            concurrency: CONCURRENCY,
            poll_interval: Duration::from_millis(20),
            ..DeliverySettings::default()
        },
        channel,
        batch_size,
    };
    let dispatcher = Dispatcher::new(outbox.clone(), Arc::new(setup), clock, "bench".into());
    let hits_before = hits.load(Ordering::Relaxed);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    if std::env::var_os("QUNFA_BENCH_MARK").is_some() {
        eprintln!("DRAINING");
    }
    let run = tokio::spawn(dispatcher.run(cancel.clone(), Duration::from_secs(10)));
    // Watch the mock's counter while sending (a COUNT over the outbox every few
    // milliseconds would compete for the CPU being measured), then wait until every
    // outcome is recorded: a job is only done once the database says so.
    while hits.load(Ordering::Relaxed) < hits_before + n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    loop {
        let summary = outbox.summary(0).await.expect("summary");
        if summary.sent as usize >= jobs {
            break;
        }
        // Only the last outcomes are still being recorded by now: poll finely, since a
        // fan-out run is over in a fraction of a second.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = run.await;
    println!(
        "{label:<22} enqueue {enqueue_rate:>9.0} msg/s   drain {rate:>9.0} msg/s ({jobs} jobs)"
    );
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
    println!("outbox benchmark: {n} jobs, concurrency {CONCURRENCY}, mock provider {url}");
    let bare = bare_loop(&format!("{url}/hook"), n).await;
    println!("{:<22} send    {bare:>9.0} msg/s", "bare loop");
    let runs = [
        ("sqlite per-recipient", Mode::PerRecipient, false, 0.40),
        ("sqlite batch 1000", Mode::Batching, false, 5.0),
        ("postgres per-recipient", Mode::PerRecipient, true, 0.40),
        ("postgres batch 1000", Mode::Batching, true, 5.0),
    ];
    // `QUNFA_BENCH_ONLY=sqlite per-recipient` (a label prefix) runs one case, for profiling.
    let only = std::env::var("QUNFA_BENCH_ONLY").unwrap_or_default();
    for (label, mode, postgres, target) in runs {
        if !label.starts_with(only.as_str()) {
            continue;
        }
        let db = if postgres {
            match TestDb::postgres().await.expect("postgres") {
                Some(db) => db,
                None => continue,
            }
        } else {
            TestDb::sqlite().await.expect("sqlite")
        };
        let rate = outbox_run(label, mode, db, &url, &hits, n).await;
        println!(
            "ratio {label} / bare: {:.2} (target {target:.2})",
            rate / bare
        );
    }
    println!(
        "mock provider received {} messages",
        hits.load(Ordering::Relaxed)
    );
}
