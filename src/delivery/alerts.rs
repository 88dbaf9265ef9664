//! Operational alerts for the ops chat: a circuit that opened, a rules reload that was
//! rejected. An alert is an ordinary routed message to the `[delivery] alerts_channel`,
//! so it is durable, retried and visible like any other; its idempotency key makes the
//! same alert one message however often the cause repeats.

use sha2::{Digest, Sha256};

use super::route::{self, Content, MessageRequest, Recipient};
use super::store::{Accepted, Outbox};
use crate::channels::{Audience, ChannelRegistry, ChannelStatus, Message};
use crate::clock::UnixMillis;
use crate::rules::DeliverySettings;

/// What raising an alert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raised {
    /// Queued now, as this message id.
    Queued(String),
    /// The same alert was queued before.
    AlreadyQueued(String),
    /// No alerts channel is configured.
    NotConfigured,
    /// The alerts channel is the one in trouble, or cannot take the alert.
    Undeliverable(String),
}

/// Queues `text` to the alerts channel under `key` (the same key twice is one alert).
/// Never queues an alert about a channel through that same channel (`about_channel`),
/// which would loop on a broken robot.
pub async fn raise(
    outbox: &Outbox,
    settings: &DeliverySettings,
    channels: &ChannelRegistry,
    key: &str,
    about_channel: Option<&str>,
    text: &str,
    now: UnixMillis,
) -> Result<Raised, sqlx::Error> {
    let Some(target) = &settings.alerts else {
        return Ok(Raised::NotConfigured);
    };
    if about_channel == Some(target.channel.as_str()) {
        return Ok(Raised::Undeliverable(format!(
            "the alert is about the alerts channel `{}` itself",
            target.channel
        )));
    }
    let recipient = match channels.get(&target.channel) {
        Some(ChannelStatus::Ready(channel)) => match channel.audience() {
            Audience::Person(kind) | Audience::Group(kind) if !target.to.is_empty() => {
                Recipient::with(kind, &target.to)
            }
            Audience::Group(_) => Recipient::default(),
            Audience::Person(kind) => {
                return Ok(Raised::Undeliverable(format!(
                    "the alerts channel `{}` messages one person: set [delivery] alerts_to to their `{}`",
                    target.channel,
                    kind.field()
                )));
            }
        },
        Some(ChannelStatus::Disabled { reason }) => {
            return Ok(Raised::Undeliverable(format!(
                "the alerts channel `{}` is disabled: {reason}",
                target.channel
            )));
        }
        None => {
            return Ok(Raised::Undeliverable(format!(
                "the alerts channel `{}` is not in the rules",
                target.channel
            )));
        }
    };
    let request = MessageRequest {
        recipient,
        route: vec![target.channel.clone()],
        content: Content {
            default: Message::text(format!("[qunfa] {text}")),
            per_channel: Default::default(),
        },
        idempotency_key: None,
    };
    let key = format!("alert:{key}");
    let message = match route::resolve(&request, Some(&key), channels) {
        Ok(message) => message,
        Err(error) => return Ok(Raised::Undeliverable(error.message)),
    };
    let accepted = outbox
        .accept_messages(&[message], now, settings.retry.max_age)
        .await?;
    Ok(match accepted.into_iter().next() {
        Some(Accepted::Message { id, created: true }) => Raised::Queued(id),
        Some(Accepted::Message { id, created: false } | Accepted::KeyReused { id }) => {
            Raised::AlreadyQueued(id)
        }
        None => Raised::Undeliverable("nothing was stored".into()),
    })
}

/// A short stable digest of a text, for alert keys.
pub fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::LogChannel;
    use crate::clock::{ManualClock, SharedClock};
    use crate::db::testing::TestDb;
    use crate::rules::AlertsTarget;
    use std::sync::Arc;

    #[tokio::test]
    async fn an_alert_is_queued_once_and_never_through_the_channel_it_is_about() {
        let db = TestDb::sqlite().await.unwrap();
        let outbox = Outbox::new(db.db.clone());
        let clock: SharedClock = Arc::new(ManualClock::new(1_000));
        let dir = tempfile::tempdir().unwrap();
        let ops = LogChannel::new("ops", dir.path().join("ops.jsonl"), clock);
        let channels = ChannelRegistry::from_statuses([(
            "ops".to_string(),
            ChannelStatus::Ready(Arc::new(ops)),
        )]);
        let mut settings = DeliverySettings::default();
        let raise_now = |settings: DeliverySettings, about: Option<&'static str>| {
            let outbox = outbox.clone();
            let channels = channels.clone();
            async move {
                raise(
                    &outbox,
                    &settings,
                    &channels,
                    "k1",
                    about,
                    "circuit open",
                    1_000,
                )
                .await
                .unwrap()
            }
        };
        assert_eq!(
            raise_now(settings.clone(), None).await,
            Raised::NotConfigured
        );
        settings.alerts = Some(AlertsTarget {
            channel: "ops".into(),
            to: String::new(),
        });
        assert!(
            matches!(raise_now(settings.clone(), None).await, Raised::Undeliverable(reason) if reason.contains("alerts_to")),
            "a channel to one person needs an address"
        );
        settings.alerts = Some(AlertsTarget {
            channel: "ops".into(),
            to: "ops-team".into(),
        });
        let Raised::Queued(id) = raise_now(settings.clone(), Some("sms")).await else {
            panic!("not queued");
        };
        assert_eq!(
            raise_now(settings.clone(), Some("sms")).await,
            Raised::AlreadyQueued(id.clone())
        );
        assert!(matches!(
            raise_now(settings.clone(), Some("ops")).await,
            Raised::Undeliverable(_)
        ));
        let view = outbox.message(&id).await.unwrap().unwrap();
        assert_eq!(view.steps[0].channel, "ops");
        db.cleanup().await.unwrap();
    }
}
