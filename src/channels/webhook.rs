//! The generic signed webhook channel: POSTs each message as JSON to a URL the customer
//! runs, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`). The `webhook-id` is the job's idempotency key, so a receiver can
//! drop the duplicate that an at-least-once resend after a crash may produce.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use standardwebhooks::Webhook;

use super::http::{body_excerpt, client, retry_after, transport_failure};
use super::{AddressKind, Audience, Channel, Message, SendContext, SendResult, Verdict};
use crate::clock::SharedClock;

/// When a receiver says 429 without `Retry-After`.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

pub struct WebhookChannel {
    /// Parsed once: reqwest would parse (and IDNA-map) a string URL on every send.
    url: reqwest::Url,
    signer: Webhook,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("url", &self.url)
            .field("signer", &"[redacted]")
            .finish()
    }
}

/// Why a webhook secret cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the webhook secret is not `whsec_` followed by base64")]
pub struct BadSecret;

/// Decodes a `whsec_…` secret. The prefix is optional and padding is too: the Python
/// reference library accepts unpadded secrets while the Rust one does not, and customers
/// copy secrets from either.
/// Why a webhook channel cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookSetupError {
    #[error(transparent)]
    Secret(#[from] BadSecret),
    #[error("the webhook url is not a URL: {0}")]
    Url(String),
}

pub fn decode_secret(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    let encoded = encoded.trim_end_matches('=');
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded)
        .map_err(|_| BadSecret)?;
    if key.is_empty() {
        return Err(BadSecret);
    }
    Ok(key)
}

impl WebhookChannel {
    pub fn new(
        url: &str,
        secret: &SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, WebhookSetupError> {
        let url =
            reqwest::Url::parse(url).map_err(|error| WebhookSetupError::Url(error.to_string()))?;
        let key = decode_secret(secret.expose_secret())?;
        let signer = Webhook::from_bytes(key).map_err(|_| BadSecret)?;
        Ok(Self {
            url,
            signer,
            client: client(timeout),
            clock,
        })
    }

    fn classify(status: StatusCode, wait: Option<Duration>, detail: String) -> SendResult {
        let code = Some(status.as_u16());
        let verdict = match status.as_u16() {
            200..=299 => Verdict::Delivered,
            // Standard Webhooks: 410 tells the sender to disable the endpoint.
            410 | 401 | 403 | 404 => Verdict::AccountDisabled,
            429 => Verdict::RateLimited {
                wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
            },
            408 | 425 | 500..=599 => Verdict::Retryable { after: wait },
            // Any other answer refuses this request as written; resending it unchanged
            // would be refused again.
            _ => Verdict::ContentBlocked,
        };
        SendResult::new(verdict, code, detail)
    }
}

/// The body of a delivery, written straight to JSON (no intermediate value tree).
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
    data: EnvelopeData<'a>,
}

#[derive(Serialize)]
struct EnvelopeData<'a> {
    id: &'a str,
    job_id: i64,
    attempt: i64,
    to: &'a str,
    message: &'a Message,
}

#[async_trait::async_trait]
impl Channel for WebhookChannel {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::ExternalId)
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        let now_ms = self.clock.now_ms();
        let timestamp = now_ms.div_euclid(1000);
        let sent_at = jiff::Timestamp::from_second(timestamp)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let body = serde_json::to_string(&Envelope {
            kind: "message.send",
            timestamp: &sent_at,
            data: EnvelopeData {
                id: ctx.idempotency_key,
                job_id: ctx.job_id,
                attempt: ctx.attempt,
                to: ctx.recipient,
                message,
            },
        });
        let body = match body {
            Ok(body) => body,
            Err(error) => {
                return SendResult::new(
                    Verdict::ContentBlocked,
                    None,
                    format!("cannot encode the message: {error}"),
                );
            }
        };
        let signature = match self
            .signer
            .sign(ctx.idempotency_key, timestamp, body.as_bytes())
        {
            Ok(signature) => signature,
            Err(error) => {
                return SendResult::new(
                    Verdict::ContentBlocked,
                    None,
                    format!("cannot sign: {error}"),
                );
            }
        };
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", ctx.idempotency_key)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status();
                let wait = retry_after(response.headers(), now_ms);
                let detail = body_excerpt(response).await;
                Self::classify(status, wait, detail)
            }
            Err(error) => transport_failure(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_decode_with_or_without_prefix_and_padding() {
        let padded = decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            decode_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap(),
            padded
        );
        let unpadded = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(unpadded.len(), 24);
        assert_eq!(decode_secret("whsec_YWJj").unwrap(), b"abc");
        assert_eq!(decode_secret("whsec_YWI").unwrap(), b"ab");
        assert_eq!(decode_secret("whsec_YWI=").unwrap(), b"ab");
        assert_eq!(decode_secret("whsec_"), Err(BadSecret));
        assert_eq!(decode_secret("not base64!"), Err(BadSecret));
    }

    #[test]
    fn the_official_vector_signs_as_the_spec_says() {
        // [vec standard_webhooks-01]
        let key = decode_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signer = Webhook::from_bytes(key).unwrap();
        let signature = signer
            .sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .unwrap();
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn answers_are_classified_by_status() {
        let verdict = |code: u16, wait: Option<Duration>| {
            WebhookChannel::classify(StatusCode::from_u16(code).unwrap(), wait, String::new())
                .verdict
        };
        assert_eq!(verdict(204, None), Verdict::Delivered);
        assert_eq!(verdict(410, None), Verdict::AccountDisabled);
        assert_eq!(
            verdict(429, None),
            Verdict::RateLimited {
                wait: DEFAULT_RATE_LIMIT_WAIT
            }
        );
        assert_eq!(
            verdict(429, Some(Duration::from_secs(3))),
            Verdict::RateLimited {
                wait: Duration::from_secs(3)
            }
        );
        assert_eq!(verdict(503, None), Verdict::Retryable { after: None });
        assert_eq!(verdict(422, None), Verdict::ContentBlocked);
    }
}
