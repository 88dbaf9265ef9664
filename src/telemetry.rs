//! Process-wide observability: the tracing subscriber (logs to stderr) and the Prometheus
//! metrics recorder with the names and meanings of every metric qunfa exports.
//!
//! Both are global by nature, so both are idempotent: tests and `main` may call them as often
//! as they like.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Counter: HTTP requests answered, by `method`, `route` (the matched route template, never
/// the raw path) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "qunfa_http_requests_total";
/// Histogram: time to answer an HTTP request, by `method` and `route`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "qunfa_http_request_duration_seconds";
/// Counter: inbound platform callbacks, by `platform` and `verdict` (accepted, duplicate,
/// bad signature, ...).
pub const CALLBACKS_TOTAL: &str = "qunfa_callbacks_total";
/// Gauge: outbox jobs, by `state`.
pub const OUTBOX_JOBS: &str = "qunfa_outbox_jobs";
/// Counter: provider calls, by `channel` and `outcome`.
pub const DELIVERY_ATTEMPTS_TOTAL: &str = "qunfa_delivery_attempts_total";
/// Gauge: how long the oldest due job has been waiting.
pub const OUTBOX_LAG_SECONDS: &str = "qunfa_outbox_lag_seconds";
/// Counter: rule reloads, by `result` (ok, rejected).
pub const RULES_RELOADS_TOTAL: &str = "qunfa_rules_reloads_total";

const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Request latencies from a fast health check to the 30 s request deadline.
const HTTP_DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes
/// `/metrics`; without it, unscraped samples would pile up in memory.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Sends logs to stderr, filtered by `RUST_LOG` (default `info,sqlx=warn`): JSON lines when
/// stderr is not a terminal (a service manager or container collects them), a readable
/// format otherwise. A second call does nothing.
pub fn init_tracing() {
    let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(error) => {
            let invalid = std::env::var("RUST_LOG")
                .ok()
                .filter(|value| !value.trim().is_empty())
                .map(|_| error.to_string());
            (EnvFilter::new(DEFAULT_FILTER), invalid)
        }
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if std::io::stderr().is_terminal() {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    if installed.is_ok()
        && let Some(error) = bad_filter
    {
        tracing::warn!(
            "RUST_LOG is not a valid filter ({error}); logging with `{DEFAULT_FILTER}` instead"
        );
    }
}

/// Installs the Prometheus recorder as the global `metrics` recorder on the first call and
/// returns its handle; every later call returns the same handle.
///
/// If some other recorder was installed first (only possible in an embedding program), the
/// handle renders an empty page and a warning says why, rather than failing startup.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets_for_metric(
                Matcher::Full(HTTP_REQUEST_DURATION_SECONDS.to_string()),
                &HTTP_DURATION_BUCKETS,
            ) {
                Ok(builder) => builder,
                // Only an empty bucket list fails, and ours is a non-empty constant.
                Err(_) => PrometheusBuilder::new(),
            };
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(
                        "cannot install the Prometheus recorder ({error}); /metrics will be empty"
                    );
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe_metrics();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

fn spawn_upkeep(handle: PrometheusHandle) {
    // A plain thread, so the recorder stays healthy whichever runtime (or none) calls us.
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_string())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(
            "cannot start the metrics upkeep thread ({error}); histograms are folded only when /metrics is scraped"
        );
    }
}

fn describe_metrics() {
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        Unit::Count,
        "HTTP requests answered, by method, matched route and status"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request, by method and matched route"
    );
    metrics::describe_counter!(
        CALLBACKS_TOTAL,
        Unit::Count,
        "Inbound platform callbacks, by platform and verdict"
    );
    metrics::describe_gauge!(OUTBOX_JOBS, Unit::Count, "Outbox jobs, by state");
    metrics::describe_counter!(
        DELIVERY_ATTEMPTS_TOTAL,
        Unit::Count,
        "Provider calls, by channel and outcome"
    );
    metrics::describe_gauge!(
        OUTBOX_LAG_SECONDS,
        Unit::Seconds,
        "How long the oldest due outbox job has been waiting"
    );
    metrics::describe_counter!(RULES_RELOADS_TOTAL, Unit::Count, "Rule reloads, by result");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_metrics_returns_one_recorder_however_often_called() {
        let first = install_metrics();
        let second = install_metrics();
        metrics::counter!(RULES_RELOADS_TOTAL, "result" => "telemetry_test").increment(1);
        let first_text = first.render();
        assert!(
            first_text.contains("qunfa_rules_reloads_total{result=\"telemetry_test\"}"),
            "{first_text}"
        );
        assert!(second.render().contains("result=\"telemetry_test\""));
    }
}
