//! HTTP plumbing shared by the WeCom robot, WeCom app and WeChat Official Account handlers:
//! the account's envelope from its secrets, plain and XML answers, the passive-reply
//! deadline, and the once-only processing of messages and typed events.

use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use secrecy::ExposeSecret;

use super::admission::Admission;
use super::api::{Callback, Rejection, Verdict};
use super::crypto::MsgCrypt;
use super::deferred::DeferredBot;
use super::wx::{Received, TypedEvent};
use super::{ChatEvent, Reply};
use crate::rules::SecretRef;

/// WeCom and WeChat drop the connection after 5 s and retry; a passive reply must be
/// written before that, with a margin for the network.
pub const PASSIVE_DEADLINE: Duration = Duration::from_secs(4);

/// Reads a secret the account is known to have (the loader disables accounts without).
pub fn secret(secret: &SecretRef) -> Result<String, Rejection> {
    secret
        .resolve()
        .map(|value| value.expose_secret().to_string())
        .map_err(|reason| misconfigured(&reason))
}

/// The account's envelope: token, EncodingAESKey and the receive id it expects.
pub fn envelope(
    token: &SecretRef,
    aes_key: &SecretRef,
    receive_id: &str,
) -> Result<MsgCrypt, Rejection> {
    envelope_with(&secret(token)?, aes_key, receive_id)
}

/// The envelope for a token already read.
pub fn envelope_with(
    token: &str,
    aes_key: &SecretRef,
    receive_id: &str,
) -> Result<MsgCrypt, Rejection> {
    MsgCrypt::new(token, &secret(aes_key)?, receive_id).map_err(|error| {
        misconfigured(&format!(
            "`{}` does not hold a usable key: {error}",
            aes_key.env
        ))
    })
}

/// Our configuration, not the caller, is wrong: 503 like a disabled account, with the
/// reason (variable names, never values) in the log only.
fn misconfigured(reason: &str) -> Rejection {
    tracing::error!(%reason, "inbound account misconfigured");
    Rejection::new(
        Verdict::Disabled,
        StatusCode::SERVICE_UNAVAILABLE,
        "account_misconfigured",
        "account misconfigured; see the server log",
    )
}

/// A 200 with a plain-text body: handshake echoes, `success`, and the empty acknowledgement.
pub fn plain(body: String) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A fresh numeric nonce for a sealed reply, like the platform's own.
pub fn nonce() -> String {
    rand::rng()
        .random_range(100_000_000u32..1_000_000_000)
        .to_string()
}

/// The bot's replies, as one passive message's text; `None` when there is nothing to say
/// or the bot missed the deadline (it still finishes, unanswered, rather than being cut off
/// in the middle of its audit write).
pub async fn answer_in_time(
    callback: &Callback<'_>,
    event: ChatEvent,
    admission: Admission,
) -> Option<String> {
    let bot = DeferredBot::new(callback, admission);
    let account = callback.account.id.clone();
    let task = tokio::spawn(async move { bot.run(&event).await });
    match tokio::time::timeout(PASSIVE_DEADLINE, task).await {
        Ok(Ok(replies)) => joined(&replies),
        Ok(Err(error)) => {
            tracing::error!(%error, inbound.account = %account, "the bot failed on a callback");
            None
        }
        Err(_) => {
            tracing::warn!(inbound.account = %account, "the bot missed the passive-reply deadline; the reply is dropped");
            None
        }
    }
}

/// Several replies become one message, separated by blank lines; none becomes `None`.
pub fn joined(replies: &[Reply]) -> Option<String> {
    let texts: Vec<&str> = replies
        .iter()
        .map(|reply| reply.text.as_str())
        .filter(|text| !text.trim().is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n\n"))
}

/// What to do with a verified callback after de-duplication.
#[expect(
    clippy::large_enum_variant,
    reason = "one per callback, matched at once: boxing would only add an allocation"
)]
pub enum Next {
    /// A new chat message: the handler runs the bot and answers.
    Answer(ChatEvent, Admission),
    /// Seen before, an event that was recorded, or nothing to act on: acknowledge.
    Acknowledge,
}

/// De-duplicates by the platform's id, records typed events, and hands back new messages.
pub async fn dispatch(callback: &Callback<'_>, received: Received) -> Result<Next, Rejection> {
    match received {
        Received::Message(event) => {
            let id = event.message_id.clone().unwrap_or_default();
            match callback.admit(&format!("msg:{id}")).await {
                Some(admission) => Ok(Next::Answer(event, admission)),
                None => Ok(Next::Acknowledge),
            }
        }
        Received::Event(TypedEvent {
            kind,
            event_id,
            payload,
        }) => {
            callback
                .record_event_once(kind, &event_id, &payload)
                .await?;
            Ok(Next::Acknowledge)
        }
        Received::Ignored(what) => {
            tracing::debug!(inbound.account = %callback.account.id, %what, "acknowledged a callback the bot does not act on");
            Ok(Next::Acknowledge)
        }
    }
}

#[cfg(test)]
#[path = "wx_handler_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "wx_handler_oa_tests.rs"]
mod oa_tests;
