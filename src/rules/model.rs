//! The validated shape of `bot-rules/`: what every other module reads. No I/O here except
//! resolving a secret from the environment, which is deliberately late (at account build
//! time) so a missing variable disables one account instead of the whole service.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Who may do what, in increasing order of power. Operators in chat and admin API tokens
/// share this ladder, so "operator" means the same thing on both surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Approver,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Whether someone holding `self` may do what `required` demands.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret named by the environment variable that holds it; the rules never hold the
/// value itself.
#[derive(Clone)]
pub struct SecretRef {
    pub env: String,
    /// The variable as first read. The environment of a running process does not change
    /// (this crate never sets variables), and a callback handler resolves its account's
    /// secret on every request: reading it once spares each request a scan of the
    /// environment under its lock. Shared by the clones of one rules version.
    resolved: std::sync::Arc<std::sync::OnceLock<Result<SecretString, String>>>,
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRef").field("env", &self.env).finish()
    }
}

impl PartialEq for SecretRef {
    fn eq(&self, other: &Self) -> bool {
        self.env == other.env
    }
}

impl Eq for SecretRef {}

impl SecretRef {
    pub fn new(env: impl Into<String>) -> Self {
        Self {
            env: env.into(),
            resolved: Default::default(),
        }
    }

    /// The variable's value. The error names the variable, for the log, `/readyz` and
    /// `check-rules`, and never contains a value.
    pub fn resolve(&self) -> Result<SecretString, String> {
        #[cfg(test)]
        if let Some(value) = test_secrets::get(&self.env) {
            return Ok(SecretString::from(value));
        }
        self.resolved.get_or_init(|| self.read()).clone()
    }

    fn read(&self) -> Result<SecretString, String> {
        match std::env::var(&self.env) {
            Ok(value) if !value.trim().is_empty() => Ok(SecretString::from(value)),
            Ok(_) => Err(format!("environment variable `{}` is empty", self.env)),
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable `{}` is not set", self.env))
            }
            Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                "environment variable `{}` is not valid UTF-8",
                self.env
            )),
        }
    }
}

/// Secret values for unit tests. Setting a real environment variable in-process needs
/// `unsafe` (forbidden in this crate) and races with other tests; tests register values
/// under variable names of their own here instead.
#[cfg(test)]
pub(crate) mod test_secrets {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    static VALUES: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

    /// Makes `SecretRef::new(name).resolve()` return `value` in this test process.
    pub(crate) fn set(name: &str, value: &str) {
        if let Ok(mut values) = VALUES.lock() {
            values.insert(name.to_string(), value.to_string());
        }
    }

    pub(super) fn get(name: &str) -> Option<String> {
        VALUES.lock().ok()?.get(name).cloned()
    }
}

/// `text` lowercased, without building a new string.
fn folded(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().flat_map(char::to_lowercase)
}

/// The whole, validated rule set. Cheap to share behind an `Arc`; replaced as a whole on
/// reload.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The directory the rules were read from; relative paths inside the rules (such as a
    /// `log` channel's file) are resolved against the working directory, not this.
    pub dir: PathBuf,
    pub delivery: DeliverySettings,
    pub inbound: Vec<InboundAccount>,
    pub channels: Vec<ChannelAccount>,
    pub operators: Vec<Operator>,
    /// Keyed by the built-in command name (`help`, `whoami`, …).
    pub commands: BTreeMap<String, CommandRule>,
    pub api_tokens: Vec<ApiToken>,
}

/// How the outbox behaves. Lives in the rules so it reloads with them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Total time one provider call may take.
    pub http_timeout: Duration,
    /// How long a claimed job stays reserved for its worker; after this a crashed
    /// worker's job is claimed again. Must exceed `http_timeout`.
    pub lease: Duration,
    /// Concurrent sends per instance.
    pub concurrency: usize,
    /// How often idle workers look for due jobs.
    pub poll_interval: Duration,
    pub retry: RetryPolicy,
    pub circuit: CircuitSettings,
    /// Where operators are told about open circuits and rejected rule reloads (the ops
    /// chat), if anywhere.
    pub alerts: Option<AlertsTarget>,
    /// The IANA zone in which daily and monthly quotas roll over; Chinese vendors count
    /// in China time.
    pub quota_time_zone: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            http_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            concurrency: 32,
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            circuit: CircuitSettings::default(),
            alerts: None,
            quota_time_zone: DEFAULT_QUOTA_TIME_ZONE.to_string(),
        }
    }
}

