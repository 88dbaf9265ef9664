//! The Feishu handler through the real router: the URL check plain and encrypted (unsigned),
//! a signed `/whoami` answered through the reply API with a fetched token, forged, unsigned,
//! stale, replayed and malformed events, and read receipts recorded.

use serde_json::{Value, json};

use super::super::feishu::{WINDOW_SECS, encrypt, signature};
use crate::http::testing::{Answer, Fixture};
use crate::inbound::handler_testing::{
    FakeApi, NOW_SECS, SECRET_VAR, audit_count, fake_api, post, replies_done, secret, state_with,
};
use crate::rules::{InboundPlatform, SecretRef};

const ACCOUNT: &str = "lark-ops";

/// Every secret of the account is the test process's `SECRET_VAR` value.
async fn fixture(api: &FakeApi, encrypted: bool) -> Fixture {
    state_with(
        ACCOUNT,
        InboundPlatform::Feishu {
            verification_token: SecretRef::new(SECRET_VAR),
            encrypt_key: encrypted.then(|| SecretRef::new(SECRET_VAR)),
            app_id: "cli_test".into(),
            app_secret: SecretRef::new(SECRET_VAR),
            base_url: api.base_url.clone(),
        },
    )
    .await
}

async fn api() -> FakeApi {
    // One answer serves both calls: the token fetch and the reply.
    fake_api(
        json!({"code": 0, "msg": "ok", "tenant_access_token": "t-123", "expire": 7200, "data": {}}),
    )
    .await
}

fn seal(event: &Value) -> String {
    json!({"encrypt": encrypt(&secret(), [9u8; 16], event.to_string().as_bytes())}).to_string()
}

async fn signed(fixture: &Fixture, ts_secs: i64, body: &str) -> Answer {
    let ts = ts_secs.to_string();
    let sig = signature(&ts, "n0nce", &secret(), body.as_bytes());
    let headers = [
        ("x-lark-request-timestamp", ts.as_str()),
        ("x-lark-request-nonce", "n0nce"),
        ("x-lark-signature", sig.as_str()),
        ("content-type", "application/json"),
    ];
    post(fixture, ACCOUNT, &headers, body.as_bytes()).await
}

fn event(event_id: &str, event_type: &str, body: Value) -> Value {
    json!({"schema": "2.0",
        "header": {"event_id": event_id, "event_type": event_type, "create_time": "1764000000000",
                   "token": secret(), "app_id": "cli_test", "tenant_key": "t"},
        "event": body})
}

fn whoami(event_id: &str, message_id: &str) -> Value {
    event(
        event_id,
        "im.message.receive_v1",
        json!({"sender": {"sender_id": {"open_id": "ou_admin"}, "sender_type": "user"},
               "message": {"message_id": message_id, "chat_id": "oc_1", "chat_type": "group",
                           "message_type": "text", "content": "{\"text\":\"@_user_1 /whoami\"}",
                           "mentions": [{"key": "@_user_1", "name": "Bot", "id": {"open_id": "ou_bot"}}]}}),
    )
}

#[tokio::test]
async fn the_url_check_is_answered_plain_and_encrypted_without_a_signature() {
    let api = api().await;
    let challenge = json!({"challenge": "ch-1", "token": secret(), "type": "url_verification"});
    let plain = fixture(&api, false).await;
    let answer = post(&plain, ACCOUNT, &[], challenge.to_string().as_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"challenge": "ch-1"}));

    let encrypted = fixture(&api, true).await;
    let answer = post(&encrypted, ACCOUNT, &[], seal(&challenge).as_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"challenge": "ch-1"}));

    // Headers that do not verify do not spoil the URL check either (lark-oapi ignores them).
    let headers = [
        ("x-lark-request-timestamp", "1"),
        ("x-lark-request-nonce", "n"),
        ("x-lark-signature", "00"),
    ];
    let answer = post(&encrypted, ACCOUNT, &headers, seal(&challenge).as_bytes()).await;
    assert_eq!(answer.json(), json!({"challenge": "ch-1"}));

    let wrong = json!({"challenge": "ch-1", "token": "guessed", "type": "url_verification"});
    let answer = post(&encrypted, ACCOUNT, &[], seal(&wrong).as_bytes()).await;
    assert_eq!(answer.status, 401);
    let answer = post(&plain, ACCOUNT, &[], wrong.to_string().as_bytes()).await;
    assert_eq!(answer.status, 401);
    // With an encrypt key, an unsigned body that is not a URL check is refused.
    let answer = post(&encrypted, ACCOUNT, &[], b"{not json").await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn a_signed_whoami_is_answered_through_the_reply_api() {
    let api = api().await;
    let fixture = fixture(&api, true).await;
    for (event_id, message_id) in [("ev-1", "om_1"), ("ev-2", "om_2")] {
        let answer = signed(&fixture, NOW_SECS, &seal(&whoami(event_id, message_id))).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json(), json!({"msg": "success"}));
    }
    replies_done(&fixture).await;
    let requests = api.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/open-apis/auth/v3/tenant_access_token/internal",
            "/open-apis/im/v1/messages/om_1/reply",
            "/open-apis/im/v1/messages/om_2/reply",
        ],
        "one token fetch, cached for the second reply"
    );
    assert_eq!(
        requests[0].body,
        json!({"app_id": "cli_test", "app_secret": secret()})
    );
    let reply = &requests[1];
    assert_eq!(reply.authorization.as_deref(), Some("Bearer t-123"));
    let content: Value = serde_json::from_str(reply.body["content"].as_str().unwrap()).unwrap();
    let text = content["text"].as_str().unwrap();
    assert!(
        text.contains("platform: feishu") && text.contains("user id: ou_admin"),
        "{text}"
    );
    assert_eq!(audit_count(&fixture).await, 2);
}

