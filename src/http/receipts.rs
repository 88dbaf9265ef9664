//! `POST /receipts/{channel_id}`: delivery receipts from providers (Twilio status
//! callbacks, SendGrid event webhooks). Authenticated by the provider's signature, which
//! the channel's adapter checks over the raw body; never by bearer token, since the
//! provider cannot hold one.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use crate::app::AppState;
use crate::channels::{ChannelStatus, ReceiptError, ReceiptRequest};
use crate::delivery::Outbox;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/receipts/{channel_id}", post(receive))
}

async fn receive(
    State(state): State<AppState>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let live = state.live();
    let channel = match live.channels.get(&channel_id) {
        Some(ChannelStatus::Ready(channel)) => channel.clone(),
        Some(ChannelStatus::Disabled { .. }) => {
            return Err(ApiError::unavailable(format!(
                "channel `{channel_id}` is disabled; see /readyz"
            )));
        }
        None => {
            return Err(ApiError::not_found(format!(
                "there is no channel `{channel_id}`"
            )));
        }
    };
    let request = ReceiptRequest {
        headers: &headers,
        body: &body,
        now_ms: state.clock.now_ms(),
    };
    let receipts = match channel.receipts(&request) {
        None => {
            return Err(ApiError::not_found(format!(
                "channel `{channel_id}` ({}) does not take delivery receipts",
                channel.kind()
            )));
        }
        Some(Err(error)) => {
            metrics::counter!("qunfa_receipts_total", "channel" => channel_id.clone(), "result" => "refused").increment(1);
            tracing::warn!(channel = %channel_id, %error, "delivery receipt refused");
            return Err(match error {
                ReceiptError::Forged(message) => ApiError::unauthorized(message),
                ReceiptError::Malformed(message) => {
                    ApiError::bad_request("malformed_receipt", message)
                }
            });
        }
        Some(Ok(receipts)) => receipts,
    };
    let recorded = Outbox::new(state.db.clone())
        .record_receipts(&channel_id, &receipts, state.clock.now_ms())
        .await?;
    metrics::counter!("qunfa_receipts_total", "channel" => channel_id.clone(), "result" => "stored")
        .increment(recorded.stored as u64);
    if recorded.moved_on > 0 {
        state.delivery_wake.notify_one();
    }
    tracing::debug!(channel = %channel_id, ?recorded, "delivery receipts recorded");
    Ok(StatusCode::OK)
}