pub const DEFAULT_QUOTA_TIME_ZONE: &str = "Asia/Shanghai";

/// When a channel account's circuit opens and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Consecutive retryable failures that open the circuit.
    pub failures: u32,
    /// How long a run of failures keeps it open before one probe is let through.
    pub cooldown: Duration,
    /// How long an account-disabled answer keeps it open before a probe.
    pub disabled_cooldown: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(60),
            disabled_cooldown: Duration::from_secs(10 * 60),
        }
    }
}

/// The channel (and, for channels that message a person, the address) that receives
/// operational alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsTarget {
    pub channel: String,
    /// Empty for a group robot, which posts to its group.
    pub to: String,
}

/// When to try a failed send again: data, not code, so operators can tune it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Wait before retry N (the last entry repeats until `max_age`).
    pub schedule: Vec<Duration>,
    /// Fraction of each wait added or removed at random (0.2 = ±20 %), so a burst of
    /// failures does not retry in lockstep.
    pub jitter: f64,
    /// A job older than this is dead rather than retried.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let secs = Duration::from_secs;
        Self {
            schedule: vec![
                secs(5),
                secs(30),
                secs(2 * 60),
                secs(10 * 60),
                secs(30 * 60),
                secs(60 * 60),
                secs(2 * 60 * 60),
                secs(6 * 60 * 60),
            ],
            jitter: 0.2,
            max_age: secs(24 * 60 * 60),
        }
    }
}

/// A chat account that sends us callbacks; `id` is the `/webhooks/{id}` path segment.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundAccount {
    pub id: String,
    pub platform: InboundPlatform,
}

/// Platform-specific settings of an inbound account; field names follow each platform's
/// own terms (design.md, "Inbound accounts in the rules").
#[derive(Debug, Clone, PartialEq)]
pub enum InboundPlatform {
    /// The local console (`qunfa shell`): loopback only, authenticated by the token file
    /// that `serve` writes beside its database.
    Shell,
    /// WeCom intelligent robot (group @-mentions, encrypted JSON, receive id "").
    WecomAibot {
        token: SecretRef,
        aes_key: SecretRef,
    },
    /// WeCom self-built application (1:1, encrypted XML, receive id = corp id).
    WecomApp {
        token: SecretRef,
        aes_key: SecretRef,
        corp_id: String,
        agent_id: Option<String>,
    },
    /// WeChat Official Account; no `aes_key` means plain mode.
    WechatOa {
        token: SecretRef,
        aes_key: Option<SecretRef>,
        app_id: String,
    },
    /// DingTalk enterprise robot in HTTP mode.
    Dingtalk { app_secret: SecretRef },
    /// Feishu / Lark event subscription v2.
    Feishu {
        verification_token: SecretRef,
        encrypt_key: Option<SecretRef>,
        app_id: String,
        app_secret: SecretRef,
        base_url: String,
    },
    /// Slack slash commands and Events API.
    Slack {
        signing_secret: SecretRef,
        bot_token: Option<SecretRef>,
        base_url: String,
    },
    /// QQ bot (official webhook mode, Ed25519).
    Qq {
        app_id: String,
        app_secret: SecretRef,
        base_url: String,
    },
    /// Standard Webhooks from the customer's own systems.
    Standard {
        secret: SecretRef,
        tolerance: Duration,
    },
}

/// Where each platform's API lives unless the rules point elsewhere.
pub const FEISHU_BASE_URL: &str = "https://open.feishu.cn";
pub const SLACK_BASE_URL: &str = "https://slack.com/api";
pub const QQ_BASE_URL: &str = "https://api.sgroup.qq.com";
/// How far a Standard Webhooks timestamp may be from now (the spec's suggestion).
pub const STANDARD_TOLERANCE: Duration = Duration::from_secs(5 * 60);

impl InboundPlatform {
    /// Every platform name the rules accept, in the order of [`InboundPlatform::name`].
    pub const NAMES: [&'static str; 9] = [
        "shell",
        "wecom_aibot",
        "wecom_app",
        "wechat_oa",
        "dingtalk",
        "feishu",
        "slack",
        "qq",
        "standard",
    ];

