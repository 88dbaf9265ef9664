//! The `slack` platform: v0 request signatures with the five-minute window, slash commands
//! (form bodies, answered in the HTTP reply), the Events API (`url_verification`,
//! `app_mention`, direct `message`s, answered through `chat.postMessage`), and the bodies
//! of those answers. Everything here is pure; the HTTP handler sits at the end of the file.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{ChatEvent, ChatKind, Reply};

pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Present on Slack's re-deliveries of an event it thinks we missed.
pub const RETRY_NUM_HEADER: &str = "x-slack-retry-num";
/// Slack's documented replay window, in seconds, in both directions.
pub const WINDOW_SECS: i64 = 5 * 60;
/// The platform name as in the rules.
const PLATFORM: &str = "slack";

/// Why a Slack callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    #[error("the `{0}` header is missing or not text")]
    MissingHeader(&'static str),
    #[error("`X-Slack-Request-Timestamp` is not a Unix time in seconds")]
    BadTimestamp,
    #[error("`X-Slack-Signature` does not match the body signed with the signing secret")]
    BadSignature,
    #[error(
        "the request is {age_secs} s from now, outside Slack's {WINDOW_SECS} s window; check the clock or this is a replay"
    )]
    Stale { age_secs: i64 },
    #[error("the body is not a Slack payload: {0}")]
    Malformed(String),
}

/// Checks `X-Slack-Signature` over the raw body, then the timestamp window, so that a stale
/// verdict only ever describes a genuine request (a replay or a skewed clock).
pub fn verify(
    signing_secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SlackError> {
    let claimed = signature
        .strip_prefix("v0=")
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(SlackError::BadSignature)?;
    let expected = sign(signing_secret, timestamp, body);
    if !bool::from(expected.as_slice().ct_eq(claimed.as_slice())) {
        return Err(SlackError::BadSignature);
    }
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SlackError::BadTimestamp)?;
    let age_secs = now_secs.saturating_sub(sent);
    if age_secs.saturating_abs() > WINDOW_SECS {
        return Err(SlackError::Stale { age_secs });
    }
    Ok(())
}

/// HMAC-SHA256 over `v0:{timestamp}:{body}`; the secret is used as its UTF-8 bytes.
pub fn sign(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(signing_secret) else {
        return Vec::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The `X-Slack-Signature` value for a body, as Slack computes it.
#[cfg(test)]
pub fn signature_header(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!("v0={}", hex::encode(sign(signing_secret, timestamp, body)))
}

/// One verified Slack callback, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackCallback {
    /// The Events API endpoint check: answer with the challenge.
    UrlVerification { challenge: String },
    /// A slash command, answered in the HTTP reply (or at `response_url` when slow).
    Command {
        event: ChatEvent,
        response_url: Option<String>,
    },
    /// A message event addressed to the bot, answered through `chat.postMessage`.
    Message { event: ChatEvent, reply: PostTarget },
    /// Anything else that is verified but not for the bot (bot echoes, edits, other event
    /// types, interactivity): acknowledged and dropped. `dedup_key` is the event id.
    Ignored {
        kind: String,
        dedup_key: Option<String>,
    },
}

impl SlackCallback {
    /// The de-duplication key: the event id for Events API callbacks, the trigger id for
    /// slash commands (each invocation gets a fresh one).
    pub fn dedup_key(&self) -> Option<&str> {
        match self {
            SlackCallback::UrlVerification { .. } => None,
            SlackCallback::Command { event, .. } | SlackCallback::Message { event, .. } => {
                event.message_id.as_deref()
            }
            SlackCallback::Ignored { dedup_key, .. } => dedup_key.as_deref(),
        }
    }
}

/// Where a `chat.postMessage` reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostTarget {
    pub channel: String,
    /// Set when the question was asked inside a thread, so the answer stays there.
    pub thread_ts: Option<String>,
}

/// Classifies a verified body. JSON bodies are Events API callbacks; form bodies are
/// slash commands, or interactivity (`payload=`), which the bot does not handle.
pub fn parse(account: &str, body: &[u8]) -> Result<SlackCallback, SlackError> {
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first == Some(&b'{') {
        parse_event(account, body)
    } else {
        parse_form(account, body)
    }
}

#[derive(Deserialize)]
struct SlashCommand {
    command: Option<String>,
    text: Option<String>,
    user_id: Option<String>,
    user_name: Option<String>,
    channel_id: Option<String>,
    channel_name: Option<String>,
    response_url: Option<String>,
    trigger_id: Option<String>,
    payload: Option<String>,
}

