//! The Standard Webhooks handler through the real router: a signed `/whoami` answered
//! synchronously, a replayed `webhook-id`, key rotation, other event types recorded, forged,
//! stale and malformed callbacks.
//!
//! The `whsec_` secret is registered with `rules::test_secrets` under its variable name.

use std::time::Duration;

use serde_json::json;

use super::super::signature_entry;
use crate::channels::decode_secret;
use crate::http::testing::{Answer, Fixture};
use crate::inbound::handler_testing::{NOW_SECS, audit_count, post, state_with};
use crate::rules::{InboundPlatform, SecretRef};

const ACCOUNT: &str = "crm";
const SECRET_VAR: &str = "QUNFA_TEST_STANDARD_INBOUND_SECRET";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn fixture() -> Fixture {
    crate::rules::test_secrets::set(SECRET_VAR, SECRET);
    let platform = InboundPlatform::Standard {
        secret: SecretRef::new(SECRET_VAR),
        tolerance: Duration::from_secs(300),
    };
    state_with(ACCOUNT, platform).await
}

async fn signed(fixture: &Fixture, id: &str, ts: i64, body: &str, extra: &str) -> Answer {
    let ts = ts.to_string();
    let key = decode_secret(SECRET).expect("a valid secret");
    let signatures = format!(
        "{extra} {}",
        signature_entry(&key, id, &ts, body.as_bytes())
    );
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", signatures.trim()),
        ("content-type", "application/json"),
    ];
    post(fixture, ACCOUNT, &headers, body.as_bytes()).await
}

fn whoami() -> String {
    json!({"type": "message", "timestamp": "2026-11-24T16:00:00Z",
           "data": {"chat": "ops", "user": "u-7", "user_name": "Ada", "text": "/whoami", "message_id": "m-1"}})
    .to_string()
}

#[tokio::test]
async fn a_signed_command_is_answered_and_a_replay_is_not_run_again() {
    let fixture = fixture().await;
    let answer = signed(&fixture, "msg_1", NOW_SECS, &whoami(), "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.json()["replies"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(text.contains("u-7"), "{text}");
    let replay = signed(&fixture, "msg_1", NOW_SECS + 10, &whoami(), "").await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.json(), json!({"replies": []}));
    assert_eq!(audit_count(&fixture).await, 1);
}

#[tokio::test]
async fn any_signature_of_a_rotation_list_is_enough() {
    let fixture = fixture().await;
    let old = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=";
    let answer = signed(&fixture, "msg_2", NOW_SECS, &whoami(), old).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let headers = [
        ("webhook-id", "msg_3"),
        ("webhook-timestamp", "1764000000"),
        ("webhook-signature", old),
    ];
    let forged = post(&fixture, ACCOUNT, &headers, whoami().as_bytes()).await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.json()["error"]["code"], "bad_signature");
}

#[tokio::test]
async fn stale_missing_and_malformed_are_refused() {
    let fixture = fixture().await;
    let stale = signed(&fixture, "msg_4", NOW_SECS - 301, &whoami(), "").await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.json()["error"]["code"], "stale");
    let future = signed(&fixture, "msg_5", NOW_SECS + 301, &whoami(), "").await;
    assert_eq!(future.status, 401);
    let unsigned = post(&fixture, ACCOUNT, &[], whoami().as_bytes()).await;
    assert_eq!(unsigned.status, 401);
    let malformed = signed(
        &fixture,
        "msg_6",
        NOW_SECS,
        r#"{"type":"message","data":{}}"#,
        "",
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(audit_count(&fixture).await, 0);
}

#[tokio::test]
async fn other_event_types_are_recorded_once() {
    let fixture = fixture().await;
    let body =
        json!({"type": "order.paid", "timestamp": "2026-11-24T16:00:00Z", "data": {"order": 7}})
            .to_string();
    for _ in 0..2 {
        let answer = signed(&fixture, "msg_7", NOW_SECS, &body, "").await;
        assert_eq!(answer.json(), json!({"replies": []}));
    }
    let events = crate::inbound::store::recent_platform_events(&fixture.state.db, 10)
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "standard.order.paid");
    assert_eq!(events[0].payload["data"]["order"], 7);
}

/// An opt-out's callback id commits with the opt-out itself: when the write fails, the id
/// is not recorded either, so the platform's retry records the opt-out, once.
#[tokio::test]
async fn an_opt_out_that_could_not_be_written_is_recorded_by_the_retry_once() {
    let fixture = fixture().await;
    let db = &fixture.state.db;
    let stop = json!({"type": "message", "timestamp": "2026-11-24T16:00:00Z",
                      "data": {"chat": "dm", "user": "u-9", "text": "STOP", "message_id": "m-9"}})
    .to_string();
    let reply = |answer: &Answer| answer.json()["replies"][0]["text"].clone();
    sqlx::query("ALTER TABLE opt_outs RENAME TO opt_outs_away")
        .execute(db.writer())
        .await
        .unwrap();
    let failed = signed(&fixture, "msg_stop", NOW_SECS, &stop, "").await;
    assert_eq!(failed.status, 200, "{}", failed.text());
    assert!(
        reply(&failed)
            .as_str()
            .unwrap_or_default()
            .contains("could not be recorded"),
        "{}",
        failed.text()
    );
    sqlx::query("ALTER TABLE opt_outs_away RENAME TO opt_outs")
        .execute(db.writer())
        .await
        .unwrap();

    let retry = signed(&fixture, "msg_stop", NOW_SECS + 5, &stop, "").await;
    assert!(
        reply(&retry)
            .as_str()
            .unwrap_or_default()
            .contains("unsubscribed"),
        "{}",
        retry.text()
    );
    let again = signed(&fixture, "msg_stop", NOW_SECS + 10, &stop, "").await;
    assert_eq!(again.json(), json!({"replies": []}));
    assert!(
        crate::bot::has_opted_out(db, "standard", ACCOUNT, "u-9")
            .await
            .unwrap()
    );
}
