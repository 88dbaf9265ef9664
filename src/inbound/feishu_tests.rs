//! Feishu envelopes against the published vectors (`vectors.json`, feishu-01..03), token and
//! signature checks, mention stripping, and byte soup that must never panic.

use proptest::prelude::*;
use serde_json::json;

use super::*;

const VEC02_KEY: &str = "feishuEncryptKey";
const VEC02_PLAINTEXT: &str = r#"{"schema":"2.0","header":{"event_id":"5e3702a84e847582be8db7fb73283c02","event_type":"im.message.receive_v1","create_time":"1700000000000","token":"verifTokenXYZ","app_id":"cli_a0000000000000000","tenant_key":"2ca1d211f64f6438"},"event":{"sender":{"sender_id":{"union_id":"on_8ed6aa67826108097d9ee143816345","user_id":"e33ggbyz","open_id":"ou_84aad35d084aa403a838cf73ee18467"},"sender_type":"user","tenant_key":"2ca1d211f64f6438"},"message":{"message_id":"om_5ce6d572455d361153b7cb51da133945","create_time":"1700000000000","chat_id":"oc_5ce6d572455d361153b7xx51da133945","chat_type":"group","message_type":"text","content":"{\"text\":\"@_user_1 /campaign status\"}","mentions":[{"key":"@_user_1","id":{"union_id":"on_bot","user_id":"","open_id":"ou_bot_open_id"},"name":"CampaignBot","tenant_key":"2ca1d211f64f6438"}]}}}"#;
const VEC02_ENCRYPT: &str = "AAECAwQFBgcICQoLDA0OD11A79SvbWnvqK9IiRJ1ld00p90/OkXrk24R0nDlt8NKWSQo7h5no487RVrFy44kl8eHkSeqJlLJbKF/ACexPkt8PNVAWNpRl9KUjfaZc5JylHyO0fxgTv8p4wzLw/YjDMh+QC5mvrZfBbfCECYoMEz/4lm/WNRPDpQ1ttFBvmO+eB57zHDdJ6phhPy4SCWdqC+ex3vD2jkcjctJaI/nBkDxTuiI5Kbr2Ak8OjzaBkkC/dC9pLC9btixZ5nL8UxOZzMgrEY3glKBmUFijocwwOUtwHOEkGw8zpf7HZcs0TZ0Zt+r0fNFrVfRn5qX90ZaMeWBfl1bi6d8agsNs+I4Hqn7KXLjKuOwJtGMMAfFNx/v/kYkynkVwc8RxI//20+FKyTPCh5lz+UxFkD15PMF58uxmv76rnXJZ/Qf1iOIGUQ/gDmn44iflKOzlduXXqlWhzYXGjw6esA7cjsMRwvXCkPuqp5ZgyZBcKKrA5Z9zSYpXaq5vsah8bOJOG/IOoYsTx5BY+tUxn+lYhnndNSYseMbIn8QVT7CEFPU7qKWto60KV1PgPN9+I4WFuWOyoxLQeqw6rqG40mOiDvFcbnyHHIUpUbCnyWByr+XZTw2X0Ws3khz4pi07WXvrIxWiZGeeLkicAcufkpXMyM8iVl5tWeDWdWSl/q1XMTcQdqzjB12sGlt5b5bh1MfxGNXd4eADtJYdolxD17WsifSoxp5psBKsdOE6nXFy9igihmQxY2t1K0+Lc3OF6N6quRSsh1KIpd6hezNc1AWWEq5WOECViDxMfxr0jvuKw9ATg7p7x9/ktzQCLGsPEjd+IX4yCYm6garHq5CUelxC04kiSUW+9ZHn6ntLIYK7vM+7Zd3i890UByI6KN+5uqYBNWNyrzSFkHmPinHUeJk/yQaYg8VeyH2HxSNlBRcPTigNI75Pr/59xPfFPKVp3Ugkvh/jixQPkSi583/RsuGBQ1PmDITnHpweNlW70UI40M/KvnCOfeRVqs0xuCLyy69CN7F60ln8jc43Xqf/CMN+U7N9YQPoqa8olB6Fmj97Qc+V+X9MQjEabsWzh2VROMSaWNs4e+MmAL2xg+Yq26SmLdxibhvaGA=";
const VEC02_SIGNATURE: &str = "901df1da267e0ba4bcef18af95998eba144513b3a99f9d142c97067e76599b81";
const VEC02_NOW_MS: i64 = 1_700_000_000_000;

