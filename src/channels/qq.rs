//! QQ bot as an outbound channel: refused. The QQ bot platform stopped offering proactive
//! (non-reply) messages on 2025-04-21 [doc, tencent-connect/bot-docs], so a bot can only
//! answer people who wrote to it, within minutes, which the inbound side does. The kind is
//! still read from the rules so existing configs load; every message routed through it is
//! refused when it is accepted, and a send never reaches the network.

use super::render::ContentError;
use super::{AddressKind, Audience, Channel, Message, SendContext, SendResult, Verdict};

const REFUSAL: &str = "QQ is a reply path only since April 2025: the QQ bot platform no longer \
                       delivers proactive messages, so a message cannot be sent through a `qq` \
                       channel; route it through another channel";

#[derive(Debug)]
pub struct QqChannel {
    app_id: String,
}

impl QqChannel {
    pub fn new(app_id: &str) -> Self {
        Self {
            app_id: app_id.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl Channel for QqChannel {
    fn kind(&self) -> &'static str {
        "qq"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::QqOpenid)
    }

    fn check(&self, _message: &Message) -> Result<(), ContentError> {
        Err(ContentError::new(REFUSAL))
    }

    async fn send(&self, _ctx: &SendContext<'_>, _message: &Message) -> SendResult {
        SendResult::new(
            Verdict::AccountDisabled,
            None,
            format!("bot {}: {REFUSAL}", self.app_id),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_message_is_refused_without_a_call() {
        let qq = QqChannel::new("102005678");
        let error = qq.check(&Message::text("hello")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("reply path only since April 2025")
        );
        assert!(error.to_string().contains("another channel"));
        let ctx = SendContext {
            job_id: 1,
            idempotency_key: "k",
            attempt: 1,
            recipient: "openid",
        };
        let result = qq.send(&ctx, &Message::text("hello")).await;
        assert_eq!(result.verdict, Verdict::AccountDisabled);
        assert_eq!(result.status, None);
        assert!(result.detail.contains("route it through another channel"));
        assert_eq!(qq.audience(), Audience::Person(AddressKind::QqOpenid));
    }
}
