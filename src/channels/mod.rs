//! How to send: the `Channel` trait, the message model every adapter receives, the
//! classification of provider answers, and one file per provider. Channels hold every
//! provider detail (signing, body shape, error tables) and never touch the database or
//! the HTTP server; `delivery` decides when and how often to call them.

mod http;
mod log;
mod registry;
mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use http::client as http_client;
pub use log::LogChannel;
pub use registry::{ChannelRegistry, ChannelStatus};
pub use webhook::{WebhookChannel, decode_secret};

/// What one delivery job asks a channel to send, as stored in the outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The job's identity as the channel sees it. `idempotency_key` is stable across retries,
/// so providers that de-duplicate can recognise a resend after a crash.
#[derive(Debug, Clone)]
pub struct SendContext<'a> {
    pub job_id: i64,
    pub idempotency_key: &'a str,
    pub attempt: i64,
    pub recipient: &'a str,
}

/// How a provider answered, in the terms the delivery engine acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth trying again later (network error, 5xx); `after` is the provider's hint.
    Retryable {
        after: Option<Duration>,
    },
    /// The provider asked us to slow down; try again after `wait`.
    RateLimited {
        wait: Duration,
    },
    /// The provider refused the content; retrying the same content cannot help.
    ContentBlocked,
    /// This recipient cannot be reached on this channel.
    RecipientInvalid,
    /// The account itself is disabled or its credentials are refused.
    AccountDisabled,
}

impl Verdict {
    /// The name recorded in the attempts log and in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retryable { .. } => "retryable",
            Self::RateLimited { .. } => "rate_limited",
            Self::ContentBlocked => "content_blocked",
            Self::RecipientInvalid => "recipient_invalid",
            Self::AccountDisabled => "account_disabled",
        }
    }
}

/// A classified provider answer plus what the attempts log keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub verdict: Verdict,
    /// The HTTP status, when the call got that far.
    pub status: Option<u16>,
    /// The provider's answer or the error, already truncated to [`DETAIL_LIMIT`].
    pub detail: String,
}

/// How much of a provider's answer the attempts log keeps.
pub const DETAIL_LIMIT: usize = 1024;

impl SendResult {
    pub fn new(verdict: Verdict, status: Option<u16>, detail: impl AsRef<str>) -> Self {
        Self {
            verdict,
            status,
            detail: truncate(detail.as_ref(), DETAIL_LIMIT),
        }
    }
}

/// Cuts `text` to at most `limit` bytes on a character boundary.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// One outbound account able to send messages.
#[async_trait::async_trait]
pub trait Channel: Send + Sync + std::fmt::Debug {
    /// The provider kind, as named in the rules (`log`, `webhook`, …).
    fn kind(&self) -> &'static str;

    /// Sends one message to one recipient and classifies the answer. Never panics and
    /// never returns early without a verdict: every failure is a [`SendResult`].
    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_character_boundaries() {
        let text = "群发".repeat(600);
        let cut = truncate(&text, DETAIL_LIMIT);
        assert!(cut.len() <= DETAIL_LIMIT + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }
}
