//! DingTalk app messages to people, one of two ways per account:
//!
//! * `agent_id`: work notifications (工作通知) through `topapi/message/corpconversation/
//!   asyncsend_v2` (legacy `gettoken` token in the query), up to 100 userids per task so
//!   that `getsendresult` can answer for it. DingTalk accepts the task and then silently
//!   drops some recipients (same content twice in a day, a 501st message to one person in a
//!   day, invalid ids), so every task is read back and those recipients are not delivered.
//! * `robot_code`: the app robot's 1:1 chats through `v1.0/robot/oToMessages/batchSend`
//!   (v1.0 `accessToken` in the `x-acs-dingtalk-access-token` header), up to 20 userIds a
//!   call, with the invalid and flow-controlled users named in the answer.
//!
//! Both tokens are cached; an answer saying the token expired invalidates it, and the
//! call is made once more with a fresh one.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::dingtalk::{API_BASE_URL, OAPI_BASE_URL, read_answer};
use super::http::{client, retry_after, transport_failure};
use super::registry::BuildContext;
use super::render::ContentError;
use super::{
    AddressKind, Audience, Channel, Message, SendContext, SendResult, TokenCache, Verdict,
};
use crate::clock::{SharedClock, UnixMillis};
use crate::rules::{DingtalkAppTarget, SecretRef};

#[path = "dingtalk_app_answers.rs"]
mod answers;
#[path = "dingtalk_app_render.rs"]
mod app_render;

use answers::{Fate, classify_oapi, classify_v1, fates_from_send_result};

/// Work notification tasks: `getsendresult` times out for tasks of more than 100 users.
pub const WORK_NOTIFICATION_BATCH: usize = 100;
/// Robot 1:1 messages: at most 20 `userIds` per call.
pub const ROBOT_BATCH: usize = 20;
/// How many times a task's result is read before the users DingTalk has not reported yet
/// are taken as delivered (the task was accepted; the read-status poll sees them later).
const READBACK_ROUNDS: usize = 3;
/// Pause between result reads: DingTalk fills a task of 100 in about a second.
const READBACK_PAUSE: Duration = Duration::from_secs(1);

const LEGACY_TOKEN: &str = "oapi";
const V1_TOKEN: &str = "v1.0";

pub struct DingtalkAppChannel {
    app_key: String,
    app_secret: SecretString,
    target: DingtalkAppTarget,
    oapi: String,
    api: String,
    tokens: TokenCache,
    client: reqwest::Client,
    clock: SharedClock,
    readback_pause: Duration,
}

impl std::fmt::Debug for DingtalkAppChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingtalkAppChannel")
            .field("app_key", &self.app_key)
            .field("app_secret", &"[redacted]")
            .field("target", &self.target)
            .field("oapi", &self.oapi)
            .field("api", &self.api)
            .finish()
    }
}

impl DingtalkAppChannel {
    /// `base_url`, when set, stands in for both of DingTalk's hosts.
    pub fn new(
        app_key: &str,
        app_secret: SecretString,
        target: DingtalkAppTarget,
        base_url: Option<&str>,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        let host = |default: &str| {
            base_url
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_string()
        };
        Self {
            app_key: app_key.to_string(),
            app_secret,
            target,
            oapi: host(OAPI_BASE_URL),
            api: host(API_BASE_URL),
            tokens: TokenCache::default(),
            client: client(timeout),
            clock,
            readback_pause: READBACK_PAUSE,
        }
    }

    /// The channel of a `dingtalk_app` account, or why it is disabled.
    pub fn from_rules(
        app_key: &str,
        app_secret: &SecretRef,
        target: &DingtalkAppTarget,
        base_url: Option<&str>,
        ctx: &BuildContext,
    ) -> Result<Self, String> {
        let secret = app_secret.resolve()?;
        Ok(Self::new(
            app_key,
            secret,
            target.clone(),
            base_url,
            ctx.timeout,
            ctx.clock.clone(),
        ))
    }

    /// Tests read task results back-to-back instead of pausing between reads.
    #[cfg(test)]
    fn without_readback_pause(mut self) -> Self {
        self.readback_pause = Duration::ZERO;
        self
    }

