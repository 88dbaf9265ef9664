//! QQ bot: the documented op 13 example and the PyNaCl event vector (`qq-01`, `qq-02` in the
//! shared vectors file), the window, classification, the reply and token requests, and no
//! panic on any bytes.

use proptest::prelude::*;

use super::*;

const SECRET: &str = "DG5g3B4j9X2KOErG";
const EVENT_TS: &str = "1733384468";
const EVENT_BODY: &str = r#"{"op":0,"id":"GROUP_AT_MESSAGE_CREATE:e1","d":{"id":"ROBOT1.0_m1","content":" /whoami","timestamp":"2024-12-05T15:41:08+08:00","group_openid":"G0001","author":{"member_openid":"M0001"}},"t":"GROUP_AT_MESSAGE_CREATE"}"#;
const EVENT_SIGNATURE: &str = "1c36e5663b1386e4542ed601e249c87abfdadb79fadc2de1b2d8faa1823be5ecb4336db3847865b18eeea4077cf1fbf1cf39bde200b950dcb6e80dea4286d504";

fn key() -> SigningKey {
    signing_key(SECRET).unwrap()
}

#[test]
fn qq_01_op13_validation_matches_the_documented_example() {
    let key = key();
    assert_eq!(
        hex::encode(key.verifying_key().as_bytes()),
        "8b28ded5630f9051c205dd04c6ec56ad0b08b8812b2fe30ee9aece0ab41926f3"
    );
    let body = r#"{"d":{"plain_token":"Arq0D5A61EgUu4OxUvOp","event_ts":"1725442341"},"op":13}"#;
    let QqCallback::Validation {
        plain_token,
        event_ts,
    } = parse("qq-ops", body.as_bytes()).unwrap()
    else {
        panic!("op 13")
    };
    assert_eq!(
        validation_answer(&key, &plain_token, &event_ts),
        json!({"plain_token": "Arq0D5A61EgUu4OxUvOp",
               "signature": "87befc99c42c651b3aac0278e71ada338433ae26fcb24307bdc5ad38c1adc2d01bcfcadc0842edac85e85205028a1132afe09280305f13aa6909ffc2d652c706"})
    );
}

#[test]
fn qq_02_event_signature_and_group_message() {
    let key = key();
    assert_eq!(
        sign_hex(&key, EVENT_TS, EVENT_BODY.as_bytes()),
        EVENT_SIGNATURE
    );
    let verifying = key.verifying_key();
    let now = 1_733_384_468;
    assert_eq!(
        verify(
            &verifying,
            EVENT_TS,
            EVENT_SIGNATURE,
            EVENT_BODY.as_bytes(),
            now
        ),
        Ok(())
    );
    let QqCallback::Message {
        event,
        reply,
        dedup_key,
    } = parse("qq-ops", EVENT_BODY.as_bytes()).unwrap()
    else {
        panic!("a group message")
    };
    assert_eq!(event.text, "/whoami");
    assert_eq!(event.chat, "G0001");
    assert_eq!(event.sender, "M0001");
    assert_eq!(event.chat_kind, ChatKind::Group);
    assert_eq!(event.message_id.as_deref(), Some("ROBOT1.0_m1"));
    assert_eq!(dedup_key, "GROUP_AT_MESSAGE_CREATE:e1");
    assert_eq!(
        reply_url("https://api.sgroup.qq.com", &reply),
        "https://api.sgroup.qq.com/v2/groups/G0001/messages"
    );
    assert_eq!(
        reply_body(&reply, &Reply::text("你好"), 2),
        json!({"content": "你好", "msg_type": 0, "msg_id": "ROBOT1.0_m1", "msg_seq": 2})
    );
}

#[test]
fn forged_tampered_and_stale_callbacks_fail() {
    let verifying = key().verifying_key();
    let now = 1_733_384_468;
    let mut body = EVENT_BODY.as_bytes().to_vec();
    body[5] ^= 1;
    assert_eq!(
        verify(&verifying, EVENT_TS, EVENT_SIGNATURE, &body, now),
        Err(QqError::BadSignature)
    );
    let other = signing_key("another secret").unwrap().verifying_key();
    let check = |key: &VerifyingKey, ts: &str, signature: &str, now| {
        verify(key, ts, signature, EVENT_BODY.as_bytes(), now)
    };
    assert_eq!(
        check(&other, EVENT_TS, EVENT_SIGNATURE, now),
        Err(QqError::BadSignature)
    );
    assert_eq!(
        check(&verifying, "1733384469", EVENT_SIGNATURE, now),
        Err(QqError::BadSignature)
    );
    assert_eq!(
        check(&verifying, EVENT_TS, "zz", now),
        Err(QqError::BadSignature)
    );
    assert_eq!(
        check(&verifying, EVENT_TS, EVENT_SIGNATURE, now + 300),
        Ok(())
    );
    assert_eq!(
        check(&verifying, EVENT_TS, EVENT_SIGNATURE, now + 301),
        Err(QqError::Stale { age_secs: 301 })
    );
    assert_eq!(signing_key("").unwrap_err(), QqError::EmptySecret);
}

