//! WeChat Official Account callbacks (`wechat_oa`): the plain GET handshake (echo `echostr`
//! verbatim, also in safe mode), POSTs in plain mode (no `aes_key_env`) or safe mode
//! (`encrypt_type=aes`, WXBizMsgCrypt with receive id = app id), 1:1 text messages from
//! followers, the send-job results `TEMPLATESENDJOBFINISH` / `MASSSENDJOBFINISH` recorded as
//! typed events, and the passive XML reply (sealed in safe mode).
//!
//! In plain mode the signature covers only token, timestamp and nonce, never the body: a
//! captured query could carry a forged body. The handler therefore also de-duplicates the
//! (timestamp, nonce) pair, see [`nonce_key`]; safe mode signs the payload itself.

use std::collections::HashMap;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::api::{Callback, Rejection};
use super::crypto::{CryptoError, MsgCrypt, verify_sorted_sha1};
use super::wx::{
    Received, TypedEvent, WindowError, XmlFields, check_window, parse_xml, push_cdata, push_number,
    query_params, seal_reply,
};
use super::wx_handler::{Next, answer_in_time, dispatch, envelope_with, nonce, plain, secret, xml};
use super::{ChatEvent, ChatKind};
use crate::rules::InboundPlatform;

pub const PLATFORM: &str = "wechat_oa";
pub const TEMPLATE_SEND_FINISHED: &str = "wechat_oa.template_send_finished";
pub const MASS_SEND_FINISHED: &str = "wechat_oa.mass_send_finished";

/// Why an Official Account callback was refused; the handler maps each to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OaError {
    #[error("the query parameter `{0}` is missing")]
    MissingParam(&'static str),
    /// Signature, message signature or app id mismatch: answered 401.
    #[error(transparent)]
    Auth(CryptoError),
    /// This account is in safe mode and the callback is plain: answered 401, because an
    /// unsigned body must not be accepted where a signed one is expected.
    #[error(
        "this account has `aes_key_env` (safe mode) but the callback is not encrypted; \
         set the Official Account's message mode to safe mode"
    )]
    PlainInSafeMode,
    #[error("stale callback: {0}")]
    Stale(WindowError),
    #[error("{0}")]
    Malformed(String),
}

impl From<CryptoError> for OaError {
    fn from(error: CryptoError) -> Self {
        match error {
            CryptoError::Signature | CryptoError::ReceiveId => OaError::Auth(error),
            other => OaError::Malformed(other.to_string()),
        }
    }
}

/// Serves one callback: the plain GET handshake, or a POSTed message answered with a passive
/// reply (sealed in safe mode), `success` when there is nothing to say or for a retry.
pub(super) async fn receive(
    callback: &Callback<'_>,
    request: Request,
) -> Result<Response, Rejection> {
    let InboundPlatform::WechatOa {
        token,
        aes_key,
        app_id,
    } = &callback.account.platform
    else {
        return Err(Rejection::internal(
            "account dispatched to the wrong platform",
        ));
    };
    let token = secret(token)?;
    let crypt = match aes_key {
        Some(aes_key) => Some(envelope_with(&token, aes_key, app_id)?),
        None => None,
    };
    let (parts, body) = callback.body(request).await?;
    let params = query_params(parts.uri.query());
    if parts.method == Method::GET {
        return verify_handshake(&token, &params)
            .map(plain)
            .map_err(rejection);
    }
    let message =
        open_post(&token, crypt.as_ref(), &params, &body, callback.now_ms()).map_err(rejection)?;
    // Plain mode signs the query only; a second use of it is a retry or a forged body.
    if crypt.is_none()
        && let Some(key) = nonce_key(&params)
        && !callback.first_time(&key).await
    {
        return Ok(plain(ACK.to_string()));
    }
    let received = parse_message(&message, &callback.account.id).map_err(rejection)?;
    let Next::Answer(event, admission) = dispatch(callback, received).await? else {
        return Ok(plain(ACK.to_string()));
    };
    let openid = event.sender.clone();
    let account_name = account_name(&message).unwrap_or_default();
    match answer_in_time(callback, event, admission).await {
        Some(text) => {
            let now_secs = callback.now_ms().div_euclid(1000);
            let reply = passive_reply(
                crypt.as_ref(),
                &account_name,
                &openid,
                &text,
                now_secs,
                &nonce(),
            );
            Ok(xml(reply))
        }
        None => Ok(plain(ACK.to_string())),
    }
}