    fn render(&self, message: &Message) -> Result<Rendered, ContentError> {
        match &self.target {
            DingtalkAppTarget::WorkNotification { .. } => {
                app_render::work_notification(message).map(Rendered::Work)
            }
            DingtalkAppTarget::Robot { .. } => {
                app_render::robot(message).map(|(key, param)| Rendered::Robot { key, param })
            }
        }
    }

    // ---- tokens -------------------------------------------------------------------------

    async fn token(&self, which: &'static str) -> Result<SecretString, SendResult> {
        self.tokens
            .get_or_fetch(which, || async {
                if which == LEGACY_TOKEN {
                    self.fetch_legacy_token().await
                } else {
                    self.fetch_v1_token().await
                }
            })
            .await
    }

    /// `GET /gettoken?appkey=…&appsecret=…` for the `oapi` APIs.
    async fn fetch_legacy_token(&self) -> Result<(SecretString, Duration), SendResult> {
        let mut url = parse_url(&format!("{}/gettoken", self.oapi))?;
        url.query_pairs_mut()
            .append_pair("appkey", &self.app_key)
            .append_pair("appsecret", self.app_secret.expose_secret());
        let (status, wait, body, now_ms) = self.exchange(self.client.get(url)).await?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let token = value.get("access_token").and_then(Value::as_str);
        match (value.get("errcode").and_then(Value::as_i64), token) {
            (Some(0), Some(token)) if !token.is_empty() => Ok((
                SecretString::from(token.to_string()),
                lifetime(value.get("expires_in")),
            )),
            _ => Err(token_refused(classify_oapi(status, wait, &body, now_ms))),
        }
    }

    /// `POST /v1.0/oauth2/accessToken {"appKey","appSecret"}` for the `api` host.
    async fn fetch_v1_token(&self) -> Result<(SecretString, Duration), SendResult> {
        let url = parse_url(&format!("{}/v1.0/oauth2/accessToken", self.api))?;
        let body = json!({"appKey": self.app_key, "appSecret": self.app_secret.expose_secret()});
        let request = self.client.post(url).json(&body);
        let (status, wait, body, now_ms) = self.exchange(request).await?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match value.get("accessToken").and_then(Value::as_str) {
            Some(token) if (200..300).contains(&status) && !token.is_empty() => Ok((
                SecretString::from(token.to_string()),
                lifetime(value.get("expireIn")),
            )),
            _ => Err(token_refused(classify_v1(status, wait, &body, now_ms))),
        }
    }

