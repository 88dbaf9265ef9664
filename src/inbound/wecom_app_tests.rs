//! The self-built app: vectors wecom-02 and wecom-05 end to end (envelope → signature →
//! decryption → ChatEvent), card clicks, the passive reply read back, and no panics.

use proptest::prelude::*;

use super::*;
use crate::inbound::wecom::{SignedQuery, open_payload};

const OWN_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const OWN_CORP: &str = "ww1234567890abcdef";

fn crypt(token: &str, key: &str, corp: &str) -> MsgCrypt {
    match MsgCrypt::new(token, key, corp) {
        Ok(crypt) => crypt,
        Err(error) => panic!("{error}"),
    }
}

fn signed(signature: &str, timestamp: &str, nonce: &str) -> SignedQuery {
    SignedQuery {
        msg_signature: signature.to_string(),
        timestamp: timestamp.to_string(),
        nonce: nonce.to_string(),
    }
}

fn open_and_parse(
    crypt: &MsgCrypt,
    query: &SignedQuery,
    body: &str,
    now_ms: i64,
    agent: Option<&str>,
) -> Result<Received, WecomError> {
    let encrypt = envelope_encrypt(body.as_bytes())?;
    let xml = open_payload(crypt, query, &encrypt, now_ms)?;
    parse_message(&xml, "app", agent)
}

#[test]
fn wecom_05_own_command_becomes_a_direct_chat_event() {
    let body = "<xml><ToUserName><![CDATA[ww1234567890abcdef]]></ToUserName><Encrypt><![CDATA[8Q6sFaw1Cb9qj7RuhNb60r0pYKGkNWTR5QTN+eh1tNP69c/oMEeo56NS/pWzopi7GL0De48ZVmrekUl/G1/AgMObCxSxBaS4fu02pNAd62/G3IGJsevWvFpRJNaEcY79pjc9I5HSHiXtHYcQIz9PRWs0kYeRJOEnDpsiGTON/qVwTbeRi8csOSKapQq5wwiA9P+1+bL0Qvuqfg+2nlXTSmwYSlKlPp/wjb0be55Dp7NjBcQmMLJOJkIdnwcq+5XnqMWSsxLd3tSzCMzznL0dP27juAK6yL2gKyG+la5KMWPjg/jGrkjx3QaRDDmW2NK+fuWrk2NaCvv61UW2qKFiP2nAJXDDKbyhR/6G0Y0XfNRrwPPs1dDuO92lxWkQ2zwxczoBcEe7fNw40KkDnBOESKoT28fb9rpp05jiEEo5Fcc5npYvhp7n/ZQsiaFvGrTsD/x0XZh6qLnDyYssA0An0g==]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>";
    let own = crypt("botToken123", OWN_KEY, OWN_CORP);
    let query = signed(
        "74c8121c9a48046fe3e7a21d4d0d5e3e0f747f4f",
        "1700000000",
        "987654321",
    );
    let received = open_and_parse(&own, &query, body, 1_700_000_000_000, Some("1000002"));
    let expected = ChatEvent {
        platform: "wecom_app".to_string(),
        account: "app".to_string(),
        chat: "zhangsan".to_string(),
        chat_kind: ChatKind::Direct,
        sender: "zhangsan".to_string(),
        sender_name: None,
        text: "/campaign start 42".to_string(),
        message_id: Some("7300000000000000001".to_string()),
    };
    assert_eq!(received, Ok(Received::Message(expected)));
    // Another app of the same corp must not take this app's callbacks.
    assert!(matches!(
        open_and_parse(&own, &query, body, 1_700_000_000_000, Some("1000003")),
        Err(WecomError::Malformed(_))
    ));
}

#[test]
fn wecom_02_official_sample_parses_with_its_agent() {
    let body = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>";
    let doc = crypt(
        "QDG6eK",
        "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        "wx5823bf96d3bd56c7",
    );
    let query = signed(
        "477715d11cdb4164915debcba66cb864d751f3e6",
        "1409659813",
        "1372623149",
    );
    let received = open_and_parse(&doc, &query, body, 1_409_659_813_000, Some("218"));
    let Ok(Received::Message(event)) = received else {
        panic!("expected a message, got {received:?}");
    };
    assert_eq!(event.sender, "mycreate");
    assert_eq!(event.text, "hello");
    assert_eq!(event.message_id.as_deref(), Some("4561255354251345929"));
    // The same sample, years later: outside the window.
    assert!(matches!(
        open_and_parse(&doc, &query, body, 1_700_000_000_000, None),
        Err(WecomError::Stale(_))
    ));
}

