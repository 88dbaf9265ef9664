//! DingTalk custom group robot (自定义机器人): `POST {base}/robot/send?access_token=…`,
//! signed with `timestamp` (ms) and `sign` when the robot has a `SEC…` secret. Renders
//! text, markdown, link and actionCard messages, @mentions by user id or mobile number,
//! enforces the robot's security keywords before sending, and classifies the errcode that
//! DingTalk puts in every HTTP 200.

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::dingtalk::{
    OAPI_BASE_URL, ROBOT_THROTTLE, SHORT_THROTTLE, platform_verdict, read_answer, robot_sign,
    until_next_day,
};
use super::http::{client, retry_after, transport_failure};
use super::render::{self, ContentError};
use super::{AddressKind, Audience, Channel, Format, Message, SendContext, SendResult, Verdict};
use crate::clock::{SharedClock, UnixMillis};
use crate::rules::SecretRef;

/// DingTalk refuses robot messages over 20,000 bytes (errcode 460101) [unverified: seen in
/// third-party reports, not re-read in DingTalk's own docs].
const BODY_LIMIT: usize = 20_000;
/// Titles taken from the first line of the text are cut to this; DingTalk shows them in
/// the conversation list and notifications.
const DERIVED_TITLE_CHARS: usize = 64;
/// The single button of an actionCard made from a message that has a URL but no buttons
/// (the label DingTalk's own doc sample uses).
const READ_MORE: &str = "阅读全文";

pub struct DingtalkRobotChannel {
    endpoint: String,
    access_token: SecretString,
    secret: Option<SecretString>,
    keywords: Vec<String>,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for DingtalkRobotChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkRobotChannel")
            .field("endpoint", &self.endpoint)
            .field("access_token", &"[redacted]")
            .field("signed", &self.secret.is_some())
            .field("keywords", &self.keywords)
            .finish()
    }
}

impl DingtalkRobotChannel {
    pub fn new(
        base_url: Option<&str>,
        access_token: SecretString,
        secret: Option<SecretString>,
        keywords: Vec<String>,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        let base = base_url.unwrap_or(OAPI_BASE_URL).trim_end_matches('/');
        Self {
            endpoint: format!("{base}/robot/send"),
            access_token,
            secret,
            keywords,
            client: client(timeout),
            clock,
        }
    }

    /// The channel of a `dingtalk_robot` account, or why it is disabled (a secret variable
    /// that does not resolve).
    pub fn from_rules(
        access_token: &SecretRef,
        secret: Option<&SecretRef>,
        keywords: &[String],
        base_url: Option<&str>,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let token = access_token.resolve()?;
        let secret = secret.map(SecretRef::resolve).transpose()?;
        Ok(Self::new(
            base_url,
            token,
            secret,
            keywords.to_vec(),
            timeout,
            clock,
        ))
    }

    /// The request URL: token, then (signed robots) timestamp and URL-encoded sign. Never
    /// logged or put in a detail: it carries the access token.
    fn url(&self, now_ms: UnixMillis) -> Result<Url, String> {
        let mut url =
            Url::parse(&self.endpoint).map_err(|error| format!("bad base_url: {error}"))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("access_token", self.access_token.expose_secret());
            if let Some(secret) = &self.secret {
                let sign = robot_sign(secret.expose_secret(), now_ms)
                    .ok_or_else(|| "cannot key the signature".to_string())?;
                query.append_pair("timestamp", &now_ms.to_string());
                query.append_pair("sign", &sign);
            }
        }
        Ok(url)
    }

    /// The robot's JSON body for `message`, @mentioning `recipient` when it is not empty.
    fn render(&self, message: &Message, recipient: &str) -> Result<Value, ContentError> {
        render::require_text(message)?;
        let mentions = Mentions::of(message, recipient);
        let body = match effective_format(message, mentions.any()) {
            Format::Text => json!({
                "msgtype": "text",
                "text": {"content": mentions.append_to(render::plain_text(message))},
                "at": mentions.to_json(),
            }),
            Format::Markdown => json!({
                "msgtype": "markdown",
                "markdown": {
                    "title": title(message),
                    "text": mentions.append_to(render::markdown(message)),
                },
                "at": mentions.to_json(),
            }),
            Format::Link => {
                let text = if message.text.trim().is_empty() {
                    title(message)
                } else {
                    message.text.clone()
                };
                json!({
                    "msgtype": "link",
                    "link": {
                        "title": title(message),
                        "text": text,
                        "picUrl": "",
                        "messageUrl": message.url.as_deref().unwrap_or_default(),
                    },
                })
            }
            Format::Card => json!({"msgtype": "actionCard", "actionCard": action_card(message)}),
        };
        render::fit_bytes("the DingTalk robot message", &body.to_string(), BODY_LIMIT)?;
        self.check_keywords(&body)?;
        Ok(body)
    }

    /// The robot refuses (310000) any message without one of its security keywords, so
    /// the rendered text must carry one.
    fn check_keywords(&self, body: &Value) -> Result<(), ContentError> {
        if self.keywords.is_empty() {
            return Ok(());
        }
        let mut visible = String::new();
        collect_strings(body, &mut visible);
        if self
            .keywords
            .iter()
            .any(|keyword| visible.contains(keyword.as_str()))
        {
            return Ok(());
        }
        Err(ContentError::new(format!(
            "the message contains none of the robot's keywords ({}); DingTalk refuses it \
             (errcode 310000) unless the text has one",
            self.keywords.join(", ")
        )))
    }
}