fn vec02_body() -> String {
    json!({"encrypt": VEC02_ENCRYPT}).to_string()
}

fn vec02_headers() -> SignedHeaders<'static> {
    SignedHeaders {
        timestamp: "1700000000",
        nonce: "abc123nonce",
        signature: VEC02_SIGNATURE,
    }
}

#[test]
fn vector_feishu_01_official_decrypt() {
    assert_eq!(
        hex::encode(aes_key("test key")),
        "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
    );
    assert_eq!(
        decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap(),
        b"hello world"
    );
}

#[test]
fn vector_feishu_02_encrypt_signature_and_parse() {
    let iv: [u8; 16] = std::array::from_fn(|i| i as u8);
    assert_eq!(
        encrypt(VEC02_KEY, iv, VEC02_PLAINTEXT.as_bytes()),
        VEC02_ENCRYPT
    );
    let body = vec02_body();
    assert_eq!(
        signature("1700000000", "abc123nonce", VEC02_KEY, body.as_bytes()),
        VEC02_SIGNATURE
    );
    assert_eq!(
        verify_signature(vec02_headers(), VEC02_KEY, body.as_bytes(), VEC02_NOW_MS),
        Ok(())
    );
    let event = open(body.as_bytes(), Some(VEC02_KEY)).unwrap();
    let Incoming::Message { event_id, event } =
        classify(&event, "lark", "verifTokenXYZ", false).unwrap()
    else {
        panic!("expected a message");
    };
    assert_eq!(event_id, "5e3702a84e847582be8db7fb73283c02");
    assert_eq!(event.platform, "feishu");
    assert_eq!(event.account, "lark");
    assert_eq!(event.chat, "oc_5ce6d572455d361153b7xx51da133945");
    assert_eq!(event.chat_kind, ChatKind::Group);
    assert_eq!(event.sender, "ou_84aad35d084aa403a838cf73ee18467");
    assert_eq!(event.text, "/campaign status");
    assert_eq!(
        event.message_id.as_deref(),
        Some("om_5ce6d572455d361153b7cb51da133945")
    );
}

#[test]
fn vector_feishu_03_url_verification() {
    let body =
        r#"{"challenge":"ajls384kdjx98XX","token":"verifTokenXYZ","type":"url_verification"}"#;
    let event = open(body.as_bytes(), None).unwrap();
    assert_eq!(
        classify(&event, "lark", "verifTokenXYZ", false).unwrap(),
        Incoming::Challenge("ajls384kdjx98XX".into())
    );
    assert_eq!(
        classify(&event, "lark", "anotherToken", false),
        Err(FeishuError::BadToken)
    );
    // Encrypted, the same challenge comes out of the envelope.
    let iv = [7u8; 16];
    let sealed = json!({"encrypt": encrypt("k", iv, body.as_bytes())}).to_string();
    let event = open(sealed.as_bytes(), Some("k")).unwrap();
    assert_eq!(
        classify(&event, "lark", "verifTokenXYZ", false).unwrap(),
        Incoming::Challenge("ajls384kdjx98XX".into())
    );
}

