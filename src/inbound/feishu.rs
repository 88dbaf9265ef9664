//! The `feishu` platform: Feishu / Lark event subscription v2 over HTTP. Owns the
//! `X-Lark-Signature` check (plain SHA-256, not HMAC, over the raw body), the AES-256-CBC
//! envelope, the verification token, `url_verification`, and turning `im.message.receive_v1`
//! and `im.message.message_read_v1` into a [`ChatEvent`] or a typed event. The reply API
//! calls live in `feishu_api.rs`, the HTTP handler in `feishu_http.rs`.

use aes::Aes256;
use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ChatEvent, ChatKind};

/// How far `X-Lark-Request-Timestamp` may be from our clock. Feishu documents no window and
/// its SDKs check none; it retries failed pushes for hours (15 s, 5 min, 1 h, 6 h —
/// unverified schedule), so the window must outlast that: replays inside it are caught by
/// the event id, older ones by this.
pub const WINDOW_SECS: i64 = 24 * 60 * 60;

/// The event type of a read receipt, recorded for the delivery layer.
pub const MESSAGE_READ_KIND: &str = "feishu.message_read";

/// Why a Feishu callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeishuError {
    #[error(
        "missing X-Lark-Request-Timestamp, X-Lark-Request-Nonce or X-Lark-Signature; with an encrypt key set, Feishu signs every event"
    )]
    MissingSignature,
    #[error("X-Lark-Signature does not match; check the app's encrypt key")]
    BadSignature,
    #[error("X-Lark-Request-Timestamp must be Unix seconds")]
    BadTimestamp,
    #[error("X-Lark-Request-Timestamp is more than a day away from our clock; a replay?")]
    Stale,
    #[error("the verification token does not match; check the app's verification token")]
    BadToken,
    #[error("cannot decrypt the event: {0}; check the app's encrypt key")]
    Decrypt(&'static str),
    #[error("not a Feishu event: {0}")]
    Malformed(String),
}

/// `sha256_hex(timestamp + nonce + encrypt_key + raw_body)`, the `X-Lark-Signature` value.
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(timestamp.as_bytes());
    hasher.update(nonce.as_bytes());
    hasher.update(encrypt_key.as_bytes());
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// The signature headers of one request, as sent.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
}

/// Checks the signature over the raw body (constant time), then the timestamp window.
pub fn verify_signature(
    headers: SignedHeaders<'_>,
    encrypt_key: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), FeishuError> {
    let expected = signature(headers.timestamp, headers.nonce, encrypt_key, body);
    let given = headers.signature.trim().to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(FeishuError::BadSignature);
    }
    let sent_secs: i64 = Some(headers.timestamp.trim())
        .filter(|ts| !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|ts| ts.parse().ok())
        .ok_or(FeishuError::BadTimestamp)?;
    if (now_ms / 1000).abs_diff(sent_secs) > WINDOW_SECS.unsigned_abs() {
        return Err(FeishuError::Stale);
    }
    Ok(())
}

/// The AES key is the SHA-256 of the encrypt key as typed in the console.
pub fn aes_key(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// `base64(iv ‖ AES-256-CBC(PKCS#7/16))` → plaintext bytes.
pub fn decrypt(encrypt_key: &str, encrypted: &str) -> Result<Vec<u8>, FeishuError> {
    let raw = BASE64
        .decode(encrypted.trim())
        .map_err(|_| FeishuError::Decrypt("`encrypt` is not base64"))?;
    if raw.len() < 32 || raw.len() % 16 != 0 {
        return Err(FeishuError::Decrypt(
            "`encrypt` is not an IV followed by whole AES blocks",
        ));
    }
    let (iv, ciphertext) = raw.split_at(16);
    let key = aes_key(encrypt_key);
    cbc::Decryptor::<Aes256>::new_from_slices(&key, iv)
        .map_err(|_| FeishuError::Decrypt("bad key or IV length"))?
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| FeishuError::Decrypt("bad padding (wrong encrypt key?)"))
}

/// The inverse of [`decrypt`] with a chosen IV: how tests play Feishu.
#[cfg(test)]
pub fn encrypt(encrypt_key: &str, iv: [u8; 16], plaintext: &[u8]) -> String {
    use aes::cipher::BlockEncryptMut;
    let key = aes_key(encrypt_key);
    let ciphertext = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    BASE64.encode([iv.as_slice(), &ciphertext].concat())
}

/// Parses the body, decrypting `{"encrypt": …}` envelopes. An encrypted body without a
/// configured key (or the reverse) is a configuration mismatch, said so.
pub fn open(body: &[u8], encrypt_key: Option<&str>) -> Result<Value, FeishuError> {
    let outer: Value = serde_json::from_slice(body)
        .map_err(|e| FeishuError::Malformed(format!("the body is not JSON: {e}")))?;
    let Some(encrypted) = outer.get("encrypt") else {
        return Ok(outer);
    };
    let encrypted = encrypted
        .as_str()
        .ok_or_else(|| FeishuError::Malformed("`encrypt` is not a string".into()))?;
    let Some(key) = encrypt_key else {
        return Err(FeishuError::Malformed(
            "the event is encrypted but no encrypt_key_env is configured for this account".into(),
        ));
    };
    let plain = decrypt(key, encrypted)?;
    serde_json::from_slice(&plain)
        .map_err(|e| FeishuError::Malformed(format!("the decrypted event is not JSON: {e}")))
}

