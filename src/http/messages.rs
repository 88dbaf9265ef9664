//! The send API: one message to one person over a route of channels, a batch of them in
//! one transaction, a message's progress, and one-off test sends through a channel. All
//! go through the durable outbox; the answer comes once the message is stored, not sent.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::delivery::route::{self, MessageRequest, RouteError};
use crate::delivery::{Accepted, MessageView, NewMessage, Outbox};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::http::auth::Caller;
use crate::rules::Role;

/// Most messages in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_message))
        .routes(routes!(send_batch))
        .routes(routes!(get_message))
        .routes(routes!(send_test_message))
}

/// The id of an accepted message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageId {
    pub id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 1000 messages; each may carry its own `idempotency_key`.
    pub messages: Vec<MessageRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchIds {
    /// In the order of the request.
    pub ids: Vec<String>,
}

/// A one-off test message through one channel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestMessage {
    /// The recipient's address on this channel (user id, openid, phone, e-mail); empty or
    /// absent for a group robot.
    #[serde(default)]
    pub to: String,
    pub text: String,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })?;
    Ok(Some(key.to_string()))
}

fn unprocessable(error: RouteError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.code, error.message)
}

async fn accept(state: &AppState, messages: Vec<NewMessage>) -> Result<Vec<String>, ApiError> {
    let max_age = state.live().rules.delivery.retry.max_age;
    let accepted = Outbox::new(state.db.clone())
        .accept_messages(&messages, state.clock.now_ms(), max_age)
        .await?;
    let mut ids = Vec::with_capacity(accepted.len());
    for (index, outcome) in accepted.into_iter().enumerate() {
        match outcome {
            Accepted::Message { id, .. } => ids.push(id),
            Accepted::KeyReused { id } => {
                return Err(ApiError::conflict(
                    "idempotency_key_reused",
                    format!(
                        "the idempotency key of message {index} was used for another message ({id}); use a new key for a new message"
                    ),
                ));
            }
        }
    }
    state.delivery_wake.notify_one();
    Ok(ids)
}

async fn accept_one(
    state: &AppState,
    message: NewMessage,
) -> Result<(StatusCode, Json<MessageId>), ApiError> {
    let mut ids = accept(state, vec![message]).await?;
    let id = ids.pop().ok_or_else(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(MessageId { id })))
}

/// Queues one message to one person over a route of channels.
#[utoipa::path(
    post,
    path = "/api/v1/messages",
    tag = "messages",
    security(("bearer" = [])),
    request_body = MessageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key twice is one message")),
    responses(
        (status = 202, description = "Stored; it is sent through the outbox", body = MessageId),
        (status = 400, description = "Malformed JSON or header", body = ErrorBody),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the operator role", body = ErrorBody),
        (status = 409, description = "The idempotency key belongs to another message", body = ErrorBody),
        (status = 422, description = "Unknown channel, unreachable recipient, or content a channel cannot send", body = ErrorBody),
    )
)]
async fn send_message(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<MessageRequest>,
) -> Result<(StatusCode, Json<MessageId>), ApiError> {
    caller.require(Role::Operator)?;
    let key = idempotency_key(&headers)?;
    let live = state.live();
    let message =
        route::resolve(&request, key.as_deref(), &live.channels).map_err(unprocessable)?;
    accept_one(&state, message).await
}

/// Queues up to 1000 messages in one transaction: all are stored or none.
#[utoipa::path(
    post,
    path = "/api/v1/messages:batch",
    tag = "messages",
    security(("bearer" = [])),
    request_body = BatchRequest,
    responses(
        (status = 202, description = "All stored, ids in request order", body = BatchIds),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the operator role", body = ErrorBody),
        (status = 409, description = "An idempotency key belongs to another message", body = ErrorBody),
        (status = 422, description = "A message cannot be sent; the message names its index", body = ErrorBody),
    )
)]
async fn send_batch(
    caller: Caller,
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<BatchIds>), ApiError> {
    caller.require(Role::Operator)?;
    if batch.messages.is_empty() || batch.messages.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_batch",
            format!(
                "a batch holds 1 to {MAX_BATCH} messages, not {}",
                batch.messages.len()
            ),
        ));
    }
    let live = state.live();
    let mut messages = Vec::with_capacity(batch.messages.len());
    for (index, request) in batch.messages.iter().enumerate() {
        let message = route::resolve(request, None, &live.channels).map_err(|error| {
            unprocessable(RouteError {
                code: error.code,
                message: format!("messages[{index}]: {}", error.message),
            })
        })?;
        messages.push(message);
    }
    let ids = accept(&state, messages).await?;
    Ok((StatusCode::ACCEPTED, Json(BatchIds { ids })))
}

/// A message's state, and each step of its route with every attempt.
#[utoipa::path(
    get,
    path = "/api/v1/messages/{id}",
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "The message and its steps", body = MessageView),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the viewer role", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
    )
)]
async fn get_message(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageView>, ApiError> {
    caller.require(Role::Viewer)?;
    let view = Outbox::new(state.db.clone())
        .message(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no message `{id}`")))?;
    Ok(Json(view))
}

/// Sends a one-off test message through one channel, via the outbox like any other.
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/test-messages",
    tag = "messages",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The channel id")),
    request_body = TestMessage,
    responses(
        (status = 202, description = "Stored; it is sent through the outbox", body = MessageId),
        (status = 401, description = "Missing or unknown bearer token", body = ErrorBody),
        (status = 403, description = "The token lacks the operator role", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 422, description = "The channel is disabled or cannot send this", body = ErrorBody),
    )
)]
async fn send_test_message(
    caller: Caller,
    State(state): State<AppState>,
    ApiPath(channel_id): ApiPath<String>,
    ApiJson(test): ApiJson<TestMessage>,
) -> Result<(StatusCode, Json<MessageId>), ApiError> {
    caller.require(Role::Operator)?;
    let live = state.live();
    let status = live
        .channels
        .get(&channel_id)
        .ok_or_else(|| ApiError::not_found(format!("there is no channel `{channel_id}`")))?;
    let request =
        route::test_request(&channel_id, status, &test.to, &test.text).map_err(unprocessable)?;
    let message = route::resolve(&request, None, &live.channels).map_err(unprocessable)?;
    tracing::info!(channel = %channel_id, caller = %caller.name, "test message queued");
    accept_one(&state, message).await
}
