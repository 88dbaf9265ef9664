//! Twilio Programmable Messaging: one SMS per recipient through
//! `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`, and the status callbacks
//! Twilio posts back to `status_callback_url`: checked and read by pure functions here,
//! routed and stored elsewhere.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::answer::{ANSWER_LIMIT, read_answer};
use super::http::{client, retry_after, transport_failure};
use super::render::{fit_chars, fit_sms, plain_text, require_text};
use super::{AddressKind, Audience, Channel, ContentError, Message, SendContext, SendResult};
use super::{Receipt, ReceiptError, ReceiptRequest, ReceiptStatus, Verdict, truncate};
use crate::clock::SharedClock;

/// Twilio refuses longer bodies with 21617, whatever the segment count.
const BODY_LIMIT_CHARS: usize = 1600;
/// Twilio's 429 usually comes without `Retry-After`; its advice is to back off briefly
/// and exponentially, which the delivery engine does on top of this first wait.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// The account settings from the rules.
#[derive(Debug, Clone)]
pub struct TwilioSmsSettings {
    pub base_url: String,
    pub account_sid: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub status_callback_url: Option<String>,
    pub max_segments: usize,
}

pub struct TwilioSmsChannel {
    settings: TwilioSmsSettings,
    auth_token: SecretString,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for TwilioSmsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioSmsChannel")
            .field("settings", &self.settings)
            .field("auth_token", &"[redacted]")
            .finish()
    }
}

impl TwilioSmsChannel {
    pub fn new(
        settings: TwilioSmsSettings,
        auth_token: SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            settings,
            auth_token,
            client: client(timeout),
            clock,
        }
    }

    fn body(message: &Message) -> String {
        plain_text(message)
    }
}

#[async_trait::async_trait]
impl Channel for TwilioSmsChannel {
    fn kind(&self) -> &'static str {
        "twilio_sms"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::Phone)
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        require_text(message)?;
        let body = Self::body(message);
        fit_chars("the SMS text", &body, BODY_LIMIT_CHARS)?;
        fit_sms(&body, self.settings.max_segments)?;
        Ok(())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check(message) {
            return SendResult::unsendable(&error);
        }
        let to = ctx.recipient.trim();
        if to.is_empty() {
            return SendResult::new(Verdict::RecipientInvalid, None, "no phone number");
        }
        let body = Self::body(message);
        let mut form: Vec<(&str, &str)> = vec![("To", to), ("Body", &body)];
        // With both set, Twilio sends from `From`, which must belong to the service.
        if let Some(service) = &self.settings.messaging_service_sid {
            form.push(("MessagingServiceSid", service));
        }
        if let Some(from) = &self.settings.from {
            form.push(("From", from));
        }
        if let Some(callback) = &self.settings.status_callback_url {
            form.push(("StatusCallback", callback));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.settings.base_url, self.settings.account_sid
        );
        let response = self
            .client
            .post(url)
            .basic_auth(
                &self.settings.account_sid,
                Some(self.auth_token.expose_secret()),
            )
            .form(&form)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return transport_failure(&error),
        };
        let status = response.status().as_u16();
        let wait = retry_after(response.headers(), self.clock.now_ms());
        let answer = read_answer(response, ANSWER_LIMIT).await;
        interpret(status, wait, answer.as_deref())
    }

    fn receipts(&self, request: &ReceiptRequest<'_>) -> Option<Result<Vec<Receipt>, ReceiptError>> {
        Some(self.receive(request))
    }
}

impl TwilioSmsChannel {
    /// A status callback: form fields signed over the URL we gave as `StatusCallback`.
    fn receive(&self, request: &ReceiptRequest<'_>) -> Result<Vec<Receipt>, ReceiptError> {
        let Some(url) = &self.settings.status_callback_url else {
            return Err(ReceiptError::Forged(
                "this channel sets no `status_callback_url`, so Twilio's signature cannot be \
                 checked"
                    .into(),
            ));
        };
        let signature = request
            .headers
            .get("x-twilio-signature")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ReceiptError::Forged("no X-Twilio-Signature header".into()))?;
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(request.body)
            .map_err(|error| ReceiptError::Malformed(format!("not a form body: {error}")))?;
        if !verify_status_callback(&self.auth_token, url, &form, signature) {
            return Err(ReceiptError::Forged(
                "X-Twilio-Signature does not match the auth token and status_callback_url".into(),
            ));
        }
        Ok(vec![parse_status_callback(&form)?])
    }
}

/// Turns Twilio's answer into a result. A 201 carries the message resource (`sid`,
/// `status`, `error_code`); an error carries `{"code", "message", "status"}`.
fn interpret(status: u16, wait: Option<Duration>, answer: Option<&[u8]>) -> SendResult {
    let detail = answer
        .map(|bytes| truncate(&String::from_utf8_lossy(bytes), super::DETAIL_LIMIT))
        .unwrap_or_else(|| "unreadable answer".to_string());
    let json: Option<serde_json::Value> =
        answer.and_then(|bytes| serde_json::from_slice(bytes).ok());
    let field_code = |name: &str| {
        json.as_ref().and_then(|value| match &value[name] {
            serde_json::Value::Number(number) => number.as_i64(),
            serde_json::Value::String(text) => text.parse().ok(),
            _ => None,
        })
    };
    let sid = json
        .as_ref()
        .and_then(|value| value["sid"].as_str())
        .map(str::to_string);
    let code = if (200..300).contains(&status) {
        // A message created but already failed (rare) names its error in `error_code`.
        let failed = json
            .as_ref()
            .and_then(|value| value["status"].as_str())
            .is_some_and(|state| matches!(state, "failed" | "undelivered"));
        if failed {
            field_code("error_code")
        } else {
            None
        }
    } else {
        field_code("code")
    };
    let result = SendResult::new(classify(status, code, wait), Some(status), detail);
    match sid {
        Some(sid) => result.with_ref(sid),
        None => result,
    }
}