/// Links and cards cannot @mention, so a message that mentions someone is sent as
/// Markdown (title, text, buttons and URL as links); a link without a URL or a card with
/// nothing to click is Markdown too.
fn effective_format(message: &Message, mentions: bool) -> Format {
    let has_url = message.url.as_deref().is_some_and(|url| !url.is_empty());
    match message.format {
        Format::Link | Format::Card if mentions => Format::Markdown,
        Format::Link if !message.buttons.is_empty() => Format::Card,
        Format::Link if !has_url => Format::Markdown,
        Format::Card if message.buttons.is_empty() && !has_url => Format::Markdown,
        format => format,
    }
}

fn title(message: &Message) -> String {
    render::title_or_first_line(message, DERIVED_TITLE_CHARS)
}

/// One button opens `singleURL`; several become `btns`. A card URL that is not a button
/// stays reachable as a link in the text.
fn action_card(message: &Message) -> Value {
    let url = message.url.as_deref().filter(|url| !url.is_empty());
    let mut text = message.text.clone();
    match (message.buttons.as_slice(), url) {
        ([], Some(url)) => {
            return json!({
                "title": title(message),
                "text": text,
                "btnOrientation": "0",
                "singleTitle": READ_MORE,
                "singleURL": url,
            });
        }
        (_, Some(url)) if !text.contains(url) => text.push_str(&format!("\n\n[{url}]({url})")),
        _ => {}
    }
    match message.buttons.as_slice() {
        [only] => json!({
            "title": title(message),
            "text": text,
            "btnOrientation": "0",
            "singleTitle": only.text,
            "singleURL": only.url,
        }),
        buttons => json!({
            "title": title(message),
            "text": text,
            "btnOrientation": "0",
            "btns": buttons
                .iter()
                .map(|button| json!({"title": button.text, "actionURL": button.url}))
                .collect::<Vec<_>>(),
        }),
    }
}

/// Every string value of the body, for the keyword check (the text DingTalk shows).
fn collect_strings(value: &Value, into: &mut String) {
    match value {
        Value::String(text) => {
            into.push_str(text);
            into.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, into)),
        Value::Object(fields) => fields
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "msgtype" | "picUrl"))
            .for_each(|(_, item)| collect_strings(item, into)),
        _ => {}
    }
}

/// Who a message @mentions: mobile numbers go to `atMobiles`, user ids to `atUserIds`.
#[derive(Debug, Default)]
struct Mentions {
    mobiles: Vec<String>,
    user_ids: Vec<String>,
    all: bool,
}

impl Mentions {
    fn of(message: &Message, recipient: &str) -> Self {
        let mut mentions = Mentions {
            all: message.mention_all,
            ..Self::default()
        };
        let targets = message
            .mentions
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(recipient));
        for target in targets.map(str::trim).filter(|t| !t.is_empty()) {
            let (list, value) = match mainland_mobile(target) {
                Some(mobile) => (&mut mentions.mobiles, mobile),
                None => (&mut mentions.user_ids, target.to_string()),
            };
            if !list.contains(&value) {
                list.push(value);
            }
        }
        mentions
    }

    fn any(&self) -> bool {
        self.all || !self.mobiles.is_empty() || !self.user_ids.is_empty()
    }

    /// DingTalk only highlights a mention whose `@target` is also in the text.
    fn append_to(&self, mut text: String) -> String {
        for target in self.mobiles.iter().chain(&self.user_ids) {
            let tag = format!("@{target}");
            if !text.contains(&tag) {
                text.push(' ');
                text.push_str(&tag);
            }
        }
        text
    }

    fn to_json(&self) -> Value {
        json!({
            "atMobiles": self.mobiles,
            "atUserIds": self.user_ids,
            "isAtAll": self.all,
        })
    }
}

/// A mainland mobile number (11 digits starting with 1, `+86` allowed) as DingTalk's
/// `atMobiles` wants it.
fn mainland_mobile(target: &str) -> Option<String> {
    let digits = target
        .strip_prefix("+86")
        .map(|rest| rest.trim_start_matches(['-', ' ']))
        .unwrap_or(target);
    let is_mobile =
        digits.len() == 11 && digits.starts_with('1') && digits.bytes().all(|b| b.is_ascii_digit());
    is_mobile.then(|| digits.to_string())
}

