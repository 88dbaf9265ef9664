//! Turns a request to message one person over a route of channels into the steps the
//! outbox stores: for each channel, the person's address on it and the content written for
//! it, checked against the channel's limits before anything is queued. The admin API, the
//! `/send-test` command and (later) campaigns all come through here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{NewMessage, NewStep};
use crate::channels::{AddressKind, Audience, ChannelRegistry, ChannelStatus, Message};

/// Most channels in one route.
pub const MAX_ROUTE: usize = 10;

/// A person's addresses, one per platform; only the ones the route needs must be present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wecom_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dingtalk_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feishu_open_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wechat_openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qq_openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_user: Option<String>,
    /// E.164, e.g. +8613800000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Recipient {
    pub fn address(&self, kind: AddressKind) -> Option<&str> {
        let value = match kind {
            AddressKind::ExternalId => &self.external_id,
            AddressKind::WecomUser => &self.wecom_user,
            AddressKind::DingtalkUser => &self.dingtalk_user,
            AddressKind::FeishuOpenId => &self.feishu_open_id,
            AddressKind::WechatOpenid => &self.wechat_openid,
            AddressKind::QqOpenid => &self.qq_openid,
            AddressKind::SlackUser => &self.slack_user,
            AddressKind::Phone => &self.phone,
            AddressKind::Email => &self.email,
        };
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    /// A recipient with only this address (for one-off test sends).
    pub fn with(kind: AddressKind, address: &str) -> Self {
        let mut recipient = Recipient::default();
        let slot = match kind {
            AddressKind::ExternalId => &mut recipient.external_id,
            AddressKind::WecomUser => &mut recipient.wecom_user,
            AddressKind::DingtalkUser => &mut recipient.dingtalk_user,
            AddressKind::FeishuOpenId => &mut recipient.feishu_open_id,
            AddressKind::WechatOpenid => &mut recipient.wechat_openid,
            AddressKind::QqOpenid => &mut recipient.qq_openid,
            AddressKind::SlackUser => &mut recipient.slack_user,
            AddressKind::Phone => &mut recipient.phone,
            AddressKind::Email => &mut recipient.email,
        };
        *slot = Some(address.to_string());
        recipient
    }
}

/// The content of a message: the default for every channel, and per channel id the
/// fields that differ there (an SMS template's parameters, an e-mail's subject and HTML).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Content {
    #[serde(flatten)]
    pub default: Message,
    /// Channel id → fields of the message that replace the default on that channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub per_channel: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

/// One message to one person over a route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    pub recipient: Recipient,
    /// Channel ids, tried in order until one reaches the person.
    pub route: Vec<String>,
    pub content: Content,
    /// In a batch, each message's own idempotency key (the header covers single sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Why a request cannot be accepted; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteError {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> RouteError {
    RouteError {
        code,
        message: message.into(),
    }
}

/// The content a channel gets: the default with that channel's fields laid over it.
pub fn content_for(content: &Content, channel: &str) -> Result<Message, RouteError> {
    let Some(overrides) = content.per_channel.get(channel) else {
        return Ok(content.default.clone());
    };
    let mut merged = match serde_json::to_value(&content.default) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in overrides {
        merged.insert(key.clone(), value.clone());
    }
    serde_json::from_value(serde_json::Value::Object(merged)).map_err(|error| {
        refuse(
            "invalid_content",
            format!("content.per_channel.{channel}: {error}"),
        )
    })
}

/// Builds the request of a one-off test send through `channel_id`, shared with the
/// `/send-test` chat command. An empty `to` addresses no one, for a group robot.
pub fn test_request(
    channel_id: &str,
    status: &ChannelStatus,
    to: &str,
    text: &str,
) -> Result<MessageRequest, RouteError> {
    let ChannelStatus::Ready(channel) = status else {
        let reason = match status {
            ChannelStatus::Disabled { reason } => reason.as_str(),
            ChannelStatus::Ready(_) => "",
        };
        return Err(RouteError {
            code: "channel_disabled",
            message: format!("channel `{channel_id}` is disabled: {reason}"),
        });
    };
    let kind = match channel.audience() {
        Audience::Person(kind) | Audience::Group(kind) => kind,
    };
    let to = to.trim();
    let recipient = if to.is_empty() {
        Recipient::default()
    } else {
        Recipient::with(kind, to)
    };
    Ok(MessageRequest {
        recipient,
        route: vec![channel_id.to_string()],
        content: Content {
            default: Message::text(text),
            per_channel: Default::default(),
        },
        idempotency_key: None,
    })
}

