use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::channels::provider_mock::{MockProvider, Reply, Seen};
use crate::channels::{Button, Format};
use crate::clock::ManualClock;

const BOT_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
const HOOK_PATH: &str = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX";

fn clock() -> SharedClock {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

fn ctx(recipient: &str) -> SendContext<'_> {
    SendContext {
        job_id: 3,
        idempotency_key: "job-3",
        attempt: 1,
        recipient,
    }
}

/// `chat.postMessage` as Slack answers it: the bearer token, a JSON body with `channel`
/// and `text`, then `ok` with the message `ts`, or the documented `error`.
fn web_api(seen: &Seen) -> Reply {
    if seen.header("authorization") != Some(&format!("Bearer {BOT_TOKEN}")) {
        return Reply::json(200, json!({"ok": false, "error": "invalid_auth"}));
    }
    if seen.path != "/api/chat.postMessage"
        || !seen
            .header("content-type")
            .is_some_and(|value| value.starts_with("application/json"))
    {
        return Reply::json(200, json!({"ok": false, "error": "unknown_method"}));
    }
    let body = seen.json();
    match body["channel"].as_str() {
        Some("C_ARCHIVED") => Reply::json(200, json!({"ok": false, "error": "is_archived"})),
        Some("C_BUSY") => Reply::json(429, json!({"ok": false, "error": "ratelimited"}))
            .with_header("retry-after", "30"),
        Some(channel) if body["text"].as_str().is_some_and(|t| !t.is_empty()) => Reply::json(
            200,
            json!({"ok": true, "channel": channel, "ts": "1503435956.000247",
                   "message": {"text": body["text"], "type": "message", "subtype": "bot_message"}}),
        ),
        Some(_) => Reply::json(200, json!({"ok": false, "error": "no_text"})),
        None => Reply::json(200, json!({"ok": false, "error": "channel_not_found"})),
    }
}

/// An incoming webhook: plain-text answers.
fn incoming_webhook(seen: &Seen) -> Reply {
    if seen.path != HOOK_PATH {
        return Reply::text(404, "no_service");
    }
    let body = seen.json();
    if body.get("text").and_then(Value::as_str).is_none() {
        return Reply::text(400, "invalid_payload");
    }
    Reply::text(200, "ok")
}

#[tokio::test]
async fn a_bot_posts_to_the_recipient_and_keeps_the_ts() {
    let mock = MockProvider::start(web_api).await;
    let channel = SlackChannel::bot(
        &format!("{}/api/", mock.base_url),
        SecretString::from(BOT_TOKEN),
        Duration::from_secs(5),
        clock(),
    );
    assert_eq!(channel.audience(), Audience::Person(AddressKind::SlackUser));
    let message = Message {
        format: Format::Markdown,
        text: "**Deploy** done, see [logs](https://ci.example/1)".into(),
        ..Message::default()
    };
    let result = channel.send(&ctx("U024BE7LH"), &message).await;
    assert_eq!(result.verdict, Verdict::Delivered, "{result:?}");
    assert_eq!(result.provider_ref.as_deref(), Some("1503435956.000247"));
    let body = mock.requests()[0].json();
    assert_eq!(body["channel"], "U024BE7LH");
    assert_eq!(
        body["text"],
        "*Deploy* done, see <https://ci.example/1|logs>"
    );
    assert!(!format!("{channel:?}").contains(BOT_TOKEN));
}

#[tokio::test]
async fn a_bot_card_carries_blocks() {
    let mock = MockProvider::start(web_api).await;
    let channel = SlackChannel::bot(
        &format!("{}/api", mock.base_url),
        SecretString::from(BOT_TOKEN),
        Duration::from_secs(5),
        clock(),
    );
    let card = Message {
        format: Format::Card,
        title: Some("Release".into()),
        text: "v2".into(),
        buttons: vec![Button {
            text: "Notes".into(),
            url: "https://x.example/n".into(),
        }],
        ..Message::default()
    };
    assert_eq!(
        channel.send(&ctx("C1"), &card).await.verdict,
        Verdict::Delivered
    );
    let body = mock.requests()[0].json();
    assert_eq!(body["blocks"][0]["type"], "header");
    assert_eq!(
        body["blocks"][2]["elements"][0]["url"],
        "https://x.example/n"
    );
}

#[tokio::test]
async fn a_bots_refusals_are_classified_and_429_waits_as_told() {
    let mock = MockProvider::start(web_api).await;
    let base = format!("{}/api", mock.base_url);
    let channel = SlackChannel::bot(
        &base,
        SecretString::from(BOT_TOKEN),
        Duration::from_secs(5),
        clock(),
    );
    let hello = Message::text("hello");
    assert_eq!(
        channel.send(&ctx("C_ARCHIVED"), &hello).await.verdict,
        Verdict::RecipientInvalid
    );
    assert_eq!(
        channel.send(&ctx("C_BUSY"), &hello).await.verdict,
        Verdict::RateLimited {
            wait: Duration::from_secs(30)
        }
    );
    let revoked = SlackChannel::bot(
        &base,
        SecretString::from("xoxb-revoked"),
        Duration::from_secs(5),
        clock(),
    );
    assert_eq!(
        revoked.send(&ctx("C1"), &hello).await.verdict,
        Verdict::AccountDisabled
    );
    // No channel: refused before any call.
    let calls = mock.requests().len();
    assert_eq!(
        channel.send(&ctx(" "), &hello).await.verdict,
        Verdict::RecipientInvalid
    );
    assert_eq!(mock.requests().len(), calls);
}

