//! WeCom self-built app messages (应用消息): `message/send` to up to 1000 members per call,
//! authenticated by an access token from `gettoken` (corp id + app secret), cached and
//! refreshed once when WeCom refuses it. WeCom answers success for a call that reached only
//! some members and names the others in `invaliduser` / `unlicenseduser`; those recipients
//! get `RecipientInvalid`, the rest `Delivered` with the call's `msgid`.
//!
//! `enable_duplicate_check` makes WeCom drop an identical request within the configured
//! interval, so the resend that follows a crash between the call and the commit is not
//! delivered twice. The body therefore holds nothing attempt-specific.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::http::client;
use super::render::{ContentError, fit_bytes, markdown, plain_text, require_text};
use super::wecom::{
    ARTICLE_DESCRIPTION_BYTES, ARTICLE_TITLE_BYTES, Answer, exchange, news_card, text_notice_card,
    title_and_body, unexpected, until_next_minute,
};
use super::{
    AddressKind, Audience, Channel, Format, Message, SendContext, SendResult, TokenCache, Verdict,
};
use crate::clock::SharedClock;

/// [obs, doc copies] text and markdown content "不超过2048个字节".
const CONTENT_LIMIT: usize = 2048;
/// `touser` takes at most 1000 userids per call.
pub const MAX_RECIPIENTS: usize = 1000;
/// [doc] textcard `btntxt` "不超过4个文字".
const BUTTON_TEXT_CHARS: usize = 4;
/// 45033 (too many concurrent calls) clears as soon as a call in flight ends.
const CONCURRENCY_WAIT: Duration = Duration::from_secs(2);
const TOKEN_KEY: &str = "access_token";

