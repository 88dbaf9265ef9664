//! The intelligent robot: vector wecom-07 end to end (JSON envelope → signature → decryption
//! → group ChatEvent with the mention stripped), 1:1 chats, card clicks, and no panics.

use proptest::prelude::*;

use super::*;
use crate::inbound::crypto::{CryptoError, MsgCrypt};
use crate::inbound::wecom::{SignedQuery, open_payload};
use crate::inbound::wx::query_params;

const OWN_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const VECTOR_BODY: &str = "{\"encrypt\":\"8Q6sFaw1Cb9qj7RuhNb60lizb/JEu0WtU2VC6ufCpd6HNgaU6ffyMCz/V2GMom7JnZLi6MT7dhH4Bfxl5GHlAOTah0H2JeKVFKHv9Tz8WgOmg6Z2H2ZYifZ56ZHV9iUQQxJzWtlZdNtdmkLrxeXMl5hxKuPiFWyyYfnutYX1BevCKo9SKZ9H4ofywFmUeRdooeXThX5cfttHQ35PiQupmCK5maZHsi3mIqtlKuPvallqEl9JcQ1HJwqliM/TrVb12ZQ6vkcDCA+lHv5o62AMZOZC0SwYgQ8krcEOJXVA55LsBzpl9BGmZrDLB1wL2rRm1sVGlDT2ynEi2cX5oCXOG/DLB6aKY/gJwd0/098IsboVJyoKtDEeeKRtjBanygYVBb1OuUU/DDuiYVW6316QmISOaTqL3slmoNaTLsc91CE=\"}";

fn robot() -> MsgCrypt {
    match MsgCrypt::new("botToken123", OWN_KEY, "") {
        Ok(crypt) => crypt,
        Err(error) => panic!("{error}"),
    }
}

fn receive(
    crypt: &MsgCrypt,
    query: &str,
    body: &str,
    now_ms: i64,
) -> Result<AibotCallback, WecomError> {
    let signed = SignedQuery::from_params(&query_params(Some(query)))?;
    let encrypt = envelope_encrypt(body.as_bytes())?;
    let json = open_payload(crypt, &signed, &encrypt, now_ms)?;
    parse_callback(&json, "robot")
}

#[test]
fn wecom_07_group_mention_becomes_a_group_chat_event() {
    let query = "msg_signature=2075b353101fac71e959c7e4979edbd814eb772c&timestamp=1700000002&nonce=1372623149";
    let received = receive(&robot(), query, VECTOR_BODY, 1_700_000_002_000);
    let expected = AibotMessage {
        event: ChatEvent {
            platform: "wecom_aibot".to_string(),
            account: "robot".to_string(),
            chat: "wrkSFfCgAAxxxx".to_string(),
            chat_kind: ChatKind::Group,
            sender: "zhangsan".to_string(),
            sender_name: None,
            text: "/campaign status".to_string(),
            message_id: Some("CAIQ16HMjQYY\\/NGagIOAgAMgq4KM0AI=".to_string()),
        },
        response_url: Some(
            "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RESPONSECODE"
                .to_string(),
        ),
    };
    assert_eq!(received, Ok(AibotCallback::Message(expected)));

    let forged = query.replace("2075b3", "2075b4");
    assert_eq!(
        receive(&robot(), &forged, VECTOR_BODY, 1_700_000_002_000),
        Err(WecomError::Auth(CryptoError::Signature))
    );
    assert!(matches!(
        receive(&robot(), query, VECTOR_BODY, 1_700_000_002_000 + 301_000),
        Err(WecomError::Stale(_))
    ));
    // A self-built app's key setup (receive id = corp id) refuses the robot's payload.
    let app = MsgCrypt::new("botToken123", OWN_KEY, "ww1234567890abcdef");
    let app = app.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        receive(&app, query, VECTOR_BODY, 1_700_000_002_000),
        Err(WecomError::Auth(CryptoError::ReceiveId))
    );
}

