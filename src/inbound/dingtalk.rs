//! The `dingtalk` platform: DingTalk enterprise robots in HTTP mode. Owns the `timestamp` +
//! `sign` header check (HMAC-SHA256 keyed with the app secret, one-hour window, milliseconds),
//! the robot message payload, and the reply body DingTalk reads from our HTTP answer.
//!
//! Robot callbacks are not encrypted (TLS only) and have no URL-verification handshake.
//! `receive` is the handler the inbound framework calls for `dingtalk` accounts.

use std::borrow::Cow;

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::api::{Callback, Rejection};
use super::{ChatEvent, ChatKind};
use crate::rules::InboundPlatform;

/// DingTalk refuses signatures whose timestamp is more than an hour off; so do we.
pub const WINDOW_MS: i64 = 60 * 60 * 1000;

/// Why a DingTalk callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DingtalkError {
    #[error("missing `timestamp` or `sign` header; DingTalk robot callbacks carry both")]
    MissingHeaders,
    #[error("the `timestamp` header must be Unix milliseconds")]
    BadTimestamp,
    #[error("the `sign` header does not match; check the robot's app secret")]
    BadSignature,
    #[error(
        "the `timestamp` is more than an hour away from our clock; check the server clock or replay"
    )]
    Stale,
    #[error("not a DingTalk robot message: {0}")]
    Malformed(String),
}

/// `base64(HMAC-SHA256(key = secret, message = timestamp + "\n" + secret))`: the inbound
/// `sign` header, and (URL-encoded) the custom robot's outbound `sign` query parameter.
pub fn sign(secret: &[u8], timestamp: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(secret);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Checks the headers of a callback: signature first (constant time), then the window, so
/// only an authentic but old request is called stale.
pub fn verify(
    app_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<(), DingtalkError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(DingtalkError::MissingHeaders);
    };
    let timestamp = timestamp.trim();
    let sent_ms: i64 = timestamp
        .parse()
        .ok()
        .filter(|_| timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(DingtalkError::BadTimestamp)?;
    let expected = sign(app_secret, timestamp);
    if !bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes())) {
        return Err(DingtalkError::BadSignature);
    }
    if now_ms.abs_diff(sent_ms) > WINDOW_MS.unsigned_abs() {
        return Err(DingtalkError::Stale);
    }
    Ok(())
}

/// The fields of a robot callback we use; DingTalk sends many more. Borrowed from the
/// body where no escape forces a copy: only what the event keeps is copied.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RobotMessage<'a> {
    #[serde(borrow)]
    msg_id: Cow<'a, str>,
    #[serde(borrow)]
    conversation_id: Cow<'a, str>,
    /// "1" = one to one, "2" = group (a string on the wire).
    #[serde(borrow)]
    conversation_type: Cow<'a, str>,
    #[serde(borrow)]
    sender_staff_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sender_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sender_nick: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    msgtype: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<RobotText<'a>>,
}

#[derive(Debug, Deserialize)]
struct RobotText<'a> {
    #[serde(default, borrow)]
    content: Cow<'a, str>,
}

/// A verified callback, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text message for the bot.
    Message {
        event: ChatEvent,
        /// The staff id to @ in a group reply.
        mention: Option<String>,
    },
    /// A message the bot cannot read (picture, audio, rich text…): acknowledged, not run.
    Unsupported { msg_id: String, msgtype: String },
}

impl Incoming {
    /// The de-duplication key: DingTalk's `msgId`.
    pub fn msg_id(&self) -> &str {
        match self {
            Incoming::Message { event, .. } => event.message_id.as_deref().unwrap_or_default(),
            Incoming::Unsupported { msg_id, .. } => msg_id,
        }
    }
}