    /// Sends a request and reads the answer: (status, Retry-After, body, when it was sent).
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<Duration>, Vec<u8>, UnixMillis), SendResult> {
        let now_ms = self.clock.now_ms();
        let response = request
            .send()
            .await
            .map_err(|error| transport_failure(&error))?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers(), now_ms);
        let body = read_answer(response).await.map_err(|reason| {
            SendResult::new(Verdict::Retryable { after: None }, Some(status), reason)
        })?;
        Ok((status, wait, body, now_ms))
    }

    // ---- work notifications -------------------------------------------------------------

    /// An `oapi` POST with the legacy token in the query: the answer when its errcode is
    /// 0, the classified failure otherwise. An expired token is replaced once.
    async fn call_oapi(&self, path: &str, body: &Value) -> Result<Value, SendResult> {
        let mut refreshed = false;
        loop {
            let token = self.token(LEGACY_TOKEN).await?;
            let mut url = parse_url(&format!("{}{path}", self.oapi))?;
            url.query_pairs_mut()
                .append_pair("access_token", token.expose_secret());
            let request = self.client.post(url).json(body);
            let (status, wait, answer, now_ms) = self.exchange(request).await?;
            let value: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            let errcode = value.get("errcode").and_then(Value::as_i64);
            if (200..300).contains(&status) && errcode == Some(0) {
                return Ok(value);
            }
            if !refreshed && errcode.is_some_and(answers::legacy_token_expired) {
                self.tokens.invalidate(LEGACY_TOKEN).await;
                refreshed = true;
                continue;
            }
            return Err(classify_oapi(status, wait, &answer, now_ms));
        }
    }

    async fn send_work_notification(
        &self,
        agent_id: i64,
        users: &[&str],
        msg: &Value,
    ) -> HashMap<String, SendResult> {
        let body = json!({
            "agent_id": agent_id,
            "userid_list": users.join(","),
            "msg": msg,
        });
        let accepted = self
            .call_oapi("/topapi/message/corpconversation/asyncsend_v2", &body)
            .await;
        let answer = match accepted {
            Ok(answer) => answer,
            Err(result) => return same_for_all(users, &result),
        };
        let Some(task_id) = answer.get("task_id").and_then(id_text) else {
            let result = SendResult::delivered(
                Some(200),
                "DingTalk accepted the work notification but named no task_id",
            );
            return same_for_all(users, &result);
        };
        self.read_back(agent_id, &task_id, users).await
    }

    /// Reads the task's result until every user is accounted for, or [`READBACK_ROUNDS`]
    /// times; filtered users get their verdict, the rest count as delivered.
    async fn read_back(
        &self,
        agent_id: i64,
        task_id: &str,
        users: &[&str],
    ) -> HashMap<String, SendResult> {
        let query = json!({"agent_id": agent_id, "task_id": task_id.parse::<i64>().ok()});
        let mut fates: HashMap<String, Fate> = HashMap::new();
        let mut unread_reason = None;
        for round in 0..READBACK_ROUNDS {
            if round > 0 && !self.readback_pause.is_zero() {
                tokio::time::sleep(self.readback_pause).await;
            }
            match self
                .call_oapi("/topapi/message/corpconversation/getsendresult", &query)
                .await
            {
                Ok(answer) => {
                    let now_ms = self.clock.now_ms();
                    fates = fates_from_send_result(answer.get("send_result"), now_ms);
                    unread_reason = None;
                    if users.iter().all(|user| fates.contains_key(*user)) {
                        break;
                    }
                }
                Err(failure) => {
                    unread_reason = Some(failure.detail);
                    break;
                }
            }
        }
        users
            .iter()
            .map(|user| {
                let result = match fates.remove(*user) {
                    Some(fate) => fate.into_result(task_id),
                    None => SendResult::delivered(
                        Some(200),
                        match &unread_reason {
                            Some(reason) => format!(
                                "accepted as task {task_id}; its result could not be read: {reason}"
                            ),
                            None => format!(
                                "accepted as task {task_id}; DingTalk had not reported this user yet"
                            ),
                        },
                    ),
                };
                (user.to_string(), result.with_ref(task_id))
            })
            .collect()
    }

    // ---- robot 1:1 ----------------------------------------------------------------------

    async fn send_robot(
        &self,
        robot_code: &str,
        users: &[&str],
        key: &str,
        param: &str,
    ) -> HashMap<String, SendResult> {
        let body = json!({
            "robotCode": robot_code,
            "userIds": users,
            "msgKey": key,
            "msgParam": param,
        });
        let mut refreshed = false;
        let (status, wait, answer, now_ms) = loop {
            let token = match self.token(V1_TOKEN).await {
                Ok(token) => token,
                Err(result) => return same_for_all(users, &result),
            };
            let url = match parse_url(&format!("{}/v1.0/robot/oToMessages/batchSend", self.api)) {
                Ok(url) => url,
                Err(result) => return same_for_all(users, &result),
            };
            let request = self
                .client
                .post(url)
                .header("x-acs-dingtalk-access-token", token.expose_secret())
                .json(&body);
            let exchanged = match self.exchange(request).await {
                Ok(exchanged) => exchanged,
                Err(result) => return same_for_all(users, &result),
            };
            if !refreshed && answers::v1_token_expired(exchanged.0, &exchanged.2) {
                self.tokens.invalidate(V1_TOKEN).await;
                refreshed = true;
                continue;
            }
            break exchanged;
        };
        let value: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let query_key = value.get("processQueryKey").and_then(Value::as_str);
        let Some(query_key) = query_key.filter(|_| (200..300).contains(&status)) else {
            return same_for_all(users, &classify_v1(status, wait, &answer, now_ms));
        };
        let mut fates = answers::fates_from_batch_send(&value);
        users
            .iter()
            .map(|user| {
                let result = fates.remove(*user).map_or_else(
                    || {
                        SendResult::delivered(
                            Some(status),
                            format!("sent; processQueryKey {query_key}"),
                        )
                    },
                    |fate| fate.into_result(query_key),
                );
                (user.to_string(), result.with_ref(query_key))
            })
            .collect()
    }
}