pub struct WecomAppChannel {
    base_url: String,
    corp_id: String,
    agent_id: i64,
    secret: SecretString,
    duplicate_check: Option<Duration>,
    tokens: TokenCache,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for WecomAppChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomAppChannel")
            .field("base_url", &self.base_url)
            .field("corp_id", &self.corp_id)
            .field("agent_id", &self.agent_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// How one `message/send` call went, before it is spread over the batch.
enum CallOutcome {
    /// A failure that applies to every recipient of the call.
    All(SendResult),
    /// errcode 0: delivered to everyone except the users WeCom named, by lower-cased id.
    Accepted {
        answer: Answer,
        msgid: Option<String>,
        refused: HashMap<String, &'static str>,
    },
}

impl WecomAppChannel {
    pub fn new(
        base_url: &str,
        corp_id: &str,
        agent_id: i64,
        secret: SecretString,
        duplicate_check: Option<Duration>,
        timeout: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            corp_id: corp_id.to_string(),
            agent_id,
            secret,
            duplicate_check,
            tokens: TokenCache::default(),
            client: client(timeout),
            clock,
        }
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration), SendResult> {
        let endpoint = format!("{}/cgi-bin/gettoken", self.base_url);
        let url = Url::parse_with_params(
            &endpoint,
            [
                ("corpid", self.corp_id.as_str()),
                ("corpsecret", self.secret.expose_secret()),
            ],
        )
        .map_err(|error| {
            SendResult::new(
                Verdict::AccountDisabled,
                None,
                format!("gettoken: `base_url` is not usable: {error}"),
            )
        })?;
        let now_ms = self.clock.now_ms();
        let answer = exchange(self.client.get(url), now_ms)
            .await
            .map_err(|failure| in_step("gettoken", failure))?;
        answer
            .access_token()
            .ok_or_else(|| in_step("gettoken", token_failure(&answer, now_ms)))
    }

    async fn token(&self) -> Result<SecretString, SendResult> {
        self.tokens
            .get_or_fetch(TOKEN_KEY, || self.fetch_token())
            .await
    }

    async fn post(&self, token: &SecretString, body: &Value) -> Result<Answer, SendResult> {
        let endpoint = format!("{}/cgi-bin/message/send", self.base_url);
        let url = Url::parse_with_params(&endpoint, [("access_token", token.expose_secret())])
            .map_err(|error| {
                SendResult::new(
                    Verdict::AccountDisabled,
                    None,
                    format!("`base_url` is not usable: {error}"),
                )
            })?;
        exchange(self.client.post(url).json(body), self.clock.now_ms()).await
    }

    /// Calls `message/send`; when WeCom refuses the token (expired early, revoked), fetches
    /// a new one and calls once more.
    async fn call(&self, body: &Value) -> Result<Answer, SendResult> {
        let token = self.token().await?;
        let answer = self.post(&token, body).await?;
        if !token_refused(&answer) {
            return Ok(answer);
        }
        self.tokens.invalidate(TOKEN_KEY).await;
        let token = self.token().await?;
        let answer = self.post(&token, body).await?;
        if token_refused(&answer) {
            return Err(SendResult::new(
                Verdict::AccountDisabled,
                Some(answer.status),
                format!(
                    "WeCom refused a freshly fetched access token: {}",
                    answer.detail
                ),
            ));
        }
        Ok(answer)
    }

    fn body(&self, touser: &[&str], msgtype: &str, payload: Value) -> Value {
        let mut body = json!({
            "touser": touser.join("|"),
            "msgtype": msgtype,
            "agentid": self.agent_id,
            msgtype: payload,
        });
        if let Some(interval) = self.duplicate_check {
            body["enable_duplicate_check"] = json!(1);
            body["duplicate_check_interval"] = json!(interval.as_secs().max(1));
        }
        body
    }
}

/// A step's failure with the step named, so the attempts log says where it failed.
fn in_step(step: &str, failure: SendResult) -> SendResult {
    SendResult {
        detail: super::truncate(&format!("{step}: {}", failure.detail), super::DETAIL_LIMIT),
        ..failure
    }
}

/// The codes that mean "this token is no longer good": invalid 40014, expired 42001.
fn token_refused(answer: &Answer) -> bool {
    matches!(answer.errcode(), Some(40014 | 42001))
}

/// A failed `gettoken` [doc global error codes; obs].
fn token_failure(answer: &Answer, now_ms: i64) -> SendResult {
    let verdict = match answer.errcode() {
        Some(-1) | None => Verdict::Retryable { after: None },
        Some(45009) => Verdict::RateLimited {
            wait: until_next_minute(now_ms),
        },
        Some(45033) => Verdict::RateLimited {
            wait: CONCURRENCY_WAIT,
        },
        // Wrong secret (40001, 40091), wrong corp id (40013), missing either (41002,
        // 41004), caller IP not trusted (60020), app disabled (50003), not permitted
        // (48002): no refresh fixes these; an administrator must.
        Some(40001 | 40013 | 40091 | 41002 | 41004 | 60020 | 50003 | 48002) => {
            Verdict::AccountDisabled
        }
        // Codes not documented for gettoken: worth another try later rather than taking
        // the account down.
        Some(_) => Verdict::Retryable { after: None },
    };
    answer.result(verdict)
}

/// A `message/send` answer for the whole call [obs, doc copies of path/90236 and the
/// global error-code page].
fn classify(answer: &Answer, now_ms: i64) -> CallOutcome {
    let Some(code) = answer.errcode() else {
        return CallOutcome::All(unexpected(answer));
    };
    let verdict = match code {
        0 => {
            return CallOutcome::Accepted {
                msgid: answer.text("msgid"),
                refused: refused_users(answer),
                answer: answer.clone(),
            };
        }
        -1 => Verdict::Retryable { after: None },
        45009 => Verdict::RateLimited {
            wait: until_next_minute(now_ms),
        },
        45033 => Verdict::RateLimited {
            wait: CONCURRENCY_WAIT,
        },
        // Every recipient is invalid or unlicensed (81013; 82001 in older copies).
        81013 | 82001 => Verdict::RecipientInvalid,
        // The app or its secret is unusable: bad agentid (40056), missing agentid (41011),
        // not permitted (48002), app disabled (50003), IP not trusted (60020), no right
        // on the app (301002), and a token refused again right after a refresh.
        40001 | 40014 | 42001 | 40056 | 41011 | 48002 | 50003 | 60020 | 301002 => {
            Verdict::AccountDisabled
        }
        // Anything else refuses the request as written (too long 45002, bad field
        // 40058, empty content 44004, missing title/description 41016/41033, too many
        // articles 45008, bad URL 40094 …).
        _ => Verdict::ContentBlocked,
    };
    CallOutcome::All(answer.result(verdict))
}

/// The members WeCom did not reach although the call succeeded, lower-cased (WeCom
/// returns them lower-cased [obs]), with the list that named them.
fn refused_users(answer: &Answer) -> HashMap<String, &'static str> {
    let mut refused = HashMap::new();
    for list in ["invaliduser", "unlicenseduser"] {
        let named = answer
            .json
            .as_ref()
            .and_then(|json| json.get(list))
            .and_then(Value::as_str)
            .unwrap_or_default();
        for user in named.split('|').filter(|user| !user.is_empty()) {
            refused.insert(user.to_lowercase(), list);
        }
    }
    refused
}

