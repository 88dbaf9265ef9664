//! WeChat Official Account (服务号). Two modes, chosen in the rules:
//!
//! * template (default): one `message/template/send` per follower, the template's keywords
//!   from the message's `template_params` (`data: {key: {value}}`), `client_msg_id` from
//!   the job's idempotency key so WeChat drops a resend within 10 minutes [obs];
//! * mass: one `message/mass/send` per batch of 2 to 10 000 openids, text only, with a
//!   `clientmsgid` derived from the batch's idempotency keys so a resend of the same batch
//!   is recognised as already sent (45065).
//!
//! Both authenticate with an access token from `stable_token`, which (unlike `token`)
//! does not invalidate the tokens other processes hold; it is cached and refreshed once
//! when WeChat refuses it.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::http::client;
use super::render::{ContentError, plain_text, require_text};
use super::wecom::{Answer, exchange, unexpected, until_next_china_day, until_next_minute};
use super::{
    AddressKind, Audience, Channel, Message, SendContext, SendResult, TokenCache, Verdict,
};
use crate::clock::SharedClock;

/// `message/mass/send` takes 2 to 10 000 openids [doc].
pub const MAX_MASS_RECIPIENTS: usize = 10_000;
/// 45066: the same `clientmsgid` retried within a minute [unverified wait].
const CLIENTMSGID_RETRY_WAIT: Duration = Duration::from_secs(60);
const TOKEN_KEY: &str = "access_token";

/// Longest value per keyword type, by the keyword's name without its number (`thing1` is
/// a `thing`). From the keyword rules of subscription messages, which template messages
/// adopted in 2023 [unverified for template messages]; WeChat refuses longer values
/// (47003), so they are refused here before the call.
const KEYWORD_LIMITS: [(&str, usize); 9] = [
    ("thing", 20),
    ("character_string", 32),
    ("number", 32),
    ("letter", 32),
    ("symbol", 5),
    ("phrase", 5),
    ("car_number", 8),
    ("phone_number", 17),
    ("name", 20),
];

pub struct WechatOaChannel {
    base_url: String,
    app_id: String,
    app_secret: SecretString,
    default_template: Option<String>,
    mass_send: bool,
    tokens: TokenCache,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for WechatOaChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatOaChannel")
            .field("base_url", &self.base_url)
            .field("app_id", &self.app_id)
            .field("app_secret", &"[redacted]")
            .field("mass_send", &self.mass_send)
            .finish()
    }
}