/// Twilio's answers by HTTP status and error code (protocols.md 7.1, Twilio's error
/// dictionary). Codes marked there as unverified keep their documented meaning.
fn classify(status: u16, code: Option<i64>, retry_after: Option<Duration>) -> Verdict {
    match (status, code) {
        (_, Some(20429)) | (429, _) => Verdict::RateLimited {
            wait: retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        },
        // Bad credentials, wrong or closed account, `From` that cannot send SMS.
        (_, Some(20003 | 20005 | 20404 | 10001 | 21606 | 21659 | 21212)) | (401 | 403 | 404, _) => {
            Verdict::AccountDisabled
        }
        // Invalid, unreachable or landline numbers, numbers that replied STOP (21610),
        // regions the account may not send to, unverified numbers of a trial account:
        // nothing about this recipient changes by retrying on this channel.
        (
            _,
            Some(21211 | 21614 | 21635 | 21612 | 21610 | 21408 | 21608 | 30003 | 30005 | 30006),
        ) => Verdict::RecipientInvalid,
        // Carrier filtering and blocked messages, bodies that are too long or empty.
        (_, Some(30007 | 30004 | 21617 | 21602 | 30034)) => Verdict::ContentBlocked,
        (200..=299, None) => Verdict::Delivered,
        (500..=599, _) => Verdict::Retryable { after: retry_after },
        // Any other refusal is about the request as written; resending it cannot help.
        _ => Verdict::ContentBlocked,
    }
}

// -- status callbacks

/// Whether `signature` (the `X-Twilio-Signature` header) signs this form callback:
/// base64 HMAC-SHA1 keyed with the auth token over the exact public URL Twilio called,
/// followed by every POST parameter as name + value, sorted. Like Twilio's SDKs, the URL
/// is tried with and without its port, because Twilio is inconsistent about the default
/// port; a proxy that rewrites scheme, host or path breaks the check, so pass the URL
/// as configured in `status_callback_url`.
pub fn verify_status_callback(
    auth_token: &SecretString,
    full_public_url: &str,
    form_params: &[(String, String)],
    signature_header: &str,
) -> bool {
    let given = signature_header.trim().as_bytes();
    url_variants(full_public_url).iter().any(|url| {
        let expected = signature(auth_token, url, form_params);
        bool::from(expected.as_bytes().ct_eq(given))
    })
}

/// Whether a JSON-body callback is genuine: Twilio then adds `bodySHA256=<hex sha256 of
/// the body>` to the URL and signs the URL alone.
pub fn verify_json_callback(
    auth_token: &SecretString,
    full_public_url: &str,
    raw_body: &[u8],
    signature_header: &str,
) -> bool {
    let Some(claimed) = query_value(full_public_url, "bodySHA256") else {
        return false;
    };
    let actual = hex::encode(Sha256::digest(raw_body));
    let body_matches = bool::from(actual.as_bytes().ct_eq(claimed.to_lowercase().as_bytes()));
    body_matches && verify_status_callback(auth_token, full_public_url, &[], signature_header)
}

/// The base64 signature Twilio computes for `url` and `params`. Repeated parameters are
/// sorted by value and identical pairs counted once, as the SDKs do.
fn signature(auth_token: &SecretString, url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(auth_token.expose_secret().as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (name, value) in pairs {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL as given, without its port and with the scheme's default port.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // `host:port`, or `[v6]:port`; a colon inside the brackets is not a port.
    let port_colon = authority
        .rfind(':')
        .filter(|&colon| !authority[colon..].contains(']'));
    let host = match port_colon {
        Some(colon) => &authority[..colon],
        None => authority,
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    variants.push(format!("{scheme}://{host}{tail}"));
    if port_colon.is_none() {
        variants.push(format!("{scheme}://{host}:{default_port}{tail}"));
    }
    variants.dedup();
    variants
}

fn query_value<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Reads a status callback's form fields into a receipt for `MessageSid` (the
/// `provider_ref` the send recorded). Twilio may post the same status twice and statuses
/// out of order, so the event key is the (sid, status) pair.
pub fn parse_status_callback(form: &[(String, String)]) -> Result<Receipt, ReceiptError> {
    let field = |name: &str| {
        form.iter()
            .find(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| value.trim().to_string())
    };
    let sid = field("MessageSid")
        .or_else(|| field("SmsSid"))
        .ok_or_else(|| ReceiptError::Malformed("the callback has no MessageSid".into()))?;
    let name = field("MessageStatus")
        .or_else(|| field("SmsStatus"))
        .ok_or_else(|| ReceiptError::Malformed("the callback has no MessageStatus".into()))?;
    let status = match name.as_str() {
        "delivered" => ReceiptStatus::Delivered,
        // `canceled`: a scheduled message that will never be sent.
        "undelivered" | "failed" | "canceled" => ReceiptStatus::Failed,
        _ => ReceiptStatus::Other(name.clone()),
    };
    let detail = match field("ErrorCode") {
        Some(code) => format!("{name} (Twilio error {code})"),
        None => name.clone(),
    };
    Ok(Receipt {
        event_key: format!("{sid}:{name}"),
        provider_ref: sid,
        status,
        detail,
    })
}

#[cfg(test)]
#[path = "twilio_sms_tests.rs"]
mod tests;
