//! WeCom intelligent robot callbacks (`wecom_aibot`): @-mentions in groups and 1:1 chats as
//! encrypted JSON with receive id `""`, template-card button clicks recorded as typed
//! events. Replies go to the callback's `response_url` after the HTTP answer: the robot's
//! passive reply accepts only stream and card messages for user messages (protocols.md
//! §1.3), and a POST to `response_url` keeps the 5 s deadline out of the bot's way.

use serde_json::{Value, json};

use super::wecom::{WecomError, strip_mention};
use super::wx::{Received, TypedEvent};
use super::{ChatEvent, ChatKind};

pub const PLATFORM: &str = "wecom_aibot";
/// Kind under which card button clicks are recorded.
pub const CARD_CLICKED: &str = "wecom_aibot.template_card_clicked";

/// A message for the bot, and where its answer goes.
#[derive(Debug, Clone, PartialEq)]
pub struct AibotMessage {
    pub event: ChatEvent,
    /// Absent in some test payloads; without it there is no way to answer.
    pub response_url: Option<String>,
}

/// What a decrypted robot callback is.
#[derive(Debug, Clone, PartialEq)]
pub enum AibotCallback {
    Message(AibotMessage),
    Other(Received),
}

/// The `encrypt` value of the POSTed body `{"encrypt": "…"}`; the only field that is signed.
pub fn envelope_encrypt(body: &[u8]) -> Result<String, WecomError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        WecomError::Malformed(format!("expected JSON {{\"encrypt\": \"…\"}}: {error}"))
    })?;
    value
        .get("encrypt")
        .and_then(Value::as_str)
        .filter(|encrypt| !encrypt.is_empty())
        .map(str::to_string)
        .ok_or_else(|| WecomError::Malformed("the JSON body has no `encrypt` string".to_string()))
}

/// Reads a decrypted robot callback.
pub fn parse_callback(json: &str, account: &str) -> Result<AibotCallback, WecomError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|error| WecomError::Malformed(format!("the decrypted payload: {error}")))?;
    let text_of = |path: &[&str]| -> Option<String> {
        let mut node = &value;
        for key in path {
            node = node.get(key)?;
        }
        node.as_str()
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_string)
    };
    let msgid = text_of(&["msgid"])
        .ok_or_else(|| WecomError::Malformed("the callback has no `msgid`".to_string()))?;
    let user = text_of(&["from", "userid"])
        .ok_or_else(|| WecomError::Malformed("the callback has no `from.userid`".to_string()))?;
    let group_chat =
        text_of(&["chatid"]).filter(|_| text_of(&["chattype"]).as_deref() == Some("group"));
    let msgtype = text_of(&["msgtype"]).unwrap_or_default();
    let text = match msgtype.as_str() {
        "text" => text_of(&["text", "content"]).unwrap_or_default(),
        "mixed" => mixed_text(&value),
        "event" => return Ok(AibotCallback::Other(parse_event(&value, &msgid, &user))),
        other => {
            return Ok(AibotCallback::Other(Received::Ignored(format!(
                "{PLATFORM} message of type {other}"
            ))));
        }
    };
    let (chat, chat_kind) = match group_chat {
        Some(chat) => (chat, ChatKind::Group),
        None => (user.clone(), ChatKind::Direct),
    };
    Ok(AibotCallback::Message(AibotMessage {
        event: ChatEvent {
            platform: PLATFORM.to_string(),
            account: account.to_string(),
            chat,
            chat_kind,
            sender: user,
            sender_name: None,
            text: strip_mention(&text),
            message_id: Some(msgid),
        },
        response_url: text_of(&["response_url"])
            .filter(|url| url.starts_with("https://") || url.starts_with("http://")),
    }))
}

/// A text-and-image message: its text items, one per line.
fn mixed_text(value: &Value) -> String {
    let items = value
        .pointer("/mixed/msg_item")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    items
        .iter()
        .filter(|item| item.get("msgtype").and_then(Value::as_str) == Some("text"))
        .filter_map(|item| item.pointer("/text/content").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_event(value: &Value, msgid: &str, user: &str) -> Received {
    let kind = value
        .pointer("/event/eventtype")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind != "template_card_event" {
        return Received::Ignored(format!("{PLATFORM} event {kind}"));
    }
    let card = value
        .pointer("/event/template_card_event")
        .cloned()
        .unwrap_or(Value::Null);
    let field = |name: &str| {
        card.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Received::Event(TypedEvent {
        kind: CARD_CLICKED,
        event_id: msgid.to_string(),
        payload: json!({
            "user": user,
            "chat": value.get("chatid").and_then(Value::as_str),
            "task_id": field("task_id"),
            "event_key": field("event_key"),
            "card_type": field("card_type"),
            "selected_items": card.get("selected_items").cloned().unwrap_or(Value::Null),
        }),
    })
}

/// The body POSTed to `response_url`: one markdown message (the type `response_url`
/// accepts for free text), the bot's replies separated by blank lines.
pub fn response_body(texts: &[&str]) -> Value {
    json!({"msgtype": "markdown", "markdown": {"content": texts.join("\n\n")}})
}

#[cfg(test)]
#[path = "wecom_aibot_tests.rs"]
mod tests;