    /// The platform name as written in the rules and recorded in audits.
    pub fn name(&self) -> &'static str {
        match self {
            InboundPlatform::Shell => "shell",
            InboundPlatform::WecomAibot { .. } => "wecom_aibot",
            InboundPlatform::WecomApp { .. } => "wecom_app",
            InboundPlatform::WechatOa { .. } => "wechat_oa",
            InboundPlatform::Dingtalk { .. } => "dingtalk",
            InboundPlatform::Feishu { .. } => "feishu",
            InboundPlatform::Slack { .. } => "slack",
            InboundPlatform::Qq { .. } => "qq",
            InboundPlatform::Standard { .. } => "standard",
        }
    }

    /// The secrets the account cannot work without (optional ones only when configured).
    pub fn secrets(&self) -> Vec<&SecretRef> {
        match self {
            InboundPlatform::Shell => vec![],
            InboundPlatform::WecomAibot { token, aes_key }
            | InboundPlatform::WecomApp { token, aes_key, .. } => vec![token, aes_key],
            InboundPlatform::WechatOa { token, aes_key, .. } => {
                std::iter::once(token).chain(aes_key.as_ref()).collect()
            }
            InboundPlatform::Dingtalk { app_secret } => vec![app_secret],
            InboundPlatform::Feishu {
                verification_token,
                encrypt_key,
                app_secret,
                ..
            } => std::iter::once(verification_token)
                .chain(encrypt_key.as_ref())
                .chain(std::iter::once(app_secret))
                .collect(),
            InboundPlatform::Slack {
                signing_secret,
                bot_token,
                ..
            } => std::iter::once(signing_secret)
                .chain(bot_token.as_ref())
                .collect(),
            InboundPlatform::Qq { app_secret, .. } => vec![app_secret],
            InboundPlatform::Standard { secret, .. } => vec![secret],
        }
    }
}

/// An outbound account.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAccount {
    pub id: String,
    pub kind: ChannelKind,
    /// Sends allowed per window, counted in the database; the kind's published limits
    /// unless the rules say otherwise.
    pub limits: Limits,
    /// Recipients per provider call, at most the API's cap (`None`: the API's cap).
    pub batch_size: Option<usize>,
}

/// Send quotas of one channel account. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
    pub per_month: Option<u32>,
    /// Per recipient (WeCom drops app messages beyond 30 a minute per member, DingTalk
    /// filters beyond 500 a day per user, a WeChat service account reaches each follower
    /// with 4 mass sends a month).
    pub recipient_per_minute: Option<u32>,
    pub recipient_per_day: Option<u32>,
    pub recipient_per_month: Option<u32>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }
}

