//! WeCom self-built application callbacks (`wecom_app`): 1:1 messages to the app as
//! encrypted XML with receive id = corp id, template-card button clicks recorded as typed
//! events, and the passive encrypted XML reply answered in the callback's own response.

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use serde_json::json;

use super::api::{Callback, Rejection};
use super::crypto::MsgCrypt;
use super::wecom::{SignedQuery, WecomError, open_payload, rejection, verify_url};
use super::wx::query_params;
use super::wx::{Received, TypedEvent, XmlFields, parse_xml, push_cdata, push_number, seal_reply};
use super::wx_handler::{Next, answer_in_time, dispatch, envelope, nonce, plain, xml};
use super::{ChatEvent, ChatKind};
use crate::rules::InboundPlatform;

pub const PLATFORM: &str = "wecom_app";
/// Kind under which card button clicks are recorded.
pub const CARD_CLICKED: &str = "wecom_app.template_card_clicked";

/// Serves one callback: GET URL verification, or a POSTed message answered with a passive
/// encrypted reply (an empty 200 when there is nothing to say, or for a retry).
pub(super) async fn receive(
    callback: &Callback<'_>,
    request: Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::WecomApp {
        token,
        aes_key,
        corp_id,
        agent_id,
    } = &callback.account.platform
    else {
        return Err(Rejection::internal(
            "account dispatched to the wrong platform",
        ));
    };
    let crypt = envelope(token, aes_key, corp_id)?;
    let (parts, body) = callback.body(request).await?;
    let params = query_params(parts.uri.query());
    if parts.method == Method::GET {
        return verify_url(&crypt, &params).map(plain).map_err(rejection);
    }
    let signed = SignedQuery::from_params(&params).map_err(rejection)?;
    let encrypt = envelope_encrypt(&body).map_err(rejection)?;
    let message = open_payload(&crypt, &signed, &encrypt, callback.now_ms()).map_err(rejection)?;
    let received =
        parse_message(&message, &callback.account.id, agent_id.as_deref()).map_err(rejection)?;
    let Next::Answer(event, admission) = dispatch(callback, received).await? else {
        return Ok(plain(String::new()));
    };
    let user = event.sender.clone();
    match answer_in_time(callback, event, admission).await {
        Some(text) => {
            let now_secs = callback.now_ms().div_euclid(1000);
            let reply = passive_reply(&crypt, corp_id, &user, &text, now_secs, &nonce());
            Ok(xml(reply))
        }
        None => Ok(plain(String::new())),
    }
}

/// The `Encrypt` value of the POSTed envelope
/// `<xml><ToUserName/><Encrypt/><AgentID/></xml>`; the only field that is signed.
pub fn envelope_encrypt(body: &[u8]) -> Result<String, WecomError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| WecomError::Malformed("the body is not UTF-8".to_string()))?;
    let fields = parse_xml(text).map_err(|error| WecomError::Malformed(error.to_string()))?;
    fields
        .text("Encrypt")
        .map(str::to_string)
        .ok_or_else(|| WecomError::Malformed("the XML body has no <Encrypt> field".to_string()))
}

/// Reads a decrypted message or event. `agent_id`, when configured, must match: a corp's
/// apps share the corp id, so it is what tells one app's callbacks from another's.
pub fn parse_message(
    xml: &str,
    account: &str,
    agent_id: Option<&str>,
) -> Result<Received, WecomError> {
    let fields = parse_xml(xml).map_err(|error| WecomError::Malformed(error.to_string()))?;
    if let (Some(expected), Some(got)) = (agent_id, fields.text("AgentID"))
        && expected.trim() != got
    {
        return Err(WecomError::Malformed(format!(
            "the callback is for agent {got}, this account is agent {expected}; check `agent_id`"
        )));
    }
    let user = required(&fields, "FromUserName")?;
    let kind = required(&fields, "MsgType")?;
    match kind {
        "text" => Ok(Received::Message(ChatEvent {
            platform: PLATFORM.to_string(),
            account: account.to_string(),
            // A self-built app only ever talks 1:1; the user is the conversation.
            chat: user.to_string(),
            chat_kind: ChatKind::Direct,
            sender: user.to_string(),
            sender_name: None,
            text: fields.get("Content").unwrap_or("").trim().to_string(),
            message_id: Some(message_id(&fields, user)),
        })),
        "event" => Ok(parse_event(&fields, user)),
        other => Ok(Received::Ignored(format!(
            "{PLATFORM} message of type {other}"
        ))),
    }
}

fn parse_event(fields: &XmlFields, user: &str) -> Received {
    let event = fields.text("Event").unwrap_or("");
    if event != "template_card_event" {
        return Received::Ignored(format!("{PLATFORM} event {event}"));
    }
    let text = |name| fields.text(name).unwrap_or("");
    // A response code is issued once per click (it is what updates the card), so it is
    // the natural key; without one, the click's user, time, task and button.
    let event_id = match fields.text("ResponseCode") {
        Some(code) => format!("card:{code}"),
        None => format!(
            "card:{user}:{}:{}:{}",
            text("CreateTime"),
            text("TaskId"),
            text("EventKey")
        ),
    };
    Received::Event(TypedEvent {
        kind: CARD_CLICKED,
        event_id,
        payload: json!({
            "user": user,
            "agent_id": text("AgentID"),
            "create_time": text("CreateTime"),
            "task_id": text("TaskId"),
            "event_key": text("EventKey"),
            "card_type": text("CardType"),
        }),
    })
}

/// `MsgId` where WeCom sends one (text always has it); otherwise sender and time.
fn message_id(fields: &XmlFields, user: &str) -> String {
    match fields.text("MsgId") {
        Some(id) => id.to_string(),
        None => format!("{user}:{}", fields.text("CreateTime").unwrap_or("")),
    }
}

fn required<'a>(fields: &'a XmlFields, name: &str) -> Result<&'a str, WecomError> {
    fields
        .text(name)
        .ok_or_else(|| WecomError::Malformed(format!("the message has no <{name}> field")))
}

/// The passive reply: a text message to `user`, encrypted, wrapped in the signed envelope
/// `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`.
pub fn passive_reply(
    crypt: &MsgCrypt,
    corp_id: &str,
    user: &str,
    text: &str,
    now_secs: i64,
    nonce: &str,
) -> String {
    let mut message = String::from("<xml>");
    push_cdata(&mut message, "ToUserName", user);
    push_cdata(&mut message, "FromUserName", corp_id);
    push_number(&mut message, "CreateTime", now_secs);
    push_cdata(&mut message, "MsgType", "text");
    push_cdata(&mut message, "Content", text);
    message.push_str("</xml>");
    seal_reply(crypt, &message, now_secs, nonce)
}

#[cfg(test)]
#[path = "wecom_app_tests.rs"]
mod tests;
