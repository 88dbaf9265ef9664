//! How to send: the `Channel` trait, the message model every adapter receives, the
//! classification of provider answers, and one file per provider. Channels hold every
//! provider detail (signing, body shape, error tables, formats and limits) and never touch
//! the database or the HTTP server; `delivery` decides when and how often to call them.

mod http;
mod log;
mod registry;
pub mod render;
mod tokens;
mod webhook;
// Provider adapters, one file each (kept in this order so parallel additions do not collide).
// -- wecom / wechat
mod qq;
mod wechat_oa;
mod wecom;
mod wecom_app;
pub use wecom_app::WecomAppChannel;
mod wecom_robot;
// -- dingtalk
mod dingtalk;
mod dingtalk_app;
mod dingtalk_robot;
pub use dingtalk_app::DingtalkAppChannel;
pub use dingtalk_robot::DingtalkRobotChannel;
// -- feishu / slack
mod feishu_app;
mod feishu_bot;
mod feishu_content;
#[cfg(test)]
mod feishu_slack_registry_tests;
mod markdown_pieces;
#[cfg(test)]
mod provider_mock;
mod slack;
mod slack_render;
// -- sms / email
mod aliyun_sms;
mod answer;
mod sendgrid;
mod smtp;
mod tencent_sms;
mod twilio_sms;
pub use aliyun_sms::{AliyunSmsChannel, AliyunSmsSettings};
pub use sendgrid::{
    SendgridChannel, SendgridSettings, parse_events as parse_sendgrid_events,
    verify_event_signature as verify_sendgrid_event_signature,
};
pub use smtp::{SmtpChannel, SmtpSettings};
pub use tencent_sms::{TencentSmsChannel, TencentSmsSettings};
pub use twilio_sms::{
    TwilioSmsChannel, TwilioSmsSettings, parse_status_callback as parse_twilio_status_callback,
    verify_json_callback as verify_twilio_json_callback,
    verify_status_callback as verify_twilio_status_callback,
};

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use http::{body_excerpt, client as http_client, retry_after, transport_failure};
pub use log::LogChannel;
pub use registry::{BuildContext, ChannelRegistry, ChannelStatus};
pub use render::ContentError;
pub use tokens::TokenCache;
pub use webhook::{WebhookChannel, WebhookSetupError, decode_secret};

/// How a message is meant to look; each adapter renders it in the richest form its
/// provider offers and downgrades the rest (markdown to plain text for SMS, a card to
/// title + text + link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `text` is plain text.
    #[default]
    Text,
    /// `text` is Markdown (the common subset: headings, bold, links, lists).
    Markdown,
    /// A link or news card: `title`, `text` as its description, `url` to open.
    Link,
    /// A template card: `title`, `text`, `url` and up to a few `buttons`.
    Card,
}

/// A button on a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Button {
    pub text: String,
    pub url: String,
}

/// What one delivery job asks a channel to send, as stored in the outbox row: the content
/// already chosen for that channel (the route's per-channel content merged over the
/// default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    #[serde(default, skip_serializing_if = "is_default")]
    pub format: Format,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Button>,
    /// Platform user ids (or, for DingTalk robots, phone numbers) to @mention in a group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub mention_all: bool,
    /// E-mail subject (defaults to `title`, then the first line of the text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// E-mail HTML body; the plain-text part is the text (derived when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Template of a template SMS or a WeChat OA template message (the channel's default
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_params: BTreeMap<String, String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Message {
    /// A plain-text message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
}

/// Which of a recipient's addresses a channel sends to; the names are the fields of the
/// `recipient` object of `POST /api/v1/messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    ExternalId,
    WecomUser,
    DingtalkUser,
    FeishuOpenId,
    WechatOpenid,
    QqOpenid,
    SlackUser,
    Phone,
    Email,
}

impl AddressKind {
    pub const ALL: [AddressKind; 9] = [
        AddressKind::ExternalId,
        AddressKind::WecomUser,
        AddressKind::DingtalkUser,
        AddressKind::FeishuOpenId,
        AddressKind::WechatOpenid,
        AddressKind::QqOpenid,
        AddressKind::SlackUser,
        AddressKind::Phone,
        AddressKind::Email,
    ];

    pub fn field(self) -> &'static str {
        match self {
            AddressKind::ExternalId => "external_id",
            AddressKind::WecomUser => "wecom_user",
            AddressKind::DingtalkUser => "dingtalk_user",
            AddressKind::FeishuOpenId => "feishu_open_id",
            AddressKind::WechatOpenid => "wechat_openid",
            AddressKind::QqOpenid => "qq_openid",
            AddressKind::SlackUser => "slack_user",
            AddressKind::Phone => "phone",
            AddressKind::Email => "email",
        }
    }
}

