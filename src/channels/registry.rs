//! Builds one live channel per `[[channel]]` in the rules, or records why it is disabled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Channel, LogChannel, WebhookChannel, WebhookSetupError};
// -- sms / email
use super::{AliyunSmsChannel, AliyunSmsSettings, SendgridChannel, SendgridSettings};
use super::{SmtpChannel, SmtpSettings, TencentSmsChannel, TencentSmsSettings};
use super::{TwilioSmsChannel, TwilioSmsSettings};
use crate::clock::SharedClock;
use crate::rules::{ChannelAccount, ChannelKind, Limits, Rules, SlackAuth};

/// A configured channel: ready to send, or disabled with a reason an operator can act on.
#[derive(Debug, Clone)]
pub enum ChannelStatus {
    Ready(Arc<dyn Channel>),
    Disabled { reason: String },
}

/// What an adapter's constructor gets besides its own settings.
#[derive(Clone)]
pub struct BuildContext {
    pub clock: SharedClock,
    /// Total time one provider call may take.
    pub timeout: Duration,
}

impl BuildContext {
    /// A ready channel, or the reason it is disabled (a missing secret, a bad key).
    pub fn status<C: Channel + 'static>(result: Result<C, String>) -> ChannelStatus {
        match result {
            Ok(channel) => ChannelStatus::Ready(Arc::new(channel)),
            Err(reason) => ChannelStatus::Disabled { reason },
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    status: ChannelStatus,
    limits: Limits,
    batch_size: usize,
}

/// Every channel account of one version of the rules.
#[derive(Debug, Default, Clone)]
pub struct ChannelRegistry {
    channels: BTreeMap<String, Entry>,
}

impl ChannelRegistry {
    /// Resolves secrets from the environment now; a missing secret disables that one
    /// channel and leaves the rest running.
    pub fn build(rules: &Rules, clock: &SharedClock) -> Self {
        let ctx = BuildContext {
            clock: clock.clone(),
            timeout: rules.delivery.http_timeout,
        };
        let channels = rules
            .channels
            .iter()
            .map(|account| {
                let status = build_one(account, &ctx);
                let api_cap = account.kind.max_batch();
                let entry = Entry {
                    status,
                    limits: account.limits,
                    batch_size: account.batch_size.unwrap_or(api_cap).clamp(1, api_cap),
                };
                (account.id.clone(), entry)
            })
            .collect();
        Self { channels }
    }

    /// A registry over channels built elsewhere (tests, benchmarks).
    pub fn from_statuses(statuses: impl IntoIterator<Item = (String, ChannelStatus)>) -> Self {
        let channels = statuses
            .into_iter()
            .map(|(id, status)| {
                let batch_size = match &status {
                    ChannelStatus::Ready(channel) => channel.max_batch().max(1),
                    ChannelStatus::Disabled { .. } => 1,
                };
                let entry = Entry {
                    status,
                    limits: Limits::default(),
                    batch_size,
                };
                (id, entry)
            })
            .collect();
        Self { channels }
    }

    /// Send quotas of a channel account.
    pub fn limits(&self, id: &str) -> Limits {
        self.channels
            .get(id)
            .map(|entry| entry.limits)
            .unwrap_or_default()
    }

    /// The largest batch size of any channel.
    pub fn largest_batch(&self) -> usize {
        self.channels
            .values()
            .map(|entry| entry.batch_size)
            .max()
            .unwrap_or(1)
    }

    /// Recipients per provider call for a channel account.
    pub fn batch_size(&self, id: &str) -> usize {
        self.channels.get(id).map_or(1, |entry| entry.batch_size)
    }

    pub fn get(&self, id: &str) -> Option<&ChannelStatus> {
        self.channels.get(id).map(|entry| &entry.status)
    }

