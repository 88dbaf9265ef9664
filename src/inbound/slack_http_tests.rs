//! The Slack handler through the real router: the URL check, a slash command answered in the
//! HTTP reply, a mention answered through `chat.postMessage`, forged, stale, replayed and
//! malformed callbacks.

use serde_json::json;

use super::super::signature_header;
use crate::http::testing::Answer;
use crate::inbound::handler_testing::{
    FakeApi, NOW_SECS, SECRET_VAR, audit_count, fake_api, post, replies_done, secret, state_with,
};
use crate::rules::{InboundPlatform, SecretRef};

const ACCOUNT: &str = "slack-ops";

async fn fixture(api: Option<&FakeApi>) -> crate::http::testing::Fixture {
    state_with(
        ACCOUNT,
        InboundPlatform::Slack {
            signing_secret: SecretRef::new(SECRET_VAR),
            bot_token: Some(SecretRef::new(SECRET_VAR)),
            base_url: api.map_or("http://127.0.0.1:9".into(), |api| {
                format!("{}/api", api.base_url)
            }),
        },
    )
    .await
}

async fn signed(fixture: &crate::http::testing::Fixture, ts: i64, body: &str) -> Answer {
    let ts = ts.to_string();
    let signature = signature_header(secret().as_bytes(), &ts, body.as_bytes());
    let headers = [
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", signature.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    post(fixture, ACCOUNT, &headers, body.as_bytes()).await
}

const WHOAMI: &str = "command=%2Fwhoami&text=&user_id=U42&user_name=ada&channel_id=C1&channel_name=ops&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&trigger_id=trig-1";

#[tokio::test]
async fn url_verification_answers_the_challenge() {
    let fixture = fixture(None).await;
    let body = r#"{"token":"t","challenge":"c-123","type":"url_verification"}"#;
    let answer = signed(&fixture, NOW_SECS, body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "c-123");
}

#[tokio::test]
async fn a_slash_command_is_answered_in_the_reply_and_a_replay_is_not_run_again() {
    let fixture = fixture(None).await;
    let answer = signed(&fixture, NOW_SECS, WHOAMI).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["response_type"], "in_channel");
    assert!(
        body["text"].as_str().unwrap_or_default().contains("U42"),
        "{body}"
    );
    replies_done(&fixture).await;
    assert_eq!(audit_count(&fixture).await, 1);

    let replay = signed(&fixture, NOW_SECS + 5, WHOAMI).await;
    assert_eq!(replay.status, 200);
    assert!(replay.body.is_empty());
    assert_eq!(audit_count(&fixture).await, 1, "the same trigger ran twice");
}

#[tokio::test]
async fn a_mention_is_acknowledged_and_answered_once_through_chat_post_message() {
    let api = fake_api(json!({"ok": true})).await;
    let fixture = fixture(Some(&api)).await;
    let event = json!({"type": "event_callback", "event_id": "Ev1", "event": {
        "type": "app_mention", "user": "U42", "text": "<@U0BOT> /whoami", "channel": "C7", "ts": "1.1"}})
    .to_string();
    let answer = signed(&fixture, NOW_SECS, &event).await;
    assert_eq!(answer.status, 200);
    // Slack re-delivers with X-Slack-Retry-Num when the first answer was slow; same event id.
    let ts = NOW_SECS.to_string();
    let signature = signature_header(secret().as_bytes(), &ts, event.as_bytes());
    let retry_headers = [
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", signature.as_str()),
        ("x-slack-retry-num", "1"),
        ("x-slack-retry-reason", "http_timeout"),
    ];
    let retry = post(&fixture, ACCOUNT, &retry_headers, event.as_bytes()).await;
    assert_eq!(retry.status, 200);
    replies_done(&fixture).await;
    assert_eq!(audit_count(&fixture).await, 1);
    let posted = api.requests();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].path, "/api/chat.postMessage");
    assert_eq!(
        posted[0].authorization,
        Some(format!("Bearer {}", secret()))
    );
    assert_eq!(posted[0].body["channel"], "C7");
    assert!(
        posted[0].body["text"]
            .as_str()
            .unwrap_or_default()
            .contains("U42")
    );
}

#[tokio::test]
async fn forged_stale_and_malformed_callbacks_are_refused() {
    let fixture = fixture(None).await;
    let ts = NOW_SECS.to_string();
    let forged = [
        ("x-slack-request-timestamp", ts.as_str()),
        ("x-slack-signature", "v0=00112233"),
    ];
    let answer = post(&fixture, ACCOUNT, &forged, WHOAMI.as_bytes()).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"]["code"], "bad_signature");
    let unsigned = post(&fixture, ACCOUNT, &[], WHOAMI.as_bytes()).await;
    assert_eq!(unsigned.status, 401);

    let stale = signed(&fixture, NOW_SECS - 301, WHOAMI).await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.json()["error"]["code"], "stale");

    let malformed = signed(&fixture, NOW_SECS, r#"{"type":"event_callback"}"#).await;
    assert_eq!(malformed.status, 400);
    let not_a_command = signed(&fixture, NOW_SECS, "user_id=U1").await;
    assert_eq!(not_a_command.status, 400);
    assert_eq!(audit_count(&fixture).await, 0);
}

#[tokio::test]
async fn a_slow_command_is_acknowledged_and_answered_at_response_url() {
    let api = fake_api(json!({"ok": true})).await;
    let fixture = fixture(Some(&api)).await;
    let live = fixture.state.live();
    let account = live
        .rules
        .inbound_account(ACCOUNT)
        .expect("the slack account");
    let callback = crate::inbound::api::Callback {
        state: &fixture.state,
        live: &live,
        account,
    };
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let slow = async move {
        let _ = gate.await;
        vec![crate::inbound::Reply::text("late <answer>")]
    };
    let hook = format!("{}/commands/T1/1/x", api.base_url);
    let deadline = std::time::Duration::from_millis(20);
    let response = super::answer_in_time(&callback, deadline, slow, Some(hook)).await;
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert!(body.is_empty(), "the HTTP answer is a bare acknowledgement");
    let _ = release.send(());
    replies_done(&fixture).await;
    let posted = api.requests();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].path, "/commands/T1/1/x");
    assert_eq!(posted[0].authorization, None);
    assert_eq!(
        posted[0].body,
        json!({"response_type": "in_channel", "text": "late &lt;answer&gt;"})
    );

    // Done in time: the answer is in the HTTP reply and nothing goes to response_url.
    let fixture = self::fixture(Some(&api)).await;
    let live = fixture.state.live();
    let callback = crate::inbound::api::Callback {
        state: &fixture.state,
        live: &live,
        account: live
            .rules
            .inbound_account(ACCOUNT)
            .expect("the slack account"),
    };
    let quick = async { vec![crate::inbound::Reply::text("quick")] };
    let response = super::answer_in_time(&callback, deadline * 500, quick, None).await;
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"response_type": "in_channel", "text": "quick"})
    );
    replies_done(&fixture).await;
    assert_eq!(api.requests().len(), 1);
}
