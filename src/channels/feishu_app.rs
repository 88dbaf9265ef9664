//! Feishu / Lark self-built app messages, one per person:
//! `POST {base_url}/open-apis/im/v1/messages?receive_id_type=open_id` with a
//! `tenant_access_token` (`/open-apis/auth/v3/tenant_access_token/internal`, cached and
//! refreshed once within a send when Feishu refuses it). Each request carries a `uuid`
//! derived from the job's idempotency key, so a resend after a crash within the hour is
//! dropped by Feishu instead of reaching the person twice. The answer's
//! `data.message_id` is kept: read status (`read_users`, `im.message.message_read_v1`) is
//! asked for by it.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::feishu_content::{Content, Mentions, render};
use super::http::{body_excerpt, client, retry_after, transport_failure};
use super::render::{ContentError, require_text};
use super::tokens::TokenCache;
use super::{AddressKind, Audience, Channel, Message, SendContext, SendResult, Verdict};
use crate::clock::SharedClock;

/// Request body limits of `im/v1/messages` [doc]: 150 KB for text, 30 KB for post and
/// cards; counted in thousands of bytes to stay on the safe side of either reading of KB.
pub const TEXT_BODY_LIMIT: usize = 150_000;
pub const RICH_BODY_LIMIT: usize = 30_000;

/// When a rate-limit answer carries no reset hint: the app quota is counted per minute.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// 230020 is the per-chat limit (5 a second to one person): a second clears it.
const PER_CHAT_WAIT: Duration = Duration::from_secs(1);
/// When Feishu's token answer lacks `expire` (it documents 7200 s).
const FALLBACK_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

const TOKEN_PATH: &str = "/open-apis/auth/v3/tenant_access_token/internal";
const SEND_PATH: &str = "/open-apis/im/v1/messages?receive_id_type=open_id";

pub struct FeishuAppChannel {
    app_id: String,
    app_secret: SecretString,
    token_url: String,
    send_url: String,
    client: reqwest::Client,
    clock: SharedClock,
    tokens: TokenCache,
}

impl std::fmt::Debug for FeishuAppChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuAppChannel")
            .field("app_id", &self.app_id)
            .field("app_secret", &"[redacted]")
            .field("send_url", &self.send_url)
            .finish()
    }
}

/// Codes that mean the tenant token was refused (missing, invalid, expired): worth one
/// fresh token. 99991661/99991663 [doc]; the rest are what lark-oapi refreshes on [sdk].
fn is_token_refused(code: i64) -> bool {
    matches!(
        code,
        99991661 | 99991663 | 99991664 | 99991665 | 99991666 | 99991668
    )
}

/// A stable de-duplication key of at most 50 characters: the same job to the same person
/// gives the same uuid on every attempt.
pub fn message_uuid(idempotency_key: &str, recipient: &str) -> String {
    let digest = Sha256::digest(format!("{idempotency_key}\n{recipient}").as_bytes());
    format!("qunfa-{}", hex::encode(&digest[..16]))
}

