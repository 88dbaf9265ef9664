//! WeCom group robot (群机器人): `POST {base}/cgi-bin/webhook/send?key=KEY`. The key in the
//! URL is the only credential, so the URL is kept as a secret and never appears in a detail
//! or a log. Each job is one message into the robot's group; the job's recipient, when
//! present, is a WeCom userid to @mention.

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::http::client;
use super::render::{ContentError, fit_bytes, markdown, plain_text, require_text};
use super::wecom::{Answer, exchange, news_card, text_notice_card, unexpected, until_next_minute};
use super::{AddressKind, Audience, Channel, Format, Message, SendContext, SendResult, Verdict};
use crate::clock::SharedClock;

/// [doc] `text.content` "最长不超过2048个字节", `markdown.content` "最长不超过4096个字节".
const TEXT_LIMIT: usize = 2048;
const MARKDOWN_LIMIT: usize = 4096;

/// 45033 (too many concurrent calls) clears as soon as a call in flight ends.
const CONCURRENCY_WAIT: Duration = Duration::from_secs(2);

pub struct WecomRobotChannel {
    base_url: String,
    /// The full webhook URL, key included.
    send_url: SecretString,
    client: reqwest::Client,
    clock: SharedClock,
}

impl std::fmt::Debug for WecomRobotChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WecomRobotChannel")
            .field("base_url", &self.base_url)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl WecomRobotChannel {
    pub fn new(
        base_url: &str,
        key: &SecretString,
        timeout: Duration,
        clock: SharedClock,
    ) -> Result<Self, String> {
        let key = key.expose_secret().trim();
        if key.is_empty() {
            return Err("the robot key is empty".to_string());
        }
        let endpoint = format!("{}/cgi-bin/webhook/send", base_url.trim_end_matches('/'));
        let url = Url::parse_with_params(&endpoint, [("key", key)])
            .map_err(|error| format!("`base_url` {base_url} is not usable: {error}"))?;
        Ok(Self {
            base_url: base_url.to_string(),
            send_url: SecretString::from(url.to_string()),
            client: client(timeout),
            clock,
        })
    }
}

/// Who a message @mentions: WeCom userids, phone numbers, and everyone.
#[derive(Debug, Default, PartialEq, Eq)]
struct Mentions {
    users: Vec<String>,
    mobiles: Vec<String>,
    all: bool,
}

impl Mentions {
    /// The message's mentions plus the job's recipient. A mention that looks like a phone
    /// number (11 digits starting with 1, or `+` and digits) goes to
    /// `mentioned_mobile_list`; WeCom userids of that shape would be misread, which the
    /// rules README says.
    fn of(message: &Message, recipient: &str) -> Self {
        let mut mentions = Self {
            all: message.mention_all,
            ..Self::default()
        };
        let named = message.mentions.iter().map(String::as_str);
        for name in named.chain(std::iter::once(recipient)) {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == "@all" {
                mentions.all = true;
                continue;
            }
            let list = if is_mobile(name) {
                &mut mentions.mobiles
            } else {
                &mut mentions.users
            };
            if !list.iter().any(|known| known == name) {
                list.push(name.to_string());
            }
        }
        mentions
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.mobiles.is_empty() && !self.all
    }

    /// Markdown messages can only @mention by userid (`<@userid>` inline); phone numbers
    /// and @all need the text form's lists.
    fn needs_text(&self) -> bool {
        self.all || !self.mobiles.is_empty()
    }
}

fn is_mobile(name: &str) -> bool {
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match name.strip_prefix('+') {
        Some(rest) => digits(rest) && (6..=15).contains(&rest.len()),
        None => name.len() == 11 && name.starts_with('1') && digits(name),
    }
}

/// The request body: the richest form that holds the whole message and its mentions. A
/// card or link becomes a `template_card` (text_notice) or `news` card when it fits and
/// mentions nobody (cards cannot @mention); otherwise Markdown (userid mentions inline),
/// and plain text with the mention lists when it must @ a phone number or everyone.
fn render(message: &Message, recipient: &str) -> Result<Value, ContentError> {
    require_text(message)?;
    let mentions = Mentions::of(message, recipient);
    if mentions.is_empty() {
        if message.format == Format::Card
            && let Some(card) = text_notice_card(message)
        {
            return Ok(json!({ "msgtype": "template_card", "template_card": card }));
        }
        if matches!(message.format, Format::Card | Format::Link)
            && let Some(news) = news_card(message)
        {
            return Ok(json!({ "msgtype": "news", "news": news }));
        }
    }
    if message.format != Format::Text && !mentions.needs_text() {
        let mut content = markdown(message);
        for user in &mentions.users {
            content.push_str(&format!("\n<@{user}>"));
        }
        fit_bytes("the Markdown text", &content, MARKDOWN_LIMIT)?;
        return Ok(json!({ "msgtype": "markdown", "markdown": { "content": content } }));
    }
    let content = plain_text(message);
    fit_bytes("the text", &content, TEXT_LIMIT)?;
    let mut text = json!({ "content": content });
    let mut users: Vec<&str> = mentions.users.iter().map(String::as_str).collect();
    if mentions.all {
        users.push("@all");
    }
    if !users.is_empty() {
        text["mentioned_list"] = json!(users);
    }
    if !mentions.mobiles.is_empty() {
        text["mentioned_mobile_list"] = json!(mentions.mobiles);
    }
    Ok(json!({ "msgtype": "text", "text": text }))
}

