use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;
use crate::channels::Format;
use crate::channels::provider_mock::{MockProvider, Reply, Seen};
use crate::clock::ManualClock;

const APP_ID: &str = "cli_a0000000000000000";
const APP_SECRET: &str = "feishuAppSecretValue";
const OPEN_ID: &str = "ou_84aad35d084aa403a838cf73ee18467";

fn ctx<'a>(key: &'a str, recipient: &'a str) -> SendContext<'a> {
    SendContext {
        job_id: 1,
        idempotency_key: key,
        attempt: 1,
        recipient,
    }
}

fn channel(base_url: &str, secret: &str) -> FeishuAppChannel {
    FeishuAppChannel::new(
        base_url,
        APP_ID,
        SecretString::from(secret),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(1_700_000_000_000)),
    )
}

/// A Feishu tenant: issues `t-1`, `t-2`, … to the right app credentials, and accepts
/// messages only with the newest token unless `revoked` says the newest one is revoked
/// too. Checks the body the way `im/v1/messages` does.
struct Tenant {
    issued: AtomicUsize,
    revoke_until: usize,
}

impl Tenant {
    fn answer(&self, seen: &Seen) -> Reply {
        if seen.path == TOKEN_PATH {
            let body = seen.json();
            if body["app_id"] != APP_ID || body["app_secret"] != APP_SECRET {
                return Reply::json(400, json!({"code": 10014, "msg": "app secret invalid"}));
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::json(
                200,
                json!({"code": 0, "msg": "ok", "tenant_access_token": format!("t-{n}"), "expire": 7200}),
            );
        }
        let newest = self.issued.load(Ordering::SeqCst);
        let valid = format!("Bearer t-{newest}");
        if seen.header("authorization") != Some(valid.as_str()) || newest <= self.revoke_until {
            return Reply::json(
                401,
                json!({"code": 99991663, "msg": "Invalid access token for authorization. Please make a request with token attached."}),
            );
        }
        let body = seen.json();
        let content_is_json_text = body["content"]
            .as_str()
            .is_some_and(|content| serde_json::from_str::<Value>(content).is_ok());
        let uuid_fits = body["uuid"].as_str().is_some_and(|uuid| uuid.len() <= 50);
        if seen.path != "/open-apis/im/v1/messages"
            || seen.query != "receive_id_type=open_id"
            || !content_is_json_text
            || !uuid_fits
        {
            return Reply::json(
                400,
                json!({"code": 230001, "msg": "Your request contains an invalid request parameter, ext=invalid content."}),
            );
        }
        Reply::json(
            200,
            json!({"code": 0, "msg": "success", "data": {
                "message_id": "om_dc13264520392913993dd051dba21dcf",
                "chat_id": "oc_5ad11d72b830411d72b836c20",
                "create_time": "1700000000000",
                "msg_type": body["msg_type"],
            }}),
        )
    }
}

async fn tenant(revoke_until: usize) -> MockProvider {
    let tenant = Tenant {
        issued: AtomicUsize::new(0),
        revoke_until,
    };
    MockProvider::start(move |seen| tenant.answer(seen)).await
}

fn calls_to(mock: &MockProvider, path: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|seen| seen.path == path)
        .count()
}