#[tokio::test]
async fn an_incoming_webhook_mentions_the_recipient_in_its_channel() {
    let mock = MockProvider::start(incoming_webhook).await;
    let url = format!("{}{HOOK_PATH}", mock.base_url);
    let channel = SlackChannel::webhook(
        SecretString::from(url.clone()),
        Duration::from_secs(5),
        clock(),
    )
    .expect("a URL");
    assert_eq!(channel.audience(), Audience::Group(AddressKind::SlackUser));
    let message = Message {
        mentions: vec!["U2".into()],
        ..Message::text("disk at 91% <check>")
    };
    let result = channel.send(&ctx("U1"), &message).await;
    assert_eq!(result.verdict, Verdict::Delivered, "{result:?}");
    assert_eq!(result.provider_ref, None);
    let seen = &mock.requests()[0];
    assert_eq!(
        seen.json(),
        json!({"text": "<@U1> <@U2> disk at 91% &lt;check&gt;"})
    );
    assert!(seen.header("authorization").is_none());
    assert!(!format!("{channel:?}").contains(HOOK_PATH));

    // A removed webhook: the whole URL is the credential, and it never reaches the detail.
    let gone = SlackChannel::webhook(
        SecretString::from(format!("{}/services/T0/B0/gone", mock.base_url)),
        Duration::from_secs(5),
        clock(),
    )
    .expect("a URL");
    let result = gone.send(&ctx(""), &Message::text("hi")).await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert!(!result.detail.contains("/services/"));
}

#[test]
fn a_webhook_url_that_is_not_a_url_disables_the_channel_without_repeating_it() {
    let error = SlackChannel::webhook(
        SecretString::from("hooks.slack.com/services/T/B/secret"),
        Duration::from_secs(1),
        clock(),
    )
    .expect_err("no scheme");
    assert!(!error.contains("secret"), "{error}");
}

fn api(status: u16, body: &str) -> Verdict {
    SlackChannel::classify_api(
        StatusCode::from_u16(status).expect("status"),
        None,
        body.to_string(),
    )
    .verdict
}

#[test]
fn web_api_answers_are_classified() {
    assert_eq!(
        api(200, r#"{"ok":true,"channel":"C1","ts":"1.2"}"#),
        Verdict::Delivered
    );
    for error in ["channel_not_found", "not_in_channel", "is_archived"] {
        assert_eq!(
            api(200, &format!(r#"{{"ok":false,"error":"{error}"}}"#)),
            Verdict::RecipientInvalid,
            "{error}"
        );
    }
    for error in [
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "not_authed",
        "token_expired",
        "missing_scope",
    ] {
        assert_eq!(
            api(200, &format!(r#"{{"ok":false,"error":"{error}"}}"#)),
            Verdict::AccountDisabled,
            "{error}"
        );
    }
    for error in ["msg_too_long", "no_text", "invalid_blocks", "something_new"] {
        assert_eq!(
            api(200, &format!(r#"{{"ok":false,"error":"{error}"}}"#)),
            Verdict::ContentBlocked,
            "{error}"
        );
    }
    assert_eq!(
        api(200, r#"{"ok":false,"error":"ratelimited"}"#),
        Verdict::RateLimited {
            wait: DEFAULT_RATE_LIMIT_WAIT
        }
    );
    assert_eq!(
        api(429, "Too Many Requests"),
        Verdict::RateLimited {
            wait: DEFAULT_RATE_LIMIT_WAIT
        }
    );
    assert_eq!(
        api(200, r#"{"ok":false,"error":"internal_error"}"#),
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        api(503, "<html>down</html>"),
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        api(200, "<html>portal</html>"),
        Verdict::Retryable { after: None }
    );
}

fn webhook(status: u16, body: &str) -> Verdict {
    SlackChannel::classify_webhook(
        StatusCode::from_u16(status).expect("status"),
        None,
        body.to_string(),
    )
    .verdict
}

#[test]
fn incoming_webhook_answers_are_classified() {
    assert_eq!(webhook(200, "ok"), Verdict::Delivered);
    assert_eq!(webhook(400, "invalid_payload"), Verdict::ContentBlocked);
    assert_eq!(
        webhook(400, "too_many_attachments"),
        Verdict::ContentBlocked
    );
    for (status, error) in [
        (404, "no_service"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (403, "action_prohibited"),
        (403, "invalid_token"),
        (404, "team_disabled"),
        (403, "posting_to_general_channel_denied"),
    ] {
        assert_eq!(webhook(status, error), Verdict::AccountDisabled, "{error}");
    }
    assert_eq!(webhook(410, ""), Verdict::AccountDisabled);
    assert_eq!(
        webhook(500, "rollup_error"),
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        SlackChannel::classify_webhook(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(2)),
            String::new()
        )
        .verdict,
        Verdict::RateLimited {
            wait: Duration::from_secs(2)
        }
    );
}

proptest! {
    #[test]
    fn classifying_and_checking_never_panic(status in 100u16..600, body in "\\PC{0,80}", text in "\\PC{0,200}") {
        if let Ok(status) = StatusCode::from_u16(status) {
            let _ = SlackChannel::classify_api(status, None, body.clone());
            let _ = SlackChannel::classify_webhook(status, None, body);
        }
        let channel = SlackChannel::bot("https://slack.com/api", SecretString::from(BOT_TOKEN), Duration::from_secs(1), clock());
        let _ = channel.check(&Message { format: Format::Markdown, text, ..Message::default() });
    }
}