/// Parses the body of a verified callback.
pub fn parse(body: &[u8], account: &str) -> Result<Incoming, DingtalkError> {
    let message: RobotMessage<'_> =
        serde_json::from_slice(body).map_err(|e| DingtalkError::Malformed(e.to_string()))?;
    if message.msg_id.trim().is_empty() {
        return Err(DingtalkError::Malformed("`msgId` is empty".into()));
    }
    if message.msgtype != "text" {
        return Ok(Incoming::Unsupported {
            msg_id: message.msg_id.into_owned(),
            msgtype: message.msgtype.into_owned(),
        });
    }
    let chat_kind = match &*message.conversation_type {
        "1" => ChatKind::Direct,
        "2" => ChatKind::Group,
        other => {
            return Err(DingtalkError::Malformed(format!(
                "`conversationType` is {other:?}; expected \"1\" or \"2\""
            )));
        }
    };
    // `senderStaffId` is what operators know (the org's user id); `senderId` is an opaque
    // encrypted id, the only one external users have.
    let staff_id = message.sender_staff_id.filter(|id| !id.is_empty());
    let sender = match (&staff_id, message.sender_id) {
        (Some(staff), _) => staff.to_string(),
        (None, Some(id)) if !id.is_empty() => id.into_owned(),
        _ => {
            return Err(DingtalkError::Malformed(
                "neither `senderStaffId` nor `senderId` is set".into(),
            ));
        }
    };
    // DingTalk strips the @bot mention itself but leaves the space that followed it.
    let text = message
        .text
        .map(|t| t.content.trim().to_string())
        .unwrap_or_default();
    Ok(Incoming::Message {
        mention: staff_id
            .filter(|_| chat_kind == ChatKind::Group)
            .map(Cow::into_owned),
        event: ChatEvent {
            platform: "dingtalk".to_string(),
            account: account.to_string(),
            chat: message.conversation_id.into_owned(),
            chat_kind,
            sender,
            sender_name: message
                .sender_nick
                .filter(|n| !n.is_empty())
                .map(Cow::into_owned),
            text,
            message_id: Some(message.msg_id.into_owned()),
        },
    })
}

/// A text reply in the robot message format, the shape `dingtalk_stream`'s `reply_text`
/// posts to the session webhook; DingTalk reads the same shape from the callback answer.
/// Written straight from borrowed text: a `serde_json::Value` tree first cost a map and
/// copies of every string on each answered callback.
pub fn reply_body<'a>(text: &'a str, mention: Option<&'a str>) -> RobotReply<'a> {
    RobotReply {
        msgtype: "text",
        text: RobotReplyText { content: text },
        at: RobotReplyAt {
            at_user_ids: mention,
            is_at_all: false,
        },
    }
}

/// See [`reply_body`].
#[derive(Debug, Serialize)]
pub struct RobotReply<'a> {
    msgtype: &'static str,
    text: RobotReplyText<'a>,
    at: RobotReplyAt<'a>,
}

#[derive(Debug, Serialize)]
struct RobotReplyText<'a> {
    content: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RobotReplyAt<'a> {
    /// A list on the wire: empty, or the one sender to @.
    #[serde(serialize_with = "serialize_as_list")]
    at_user_ids: Option<&'a str>,
    is_at_all: bool,
}

fn serialize_as_list<S: serde::Serializer>(
    mention: &Option<&str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(mention)
}

/// `POST /webhooks/{id}` for a `dingtalk` account: verify the headers, then parse, de-duplicate
/// on `msgId`, run the command and answer in the response body.
pub(super) async fn receive(
    callback: &Callback<'_>,
    request: axum::extract::Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::Dingtalk { app_secret } = &callback.account.platform else {
        return Err(Rejection::internal("the account is not a DingTalk robot"));
    };
    let app_secret = app_secret
        .resolve()
        .map_err(|_| Rejection::internal("the robot's app secret is not available"))?;
    let (parts, body) = callback.body(request).await?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    match verify(
        app_secret.expose_secret().as_bytes(),
        header("timestamp"),
        header("sign"),
        callback.now_ms(),
    ) {
        Ok(()) => {}
        Err(error @ DingtalkError::Stale) => return Err(Rejection::stale(error.to_string())),
        Err(error) => return Err(Rejection::signature(error.to_string())),
    }
    let incoming = parse(&body, &callback.account.id)
        .map_err(|error| Rejection::malformed(error.to_string()))?;
    let Some(admission) = callback.admit(incoming.msg_id()).await else {
        return Ok(acknowledge());
    };
    let Incoming::Message { event, mention } = incoming else {
        admission.record_later(&callback.state.db).await;
        return Ok(acknowledge());
    };
    let replies = callback.run_command(&event, admission).await;
    if replies.is_empty() {
        return Ok(acknowledge());
    }
    // One callback answer holds one message; several replies become paragraphs of it.
    let joined;
    let text = match replies.as_slice() {
        [only] => only.text.as_str(),
        _ => {
            joined = replies
                .iter()
                .map(|reply| reply.text.as_str())
                .collect::<Vec<_>>()
                .join("\n\n");
            joined.as_str()
        }
    };
    Ok(Json(reply_body(text, mention.as_deref())).into_response())
}

/// Nothing to say: an empty JSON object, which DingTalk takes as "no reply" (unverified: the
/// documentation shows only answers that carry a message).
fn acknowledge() -> Response {
    Json(json!({})).into_response()
}

#[cfg(test)]
#[path = "dingtalk_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "dingtalk_http_tests.rs"]
mod http_tests;
