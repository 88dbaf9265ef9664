//! The custom robot against the published vectors, its rendering and keyword rules, its
//! classification table, and a local stand-in for `oapi.dingtalk.com/robot/send` that
//! checks each request the way DingTalk does (token, timestamp window, recomputed
//! signature, keyword, body shape, 20 a minute).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;
use crate::channels::Button;
use crate::clock::ManualClock;

const NOW: i64 = 1_700_000_000_123;
const TOKEN: &str = "ACCESS_TOKEN";

fn secret() -> String {
    format!("SEC{}", "0".repeat(63))
}

fn channel(
    base_url: Option<&str>,
    secret: Option<&str>,
    keywords: &[&str],
) -> DingtalkRobotChannel {
    DingtalkRobotChannel::new(
        base_url,
        SecretString::from(TOKEN),
        secret.map(SecretString::from),
        keywords.iter().map(|k| k.to_string()).collect(),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(NOW)),
    )
}

fn ctx(recipient: &str) -> SendContext<'_> {
    SendContext {
        job_id: 1,
        idempotency_key: "key-1",
        attempt: 1,
        recipient,
    }
}

// ---- signing and URL ----------------------------------------------------------------------

#[test]
fn the_url_carries_token_timestamp_and_urlencoded_sign() {
    // [vec dingtalk-01]: the whole URL, as DingtalkChatbot builds it.
    let robot = channel(None, Some(&secret()), &[]);
    assert_eq!(
        robot.url(NOW).map(|url| url.to_string()).as_deref(),
        Ok(
            "https://oapi.dingtalk.com/robot/send?access_token=ACCESS_TOKEN&timestamp=1700000000123&sign=DAvf3Gum1MDI0o8Hq8O8evdgwLHlrdHtWnU0sEP7V1M%3D"
        )
    );
    // [vec dingtalk-03]: `+` and `=` are percent-encoded, never left as a form space.
    let doc_sample = channel(Some("http://127.0.0.1:9"), Some("this is secret"), &[]);
    let url = doc_sample.url(1_577_262_236_757).map(|url| url.to_string());
    assert_eq!(
        url.as_deref()
            .ok()
            .and_then(|url| url.split("&sign=").nth(1)),
        Some("hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D")
    );
}

#[test]
fn an_unsigned_robot_sends_only_its_token() {
    let robot = channel(Some("http://proxy.example/ding/"), None, &["通知"]);
    assert_eq!(
        robot.url(NOW).map(|url| url.to_string()).as_deref(),
        Ok("http://proxy.example/ding/robot/send?access_token=ACCESS_TOKEN")
    );
}

#[test]
fn debug_output_hides_the_token_and_secret() {
    let shown = format!("{:?}", channel(None, Some(&secret()), &[]));
    assert!(
        !shown.contains(TOKEN) && !shown.contains("SEC000"),
        "{shown}"
    );
}

// ---- rendering ----------------------------------------------------------------------------