/// Every answer of the robot webhook, by `errcode` [doc global error codes; obs].
fn classify(answer: &Answer, now_ms: i64) -> SendResult {
    let Some(code) = answer.errcode() else {
        return unexpected(answer);
    };
    let verdict = match code {
        0 => Verdict::Delivered,
        // System busy: the only code WeCom says to retry blindly.
        -1 => Verdict::Retryable { after: None },
        // 20 messages a minute per robot.
        45009 => Verdict::RateLimited {
            wait: until_next_minute(now_ms),
        },
        45033 => Verdict::RateLimited {
            wait: CONCURRENCY_WAIT,
        },
        // Invalid webhook URL or key: the robot was removed from its group or its key
        // never existed. 93004 (robot disabled) and 93008 (robot not in the group) are
        // from the global error-code page as mirrored by SDKs [unverified].
        93000 | 93004 | 93008 => Verdict::AccountDisabled,
        // Not permitted, caller IP not trusted: an administrator must act.
        48002 | 60020 => Verdict::AccountDisabled,
        // Any other code refuses the request as written (bad msgtype 40008, too long
        // 45002, empty content 44004, too many articles 45008, bad parameter 40058 …):
        // the same body would be refused again.
        _ => Verdict::ContentBlocked,
    };
    answer.result(verdict)
}

