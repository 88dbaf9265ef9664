//! The QQ handler through the real router: the op 13 handshake, a group `/whoami` answered
//! through the group message API with a fetched token, forged, stale, replayed and
//! malformed callbacks.

use ed25519_dalek::Verifier;
use serde_json::json;

use super::super::{sign_hex, signing_key};
use crate::http::testing::{Answer, Fixture};
use crate::inbound::handler_testing::{
    FakeApi, NOW_SECS, SECRET_VAR, audit_count, fake_api, post, replies_done, secret, state_with,
};
use crate::rules::{InboundPlatform, SecretRef};

const ACCOUNT: &str = "qq-ops";

async fn fixture(api: &FakeApi) -> Fixture {
    state_with(
        ACCOUNT,
        InboundPlatform::Qq {
            app_id: "1024".into(),
            app_secret: SecretRef::new(SECRET_VAR),
            base_url: api.base_url.clone(),
        },
    )
    .await
}

async fn signed(fixture: &Fixture, ts: i64, body: &str) -> Answer {
    let ts = ts.to_string();
    let key = signing_key(&secret()).unwrap();
    let signature = sign_hex(&key, &ts, body.as_bytes());
    let headers = [
        ("x-signature-timestamp", ts.as_str()),
        ("x-signature-ed25519", signature.as_str()),
        ("x-bot-appid", "1024"),
        ("user-agent", "QQBot-Callback"),
        ("content-type", "application/json"),
    ];
    post(fixture, ACCOUNT, &headers, body.as_bytes()).await
}

fn group_whoami(event_id: &str) -> String {
    json!({"op": 0, "id": event_id, "t": "GROUP_AT_MESSAGE_CREATE",
        "d": {"id": "ROBOT1.0_m1", "content": " /whoami", "group_openid": "G1",
              "timestamp": "2026-11-25T12:00:00+08:00", "author": {"member_openid": "M9"}}})
    .to_string()
}

#[tokio::test]
async fn the_validation_handshake_signs_the_plain_token() {
    let api = fake_api(json!({})).await;
    let fixture = fixture(&api).await;
    let body = r#"{"d":{"plain_token":"Arq0D5A61EgUu4OxUvOp","event_ts":"1725442341"},"op":13}"#;
    let answer = signed(&fixture, NOW_SECS, body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["plain_token"], "Arq0D5A61EgUu4OxUvOp");
    let signature = hex::decode(answer["signature"].as_str().unwrap()).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    let key = signing_key(&secret()).unwrap().verifying_key();
    assert!(
        key.verify(b"1725442341Arq0D5A61EgUu4OxUvOp", &signature)
            .is_ok()
    );
    // Unsigned, the handshake would be a signing oracle for forged callbacks.
    let unsigned = post(&fixture, ACCOUNT, &[], body.as_bytes()).await;
    assert_eq!(unsigned.status, 401);
}

#[tokio::test]
async fn a_group_command_is_answered_through_the_group_api_once() {
    let api = fake_api(json!({"access_token": "tok-1", "expires_in": "7200", "id": "r1"})).await;
    let fixture = fixture(&api).await;
    let body = group_whoami("GROUP_AT_MESSAGE_CREATE:e1");
    let answer = signed(&fixture, NOW_SECS, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["op"], 12);
    let replay = signed(&fixture, NOW_SECS + 30, &body).await;
    assert_eq!(replay.status, 200);
    replies_done(&fixture).await;
    assert_eq!(
        audit_count(&fixture).await,
        1,
        "the replay ran the command again"
    );

    let seen = api.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].path, "/app/getAppAccessToken");
    assert_eq!(
        seen[0].body,
        json!({"appId": "1024", "clientSecret": secret()})
    );
    assert_eq!(seen[1].path, "/v2/groups/G1/messages");
    assert_eq!(seen[1].authorization.as_deref(), Some("QQBot tok-1"));
    assert_eq!(seen[1].body["msg_id"], "ROBOT1.0_m1");
    assert_eq!(seen[1].body["msg_seq"], 1);
    assert!(
        seen[1].body["content"]
            .as_str()
            .unwrap_or_default()
            .contains("M9")
    );
}

#[tokio::test]
async fn forged_stale_and_malformed_callbacks_are_refused() {
    let api = fake_api(json!({})).await;
    let fixture = fixture(&api).await;
    let body = group_whoami("GROUP_AT_MESSAGE_CREATE:e2");
    let ts = NOW_SECS.to_string();
    let other = signing_key("not the bot secret").unwrap();
    let forged_signature = sign_hex(&other, &ts, body.as_bytes());
    let forged = [
        ("x-signature-timestamp", ts.as_str()),
        ("x-signature-ed25519", forged_signature.as_str()),
    ];
    let answer = post(&fixture, ACCOUNT, &forged, body.as_bytes()).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"]["code"], "bad_signature");

    let stale = signed(&fixture, NOW_SECS - 3_600, &body).await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.json()["error"]["code"], "stale");

    let malformed = signed(
        &fixture,
        NOW_SECS,
        r#"{"op":0,"t":"GROUP_AT_MESSAGE_CREATE","d":{}}"#,
    )
    .await;
    assert_eq!(malformed.status, 400);
    let not_json = signed(&fixture, NOW_SECS, "op=0").await;
    assert_eq!(not_json.status, 400);
    replies_done(&fixture).await;
    assert_eq!(audit_count(&fixture).await, 0);
    assert!(api.requests().is_empty());
}
