//! Standard Webhooks: the spec's own vector and a computed one (`standard_webhooks-01/02` in
//! the shared vectors file), rotation, tolerance, the payload, and no panic on any bytes.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::channels::decode_secret;

const FIVE_MINUTES: Duration = Duration::from_secs(300);

struct Vector {
    secret: &'static str,
    id: &'static str,
    timestamp: &'static str,
    body: &'static str,
    signature: &'static str,
}

const SPEC: Vector = Vector {
    secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
    timestamp: "1649367553",
    body: r#"{"email":"test@example.com","username":"test_user"}"#,
    signature: "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
};

const COMPUTED: Vector = Vector {
    secret: "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    id: "msg_0001",
    timestamp: "1700000000",
    body: r#"{"type":"campaign.message.sent","timestamp":"2023-11-14T22:13:20Z","data":{"campaign_id":"c_42","recipient":"+8613800000000"}}"#,
    signature: "v1,06uxrNhvdUacqtwphD/y720zE1d5VdwYyGstjjdbxlw=",
};

fn check(vector: &Vector, signatures: &str, now: i64) -> Result<(), StandardError> {
    let key = decode_secret(vector.secret).unwrap();
    verify(
        &key,
        vector.id,
        vector.timestamp,
        signatures,
        vector.body.as_bytes(),
        now,
        FIVE_MINUTES,
    )
}

#[test]
fn standard_webhooks_01_and_02_vectors() {
    for vector in [SPEC, COMPUTED] {
        let key = decode_secret(vector.secret).unwrap();
        assert_eq!(
            signature_entry(&key, vector.id, vector.timestamp, vector.body.as_bytes()),
            vector.signature
        );
        let now = vector.timestamp.parse().unwrap();
        assert_eq!(check(&vector, vector.signature, now), Ok(()));
    }
    assert_eq!(
        hex::encode(decode_secret(COMPUTED.secret).unwrap()),
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    );
}

#[test]
fn any_v1_entry_may_match_during_a_rotation() {
    let now = 1_649_367_553;
    let old = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=";
    let asymmetric = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYBWBvJ1sPDjbsaXQ/2iYA6kqRNXTAGsKCA==";
    assert_eq!(
        check(
            &SPEC,
            &format!("{old} {asymmetric} {}", SPEC.signature),
            now
        ),
        Ok(())
    );
    assert_eq!(
        check(&SPEC, &format!("{old} {asymmetric}"), now),
        Err(StandardError::BadSignature)
    );
    // The right digest under another version, or without one, does not count.
    let digest = SPEC.signature.trim_start_matches("v1,");
    assert_eq!(
        check(&SPEC, &format!("v2,{digest}"), now),
        Err(StandardError::BadSignature)
    );
    assert_eq!(check(&SPEC, digest, now), Err(StandardError::BadSignature));
    assert_eq!(check(&SPEC, "", now), Err(StandardError::BadSignature));
}

#[test]
fn id_timestamp_and_body_are_all_signed() {
    let key = decode_secret(SPEC.secret).unwrap();
    let now = 1_649_367_553;
    let attempt = |id: &str, ts: &str, body: &str| {
        verify(
            &key,
            id,
            ts,
            SPEC.signature,
            body.as_bytes(),
            now,
            FIVE_MINUTES,
        )
    };
    assert_eq!(
        attempt("msg_other", SPEC.timestamp, SPEC.body),
        Err(StandardError::BadSignature)
    );
    assert_eq!(
        attempt(SPEC.id, "1649367554", SPEC.body),
        Err(StandardError::BadSignature)
    );
    assert_eq!(
        attempt(SPEC.id, SPEC.timestamp, "{}"),
        Err(StandardError::BadSignature)
    );
}

#[test]
fn the_tolerance_is_the_account_s_in_both_directions() {
    let key = decode_secret(SPEC.secret).unwrap();
    let sent = 1_649_367_553;
    let at = |now, tolerance| {
        verify(
            &key,
            SPEC.id,
            SPEC.timestamp,
            SPEC.signature,
            SPEC.body.as_bytes(),
            now,
            tolerance,
        )
    };
    assert_eq!(at(sent + 300, FIVE_MINUTES), Ok(()));
    assert_eq!(at(sent - 300, FIVE_MINUTES), Ok(()));
    assert_eq!(
        at(sent + 301, FIVE_MINUTES),
        Err(StandardError::Stale {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
    assert_eq!(
        at(sent - 31, Duration::from_secs(30)),
        Err(StandardError::Stale {
            age_secs: -31,
            tolerance_secs: 30
        })
    );
}

#[test]
fn a_message_becomes_a_chat_event() {
    let body = json!({"type": "message", "timestamp": "2026-11-25T12:00:00Z",
        "data": {"chat": "ops-room", "user": "u-7", "user_name": "小王", "text": " /whoami \n", "message_id": "m-1"}});
    let parsed = parse("crm", "msg_1", &serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        parsed,
        StandardCallback::Message(ChatEvent {
            platform: "standard".into(),
            account: "crm".into(),
            chat: "ops-room".into(),
            chat_kind: ChatKind::Group,
            sender: "u-7".into(),
            sender_name: Some("小王".into()),
            text: "/whoami".into(),
            message_id: Some("m-1".into()),
        })
    );
    let bare = br#"{"type":"message","data":{"chat":"c","user":"u","text":"hi"}}"#;
    let StandardCallback::Message(event) = parse("crm", "msg_2", bare).unwrap() else {
        panic!("a message")
    };
    assert_eq!(event.message_id.as_deref(), Some("msg_2"));
}

#[test]
fn other_types_are_kept_and_bad_messages_refused() {
    let StandardCallback::Other(payload) = parse("crm", "m", COMPUTED.body.as_bytes()).unwrap()
    else {
        panic!("a typed event")
    };
    assert_eq!(payload.kind, "campaign.message.sent");
    assert_eq!(payload.data["campaign_id"], "c_42");
    for bad in [
        &br#"{"type":"message","data":{"chat":"c","text":"hi"}}"#[..],
        br#"{"type":"message","data":{"chat":"c","user":7,"text":"hi"}}"#,
        br#"{"data":{}}"#,
        b"not json",
    ] {
        assert!(matches!(
            parse("crm", "m", bad),
            Err(StandardError::Malformed(_))
        ));
    }
}

#[test]
fn the_answer_is_a_list_of_replies() {
    let answer = Answer {
        replies: vec![Reply::text("你是 u-7")],
    };
    assert_eq!(
        serde_json::to_value(&answer).unwrap(),
        json!({"replies": [{"text": "你是 u-7"}]})
    );
}

proptest! {
    #[test]
    fn parse_and_verify_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512),
                                    ts in ".{0,20}", signatures in ".{0,200}", now in any::<i64>(),
                                    tolerance in any::<u64>()) {
        let _ = parse("crm", "m", &body);
        let _ = verify(b"key", "m", &ts, &signatures, &body, now, Duration::from_secs(tolerance));
    }

    #[test]
    fn whatever_is_signed_verifies(key in proptest::collection::vec(any::<u8>(), 1..64),
                                   body in proptest::collection::vec(any::<u8>(), 0..256),
                                   sent in 0i64..4_000_000_000, noise in "[A-Za-z0-9+/=,]{0,40}") {
        let ts = sent.to_string();
        let entry = signature_entry(&key, "msg_x", &ts, &body);
        let header = format!("v1,{noise} {entry}");
        prop_assert_eq!(verify(&key, "msg_x", &ts, &header, &body, sent, FIVE_MINUTES), Ok(()));
    }
}