fn body(message: &Message, recipient: &str) -> Value {
    channel(None, None, &[])
        .render(message, recipient)
        .unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn text_mentions_go_to_at_lists_and_into_the_text() {
    let message = Message {
        mentions: vec!["+86 13800000000".into(), "manager4220".into()],
        ..Message::text("请查收")
    };
    assert_eq!(
        body(&message, "user123"),
        json!({
            "msgtype": "text",
            "text": {"content": "请查收 @13800000000 @manager4220 @user123"},
            "at": {"atMobiles": ["13800000000"], "atUserIds": ["manager4220", "user123"], "isAtAll": false},
        })
    );
    // A mention already written in the text is not repeated.
    let written = Message {
        mentions: vec!["user123".into()],
        mention_all: true,
        ..Message::text("@user123 看一下")
    };
    assert_eq!(
        body(&written, "")["text"]["content"],
        json!("@user123 看一下")
    );
    assert_eq!(body(&written, "")["at"]["isAtAll"], json!(true));
}

#[test]
fn markdown_gets_a_title_from_its_first_line() {
    let message = Message {
        format: Format::Markdown,
        ..Message::text("#### 杭州天气\n> 9度")
    };
    let rendered = body(&message, "");
    assert_eq!(rendered["msgtype"], "markdown");
    assert_eq!(rendered["markdown"]["title"], "杭州天气");
    assert_eq!(rendered["markdown"]["text"], "#### 杭州天气\n> 9度");
}

#[test]
fn links_and_cards_use_the_robot_shapes() {
    let link = Message {
        format: Format::Link,
        title: Some("双十一".into()),
        url: Some("https://x.example/s".into()),
        ..Message::text("今晚八点开抢")
    };
    assert_eq!(
        body(&link, ""),
        json!({"msgtype": "link", "link": {"title": "双十一", "text": "今晚八点开抢", "picUrl": "", "messageUrl": "https://x.example/s"}})
    );
    let card = Message {
        format: Format::Card,
        buttons: vec![
            Button {
                text: "同意".into(),
                url: "https://x.example/y".into(),
            },
            Button {
                text: "拒绝".into(),
                url: "https://x.example/n".into(),
            },
        ],
        ..link.clone()
    };
    assert_eq!(
        body(&card, "")["actionCard"],
        json!({
            "title": "双十一",
            "text": "今晚八点开抢\n\n[https://x.example/s](https://x.example/s)",
            "btnOrientation": "0",
            "btns": [{"title": "同意", "actionURL": "https://x.example/y"}, {"title": "拒绝", "actionURL": "https://x.example/n"}],
        })
    );
    let single = Message {
        format: Format::Card,
        ..link.clone()
    };
    assert_eq!(
        body(&single, "")["actionCard"]["singleURL"],
        "https://x.example/s"
    );
    assert_eq!(body(&single, "")["actionCard"]["singleTitle"], READ_MORE);
}

#[test]
fn formats_that_cannot_mention_or_link_become_markdown() {
    let card = Message {
        format: Format::Card,
        title: Some("审批".into()),
        buttons: vec![Button {
            text: "去处理".into(),
            url: "https://x.example/a".into(),
        }],
        ..Message::text("有一条待办")
    };
    // Cards cannot @ anyone: the recipient's mention wins, as Markdown with the button link.
    let mentioned = body(&card, "user123");
    assert_eq!(mentioned["msgtype"], "markdown");
    assert_eq!(
        mentioned["markdown"]["text"],
        "**审批**\n\n有一条待办\n\n[去处理](https://x.example/a) @user123"
    );
    assert_eq!(mentioned["at"]["atUserIds"], json!(["user123"]));
    let nothing_to_click = Message {
        format: Format::Link,
        ..Message::text("no url")
    };
    assert_eq!(body(&nothing_to_click, "")["msgtype"], "markdown");
}

#[test]
fn keywords_are_required_before_sending() {
    let robot = channel(None, None, &["通知", "告警"]);
    assert!(robot.check(&Message::text("系统告警: 磁盘满")).is_ok());
    let error = robot
        .check(&Message::text("磁盘满"))
        .err()
        .map(|e| e.to_string());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("通知, 告警") && e.contains("310000")),
        "{error:?}"
    );
    // The title counts: DingTalk shows it as part of the message.
    let titled = Message {
        format: Format::Markdown,
        title: Some("通知".into()),
        ..Message::text("磁盘满")
    };
    assert!(robot.check(&titled).is_ok());
}

#[test]
fn oversized_and_empty_messages_are_refused_before_sending() {
    let robot = channel(None, None, &[]);
    assert!(robot.check(&Message::text("群".repeat(6_600))).is_ok());
    let error = robot.check(&Message::text("群".repeat(6_700))).err();
    assert!(error.is_some_and(|e| e.to_string().contains("at most 20000 fit")));
    assert!(robot.check(&Message::text(" ")).is_err());
}

// ---- classification ----------------------------------------------------------------------

fn verdict(status: u16, body: Value) -> Verdict {
    classify(status, None, body.to_string().as_bytes(), NOW).verdict
}

fn answer(code: i64, message: &str) -> Value {
    json!({"errcode": code, "errmsg": message})
}

#[test]
fn success_is_errcode_zero_only() {
    assert_eq!(verdict(200, answer(0, "ok")), Verdict::Delivered);
    // A 200 that is not DingTalk's JSON proves nothing.
    assert_eq!(
        classify(200, None, b"<html>blocked</html>", NOW).verdict,
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        verdict(200, json!({"ok": true})),
        Verdict::Retryable { after: None }
    );
}

#[test]
fn throttling_waits_ten_minutes() {
    let throttled = Verdict::RateLimited {
        wait: Duration::from_secs(600),
    };
    assert_eq!(
        verdict(
            200,
            answer(130101, "send too fast, exceed 20 times per minute")
        ),
        throttled
    );
    assert_eq!(verdict(200, answer(410100, "send too fast")), throttled);
    assert_eq!(
        verdict(200, answer(90030, "webhook over limit")),
        Verdict::RateLimited {
            wait: until_next_day(NOW)
        }
    );
    assert_eq!(
        verdict(200, answer(90018, "qps")),
        Verdict::RateLimited {
            wait: SHORT_THROTTLE
        }
    );
    assert_eq!(
        classify(429, Some(Duration::from_secs(7)), b"", NOW).verdict,
        Verdict::RateLimited {
            wait: Duration::from_secs(7)
        }
    );
}