/// `code` and `msg` of a Feishu OpenAPI answer.
fn code_and_msg(detail: &str) -> (Option<i64>, String, Option<Value>) {
    let answer = serde_json::from_str::<Value>(detail).ok();
    let code = answer
        .as_ref()
        .and_then(|a| a.get("code"))
        .and_then(Value::as_i64);
    let msg = answer
        .as_ref()
        .and_then(|a| a.get("msg"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (code, msg, answer)
}

/// The wait Feishu's gateway asks for: `x-ogw-ratelimit-reset` (seconds) [doc], else
/// `Retry-After`.
fn rate_limit_wait(headers: &HeaderMap, now_ms: i64) -> Option<Duration> {
    headers
        .get("x-ogw-ratelimit-reset")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .or_else(|| retry_after(headers, now_ms))
}

/// Answers whose code is not in a table: by HTTP status.
fn by_status(status: StatusCode, wait: Option<Duration>) -> Verdict {
    match status.as_u16() {
        429 => Verdict::RateLimited {
            wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        },
        408 | 425 | 500..=599 => Verdict::Retryable { after: wait },
        // A 2xx without a readable code is not a confirmed delivery.
        200..=299 => Verdict::Retryable { after: None },
        401 | 403 => Verdict::AccountDisabled,
        // Refused as written; the same request would be refused again.
        _ => Verdict::ContentBlocked,
    }
}

impl FeishuAppChannel {
    pub fn new(
        base_url: &str,
        app_id: &str,
        app_secret: SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/');
        Self {
            app_id: app_id.to_string(),
            app_secret,
            token_url: format!("{base_url}{TOKEN_PATH}"),
            send_url: format!("{base_url}{SEND_PATH}"),
            client: client(timeout),
            clock,
            tokens: TokenCache::default(),
        }
    }

    /// The request body, refused when over the limit for its message type.
    fn request_body(
        message: &Message,
        receive_id: &str,
        uuid: &str,
    ) -> Result<String, ContentError> {
        require_text(message)?;
        // One person per message: a 1:1 chat has no one to @mention.
        let content = render(message, &Mentions::default());
        let limit = match content {
            Content::Text(_) => TEXT_BODY_LIMIT,
            Content::Post(_) | Content::Card(_) => RICH_BODY_LIMIT,
        };
        let body = json!({
            "receive_id": receive_id,
            "msg_type": content.msg_type(),
            "content": content.value().to_string(),
            "uuid": uuid,
        })
        .to_string();
        if body.len() > limit {
            return Err(ContentError::new(format!(
                "the Feishu {} message would be {} bytes; at most {limit} are accepted",
                content.msg_type(),
                body.len()
            )));
        }
        Ok(body)
    }

    /// `im/v1/messages` answers [doc: "Per-user delivery" 3.6 and protocols.md 4.5].
    pub fn classify(status: StatusCode, wait: Option<Duration>, detail: String) -> SendResult {
        let (code, msg, answer) = code_and_msg(&detail);
        let verdict = match code {
            Some(0) if status.is_success() => {
                let message_id = answer
                    .as_ref()
                    .and_then(|a| a.pointer("/data/message_id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let result = SendResult::delivered(Some(status.as_u16()), &detail);
                return match message_id {
                    Some(id) => result.with_ref(id),
                    None => result,
                };
            }
            // The gateway's app / tenant limit (HTTP 429; HTTP 400 on old APIs).
            Some(99991400) => Verdict::RateLimited {
                wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
            },
            Some(230020) => Verdict::RateLimited {
                wait: wait.unwrap_or(PER_CHAT_WAIT),
            },
            // Still refused after a fresh token (the send retries once before this).
            Some(code) if is_token_refused(code) => Verdict::AccountDisabled,
            // Bot not in the chat, app not available to the user, receive_id invalid, user
            // resigned, user stopped the bot; 99992361 "open_id cross app" [obs].
            Some(230002 | 230013 | 230029 | 230034 | 230053 | 99992361) => {
                Verdict::RecipientInvalid
            }
            // 230001 is "invalid parameter"; its `ext=` names the field.
            Some(230001) if msg.contains("receive_id") => Verdict::RecipientInvalid,
            // Sensitive content, failed audit, content too long.
            Some(230022 | 230025 | 230028) => Verdict::ContentBlocked,
            // Bot ability off, permission missing, send permission denied.
            Some(230006 | 230027 | 230035) => Verdict::AccountDisabled,
            // A code this table does not know, on a 2xx: refused as written.
            Some(_) if status.is_success() => Verdict::ContentBlocked,
            _ => by_status(status, wait),
        };
        SendResult::new(verdict, Some(status.as_u16()), detail)
    }

    /// The tenant token endpoint's failures. Its only inputs are the app's id and secret,
    /// so a refusal that is neither rate limiting nor a server fault is configuration.
    fn classify_token_failure(
        status: StatusCode,
        wait: Option<Duration>,
        detail: &str,
    ) -> SendResult {
        let (code, _, _) = code_and_msg(detail);
        let verdict = match code {
            Some(99991400) => Verdict::RateLimited {
                wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
            },
            // 10003 invalid app_id, 10014 app secret invalid, and the like.
            Some(code) if code != 0 && !status.is_server_error() => Verdict::AccountDisabled,
            _ => by_status(status, wait),
        };
        SendResult::new(
            verdict,
            Some(status.as_u16()),
            format!("tenant_access_token: {detail}"),
        )
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration), SendResult> {
        let now_ms = self.clock.now_ms();
        let body = json!({
            "app_id": self.app_id,
            "app_secret": self.app_secret.expose_secret(),
        });
        let response = self
            .client
            .post(&self.token_url)
            .json(&body)
            .send()
            .await
            .map_err(|error| transport_failure(&error))?;
        let status = response.status();
        let wait = rate_limit_wait(response.headers(), now_ms);
        let detail = body_excerpt(response).await;
        let (code, _, answer) = code_and_msg(&detail);
        let token = answer
            .as_ref()
            .and_then(|a| a.get("tenant_access_token"))
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty());
        match (code, token) {
            (Some(0), Some(token)) if status.is_success() => {
                let lifetime = answer
                    .as_ref()
                    .and_then(|a| a.get("expire"))
                    .and_then(Value::as_u64)
                    .filter(|seconds| *seconds > 0)
                    .map_or(FALLBACK_TOKEN_LIFETIME, Duration::from_secs);
                Ok((SecretString::from(token.to_string()), lifetime))
            }
            // Never let a token into the detail: a success without one says only that.
            (Some(0), _) if status.is_success() => Err(SendResult::new(
                Verdict::Retryable { after: None },
                Some(status.as_u16()),
                "tenant_access_token: the answer has no token",
            )),
            _ => Err(Self::classify_token_failure(status, wait, &detail)),
        }
    }

    /// One call with the current token. `Err` carries the result when the token itself
    /// was refused, so the caller can fetch a fresh one.
    async fn post_once(&self, body: &str) -> Result<SendResult, SendResult> {
        let token = match self
            .tokens
            .get_or_fetch(&self.app_id, || self.fetch_token())
            .await
        {
            Ok(token) => token,
            Err(result) => return Ok(result),
        };
        let now_ms = self.clock.now_ms();
        let response = self
            .client
            .post(&self.send_url)
            .bearer_auth(token.expose_secret())
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return Ok(transport_failure(&error)),
        };
        let status = response.status();
        let wait = rate_limit_wait(response.headers(), now_ms);
        let detail = body_excerpt(response).await;
        let refused = code_and_msg(&detail).0.is_some_and(is_token_refused);
        let result = Self::classify(status, wait, detail);
        if refused { Err(result) } else { Ok(result) }
    }
}

#[async_trait::async_trait]
impl Channel for FeishuAppChannel {
    fn kind(&self) -> &'static str {
        "feishu_app"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::FeishuOpenId)
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        // An open_id is `ou_` + 32 hex digits; a sample of that length measures the same.
        Self::request_body(message, &format!("ou_{:032}", 0), &message_uuid("", "")).map(drop)
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check(message) {
            return SendResult::unsendable(&error);
        }
        let receive_id = ctx.recipient.trim();
        if receive_id.is_empty() {
            return SendResult::new(
                Verdict::RecipientInvalid,
                None,
                "the recipient has no feishu_open_id",
            );
        }
        let uuid = message_uuid(ctx.idempotency_key, receive_id);
        let body = match Self::request_body(message, receive_id, &uuid) {
            Ok(body) => body,
            Err(error) => return SendResult::unsendable(&error),
        };
        match self.post_once(&body).await {
            Ok(result) => result,
            Err(_) => {
                // Feishu refused a token the cache thought valid (revoked, or a second
                // instance's refresh): one fresh token, one more try, within this send.
                self.tokens.invalidate(&self.app_id).await;
                match self.post_once(&body).await {
                    Ok(result) | Err(result) => result,
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "feishu_app_tests.rs"]
mod tests;
