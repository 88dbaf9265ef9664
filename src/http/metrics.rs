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
use crate::read_mostly::ReadMostly;
use crate::telemetry::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};

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
    durations: [ReadMostly<Box<str>, Histogram>; METHOD_LABELS.len()],
    /// By method, then route, then status.
    answered: [ReadMostly<Box<str>, Arc<ByStatus>>; METHOD_LABELS.len()],
}

type ByStatus = ReadMostly<u16, Counter>;

impl HttpMetrics {
    pub(super) fn record(
        &self,
        method: MethodLabel,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let (by_method, method) = (method.0, method.as_str());
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

/// The `method` label of a request: its position in [`METHOD_LABELS`], so the metrics are
/// found by index rather than by comparing label text.
#[derive(Debug, Clone, Copy)]
pub(super) struct MethodLabel(usize);

impl MethodLabel {
    pub(super) fn of(method: &Method) -> Self {
        Self(match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::PATCH => 4,
            Method::DELETE => 5,
            Method::OPTIONS => 6,
            _ => 7,
        })
    }

    fn as_str(self) -> &'static str {
        METHOD_LABELS[self.0]
    }
}
