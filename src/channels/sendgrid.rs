//! E-mail through SendGrid's v3 Mail Send API (`POST {base_url}/v3/mail/send`), and its
//! signed Event Webhook: checked and read by pure functions here, routed and stored
//! elsewhere.

use std::time::Duration;

use base64::Engine as _;
use lettre::message::Mailbox;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::http::{body_excerpt, client, retry_after, transport_failure};
use super::smtp::{check_email, plain_part, subject};
use super::{AddressKind, Audience, Channel, ContentError, Message, SendContext, SendResult};
use super::{Receipt, ReceiptError, ReceiptRequest, ReceiptStatus, Verdict, truncate};
use crate::clock::SharedClock;

/// SendGrid's limit on a whole request, which it answers with 413 [unverified: 30 MB per
/// protocols.md 9.1]; checked before sending so the message is refused, not retried.
const REQUEST_LIMIT_BYTES: usize = 30 * 1024 * 1024;
/// Room left in the limit for the envelope: addresses, custom args, JSON punctuation.
const ENVELOPE_ALLOWANCE_BYTES: usize = 16 * 1024;
/// When a 429 names no reset time.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The account settings from the rules.
#[derive(Debug, Clone)]
pub struct SendgridSettings {
    pub base_url: String,
    pub from: String,
    /// The Event Webhook verification key (base64 SPKI DER); without it no event is
    /// accepted, since an unsigned event could be forged.
    pub event_public_key: Option<String>,
}

pub struct SendgridChannel {
    settings: SendgridSettings,
    from: Mailbox,
    api_key: SecretString,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for SendgridChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendgridChannel")
            .field("settings", &self.settings)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

impl SendgridChannel {
    pub fn new(
        settings: SendgridSettings,
        api_key: SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|error| format!("`from` is not an e-mail address: {error}"))?;
        Ok(Self {
            settings,
            from,
            api_key,
            client: client(timeout),
            clock,
        })
    }

    /// `content`: text/plain first, then text/html, in the order SendGrid requires.
    fn content(message: &Message) -> serde_json::Value {
        let mut parts = vec![json!({"type": "text/plain", "value": plain_part(message)})];
        if let Some(html) = message
            .html
            .as_deref()
            .filter(|html| !html.trim().is_empty())
        {
            parts.push(json!({"type": "text/html", "value": html}));
        }
        serde_json::Value::Array(parts)
    }

    fn body(&self, ctx: &SendContext<'_>, to: &str, message: &Message) -> serde_json::Value {
        let mut from = json!({"email": self.from.email.to_string()});
        if let Some(name) = &self.from.name {
            from["name"] = json!(name);
        }
        json!({
            "personalizations": [{"to": [{"email": to}]}],
            "from": from,
            "subject": subject(message),
            "content": Self::content(message),
            // Echoed in every event of this mail, so a receipt or a support case leads
            // back to the job even without the message id.
            "custom_args": {
                "qunfa_idempotency_key": ctx.idempotency_key,
                "qunfa_job_id": ctx.job_id.to_string(),
            },
        })
    }
}

#[async_trait::async_trait]
impl Channel for SendgridChannel {
    fn kind(&self) -> &'static str {
        "sendgrid"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::Email)
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        check_email(message)?;
        let size = serde_json::to_vec(&Self::content(message)).map_or(0, |bytes| bytes.len())
            + subject(message).len()
            + ENVELOPE_ALLOWANCE_BYTES;
        if size > REQUEST_LIMIT_BYTES {
            return Err(ContentError::new(format!(
                "the e-mail is {size} bytes as SendGrid receives it; at most {REQUEST_LIMIT_BYTES} are accepted"
            )));
        }
        Ok(())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check(message) {
            return SendResult::unsendable(&error);
        }
        let to = ctx.recipient.trim();
        if to.parse::<lettre::Address>().is_err() {
            return SendResult::new(
                Verdict::RecipientInvalid,
                None,
                format!("`{}` is not an e-mail address", truncate(to, 64)),
            );
        }
        let response = self
            .client
            .post(format!("{}/v3/mail/send", self.settings.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .json(&self.body(ctx, to, message))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return transport_failure(&error),
        };
        let status = response.status().as_u16();
        let wait = rate_limit_wait(response.headers(), self.clock.now_ms());
        let message_id = response
            .headers()
            .get("x-message-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let detail = body_excerpt(response).await;
        let result = SendResult::new(classify(status, wait, &detail), Some(status), detail);
        match message_id.filter(|_| result.verdict == Verdict::Delivered) {
            Some(id) => result.with_ref(id),
            None => result,
        }
    }

    fn receipts(&self, request: &ReceiptRequest<'_>) -> Option<Result<Vec<Receipt>, ReceiptError>> {
        Some(self.receive(request))
    }
}