impl CallOutcome {
    fn result_for(&self, recipient: &str) -> SendResult {
        match self {
            CallOutcome::All(result) => result.clone(),
            CallOutcome::Accepted {
                answer,
                msgid,
                refused,
            } => match refused.get(&recipient.to_lowercase()) {
                Some(list) => SendResult::new(
                    Verdict::RecipientInvalid,
                    Some(answer.status),
                    format!("WeCom listed `{recipient}` in {list}: {}", answer.detail),
                ),
                None => {
                    let delivered = answer.result(Verdict::Delivered);
                    match msgid {
                        Some(msgid) => delivered.with_ref(msgid.clone()),
                        None => delivered,
                    }
                }
            },
        }
    }
}

/// A WeCom userid [doc]: 1 to 64 bytes of letters, digits and `_-@.`, starting with a
/// letter or digit. Checked before the call because `touser` is `|`-joined: an id holding
/// `|` or `@all` would reach other people.
fn is_userid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_-@.".contains(b))
}

/// The message as a `textcard` (title, description, one link button), when it fits.
fn text_card(message: &Message) -> Option<Value> {
    let (title, description) = title_and_body(message);
    let url = message.url.as_deref().filter(|url| !url.is_empty());
    let (url, button) = match (url, message.buttons.as_slice()) {
        (Some(url), []) => (url, None),
        (None, [button]) => (button.url.as_str(), Some(button.text.as_str())),
        (Some(url), [button]) if button.url == url => (url, Some(button.text.as_str())),
        _ => return None,
    };
    let fits = !title.is_empty()
        && title.len() <= ARTICLE_TITLE_BYTES
        // `description` is required (41033) and cut beyond 512 bytes.
        && !description.is_empty()
        && description.len() <= ARTICLE_DESCRIPTION_BYTES
        && button.is_none_or(|text| text.chars().count() <= BUTTON_TEXT_CHARS);
    if !fits {
        return None;
    }
    let mut card = json!({ "title": title, "description": description, "url": url });
    if let Some(text) = button {
        card["btntxt"] = Value::String(text.to_string());
    }
    Some(card)
}

/// The message type and its payload: a template card or news for cards and links that fit,
/// a textcard when only that fits, else Markdown (or text for plain text).
fn render(message: &Message) -> Result<(&'static str, Value), ContentError> {
    require_text(message)?;
    if message.format == Format::Card
        && let Some(card) = text_notice_card(message)
    {
        return Ok(("template_card", card));
    }
    if message.format == Format::Link
        && let Some(news) = news_card(message)
    {
        return Ok(("news", news));
    }
    if matches!(message.format, Format::Card | Format::Link)
        && let Some(card) = text_card(message)
    {
        return Ok(("textcard", card));
    }
    if message.format == Format::Text {
        let content = plain_text(message);
        fit_bytes("the text", &content, CONTENT_LIMIT)?;
        return Ok(("text", json!({ "content": content })));
    }
    let content = markdown(message);
    fit_bytes("the Markdown text", &content, CONTENT_LIMIT)?;
    Ok(("markdown", json!({ "content": content })))
}