impl WechatOaChannel {
    pub fn new(
        base_url: &str,
        app_id: &str,
        app_secret: SecretString,
        default_template: Option<String>,
        mass_send: bool,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            app_id: app_id.to_string(),
            app_secret,
            default_template,
            mass_send,
            tokens: TokenCache::default(),
            client: client(timeout),
            clock,
        }
    }

    /// `force_refresh` is used only when the normal call hands back the very token WeChat
    /// just refused: it invalidates every other holder's token and is limited to 20 a day.
    async fn fetch_token(
        &self,
        force_refresh: bool,
    ) -> Result<(SecretString, Duration), SendResult> {
        let body = json!({
            "grant_type": "client_credential",
            "appid": self.app_id,
            "secret": self.app_secret.expose_secret(),
            "force_refresh": force_refresh,
        });
        let url = format!("{}/cgi-bin/stable_token", self.base_url);
        let now_ms = self.clock.now_ms();
        let answer = exchange(self.client.post(url).json(&body), now_ms)
            .await
            .map_err(|failure| in_step("stable_token", failure))?;
        answer
            .access_token()
            .ok_or_else(|| in_step("stable_token", token_failure(&answer, now_ms)))
    }

    async fn post(
        &self,
        path: &str,
        token: &SecretString,
        body: &Value,
    ) -> Result<Answer, SendResult> {
        let endpoint = format!("{}{path}", self.base_url);
        let url =
            reqwest::Url::parse_with_params(&endpoint, [("access_token", token.expose_secret())])
                .map_err(|error| {
                SendResult::new(
                    Verdict::AccountDisabled,
                    None,
                    format!("`base_url` is not usable: {error}"),
                )
            })?;
        exchange(self.client.post(url).json(body), self.clock.now_ms()).await
    }

    /// Calls `path`; when WeChat refuses the token, gets the current one and calls once more.
    async fn call(&self, path: &str, body: &Value) -> Result<Answer, SendResult> {
        let token = self
            .tokens
            .get_or_fetch(TOKEN_KEY, || self.fetch_token(false))
            .await?;
        let answer = self.post(path, &token, body).await?;
        if !token_refused(&answer) {
            return Ok(answer);
        }
        self.tokens.invalidate(TOKEN_KEY).await;
        let refused = token;
        let token = self
            .tokens
            .get_or_fetch(TOKEN_KEY, || async {
                let current = self.fetch_token(false).await?;
                if current.0.expose_secret() == refused.expose_secret() {
                    return self.fetch_token(true).await;
                }
                Ok(current)
            })
            .await?;
        let answer = self.post(path, &token, body).await?;
        if token_refused(&answer) {
            return Err(SendResult::new(
                Verdict::AccountDisabled,
                Some(answer.status),
                format!(
                    "WeChat refused a freshly fetched access token: {}",
                    answer.detail
                ),
            ));
        }
        Ok(answer)
    }

    fn template_of<'m>(&'m self, message: &'m Message) -> Option<&'m str> {
        message
            .template_id
            .as_deref()
            .or(self.default_template.as_deref())
            .filter(|id| !id.trim().is_empty())
    }

    fn check_template(&self, message: &Message) -> Result<(), ContentError> {
        if self.template_of(message).is_none() {
            return Err(ContentError::new(
                "a WeChat template message needs a template: set `template_id` on the message \
                 or on the channel",
            ));
        }
        if message.template_params.is_empty() {
            return Err(ContentError::new(
                "a WeChat template message needs `template_params`, the template's keywords \
                 (such as thing1 or time2) and their values",
            ));
        }
        for (key, value) in &message.template_params {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ContentError(format!(
                    "`{key}` is not a template keyword (letters, digits and `_`)"
                )));
            }
            if let Some(limit) = keyword_limit(key) {
                let length = value.chars().count();
                if length > limit {
                    return Err(ContentError(format!(
                        "the value of `{key}` is {length} characters; WeChat takes at most {limit}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn template_body(&self, ctx: &SendContext<'_>, message: &Message) -> Value {
        let data: Map<String, Value> = message
            .template_params
            .iter()
            .map(|(key, value)| (key.clone(), json!({ "value": value })))
            .collect();
        let mut body = json!({
            "touser": ctx.recipient,
            "template_id": self.template_of(message).unwrap_or_default(),
            "client_msg_id": client_msg_id(ctx.idempotency_key),
            "data": data,
        });
        if let Some(url) = message.url.as_deref().filter(|url| !url.is_empty()) {
            body["url"] = Value::String(url.to_string());
        }
        body
    }

    async fn send_template(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Err(error) = self.check_template(message) {
            return SendResult::unsendable(&error);
        }
        if !is_openid(ctx.recipient) {
            return not_an_openid(ctx.recipient);
        }
        let body = self.template_body(ctx, message);
        let now_ms = self.clock.now_ms();
        match self.call("/cgi-bin/message/template/send", &body).await {
            Ok(answer) => classify(&answer, "msgid", now_ms),
            Err(failure) => failure,
        }
    }

    async fn send_mass(&self, batch: &[SendContext<'_>], message: &Message) -> Vec<SendResult> {
        if let Err(error) = require_text(message) {
            return batch
                .iter()
                .map(|_| SendResult::unsendable(&error))
                .collect();
        }
        let mut openids: Vec<&str> = Vec::with_capacity(batch.len());
        for ctx in batch {
            if is_openid(ctx.recipient) && !openids.contains(&ctx.recipient) {
                openids.push(ctx.recipient);
            }
        }
        let outcome = match openids.len() {
            0 => None,
            n if n > MAX_MASS_RECIPIENTS => Some(SendResult::new(
                Verdict::ContentBlocked,
                None,
                format!("{n} openids in one mass send; WeChat takes at most {MAX_MASS_RECIPIENTS}"),
            )),
            _ => {
                if let [only] = openids[..] {
                    // The API needs at least two openids; the same one twice reaches that
                    // follower once [unverified: community practice, not in the docs].
                    openids.push(only);
                }
                let keys: Vec<&str> = batch.iter().map(|ctx| ctx.idempotency_key).collect();
                let body = json!({
                    "touser": openids,
                    "msgtype": "text",
                    "text": { "content": plain_text(message) },
                    "clientmsgid": batch_clientmsgid(&keys),
                });
                let now_ms = self.clock.now_ms();
                Some(match self.call("/cgi-bin/message/mass/send", &body).await {
                    Ok(answer) => classify(&answer, "msg_id", now_ms),
                    Err(failure) => failure,
                })
            }
        };
        batch
            .iter()
            .map(|ctx| match &outcome {
                Some(result) if is_openid(ctx.recipient) => result.clone(),
                _ => not_an_openid(ctx.recipient),
            })
            .collect()
    }
}

fn in_step(step: &str, failure: SendResult) -> SendResult {
    SendResult {
        detail: super::truncate(&format!("{step}: {}", failure.detail), super::DETAIL_LIMIT),
        ..failure
    }
}

fn not_an_openid(recipient: &str) -> SendResult {
    SendResult::new(
        Verdict::RecipientInvalid,
        None,
        format!("`{recipient}` is not a WeChat openid"),
    )
}

/// An openid is 28 characters of base64url in practice; anything else cannot be one, and
/// is refused before it reaches a JSON array or a log line.
fn is_openid(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn keyword_limit(key: &str) -> Option<usize> {
    let kind = key.trim_end_matches(|c: char| c.is_ascii_digit());
    KEYWORD_LIMITS
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, limit)| *limit)
}

/// Stable across retries of one job, opaque, and short whatever the key's length.
fn client_msg_id(idempotency_key: &str) -> String {
    let digest = hex::encode(Sha256::digest(idempotency_key.as_bytes()));
    digest[..32].to_string()
}

/// The same set of jobs gives the same id in any order; 64 hex characters is exactly the
/// 64-byte limit of `clientmsgid` [doc].
fn batch_clientmsgid(keys: &[&str]) -> String {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut hasher = Sha256::new();
    for key in sorted {
        hasher.update(key.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Invalid credential / access_token (40001), invalid token (40014), expired (42001).
fn token_refused(answer: &Answer) -> bool {
    matches!(answer.errcode(), Some(40001 | 40014 | 42001))
}

/// A failed `stable_token` call [doc 4.1; obs].
fn token_failure(answer: &Answer, now_ms: i64) -> SendResult {
    let verdict = match answer.errcode() {
        Some(-1) | None => Verdict::Retryable { after: None },
        // The daily token quota (stable_token: 500 000 a day).
        Some(45009) => Verdict::RateLimited {
            wait: until_next_china_day(now_ms),
        },
        Some(45011) => Verdict::RateLimited {
            wait: until_next_minute(now_ms),
        },
        // Wrong app id (40013) or secret (40125, 40001), missing either (41002, 41004),
        // caller IP not whitelisted (40164, 89503 awaiting the admin), account not allowed
        // (48001): only an administrator can fix these.
        Some(40001 | 40013 | 40125 | 41002 | 41004 | 40164 | 89503 | 48001) => {
            Verdict::AccountDisabled
        }
        Some(_) => Verdict::Retryable { after: None },
    };
    answer.result(verdict)
}

/// A template or mass send answer [doc 2.5 / 4.2; obs]. `id_field` names where the
/// provider's message id is (`msgid` for templates, `msg_id` for mass sends).
fn classify(answer: &Answer, id_field: &str, now_ms: i64) -> SendResult {
    let Some(code) = answer.errcode() else {
        return unexpected(answer);
    };
    let verdict = match code {
        0 => Verdict::Delivered,
        // `clientmsgid` already used: an earlier attempt of this batch went out [obs].
        45065 => Verdict::Delivered,
        -1 => Verdict::Retryable { after: None },
        // Daily quota reached (templates: 100 000 a day by default), or no mass-send
        // quota left (45028): nothing gets through before WeChat's day ends.
        45009 | 45028 => Verdict::RateLimited {
            wait: until_next_china_day(now_ms),
        },
        45011 => Verdict::RateLimited {
            wait: until_next_minute(now_ms),
        },
        45066 => Verdict::RateLimited {
            wait: CLIENTMSGID_RETRY_WAIT,
        },
        // Not following the account (43004), not an openid of this account (40003),
        // blocked the account (43019) [obs].
        43004 | 40003 | 43019 => Verdict::RecipientInvalid,
        // The account may not use this API (48001: type or verification), the caller IP
        // is not whitelisted (40164), the account is restricted (50002), or a token was
        // refused again right after a refresh.
        48001 | 40164 | 50002 | 40001 | 40014 | 42001 => Verdict::AccountDisabled,
        // 87014 risky content, 40037 bad template_id, 47003 bad keyword value, 47001 bad
        // data, 40130 openid list size, and any other code: the request as written is
        // refused, and resending it would be refused again.
        _ => Verdict::ContentBlocked,
    };
    let result = answer.result(verdict);
    match (&result.verdict, answer.text(id_field)) {
        (Verdict::Delivered, Some(id)) => result.with_ref(id),
        _ => result,
    }
}

#[async_trait::async_trait]
impl Channel for WechatOaChannel {
    fn kind(&self) -> &'static str {
        "wechat_oa"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::WechatOpenid)
    }

    fn max_batch(&self) -> usize {
        if self.mass_send {
            MAX_MASS_RECIPIENTS
        } else {
            1
        }
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        if self.mass_send {
            require_text(message)
        } else {
            self.check_template(message)
        }
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if self.mass_send {
            let mut results = self.send_mass(std::slice::from_ref(ctx), message).await;
            return results.pop().unwrap_or_else(|| {
                SendResult::new(Verdict::Retryable { after: None }, None, "no result")
            });
        }
        self.send_template(ctx, message).await
    }

    async fn send_batch(&self, batch: &[SendContext<'_>], message: &Message) -> Vec<SendResult> {
        if self.mass_send {
            return self.send_mass(batch, message).await;
        }
        let mut results = Vec::with_capacity(batch.len());
        for ctx in batch {
            results.push(self.send_template(ctx, message).await);
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::routing::post;
    use proptest::prelude::*;

    use super::*;
    use crate::channels::Format;
    use crate::clock::ManualClock;

    const APP_ID: &str = "wx0123456789abcdef";
    const SECRET: &str = "oa-secret-never-shown";
    const FOLLOWER: &str = "oR5Gjjl_eiZoUpGozMo7dbBJ362A";
    const STRANGER: &str = "oR5Gjjl_notAFollower00000000";

    fn answer(body: Value) -> Answer {
        Answer {
            status: 200,
            detail: body.to_string(),
            json: Some(body),
        }
    }

    #[test]
    fn every_row_of_the_send_classification_table() {
        // 2024-01-01T00:00:45Z = 08:00:45 in China.
        let now = 1_704_067_245_000;
        let code = |errcode: i64| {
            classify(
                &answer(json!({"errcode": errcode, "errmsg": "x"})),
                "msgid",
                now,
            )
            .verdict
        };
        assert_eq!(code(0), Verdict::Delivered);
        assert_eq!(code(45065), Verdict::Delivered);
        assert_eq!(code(-1), Verdict::Retryable { after: None });
        let until_midnight = Duration::from_secs(16 * 3600 - 45);
        assert_eq!(
            code(45009),
            Verdict::RateLimited {
                wait: until_midnight
            }
        );
        assert_eq!(
            code(45028),
            Verdict::RateLimited {
                wait: until_midnight
            }
        );
        assert_eq!(
            code(45011),
            Verdict::RateLimited {
                wait: Duration::from_secs(15)
            }
        );
        assert_eq!(
            code(45066),
            Verdict::RateLimited {
                wait: CLIENTMSGID_RETRY_WAIT
            }
        );
        for invalid in [43004, 40003, 43019] {
            assert_eq!(code(invalid), Verdict::RecipientInvalid, "{invalid}");
        }
        for disabled in [48001, 40164, 50002, 40001, 40014, 42001] {
            assert_eq!(code(disabled), Verdict::AccountDisabled, "{disabled}");
        }
        for blocked in [87014, 40037, 47003, 47001, 40130, 12345] {
            assert_eq!(code(blocked), Verdict::ContentBlocked, "{blocked}");
        }
        assert_eq!(
            classify(&answer(json!({"msgid": 1})), "msgid", now).verdict,
            Verdict::Retryable { after: None }
        );
        let delivered = classify(
            &answer(json!({"errcode": 0, "errmsg": "ok", "msgid": 200228332})),
            "msgid",
            now,
        );
        assert_eq!(delivered.provider_ref.as_deref(), Some("200228332"));
    }

    #[test]
    fn every_row_of_the_token_classification_table() {
        let now = 1_704_067_245_000;
        let code = |errcode: i64| {
            token_failure(&answer(json!({"errcode": errcode, "errmsg": "x"})), now).verdict
        };
        assert_eq!(code(-1), Verdict::Retryable { after: None });
        assert_eq!(
            code(45009),
            Verdict::RateLimited {
                wait: Duration::from_secs(16 * 3600 - 45)
            }
        );
        assert_eq!(
            code(45011),
            Verdict::RateLimited {
                wait: Duration::from_secs(15)
            }
        );
        for disabled in [40001, 40013, 40125, 41002, 41004, 40164, 89503, 48001] {
            assert_eq!(code(disabled), Verdict::AccountDisabled, "{disabled}");
        }
        assert_eq!(code(40999), Verdict::Retryable { after: None });
    }

    fn template_message(params: &[(&str, &str)]) -> Message {
        Message {
            text: "ignored by templates".into(),
            url: Some("https://t.example/c/abc".into()),
            template_params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Message::default()
        }
    }

    fn channel(base_url: &str, secret: &str, mass_send: bool) -> WechatOaChannel {
        let clock: SharedClock = Arc::new(ManualClock::new(1_704_067_245_000));
        WechatOaChannel::new(
            base_url,
            APP_ID,
            SecretString::from(secret),
            Some("tpl-default".into()),
            mass_send,
            Duration::from_secs(5),
            clock,
        )
    }

    #[test]
    fn templates_need_an_id_keywords_and_values_that_fit() {
        let oa = channel("http://127.0.0.1:9", SECRET, false);
        assert!(
            oa.check(&template_message(&[("thing1", "发货通知")]))
                .is_ok()
        );
        assert!(oa.check(&template_message(&[])).is_err());
        let too_long = oa
            .check(&template_message(&[("thing1", &"字".repeat(21))]))
            .unwrap_err();
        assert_eq!(
            too_long.to_string(),
            "the value of `thing1` is 21 characters; WeChat takes at most 20"
        );
        assert!(
            oa.check(&template_message(&[("time2", &"x".repeat(100))]))
                .is_ok()
        );
        assert!(oa.check(&template_message(&[("bad key", "v")])).is_err());
        let no_default = WechatOaChannel {
            default_template: None,
            ..channel("http://127.0.0.1:9", SECRET, false)
        };
        assert!(
            no_default
                .check(&template_message(&[("thing1", "x")]))
                .is_err()
        );
        let named = Message {
            template_id: Some("tpl-2".into()),
            ..template_message(&[("thing1", "x")])
        };
        assert!(no_default.check(&named).is_ok());
        // Mass sends are text: the template fields do not matter, the text does.
        let mass = channel("http://127.0.0.1:9", SECRET, true);
        assert!(mass.check(&Message::text("hello")).is_ok());
        assert!(mass.check(&Message::text(" ")).is_err());
        assert_eq!(mass.max_batch(), MAX_MASS_RECIPIENTS);
        assert_eq!(oa.max_batch(), 1);
    }

    #[test]
    fn dedup_ids_are_stable_and_within_the_limits() {
        assert_eq!(client_msg_id("job-1"), client_msg_id("job-1"));
        assert_ne!(client_msg_id("job-1"), client_msg_id("job-2"));
        assert_eq!(client_msg_id(&"k".repeat(500)).len(), 32);
        let id = batch_clientmsgid(&["b", "a", "c"]);
        assert_eq!(id.len(), 64);
        assert_eq!(id, batch_clientmsgid(&["c", "a", "b"]));
        assert_ne!(id, batch_clientmsgid(&["a", "b"]));
    }

    #[test]
    fn openids_are_checked_before_any_call() {
        assert!(is_openid(FOLLOWER));
        assert!(!is_openid(""));
        assert!(!is_openid("a b"));
        assert!(!is_openid("\"},{\""));
        assert!(!is_openid(&"a".repeat(65)));
    }

    /// WeChat as far as these calls go: `stable_token` checks the app id and secret and,
    /// like WeChat, returns the same token until it is force-refreshed; the send APIs
    /// check the token and the documented body shapes.
    #[derive(Default)]
    struct Wechat {
        token_calls: Vec<bool>,
        token: Option<String>,
        generation: usize,
        /// Treat the current token as revoked by another process, once.
        revoke: bool,
        calls: Vec<(String, Value)>,
        used_clientmsgids: Vec<String>,
    }

    type Shared = Arc<Mutex<Wechat>>;

    async fn stable_token(
        State(state): State<Shared>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        if body["grant_type"] != "client_credential" || body["appid"] != APP_ID {
            return axum::Json(json!({"errcode": 40013, "errmsg": "invalid appid"}));
        }
        if body["secret"] != SECRET {
            return axum::Json(json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
        }
        let mut wechat = state.lock().unwrap();
        let force = body["force_refresh"].as_bool().unwrap_or(false);
        wechat.token_calls.push(force);
        if force || wechat.token.is_none() {
            wechat.generation += 1;
            wechat.token = Some(format!("stable-{}", wechat.generation));
            wechat.revoke = false;
        }
        axum::Json(json!({"access_token": wechat.token, "expires_in": 7200}))
    }

    async fn api(
        State(state): State<Shared>,
        uri: axum::http::Uri,
        Query(query): Query<HashMap<String, String>>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        let mut wechat = state.lock().unwrap();
        if wechat.revoke || query.get("access_token") != wechat.token.as_ref() {
            return axum::Json(
                json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}),
            );
        }
        let path = uri.path().to_string();
        wechat.calls.push((path.clone(), body.clone()));
        if path.ends_with("/template/send") {
            let shaped = body["touser"].is_string()
                && body["template_id"].is_string()
                && body["data"]
                    .as_object()
                    .is_some_and(|data| data.values().all(|keyword| keyword["value"].is_string()));
            if !shaped {
                return axum::Json(json!({"errcode": 47001, "errmsg": "data format error"}));
            }
            if body["touser"] != FOLLOWER {
                return axum::Json(json!({"errcode": 43004, "errmsg": "require subscribe"}));
            }
            return axum::Json(json!({"errcode": 0, "errmsg": "ok", "msgid": 200228332}));
        }
        let openids = body["touser"].as_array().map_or(0, Vec::len);
        if !(2..=MAX_MASS_RECIPIENTS).contains(&openids) || body["msgtype"] != "text" {
            return axum::Json(json!({"errcode": 40130, "errmsg": "invalid openid list size"}));
        }
        let clientmsgid = body["clientmsgid"].as_str().unwrap_or_default().to_string();
        if wechat.used_clientmsgids.contains(&clientmsgid) {
            return axum::Json(
                json!({"errcode": 45065, "errmsg": "clientmsgid exist", "msg_id": 34182}),
            );
        }
        wechat.used_clientmsgids.push(clientmsgid);
        axum::Json(
            json!({"errcode": 0, "errmsg": "send job submission success", "msg_id": 34182, "msg_data_id": 206227730}),
        )
    }

    async fn mock_wechat() -> (String, Shared) {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/cgi-bin/stable_token", post(stable_token))
            .route("/cgi-bin/message/template/send", post(api))
            .route("/cgi-bin/message/mass/send", post(api))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), state)
    }

    fn ctx<'a>(recipient: &'a str, key: &'a str) -> SendContext<'a> {
        SendContext {
            job_id: 1,
            idempotency_key: key,
            attempt: 1,
            recipient,
        }
    }

    #[tokio::test]
    async fn a_template_message_reaches_a_follower_and_a_stranger_is_invalid() {
        let (base_url, wechat) = mock_wechat().await;
        let oa = channel(&base_url, SECRET, false);
        let message =
            template_message(&[("thing1", "您的订单已发货"), ("time2", "2024-01-01 08:00")]);
        let delivered = oa.send(&ctx(FOLLOWER, "job-1"), &message).await;
        assert_eq!(delivered.verdict, Verdict::Delivered);
        assert_eq!(delivered.provider_ref.as_deref(), Some("200228332"));
        let stranger = oa.send(&ctx(STRANGER, "job-2"), &message).await;
        assert_eq!(stranger.verdict, Verdict::RecipientInvalid);
        let wechat = wechat.lock().unwrap();
        assert_eq!(wechat.token_calls, vec![false], "one token for both sends");
        assert_eq!(
            wechat.calls[0].1,
            json!({
                "touser": FOLLOWER,
                "template_id": "tpl-default",
                "url": "https://t.example/c/abc",
                "client_msg_id": client_msg_id("job-1"),
                "data": {"thing1": {"value": "您的订单已发货"}, "time2": {"value": "2024-01-01 08:00"}},
            })
        );
    }

    #[tokio::test]
    async fn a_revoked_token_is_replaced_once_and_force_refreshed_only_when_needed() {
        let (base_url, wechat) = mock_wechat().await;
        let oa = channel(&base_url, SECRET, false);
        let message = template_message(&[("thing1", "x")]);
        assert_eq!(
            oa.send(&ctx(FOLLOWER, "a"), &message).await.verdict,
            Verdict::Delivered
        );
        // Another process force-refreshed: our token is dead, and the normal call returns
        // the same dead token, so only a forced refresh helps.
        wechat.lock().unwrap().revoke = true;
        assert_eq!(
            oa.send(&ctx(FOLLOWER, "b"), &message).await.verdict,
            Verdict::Delivered
        );
        assert_eq!(wechat.lock().unwrap().token_calls, vec![false, false, true]);
    }

    #[tokio::test]
    async fn a_wrong_secret_disables_the_account_without_showing_it() {
        let (base_url, _) = mock_wechat().await;
        let result = channel(&base_url, "wrong-secret", false)
            .send(&ctx(FOLLOWER, "a"), &template_message(&[("thing1", "x")]))
            .await;
        assert_eq!(result.verdict, Verdict::AccountDisabled);
        assert!(
            result.detail.starts_with("stable_token: "),
            "{}",
            result.detail
        );
        assert!(!result.detail.contains("wrong-secret"));
        assert!(!format!("{:?}", channel(&base_url, SECRET, false)).contains(SECRET));
    }

    #[tokio::test]
    async fn a_mass_send_carries_the_batch_and_a_resend_is_recognised() {
        let (base_url, wechat) = mock_wechat().await;
        let oa = channel(&base_url, SECRET, true);
        let batch = [
            ctx(FOLLOWER, "k1"),
            ctx(STRANGER, "k2"),
            ctx("not an openid", "k3"),
        ];
        let message = Message {
            format: Format::Markdown,
            ..Message::text("**Spring** sale")
        };
        let first = oa.send_batch(&batch, &message).await;
        let verdicts: Vec<&Verdict> = first.iter().map(|r| &r.verdict).collect();
        assert_eq!(
            verdicts,
            [
                &Verdict::Delivered,
                &Verdict::Delivered,
                &Verdict::RecipientInvalid
            ]
        );
        assert_eq!(first[0].provider_ref.as_deref(), Some("34182"));
        // The same batch again (a crash before the result was stored): WeChat says the
        // clientmsgid was used, which means it went out.
        let again = oa.send_batch(&batch, &message).await;
        assert_eq!(again[1].verdict, Verdict::Delivered);
        let wechat = wechat.lock().unwrap();
        assert_eq!(
            wechat.calls[0].1,
            json!({
                "touser": [FOLLOWER, STRANGER],
                "msgtype": "text",
                "text": {"content": "Spring sale"},
                "clientmsgid": batch_clientmsgid(&["k1", "k2", "k3"]),
            })
        );
        assert_eq!(wechat.calls[0].1, wechat.calls[1].1);
    }

    #[tokio::test]
    async fn a_single_follower_mass_send_meets_the_two_openid_minimum() {
        let (base_url, wechat) = mock_wechat().await;
        let result = channel(&base_url, SECRET, true)
            .send(&ctx(FOLLOWER, "k1"), &Message::text("hi"))
            .await;
        assert_eq!(result.verdict, Verdict::Delivered);
        assert_eq!(
            wechat.lock().unwrap().calls[0].1["touser"],
            json!([FOLLOWER, FOLLOWER])
        );
    }

    proptest! {
        #[test]
        fn checks_never_panic(key in "\\PC{0,30}", value in "\\PC{0,60}", text in "\\PC{0,200}") {
            let oa = channel("http://127.0.0.1:9", SECRET, false);
            let mut message = template_message(&[]);
            message.template_params.insert(key.clone(), value);
            message.text = text;
            let _ = oa.check(&message);
            let _ = is_openid(&key);
            let _ = keyword_limit(&key);
        }
    }
}
