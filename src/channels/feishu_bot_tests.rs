use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::channels::provider_mock::{MockProvider, Reply, Seen};
use crate::channels::{Button, Format};
use crate::clock::ManualClock;

const NOW_MS: i64 = 1_700_000_000_123;
const TOKEN: &str = "2b6a0c9e-6d1f-4c55-9a4e-0d5e7f1a2b3c";
const SECRET: &str = "demoSecretForCustomBot";

fn ctx(recipient: &str) -> SendContext<'_> {
    SendContext {
        job_id: 7,
        idempotency_key: "job-7",
        attempt: 1,
        recipient,
    }
}

fn channel(base_url: &str, secret: Option<&str>) -> FeishuBotChannel {
    FeishuBotChannel::new(
        base_url,
        &SecretString::from(TOKEN),
        secret.map(SecretString::from),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(NOW_MS)),
    )
    .expect("a valid hook token")
}

/// Checks a request the way Feishu's custom bot does: the path carries the token, and
/// with signing on, `sign` must equal base64(HMAC-SHA256(key = timestamp + "\n" + secret,
/// message = "")) for a `timestamp` in seconds within an hour of now.
fn feishu_verdict(seen: &Seen, secret: Option<&str>, now_s: i64) -> Reply {
    let success = json!({"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"});
    let sign_failed = json!({"code": 19021, "data": {}, "msg": "sign match fail or timestamp is not within one hour from current time"});
    if seen.method != axum::http::Method::POST {
        return Reply::text(405, "method not allowed");
    }
    if seen.path != format!("/open-apis/bot/v2/hook/{TOKEN}") {
        return Reply::json(
            200,
            json!({"code": 19001, "data": {}, "msg": "param invalid: incoming webhook access token invalid"}),
        );
    }
    let body = seen.json();
    if body.get("msg_type").and_then(Value::as_str).is_none() {
        return Reply::json(200, json!({"code": 9499, "msg": "Bad Request", "data": {}}));
    }
    let Some(secret) = secret else {
        return Reply::json(200, success);
    };
    let timestamp = body["timestamp"].as_str().unwrap_or_default();
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return Reply::json(200, sign_failed);
    };
    let key = format!("{timestamp}\n{secret}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(b"");
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if body["sign"] != expected || (now_s - seconds).abs() > 3600 {
        return Reply::json(200, sign_failed);
    }
    Reply::json(200, success)
}

#[test]
fn the_custom_bot_vectors_sign_as_feishu_documents() {
    // [vec feishu-04]
    assert_eq!(
        sign(1_700_000_000, "demoSecretForCustomBot"),
        "4i+w3E17oK6zRqp8JiK3+LZCcGU4FTuZQAhnKiC8tN0="
    );
    // [vec feishu-05]
    assert_eq!(
        sign(1_599_360_473, "demo"),
        "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
    );
}