#[async_trait::async_trait]
impl Channel for WecomRobotChannel {
    fn kind(&self) -> &'static str {
        "wecom_robot"
    }

    fn audience(&self) -> Audience {
        Audience::Group(AddressKind::WecomUser)
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        render(message, "").map(|_| ())
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        let body = match render(message, ctx.recipient) {
            Ok(body) => body,
            Err(error) => return SendResult::unsendable(&error),
        };
        let now_ms = self.clock.now_ms();
        let request = self.client.post(self.send_url.expose_secret()).json(&body);
        match exchange(request, now_ms).await {
            Ok(answer) => classify(&answer, now_ms),
            Err(failure) => failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Query, State};
    use proptest::prelude::*;

    use super::*;
    use crate::channels::Button;
    use crate::clock::ManualClock;

    const KEY: &str = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa";

    fn answer(body: Value) -> Answer {
        Answer {
            status: 200,
            detail: body.to_string(),
            json: Some(body),
        }
    }

    fn verdict(body: Value) -> Verdict {
        // 2024-01-01T00:00:45Z: 15 s before the next minute.
        classify(&answer(body), 1_704_067_245_000).verdict
    }

    #[test]
    fn every_row_of_the_classification_table() {
        let code = |errcode: i64| verdict(json!({"errcode": errcode, "errmsg": "x"}));
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
        for disabled in [93000, 93004, 93008, 48002, 60020] {
            assert_eq!(code(disabled), Verdict::AccountDisabled, "{disabled}");
        }
        for refused in [40008, 44004, 45002, 45008, 40058, 12345] {
            assert_eq!(code(refused), Verdict::ContentBlocked, "{refused}");
        }
        // A 200 without an errcode is not a success.
        assert_eq!(
            verdict(json!({"ok": true})),
            Verdict::Retryable { after: None }
        );
        let html = Answer {
            status: 200,
            json: None,
            detail: "<html>".into(),
        };
        assert_eq!(
            classify(&html, 0).verdict,
            Verdict::Retryable { after: None }
        );
    }

    fn message(format: Format, text: &str) -> Message {
        Message {
            format,
            text: text.into(),
            ..Message::default()
        }
    }

    #[test]
    fn text_mentions_go_to_the_lists_with_phone_numbers_apart() {
        let mut text = message(Format::Text, "deploy done");
        text.mentions = vec!["wangqing".into(), "13800001111".into(), "wangqing".into()];
        assert_eq!(
            render(&text, "lisi").unwrap(),
            json!({"msgtype": "text", "text": {
                "content": "deploy done",
                "mentioned_list": ["wangqing", "lisi"],
                "mentioned_mobile_list": ["13800001111"],
            }})
        );
        text.mentions.clear();
        text.mention_all = true;
        assert_eq!(
            render(&text, "").unwrap()["text"]["mentioned_list"],
            json!(["@all"])
        );
        assert_eq!(
            render(&message(Format::Text, "hi"), "").unwrap(),
            json!({"msgtype": "text", "text": {"content": "hi"}})
        );
    }

    #[test]
    fn markdown_mentions_userids_inline_and_falls_back_to_text_for_all() {
        let mut md = message(Format::Markdown, "**disk** full");
        assert_eq!(
            render(&md, "zhangsan").unwrap(),
            json!({"msgtype": "markdown", "markdown": {"content": "**disk** full\n<@zhangsan>"}})
        );
        md.mention_all = true;
        assert_eq!(
            render(&md, "").unwrap(),
            json!({"msgtype": "text", "text": {"content": "disk full", "mentioned_list": ["@all"]}})
        );
    }

    #[test]
    fn cards_and_links_are_cards_unless_someone_is_mentioned() {
        let card = Message {
            format: Format::Card,
            title: Some("Flash sale".into()),
            text: "Starts at 8pm".into(),
            url: Some("https://x.example/s".into()),
            buttons: vec![Button {
                text: "Open".into(),
                url: "https://x.example/o".into(),
            }],
            ..Message::default()
        };
        let body = render(&card, "").unwrap();
        assert_eq!(body["msgtype"], "template_card");
        assert_eq!(body["template_card"]["card_type"], "text_notice");

        let mentioned = render(&card, "zhangsan").unwrap();
        assert_eq!(mentioned["msgtype"], "markdown");
        let content = mentioned["markdown"]["content"].as_str().unwrap();
        assert!(content.starts_with("**Flash sale**"), "{content}");
        assert!(content.ends_with("<@zhangsan>"), "{content}");

        let link = Message {
            format: Format::Link,
            title: Some("Report".into()),
            text: "Weekly numbers".into(),
            url: Some("https://x.example/r".into()),
            ..Message::default()
        };
        assert_eq!(
            render(&link, "").unwrap(),
            json!({"msgtype": "news", "news": {"articles": [{
                "title": "Report", "description": "Weekly numbers", "url": "https://x.example/r"
            }]}})
        );
        // A card too long for text_notice (450 bytes of text) is sent as news, whole.
        let long_card = Message {
            text: "字".repeat(150),
            buttons: vec![],
            ..card.clone()
        };
        assert_eq!(render(&long_card, "").unwrap()["msgtype"], "news");
        // A link without a URL has no card form.
        let no_url = Message { url: None, ..link };
        assert_eq!(render(&no_url, "").unwrap()["msgtype"], "markdown");
    }

    #[test]
    fn limits_are_checked_in_bytes_and_never_cut() {
        let robot = robot("http://127.0.0.1:9");
        assert!(
            robot
                .check(&message(Format::Text, &"群".repeat(682)))
                .is_ok()
        );
        let error = robot
            .check(&message(Format::Text, &"群".repeat(683)))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the text is 2049 bytes; at most 2048 fit"
        );
        assert!(
            robot
                .check(&message(Format::Markdown, &"群".repeat(1365)))
                .is_ok()
        );
        assert!(
            robot
                .check(&message(Format::Markdown, &"群".repeat(1366)))
                .is_err()
        );
        assert!(robot.check(&message(Format::Text, " ")).is_err());
    }

    #[test]
    fn phone_numbers_are_told_from_userids() {
        assert!(is_mobile("13800001111"));
        assert!(is_mobile("+8613800001111"));
        assert!(!is_mobile("1380000111"));
        assert!(!is_mobile("zhangsan"));
        assert!(!is_mobile("+"));
        assert!(!is_mobile("23800001111"));
    }

    fn robot(base_url: &str) -> WecomRobotChannel {
        let clock: SharedClock = Arc::new(ManualClock::new(1_704_067_245_000));
        WecomRobotChannel::new(
            base_url,
            &SecretString::from(KEY),
            Duration::from_secs(5),
            clock,
        )
        .unwrap()
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let shown = format!("{:?}", robot("https://qyapi.weixin.qq.com"));
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("redacted"));
    }

    type Seen = Arc<Mutex<Vec<Value>>>;

    /// A robot webhook as WeCom runs it: the key must be the robot's, the body must be one
    /// of the documented shapes, and errors come back as HTTP 200 with an errcode.
    async fn mock_robot(answers: Vec<Value>) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let answers = Arc::new(Mutex::new(answers));
        let app = Router::new()
            .route(
                "/cgi-bin/webhook/send",
                axum::routing::post(
                    |State((seen, answers)): State<(Seen, Arc<Mutex<Vec<Value>>>)>,
                     Query(query): Query<std::collections::HashMap<String, String>>,
                     body: axum::body::Bytes| async move {
                        if query.get("key").map(String::as_str) != Some(KEY) {
                            return axum::Json(
                                json!({"errcode": 93000, "errmsg": "invalid webhook url"}),
                            );
                        }
                        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                            return axum::Json(json!({"errcode": 40035, "errmsg": "invalid json"}));
                        };
                        let msgtype = body["msgtype"].as_str().unwrap_or_default().to_string();
                        let well_formed = match msgtype.as_str() {
                            "text" | "markdown" => body[&msgtype]["content"].is_string(),
                            "news" => body["news"]["articles"].is_array(),
                            "template_card" => body["template_card"]["card_type"] == "text_notice",
                            _ => false,
                        };
                        if !well_formed {
                            return axum::Json(
                                json!({"errcode": 40008, "errmsg": "invalid message type"}),
                            );
                        }
                        seen.lock().unwrap().push(body);
                        let mut answers = answers.lock().unwrap();
                        let next = if answers.is_empty() {
                            json!({"errcode": 0, "errmsg": "ok"})
                        } else {
                            answers.remove(0)
                        };
                        axum::Json(next)
                    },
                ),
            )
            .with_state((seen.clone(), answers));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), seen)
    }

    fn ctx(recipient: &str) -> SendContext<'_> {
        SendContext {
            job_id: 1,
            idempotency_key: "job-1",
            attempt: 1,
            recipient,
        }
    }

    #[tokio::test]
    async fn sends_to_the_robot_and_reads_its_answers() {
        let (base_url, seen) = mock_robot(vec![
            json!({"errcode": 0, "errmsg": "ok"}),
            json!({"errcode": 45009, "errmsg": "api freq out of limit"}),
        ])
        .await;
        let robot = robot(&base_url);
        let delivered = robot
            .send(&ctx("zhangsan"), &message(Format::Text, "hello"))
            .await;
        assert_eq!(delivered.verdict, Verdict::Delivered);
        assert_eq!(delivered.status, Some(200));
        let limited = robot.send(&ctx(""), &message(Format::Text, "again")).await;
        assert_eq!(
            limited.verdict,
            Verdict::RateLimited {
                wait: Duration::from_secs(15)
            }
        );
        let bodies = seen.lock().unwrap().clone();
        assert_eq!(bodies[0]["text"]["mentioned_list"], json!(["zhangsan"]));
        assert!(bodies[1]["text"].get("mentioned_list").is_none());
    }

    #[tokio::test]
    async fn a_wrong_key_disables_the_account_and_never_shows_in_the_detail() {
        let (base_url, _) = mock_robot(vec![]).await;
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let wrong = WecomRobotChannel::new(
            &base_url,
            &SecretString::from("wrong-key-0000"),
            Duration::from_secs(5),
            clock,
        )
        .unwrap();
        let result = wrong.send(&ctx(""), &message(Format::Text, "hi")).await;
        assert_eq!(result.verdict, Verdict::AccountDisabled);
        assert!(!result.detail.contains("wrong-key-0000"));
    }

    #[tokio::test]
    async fn an_unreachable_robot_is_retryable_without_leaking_the_key() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let result = robot(&closed)
            .send(&ctx(""), &message(Format::Text, "hi"))
            .await;
        assert_eq!(result.verdict, Verdict::Retryable { after: None });
        assert!(!result.detail.contains(KEY), "{}", result.detail);
    }

    #[tokio::test]
    async fn content_that_cannot_fit_is_refused_without_a_call() {
        let (base_url, seen) = mock_robot(vec![]).await;
        let result = robot(&base_url)
            .send(&ctx(""), &message(Format::Text, &"x".repeat(2049)))
            .await;
        assert_eq!(result.verdict, Verdict::ContentBlocked);
        assert_eq!(result.status, None);
        assert!(seen.lock().unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn rendering_never_panics(text in "\\PC{0,300}", title in "\\PC{0,40}", mention in "\\PC{0,20}", format in 0..4u8) {
            let format = [Format::Text, Format::Markdown, Format::Link, Format::Card][usize::from(format)];
            let message = Message {
                format,
                text,
                title: Some(title),
                url: Some("https://x.example".into()),
                mentions: vec![mention.clone()],
                ..Message::default()
            };
            if let Ok(body) = render(&message, &mention) {
                let msgtype = body["msgtype"].as_str().unwrap_or_default();
                prop_assert!(["text", "markdown", "news", "template_card"].contains(&msgtype));
            }
        }
    }
}
