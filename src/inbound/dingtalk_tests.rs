//! DingTalk signatures against the published vectors (`vectors.json`, dingtalk-01..03), the
//! window, payload parsing, and byte soup that must never panic.

use proptest::prelude::*;
use serde_json::json;

use super::*;

const APP_SECRET: &str = "appSecretForRobot_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ";

#[test]
fn vector_dingtalk_02_inbound_header_sign() {
    assert_eq!(
        sign(APP_SECRET.as_bytes(), "1700000000456"),
        "3eZXcQssMC0S3cnJAxdvapFWiHwj6tgIawoCci9RYnw="
    );
    let now = 1_700_000_000_456 + 1000;
    assert_eq!(
        verify(
            APP_SECRET.as_bytes(),
            Some("1700000000456"),
            Some("3eZXcQssMC0S3cnJAxdvapFWiHwj6tgIawoCci9RYnw="),
            now
        ),
        Ok(())
    );
}

/// The outbound custom-robot sign is the same HMAC (then URL-encoded by the channel).
#[test]
fn vectors_dingtalk_01_and_03_custom_robot_sign() {
    // "SEC" and 63 zeros, as in the vector (protocols.md rounds it to 64).
    let secret = format!("SEC{}", "0".repeat(63));
    assert_eq!(
        sign(secret.as_bytes(), "1700000000123"),
        "DAvf3Gum1MDI0o8Hq8O8evdgwLHlrdHtWnU0sEP7V1M="
    );
    assert_eq!(
        sign(b"this is secret", "1577262236757"),
        "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="
    );
}

#[test]
fn the_window_is_one_hour_either_way_in_milliseconds() {
    let ts = 1_700_000_000_456_i64;
    let signature = sign(APP_SECRET.as_bytes(), &ts.to_string());
    let check = |now: i64| {
        verify(
            APP_SECRET.as_bytes(),
            Some(&ts.to_string()),
            Some(&signature),
            now,
        )
    };
    assert_eq!(check(ts + WINDOW_MS), Ok(()));
    assert_eq!(check(ts - WINDOW_MS), Ok(()));
    assert_eq!(check(ts + WINDOW_MS + 1), Err(DingtalkError::Stale));
    assert_eq!(check(ts - WINDOW_MS - 1), Err(DingtalkError::Stale));
}

#[test]
fn forged_missing_and_odd_headers_are_refused() {
    let now = 1_700_000_000_456;
    let good = sign(APP_SECRET.as_bytes(), "1700000000456");
    let wrong_secret = sign(b"another secret", "1700000000456");
    let secret = APP_SECRET.as_bytes();
    assert_eq!(
        verify(secret, Some("1700000000456"), Some(&wrong_secret), now),
        Err(DingtalkError::BadSignature)
    );
    // The signature covers the timestamp: moving it breaks the signature.
    assert_eq!(
        verify(secret, Some("1700000000457"), Some(&good), now),
        Err(DingtalkError::BadSignature)
    );
    assert_eq!(
        verify(secret, None, Some(&good), now),
        Err(DingtalkError::MissingHeaders)
    );
    assert_eq!(
        verify(secret, Some("1700000000456"), None, now),
        Err(DingtalkError::MissingHeaders)
    );
    for odd in ["", "+1700000000456", "-5", "1.7e12", "abc"] {
        assert_eq!(
            verify(secret, Some(odd), Some(&good), now),
            Err(DingtalkError::BadTimestamp),
            "{odd:?}"
        );
    }
    // URL-encoded signatures are the outbound form, never the header's.
    let encoded = good.replace('=', "%3D");
    assert_eq!(
        verify(secret, Some("1700000000456"), Some(&encoded), now),
        Err(DingtalkError::BadSignature)
    );
}

fn group_message() -> serde_json::Value {
    json!({
        "conversationId": "cid6KeBBLoveMJOGXoYKF5x7EeiodoA==",
        "atUsers": [{"dingtalkId": "$:LWCP_v1:$bot"}],
        "chatbotCorpId": "dinge8a565a4a0d8a2a1",
        "chatbotUserId": "$:LWCP_v1:$bot",
        "msgId": "msg0A6K+8BD/wUtTTPPwIfnzw==",
        "senderNick": "杨xx",
        "isAdmin": true,
        "senderStaffId": "user123",
        "sessionWebhookExpiredTime": 1_613_635_652_738_i64,
        "createAt": 1_613_630_252_678_i64,
        "senderCorpId": "dinge8a565a4a0d8a2a1",
        "conversationType": "2",
        "senderId": "$:LWCP_v1:$sender",
        "conversationTitle": "机器人测试-TEST",
        "isInAtList": true,
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=abc",
        "text": {"content": " /whoami"},
        "msgtype": "text",
        "robotCode": "dingrobot"
    })
}

