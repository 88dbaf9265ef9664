//! Slack, two ways. An incoming webhook posts to the one channel it was made for (the
//! whole URL is the secret) and @mentions the job's recipient there; a bot token posts
//! with `chat.postMessage` to each recipient's user or channel id, and keeps the message
//! `ts` as the provider reference. Both honour HTTP 429 with `Retry-After`.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::http::{body_excerpt, client, retry_after, transport_failure};
use super::render::ContentError;
use super::slack_render::{Rendered, mention_prefix, render, safe_ids};
use super::{AddressKind, Audience, Channel, Message, SendContext, SendResult, Verdict};
use crate::clock::SharedClock;

/// When Slack answers 429 without `Retry-After` (it documents that it always sends one).
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

enum Mode {
    Webhook {
        url: SecretString,
    },
    Bot {
        token: SecretString,
        post_url: String,
    },
}

pub struct SlackChannel {
    mode: Mode,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Webhook { .. } => "incoming webhook [redacted]",
            Mode::Bot { post_url, .. } => post_url,
        };
        f.debug_struct("SlackChannel")
            .field("mode", &mode)
            .field("token", &"[redacted]")
            .finish()
    }
}

impl SlackChannel {
    /// An incoming-webhook channel. The URL is checked here so a typo disables the channel
    /// with a reason instead of failing every send; the reason never repeats the URL.
    pub fn webhook(
        url: SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        match reqwest::Url::parse(url.expose_secret().trim()) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(Self {
                mode: Mode::Webhook { url },
                client: client(timeout),
                clock,
            }),
            _ => Err("the incoming webhook URL is not an http(s) URL".to_string()),
        }
    }

    /// A bot-token channel posting to `{base_url}/chat.postMessage`.
    pub fn bot(base_url: &str, token: SecretString, timeout: Duration, clock: SharedClock) -> Self {
        Self {
            mode: Mode::Bot {
                token,
                post_url: format!("{}/chat.postMessage", base_url.trim_end_matches('/')),
            },
            client: client(timeout),
            clock,
        }
    }

    fn rendered(&self, message: &Message, recipient: &str) -> Result<Rendered, ContentError> {
        // In a webhook's channel the recipient is someone to @mention; a bot posts to the
        // recipient itself.
        let group_recipient = match self.mode {
            Mode::Webhook { .. } => Some(recipient).filter(|r| !r.trim().is_empty()),
            Mode::Bot { .. } => None,
        };
        let ids = safe_ids(
            group_recipient
                .into_iter()
                .chain(message.mentions.iter().map(String::as_str)),
        );
        render(message, &mention_prefix(&ids, message.mention_all))
    }

    /// `chat.postMessage` answers: HTTP 200 with `ok`, or `ok: false` and an `error` [doc].
    pub fn classify_api(status: StatusCode, wait: Option<Duration>, detail: String) -> SendResult {
        let answer = serde_json::from_str::<Value>(&detail).ok();
        let ok = answer
            .as_ref()
            .and_then(|a| a.get("ok"))
            .and_then(Value::as_bool);
        let error = answer
            .as_ref()
            .and_then(|a| a.get("error"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let rate_limited = Verdict::RateLimited {
            wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        };
        let verdict = match (status.as_u16(), ok) {
            (429, _) => rate_limited,
            (200..=299, Some(true)) => {
                let ts = answer
                    .as_ref()
                    .and_then(|a| a.get("ts"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let result = SendResult::delivered(Some(status.as_u16()), &detail);
                return match ts {
                    Some(ts) => result.with_ref(ts),
                    None => result,
                };
            }
            (_, Some(false)) => match error {
                "ratelimited" | "rate_limited" => rate_limited,
                "channel_not_found"
                | "not_in_channel"
                | "is_archived"
                | "messages_tab_disabled"
                | "restricted_action"
                | "restricted_action_read_only_channel"
                | "restricted_action_thread_only_channel"
                | "restricted_action_non_threadable_channel"
                | "user_not_found"
                | "cannot_dm_bot" => Verdict::RecipientInvalid,
                "invalid_auth"
                | "not_authed"
                | "account_inactive"
                | "token_revoked"
                | "token_expired"
                | "no_permission"
                | "missing_scope"
                | "not_allowed_token_type"
                | "ekm_access_denied"
                | "team_access_not_granted"
                | "access_denied"
                | "org_login_required" => Verdict::AccountDisabled,
                "fatal_error" | "internal_error" | "service_unavailable" | "request_timeout" => {
                    Verdict::Retryable { after: wait }
                }
                // msg_too_long, no_text, invalid_blocks, too_many_attachments and every
                // other refusal of the request as written.
                _ => Verdict::ContentBlocked,
            },
            (500..=599 | 408, _) => Verdict::Retryable { after: wait },
            // A 2xx that is not a Web API answer: not a confirmed delivery.
            (200..=299, None) => Verdict::Retryable { after: None },
            (401 | 403 | 404 | 410, _) => Verdict::AccountDisabled,
            _ => Verdict::ContentBlocked,
        };
        SendResult::new(verdict, Some(status.as_u16()), detail)
    }

    /// Incoming webhooks answer plain text: `ok`, or an error name with a 4xx/5xx
    /// [doc "Handling errors"; the list is unverified].
    pub fn classify_webhook(
        status: StatusCode,
        wait: Option<Duration>,
        detail: String,
    ) -> SendResult {
        let rate_limited = Verdict::RateLimited {
            wait: wait.unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        };
        let verdict = match detail.trim() {
            _ if status.as_u16() == 429 => rate_limited,
            "invalid_payload" | "too_many_attachments" => Verdict::ContentBlocked,
            // The webhook's own channel or workspace is gone or closed to it: every send
            // through this webhook would fail the same way.
            "channel_not_found"
            | "channel_is_archived"
            | "action_prohibited"
            | "posting_to_general_channel_denied"
            | "no_service"
            | "no_service_id"
            | "no_team"
            | "team_disabled"
            | "invalid_token" => Verdict::AccountDisabled,
            "rollup_error" => Verdict::Retryable { after: wait },
            _ => match status.as_u16() {
                200..=299 => Verdict::Delivered,
                408 | 500..=599 => Verdict::Retryable { after: wait },
                401 | 403 | 404 | 410 => Verdict::AccountDisabled,
                _ => Verdict::ContentBlocked,
            },
        };
        SendResult::new(verdict, Some(status.as_u16()), detail)
    }
}

#[async_trait::async_trait]
impl Channel for SlackChannel {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn audience(&self) -> Audience {
        match self.mode {
            Mode::Webhook { .. } => Audience::Group(AddressKind::SlackUser),
            Mode::Bot { .. } => Audience::Person(AddressKind::SlackUser),
        }
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        self.rendered(message, "").map(drop)
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check(message) {
            return SendResult::unsendable(&error);
        }
        let rendered = match self.rendered(message, ctx.recipient) {
            Ok(rendered) => rendered,
            Err(error) => return SendResult::unsendable(&error),
        };
        let mut body = json!({"text": rendered.text});
        if let Some(blocks) = rendered.blocks {
            body["blocks"] = blocks;
        }
        let now_ms = self.clock.now_ms();
        let request = match &self.mode {
            Mode::Webhook { url } => self.client.post(url.expose_secret().trim()),
            Mode::Bot { token, post_url } => {
                let channel = ctx.recipient.trim();
                if channel.is_empty() {
                    return SendResult::new(
                        Verdict::RecipientInvalid,
                        None,
                        "the recipient has no slack_user",
                    );
                }
                body["channel"] = Value::String(channel.to_string());
                self.client
                    .post(post_url)
                    .bearer_auth(token.expose_secret())
            }
        };
        let response = request
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return transport_failure(&error),
        };
        let status = response.status();
        let wait = retry_after(response.headers(), now_ms);
        let detail = body_excerpt(response).await;
        match self.mode {
            Mode::Webhook { .. } => Self::classify_webhook(status, wait, detail),
            Mode::Bot { .. } => Self::classify_api(status, wait, detail),
        }
    }
}

#[cfg(test)]
#[path = "slack_tests.rs"]
mod tests;
