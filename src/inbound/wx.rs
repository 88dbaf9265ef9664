//! Pieces shared by the WeCom and WeChat Official Account callbacks: the raw query string
//! decoded the way the platform encodes it, the timestamp window, and the flat `<xml>`
//! documents both platforms exchange (read into fields, written with CDATA).

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::ChatEvent;
use super::crypto::MsgCrypt;

/// Neither WeCom nor WeChat documents a clock-skew limit and their SDKs check none
/// (protocols.md §1.1, §2.1, unverified). Five minutes either way is a defensive choice:
/// wide enough for honest clock drift and the platform's 5 s × 3 retries, narrow enough that
/// a captured callback cannot be replayed much later; de-duplication by message id covers
/// replays inside the window.
pub const WINDOW_SECS: i64 = 300;

/// A bound on the fields of a callback document; real ones have about ten.
const MAX_FIELDS: usize = 64;

/// A platform event that is not a chat message but matters to the delivery and campaign
/// layers (a card button click, a send-job result): recorded under `kind`, once per `event_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedEvent {
    /// `<platform>.<what>`, e.g. `wechat_oa.template_send_finished`.
    pub kind: &'static str,
    pub event_id: String,
    pub payload: serde_json::Value,
}

/// What a verified, decrypted callback turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Message(ChatEvent),
    Event(TypedEvent),
    /// Something the bot neither answers nor records (an image, a menu view, a subscribe):
    /// acknowledged so the platform stops retrying. Names what it was, for the debug log.
    Ignored(String),
}

/// Query parameters, percent-decoded but with `+` kept: the values are base64 and hex, and
/// form decoding would turn a `+` that a proxy left unencoded into a space and break the
/// signature (protocols.md gotcha).
pub fn query_params(query: Option<&str>) -> HashMap<String, String> {
    let mut params = HashMap::new();
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        // The first occurrence wins, as in the platforms' own samples.
        params
            .entry(key.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    params
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("`timestamp` must be Unix seconds")]
    NotSeconds,
    #[error("the timestamp is {0} s away from our clock, outside the {WINDOW_SECS} s window")]
    Outside(i64),
}

/// Accepts `timestamp` (Unix seconds, as both platforms send) within [`WINDOW_SECS`] of `now_ms`.
pub fn check_window(timestamp: &str, now_ms: i64) -> Result<(), WindowError> {
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WindowError::NotSeconds)?;
    let skew = seconds.saturating_sub(now_ms.div_euclid(1000));
    if skew.unsigned_abs() > WINDOW_SECS.unsigned_abs() {
        return Err(WindowError::Outside(skew));
    }
    Ok(())
}

/// The direct children of the root element, name → text. Nested elements (the article
/// lists of mass-send results) are skipped: nothing here reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XmlFields(Vec<(String, String)>);

impl XmlFields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The field trimmed, or `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }
}

/// Why a callback document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is not well-formed XML: {0}")]
    Syntax(String),
    #[error("the XML document has no root element")]
    Empty,
    #[error("the XML document has more than one root element")]
    SeveralRoots,
    #[error("the XML field <{0}> appears twice")]
    Duplicate(String),
    #[error("the XML document has too many fields")]
    TooMany,
}

/// Reads a flat callback document such as `<xml><ToUserName><![CDATA[x]]></ToUserName>…</xml>`.
pub fn parse_xml(document: &str) -> Result<XmlFields, XmlError> {
    let mut reader = Reader::from_str(document);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    // The child being read and its text so far; text of deeper elements is not collected.
    let mut current: Option<(String, String)> = None;
    let syntax = |error: quick_xml::Error| XmlError::Syntax(error.to_string());
    loop {
        match reader.read_event().map_err(syntax)? {
            Event::Start(start) => {
                depth += 1;
                if depth == 1 {
                    roots += 1;
                    if roots > 1 {
                        return Err(XmlError::SeveralRoots);
                    }
                } else if depth == 2 {
                    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    current = Some((name, String::new()));
                }
            }
            Event::Empty(empty) => match depth {
                0 => {
                    roots += 1;
                    if roots > 1 {
                        return Err(XmlError::SeveralRoots);
                    }
                }
                1 => {
                    let name = String::from_utf8_lossy(empty.name().as_ref()).into_owned();
                    push_field(&mut fields, name, String::new())?;
                }
                _ => {}
            },
            Event::End(_) => {
                if depth == 2
                    && let Some((name, value)) = current.take()
                {
                    push_field(&mut fields, name, value)?;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(text) => {
                if depth == 2
                    && let Some((_, value)) = current.as_mut()
                {
                    value.push_str(&text.unescape().map_err(syntax)?);
                } else if depth < 2 && !text.unescape().map_err(syntax)?.trim().is_empty() {
                    return Err(XmlError::Syntax("text outside the fields".to_string()));
                }
            }
            Event::CData(cdata) => {
                if depth == 2
                    && let Some((_, value)) = current.as_mut()
                {
                    value.push_str(&String::from_utf8_lossy(&cdata.into_inner()));
                }
            }
            Event::DocType(_) => {
                return Err(XmlError::Syntax("DOCTYPE is not allowed".to_string()));
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
        }
    }
    if depth != 0 {
        return Err(XmlError::Syntax("unclosed element".to_string()));
    }
    if roots == 0 {
        return Err(XmlError::Empty);
    }
    Ok(XmlFields(fields))
}

fn push_field(
    fields: &mut Vec<(String, String)>,
    name: String,
    value: String,
) -> Result<(), XmlError> {
    if fields.iter().any(|(key, _)| *key == name) {
        return Err(XmlError::Duplicate(name));
    }
    if fields.len() >= MAX_FIELDS {
        return Err(XmlError::TooMany);
    }
    fields.push((name, value));
    Ok(())
}

/// Writes `<name><![CDATA[value]]></name>`; a `]]>` inside the value is split across two
/// sections so user text can never close the section early.
pub fn push_cdata(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push_str("><![CDATA[");
    out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]></");
    out.push_str(name);
    out.push('>');
}

/// Writes `<name>value</name>` for values that are digits by construction (timestamps).
pub fn push_number(out: &mut String, name: &str, value: i64) {
    out.push_str(&format!("<{name}>{value}</{name}>"));
}

/// Encrypts a reply document and wraps it in the signed XML envelope (the self-built app and WeChat OA safe mode).
pub fn seal_reply(crypt: &MsgCrypt, message: &str, now_secs: i64, nonce: &str) -> String {
    let encrypt = crypt.encrypt(message);
    let timestamp = now_secs.to_string();
    let signature = crypt.signature(&timestamp, nonce, &encrypt);
    let mut envelope = String::from("<xml>");
    push_cdata(&mut envelope, "Encrypt", &encrypt);
    push_cdata(&mut envelope, "MsgSignature", &signature);
    push_number(&mut envelope, "TimeStamp", now_secs);
    push_cdata(&mut envelope, "Nonce", nonce);
    envelope.push_str("</xml>");
    envelope
}

#[cfg(test)]
#[path = "wx_tests.rs"]
mod tests;