impl SendgridChannel {
    /// An Event Webhook post. Its timestamp is not held to a window: SendGrid retries
    /// failed posts for hours and no tolerance is documented; a replay is harmless because
    /// each event is recorded once by its `sg_event_id`.
    fn receive(&self, request: &ReceiptRequest<'_>) -> Result<Vec<Receipt>, ReceiptError> {
        let Some(public_key) = &self.settings.event_public_key else {
            return Err(ReceiptError::Forged(
                "this channel sets no `event_public_key`, so SendGrid's signature cannot be \
                 checked"
                    .into(),
            ));
        };
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| ReceiptError::Forged(format!("no {name} header")))
        };
        let signature = header("x-twilio-email-event-webhook-signature")?;
        let timestamp = header("x-twilio-email-event-webhook-timestamp")?;
        if !verify_event_signature(public_key, timestamp, request.body, signature) {
            return Err(ReceiptError::Forged(
                "the Event Webhook signature does not match event_public_key".into(),
            ));
        }
        parse_events(request.body)
    }
}

/// How long a 429 asks to wait: until `X-RateLimit-Reset` (Unix seconds), else
/// `Retry-After`.
fn rate_limit_wait(headers: &HeaderMap, now_ms: i64) -> Option<Duration> {
    let reset = headers
        .get("x-ratelimit-reset")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<i64>().ok());
    match reset {
        Some(reset) => {
            let wait_ms = reset.saturating_mul(1000).saturating_sub(now_ms);
            Some(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)))
        }
        None => retry_after(headers, now_ms),
    }
}

/// SendGrid's answers by status (protocols.md 9.1). A 400 names the offending fields:
/// one under `personalizations…to` is this recipient's address.
fn classify(status: u16, wait: Option<Duration>, body: &str) -> Verdict {
    match status {
        // 202 accepted; 200 in sandbox mode, which accepts and sends nothing.
        200 | 202 => Verdict::Delivered,
        429 => Verdict::RateLimited {
            wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        },
        401 | 403 | 404 => Verdict::AccountDisabled,
        400 if recipient_field_refused(body) => Verdict::RecipientInvalid,
        500..=599 => Verdict::Retryable { after: wait },
        // 400 validation, 413 too large, anything else: the request as written.
        _ => Verdict::ContentBlocked,
    }
}

fn recipient_field_refused(body: &str) -> bool {
    let Ok(answer) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let Some(errors) = answer["errors"].as_array() else {
        return false;
    };
    !errors.is_empty()
        && errors.iter().all(|error| {
            error["field"]
                .as_str()
                .is_some_and(|field| field.starts_with("personalizations") && field.contains(".to"))
        })
}

// -- Event Webhook

/// Whether `signature` (header `X-Twilio-Email-Event-Webhook-Signature`, base64 DER)
/// is SendGrid's ECDSA P-256 / SHA-256 signature over `timestamp` (header
/// `X-Twilio-Email-Event-Webhook-Timestamp`) followed by the raw body, under the
/// account's verification key (`event_public_key`: base64 SPKI DER, PEM tolerated).
/// The bytes must be the body as received, never a re-serialisation.
pub fn verify_event_signature(
    public_key: &str,
    timestamp: &str,
    raw_body: &[u8],
    signature: &str,
) -> bool {
    let Some(key) = decode_public_key(public_key) else {
        return false;
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(signature) = Signature::from_der(&signature) else {
        return false;
    };
    let mut signed = Vec::with_capacity(timestamp.len() + raw_body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(raw_body);
    key.verify(&signed, &signature).is_ok()
}

fn decode_public_key(public_key: &str) -> Option<VerifyingKey> {
    let body: String = public_key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .flat_map(str::split_whitespace)
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    VerifyingKey::from_public_key_der(&der).ok()
}

/// Reads an Event Webhook body (a JSON array of events) into receipts. The
/// `provider_ref` is `sg_message_id` up to its first `.`, which is the `X-Message-Id`
/// the send recorded; `sg_event_id` identifies each event. Events without a message id
/// (some unsubscribe events) cannot be matched to a send and are skipped.
pub fn parse_events(raw_body: &[u8]) -> Result<Vec<Receipt>, ReceiptError> {
    let events: Vec<serde_json::Value> = serde_json::from_slice(raw_body).map_err(|error| {
        ReceiptError::Malformed(format!("the body is not a JSON array of events: {error}"))
    })?;
    let receipts = events
        .iter()
        .filter_map(|event| {
            let message_id = event["sg_message_id"].as_str()?;
            let provider_ref = message_id.split('.').next().unwrap_or(message_id);
            let name = event["event"].as_str()?;
            if provider_ref.is_empty() || name.is_empty() {
                return None;
            }
            let event_key = match event["sg_event_id"].as_str() {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => format!(
                    "{message_id}:{name}:{}",
                    event["timestamp"].as_i64().unwrap_or_default()
                ),
            };
            let status = match name {
                "delivered" => ReceiptStatus::Delivered,
                "bounce" | "dropped" => ReceiptStatus::Failed,
                other => ReceiptStatus::Other(other.to_string()),
            };
            // Bounces and drops say why: the enhanced status code and the server's words.
            let why: Vec<&str> = ["type", "status", "reason"]
                .iter()
                .filter_map(|field| event[*field].as_str())
                .filter(|text| !text.is_empty())
                .collect();
            let detail = if why.is_empty() {
                name.to_string()
            } else {
                truncate(&format!("{name}: {}", why.join(" ")), 512)
            };
            Some(Receipt {
                event_key,
                provider_ref: provider_ref.to_string(),
                status,
                detail,
            })
        })
        .collect();
    Ok(receipts)
}

#[cfg(test)]
#[path = "sendgrid_tests.rs"]
mod tests;