#[test]
fn a_changed_body_key_nonce_or_timestamp_breaks_the_signature() {
    let body = vec02_body();
    let tampered = body.replace("AAEC", "AAED");
    let check = |headers: SignedHeaders<'_>, key: &str, body: &str| {
        verify_signature(headers, key, body.as_bytes(), VEC02_NOW_MS)
    };
    assert_eq!(
        check(vec02_headers(), VEC02_KEY, &tampered),
        Err(FeishuError::BadSignature)
    );
    assert_eq!(
        check(vec02_headers(), "otherKey", &body),
        Err(FeishuError::BadSignature)
    );
    let other_nonce = SignedHeaders {
        nonce: "abc123noncf",
        ..vec02_headers()
    };
    assert_eq!(
        check(other_nonce, VEC02_KEY, &body),
        Err(FeishuError::BadSignature)
    );
    let other_time = SignedHeaders {
        timestamp: "1700000001",
        ..vec02_headers()
    };
    assert_eq!(
        check(other_time, VEC02_KEY, &body),
        Err(FeishuError::BadSignature)
    );
    // Re-serialised JSON (spaces) is a different body: only the raw bytes count.
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&body).unwrap()).unwrap();
    assert_eq!(
        check(vec02_headers(), VEC02_KEY, &pretty),
        Err(FeishuError::BadSignature)
    );
}

#[test]
fn the_window_is_a_day_in_seconds() {
    let body = vec02_body();
    let at = |now_ms: i64| verify_signature(vec02_headers(), VEC02_KEY, body.as_bytes(), now_ms);
    assert_eq!(at(VEC02_NOW_MS + WINDOW_SECS * 1000), Ok(()));
    assert_eq!(at(VEC02_NOW_MS - WINDOW_SECS * 1000), Ok(()));
    assert_eq!(
        at(VEC02_NOW_MS + (WINDOW_SECS + 1) * 1000),
        Err(FeishuError::Stale)
    );
    assert_eq!(
        at(VEC02_NOW_MS - (WINDOW_SECS + 1) * 1000),
        Err(FeishuError::Stale)
    );
}