/// Where a `dingtalk_app` channel delivers: exactly one of `agent_id` / `robot_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DingtalkAppTarget {
    /// Work notifications (工作通知) from the app with this agent id.
    WorkNotification { agent_id: i64 },
    /// 1:1 chats with the app's robot.
    Robot { robot_code: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelKind {
    /// Appends each message as a JSON line to `path`.
    Log { path: PathBuf },
    /// POSTs each message to `url`, signed per Standard Webhooks with the `whsec_` secret.
    Webhook { url: String, secret: SecretRef },
    // -- wecom / wechat
    /// WeCom group robot: POSTs to the robot's webhook, whose `key=` is the credential.
    WecomRobot { key: SecretRef, base_url: String },
    /// WeCom self-built app: messages to members by userid, up to 1000 per call.
    WecomApp {
        corp_id: String,
        agent_id: i64,
        secret: SecretRef,
        base_url: String,
        /// How long WeCom drops an identical request (`enable_duplicate_check`), so a
        /// resend after a crash is not delivered twice; `None` switches the check off.
        duplicate_check: Option<Duration>,
    },
    /// WeChat Official Account: a template message per follower, or (`mass_send`) one mass
    /// send per batch of up to 10 000 openids.
    WechatOa {
        app_id: String,
        app_secret: SecretRef,
        /// The template of messages that name none.
        template_id: Option<String>,
        mass_send: bool,
        base_url: String,
    },
    /// QQ bot: read so existing configs load, refused for sending (the platform withdrew
    /// proactive messages in April 2025).
    Qq {
        app_id: String,
        app_secret: SecretRef,
        base_url: String,
    },
    // -- dingtalk
    /// DingTalk custom group robot: `access_token` from the webhook URL, the `SEC…` signing
    /// secret when the robot signs, and the robot's security keywords (one must appear in
    /// every message). `base_url` `None` is `https://oapi.dingtalk.com`.
    DingtalkRobot {
        access_token: SecretRef,
        secret: Option<SecretRef>,
        keywords: Vec<String>,
        base_url: Option<String>,
    },
    /// DingTalk app messages to people: work notifications or the app robot's 1:1 chats.
    /// `base_url` `None` is DingTalk's two hosts (`oapi.dingtalk.com` and
    /// `api.dingtalk.com`); set, it stands in for both.
    DingtalkApp {
        app_key: String,
        app_secret: SecretRef,
        target: DingtalkAppTarget,
        base_url: Option<String>,
    },
    // -- feishu / slack
    /// Feishu / Lark custom group bot: `POST {base_url}/open-apis/bot/v2/hook/{hook_token}`,
    /// signed when the bot has a signing secret.
    FeishuBot {
        hook_token: SecretRef,
        secret: Option<SecretRef>,
        base_url: String,
    },
    /// Feishu / Lark self-built app sending 1:1 messages through `im/v1/messages`.
    FeishuApp {
        app_id: String,
        app_secret: SecretRef,
        base_url: String,
    },
    /// Slack: an incoming webhook (one channel) or a bot token (`chat.postMessage` to each
    /// recipient's user or channel id).
    Slack { auth: SlackAuth, base_url: String },
    // -- sms / email
    /// Twilio Programmable Messaging: one SMS per recipient through the Messages API.
    TwilioSms {
        base_url: String,
        account_sid: String,
        auth_token: SecretRef,
        /// The sender (number, short code or alphanumeric id); may be absent when a
        /// messaging service chooses it.
        from: Option<String>,
        messaging_service_sid: Option<String>,
        /// Where Twilio posts status callbacks (the exact public URL it signs).
        status_callback_url: Option<String>,
        /// Longest SMS accepted, in billed segments.
        max_segments: usize,
    },
    /// Aliyun (Alibaba Cloud) SMS `SendSms`: template SMS, up to 1000 numbers per call.
    AliyunSms {
        base_url: String,
        access_key_id: String,
        access_key_secret: SecretRef,
        sign_name: String,
        /// Default template; a message's `template_id` overrides it.
        template_code: Option<String>,
        region_id: String,
    },
    /// Tencent Cloud SMS `SendSms` (2021-01-11): template SMS, up to 200 numbers per call.
    TencentSms {
        base_url: String,
        secret_id: String,
        secret_key: SecretRef,
        sdk_app_id: String,
        sign_name: String,
        /// Default template; a message's `template_id` overrides it.
        template_id: Option<String>,
        region: String,
    },
    /// E-mail through an SMTP submission server.
    Smtp {
        host: String,
        port: u16,
        tls: SmtpTls,
        /// Absent: the server takes mail without authentication.
        username: Option<String>,
        password: Option<SecretRef>,
        /// The sender mailbox, `addr@example.com` or `Name <addr@example.com>`.
        from: String,
    },
    /// E-mail through SendGrid's v3 Mail Send API.
    Sendgrid {
        base_url: String,
        api_key: SecretRef,
        from: String,
        /// The Event Webhook verification key (base64 SPKI DER; public, not a secret).
        event_public_key: Option<String>,
    },
}

// -- sms / email
/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS before authenticating (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS at all: only for a relay on the same host or a test server.
    None,
}

impl ChannelKind {
    pub fn name(&self) -> &'static str {
        match self {
            ChannelKind::Log { .. } => "log",
            ChannelKind::Webhook { .. } => "webhook",
            // -- wecom / wechat
            ChannelKind::WecomRobot { .. } => "wecom_robot",
            ChannelKind::WecomApp { .. } => "wecom_app",
            ChannelKind::WechatOa { .. } => "wechat_oa",
            ChannelKind::Qq { .. } => "qq",
            // -- dingtalk
            ChannelKind::DingtalkRobot { .. } => "dingtalk_robot",
            ChannelKind::DingtalkApp { .. } => "dingtalk_app",
            // -- feishu / slack
            ChannelKind::FeishuBot { .. } => "feishu_bot",
            ChannelKind::FeishuApp { .. } => "feishu_app",
            ChannelKind::Slack { .. } => "slack",
            // -- sms / email
            ChannelKind::TwilioSms { .. } => "twilio_sms",
            ChannelKind::AliyunSms { .. } => "aliyun_sms",
            ChannelKind::TencentSms { .. } => "tencent_sms",
            ChannelKind::Smtp { .. } => "smtp",
            ChannelKind::Sendgrid { .. } => "sendgrid",
        }
    }

    /// The vendor's published limits, used where the rules set none.
    pub fn default_limits(&self) -> Limits {
        match self {
            ChannelKind::Log { .. } | ChannelKind::Webhook { .. } => Limits::default(),
            // -- wecom / wechat
            // 20 messages a minute per robot; the 21st is refused with 45009.
            ChannelKind::WecomRobot { .. } => Limits {
                per_minute: Some(20),
                ..Limits::default()
            },
            // WeCom silently drops app messages beyond 30 a minute to one member. The daily
            // quota (licensed seats x 200 recipient-sends) differs per corp, so it is left
            // to `per_day` in the rules.
            ChannelKind::WecomApp { .. } => Limits {
                recipient_per_minute: Some(30),
                ..Limits::default()
            },
            // A service account reaches each follower with 4 mass sends a natural month.
            ChannelKind::WechatOa {
                mass_send: true, ..
            } => Limits {
                recipient_per_month: Some(4),
                ..Limits::default()
            },
            // 100 000 template messages a day is the default quota of an account.
            ChannelKind::WechatOa { .. } => Limits {
                per_day: Some(100_000),
                ..Limits::default()
            },
            ChannelKind::Qq { .. } => Limits::default(),
            // -- dingtalk
            // 20 a minute per robot; the 21st throttles the robot for 10 minutes.
            ChannelKind::DingtalkRobot { .. } => Limits {
                per_minute: Some(20),
                ..Limits::default()
            },
            // Work notifications: 5,000 recipients a minute per app, and DingTalk silently
            // filters a 501st message to one person in a day (internal apps).
            ChannelKind::DingtalkApp {
                target: DingtalkAppTarget::WorkNotification { .. },
                ..
            } => Limits {
                per_minute: Some(5000),
                recipient_per_day: Some(500),
                ..Limits::default()
            },
            // The robot's per-user limits are not published; DingTalk names the throttled
            // users in each answer instead.
            ChannelKind::DingtalkApp {
                target: DingtalkAppTarget::Robot { .. },
                ..
            } => Limits::default(),
            // -- feishu / slack
            // A custom bot takes 100 a minute and 5 a second; quotas are counted per
            // minute, so the per-second burst is left to the delivery pacing and to the
            // 11232 answer (rate limited) when it trips.
            ChannelKind::FeishuBot { .. } => Limits {
                per_minute: Some(100),
                ..Limits::default()
            },
            // `im/v1/messages` allows 1000 a minute and 50 a second per app; the minute
            // figure binds first (50/s would be 3000). The 5-a-second cap per user is below
            // what a per-minute counter can express and is answered with 230020.
            ChannelKind::FeishuApp { .. } => Limits {
                per_minute: Some(1000),
                ..Limits::default()
            },
            // Slack posts about one message a second per channel: an incoming webhook is
            // one channel; a bot posts to one channel per recipient, under a workspace-wide
            // limit Slack does not publish as a number.
            ChannelKind::Slack {
                auth: SlackAuth::Webhook(_),
                ..
            } => Limits {
                per_minute: Some(60),
                ..Limits::default()
            },
            ChannelKind::Slack {
                auth: SlackAuth::BotToken(_),
                ..
            } => Limits {
                recipient_per_minute: Some(60),
                ..Limits::default()
            },
            // -- sms / email
            // A long code sends one segment a second; Twilio queues the excess for up to
            // four hours and then fails it, so the default paces at the number's speed.
            ChannelKind::TwilioSms { .. } => Limits {
                per_minute: Some(60),
                ..Limits::default()
            },
            // Both vendors' default flow control per number (verification-code style:
            // Aliyun 1/min, 5/h, 10/day; Tencent 1/30 s, 5/h, 10/day); accounts that
            // raised it in the console set their own values.
            ChannelKind::AliyunSms { .. } | ChannelKind::TencentSms { .. } => Limits {
                recipient_per_minute: Some(1),
                recipient_per_day: Some(10),
                ..Limits::default()
            },
            // Quotas depend on the mail server or the SendGrid plan.
            ChannelKind::Smtp { .. } | ChannelKind::Sendgrid { .. } => Limits::default(),
        }
    }

    /// Most recipients one call of the kind's API takes.
    pub fn max_batch(&self) -> usize {
        match self {
            ChannelKind::Log { .. } | ChannelKind::Webhook { .. } => 1,
            // -- wecom / wechat
            ChannelKind::WecomRobot { .. } | ChannelKind::Qq { .. } => 1,
            ChannelKind::WecomApp { .. } => 1000,
            ChannelKind::WechatOa {
                mass_send: true, ..
            } => 10_000,
            ChannelKind::WechatOa { .. } => 1,
            // -- dingtalk
            ChannelKind::DingtalkRobot { .. } => 1,
            // The API takes 5,000 userids per task, but `getsendresult` (the per-user
            // filtered/read lists) only answers for tasks of at most 100.
            ChannelKind::DingtalkApp {
                target: DingtalkAppTarget::WorkNotification { .. },
                ..
            } => 100,
            ChannelKind::DingtalkApp {
                target: DingtalkAppTarget::Robot { .. },
                ..
            } => 20,
            // -- feishu / slack
            // One message per call on all three: the bot and the webhook post to one group,
            // `im/v1/messages` and `chat.postMessage` take one receiver.
            ChannelKind::FeishuBot { .. }
            | ChannelKind::FeishuApp { .. }
            | ChannelKind::Slack { .. } => 1,
            // -- sms / email
            ChannelKind::AliyunSms { .. } => 1000,
            ChannelKind::TencentSms { .. } => 200,
            ChannelKind::TwilioSms { .. }
            | ChannelKind::Smtp { .. }
            | ChannelKind::Sendgrid { .. } => 1,
        }
    }
}