#[tokio::test]
async fn a_signed_text_is_verified_as_feishu_does_and_mentions_the_recipient() {
    let mock = MockProvider::start(|seen| feishu_verdict(seen, Some(SECRET), NOW_MS / 1000)).await;
    let result = channel(&mock.base_url, Some(SECRET))
        .send(&ctx("ou_recipient"), &Message::text("deploy done"))
        .await;
    assert_eq!(result.verdict, Verdict::Delivered, "{result:?}");
    assert_eq!(result.status, Some(200));

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].json();
    // Seconds, as a string: a millisecond timestamp is "not within one hour".
    assert_eq!(body["timestamp"], "1700000000");
    // [vec feishu-04] the same secret and second give the vector's sign.
    assert_eq!(body["sign"], "4i+w3E17oK6zRqp8JiK3+LZCcGU4FTuZQAhnKiC8tN0=");
    assert_eq!(body["msg_type"], "text");
    assert_eq!(
        body["content"]["text"],
        "<at user_id=\"ou_recipient\"></at> deploy done"
    );
    assert!(
        requests[0]
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json"))
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_19021_and_disables_the_account() {
    let mock = MockProvider::start(|seen| feishu_verdict(seen, Some(SECRET), NOW_MS / 1000)).await;
    let result = channel(&mock.base_url, Some("not-the-secret"))
        .send(&ctx(""), &Message::text("hello"))
        .await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert!(result.detail.contains("19021"));
}

#[tokio::test]
async fn dingtalks_signing_scheme_is_refused_by_feishu() {
    // The peers' bug: secret as the key and `timestamp\nsecret` as the message.
    let mock = MockProvider::start(|seen| feishu_verdict(seen, Some(SECRET), NOW_MS / 1000)).await;
    let timestamp = NOW_MS / 1000;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(format!("{timestamp}\n{SECRET}").as_bytes());
    let swapped = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_ne!(swapped, sign(timestamp, SECRET));
    let body = json!({"msg_type": "text", "content": {"text": "x"}, "timestamp": timestamp.to_string(), "sign": swapped});
    let response = reqwest::Client::new()
        .post(format!("{}/open-apis/bot/v2/hook/{TOKEN}", mock.base_url))
        .json(&body)
        .send()
        .await
        .expect("mock answers");
    let result = FeishuBotChannel::classify(
        response.status(),
        None,
        response.text().await.unwrap_or_default(),
    );
    assert_eq!(result.verdict, Verdict::AccountDisabled);
}

#[tokio::test]
async fn an_unsigned_bot_sends_no_timestamp_or_sign() {
    let mock = MockProvider::start(|seen| feishu_verdict(seen, None, NOW_MS / 1000)).await;
    let result = channel(&mock.base_url, None)
        .send(&ctx(""), &Message::text("hello"))
        .await;
    assert_eq!(result.verdict, Verdict::Delivered);
    let body = mock.requests()[0].json();
    assert!(body.get("timestamp").is_none() && body.get("sign").is_none());
    assert_eq!(body["content"]["text"], "hello");
}

#[tokio::test]
async fn a_card_goes_under_card_and_markdown_under_post() {
    let mock = MockProvider::start(|seen| feishu_verdict(seen, Some(SECRET), NOW_MS / 1000)).await;
    let channel = channel(&mock.base_url, Some(SECRET));
    let card = Message {
        format: Format::Card,
        title: Some("Release".into()),
        text: "v2 is out".into(),
        buttons: vec![Button {
            text: "Notes".into(),
            url: "https://x.example/n".into(),
        }],
        mention_all: true,
        ..Message::default()
    };
    assert_eq!(
        channel.send(&ctx(""), &card).await.verdict,
        Verdict::Delivered
    );
    let markdown = Message {
        format: Format::Markdown,
        text: "see [notes](https://x.example/n)".into(),
        ..Message::default()
    };
    assert_eq!(
        channel.send(&ctx("ou_1"), &markdown).await.verdict,
        Verdict::Delivered
    );

    let requests = mock.requests();
    let card_body = requests[0].json();
    assert_eq!(card_body["msg_type"], "interactive");
    assert!(card_body.get("content").is_none());
    assert_eq!(
        card_body["card"]["elements"][0]["content"],
        "<at id=all></at> v2 is out"
    );
    assert_eq!(card_body["card"]["header"]["title"]["content"], "Release");
    let post_body = requests[1].json();
    assert_eq!(post_body["msg_type"], "post");
    assert_eq!(
        post_body["content"]["post"]["zh_cn"]["content"],
        json!([
            [{"tag": "at", "user_id": "ou_1"}],
            [{"tag": "text", "text": "see "}, {"tag": "a", "text": "notes", "href": "https://x.example/n"}],
        ])
    );
}

#[tokio::test]
async fn an_oversize_message_is_refused_before_any_call() {
    let mock = MockProvider::start(|seen| feishu_verdict(seen, Some(SECRET), NOW_MS / 1000)).await;
    let channel = channel(&mock.base_url, Some(SECRET));
    let too_big = Message::text("群".repeat(BODY_LIMIT / 3));
    let error = channel.check(&too_big).expect_err("over 20 KB");
    assert!(error.to_string().contains("at most 20000"), "{error}");
    let result = channel.send(&ctx("ou_1"), &too_big).await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
    assert!(mock.requests().is_empty());

    // The limit counts the whole body, signature included: the largest text that fits
    // leaves room for exactly that.
    let envelope = channel
        .fitted_body(&Message::text("x"), &Mentions::default(), NOW_MS / 1000)
        .expect("a one-character message fits")
        .len()
        - 1;
    let fits = Message::text("a".repeat(BODY_LIMIT - envelope));
    assert!(channel.check(&fits).is_ok());
    let one_more = Message::text("a".repeat(BODY_LIMIT - envelope + 1));
    assert!(channel.check(&one_more).is_err());
    assert!(channel.check(&Message::text("  ")).is_err());
}

#[tokio::test]
async fn a_9499_answer_is_never_a_success() {
    // design.md pitfall: `{"code":9499,"msg":"too many request"}` logged as success.
    let mock = MockProvider::start(|_| {
        Reply::json(
            200,
            json!({"code": 9499, "msg": "too many request", "data": {}}),
        )
    })
    .await;
    let result = channel(&mock.base_url, Some(SECRET))
        .send(&ctx(""), &Message::text("burst"))
        .await;
    assert_eq!(
        result.verdict,
        Verdict::RateLimited {
            wait: DEFAULT_RATE_LIMIT_WAIT
        }
    );
}

#[tokio::test]
async fn an_unreachable_bot_is_retryable_and_the_token_stays_out_of_the_detail() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let channel = channel(&format!("http://{address}"), Some(SECRET));
    let result = channel.send(&ctx(""), &Message::text("hello")).await;
    assert_eq!(result.verdict, Verdict::Retryable { after: None });
    assert!(!result.detail.contains(TOKEN), "{}", result.detail);
    assert!(!format!("{channel:?}").contains(TOKEN));
}