#[test]
fn encryption_and_key_mismatches_are_explained() {
    assert!(matches!(
        open(vec02_body().as_bytes(), None),
        Err(FeishuError::Malformed(_))
    ));
    assert!(matches!(
        open(vec02_body().as_bytes(), Some("wrong key")),
        Err(FeishuError::Decrypt(_)) | Err(FeishuError::Malformed(_))
    ));
    assert!(matches!(
        decrypt("k", "not base64!"),
        Err(FeishuError::Decrypt(_))
    ));
    assert!(matches!(decrypt("k", "AAAA"), Err(FeishuError::Decrypt(_))));
    assert!(matches!(
        open(b"not json", None),
        Err(FeishuError::Malformed(_))
    ));
    assert!(matches!(
        open(br#"{"encrypt": 5}"#, Some("k")),
        Err(FeishuError::Malformed(_))
    ));
}

fn v2_event(event_type: &str, event: Value) -> Value {
    json!({
        "schema": "2.0",
        "header": {"event_id": "ev-1", "event_type": event_type, "create_time": "1700000000000",
                   "token": "tok", "app_id": "cli_x", "tenant_key": "t"},
        "event": event,
    })
}

#[test]
fn read_receipts_become_typed_events() {
    let event = v2_event(
        "im.message.message_read_v1",
        json!({"reader": {"reader_id": {"open_id": "ou_r"}, "read_time": "1700000000123", "tenant_key": "t"},
               "message_id_list": ["om_1", "om_2"]}),
    );
    let Incoming::MessageRead { event_id, record } =
        classify(&event, "lark", "tok", false).unwrap()
    else {
        panic!("expected a read receipt");
    };
    assert_eq!(event_id, "ev-1");
    assert_eq!(record["message_ids"], json!(["om_1", "om_2"]));
    assert_eq!(record["reader"]["reader_id"]["open_id"], "ou_r");
}

#[test]
fn v2_tokens_live_in_the_header_and_are_checked() {
    let event = v2_event("im.chat.updated_v1", json!({}));
    assert_eq!(
        classify(&event, "lark", "tok", false).unwrap(),
        Incoming::Ignored {
            event_id: "ev-1".into(),
            what: "im.chat.updated_v1".into()
        }
    );
    assert_eq!(
        classify(&event, "lark", "tok2", false),
        Err(FeishuError::BadToken)
    );
    let mut top_level_only = event.clone();
    top_level_only["token"] = json!("tok");
    top_level_only["header"]["token"] = json!("forged");
    assert_eq!(
        classify(&top_level_only, "lark", "tok", false),
        Err(FeishuError::BadToken)
    );
    let v1 = json!({"uuid": "u", "token": "tok", "type": "event_callback", "event": {}});
    assert!(matches!(
        classify(&v1, "lark", "tok", false),
        Err(FeishuError::Malformed(_))
    ));
}

#[test]
fn a_missing_token_is_accepted_only_on_signed_events_never_on_challenges() {
    let mut event = v2_event("im.chat.updated_v1", json!({}));
    event["header"].as_object_mut().unwrap().remove("token");
    assert_eq!(
        classify(&event, "lark", "tok", false),
        Err(FeishuError::BadToken)
    );
    assert!(matches!(
        classify(&event, "lark", "tok", true),
        Ok(Incoming::Ignored { .. })
    ));
    let challenge = json!({"challenge": "c", "type": "url_verification"});
    assert_eq!(
        classify(&challenge, "lark", "tok", true),
        Err(FeishuError::BadToken)
    );
}

#[test]
fn direct_and_non_text_messages() {
    let message = |chat_type: &str, message_type: &str, content: &str| {
        v2_event(
            "im.message.receive_v1",
            json!({"sender": {"sender_id": {"open_id": "ou_s"}, "sender_type": "user"},
                   "message": {"message_id": "om_1", "chat_id": "oc_1", "chat_type": chat_type,
                               "message_type": message_type, "content": content}}),
        )
    };
    let direct = message("p2p", "text", r#"{"text":" /whoami "}"#);
    let Incoming::Message { event, .. } = classify(&direct, "lark", "tok", false).unwrap() else {
        panic!("expected a message");
    };
    assert_eq!(event.chat_kind, ChatKind::Direct);
    assert_eq!(event.text, "/whoami");
    let image = message("group", "image", r#"{"image_key":"img_1"}"#);
    assert!(matches!(
        classify(&image, "lark", "tok", false).unwrap(),
        Incoming::Ignored { .. }
    ));
    let broken = message("group", "text", "not json");
    assert!(matches!(
        classify(&broken, "lark", "tok", false),
        Err(FeishuError::Malformed(_))
    ));
}

#[test]
fn leading_mentions_go_and_later_ones_get_names() {
    let mentions = [
        json!({"key": "@_user_1", "name": "CampaignBot"}),
        json!({"key": "@_user_10", "name": "Tom"}),
        json!({"key": "@_user_2", "name": "李雷"}),
    ];
    assert_eq!(strip_mentions("@_user_1 /whoami", &mentions), "/whoami");
    assert_eq!(
        strip_mentions(" @_user_1 @_user_10  /help send-test ", &mentions),
        "/help send-test"
    );
    assert_eq!(
        strip_mentions("@_user_1 /send-test @_user_2 hi @_user_10", &mentions),
        "/send-test @李雷 hi @Tom"
    );
    assert_eq!(strip_mentions("/whoami", &[]), "/whoami");
    assert_eq!(strip_mentions("@_user_1", &mentions), "");
}

proptest! {
    #[test]
    fn open_and_classify_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(event) = open(&bytes, Some("k")) {
            let _ = classify(&event, "a", "tok", false);
        }
    }

    #[test]
    fn decrypt_never_panics(text in "[A-Za-z0-9+/=]{0,200}") {
        let _ = decrypt("k", &text);
    }

    #[test]
    fn encrypt_then_decrypt_round_trips(plain in proptest::collection::vec(any::<u8>(), 0..300), iv in any::<[u8; 16]>(), key in ".{0,40}") {
        prop_assert_eq!(decrypt(&key, &encrypt(&key, iv, &plain)).unwrap(), plain);
    }

    #[test]
    fn strip_mentions_never_panics(text in ".{0,80}", key in ".{0,12}", name in ".{0,12}") {
        let _ = strip_mentions(&text, &[json!({"key": key, "name": name})]);
    }

    #[test]
    fn verify_signature_never_panics(ts in ".{0,20}", nonce in ".{0,20}", sig in ".{0,70}", now in any::<i64>()) {
        let headers = SignedHeaders { timestamp: &ts, nonce: &nonce, signature: &sig };
        let _ = verify_signature(headers, "k", b"{}", now);
    }
}