/// The HTTP answer to a refused callback: authentication failures, missing signature
/// parameters and plain callbacks to a safe-mode account 401, stale 401, else 400.
fn rejection(error: OaError) -> Rejection {
    let message = error.to_string();
    match error {
        OaError::MissingParam("signature" | "timestamp" | "nonce" | "msg_signature")
        | OaError::Auth(_)
        | OaError::PlainInSafeMode => Rejection::signature(message),
        OaError::Stale(_) => Rejection::stale(message),
        OaError::MissingParam(_) | OaError::Malformed(_) => Rejection::malformed(message),
    }
}

fn param<'a>(params: &'a HashMap<String, String>, name: &'static str) -> Result<&'a str, OaError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
        .ok_or(OaError::MissingParam(name))
}

/// Checks the plain `signature` over token, timestamp and nonce.
fn verify_plain(token: &str, params: &HashMap<String, String>) -> Result<(), OaError> {
    let signature = param(params, "signature")?;
    let timestamp = param(params, "timestamp")?;
    let nonce = param(params, "nonce")?;
    Ok(verify_sorted_sha1(&[token, timestamp, nonce], signature)?)
}

/// GET handshake: plain signature in every mode; the answer is `echostr` verbatim.
pub fn verify_handshake(token: &str, params: &HashMap<String, String>) -> Result<String, OaError> {
    verify_plain(token, params)?;
    Ok(param(params, "echostr")?.to_string())
}

/// Whether the callback uses safe mode; compatible mode sends the flag too.
pub fn is_encrypted(params: &HashMap<String, String>) -> bool {
    params.get("encrypt_type").is_some_and(|kind| kind == "aes")
}

/// Verifies a POST and returns the message XML: signature(s) first, then the window, then
/// (safe mode) decryption. `crypt` is the account's safe-mode envelope, `None` in plain mode.
pub fn open_post(
    token: &str,
    crypt: Option<&MsgCrypt>,
    params: &HashMap<String, String>,
    body: &[u8],
    now_ms: i64,
) -> Result<String, OaError> {
    verify_plain(token, params)?;
    let timestamp = param(params, "timestamp")?;
    let text = std::str::from_utf8(body)
        .map_err(|_| OaError::Malformed("the body is not UTF-8".to_string()));
    let Some(crypt) = crypt else {
        check_window(timestamp, now_ms).map_err(OaError::Stale)?;
        if is_encrypted(params) {
            return Err(OaError::Malformed(
                "WeChat sent an encrypted callback but this account has no `aes_key_env`; \
                 set it to the Official Account's EncodingAESKey"
                    .to_string(),
            ));
        }
        return Ok(text?.to_string());
    };
    if !is_encrypted(params) {
        return Err(OaError::PlainInSafeMode);
    }
    let msg_signature = param(params, "msg_signature")?;
    let nonce = param(params, "nonce")?;
    let fields = parse_xml(text?).map_err(|error| OaError::Malformed(error.to_string()))?;
    let encrypt = fields
        .text("Encrypt")
        .ok_or_else(|| OaError::Malformed("the XML body has no <Encrypt> field".to_string()))?;
    crypt.verify(msg_signature, timestamp, nonce, encrypt)?;
    check_window(timestamp, now_ms).map_err(OaError::Stale)?;
    Ok(crypt.decrypt(encrypt)?)
}

/// The extra de-duplication key for plain-mode POSTs: WeChat's retries reuse the query, so
/// a second use of one signed query is either a retry (already answered) or a forgery.
pub fn nonce_key(params: &HashMap<String, String>) -> Option<String> {
    let timestamp = params.get("timestamp")?;
    let nonce = params.get("nonce")?;
    Some(format!("query:{timestamp}:{nonce}"))
}