#[test]
fn single_chat_uses_the_sender_as_the_conversation() {
    let json = r#"{"msgid":"m1","aibotid":"B","chattype":"single","from":{"userid":"lisi"},
        "response_url":"https://example.test/r","msgtype":"text","text":{"content":"/whoami"}}"#;
    let Ok(AibotCallback::Message(message)) = parse_callback(json, "robot") else {
        panic!("a text message must parse");
    };
    assert_eq!(message.event.chat, "lisi");
    assert_eq!(message.event.chat_kind, ChatKind::Direct);
    assert_eq!(message.event.text, "/whoami");
}

#[test]
fn mixed_messages_keep_their_text_items() {
    let json = r#"{"msgid":"m2","chatid":"g1","chattype":"group","from":{"userid":"lisi"},
        "msgtype":"mixed","mixed":{"msg_item":[{"msgtype":"text","text":{"content":"@Bot /help"}},
        {"msgtype":"image","image":{"url":"https://x"}},{"msgtype":"text","text":{"content":"whoami"}}]}}"#;
    let Ok(AibotCallback::Message(message)) = parse_callback(json, "robot") else {
        panic!("a mixed message must parse");
    };
    assert_eq!(message.event.text, "/help\nwhoami");
    assert_eq!(message.response_url, None);
}

#[test]
fn card_clicks_become_typed_events_keyed_by_msgid() {
    let json = r#"{"msgid":"ev1","chatid":"g1","chattype":"group","from":{"userid":"lisi"},
        "msgtype":"event","event":{"eventtype":"template_card_event","template_card_event":
        {"card_type":"button_interaction","event_key":"approve","task_id":"camp42"}}}"#;
    let Ok(AibotCallback::Other(Received::Event(event))) = parse_callback(json, "robot") else {
        panic!("a card click must be a typed event");
    };
    assert_eq!(event.kind, "wecom_aibot.template_card_clicked");
    assert_eq!(event.event_id, "ev1");
    assert_eq!(event.payload["task_id"], "camp42");
    assert_eq!(event.payload["event_key"], "approve");
    assert_eq!(event.payload["chat"], "g1");

    let enter = json.replace("template_card_event\",", "enter_chat\",");
    assert!(matches!(
        parse_callback(&enter, "robot"),
        Ok(AibotCallback::Other(Received::Ignored(_)))
    ));
}

#[test]
fn callbacks_without_identity_are_malformed() {
    for json in [
        r#"{"from":{"userid":"u"},"msgtype":"text","text":{"content":"x"}}"#,
        r#"{"msgid":"m","msgtype":"text","text":{"content":"x"}}"#,
        r#"[]"#,
        "not json",
    ] {
        assert!(
            matches!(parse_callback(json, "robot"), Err(WecomError::Malformed(_))),
            "{json}"
        );
    }
    for body in ["{}", "{\"encrypt\":5}", "{\"encrypt\":\"\"}", "<xml/>"] {
        assert!(matches!(
            envelope_encrypt(body.as_bytes()),
            Err(WecomError::Malformed(_))
        ));
    }
}

#[test]
fn response_body_is_one_markdown_message() {
    assert_eq!(
        response_body(&["a", "b"]),
        json!({"msgtype": "markdown", "markdown": {"content": "a\n\nb"}})
    );
}

proptest! {
    #[test]
    fn aibot_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300), json in ".{0,300}") {
        let _ = envelope_encrypt(&body);
        let _ = parse_callback(&json, "robot");
    }

    #[test]
    fn aibot_parser_never_panics_on_shaped_json(msgtype in "text|mixed|event|image|", content in "\\PC{0,40}", chattype in "group|single|x") {
        let json = json!({"msgid": "m", "from": {"userid": "u"}, "chattype": chattype, "chatid": "c",
            "msgtype": msgtype, "text": {"content": content}, "event": {"eventtype": content}});
        let _ = parse_callback(&json.to_string(), "robot");
    }
}
