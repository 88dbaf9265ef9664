//! Cross-cutting request handling every route gets: the request id, the request metrics,
//! the request deadline, and the rewrite that gives every error response, whoever produced
//! it, the JSON shape of [`ApiError`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::Limits;
use super::metrics::HttpMetrics;
use crate::error::ApiError;

/// The header that correlates a request with its log lines.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied request id we keep; longer ones are replaced, since the id is
/// copied into every log line of the request.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Error bodies longer than this are not worth quoting back as the message.
const MAX_QUOTED_ERROR_LEN: usize = 512;

/// Everything each request gets inside its tracing span, from the outside in: the request
/// id, the metrics (which see the final status, after errors are rewritten and deadlines
/// hit), the JSON error shape, the deadline.
///
/// One hand-written layer rather than an `axum::middleware::from_fn` per concern: each of
/// those clones the service stack below it (with the application state) and boxes it and
/// its future again on every request, which the fastest webhooks paid four times.
#[derive(Debug, Clone)]
pub struct EveryRequestLayer {
    setup: Arc<Setup>,
}

#[derive(Debug)]
struct Setup {
    limits: Limits,
    metrics: HttpMetrics,
}

impl EveryRequestLayer {
    pub fn new(limits: Limits) -> Self {
        Self {
            setup: Arc::new(Setup {
                limits,
                metrics: HttpMetrics::default(),
            }),
        }
    }
}

impl<S> Layer<S> for EveryRequestLayer {
    type Service = EveryRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EveryRequest {
            inner,
            setup: self.setup.clone(),
        }
    }
}

/// The service of [`EveryRequestLayer`].
#[derive(Debug, Clone)]
pub struct EveryRequest<S> {
    inner: S,
    setup: Arc<Setup>,
}

impl<S> Service<Request> for EveryRequest<S>
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = match request
            .headers()
            .get(&REQUEST_ID)
            .filter(|value| acceptable_request_id(value.as_bytes()))
        {
            Some(kept) => kept.clone(),
            None => {
                let fresh = fresh_request_id();
                // The span took the caller's id when it was acceptable; this one it cannot
                // have known.
                if let Ok(text) = fresh.to_str() {
                    tracing::Span::current().record("request_id", text);
                }
                request.headers_mut().insert(REQUEST_ID, fresh.clone());
                fresh
            }
        };
        let method = super::metrics::MethodLabel::of(request.method());
        let route = request.extensions().get::<MatchedPath>().cloned();
        let setup = self.setup.clone();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let deadline = setup.limits.request_timeout;
            let response = match tokio::time::timeout(deadline, answer).await {
                Ok(Ok(response)) => response.into_response(),
                Ok(Err(never)) => match never {},
                Err(_) => deadline_exceeded(deadline),
            };
            let mut response = json_errors(response, setup.limits.body_bytes).await;
            let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
            setup
                .metrics
                .record(method, route, response.status(), started.elapsed());
            response.headers_mut().insert(REQUEST_ID, id);
            Ok(response)
        })
    }
}

/// Whether a caller's `x-request-id` is kept: 1..=128 visible ASCII characters.
pub(super) fn acceptable_request_id(bytes: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
        && bytes.iter().all(|byte| byte.is_ascii_graphic())
}

/// A fresh id in the UUID form callers and log tooling already parse. Ids only need to be
/// unique, not unpredictable: a random prefix per process and a counter give that without
/// the `getrandom` system call a random UUID cost on every request.
fn fresh_request_id() -> HeaderValue {
    static PROCESS_PREFIX: LazyLock<[u8; 8]> = LazyLock::new(rand::random);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&*PROCESS_PREFIX);
    bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    // Marking it a version 4 UUID overwrites 4 prefix bits and the counter's top 2 bits,
    // which it would reach only after 2^62 requests.
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut text = uuid::Uuid::encode_buffer();
    // A hyphenated UUID is always a valid header value; the fallback is unreachable.
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// The 503 `timeout` answer for a handler that has not finished within the deadline, so a
/// stuck dependency cannot hold connections forever.
fn deadline_exceeded(deadline: Duration) -> Response {
    tracing::warn!(
        deadline_ms = deadline.as_millis() as u64,
        "request exceeded its deadline"
    );
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        format!(
            "the request did not finish within {}; try again later",
            describe_duration(deadline)
        ),
    )
    .into_response()
}

fn describe_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Rewrites error responses that are not JSON yet (axum's own rejections, 405s, the body
/// limit's 413, plain-text errors from handlers) into the [`ApiError`] shape, keeping the
/// status and headers. A short plain-text 4xx body becomes the message; 5xx text is
/// dropped because it may describe internals.
async fn json_errors(response: Response, body_limit: usize) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let quoted = if status.is_client_error() {
        quotable_text(body).await
    } else {
        None
    };
    let error = error_for_status(status, quoted, body_limit);
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let json = serde_json::to_vec(&error.body()).unwrap_or_default();
    Response::from_parts(parts, Body::from(json))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        })
}

async fn quotable_text(body: Body) -> Option<String> {
    let bytes = axum::body::to_bytes(body, MAX_QUOTED_ERROR_LEN)
        .await
        .ok()?;
    let text = String::from_utf8(bytes.to_vec()).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn error_for_status(status: StatusCode, quoted: Option<String>, body_limit: usize) -> ApiError {
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message = quoted.unwrap_or(reason);
    match status {
        StatusCode::NOT_FOUND => ApiError::not_found(message),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "this method is not allowed on this path; the Allow header lists the ones that are",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(format!(
            "the request body is larger than the {} limit",
            describe_size(body_limit)
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(status, "unsupported_media_type", message)
        }
        StatusCode::UNAUTHORIZED => ApiError::unauthorized(message),
        StatusCode::FORBIDDEN => ApiError::forbidden(message),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(status, "request_timeout", message),
        StatusCode::TOO_MANY_REQUESTS => ApiError::new(status, "too_many_requests", message),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::new(status, "invalid_request", message),
        StatusCode::SERVICE_UNAVAILABLE => ApiError::unavailable(message),
        StatusCode::GATEWAY_TIMEOUT => ApiError::new(status, "timeout", message),
        status if status.is_server_error() => ApiError {
            status,
            ..ApiError::internal()
        },
        status => ApiError::new(status, "bad_request", message),
    }
}

fn describe_size(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    const KIB: usize = 1 << 10;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn accepted_request_ids_are_safe_header_values(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if acceptable_request_id(&bytes) {
                prop_assert!(HeaderValue::from_bytes(&bytes).is_ok());
                prop_assert!(bytes.len() <= MAX_REQUEST_ID_LEN);
                prop_assert!(!bytes.iter().any(|b| b.is_ascii_whitespace() || *b >= 0x7f));
            }
        }
    }

    #[test]
    fn request_id_rules() {
        assert!(acceptable_request_id(b"req-42"));
        assert!(!acceptable_request_id(b""));
        assert!(!acceptable_request_id(b"has space"));
        assert!(!acceptable_request_id("中文".as_bytes()));
        assert!(!acceptable_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(describe_size(1 << 20), "1 MiB");
        assert_eq!(describe_size(64 << 10), "64 KiB");
        assert_eq!(describe_size(1000), "1000 bytes");
        assert_eq!(describe_duration(Duration::from_secs(30)), "30 s");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1500 ms");
    }

    #[test]
    fn server_errors_never_quote_their_text() {
        let error = error_for_status(StatusCode::BAD_GATEWAY, None, 1);
        assert_eq!(error.status, StatusCode::BAD_GATEWAY);
        assert_eq!(error.code, "internal");
    }
}