/// Classifies one answer of `robot/send`. DingTalk answers HTTP 200 for business errors,
/// so success is only `errcode` 0.
pub(crate) fn classify(
    status: u16,
    wait: Option<Duration>,
    body: &[u8],
    now_ms: UnixMillis,
) -> SendResult {
    let detail = String::from_utf8_lossy(body);
    let answer: Option<(i64, String)> =
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|value| {
                let code = value.get("errcode")?.as_i64()?;
                let message = value
                    .get("errmsg")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Some((code, message))
            });
    let verdict = match (status, answer) {
        (429, _) => Verdict::RateLimited {
            wait: wait.unwrap_or(SHORT_THROTTLE),
        },
        (408 | 500..=599, _) => Verdict::Retryable { after: wait },
        (200..=299 | 400..=499, Some((code, message))) => errcode_verdict(code, &message, now_ms),
        // A 2xx that is not DingTalk's JSON (a proxy page; DingTalk's own per-IP block
        // answers HTML) does not prove delivery.
        (200..=299, None) => Verdict::Retryable { after: wait },
        (401 | 403 | 404, None) => Verdict::AccountDisabled,
        _ => Verdict::ContentBlocked,
    };
    SendResult::new(verdict, Some(status), detail)
}

fn errcode_verdict(code: i64, message: &str, now_ms: UnixMillis) -> Verdict {
    if let Some(verdict) = platform_verdict(code, now_ms) {
        return verdict;
    }
    match code {
        0 => Verdict::Delivered,
        // 130101: more than 20 a minute; the robot is then throttled for 10 minutes.
        // 410100: "sent too fast" [unverified], treated the same.
        130101 | 410100 => Verdict::RateLimited {
            wait: ROBOT_THROTTLE,
        },
        // 300005 token does not exist (robot deleted), 400101 access_token does not exist,
        // 400102 robot disabled (机器人已停用) [unverified codes].
        300005 | 400101 | 400102 => Verdict::AccountDisabled,
        // 310000 is every security-settings failure. Only a missing keyword is about this
        // message (another text with a keyword goes through). A bad sign, an IP outside
        // the whitelist or a timestamp more than an hour off are the account's set-up or
        // this host's clock: every later message fails the same way, so the account is
        // disabled (the circuit opens and operators are told) instead of retried.
        310000 if is_keyword_failure(message) => Verdict::ContentBlocked,
        310000 => Verdict::AccountDisabled,
        // Unsafe link, inappropriate text, image or content [unverified codes].
        430101..=430104 => Verdict::ContentBlocked,
        // Message too long [unverified].
        460101 => Verdict::ContentBlocked,
        // "Missing parameter": without the access token it is the account's set-up,
        // otherwise this request.
        40035 if message.contains("access_token") => Verdict::AccountDisabled,
        // The organisation's robot call quota is spent for the day [obs, single source].
        90030 => Verdict::RateLimited {
            wait: until_next_day(now_ms),
        },
        _ if message.contains("停用") || message.to_ascii_lowercase().contains("stopped") => {
            Verdict::AccountDisabled
        }
        // Anything else refused this request as written: stop and let people look
        // rather than resend the same body for a day.
        _ => Verdict::ContentBlocked,
    }
}

fn is_keyword_failure(message: &str) -> bool {
    message.to_ascii_lowercase().contains("keyword") || message.contains("关键词")
}

#[async_trait::async_trait]
impl Channel for DingtalkRobotChannel {
    fn kind(&self) -> &'static str {
        "dingtalk_robot"
    }

    fn audience(&self) -> Audience {
        Audience::Group(AddressKind::DingtalkUser)
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        self.render(message, "").map(|_| ())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check(message) {
            return SendResult::unsendable(&error);
        }
        let body = match self.render(message, ctx.recipient) {
            Ok(body) => body,
            Err(error) => return SendResult::unsendable(&error),
        };
        let now_ms = self.clock.now_ms();
        let url = match self.url(now_ms) {
            Ok(url) => url,
            Err(reason) => return SendResult::new(Verdict::AccountDisabled, None, reason),
        };
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json;charset=utf-8")
            .body(body.to_string())
            .send()
            .await;
        match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let wait = retry_after(response.headers(), now_ms);
                match read_answer(response).await {
                    Ok(answer) => classify(status, wait, &answer, now_ms),
                    Err(reason) => {
                        SendResult::new(Verdict::Retryable { after: None }, Some(status), reason)
                    }
                }
            }
            Err(error) => transport_failure(&error),
        }
    }
}

#[cfg(test)]
#[path = "dingtalk_robot_tests.rs"]
mod tests;