#[tokio::test]
async fn a_message_is_delivered_with_its_message_id_and_the_token_is_reused() {
    let mock = tenant(0).await;
    let channel = channel(&mock.base_url, APP_SECRET);
    for key in ["job-1", "job-2"] {
        let result = channel.send(&ctx(key, OPEN_ID), &Message::text("hi")).await;
        assert_eq!(result.verdict, Verdict::Delivered, "{result:?}");
        assert_eq!(
            result.provider_ref.as_deref(),
            Some("om_dc13264520392913993dd051dba21dcf")
        );
        assert!(!result.detail.contains("t-1"));
    }
    assert_eq!(calls_to(&mock, TOKEN_PATH), 1);
    let sends: Vec<Seen> = mock
        .requests()
        .into_iter()
        .filter(|seen| seen.path != TOKEN_PATH)
        .collect();
    assert_eq!(sends.len(), 2);
    let body = sends[0].json();
    assert_eq!(body["receive_id"], OPEN_ID);
    assert_eq!(body["msg_type"], "text");
    assert_eq!(body["content"], r#"{"text":"hi"}"#);
    assert_eq!(body["uuid"], message_uuid("job-1", OPEN_ID));
    assert_ne!(sends[0].json()["uuid"], sends[1].json()["uuid"]);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_and_the_send_retried_once() {
    // The first token is revoked as soon as it is issued; the second works.
    let mock = tenant(1).await;
    let result = channel(&mock.base_url, APP_SECRET)
        .send(&ctx("job-1", OPEN_ID), &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::Delivered, "{result:?}");
    assert_eq!(calls_to(&mock, TOKEN_PATH), 2);
    assert_eq!(calls_to(&mock, "/open-apis/im/v1/messages"), 2);
}

#[tokio::test]
async fn a_token_refused_again_after_a_refresh_disables_the_account() {
    let mock = tenant(usize::MAX).await;
    let result = channel(&mock.base_url, APP_SECRET)
        .send(&ctx("job-1", OPEN_ID), &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert!(result.detail.contains("99991663"));
    assert_eq!(calls_to(&mock, "/open-apis/im/v1/messages"), 2);
}

#[tokio::test]
async fn a_wrong_app_secret_disables_the_account_without_sending() {
    let mock = tenant(0).await;
    let channel = channel(&mock.base_url, "wrong-secret");
    let result = channel
        .send(&ctx("job-1", OPEN_ID), &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert!(result.detail.contains("10014"), "{}", result.detail);
    assert_eq!(calls_to(&mock, "/open-apis/im/v1/messages"), 0);
    assert!(!format!("{channel:?}").contains("wrong-secret"));
}

#[tokio::test]
async fn rich_formats_are_sent_as_json_text_content() {
    let mock = tenant(0).await;
    let channel = channel(&mock.base_url, APP_SECRET);
    let card = Message {
        format: Format::Card,
        title: Some("Release".into()),
        text: "v2".into(),
        mentions: vec!["ou_other".into()],
        ..Message::default()
    };
    assert_eq!(
        channel.send(&ctx("k", OPEN_ID), &card).await.verdict,
        Verdict::Delivered
    );
    let body = mock.requests()[1].json();
    assert_eq!(body["msg_type"], "interactive");
    let content: Value =
        serde_json::from_str(body["content"].as_str().unwrap_or_default()).expect("card json");
    assert_eq!(content["header"]["title"]["content"], "Release");
    // A 1:1 message @mentions no one.
    assert_eq!(content["elements"][0]["content"], "v2");
}

#[tokio::test]
async fn the_gateways_rate_limit_waits_as_its_headers_say() {
    let mock = MockProvider::start(|seen| {
        if seen.path == TOKEN_PATH {
            return Reply::json(
                200,
                json!({"code": 0, "tenant_access_token": "t-1", "expire": 7200}),
            );
        }
        Reply::json(
            429,
            json!({"code": 99991400, "msg": "request trigger frequency limit"}),
        )
        .with_header("x-ogw-ratelimit-limit", "50")
        .with_header("x-ogw-ratelimit-reset", "7")
    })
    .await;
    let result = channel(&mock.base_url, APP_SECRET)
        .send(&ctx("k", OPEN_ID), &Message::text("hi"))
        .await;
    assert_eq!(
        result.verdict,
        Verdict::RateLimited {
            wait: Duration::from_secs(7)
        }
    );
}

#[tokio::test]
async fn a_missing_open_id_or_oversize_content_never_calls_feishu() {
    let mock = tenant(0).await;
    let channel = channel(&mock.base_url, APP_SECRET);
    let result = channel.send(&ctx("k", " "), &Message::text("hi")).await;
    assert_eq!(result.verdict, Verdict::RecipientInvalid);

    let big_post = Message {
        format: Format::Markdown,
        text: "x".repeat(RICH_BODY_LIMIT),
        ..Message::default()
    };
    assert!(channel.check(&big_post).is_err());
    assert_eq!(
        channel.send(&ctx("k", OPEN_ID), &big_post).await.verdict,
        Verdict::ContentBlocked
    );
    // The same length as text is within the 150 KB text limit.
    assert!(
        channel
            .check(&Message::text("x".repeat(RICH_BODY_LIMIT)))
            .is_ok()
    );
    assert!(
        channel
            .check(&Message::text("x".repeat(TEXT_BODY_LIMIT)))
            .is_err()
    );
    assert!(mock.requests().is_empty());
}

#[test]
fn the_uuid_is_stable_short_and_per_job_and_person() {
    let uuid = message_uuid("a-very-long-idempotency-key-".repeat(10).as_str(), OPEN_ID);
    assert!(uuid.len() <= 50, "{uuid}");
    assert_eq!(
        uuid,
        message_uuid(&"a-very-long-idempotency-key-".repeat(10), OPEN_ID)
    );
    assert_ne!(uuid, message_uuid("other", OPEN_ID));
    assert_ne!(message_uuid("k", "ou_1"), message_uuid("k", "ou_2"));
}

fn verdict(status: u16, body: &str) -> Verdict {
    FeishuAppChannel::classify(
        StatusCode::from_u16(status).expect("status"),
        None,
        body.to_string(),
    )
    .verdict
}

#[test]
fn success_needs_code_zero() {
    assert_eq!(
        verdict(
            200,
            r#"{"code":0,"msg":"success","data":{"message_id":"om_1"}}"#
        ),
        Verdict::Delivered
    );
    assert_eq!(
        verdict(200, r#"{"msg":"success"}"#),
        Verdict::Retryable { after: None }
    );
}

#[test]
fn rate_limits_are_told_apart() {
    assert_eq!(
        verdict(
            429,
            r#"{"code":99991400,"msg":"request trigger frequency limit"}"#
        ),
        Verdict::RateLimited {
            wait: DEFAULT_RATE_LIMIT_WAIT
        }
    );
    assert_eq!(
        verdict(
            400,
            r#"{"code":99991400,"msg":"request trigger frequency limit"}"#
        ),
        Verdict::RateLimited {
            wait: DEFAULT_RATE_LIMIT_WAIT
        }
    );
    assert_eq!(
        verdict(
            400,
            r#"{"code":230020,"msg":"This operation triggers the frequency limit."}"#
        ),
        Verdict::RateLimited {
            wait: PER_CHAT_WAIT
        }
    );
    assert_eq!(
        verdict(429, "Too Many Requests"),
        Verdict::RateLimited {
            wait: DEFAULT_RATE_LIMIT_WAIT
        }
    );
}

#[test]
fn unreachable_people_are_invalid_recipients() {
    for code in [230002, 230013, 230029, 230034, 230053, 99992361] {
        assert_eq!(
            verdict(400, &format!(r#"{{"code":{code},"msg":"x"}}"#)),
            Verdict::RecipientInvalid,
            "{code}"
        );
    }
    assert_eq!(
        verdict(
            400,
            r#"{"code":230001,"msg":"Your request contains an invalid request parameter, ext=invalid receive_id."}"#
        ),
        Verdict::RecipientInvalid
    );
}

#[test]
fn refused_content_is_blocked() {
    for code in [230022, 230025, 230028] {
        assert_eq!(
            verdict(400, &format!(r#"{{"code":{code},"msg":"x"}}"#)),
            Verdict::ContentBlocked,
            "{code}"
        );
    }
    assert_eq!(
        verdict(
            400,
            r#"{"code":230001,"msg":"Your request contains an invalid request parameter, ext=invalid content."}"#
        ),
        Verdict::ContentBlocked
    );
}

#[test]
fn a_disabled_bot_or_missing_permission_disables_the_account() {
    for code in [230006, 230027, 230035, 99991663, 99991661] {
        assert_eq!(
            verdict(400, &format!(r#"{{"code":{code},"msg":"x"}}"#)),
            Verdict::AccountDisabled,
            "{code}"
        );
    }
}

#[test]
fn server_faults_are_retryable() {
    assert_eq!(
        verdict(500, r#"{"code":1500,"msg":"internal error"}"#),
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        verdict(502, "<html>bad gateway</html>"),
        Verdict::Retryable { after: None }
    );
}

#[test]
fn token_endpoint_failures_are_classified() {
    let failure = |status: u16, body: &str| {
        FeishuAppChannel::classify_token_failure(
            StatusCode::from_u16(status).expect("status"),
            None,
            body,
        )
        .verdict
    };
    assert_eq!(
        failure(400, r#"{"code":10014,"msg":"app secret invalid"}"#),
        Verdict::AccountDisabled
    );
    assert_eq!(
        failure(200, r#"{"code":10003,"msg":"invalid param"}"#),
        Verdict::AccountDisabled
    );
    assert_eq!(
        failure(
            429,
            r#"{"code":99991400,"msg":"request trigger frequency limit"}"#
        ),
        Verdict::RateLimited {
            wait: DEFAULT_RATE_LIMIT_WAIT
        }
    );
    assert_eq!(
        failure(503, r#"{"code":1500,"msg":"internal error"}"#),
        Verdict::Retryable { after: None }
    );
}

proptest! {
    #[test]
    fn checking_and_classifying_never_panic(text in "\\PC{0,300}", status in 100u16..600, body in "\\PC{0,80}") {
        let channel = channel("https://open.feishu.cn", APP_SECRET);
        for format in [Format::Text, Format::Markdown, Format::Link, Format::Card] {
            let _ = channel.check(&Message { format, text: text.clone(), ..Message::default() });
        }
        if let Ok(status) = StatusCode::from_u16(status) {
            let _ = FeishuAppChannel::classify(status, None, body.clone());
            let _ = FeishuAppChannel::classify_token_failure(status, None, &body);
        }
    }
}

#[test]
fn an_unknown_code_on_a_2xx_is_refused_content() {
    assert_eq!(
        verdict(200, r#"{"code":239999,"msg":"something new"}"#),
        Verdict::ContentBlocked
    );
}
