//! `/metrics` in the Prometheus text format, and the middleware that counts and times every
//! HTTP request. Metric names and meanings live in [`crate::telemetry`].

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Counter, Histogram};

use crate::app::AppState;
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
    routes: RwLock<HashMap<Box<str>, Vec<MethodMetrics>>>,
}

#[derive(Debug)]
struct MethodMetrics {
    method: &'static str,
    duration: Histogram,
    answered: Vec<(StatusCode, Counter)>,
}

impl HttpMetrics {
    pub fn record(&self, method: &'static str, route: &str, status: StatusCode, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Ok(routes) = self.routes.read()
            && let Some(known) = routes
                .get(route)
                .and_then(|methods| methods.iter().find(|known| known.method == method))
            && let Some((_, counter)) = known.answered.iter().find(|(known, _)| *known == status)
        {
            counter.increment(1);
            known.duration.record(seconds);
            return;
        }
        let counter = metrics::counter!(
            HTTP_REQUESTS_TOTAL,
            "method" => method,
            "route" => route.to_string(),
            "status" => status.as_str().to_string(),
        );
        counter.increment(1);
        let Ok(mut routes) = self.routes.write() else {
            // A panic elsewhere poisoned the cache: record through the registry instead.
            metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => method, "route" => route.to_string())
                .record(seconds);
            return;
        };
        let methods = routes.entry(route.into()).or_default();
        let position = match methods.iter().position(|known| known.method == method) {
            Some(position) => position,
            None => {
                methods.push(MethodMetrics {
                    method,
                    duration: metrics::histogram!(
                        HTTP_REQUEST_DURATION_SECONDS,
                        "method" => method,
                        "route" => route.to_string(),
                    ),
                    answered: Vec::new(),
                });
                methods.len() - 1
            }
        };
        let known = &mut methods[position];
        known.duration.record(seconds);
        if !known.answered.iter().any(|(known, _)| *known == status) {
            known.answered.push((status, counter));
        }
    }
}

pub(super) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