fn parse_form(account: &str, body: &[u8]) -> Result<SlackCallback, SlackError> {
    let form: SlashCommand = serde_urlencoded::from_bytes(body)
        .map_err(|error| SlackError::Malformed(format!("not a form body ({error})")))?;
    if form.payload.is_some() {
        return Ok(SlackCallback::Ignored {
            kind: "interactivity".into(),
            dedup_key: None,
        });
    }
    let (Some(command), Some(user), Some(channel)) = (form.command, form.user_id, form.channel_id)
    else {
        return Err(SlackError::Malformed(
            "a slash command needs `command`, `user_id` and `channel_id`".into(),
        ));
    };
    // Each slash command is registered as a bot command (`/campaign`, `/whoami`), so the
    // command and its text together are what the operator typed.
    let args = form.text.unwrap_or_default();
    let text = match args.trim() {
        "" => command,
        args => format!("{command} {args}"),
    };
    let chat_kind = match form.channel_name.as_deref() {
        Some("directmessage") => ChatKind::Direct,
        _ => ChatKind::Group,
    };
    Ok(SlackCallback::Command {
        event: ChatEvent {
            platform: PLATFORM.into(),
            account: account.into(),
            chat: channel,
            chat_kind,
            sender: user,
            sender_name: form.user_name,
            text,
            message_id: form.trigger_id,
        },
        response_url: form.response_url,
    })
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    challenge: Option<String>,
    event_id: Option<String>,
    event: Option<Value>,
}

fn parse_event(account: &str, body: &[u8]) -> Result<SlackCallback, SlackError> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|error| SlackError::Malformed(format!("not an Events API body ({error})")))?;
    match envelope.kind.as_str() {
        "url_verification" => {
            let challenge = envelope.challenge.ok_or_else(|| {
                SlackError::Malformed("`url_verification` without a `challenge`".into())
            })?;
            Ok(SlackCallback::UrlVerification { challenge })
        }
        "event_callback" => {
            let event_id = envelope.event_id.ok_or_else(|| {
                SlackError::Malformed("`event_callback` without an `event_id`".into())
            })?;
            let event = envelope.event.ok_or_else(|| {
                SlackError::Malformed("`event_callback` without an `event`".into())
            })?;
            Ok(message_event(account, event_id, &event))
        }
        other => Ok(SlackCallback::Ignored {
            kind: other.to_string(),
            dedup_key: envelope.event_id,
        }),
    }
}

fn message_event(account: &str, event_id: String, event: &Value) -> SlackCallback {
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    let kind = field("type").unwrap_or_default();
    // `app_mention` covers channels. Plain `message` events are taken only in direct
    // conversations: in channels they duplicate the mention, and bot posts (our own replies
    // included), edits and joins carry `bot_id` or a `subtype` and must never be answered.
    let chat_kind = match (kind, field("channel_type")) {
        ("app_mention", _) => Some(ChatKind::Group),
        ("message", Some("im")) => Some(ChatKind::Direct),
        _ => None,
    };
    let from_a_person = event.get("bot_id").is_none() && event.get("subtype").is_none();
    let (Some(chat_kind), true, Some(user), Some(channel), Some(text)) = (
        chat_kind,
        from_a_person,
        field("user"),
        field("channel"),
        field("text"),
    ) else {
        return SlackCallback::Ignored {
            kind: format!("event.{kind}"),
            dedup_key: Some(event_id),
        };
    };
    SlackCallback::Message {
        event: ChatEvent {
            platform: PLATFORM.into(),
            account: account.into(),
            chat: channel.into(),
            chat_kind,
            sender: user.into(),
            sender_name: None,
            text: strip_mentions(text).to_string(),
            message_id: Some(event_id),
        },
        reply: PostTarget {
            channel: channel.into(),
            thread_ts: field("thread_ts").map(str::to_string),
        },
    }
}

/// Drops the leading `<@U…>` mentions (of this bot, or several at once) and the spaces
/// around them.
pub fn strip_mentions(text: &str) -> &str {
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix("<@") {
        match after.find('>') {
            Some(end) => rest = after[end + 1..].trim_start(),
            None => break,
        }
    }
    rest.trim_end()
}

/// Joins the bot's replies into one Slack message; Slack renders `&`, `<`, `>` as markup, so
/// they are escaped.
pub fn reply_text(replies: &[Reply]) -> String {
    replies
        .iter()
        .map(|reply| escape(&reply.text))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The synchronous slash-command answer (also what `response_url` takes). Answers go to the
/// whole channel: the command and its outcome are the team's business, as in the audit.
pub fn command_answer(replies: &[Reply]) -> Value {
    json!({"response_type": "in_channel", "text": reply_text(replies)})
}

/// The `chat.postMessage` body answering a message event.
pub fn post_message_body(target: &PostTarget, replies: &[Reply]) -> Value {
    let mut body = json!({"channel": target.channel, "text": reply_text(replies)});
    if let (Some(thread_ts), Some(object)) = (&target.thread_ts, body.as_object_mut()) {
        object.insert("thread_ts".into(), Value::String(thread_ts.clone()));
    }
    body
}

/// `chat.postMessage` under the account's `base_url` (`https://slack.com/api` by default).
pub fn post_message_url(base_url: &str) -> String {
    format!("{}/chat.postMessage", base_url.trim_end_matches('/'))
}

#[path = "slack_http.rs"]
mod http;
pub(super) use http::receive;

#[cfg(test)]
#[path = "slack_tests.rs"]
mod tests;
