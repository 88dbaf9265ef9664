//! The `standard` platform: chat-like events from the customer's own systems, signed per
//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`, `whsec_`
//! secrets, several signatures during a key rotation), the payload and the synchronous
//! `{"replies": [...]}` answer of the design. Everything here is pure; the HTTP handler sits
//! at the end of the file.
//!
//! Verification is by hand with hmac + sha2: the `standardwebhooks` crate's `verify` reads
//! the wall clock and fixes the tolerance at five minutes, while accounts configure their
//! tolerance and tests move a manual clock.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{ChatEvent, ChatKind, Reply};

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
const PLATFORM: &str = "standard";

/// Why a Standard Webhooks callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StandardError {
    #[error("the `{0}` header is missing or not text")]
    MissingHeader(&'static str),
    #[error("`webhook-timestamp` is not a Unix time in seconds")]
    BadTimestamp,
    #[error("no `v1` entry of `webhook-signature` matches the body signed with the secret")]
    BadSignature,
    #[error(
        "the request is {age_secs} s from now, outside the account's tolerance of {tolerance_secs} s; check the sender's clock or this is a replay"
    )]
    Stale { age_secs: i64, tolerance_secs: u64 },
    #[error("the body is not a Standard Webhooks chat event: {0}")]
    Malformed(String),
}

/// HMAC-SHA256 over `{id}.{timestamp}.{body}` keyed by the decoded secret.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The `webhook-signature` entry a sender produces.
#[cfg(test)]
pub fn signature_entry(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = sign(key, id, timestamp, body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Accepts when any `v1,` entry of the space-separated header matches (senders list the old
/// and new secret's signatures during a rotation; unknown versions such as `v1a` are
/// skipped), then checks the timestamp against the tolerance in both directions.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), StandardError> {
    let expected = sign(key, id, timestamp, body);
    let matched = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        // Every entry is compared, so the time taken does not tell which one matched.
        .fold(subtle::Choice::from(0), |any, claimed| {
            any | expected.as_slice().ct_eq(claimed.as_slice())
        });
    if !bool::from(matched) {
        return Err(StandardError::BadSignature);
    }
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| StandardError::BadTimestamp)?;
    let age_secs = now_secs.saturating_sub(sent);
    let tolerance_secs = tolerance.as_secs();
    if age_secs.unsigned_abs() > tolerance_secs {
        return Err(StandardError::Stale {
            age_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

/// The body the customer's system posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339; informative only, the signed header carries the time that is checked.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct MessageData {
    chat: String,
    user: String,
    #[serde(default)]
    user_name: Option<String>,
    text: String,
    #[serde(default)]
    message_id: Option<String>,
}

/// One verified callback, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum StandardCallback {
    /// `"type": "message"`: for the bot.
    Message(ChatEvent),
    /// Any other type, recorded as the typed event `standard.{type}`.
    Other(Payload),
}

/// Parses a verified body. `webhook_id` stands in for a missing `data.message_id`.
pub fn parse(
    account: &str,
    webhook_id: &str,
    body: &[u8],
) -> Result<StandardCallback, StandardError> {
    let payload: Payload = serde_json::from_slice(body).map_err(|error| {
        StandardError::Malformed(format!(
            "expected {{\"type\", \"timestamp\", \"data\"}} ({error})"
        ))
    })?;
    if payload.kind != "message" {
        return Ok(StandardCallback::Other(payload));
    }
    let data: MessageData = serde_json::from_value(payload.data).map_err(|error| {
        StandardError::Malformed(format!(
            "a message needs `data.chat`, `data.user` and `data.text` as strings ({error})"
        ))
    })?;
    Ok(StandardCallback::Message(ChatEvent {
        platform: PLATFORM.into(),
        account: account.into(),
        chat: data.chat,
        // The payload has no notion of direct chats; the customer's chats are rooms.
        chat_kind: ChatKind::Group,
        sender: data.user,
        sender_name: data.user_name,
        text: data.text.trim().to_string(),
        message_id: Some(data.message_id.unwrap_or_else(|| webhook_id.to_string())),
    }))
}

/// The synchronous answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub replies: Vec<Reply>,
}

#[path = "standard_http.rs"]
mod http;
pub(super) use http::receive;

#[cfg(test)]
#[path = "standard_tests.rs"]
mod tests;