/// A verified, opened event.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `url_verification`: answer with the challenge.
    Challenge(String),
    /// A text message for the bot; `event_id` is the de-duplication key.
    Message { event_id: String, event: ChatEvent },
    /// A read receipt, recorded as [`MESSAGE_READ_KIND`].
    MessageRead { event_id: String, record: Value },
    /// Anything else (other event types, non-text messages): acknowledged, not run.
    Ignored { event_id: String, what: String },
}

/// Checks the verification token and sorts the event. v2 events carry the token in
/// `header.token`; `url_verification` and v1 events at the top level. When the request was
/// signed (`signed`), a missing token is accepted, as lark-oapi does: the signature already
/// proves the sender; a token that is present must still match.
pub fn classify(
    event: &Value,
    account: &str,
    verification_token: &str,
    signed: bool,
) -> Result<Incoming, FeishuError> {
    let is_v2 = event.get("schema").and_then(Value::as_str) == Some("2.0");
    let is_challenge = event.get("type").and_then(Value::as_str) == Some("url_verification");
    let token = if is_v2 {
        event.pointer("/header/token")
    } else {
        event.get("token")
    }
    .and_then(Value::as_str);
    let token_ok = match token {
        Some(token) => bool::from(token.as_bytes().ct_eq(verification_token.as_bytes())),
        None => signed && !is_challenge,
    };
    if !token_ok {
        return Err(FeishuError::BadToken);
    }
    if is_challenge {
        let challenge = text_at(event, "/challenge")?;
        return Ok(Incoming::Challenge(challenge.to_string()));
    }
    if !is_v2 {
        return Err(FeishuError::Malformed(
            "only event subscription v2 (`\"schema\": \"2.0\"`) is supported; switch the app's event format to v2".into(),
        ));
    }
    let event_id = text_at(event, "/header/event_id")?.to_string();
    let event_type = text_at(event, "/header/event_type")?;
    match event_type {
        "im.message.receive_v1" => message(event, event_id, account),
        "im.message.message_read_v1" => Ok(Incoming::MessageRead {
            record: json!({
                "reader": event.pointer("/event/reader").cloned().unwrap_or(Value::Null),
                "message_ids": event.pointer("/event/message_id_list").cloned().unwrap_or(Value::Null),
            }),
            event_id,
        }),
        other => Ok(Incoming::Ignored {
            event_id,
            what: other.to_string(),
        }),
    }
}

fn message(event: &Value, event_id: String, account: &str) -> Result<Incoming, FeishuError> {
    let message_type = text_at(event, "/event/message/message_type")?;
    if message_type != "text" {
        return Ok(Incoming::Ignored {
            event_id,
            what: format!("{message_type} message"),
        });
    }
    let chat_kind = match text_at(event, "/event/message/chat_type")? {
        "p2p" => ChatKind::Direct,
        // "group" and "topic_group" (unverified name) are both group chats.
        _ => ChatKind::Group,
    };
    // `content` is JSON inside a JSON string.
    let content: Value = serde_json::from_str(text_at(event, "/event/message/content")?)
        .map_err(|e| FeishuError::Malformed(format!("`message.content` is not JSON: {e}")))?;
    let raw_text = text_at(&content, "/text")?;
    let mentions = event
        .pointer("/event/message/mentions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(Incoming::Message {
        event: ChatEvent {
            platform: "feishu".to_string(),
            account: account.to_string(),
            chat: text_at(event, "/event/message/chat_id")?.to_string(),
            chat_kind,
            // open_id is always present; user_id needs an extra permission.
            sender: text_at(event, "/event/sender/sender_id/open_id")?.to_string(),
            // Feishu sends no sender name; it takes a contact API call.
            sender_name: None,
            text: strip_mentions(raw_text, mentions),
            message_id: Some(text_at(event, "/event/message/message_id")?.to_string()),
        },
        event_id,
    })
}

/// Mentions arrive as placeholders (`@_user_1`) listed in `mentions[].key`. Leading ones are
/// the address (the bot, possibly others) and go; later ones become `@name`.
pub fn strip_mentions(text: &str, mentions: &[Value]) -> String {
    let placeholders: Vec<(&str, &str)> = mentions
        .iter()
        .filter_map(|m| {
            let key = m.get("key")?.as_str().filter(|k| !k.is_empty())?;
            let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
            Some((key, name))
        })
        .collect();
    let mut rest = text.trim_start();
    // Longest key first, so `@_user_1` never eats the start of `@_user_10`.
    let mut by_length = placeholders.clone();
    by_length.sort_by_key(|(key, _)| std::cmp::Reverse(key.len()));
    while let Some((key, _)) = by_length.iter().find(|(key, _)| rest.starts_with(key)) {
        rest = rest[key.len()..].trim_start();
    }
    let mut text = rest.trim_end().to_string();
    for (key, name) in by_length {
        text = text.replace(key, &format!("@{name}"));
    }
    text
}

fn text_at<'a>(value: &'a Value, pointer: &str) -> Result<&'a str, FeishuError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| FeishuError::Malformed(format!("`{pointer}` is missing or not a string")))
}

#[cfg(test)]
#[path = "feishu_tests.rs"]
mod tests;
