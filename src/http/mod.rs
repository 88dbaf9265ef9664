//! The HTTP surface: assembles every route (health, metrics, inbound webhooks, the admin
//! API) into one axum router and wraps it in the layers every request gets: request id,
//! tracing span, metrics, JSON errors, deadline and body-size limit.
//!
//! Handlers live with their concept (`*/api.rs`, or here for the operational endpoints);
//! this module only decides how they are served. Admin API endpoints are registered
//! through [`openapi::api_routes`] so each one appears in `/api/v1/openapi.json`.

pub mod auth;
pub mod health;
mod layers;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod receipts;

#[cfg(test)]
mod messages_tests;
#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, Uri};
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;
use crate::error::ApiError;

pub use layers::REQUEST_ID;

/// Limits every request is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted; larger ones get 413.
    pub body_bytes: usize,
    /// Longest a handler may run before the caller gets 503 `timeout`.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The complete application router with the default [`Limits`]. `webhooks` carries the
/// inbound `/webhooks/{account_id}` routes.
pub fn router(state: AppState, webhooks: Router<AppState>) -> Router {
    router_with_limits(state, webhooks, Limits::default())
}

/// [`router`] with explicit limits.
pub fn router_with_limits(state: AppState, webhooks: Router<AppState>, limits: Limits) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(webhooks)
        .merge(receipts::routes())
        .merge(openapi::api_routes())
        .fallback(unknown_route)
        .layer(
            // Outermost first: the span, so that everything below logs inside it, then the
            // request id, metrics, JSON errors and deadline (one middleware, see
            // `layers::EveryRequestLayer`), then the body limit.
            ServiceBuilder::new()
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(
                            DefaultOnResponse::new()
                                .level(Level::INFO)
                                .latency_unit(LatencyUnit::Millis),
                        )
                        // Failures are logged once, where they happen (see `error.rs`).
                        .on_failure(()),
                )
                .layer(layers::EveryRequestLayer::new(limits))
                .layer(RequestBodyLimitLayer::new(limits.body_bytes)),
        )
        .with_state(state)
}

/// One span per request. It names the route template rather than the raw path (which may
/// carry ids), and leaves `caller` for the auth extractor to fill in, and `request_id` for
/// `layers::EveryRequestLayer` when the caller sent no acceptable one.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| layers::acceptable_request_id(value.as_bytes()))
        .and_then(|value| value.to_str().ok());
    tracing::info_span!(
        "http",
        method = %request.method(),
        route,
        request_id,
        caller = tracing::field::Empty,
    )
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!(
        "no route for {method} {path}; the admin API lives under /api/v1 (see /api/v1/openapi.json)"
    ))
}