#[test]
fn a_group_text_message_becomes_a_chat_event() {
    let body = group_message().to_string();
    let incoming = parse(body.as_bytes(), "ding-ops").unwrap();
    assert_eq!(incoming.msg_id(), "msg0A6K+8BD/wUtTTPPwIfnzw==");
    let Incoming::Message { event, mention } = incoming else {
        panic!("expected a message");
    };
    assert_eq!(event.platform, "dingtalk");
    assert_eq!(event.account, "ding-ops");
    assert_eq!(event.chat, "cid6KeBBLoveMJOGXoYKF5x7EeiodoA==");
    assert_eq!(event.chat_kind, ChatKind::Group);
    assert_eq!(event.sender, "user123");
    assert_eq!(event.sender_name.as_deref(), Some("杨xx"));
    assert_eq!(event.text, "/whoami");
    assert_eq!(mention.as_deref(), Some("user123"));
}

#[test]
fn a_direct_message_from_an_external_user_falls_back_to_the_sender_id() {
    let mut message = group_message();
    message["conversationType"] = json!("1");
    message.as_object_mut().unwrap().remove("senderStaffId");
    let Incoming::Message { event, mention } = parse(message.to_string().as_bytes(), "a").unwrap()
    else {
        panic!("expected a message");
    };
    assert_eq!(event.chat_kind, ChatKind::Direct);
    assert_eq!(event.sender, "$:LWCP_v1:$sender");
    assert_eq!(mention, None);
}

#[test]
fn non_text_messages_are_recognised_but_not_run() {
    let mut message = group_message();
    message["msgtype"] = json!("picture");
    message.as_object_mut().unwrap().remove("text");
    assert_eq!(
        parse(message.to_string().as_bytes(), "a").unwrap(),
        Incoming::Unsupported {
            msg_id: "msg0A6K+8BD/wUtTTPPwIfnzw==".into(),
            msgtype: "picture".into()
        }
    );
}

#[test]
fn malformed_payloads_say_what_is_wrong() {
    for body in [
        "".to_string(),
        "{}".to_string(),
        "[1]".to_string(),
        json!({"msgId": "", "conversationId": "c", "conversationType": "2", "msgtype": "text"})
            .to_string(),
        json!({"msgId": "m", "conversationId": "c", "conversationType": "3", "msgtype": "text", "senderStaffId": "u"})
            .to_string(),
        json!({"msgId": "m", "conversationId": "c", "conversationType": "2", "msgtype": "text"})
            .to_string(),
    ] {
        assert!(
            matches!(parse(body.as_bytes(), "a"), Err(DingtalkError::Malformed(_))),
            "{body}"
        );
    }
}

#[test]
fn the_reply_mentions_the_sender_like_the_official_sdk() {
    assert_eq!(
        serde_json::to_value(reply_body("你好", Some("user123"))).unwrap(),
        json!({"msgtype": "text", "text": {"content": "你好"}, "at": {"atUserIds": ["user123"], "isAtAll": false}})
    );
    let unmentioned = serde_json::to_value(reply_body("hi", None)).unwrap();
    assert_eq!(unmentioned["at"]["atUserIds"], json!([]));
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes, "a");
    }

    #[test]
    fn verify_never_panics(ts in ".{0,24}", signature in ".{0,64}", now in any::<i64>()) {
        let _ = verify(b"secret", Some(&ts), Some(&signature), now);
    }

    #[test]
    fn any_signed_timestamp_inside_the_window_verifies(ts in 0i64..4_000_000_000_000, skew in -WINDOW_MS..=WINDOW_MS) {
        let signature = sign(b"secret", &ts.to_string());
        prop_assert_eq!(verify(b"secret", Some(&ts.to_string()), Some(&signature), ts + skew), Ok(()));
    }
}