/// Resolves every step of `request` against the channels in force. A step whose channel
/// cannot take this person (no address for it, channel disabled) is kept as skipped with
/// the reason; content a channel cannot send is refused outright, since a route should not
/// silently lose a channel to a typo in its content.
pub fn resolve(
    request: &MessageRequest,
    idempotency_key: Option<&str>,
    channels: &ChannelRegistry,
) -> Result<NewMessage, RouteError> {
    if request.route.is_empty() {
        return Err(refuse(
            "invalid_route",
            "route names no channel; give at least one channel id",
        ));
    }
    if request.route.len() > MAX_ROUTE {
        return Err(refuse(
            "invalid_route",
            format!("a route has at most {MAX_ROUTE} channels"),
        ));
    }
    let mut seen = BTreeSet::new();
    for channel in &request.route {
        if !seen.insert(channel.as_str()) {
            return Err(refuse(
                "invalid_route",
                format!("channel `{channel}` appears twice in the route"),
            ));
        }
    }
    for channel in request.content.per_channel.keys() {
        if !request.route.contains(channel) {
            return Err(refuse(
                "invalid_content",
                format!("content.per_channel names `{channel}`, which is not in the route"),
            ));
        }
    }
    let mut steps = Vec::with_capacity(request.route.len());
    for channel_id in &request.route {
        let status = channels.get(channel_id).ok_or_else(|| {
            let known: Vec<&str> = channels.ids().collect();
            refuse(
                "unknown_channel",
                format!(
                    "there is no channel `{channel_id}` in the rules; known: {}",
                    known.join(", ")
                ),
            )
        })?;
        let message = content_for(&request.content, channel_id)?;
        let payload = serde_json::to_string(&message)
            .map_err(|error| refuse("invalid_content", error.to_string()))?;
        let step = match status {
            ChannelStatus::Disabled { reason } => NewStep {
                channel: channel_id.clone(),
                recipient: None,
                payload,
                skipped: Some(format!("the channel is disabled: {reason}")),
            },
            ChannelStatus::Ready(channel) => {
                channel.check(&message).map_err(|error| {
                    refuse(
                        "content_not_sendable",
                        format!("channel `{channel_id}`: {error}"),
                    )
                })?;
                let (kind, required) = match channel.audience() {
                    Audience::Person(kind) => (kind, true),
                    Audience::Group(kind) => (kind, false),
                };
                match (request.recipient.address(kind), required) {
                    (Some(address), _) => NewStep {
                        channel: channel_id.clone(),
                        recipient: Some(address.to_string()),
                        payload,
                        skipped: None,
                    },
                    // A group robot posts to its group; without the person's id there is
                    // just no @mention.
                    (None, false) => NewStep {
                        channel: channel_id.clone(),
                        recipient: Some(String::new()),
                        payload,
                        skipped: None,
                    },
                    (None, true) => NewStep {
                        channel: channel_id.clone(),
                        recipient: None,
                        payload,
                        skipped: Some(format!("the recipient has no `{}`", kind.field())),
                    },
                }
            }
        };
        steps.push(step);
    }
    if steps.iter().all(|step| step.recipient.is_none()) {
        let reasons: Vec<String> = steps
            .iter()
            .map(|step| {
                format!(
                    "`{}`: {}",
                    step.channel,
                    step.skipped.as_deref().unwrap_or_default()
                )
            })
            .collect();
        return Err(refuse(
            "unreachable_recipient",
            format!(
                "no channel of the route can reach this recipient ({})",
                reasons.join("; ")
            ),
        ));
    }
    let recipient = serde_json::to_string(&request.recipient)
        .map_err(|error| refuse("invalid_recipient", error.to_string()))?;
    Ok(NewMessage {
        idempotency_key: idempotency_key
            .or(request.idempotency_key.as_deref())
            .map(str::to_string),
        request_sha256: request_digest(request),
        recipient,
        steps,
    })
}