/// Who a channel sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// One person per job, by this address.
    Person(AddressKind),
    /// The group the robot lives in; the job's recipient, when present, is this address
    /// and is @mentioned.
    Group(AddressKind),
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
    /// The provider's id for what it accepted (message id, task id, `processQueryKey`,
    /// Twilio SID): how delivery receipts and read-status queries find this attempt.
    pub provider_ref: Option<String>,
}

/// How much of a provider's answer the attempts log keeps.
pub const DETAIL_LIMIT: usize = 1024;

impl SendResult {
    pub fn new(verdict: Verdict, status: Option<u16>, detail: impl AsRef<str>) -> Self {
        Self {
            verdict,
            status,
            detail: truncate(detail.as_ref(), DETAIL_LIMIT),
            provider_ref: None,
        }
    }

    pub fn with_ref(mut self, provider_ref: impl Into<String>) -> Self {
        self.provider_ref = Some(provider_ref.into());
        self
    }

    pub fn delivered(status: Option<u16>, detail: impl AsRef<str>) -> Self {
        Self::new(Verdict::Delivered, status, detail)
    }

    /// A message the channel cannot render within its provider's limits: refused
    /// before any call.
    pub fn unsendable(error: &ContentError) -> Self {
        Self::new(Verdict::ContentBlocked, None, error.to_string())
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

/// A provider's later report on a message it accepted (Twilio status callbacks, SendGrid
/// events), matched to the attempt by `provider_ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id for this event, or the ref and status when it has none: a
    /// retried receipt is recorded once.
    pub event_key: String,
    pub provider_ref: String,
    pub status: ReceiptStatus,
    /// The provider's words (error code, reason), for the attempts log.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    /// Reached the person's device or mailbox.
    Delivered,
    /// Accepted by the provider but not delivered (bounced, undelivered): the route moves
    /// on to its next channel.
    Failed,
    /// Anything else the provider reports (queued, sent, opened, clicked), by its name.
    Other(String),
}

impl ReceiptStatus {
    pub fn as_str(&self) -> &str {
        match self {
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Failed => "failed",
            ReceiptStatus::Other(name) => name,
        }
    }
}

/// A receipt callback as it arrived, for the adapter to verify and parse.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptRequest<'a> {
    pub headers: &'a reqwest::header::HeaderMap,
    /// The raw body: signatures are checked over these exact bytes.
    pub body: &'a [u8],
    pub now_ms: i64,
}

/// Why a receipt callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The signature is missing or wrong, or the timestamp is stale.
    #[error("receipt refused: {0}")]
    Forged(String),
    #[error("malformed receipt: {0}")]
    Malformed(String),
}

/// One outbound account able to send messages.
#[async_trait::async_trait]
pub trait Channel: Send + Sync + std::fmt::Debug {
    /// The provider kind, as named in the rules (`log`, `webhook`, …).
    fn kind(&self) -> &'static str;

    /// Which recipient address the channel sends to.
    fn audience(&self) -> Audience;

    /// Most recipients one provider call can carry; 1 means one call per recipient.
    fn max_batch(&self) -> usize {
        1
    }

    /// Whether `message` can be sent as this channel renders it (length limits, required
    /// template parameters, formats the provider lacks and cannot downgrade). Called when
    /// a message is accepted, so a message that cannot fit is refused before anything is
    /// queued, and again by the adapter before it calls the provider.
    fn check(&self, message: &Message) -> Result<(), ContentError> {
        let _ = message;
        Ok(())
    }

    /// Sends one message to one recipient and classifies the answer. Never panics and
    /// never returns early without a verdict: every failure is a [`SendResult`].
    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult;

    /// Sends one message to several recipients (at most [`Channel::max_batch`]) and
    /// returns one result per recipient, in order. Channels whose API takes many
    /// recipients per call override this and map the provider's per-recipient answer
    /// (invalid users, flow-controlled lists) back to each recipient.
    async fn send_batch(&self, batch: &[SendContext<'_>], message: &Message) -> Vec<SendResult> {
        let mut results = Vec::with_capacity(batch.len());
        for ctx in batch {
            results.push(self.send(ctx, message).await);
        }
        results
    }

    /// Verifies and parses a delivery-receipt callback posted to `/receipts/{channel id}`;
    /// `None` for channels whose provider sends none.
    fn receipts(&self, request: &ReceiptRequest<'_>) -> Option<Result<Vec<Receipt>, ReceiptError>> {
        let _ = request;
        None
    }
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