#[test]
fn card_clicks_become_typed_events_and_other_events_are_ignored() {
    let click = "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName>\
        <CreateTime>1700000100</CreateTime><MsgType><![CDATA[event]]></MsgType>\
        <Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[ack]]></EventKey>\
        <TaskId><![CDATA[camp42-u17]]></TaskId><CardType><![CDATA[button_interaction]]></CardType>\
        <ResponseCode><![CDATA[RC1]]></ResponseCode><AgentID>1000002</AgentID>\
        <SelectedItems><SelectedItem><QuestionKey>q</QuestionKey></SelectedItem></SelectedItems></xml>";
    let Ok(Received::Event(event)) = parse_message(click, "app", Some("1000002")) else {
        panic!("a card click must be a typed event");
    };
    assert_eq!(event.kind, "wecom_app.template_card_clicked");
    assert_eq!(event.event_id, "card:RC1");
    assert_eq!(event.payload["task_id"], "camp42-u17");
    assert_eq!(event.payload["event_key"], "ack");
    assert_eq!(event.payload["user"], "lisi");

    let without_code = click.replace("<ResponseCode><![CDATA[RC1]]></ResponseCode>", "");
    let Ok(Received::Event(event)) = parse_message(&without_code, "app", None) else {
        panic!("a card click must be a typed event");
    };
    assert_eq!(event.event_id, "card:lisi:1700000100:camp42-u17:ack");

    let enter = "<xml><FromUserName>lisi</FromUserName><MsgType>event</MsgType><Event>enter_agent</Event></xml>";
    assert!(matches!(
        parse_message(enter, "app", None),
        Ok(Received::Ignored(_))
    ));
    let image = "<xml><FromUserName>lisi</FromUserName><MsgType>image</MsgType></xml>";
    assert!(matches!(
        parse_message(image, "app", None),
        Ok(Received::Ignored(_))
    ));
    let anonymous = "<xml><MsgType>text</MsgType><Content>hi</Content></xml>";
    assert!(matches!(
        parse_message(anonymous, "app", None),
        Err(WecomError::Malformed(_))
    ));
}

#[test]
fn envelope_without_encrypt_is_malformed() {
    for body in [
        &b"<xml><ToUserName>x</ToUserName></xml>"[..],
        b"{\"encrypt\":\"abc\"}",
        b"\xff\xfe",
    ] {
        assert!(matches!(
            envelope_encrypt(body),
            Err(WecomError::Malformed(_))
        ));
    }
}

#[test]
fn passive_reply_opens_with_the_envelope_it_carries() {
    let own = crypt("botToken123", OWN_KEY, OWN_CORP);
    let reply = passive_reply(
        &own,
        OWN_CORP,
        "zhangsan",
        "你好 ]]> ok",
        1_700_000_005,
        "4242",
    );
    let Ok(envelope) = parse_xml(&reply) else {
        panic!("reply is not XML: {reply}");
    };
    let field = |name| envelope.get(name).unwrap_or_default().to_string();
    assert_eq!(field("TimeStamp"), "1700000005");
    let opened = own.open(
        &field("MsgSignature"),
        &field("TimeStamp"),
        &field("Nonce"),
        &field("Encrypt"),
    );
    let Ok(message) = opened.map(|xml| parse_xml(&xml)) else {
        panic!("reply does not open");
    };
    let Ok(message) = message else {
        panic!("reply plaintext is not XML");
    };
    assert_eq!(message.get("ToUserName"), Some("zhangsan"));
    assert_eq!(message.get("FromUserName"), Some(OWN_CORP));
    assert_eq!(message.get("MsgType"), Some("text"));
    assert_eq!(message.get("Content"), Some("你好 ]]> ok"));
}

proptest! {
    #[test]
    fn app_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300), xml in ".{0,300}") {
        let _ = envelope_encrypt(&body);
        let _ = parse_message(&xml, "app", Some("1"));
    }
}