/// SHA-256 of the request in a canonical form (serde_json orders object keys), so the
/// same message sent twice with one key is recognised whatever its key order.
fn request_digest(request: &MessageRequest) -> String {
    let mut canonical = request.clone();
    canonical.idempotency_key = None;
    let text = serde_json::to_value(&canonical)
        .map(|value| value.to_string())
        .unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{ContentError, SendContext, SendResult};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Fake {
        audience: Audience,
        max_chars: usize,
    }

    #[async_trait::async_trait]
    impl crate::channels::Channel for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn audience(&self) -> Audience {
            self.audience
        }
        fn check(&self, message: &Message) -> Result<(), ContentError> {
            crate::channels::render::fit_chars("text", &message.text, self.max_chars)
        }
        async fn send(&self, _: &SendContext<'_>, _: &Message) -> SendResult {
            SendResult::delivered(None, "")
        }
    }

    fn registry() -> ChannelRegistry {
        let ready = |audience, max_chars| {
            ChannelStatus::Ready(Arc::new(Fake {
                audience,
                max_chars,
            }))
        };
        ChannelRegistry::from_statuses([
            (
                "im".to_string(),
                ready(Audience::Person(AddressKind::WecomUser), 100),
            ),
            (
                "sms".to_string(),
                ready(Audience::Person(AddressKind::Phone), 10),
            ),
            (
                "robot".to_string(),
                ready(Audience::Group(AddressKind::WecomUser), 100),
            ),
            (
                "off".to_string(),
                ChannelStatus::Disabled {
                    reason: "environment variable `X` is not set".into(),
                },
            ),
        ])
    }

    fn request(value: serde_json::Value) -> MessageRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn steps_take_the_address_and_content_of_their_channel() {
        let req = request(serde_json::json!({
            "recipient": {"wecom_user": "zhangsan", "phone": "+8613800000000"},
            "route": ["im", "sms"],
            "content": {"text": "a long text for the chat", "per_channel": {"sms": {"text": "short"}}}
        }));
        let message = resolve(&req, Some("k1"), &registry()).unwrap();
        assert_eq!(message.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(message.steps[0].recipient.as_deref(), Some("zhangsan"));
        assert_eq!(
            message.steps[1].recipient.as_deref(),
            Some("+8613800000000")
        );
        let sms: Message = serde_json::from_str(&message.steps[1].payload).unwrap();
        assert_eq!(sms.text, "short");
    }

    #[test]
    fn unreachable_steps_are_skipped_with_the_reason() {
        let req = request(serde_json::json!({
            "recipient": {"phone": "+1555"},
            "route": ["off", "im", "robot", "sms"],
            "content": {"text": "hi"}
        }));
        let message = resolve(&req, None, &registry()).unwrap();
        assert!(
            message.steps[0]
                .skipped
                .as_deref()
                .unwrap()
                .contains("disabled")
        );
        assert_eq!(
            message.steps[1].skipped.as_deref(),
            Some("the recipient has no `wecom_user`")
        );
        assert_eq!(
            message.steps[2].recipient.as_deref(),
            Some(""),
            "robots post to their group"
        );
        assert_eq!(message.steps[3].recipient.as_deref(), Some("+1555"));
    }

    #[test]
    fn bad_requests_are_refused_with_what_to_change() {
        let registry = registry();
        let refused =
            |value: serde_json::Value| resolve(&request(value), None, &registry).unwrap_err().code;
        assert_eq!(
            refused(serde_json::json!({"recipient": {}, "route": [], "content": {"text": "x"}})),
            "invalid_route"
        );
        assert_eq!(
            refused(
                serde_json::json!({"recipient": {"phone": "1"}, "route": ["sms", "sms"], "content": {"text": "x"}})
            ),
            "invalid_route"
        );
        assert_eq!(
            refused(
                serde_json::json!({"recipient": {"phone": "1"}, "route": ["fax"], "content": {"text": "x"}})
            ),
            "unknown_channel"
        );
        assert_eq!(
            refused(
                serde_json::json!({"recipient": {"phone": "1"}, "route": ["sms"], "content": {"text": "much too long for sms"}})
            ),
            "content_not_sendable"
        );
        assert_eq!(
            refused(
                serde_json::json!({"recipient": {"email": "a@b"}, "route": ["sms", "im"], "content": {"text": "x"}})
            ),
            "unreachable_recipient"
        );
        assert_eq!(
            refused(
                serde_json::json!({"recipient": {"phone": "1"}, "route": ["sms"], "content": {"text": "x", "per_channel": {"im": {}}}})
            ),
            "invalid_content"
        );
        assert_eq!(
            refused(
                serde_json::json!({"recipient": {"phone": "1"}, "route": ["sms"], "content": {"text": "x", "per_channel": {"sms": {"format": "poster"}}}})
            ),
            "invalid_content"
        );
    }

    #[test]
    fn the_digest_ignores_key_order_but_not_content() {
        let a = request(
            serde_json::json!({"recipient": {"phone": "1", "email": "e"}, "route": ["sms"], "content": {"text": "x"}}),
        );
        let b = request(
            serde_json::json!({"content": {"text": "x"}, "route": ["sms"], "recipient": {"email": "e", "phone": "1"}}),
        );
        let c = request(
            serde_json::json!({"recipient": {"phone": "1", "email": "e"}, "route": ["sms"], "content": {"text": "y"}}),
        );
        assert_eq!(request_digest(&a), request_digest(&b));
        assert_ne!(request_digest(&a), request_digest(&c));
    }
}
