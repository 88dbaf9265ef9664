//! The `qq` platform (QQ bot open platform, webhook mode): Ed25519 signatures keyed by a
//! seed derived from the bot secret, the op 13 URL validation, group @-messages and 1:1
//! messages as [`ChatEvent`]s, and the passive-reply and access-token requests. Everything
//! here is pure; the HTTP handler sits at the end of the file.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ChatEvent, ChatKind, Reply};

pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// QQ documents no replay window. Its signed timestamp is the send time in seconds, so the
/// common five minutes is applied [unverified: revisit if staging shows slow deliveries].
pub const WINDOW_SECS: i64 = 5 * 60;
/// Where the access token comes from while `base_url` is the production API root.
pub const TOKEN_URL: &str = "https://bots.qq.com/app/getAppAccessToken";
const PLATFORM: &str = "qq";

/// Why a QQ callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QqError {
    #[error("the `{0}` header is missing or not text")]
    MissingHeader(&'static str),
    #[error("the bot secret is empty; set the variable named by `app_secret_env`")]
    EmptySecret,
    #[error("`X-Signature-Timestamp` is not a Unix time in seconds")]
    BadTimestamp,
    #[error("`X-Signature-Ed25519` does not match the body signed with the bot secret")]
    BadSignature,
    #[error(
        "the request is {age_secs} s from now, outside the {WINDOW_SECS} s window; check the clock or this is a replay"
    )]
    Stale { age_secs: i64 },
    #[error("the body is not a QQ bot payload: {0}")]
    Malformed(String),
}

/// The bot's Ed25519 key: the seed is the secret repeated until 32 bytes, then cut.
pub fn signing_key(bot_secret: &str) -> Result<SigningKey, QqError> {
    let secret = bot_secret.as_bytes();
    if secret.is_empty() {
        return Err(QqError::EmptySecret);
    }
    let mut seed = [0u8; 32];
    for (slot, byte) in seed.iter_mut().zip(secret.iter().cycle()) {
        *slot = *byte;
    }
    Ok(SigningKey::from_bytes(&seed))
}

/// Checks `X-Signature-Ed25519` over `timestamp + raw body`, then the window, so that a
/// stale verdict only ever describes a genuine request.
pub fn verify(
    key: &VerifyingKey,
    timestamp: &str,
    signature_hex: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), QqError> {
    let bytes: [u8; 64] = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(QqError::BadSignature)?;
    let signature = Signature::from_bytes(&bytes);
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    // Strict, like libsodium on the platform's side: no malleable or small-order forms.
    key.verify_strict(&message, &signature)
        .map_err(|_| QqError::BadSignature)?;
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| QqError::BadTimestamp)?;
    let age_secs = now_secs.saturating_sub(sent);
    if age_secs.saturating_abs() > WINDOW_SECS {
        return Err(QqError::Stale { age_secs });
    }
    Ok(())
}

/// The hex signature the platform would send for a body, for tests and test tools.
pub fn sign_hex(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    hex::encode(key.sign(&message).to_bytes())
}

/// One verified QQ callback, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QqCallback {
    /// op 13: prove we hold the secret by signing `event_ts + plain_token`.
    Validation {
        plain_token: String,
        event_ts: String,
    },
    /// A group @-message or a 1:1 message for the bot.
    Message {
        event: Box<ChatEvent>,
        reply: ReplyTarget,
        dedup_key: String,
    },
    /// Any other dispatch (member changes, robot added, ...): acknowledged.
    Other {
        kind: String,
        dedup_key: Option<String>,
    },
}

/// Where a passive reply goes: the conversation and the message it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTarget {
    pub kind: ChatKind,
    /// `group_openid` for groups, the user's `user_openid` for 1:1.
    pub openid: String,
    pub msg_id: String,
}

#[derive(Deserialize)]
struct Payload {
    op: i64,
    id: Option<String>,
    t: Option<String>,
    #[serde(default)]
    d: Value,
}