/// Reads a message or event document.
pub fn parse_message(xml: &str, account: &str) -> Result<Received, OaError> {
    let fields = parse_xml(xml).map_err(|error| OaError::Malformed(error.to_string()))?;
    let openid = required(&fields, "FromUserName")?;
    let kind = required(&fields, "MsgType")?;
    match kind {
        "text" => Ok(Received::Message(ChatEvent {
            platform: PLATFORM.to_string(),
            account: account.to_string(),
            // Official Accounts have no group chats: the follower is the conversation.
            chat: openid.to_string(),
            chat_kind: ChatKind::Direct,
            sender: openid.to_string(),
            sender_name: None,
            text: fields.get("Content").unwrap_or("").trim().to_string(),
            message_id: Some(match fields.text("MsgId") {
                Some(id) => id.to_string(),
                None => format!("{openid}:{}", fields.text("CreateTime").unwrap_or("")),
            }),
        })),
        "event" => Ok(parse_event(&fields, openid)),
        other => Ok(Received::Ignored(format!(
            "{PLATFORM} message of type {other}"
        ))),
    }
}

fn parse_event(fields: &XmlFields, openid: &str) -> Received {
    let text = |name| fields.text(name).unwrap_or("");
    let count = |name| {
        fields
            .text(name)
            .and_then(|value| value.parse::<u64>().ok())
            .map_or(Value::Null, Value::from)
    };
    // Results carry `MsgID` (the send's id); the event names differ in case across docs.
    let msg_id = fields.text("MsgID").or_else(|| fields.text("MsgId"));
    let key = |prefix: &str| match msg_id {
        Some(id) => format!("{prefix}:{id}"),
        None => format!("{prefix}:{openid}:{}", text("CreateTime")),
    };
    match text("Event").to_ascii_uppercase().as_str() {
        "TEMPLATESENDJOBFINISH" => Received::Event(TypedEvent {
            kind: TEMPLATE_SEND_FINISHED,
            event_id: key("template"),
            payload: json!({
                "openid": openid,
                "msg_id": msg_id,
                "status": text("Status"),
                "create_time": text("CreateTime"),
            }),
        }),
        "MASSSENDJOBFINISH" => Received::Event(TypedEvent {
            kind: MASS_SEND_FINISHED,
            event_id: key("mass"),
            payload: json!({
                "msg_id": msg_id,
                "status": text("Status"),
                "total_count": count("TotalCount"),
                "filter_count": count("FilterCount"),
                "sent_count": count("SentCount"),
                "error_count": count("ErrorCount"),
                "create_time": text("CreateTime"),
            }),
        }),
        other => Received::Ignored(format!("{PLATFORM} event {other}")),
    }
}

fn required<'a>(fields: &'a XmlFields, name: &str) -> Result<&'a str, OaError> {
    fields
        .text(name)
        .ok_or_else(|| OaError::Malformed(format!("the message has no <{name}> field")))
}

/// The passive text reply to a follower; sealed when the account is in safe mode.
/// `account_name` is the `ToUserName` of the callback (the account's `gh_…` id).
pub fn passive_reply(
    crypt: Option<&MsgCrypt>,
    account_name: &str,
    openid: &str,
    text: &str,
    now_secs: i64,
    nonce: &str,
) -> String {
    let mut message = String::from("<xml>");
    push_cdata(&mut message, "ToUserName", openid);
    push_cdata(&mut message, "FromUserName", account_name);
    push_number(&mut message, "CreateTime", now_secs);
    push_cdata(&mut message, "MsgType", "text");
    push_cdata(&mut message, "Content", text);
    message.push_str("</xml>");
    match crypt {
        Some(crypt) => seal_reply(crypt, &message, now_secs, nonce),
        None => message,
    }
}

/// The account's `gh_…` id from a message document, for the reply's `FromUserName`.
pub fn account_name(xml: &str) -> Option<String> {
    parse_xml(xml).ok()?.text("ToUserName").map(str::to_string)
}

/// The body that acknowledges without replying (WeChat accepts `success` or empty).
pub const ACK: &str = "success";

#[cfg(test)]
#[path = "wechat_oa_tests.rs"]
mod tests;
