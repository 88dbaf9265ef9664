//! WeCom intelligent robot callbacks (`wecom_aibot`): @-mentions in groups and 1:1 chats as
//! encrypted JSON with receive id `""`, template-card button clicks recorded as typed
//! events. Replies go to the callback's `response_url` after the HTTP answer: the robot's
//! passive reply accepts only stream and card messages for user messages (protocols.md
//! §1.3), and a POST to `response_url` keeps the 5 s deadline out of the bot's way.

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::api::{Callback, Rejection};
use super::deferred::DeferredBot;
use super::wecom::{SignedQuery, WecomError, open_payload, rejection, strip_mention, verify_url};
use super::wx::{Received, TypedEvent, query_params};
use super::wx_handler::{Next, dispatch, envelope, joined, plain};
use super::{ChatEvent, ChatKind};
use crate::rules::InboundPlatform;

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

/// Serves one callback: GET URL verification, or a POSTed message acknowledged at once
/// with an empty 200 while the bot's answer goes to `response_url` afterwards.
pub(super) async fn receive(
    callback: &Callback<'_>,
    request: Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::WecomAibot { token, aes_key } = &callback.account.platform else {
        return Err(Rejection::internal(
            "account dispatched to the wrong platform",
        ));
    };
    // The robot's payloads carry an empty receive id.
    let crypt = envelope(token, aes_key, "")?;
    let (parts, body) = callback.body(request).await?;
    let params = query_params(parts.uri.query());
    if parts.method == Method::GET {
        return verify_url(&crypt, &params).map(plain).map_err(rejection);
    }
    let signed = SignedQuery::from_params(&params).map_err(rejection)?;
    let encrypt = envelope_encrypt(&body).map_err(rejection)?;
    let json = open_payload(&crypt, &signed, &encrypt, callback.now_ms()).map_err(rejection)?;
    let (received, response_url) = match parse_callback(&json, &callback.account.id)
        .map_err(rejection)?
    {
        AibotCallback::Message(message) => (Received::Message(message.event), message.response_url),
        AibotCallback::Other(other) => (other, None),
    };
    if let Next::Answer(event, admission) = dispatch(callback, received).await? {
        let bot = DeferredBot::new(callback, admission);
        let http = callback.http().clone();
        let account = callback.account.id.clone();
        callback.reply_later(async move {
            let replies = bot.run(&event).await;
            let Some(text) = joined(&replies) else {
                return;
            };
            let Some(url) = response_url else {
                tracing::warn!(inbound.account = %account, "robot callback without response_url; the reply is dropped");
                return;
            };
            send_response(&http, &url, &text, &account).await;
        });
    }
    Ok(plain(String::new()))
}

/// POSTs the answer to `response_url`. Failures are logged (without the URL: its
/// response code is a credential); WeCom's URL is single-use, so there is no retry.
async fn send_response(http: &reqwest::Client, url: &str, text: &str, account: &str) {
    let body = response_body(&[text]);
    match http.post(url).json(&body).send().await {
        Ok(response) if response.status().is_success() => {
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let code = answer.get("errcode").and_then(Value::as_i64).unwrap_or(0);
            if code != 0 {
                let errmsg = answer.get("errmsg").and_then(Value::as_str).unwrap_or("");
                tracing::warn!(inbound.account = %account, errcode = code, %errmsg, "WeCom refused the robot reply");
            }
        }
        Ok(response) => {
            tracing::warn!(inbound.account = %account, status = %response.status(), "WeCom refused the robot reply");
        }
        Err(error) => {
            tracing::warn!(inbound.account = %account, error = %error.without_url(), "cannot send the robot reply");
        }
    }
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