    /// Channels that cannot send, with the reason, for `/readyz` and the log.
    pub fn disabled(&self) -> impl Iterator<Item = (&str, &str)> {
        self.channels
            .iter()
            .filter_map(|(id, entry)| match &entry.status {
                ChannelStatus::Disabled { reason } => Some((id.as_str(), reason.as_str())),
                ChannelStatus::Ready(_) => None,
            })
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }
}

fn build_one(account: &ChannelAccount, ctx: &BuildContext) -> ChannelStatus {
    match &account.kind {
        ChannelKind::Log { path } => ChannelStatus::Ready(Arc::new(LogChannel::new(
            &account.id,
            path.clone(),
            ctx.clock.clone(),
        ))),
        ChannelKind::Webhook { url, secret } => {
            BuildContext::status(secret.resolve().and_then(|value| {
                WebhookChannel::new(url, &value, ctx.timeout, ctx.clock.clone()).map_err(|error| {
                    match error {
                        WebhookSetupError::Secret(bad) => {
                            format!("environment variable `{}`: {bad}", secret.env)
                        }
                        WebhookSetupError::Url(_) => error.to_string(),
                    }
                })
            }))
        }
        // -- wecom / wechat
        ChannelKind::WecomRobot { key, base_url } => {
            BuildContext::status(key.resolve().and_then(|key| {
                super::wecom_robot::WecomRobotChannel::new(
                    base_url,
                    &key,
                    ctx.timeout,
                    ctx.clock.clone(),
                )
            }))
        }
        ChannelKind::WecomApp {
            corp_id,
            agent_id,
            secret,
            base_url,
            duplicate_check,
        } => BuildContext::status(secret.resolve().map(|secret| {
            super::wecom_app::WecomAppChannel::new(
                base_url,
                corp_id,
                *agent_id,
                secret,
                *duplicate_check,
                ctx.timeout,
                ctx.clock.clone(),
            )
        })),
        ChannelKind::WechatOa {
            app_id,
            app_secret,
            template_id,
            mass_send,
            base_url,
        } => BuildContext::status(app_secret.resolve().map(|secret| {
            super::wechat_oa::WechatOaChannel::new(
                base_url,
                app_id,
                secret,
                template_id.clone(),
                *mass_send,
                ctx.timeout,
                ctx.clock.clone(),
            )
        })),
        // Refused for sending whatever the secret: the platform withdrew proactive messages.
        ChannelKind::Qq { app_id, .. } => {
            ChannelStatus::Ready(Arc::new(super::qq::QqChannel::new(app_id)))
        }
        // -- dingtalk
        ChannelKind::DingtalkRobot {
            access_token,
            secret,
            keywords,
            base_url,
        } => BuildContext::status(super::DingtalkRobotChannel::from_rules(
            access_token,
            secret.as_ref(),
            keywords,
            base_url.as_deref(),
            ctx.timeout,
            ctx.clock.clone(),
        )),
        ChannelKind::DingtalkApp {
            app_key,
            app_secret,
            target,
            base_url,
        } => BuildContext::status(super::DingtalkAppChannel::from_rules(
            app_key,
            app_secret,
            target,
            base_url.as_deref(),
            ctx,
        )),
        // -- feishu / slack
        ChannelKind::FeishuBot {
            hook_token,
            secret,
            base_url,
        } => BuildContext::status(hook_token.resolve().and_then(|token| {
            let secret = secret.as_ref().map(|secret| secret.resolve()).transpose()?;
            super::feishu_bot::FeishuBotChannel::new(
                base_url,
                &token,
                secret,
                ctx.timeout,
                ctx.clock.clone(),
            )
            .map_err(|error| format!("environment variable `{}`: {error}", hook_token.env))
        })),
        ChannelKind::FeishuApp {
            app_id,
            app_secret,
            base_url,
        } => BuildContext::status(app_secret.resolve().map(|secret| {
            super::feishu_app::FeishuAppChannel::new(
                base_url,
                app_id,
                secret,
                ctx.timeout,
                ctx.clock.clone(),
            )
        })),
        ChannelKind::Slack { auth, base_url } => BuildContext::status(match auth {
            SlackAuth::Webhook(url) => url.resolve().and_then(|value| {
                super::slack::SlackChannel::webhook(value, ctx.timeout, ctx.clock.clone())
                    .map_err(|error| format!("environment variable `{}`: {error}", url.env))
            }),
            SlackAuth::BotToken(token) => token.resolve().map(|value| {
                super::slack::SlackChannel::bot(base_url, value, ctx.timeout, ctx.clock.clone())
            }),
        }),
        // -- sms / email
        ChannelKind::TwilioSms {
            base_url,
            account_sid,
            auth_token,
            from,
            messaging_service_sid,
            status_callback_url,
            max_segments,
        } => BuildContext::status(auth_token.resolve().map(|token| {
            let settings = TwilioSmsSettings {
                base_url: base_url.clone(),
                account_sid: account_sid.clone(),
                from: from.clone(),
                messaging_service_sid: messaging_service_sid.clone(),
                status_callback_url: status_callback_url.clone(),
                max_segments: *max_segments,
            };
            TwilioSmsChannel::new(settings, token, ctx.timeout, ctx.clock.clone())
        })),
        ChannelKind::AliyunSms {
            base_url,
            access_key_id,
            access_key_secret,
            sign_name,
            template_code,
            region_id,
        } => BuildContext::status(access_key_secret.resolve().map(|secret| {
            let settings = AliyunSmsSettings {
                base_url: base_url.clone(),
                access_key_id: access_key_id.clone(),
                sign_name: sign_name.clone(),
                template_code: template_code.clone(),
                region_id: region_id.clone(),
            };
            AliyunSmsChannel::new(settings, secret, ctx.timeout, ctx.clock.clone())
        })),
        ChannelKind::TencentSms {
            base_url,
            secret_id,
            secret_key,
            sdk_app_id,
            sign_name,
            template_id,
            region,
        } => BuildContext::status(secret_key.resolve().and_then(|secret| {
            let settings = TencentSmsSettings {
                base_url: base_url.clone(),
                secret_id: secret_id.clone(),
                sdk_app_id: sdk_app_id.clone(),
                sign_name: sign_name.clone(),
                template_id: template_id.clone(),
                region: region.clone(),
            };
            TencentSmsChannel::new(settings, secret, ctx.timeout, ctx.clock.clone())
        })),
        ChannelKind::Smtp {
            host,
            port,
            tls,
            username,
            password,
            from,
        } => {
            let password = password.as_ref().map(|secret| secret.resolve()).transpose();
            BuildContext::status(password.and_then(|password| {
                let settings = SmtpSettings {
                    host: host.clone(),
                    port: *port,
                    tls: *tls,
                    username: username.clone(),
                    from: from.clone(),
                };
                SmtpChannel::new(settings, password, ctx.timeout, ctx.clock.clone())
            }))
        }
        ChannelKind::Sendgrid {
            base_url,
            api_key,
            from,
            event_public_key,
        } => BuildContext::status(api_key.resolve().and_then(|key| {
            let settings = SendgridSettings {
                base_url: base_url.clone(),
                from: from.clone(),
                event_public_key: event_public_key.clone(),
            };
            SendgridChannel::new(settings, key, ctx.timeout, ctx.clock.clone())
        })),
    }
}
