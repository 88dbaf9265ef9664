//! The one error type of the HTTP surface: every handler returns `Result<_, ApiError>` and
//! every error leaves the server as `{"error": {"code": "...", "message": "..."}}`.
//!
//! 4xx errors carry a stable machine-readable `code` and a message that tells the caller
//! what to do. 5xx errors carry a generic message: the cause chain goes to the log, once,
//! inside the request's span (so it carries the request id), and never into the body.
//! The extractor wrappers ([`ApiJson`], [`ApiQuery`], [`ApiPath`]) give axum's own
//! rejections the same shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: HTTP status, stable code, and a message safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable, snake_case; clients branch on this, not on `message`.
    pub code: &'static str,
    /// For people; may change between versions.
    pub message: String,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The `error` member of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_json`.
    #[schema(example = "not_found")]
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

const INTERNAL_MESSAGE: &str =
    "internal server error; the details are in the server log under this request's x-request-id";

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A 500 whose cause has already been logged (or needs no logging). The body never
    /// says more than "internal server error".
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL_MESSAGE,
        )
    }

    /// The body this error is sent with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 requires a challenge on every 401; it tells clients which scheme.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Logs an unexpected failure with its whole cause chain and turns it into a generic 500.
/// This is the one place such errors are logged, so callers just use `?`.
fn internal_from(error: &(dyn std::error::Error + 'static)) -> ApiError {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(error.chain = %chain, "request failed");
    ApiError::internal()
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        internal_from(error.as_ref())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        internal_from(&error)
    }
}

/// Keeps a 5xx rejection's text (which may describe internals) out of the body.
fn from_rejection(status: StatusCode, code: &'static str, text: String) -> ApiError {
    if status.is_server_error() {
        tracing::error!(error.chain = %text, "extractor failed");
        return ApiError::internal();
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(status, "unsupported_media_type", text),
        _ => ApiError::bad_request(code, text),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            other => other.body_text(),
        };
        from_rejection(rejection.status(), "invalid_json", text)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        from_rejection(rejection.status(), "invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        from_rejection(rejection.status(), "invalid_path", rejection.body_text())
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s: malformed or mistyped JSON is a 400
/// `invalid_json`, a missing JSON content type a 415, an oversized body a 413.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejection is a 400 `invalid_query` [`ApiError`].
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `axum::extract::Path` whose rejection is a 400 `invalid_path` [`ApiError`].
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[tokio::test]
    async fn error_has_the_documented_shape() {
        let response = ApiError::conflict("not_retryable", "job 7 is delivered").into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"error": {"code": "not_retryable", "message": "job 7 is delivered"}})
        );
    }

    #[tokio::test]
    async fn internal_errors_keep_their_cause_out_of_the_body() {
        let cause = anyhow::anyhow!("password=hunter2 rejected").context("loading the job");
        let response = ApiError::from(cause).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await.to_string();
        assert!(!body.contains("hunter2"), "{body}");
        assert!(!body.contains("loading the job"), "{body}");
        assert!(body.contains("\"internal\""), "{body}");
    }

    #[tokio::test]
    async fn unauthorized_carries_a_bearer_challenge() {
        let response = ApiError::unauthorized("no token").into_response();
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
    }
}
