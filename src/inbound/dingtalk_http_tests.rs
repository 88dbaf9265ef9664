//! The DingTalk handler through the real router: a signed `/whoami` answered in the body,
//! forged, unsigned, stale, replayed and malformed callbacks.

use serde_json::{Value, json};

use super::{WINDOW_MS, sign};
use crate::bot::test_support;
use crate::http::testing::{Answer, Fixture, fixture};
use crate::inbound::handler_testing::{NOW_SECS, SECRET_VAR, audit_count, post, secret};
use crate::rules::{InboundAccount, InboundPlatform, Operator, Role, SecretRef};

const ACCOUNT: &str = "ding-ops";
const NOW_MS: i64 = NOW_SECS * 1000;

async fn dingtalk_fixture() -> Fixture {
    secret();
    let mut rules = test_support::rules();
    rules.inbound.push(InboundAccount {
        id: ACCOUNT.to_string(),
        platform: InboundPlatform::Dingtalk {
            app_secret: SecretRef::new(SECRET_VAR),
        },
    });
    rules.operators.push(Operator {
        platform: "dingtalk".to_string(),
        user: "manager4220".to_string(),
        role: Role::Operator,
    });
    fixture(rules).await
}

fn message(msg_id: &str, text: &str) -> String {
    json!({
        "conversationId": "cidOps==", "chatbotUserId": "$:LWCP_v1:$bot", "msgId": msg_id,
        "senderNick": "王经理", "senderStaffId": "manager4220", "senderId": "$:LWCP_v1:$s",
        "conversationType": "2", "isInAtList": true, "createAt": NOW_MS,
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=x",
        "sessionWebhookExpiredTime": NOW_MS + 5_400_000,
        "text": {"content": format!(" {text}")}, "msgtype": "text", "robotCode": "ding1"
    })
    .to_string()
}

async fn signed(fixture: &Fixture, timestamp_ms: i64, body: &str) -> Answer {
    let ts = timestamp_ms.to_string();
    let signature = sign(secret().as_bytes(), &ts);
    let headers = [
        ("timestamp", ts.as_str()),
        ("sign", signature.as_str()),
        ("content-type", "application/json"),
    ];
    post(fixture, ACCOUNT, &headers, body.as_bytes()).await
}

#[tokio::test]
async fn a_signed_whoami_is_answered_in_the_body_mentioning_the_sender() {
    let fixture = dingtalk_fixture().await;
    let answer = signed(&fixture, NOW_MS - 1000, &message("msg-1", "/whoami")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["msgtype"], "text");
    assert_eq!(body["at"]["atUserIds"], json!(["manager4220"]));
    let text = body["text"]["content"].as_str().unwrap_or_default();
    for expected in [
        "platform: dingtalk",
        "user id: manager4220",
        "name: 王经理",
        "role: operator",
    ] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    fixture.state.db.grouped().flush().await.unwrap();
    let audit = crate::bot::recent_audit(&fixture.state.db, 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].chat, "cidOps==");
    assert_eq!(audit[0].command, "whoami");
}

#[tokio::test]
async fn forged_and_unsigned_callbacks_are_refused_before_anything_runs() {
    let fixture = dingtalk_fixture().await;
    let body = message("msg-2", "/whoami");
    let ts = NOW_MS.to_string();
    let forged = sign(b"not the app secret", &ts);
    let headers = [("timestamp", ts.as_str()), ("sign", forged.as_str())];
    let answer = post(&fixture, ACCOUNT, &headers, body.as_bytes()).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "bad_signature");
    let unsigned = post(&fixture, ACCOUNT, &[], body.as_bytes()).await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(audit_count(&fixture).await, 0);
}

#[tokio::test]
async fn a_timestamp_outside_the_hour_is_stale() {
    let fixture = dingtalk_fixture().await;
    let body = message("msg-3", "/whoami");
    let answer = signed(&fixture, NOW_MS - WINDOW_MS - 1, &body).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "stale");
    let future = signed(&fixture, NOW_MS + WINDOW_MS + 1, &body).await;
    assert_eq!(future.status, 401);
    assert_eq!(audit_count(&fixture).await, 0);
}

#[tokio::test]
async fn a_replayed_msg_id_is_acknowledged_but_runs_once() {
    let fixture = dingtalk_fixture().await;
    let body = message("msg-4", "/whoami");
    let first = signed(&fixture, NOW_MS, &body).await;
    assert_eq!(first.status, 200);
    // DingTalk re-signs a retry: a fresh timestamp, the same msgId.
    let again = signed(&fixture, NOW_MS + 5000, &body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json(), json!({}));
    assert_eq!(audit_count(&fixture).await, 1);
}

#[tokio::test]
async fn malformed_bodies_and_non_text_messages() {
    let fixture = dingtalk_fixture().await;
    let answer = signed(&fixture, NOW_MS, "{not json").await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "malformed");
    let mut picture: Value = serde_json::from_str(&message("msg-5", "")).unwrap();
    picture["msgtype"] = json!("picture");
    let answer = signed(&fixture, NOW_MS, &picture.to_string()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(audit_count(&fixture).await, 0);
}