#[tokio::test]
async fn forged_unsigned_and_stale_events_are_refused() {
    let api = api().await;
    let fixture = fixture(&api, true).await;
    let body = seal(&whoami("ev-3", "om_3"));
    let forged = signature(&NOW_SECS.to_string(), "n0nce", "guessed", body.as_bytes());
    let ts = NOW_SECS.to_string();
    let headers = [
        ("x-lark-request-timestamp", ts.as_str()),
        ("x-lark-request-nonce", "n0nce"),
        ("x-lark-signature", forged.as_str()),
    ];
    let answer = post(&fixture, ACCOUNT, &headers, body.as_bytes()).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    let unsigned = post(&fixture, ACCOUNT, &[], body.as_bytes()).await;
    assert_eq!(unsigned.status, 401, "{}", unsigned.text());
    let stale = signed(&fixture, NOW_SECS - WINDOW_SECS - 1, &body).await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.json()["error"]["code"], "stale");
    replies_done(&fixture).await;
    assert_eq!(audit_count(&fixture).await, 0);
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn a_replayed_event_is_acknowledged_but_runs_once() {
    let api = api().await;
    let fixture = fixture(&api, true).await;
    let body = seal(&whoami("ev-4", "om_4"));
    for _ in 0..2 {
        let answer = signed(&fixture, NOW_SECS, &body).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    replies_done(&fixture).await;
    assert_eq!(audit_count(&fixture).await, 1);
    let replies = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/reply"))
        .count();
    assert_eq!(replies, 1);
}

#[tokio::test]
async fn without_an_encrypt_key_the_token_is_the_check() {
    let api = api().await;
    let fixture = fixture(&api, false).await;
    let answer = post(
        &fixture,
        ACCOUNT,
        &[],
        whoami("ev-5", "om_5").to_string().as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let mut forged = whoami("ev-6", "om_6");
    forged["header"]["token"] = json!("guessed");
    let answer = post(&fixture, ACCOUNT, &[], forged.to_string().as_bytes()).await;
    assert_eq!(answer.status, 401);
    replies_done(&fixture).await;
    assert_eq!(audit_count(&fixture).await, 1);
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let api = api().await;
    let fixture = fixture(&api, true).await;
    let answer = signed(&fixture, NOW_SECS, "{not json").await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    let answer = signed(&fixture, NOW_SECS, r#"{"encrypt":"!!"}"#).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
}

#[tokio::test]
async fn read_receipts_are_recorded_once() {
    let api = api().await;
    let fixture = fixture(&api, true).await;
    let receipt = event(
        "ev-7",
        "im.message.message_read_v1",
        json!({"reader": {"reader_id": {"open_id": "ou_r"}, "read_time": "1764000000000"},
               "message_id_list": ["om_9"]}),
    );
    for _ in 0..2 {
        let answer = signed(&fixture, NOW_SECS, &seal(&receipt)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let events = crate::inbound::store::recent_platform_events(&fixture.state.db, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "feishu.message_read");
    assert_eq!(events[0].platform, "feishu");
    assert_eq!(events[0].payload["message_ids"], json!(["om_9"]));
}