#[test]
fn a_gone_or_stopped_robot_is_a_disabled_account() {
    for (code, message) in [
        (300005, "token is not exist"),
        (400101, "access_token不存在"),
        (400102, "机器人已停用"),
        (40035, "缺少参数 access_token"),
        (999999, "robot stopped"),
    ] {
        assert_eq!(
            verdict(200, answer(code, message)),
            Verdict::AccountDisabled,
            "{code}"
        );
    }
    assert_eq!(
        classify(404, None, b"not found", NOW).verdict,
        Verdict::AccountDisabled
    );
}

#[test]
fn security_failures_split_into_content_and_account() {
    assert_eq!(
        verdict(200, answer(310000, "keywords not in content")),
        Verdict::ContentBlocked
    );
    for message in [
        "sign not match",
        "invalid timestamp",
        "ip X.X.X.X not in whitelist",
    ] {
        assert_eq!(
            verdict(200, answer(310000, message)),
            Verdict::AccountDisabled,
            "{message}"
        );
    }
}

#[test]
fn unsafe_content_is_blocked_and_busy_is_retried() {
    for code in [430101, 430102, 430103, 430104, 460101, 40035, 12345] {
        assert_eq!(
            verdict(200, answer(code, "x")),
            Verdict::ContentBlocked,
            "{code}"
        );
    }
    assert_eq!(
        verdict(200, answer(-1, "系统繁忙")),
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        classify(502, None, b"", NOW).verdict,
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        classify(400, None, b"bad", NOW).verdict,
        Verdict::ContentBlocked
    );
}

// ---- against a stand-in DingTalk ---------------------------------------------------------

#[derive(Default)]
struct RobotState {
    secret: Option<String>,
    keywords: Vec<String>,
    now_ms: i64,
    sent: Vec<Value>,
    calls: usize,
}

type Shared = Arc<Mutex<RobotState>>;

/// `robot/send` as DingTalk runs it: token first, then the security settings (signature
/// within an hour, keywords), then the body, then the 20-a-minute limit.
async fn robot_send(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    let Ok(mut state) = state.lock() else {
        return axum::Json(answer(-1, "poisoned"));
    };
    state.calls += 1;
    if query.get("access_token").map(String::as_str) != Some(TOKEN) {
        return axum::Json(answer(300005, "token is not exist"));
    }
    if let Some(secret) = state.secret.clone() {
        let timestamp = query.get("timestamp").and_then(|t| t.parse::<i64>().ok());
        let Some(timestamp) = timestamp.filter(|ts| (state.now_ms - ts).abs() <= 3_600_000) else {
            return axum::Json(answer(310000, "invalid timestamp"));
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return axum::Json(answer(-1, "hmac"));
        };
        mac.update(format!("{timestamp}\n{secret}").as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        // axum's Query has already URL-decoded `sign`, as DingTalk's server does.
        if query.get("sign") != Some(&expected) {
            return axum::Json(answer(310000, "sign not match"));
        }
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return axum::Json(answer(40035, "缺少参数 json"));
    };
    if !content_type.starts_with("application/json") {
        return axum::Json(answer(40035, "缺少参数 content-type"));
    }
    let text = body_text(&message);
    if text.is_none() {
        return axum::Json(answer(40035, "缺少参数 msgtype"));
    }
    if !state.keywords.is_empty()
        && !state
            .keywords
            .iter()
            .any(|k| text.as_deref().unwrap_or("").contains(k.as_str()))
    {
        return axum::Json(answer(310000, "keywords not in content"));
    }
    if state.sent.len() >= 20 {
        return axum::Json(answer(130101, "send too fast, exceed 20 times per minute"));
    }
    state.sent.push(message);
    axum::Json(answer(0, "ok"))
}

/// The shown text of a well-formed robot body, `None` when its shape is wrong.
fn body_text(message: &Value) -> Option<String> {
    let kind = message.get("msgtype")?.as_str()?;
    let part = message.get(kind)?;
    let field = |name: &str| part.get(name).and_then(Value::as_str).map(str::to_string);
    match kind {
        "text" => field("content"),
        "markdown" | "actionCard" => Some(format!("{}\n{}", field("title")?, field("text")?)),
        "link" => {
            field("messageUrl")?;
            Some(format!("{}\n{}", field("title")?, field("text")?))
        }
        _ => None,
    }
}

async fn stand_in(secret: Option<&str>, keywords: &[&str]) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(RobotState {
        secret: secret.map(str::to_string),
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        now_ms: NOW,
        ..RobotState::default()
    }));
    let app = Router::new()
        .route("/robot/send", post(robot_send))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), state)
}

