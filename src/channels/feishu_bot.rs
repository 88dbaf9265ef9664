//! Feishu / Lark custom group bot (自定义机器人): `POST {base_url}/open-apis/bot/v2/hook/{token}`.
//! With signing on, the body carries `timestamp` (unix SECONDS, as a string) and
//! `sign = base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = ""))`: the secret
//! is in the key and the message is empty, unlike DingTalk's robot (milliseconds, secret as
//! key, timestamp as message), which peers copied and got 19021 on every send.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::Sha256;

use super::feishu_content::{Content, Mentions, render};
use super::http::{body_excerpt, client, retry_after, transport_failure};
use super::render::{ContentError, require_text};
use super::{AddressKind, Audience, Channel, Message, SendContext, SendResult, Verdict};
use crate::clock::SharedClock;

/// "请求体的数据大小不能超过 20 KB" [doc]. Counted as 20 000 bytes: an oversize body is
/// answered 9499, which this table must treat as rate limiting (see [`classify`]), so the
/// check errs on the small side rather than risk a body Feishu refuses for ever.
pub const BODY_LIMIT: usize = 20_000;

/// How long to hold off after 9499 / 11232 when Feishu gives no hint: the bot's quota is
/// counted per minute (100/min, 5/s), so a minute always clears it.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

pub struct FeishuBotChannel {
    /// The hook URL; its last segment is the bot's credential.
    hook_url: SecretString,
    secret: Option<SecretString>,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for FeishuBotChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuBotChannel")
            .field("hook_url", &"[redacted]")
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

/// The custom-bot signature for `timestamp` (seconds).
pub fn sign(timestamp: i64, secret: &str) -> String {
    let key = format!("{timestamp}\n{secret}");
    // HMAC takes keys of any length, so this never falls back; the fallback only keeps
    // the function total.
    let digest = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac.finalize().into_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    base64::engine::general_purpose::STANDARD.encode(digest)
}

impl FeishuBotChannel {
    pub fn new(
        base_url: &str,
        hook_token: &SecretString,
        secret: Option<SecretString>,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let token = hook_token.expose_secret().trim();
        // The token is a path segment; anything else would change the URL.
        if token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        {
            return Err(
                "the hook token must be the last path segment of the bot's webhook URL \
                 (letters, digits, `-`, `_`)"
                    .to_string(),
            );
        }
        let hook_url = format!(
            "{}/open-apis/bot/v2/hook/{token}",
            base_url.trim_end_matches('/')
        );
        Ok(Self {
            hook_url: SecretString::from(hook_url),
            secret,
            client: client(timeout),
            clock,
        })
    }

    /// The request body; `signature` is (timestamp in seconds, sign).
    fn body(content: &Content, signature: Option<(i64, String)>) -> Value {
        let mut body = match content {
            Content::Card(card) => json!({"msg_type": "interactive", "card": card}),
            Content::Post(post) => json!({"msg_type": "post", "content": {"post": post}}),
            Content::Text(text) => json!({"msg_type": "text", "content": text}),
        };
        if let Some((timestamp, sign)) = signature {
            body["timestamp"] = Value::String(timestamp.to_string());
            body["sign"] = Value::String(sign);
        }
        body
    }

    /// The body as sent for `mentions`, refused when over [`BODY_LIMIT`].
    fn fitted_body(
        &self,
        message: &Message,
        mentions: &Mentions,
        timestamp: i64,
    ) -> Result<String, ContentError> {
        require_text(message)?;
        let content = render(message, mentions);
        let signature = self
            .secret
            .as_ref()
            .map(|secret| (timestamp, sign(timestamp, secret.expose_secret())));
        let body = Self::body(&content, signature).to_string();
        if body.len() > BODY_LIMIT {
            return Err(ContentError::new(format!(
                "the Feishu bot request would be {} bytes; a custom bot takes at most {BODY_LIMIT}",
                body.len()
            )));
        }
        Ok(body)
    }

    /// Feishu answers HTTP 200 for most outcomes; `code` (or the legacy `StatusCode`)
    /// decides. Custom-bot codes [doc unless noted].
    pub fn classify(status: StatusCode, wait: Option<Duration>, detail: String) -> SendResult {
        let code = serde_json::from_str::<Value>(&detail)
            .ok()
            .and_then(|answer| {
                answer
                    .get("code")
                    .or_else(|| answer.get("StatusCode"))
                    .and_then(Value::as_i64)
            });
        let rate_limited = Verdict::RateLimited {
            wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        };
        let verdict = match code {
            Some(0) if status.is_success() => Verdict::Delivered,
            // 9499 is documented as "Bad Request" (malformed or over 20 KB, which the body
            // check rules out) and seen as "too many request" under load; 11232 is the
            // frequency limit. Neither is ever a success.
            Some(9499 | 11232) => rate_limited,
            // 19021: sign mismatch or timestamp over an hour off; 19022: IP not allowed;
            // 19001: the hook token is invalid (bot removed) [obs]. Configuration, not
            // something a retry fixes.
            Some(19021 | 19022 | 19001) => Verdict::AccountDisabled,
            // 19024: none of the bot's keywords in the message.
            Some(19024) => Verdict::ContentBlocked,
            // A code this table does not know, on a 2xx: the request was refused as
            // written, not delivered.
            Some(_) if status.is_success() => Verdict::ContentBlocked,
            _ => by_status(status, rate_limited),
        };
        SendResult::new(verdict, Some(status.as_u16()), detail)
    }
}

/// Answers without a code this table knows.
fn by_status(status: StatusCode, rate_limited: Verdict) -> Verdict {
    match status.as_u16() {
        429 => rate_limited,
        408 | 425 | 500..=599 => Verdict::Retryable { after: None },
        // Success without a readable code: not a confirmed delivery.
        200..=299 => Verdict::Retryable { after: None },
        // A wrong hook token or base URL.
        401 | 403 | 404 | 410 => Verdict::AccountDisabled,
        // Refused as written; the same body would be refused again.
        _ => Verdict::ContentBlocked,
    }
}

#[async_trait::async_trait]
impl Channel for FeishuBotChannel {
    fn kind(&self) -> &'static str {
        "feishu_bot"
    }

    fn audience(&self) -> Audience {
        Audience::Group(AddressKind::FeishuOpenId)
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        // The timestamp's width is fixed (ten digits until 2286), so any time measures the
        // same size as the real send.
        let timestamp = self.clock.now_ms().div_euclid(1000);
        self.fitted_body(message, &Mentions::of(message, None), timestamp)
            .map(drop)
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check(message) {
            return SendResult::unsendable(&error);
        }
        let recipient = Some(ctx.recipient).filter(|r| !r.trim().is_empty());
        let now_ms = self.clock.now_ms();
        let body = match self.fitted_body(
            message,
            &Mentions::of(message, recipient),
            now_ms.div_euclid(1000),
        ) {
            Ok(body) => body,
            Err(error) => return SendResult::unsendable(&error),
        };
        let response = self
            .client
            .post(self.hook_url.expose_secret())
            .header("content-type", "application/json; charset=utf-8")
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
#[path = "feishu_bot_tests.rs"]
mod tests;