#[async_trait::async_trait]
impl Channel for WecomAppChannel {
    fn kind(&self) -> &'static str {
        "wecom_app"
    }

    fn audience(&self) -> Audience {
        Audience::Person(AddressKind::WecomUser)
    }

    fn max_batch(&self) -> usize {
        MAX_RECIPIENTS
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        render(message).map(|_| ())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        let mut results = self.send_batch(std::slice::from_ref(ctx), message).await;
        results.pop().unwrap_or_else(|| {
            SendResult::new(Verdict::Retryable { after: None }, None, "no result")
        })
    }

    async fn send_batch(&self, batch: &[SendContext<'_>], message: &Message) -> Vec<SendResult> {
        let (msgtype, payload) = match render(message) {
            Ok(rendered) => rendered,
            Err(error) => {
                return batch
                    .iter()
                    .map(|_| SendResult::unsendable(&error))
                    .collect();
            }
        };
        let mut touser: Vec<&str> = Vec::with_capacity(batch.len());
        for ctx in batch {
            if is_userid(ctx.recipient) && !touser.contains(&ctx.recipient) {
                touser.push(ctx.recipient);
            }
        }
        let outcome = if touser.is_empty() {
            None
        } else if touser.len() > MAX_RECIPIENTS {
            Some(CallOutcome::All(SendResult::new(
                Verdict::ContentBlocked,
                None,
                format!(
                    "{} recipients in one call; WeCom takes at most {MAX_RECIPIENTS}",
                    touser.len()
                ),
            )))
        } else {
            let body = self.body(&touser, msgtype, payload);
            let now_ms = self.clock.now_ms();
            Some(match self.call(&body).await {
                Ok(answer) => classify(&answer, now_ms),
                Err(failure) => CallOutcome::All(failure),
            })
        };
        batch
            .iter()
            .map(|ctx| match &outcome {
                Some(outcome) if is_userid(ctx.recipient) => outcome.result_for(ctx.recipient),
                _ => SendResult::new(
                    Verdict::RecipientInvalid,
                    None,
                    format!(
                        "`{}` is not a WeCom userid (1 to 64 letters, digits or `_-@.`, starting \
                         with a letter or digit)",
                        ctx.recipient
                    ),
                ),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::routing::{get, post};
    use proptest::prelude::*;

    use super::*;
    use crate::channels::Button;
    use crate::clock::ManualClock;

    const CORP_ID: &str = "ww1234567890abcdef";
    const SECRET: &str = "app-secret-never-shown";
    const AGENT_ID: i64 = 1_000_002;

    fn answer(body: Value) -> Answer {
        Answer {
            status: 200,
            detail: body.to_string(),
            json: Some(body),
        }
    }

    fn verdict_of(body: Value) -> Verdict {
        match classify(&answer(body), 1_704_067_245_000) {
            CallOutcome::All(result) => result.verdict,
            CallOutcome::Accepted { .. } => Verdict::Delivered,
        }
    }

    #[test]
    fn every_row_of_the_send_classification_table() {
        let code = |errcode: i64| verdict_of(json!({"errcode": errcode, "errmsg": "x"}));
        assert_eq!(code(0), Verdict::Delivered);
        assert_eq!(code(-1), Verdict::Retryable { after: None });
        assert_eq!(
            code(45009),
            Verdict::RateLimited {
                wait: Duration::from_secs(15)
            }
        );
        assert_eq!(
            code(45033),
            Verdict::RateLimited {
                wait: CONCURRENCY_WAIT
            }
        );
        assert_eq!(code(81013), Verdict::RecipientInvalid);
        assert_eq!(code(82001), Verdict::RecipientInvalid);
        for disabled in [
            40001, 40014, 42001, 40056, 41011, 48002, 50003, 60020, 301002,
        ] {
            assert_eq!(code(disabled), Verdict::AccountDisabled, "{disabled}");
        }
        for refused in [45002, 40058, 44004, 41016, 41033, 45008, 40094, 99999] {
            assert_eq!(code(refused), Verdict::ContentBlocked, "{refused}");
        }
        assert_eq!(
            verdict_of(json!({"msgid": "1"})),
            Verdict::Retryable { after: None }
        );
    }

    #[test]
    fn every_row_of_the_token_classification_table() {
        let code = |errcode: i64| {
            token_failure(
                &answer(json!({"errcode": errcode, "errmsg": "x"})),
                1_704_067_245_000,
            )
            .verdict
        };
        assert_eq!(code(-1), Verdict::Retryable { after: None });
        assert_eq!(
            code(45009),
            Verdict::RateLimited {
                wait: Duration::from_secs(15)
            }
        );
        assert_eq!(
            code(45033),
            Verdict::RateLimited {
                wait: CONCURRENCY_WAIT
            }
        );
        for disabled in [40001, 40013, 40091, 41002, 41004, 60020, 50003, 48002] {
            assert_eq!(code(disabled), Verdict::AccountDisabled, "{disabled}");
        }
        assert_eq!(code(40999), Verdict::Retryable { after: None });
    }

    #[test]
    fn partial_success_names_exactly_the_refused_users() {
        let outcome = classify(
            &answer(json!({
                "errcode": 0, "errmsg": "ok",
                "invaliduser": "ghost|wangwu", "invalidparty": "", "invalidtag": "",
                "unlicenseduser": "lisi", "msgid": "msg-7",
            })),
            0,
        );
        let verdicts: Vec<(Verdict, Option<String>)> = ["zhangsan", "Ghost", "lisi", "WangWu2"]
            .iter()
            .map(|user| {
                let result = outcome.result_for(user);
                (result.verdict, result.provider_ref)
            })
            .collect();
        assert_eq!(
            verdicts,
            vec![
                (Verdict::Delivered, Some("msg-7".into())),
                (Verdict::RecipientInvalid, None),
                (Verdict::RecipientInvalid, None),
                (Verdict::Delivered, Some("msg-7".into())),
            ]
        );
        assert!(outcome.result_for("lisi").detail.contains("unlicenseduser"));
    }

    #[test]
    fn userids_that_could_reach_others_are_refused() {
        assert!(is_userid("zhangsan"));
        assert!(is_userid("li.si-01@corp_x"));
        assert!(!is_userid("@all"));
        assert!(!is_userid("a|b"));
        assert!(!is_userid(""));
        assert!(!is_userid("张三"));
        assert!(!is_userid(&"a".repeat(65)));
    }

    fn card(format: Format, text: &str, buttons: Vec<Button>) -> Message {
        Message {
            format,
            title: Some("Invoice".into()),
            text: text.into(),
            url: Some("https://x.example/i".into()),
            buttons,
            ..Message::default()
        }
    }

    #[test]
    fn each_format_gets_its_richest_fitting_message_type() {
        let kind = |message: &Message| render(message).map(|(kind, _)| kind);
        let button = |text: &str| Button {
            text: text.into(),
            url: "https://x.example/i".into(),
        };
        assert_eq!(kind(&Message::text("hi")), Ok("text"));
        assert_eq!(
            kind(&Message {
                format: Format::Markdown,
                ..Message::text("**hi**")
            }),
            Ok("markdown")
        );
        assert_eq!(
            kind(&card(Format::Card, "due", vec![])),
            Ok("template_card")
        );
        assert_eq!(kind(&card(Format::Link, "due", vec![])), Ok("news"));
        // Too long for a template card, one short button: a textcard.
        let long = "字".repeat(150);
        let (msgtype, payload) = render(&card(Format::Card, &long, vec![button("详情")])).unwrap();
        assert_eq!(msgtype, "textcard");
        assert_eq!(
            payload,
            json!({"title": "Invoice", "description": long, "url": "https://x.example/i", "btntxt": "详情"})
        );
        // A button label too long for btntxt: Markdown keeps it whole.
        assert_eq!(
            kind(&card(Format::Card, &long, vec![button("Open the invoice")])),
            Ok("markdown")
        );
        assert!(render(&card(Format::Card, &"字".repeat(700), vec![])).is_err());
    }

    #[test]
    fn limits_are_bytes_and_errors_not_truncation() {
        assert!(render(&Message::text("群".repeat(682))).is_ok());
        assert_eq!(
            render(&Message::text("群".repeat(683)))
                .unwrap_err()
                .to_string(),
            "the text is 2049 bytes; at most 2048 fit"
        );
        assert!(render(&Message::text("")).is_err());
    }

    /// WeCom as far as these calls go: `gettoken` checks the corp id and secret and hands
    /// out a new token each time; `message/send` checks the token, the agent id and the
    /// body shape, and answers like WeCom does for known and unknown members.
    #[derive(Default)]
    struct Wecom {
        tokens_issued: usize,
        valid_token: Option<String>,
        /// Answer this many sends with 42001, as if the token had expired early.
        expire_next: usize,
        sends: Vec<Value>,
        members: HashSet<String>,
    }

    type Shared = Arc<Mutex<Wecom>>;

    async fn gettoken(
        State(state): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
    ) -> axum::Json<Value> {
        if query.get("corpid").map(String::as_str) != Some(CORP_ID) {
            return axum::Json(json!({"errcode": 40013, "errmsg": "invalid corpid"}));
        }
        if query.get("corpsecret").map(String::as_str) != Some(SECRET) {
            return axum::Json(json!({"errcode": 40001, "errmsg": "invalid credential"}));
        }
        let mut wecom = state.lock().unwrap();
        wecom.tokens_issued += 1;
        let token = format!("token-{}", wecom.tokens_issued);
        wecom.valid_token = Some(token.clone());
        axum::Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}))
    }

    async fn message_send(
        State(state): State<Shared>,
        Query(query): Query<HashMap<String, String>>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        let mut wecom = state.lock().unwrap();
        if query.get("access_token") != wecom.valid_token.as_ref() {
            return axum::Json(json!({"errcode": 40014, "errmsg": "invalid access_token"}));
        }
        if wecom.expire_next > 0 {
            wecom.expire_next -= 1;
            return axum::Json(json!({"errcode": 42001, "errmsg": "access_token expired"}));
        }
        if body["agentid"] != json!(AGENT_ID) {
            return axum::Json(json!({"errcode": 40056, "errmsg": "invalid agentid"}));
        }
        let msgtype = body["msgtype"].as_str().unwrap_or_default();
        let well_formed = match msgtype {
            "text" | "markdown" => body[msgtype]["content"].is_string(),
            "textcard" => body["textcard"]["description"].is_string(),
            "news" => body["news"]["articles"].is_array(),
            "template_card" => body["template_card"]["card_type"].is_string(),
            _ => false,
        };
        if !well_formed {
            return axum::Json(json!({"errcode": 40008, "errmsg": "invalid message type"}));
        }
        wecom.sends.push(body.clone());
        let touser = body["touser"].as_str().unwrap_or_default();
        let invalid: Vec<String> = touser
            .split('|')
            .filter(|user| !wecom.members.contains(*user))
            .map(str::to_lowercase)
            .collect();
        if invalid.len() == touser.split('|').count() {
            return axum::Json(
                json!({"errcode": 81013, "errmsg": "user & party & tag all invalid"}),
            );
        }
        axum::Json(json!({
            "errcode": 0, "errmsg": "ok", "invaliduser": invalid.join("|"),
            "invalidparty": "", "invalidtag": "", "unlicenseduser": "",
            "msgid": format!("msg-{}", wecom.sends.len()),
        }))
    }

    async fn mock_wecom(members: &[&str]) -> (String, Shared) {
        let state: Shared = Arc::new(Mutex::new(Wecom {
            members: members.iter().map(|m| m.to_string()).collect(),
            ..Wecom::default()
        }));
        let app = Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/message/send", post(message_send))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), state)
    }

    fn app(base_url: &str, secret: &str) -> WecomAppChannel {
        let clock: SharedClock = Arc::new(ManualClock::new(1_704_067_245_000));
        WecomAppChannel::new(
            base_url,
            CORP_ID,
            AGENT_ID,
            SecretString::from(secret),
            Some(Duration::from_secs(1800)),
            Duration::from_secs(5),
            clock,
        )
    }

    fn contexts<'a>(recipients: &[&'a str], keys: &'a [String]) -> Vec<SendContext<'a>> {
        recipients
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(n, (recipient, key))| SendContext {
                job_id: n as i64,
                idempotency_key: key,
                attempt: 1,
                recipient,
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|n| format!("key-{n}")).collect()
    }

    #[tokio::test]
    async fn one_call_reaches_the_batch_and_maps_invalid_users_back() {
        let (base_url, wecom) = mock_wecom(&["zhangsan", "lisi"]).await;
        let app = app(&base_url, SECRET);
        let keys = keys(4);
        let batch = contexts(&["zhangsan", "Ghost", "lisi", "a|b"], &keys);
        let results = app.send_batch(&batch, &Message::text("hello")).await;
        let verdicts: Vec<&Verdict> = results.iter().map(|r| &r.verdict).collect();
        assert_eq!(
            verdicts,
            [
                &Verdict::Delivered,
                &Verdict::RecipientInvalid,
                &Verdict::Delivered,
                &Verdict::RecipientInvalid
            ]
        );
        assert_eq!(results[0].provider_ref.as_deref(), Some("msg-1"));
        assert_eq!(results[3].status, None, "never sent: {}", results[3].detail);
        let wecom = wecom.lock().unwrap();
        assert_eq!(wecom.tokens_issued, 1);
        assert_eq!(
            wecom.sends,
            vec![json!({
                "touser": "zhangsan|Ghost|lisi", "msgtype": "text", "agentid": AGENT_ID,
                "text": {"content": "hello"},
                "enable_duplicate_check": 1, "duplicate_check_interval": 1800,
            })]
        );
    }

    #[tokio::test]
    async fn the_token_is_cached_and_refreshed_once_when_refused() {
        let (base_url, wecom) = mock_wecom(&["zhangsan"]).await;
        let app = app(&base_url, SECRET);
        let keys = keys(1);
        let batch = contexts(&["zhangsan"], &keys);
        let message = Message::text("hi");
        assert_eq!(
            app.send(&batch[0], &message).await.verdict,
            Verdict::Delivered
        );
        assert_eq!(
            app.send(&batch[0], &message).await.verdict,
            Verdict::Delivered
        );
        assert_eq!(wecom.lock().unwrap().tokens_issued, 1);

        wecom.lock().unwrap().expire_next = 1;
        let refreshed = app.send(&batch[0], &message).await;
        assert_eq!(refreshed.verdict, Verdict::Delivered);
        assert_eq!(wecom.lock().unwrap().tokens_issued, 2);

        // A token refused again right after a refresh: no refresh loop, the account is off.
        wecom.lock().unwrap().expire_next = 2;
        let refused = app.send(&batch[0], &message).await;
        assert_eq!(refused.verdict, Verdict::AccountDisabled);
        assert!(
            refused.detail.contains("freshly fetched"),
            "{}",
            refused.detail
        );
        assert_eq!(wecom.lock().unwrap().tokens_issued, 3);
    }

    #[tokio::test]
    async fn a_resend_is_the_identical_request_so_wecom_can_drop_it() {
        let (base_url, wecom) = mock_wecom(&["zhangsan", "lisi"]).await;
        let app = app(&base_url, SECRET);
        let keys = keys(2);
        let batch = contexts(&["zhangsan", "lisi"], &keys);
        let card = card(Format::Card, "due", vec![]);
        app.send_batch(&batch, &card).await;
        app.send_batch(&batch, &card).await;
        let wecom = wecom.lock().unwrap();
        assert_eq!(wecom.sends.len(), 2);
        assert_eq!(wecom.sends[0], wecom.sends[1]);
        assert_eq!(wecom.sends[0]["msgtype"], "template_card");
    }

    #[tokio::test]
    async fn all_invalid_recipients_and_a_wrong_secret_are_classified() {
        let (base_url, _) = mock_wecom(&[]).await;
        let keys = keys(2);
        let batch = contexts(&["ghost", "nobody"], &keys);
        let results = app(&base_url, SECRET)
            .send_batch(&batch, &Message::text("hi"))
            .await;
        assert!(
            results
                .iter()
                .all(|r| r.verdict == Verdict::RecipientInvalid)
        );

        let wrong = app(&base_url, "wrong-secret")
            .send(&batch[0], &Message::text("hi"))
            .await;
        assert_eq!(wrong.verdict, Verdict::AccountDisabled);
        assert!(wrong.detail.starts_with("gettoken: "), "{}", wrong.detail);
        assert!(!wrong.detail.contains("wrong-secret"));
        assert!(!format!("{:?}", app(&base_url, SECRET)).contains(SECRET));
    }

    #[tokio::test]
    async fn content_that_cannot_fit_is_refused_before_any_call() {
        let (base_url, wecom) = mock_wecom(&["zhangsan"]).await;
        let keys = keys(1);
        let batch = contexts(&["zhangsan"], &keys);
        let result = app(&base_url, SECRET)
            .send(&batch[0], &Message::text("x".repeat(2049)))
            .await;
        assert_eq!(result.verdict, Verdict::ContentBlocked);
        let wecom = wecom.lock().unwrap();
        assert_eq!((wecom.tokens_issued, wecom.sends.len()), (0, 0));
    }

    proptest! {
        #[test]
        fn rendering_and_userid_checks_never_panic(text in "\\PC{0,300}", title in "\\PC{0,40}", format in 0..4u8) {
            let format = [Format::Text, Format::Markdown, Format::Link, Format::Card][usize::from(format)];
            let message = Message {
                format,
                text: text.clone(),
                title: Some(title),
                url: Some("https://x.example".into()),
                ..Message::default()
            };
            let _ = render(&message);
            let _ = is_userid(&text);
        }
    }
}