fn calls(state: &Shared) -> usize {
    state.lock().map(|s| s.calls).unwrap_or(usize::MAX)
}

#[tokio::test]
async fn a_signed_message_is_accepted_with_the_mention() {
    let (base, state) = stand_in(Some(&secret()), &["通知"]).await;
    let robot = channel(Some(&base), Some(&secret()), &["通知"]);
    let result = robot
        .send(&ctx("user123"), &Message::text("上线通知"))
        .await;
    assert_eq!(result.verdict, Verdict::Delivered, "{}", result.detail);
    let sent = state.lock().map(|s| s.sent.clone()).unwrap_or_default();
    assert_eq!(sent[0]["text"]["content"], "上线通知 @user123");
    assert_eq!(sent[0]["at"]["atUserIds"], json!(["user123"]));
}

#[tokio::test]
async fn a_wrong_secret_or_token_disables_the_account() {
    let (base, _) = stand_in(Some(&secret()), &[]).await;
    let wrong_secret = channel(Some(&base), Some("SECwrong"), &[]);
    let result = wrong_secret.send(&ctx(""), &Message::text("hi")).await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert!(
        result.detail.contains("sign not match"),
        "{}",
        result.detail
    );

    let mut wrong_token = channel(Some(&base), Some(&secret()), &[]);
    wrong_token.access_token = SecretString::from("OTHER");
    let result = wrong_token.send(&ctx(""), &Message::text("hi")).await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
}

#[tokio::test]
async fn a_clock_an_hour_off_is_refused_as_dingtalk_does() {
    let (base, _) = stand_in(Some(&secret()), &[]).await;
    let mut robot = channel(Some(&base), Some(&secret()), &[]);
    robot.clock = Arc::new(ManualClock::new(NOW - 3_600_001));
    let result = robot.send(&ctx(""), &Message::text("hi")).await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert!(result.detail.contains("invalid timestamp"));
}

#[tokio::test]
async fn the_twenty_first_message_in_a_minute_is_rate_limited_not_lost() {
    let (base, _) = stand_in(None, &[]).await;
    let robot = channel(Some(&base), None, &[]);
    for n in 0..20 {
        let result = robot
            .send(&ctx(""), &Message::text(format!("第{n}条")))
            .await;
        assert_eq!(result.verdict, Verdict::Delivered);
    }
    let result = robot.send(&ctx(""), &Message::text("第21条")).await;
    assert_eq!(
        result.verdict,
        Verdict::RateLimited {
            wait: Duration::from_secs(600)
        }
    );
    assert_eq!(result.status, Some(200));
}

#[tokio::test]
async fn content_the_robot_would_refuse_is_never_sent() {
    let (base, state) = stand_in(None, &["通知"]).await;
    let robot = channel(Some(&base), None, &["通知"]);
    let result = robot.send(&ctx(""), &Message::text("没有关键词")).await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
    assert_eq!(result.status, None);
    assert_eq!(calls(&state), 0);
    // Without our own check, DingTalk's refusal is classified the same way.
    let unaware = channel(Some(&base), None, &[]);
    let result = unaware.send(&ctx(""), &Message::text("没有关键词")).await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
    assert_eq!(calls(&state), 1);
}

#[tokio::test]
async fn a_transport_failure_is_retryable_and_never_shows_the_token() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let robot = channel(Some(&format!("http://{address}")), Some(&secret()), &[]);
    let result = robot.send(&ctx(""), &Message::text("hi")).await;
    assert_eq!(result.verdict, Verdict::Retryable { after: None });
    assert!(!result.detail.contains(TOKEN), "{}", result.detail);
    assert!(!result.detail.contains("sign="), "{}", result.detail);
}

proptest! {
    #[test]
    fn rendering_never_panics(
        text in "\\PC{0,300}",
        title in proptest::option::of("\\PC{0,40}"),
        mention in "\\PC{0,20}",
        format in 0usize..4,
        buttons in 0usize..4,
    ) {
        let format = [Format::Text, Format::Markdown, Format::Link, Format::Card][format];
        let message = Message {
            format,
            title,
            url: Some("https://x.example".into()),
            buttons: (0..buttons).map(|n| Button { text: format!("b{n}"), url: format!("https://x.example/{n}") }).collect(),
            mentions: vec![mention.clone()],
            ..Message::text(text)
        };
        let robot = channel(None, None, &["通知"]);
        let _ = robot.check(&message);
        let _ = robot.render(&message, &mention);
        let _ = classify(200, None, message.text.as_bytes(), NOW);
    }
}