/// Classifies a verified body.
pub fn parse(account: &str, body: &[u8]) -> Result<QqCallback, QqError> {
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|error| QqError::Malformed(format!("not a QQ bot payload ({error})")))?;
    let field = |name: &str| payload.d.get(name).and_then(Value::as_str);
    match payload.op {
        13 => match (field("plain_token"), field("event_ts")) {
            (Some(plain_token), Some(event_ts)) => Ok(QqCallback::Validation {
                plain_token: plain_token.into(),
                event_ts: event_ts.into(),
            }),
            _ => Err(QqError::Malformed(
                "op 13 needs `d.plain_token` and `d.event_ts`".into(),
            )),
        },
        0 => {
            let kind = payload.t.unwrap_or_default();
            let author = |name: &str| {
                payload
                    .d
                    .get("author")
                    .and_then(|author| author.get(name))
                    .and_then(Value::as_str)
            };
            let (chat_kind, chat, sender) = match kind.as_str() {
                "GROUP_AT_MESSAGE_CREATE" => (
                    ChatKind::Group,
                    field("group_openid"),
                    author("member_openid"),
                ),
                "C2C_MESSAGE_CREATE" => (
                    ChatKind::Direct,
                    author("user_openid"),
                    author("user_openid"),
                ),
                _ => {
                    return Ok(QqCallback::Other {
                        dedup_key: payload.id.or_else(|| field("id").map(str::to_string)),
                        kind,
                    });
                }
            };
            let (Some(msg_id), Some(chat), Some(sender)) = (field("id"), chat, sender) else {
                return Err(QqError::Malformed(format!(
                    "`{kind}` needs `d.id`, the conversation openid and the author's openid"
                )));
            };
            let text = field("content").unwrap_or_default();
            Ok(QqCallback::Message {
                event: Box::new(ChatEvent {
                    platform: PLATFORM.into(),
                    account: account.into(),
                    chat: chat.into(),
                    chat_kind,
                    sender: sender.into(),
                    sender_name: None,
                    text: strip_mention(text).to_string(),
                    message_id: Some(msg_id.into()),
                }),
                reply: ReplyTarget {
                    kind: chat_kind,
                    openid: chat.into(),
                    msg_id: msg_id.into(),
                },
                // The dispatch id stays the same when the platform pushes again.
                dedup_key: payload.id.unwrap_or_else(|| msg_id.to_string()),
            })
        }
        other => Ok(QqCallback::Other {
            kind: format!("op{other}"),
            dedup_key: None,
        }),
    }
}

/// The platform removes the @ itself but leaves the space, and sometimes a `<@!id>` tag.
fn strip_mention(text: &str) -> &str {
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix("<@") {
        match after.find('>') {
            Some(end) => rest = after[end + 1..].trim_start(),
            None => break,
        }
    }
    rest.trim_end()
}

/// The op 13 answer: the plain token and the hex signature of `event_ts + plain_token`.
pub fn validation_answer(key: &SigningKey, plain_token: &str, event_ts: &str) -> Value {
    let signature = sign_hex(key, event_ts, plain_token.as_bytes());
    json!({"plain_token": plain_token, "signature": signature})
}

/// The HTTP callback acknowledgement (op 12) [doc: "HTTP Callback ACK"; the `d` value is
/// unverified and ignored by the platform as far as known].
pub fn ack() -> Value {
    json!({"op": 12, "d": 0})
}

/// The passive-reply URL under `base_url`.
pub fn reply_url(base_url: &str, target: &ReplyTarget) -> String {
    let base = base_url.trim_end_matches('/');
    match target.kind {
        ChatKind::Group => format!("{base}/v2/groups/{}/messages", target.openid),
        ChatKind::Direct => format!("{base}/v2/users/{}/messages", target.openid),
    }
}

/// One passive reply; `msg_seq` tells several answers to the same message apart, since
/// the platform refuses a repeated (`msg_id`, `msg_seq`) pair.
pub fn reply_body(target: &ReplyTarget, reply: &Reply, msg_seq: u32) -> Value {
    json!({"content": reply.text, "msg_type": 0, "msg_id": target.msg_id, "msg_seq": msg_seq})
}

/// The token endpoint: the real token host with the default `base_url`, otherwise the same
/// path under `base_url`, so one test server or proxy stands in for both hosts.
pub fn token_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base == crate::rules::QQ_BASE_URL {
        TOKEN_URL.to_string()
    } else {
        format!("{base}/app/getAppAccessToken")
    }
}

pub fn token_request(app_id: &str, app_secret: &str) -> Value {
    json!({"appId": app_id, "clientSecret": app_secret})
}

/// An access token and its lifetime in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_in_secs: u64,
}

/// Reads the token answer; `expires_in` arrives as a string, but a number is taken too.
pub fn parse_token(body: &[u8]) -> Result<AccessToken, QqError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| QqError::Malformed("the token answer is not JSON".into()))?;
    let token = value.get("access_token").and_then(Value::as_str);
    let expires = value.get("expires_in").and_then(|expires| match expires {
        Value::String(text) => text.trim().parse().ok(),
        other => other.as_u64(),
    });
    match (token, expires) {
        (Some(token), Some(expires_in_secs)) if !token.is_empty() => Ok(AccessToken {
            token: token.into(),
            expires_in_secs,
        }),
        // The platform's error code and message say what is wrong (wrong secret, ...).
        _ => Err(QqError::Malformed(format!(
            "no access token in the answer (code {}, message {})",
            value.get("code").unwrap_or(&Value::Null),
            value.get("message").unwrap_or(&Value::Null),
        ))),
    }
}

#[path = "qq_http.rs"]
mod http;
pub(super) use http::receive;

#[cfg(test)]
#[path = "qq_tests.rs"]
mod tests;
