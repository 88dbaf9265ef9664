//! Builds one live channel per `[[channel]]` in the rules, or records why it is disabled.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Channel, LogChannel, WebhookChannel};
use crate::clock::SharedClock;
use crate::rules::{ChannelKind, Rules};

/// A configured channel: ready to send, or disabled with a reason an operator can act on.
#[derive(Debug, Clone)]
pub enum ChannelStatus {
    Ready(Arc<dyn Channel>),
    Disabled { reason: String },
}

/// Every channel account of one version of the rules.
#[derive(Debug, Default, Clone)]
pub struct ChannelRegistry {
    channels: BTreeMap<String, ChannelStatus>,
}

impl ChannelRegistry {
    /// Resolves secrets from the environment now; a missing secret disables that one
    /// channel and leaves the rest running.
    pub fn build(rules: &Rules, clock: &SharedClock) -> Self {
        let timeout = rules.delivery.http_timeout;
        let channels = rules
            .channels
            .iter()
            .map(|account| {
                let status = match &account.kind {
                    ChannelKind::Log { path } => ChannelStatus::Ready(Arc::new(LogChannel::new(
                        &account.id,
                        path.clone(),
                        clock.clone(),
                    ))),
                    ChannelKind::Webhook { url, secret } => match secret.resolve() {
                        Err(reason) => ChannelStatus::Disabled { reason },
                        Ok(value) => match WebhookChannel::new(url, &value, timeout, clock.clone())
                        {
                            Ok(channel) => ChannelStatus::Ready(Arc::new(channel)),
                            Err(error) => ChannelStatus::Disabled {
                                reason: format!("environment variable `{}`: {error}", secret.env),
                            },
                        },
                    },
                };
                (account.id.clone(), status)
            })
            .collect();
        Self { channels }
    }

    pub fn get(&self, id: &str) -> Option<&ChannelStatus> {
        self.channels.get(id)
    }

    /// Channels that cannot send, with the reason, for `/readyz` and the log.
    pub fn disabled(&self) -> impl Iterator<Item = (&str, &str)> {
        self.channels
            .iter()
            .filter_map(|(id, status)| match status {
                ChannelStatus::Disabled { reason } => Some((id.as_str(), reason.as_str())),
                ChannelStatus::Ready(_) => None,
            })
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }
}