#[test]
fn the_seed_repeats_the_secret() {
    // A 32-byte secret is the seed itself; a shorter one is cycled and cut.
    let exact = "0123456789abcdef0123456789abcdef";
    assert_eq!(signing_key(exact).unwrap().to_bytes(), *exact.as_bytes());
    assert_eq!(
        signing_key("0123456789abcdef").unwrap().to_bytes(),
        *exact.as_bytes()
    );
    assert_eq!(
        signing_key(&format!("{exact}tail")).unwrap().to_bytes(),
        *exact.as_bytes()
    );
}

#[test]
fn direct_messages_and_other_dispatches() {
    let body = r#"{"op":0,"id":"C2C_MESSAGE_CREATE:x","t":"C2C_MESSAGE_CREATE","d":{"id":"m2","content":"帮助","author":{"user_openid":"U9"}}}"#;
    let QqCallback::Message { event, reply, .. } = parse("qq-ops", body.as_bytes()).unwrap() else {
        panic!("a 1:1 message")
    };
    assert_eq!(
        (event.chat_kind, event.chat.as_str(), event.text.as_str()),
        (ChatKind::Direct, "U9", "帮助")
    );
    assert_eq!(
        reply_url("http://127.0.0.1:1/", &reply),
        "http://127.0.0.1:1/v2/users/U9/messages"
    );
    let added = br#"{"op":0,"id":"GROUP_ADD_ROBOT:y","t":"GROUP_ADD_ROBOT","d":{}}"#;
    assert_eq!(
        parse("qq-ops", added).unwrap(),
        QqCallback::Other {
            kind: "GROUP_ADD_ROBOT".into(),
            dedup_key: Some("GROUP_ADD_ROBOT:y".into())
        }
    );
    let no_author = br#"{"op":0,"t":"GROUP_AT_MESSAGE_CREATE","d":{"id":"m","group_openid":"G"}}"#;
    assert!(matches!(
        parse("qq-ops", no_author),
        Err(QqError::Malformed(_))
    ));
    assert!(matches!(
        parse("qq-ops", br#"{"op":13,"d":{}}"#),
        Err(QqError::Malformed(_))
    ));
}

#[test]
fn the_token_host_follows_base_url() {
    assert_eq!(token_url(crate::rules::QQ_BASE_URL), TOKEN_URL);
    assert_eq!(
        token_url("http://127.0.0.1:5/"),
        "http://127.0.0.1:5/app/getAppAccessToken"
    );
    assert_eq!(
        token_request("1024", "s"),
        json!({"appId": "1024", "clientSecret": "s"})
    );
    assert_eq!(
        parse_token(br#"{"access_token":"T","expires_in":"7200"}"#),
        Ok(AccessToken {
            token: "T".into(),
            expires_in_secs: 7200
        })
    );
    assert_eq!(
        parse_token(br#"{"access_token":"T","expires_in":60}"#).map(|t| t.expires_in_secs),
        Ok(60)
    );
    let refused = parse_token(br#"{"code":100016,"message":"invalid appid or secret"}"#);
    assert!(matches!(refused, Err(QqError::Malformed(text)) if text.contains("100016")));
}

#[test]
fn leading_mentions_are_stripped() {
    assert_eq!(strip_mention(" <@!123> /help "), "/help");
    assert_eq!(strip_mention(" 群发 预览 42"), "群发 预览 42");
}

proptest! {
    #[test]
    fn parse_and_verify_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512),
                                    ts in ".{0,20}", signature in "[0-9a-f]{0,130}", now in any::<i64>()) {
        let _ = parse("qq-ops", &body);
        let _ = parse_token(&body);
        let _ = verify(&key().verifying_key(), &ts, &signature, &body, now);
    }

    #[test]
    fn any_secret_gives_a_working_key(secret in ".{1,80}", body in ".{0,100}") {
        let key = signing_key(&secret).unwrap();
        let signature = sign_hex(&key, "100", body.as_bytes());
        prop_assert_eq!(verify(&key.verifying_key(), "100", &signature, body.as_bytes(), 100), Ok(()));
    }

    #[test]
    fn json_shaped_payloads_never_panic(op in -2i64..20, t in "[A-Z_2]{0,30}", value in any::<Option<String>>()) {
        let body = serde_json::to_vec(&json!({"op": op, "t": t, "id": value,
            "d": {"id": value, "content": value, "group_openid": value, "plain_token": value,
                  "event_ts": value, "author": {"member_openid": value, "user_openid": value}}})).unwrap();
        let _ = parse("qq-ops", &body);
    }
}