#[test]
fn a_hook_token_that_is_not_a_path_segment_is_refused() {
    let clock: SharedClock = Arc::new(ManualClock::new(NOW_MS));
    for token in ["", "a/b", "abc?x=1", "a b"] {
        let built = FeishuBotChannel::new(
            "https://open.feishu.cn",
            &SecretString::from(token),
            None,
            Duration::from_secs(1),
            clock.clone(),
        );
        assert!(built.is_err(), "{token:?}");
    }
}

fn verdict(status: u16, wait: Option<Duration>, body: &str) -> Verdict {
    FeishuBotChannel::classify(
        StatusCode::from_u16(status).expect("status"),
        wait,
        body.to_string(),
    )
    .verdict
}

#[test]
fn success_needs_code_zero_with_a_2xx() {
    assert_eq!(
        verdict(
            200,
            None,
            r#"{"StatusCode":0,"StatusMessage":"success","code":0,"data":{},"msg":"success"}"#
        ),
        Verdict::Delivered
    );
    // Legacy answers carry only StatusCode.
    assert_eq!(
        verdict(200, None, r#"{"StatusCode":0,"StatusMessage":"success"}"#),
        Verdict::Delivered
    );
    assert_eq!(
        verdict(200, None, "<html>ok</html>"),
        Verdict::Retryable { after: None }
    );
}

#[test]
fn rate_limit_codes_wait_a_minute_or_as_told() {
    let limited = Verdict::RateLimited {
        wait: DEFAULT_RATE_LIMIT_WAIT,
    };
    assert_eq!(
        verdict(200, None, r#"{"code":9499,"msg":"Bad Request","data":{}}"#),
        limited
    );
    assert_eq!(
        verdict(200, None, r#"{"code":11232,"msg":"frequency limited"}"#),
        limited
    );
    assert_eq!(
        verdict(
            429,
            Some(Duration::from_secs(3)),
            r#"{"code":11232,"msg":"frequency limited"}"#
        ),
        Verdict::RateLimited {
            wait: Duration::from_secs(3)
        }
    );
    assert_eq!(verdict(429, None, "slow down"), limited);
}

#[test]
fn configuration_codes_disable_the_account() {
    for body in [
        r#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#,
        r#"{"code":19022,"msg":"Ip Not Allowed"}"#,
        r#"{"code":19001,"msg":"param invalid: incoming webhook access token invalid"}"#,
    ] {
        assert_eq!(verdict(200, None, body), Verdict::AccountDisabled, "{body}");
    }
    assert_eq!(
        verdict(404, None, "404 page not found"),
        Verdict::AccountDisabled
    );
}

#[test]
fn a_missing_keyword_blocks_the_content() {
    assert_eq!(
        verdict(200, None, r#"{"code":19024,"msg":"Key Words Not Found"}"#),
        Verdict::ContentBlocked
    );
    // An unknown code refuses the request as written.
    assert_eq!(
        verdict(200, None, r#"{"code":12345,"msg":"something new"}"#),
        Verdict::ContentBlocked
    );
}

#[test]
fn server_errors_are_retryable() {
    assert_eq!(
        verdict(502, None, "<html>bad gateway</html>"),
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        verdict(503, None, r#"{"code":12345,"msg":"busy"}"#),
        Verdict::Retryable { after: None }
    );
}

proptest! {
    #[test]
    fn checking_and_classifying_never_panic(text in "\\PC{0,300}", status in 100u16..600, body in "\\PC{0,80}") {
        let channel = channel("https://open.feishu.cn", Some(SECRET));
        let message = Message { format: Format::Markdown, text: text.clone(), ..Message::default() };
        let _ = channel.check(&message);
        let _ = channel.check(&Message::text(text));
        if let Ok(status) = StatusCode::from_u16(status) {
            let _ = FeishuBotChannel::classify(status, None, body);
        }
    }
}