// -- feishu / slack
/// How a Slack channel account authenticates, which also decides where it posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackAuth {
    /// An incoming webhook URL: the whole URL is the secret and names the channel.
    Webhook(SecretRef),
    /// A bot token (`xoxb-…`) for `chat.postMessage`.
    BotToken(SecretRef),
}

/// A person allowed to command the bot, by their id on one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Platform name as in [`InboundPlatform::name`].
    pub platform: String,
    pub user: String,
    pub role: Role,
}

/// How one built-in command is called and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRule {
    /// The built-in command this configures (`help`, `whoami`).
    pub name: String,
    /// Other names, typically Chinese (`帮助`).
    pub aliases: Vec<String>,
    /// `None`: anyone may call it, operator or not (`/whoami`, so people can onboard).
    pub role: Option<Role>,
    /// One line for `/help`.
    pub summary: String,
    /// The argument synopsis, e.g. `[command]`.
    pub usage: String,
}

/// An admin API bearer token, stored only as the SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

impl Rules {
    /// The role of a platform user, if they are an operator.
    pub fn role_of(&self, platform: &str, user: &str) -> Option<Role> {
        self.operators
            .iter()
            .filter(|op| op.platform == platform && op.user == user)
            .map(|op| op.role)
            .max()
    }

    pub fn inbound_account(&self, id: &str) -> Option<&InboundAccount> {
        self.inbound.iter().find(|account| account.id == id)
    }

    pub fn channel(&self, id: &str) -> Option<&ChannelAccount> {
        self.channels.iter().find(|account| account.id == id)
    }

    /// Finds a command by its name or any alias, case-insensitively for ASCII names.
    /// Every chat message that starts with a word asks this, so it neither allocates nor
    /// lowercases every alias: a word typed as the name is found in the map, anything
    /// else is compared case-folded on the fly.
    pub fn command(&self, name_or_alias: &str) -> Option<&CommandRule> {
        if let Some(command) = self.commands.get(name_or_alias) {
            return Some(command);
        }
        self.commands.values().find(|command| {
            folded(name_or_alias).eq(command.name.chars())
                || command
                    .aliases
                    .iter()
                    .any(|alias| folded(alias).eq(folded(name_or_alias)))
        })
    }
}
