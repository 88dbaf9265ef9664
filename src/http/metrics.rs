//! `/metrics` in the Prometheus text format, and the middleware that counts and times every
//! HTTP request. Metric names and meanings live in [`crate::telemetry`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Counter, Histogram};

use crate::app::AppState;
use crate::telemetry::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL, MetricHandles};

/// The content type Prometheus expects for the text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
    );
    response
}

/// Counts and times each request by method, route template and status. Labels use the
/// matched route (`/api/v1/outbox/jobs/{id}`), never the raw path, and fold unusual
/// methods together: a label value per distinct URL or verb would grow without bound.
///
/// The handles are kept after their first use: looking a metric up in the registry builds
/// and hashes its whole label set, and the route and status labels were new strings on every
/// request. The set is as bounded as the labels: routes x methods x statuses.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// By method (the position of its label in [`METHOD_LABELS`]), then route.
    durations: [MetricHandles<Box<str>, Histogram>; METHOD_LABELS.len()],
    /// By method, then route, then status.
    answered: [MetricHandles<Box<str>, Arc<ByStatus>>; METHOD_LABELS.len()],
}

type ByStatus = MetricHandles<u16, Counter>;

impl HttpMetrics {
    pub fn record(&self, method: &'static str, route: &str, status: StatusCode, elapsed: Duration) {
        let by_method = METHOD_LABELS
            .iter()
            .position(|label| *label == method)
            .unwrap_or(METHOD_LABELS.len() - 1);
        self.durations[by_method].with(
            route,
            || route.into(),
            || metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route.to_string()),
            |duration| duration.record(elapsed.as_secs_f64()),
        );
        self.answered[by_method].with(
            route,
            || route.into(),
            Default::default,
            |statuses| {
                statuses.with(
                    &status.as_u16(),
                    || status.as_u16(),
                    || {
                        metrics::counter!(
                            HTTP_REQUESTS_TOTAL,
                            "method" => method,
                            "route" => route.to_string(),
                            "status" => status.as_str().to_string(),
                        )
                    },
                    |counter| counter.increment(1),
                );
            },
        );
    }
}

/// The `method` label values; anything else is counted as the last, `other`.
const METHOD_LABELS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

pub(super) fn method_label(method: &Method) -> &'static str {
    let index = match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    };
    METHOD_LABELS[index]
}