/// What the message becomes for the account's API.
enum Rendered {
    Work(Value),
    Robot { key: &'static str, param: String },
}

fn parse_url(text: &str) -> Result<Url, SendResult> {
    Url::parse(text).map_err(|error| {
        SendResult::new(
            Verdict::AccountDisabled,
            None,
            format!("bad base_url: {error}"),
        )
    })
}

/// Token lifetimes are stated in seconds (7200 today); a missing one is taken as an hour.
fn lifetime(value: Option<&Value>) -> Duration {
    Duration::from_secs(value.and_then(Value::as_u64).unwrap_or(3600))
}

/// A token call that failed for any reason but throttling or a passing fault means the
/// app key and secret (or the app) are refused: no refresh fixes that.
fn token_refused(mut result: SendResult) -> SendResult {
    if !matches!(
        result.verdict,
        Verdict::Retryable { .. } | Verdict::RateLimited { .. }
    ) {
        result.verdict = Verdict::AccountDisabled;
    }
    result.detail = super::truncate(
        &format!("getting an access token failed: {}", result.detail),
        super::DETAIL_LIMIT,
    );
    result
}

/// `task_id` comes as a number; some gateways stringify it.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(number) => Some(number.to_string()),
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

fn same_for_all(users: &[&str], result: &SendResult) -> HashMap<String, SendResult> {
    users
        .iter()
        .map(|user| (user.to_string(), result.clone()))
        .collect()
}

/// DingTalk userids are joined with commas in `userid_list`; an empty id or one holding a
/// comma cannot be a DingTalk user and would corrupt the list.
fn is_plausible_user(user: &str) -> bool {
    !user.trim().is_empty() && !user.contains(',')
}

#[async_trait::async_trait]
impl Channel for DingtalkAppChannel {
    fn kind(&self) -> &'static str {
        "dingtalk_app"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::DingtalkUser)
    }

    fn max_batch(&self) -> usize {
        match self.target {
            DingtalkAppTarget::WorkNotification { .. } => WORK_NOTIFICATION_BATCH,
            DingtalkAppTarget::Robot { .. } => ROBOT_BATCH,
        }
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        self.render(message).map(|_| ())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        let mut results = self.send_batch(std::slice::from_ref(ctx), message).await;
        results.pop().unwrap_or_else(|| {
            SendResult::new(Verdict::Retryable { after: None }, None, "no result")
        })
    }

    async fn send_batch(&self, batch: &[SendContext<'_>], message: &Message) -> Vec<SendResult> {
        let rendered = match self.check(message).and_then(|()| self.render(message)) {
            Ok(rendered) => rendered,
            Err(error) => {
                return batch
                    .iter()
                    .map(|_| SendResult::unsendable(&error))
                    .collect();
            }
        };
        let mut users: Vec<&str> = Vec::new();
        for ctx in batch {
            if is_plausible_user(ctx.recipient) && !users.contains(&ctx.recipient) {
                users.push(ctx.recipient);
            }
        }
        let mut outcomes: HashMap<String, SendResult> = HashMap::new();
        for chunk in users.chunks(self.max_batch()) {
            let chunk_outcomes = match (&self.target, &rendered) {
                (DingtalkAppTarget::WorkNotification { agent_id }, Rendered::Work(msg)) => {
                    self.send_work_notification(*agent_id, chunk, msg).await
                }
                (DingtalkAppTarget::Robot { robot_code }, Rendered::Robot { key, param }) => {
                    self.send_robot(robot_code, chunk, key, param).await
                }
                _ => same_for_all(
                    chunk,
                    &SendResult::new(Verdict::ContentBlocked, None, "rendered for another API"),
                ),
            };
            outcomes.extend(chunk_outcomes);
        }
        batch
            .iter()
            .map(|ctx| {
                outcomes.get(ctx.recipient).cloned().unwrap_or_else(|| {
                    SendResult::new(
                        Verdict::RecipientInvalid,
                        None,
                        format!("`{}` is not a DingTalk userid", ctx.recipient),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "dingtalk_app_tests.rs"]
mod tests;
