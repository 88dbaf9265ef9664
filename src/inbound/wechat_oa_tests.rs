//! The Official Account: vectors wechat_mp-01..03 through the handshake and both POST modes,
//! send-job results as typed events, passive replies read back, and no panics.

use proptest::prelude::*;

use super::*;
use crate::inbound::wx::query_params;

const OWN_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx0123456789abcdef";
const NOW_MS: i64 = 1_700_000_000_000;
const SAFE_QUERY: &str = "signature=7d9bc3ce0e5e04a2b09574db5991dcfcab00c537&timestamp=1700000000&nonce=5555&openid=oUser_openid_0001&encrypt_type=aes&msg_signature=5327b6b7acccaac1973bb45b8587b32532e2dc35";
const SAFE_BODY: &str = "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[ECb94sC68hxnidW1ycQhszknagQMaMzubdLzoyqpzHppRw1lf+W4UVBIZza/p/lsZzH+38aHjVT6oIHmkjMnzo3ydHl3bsMykNN5Xgvy3WcYXG7HpaABX+CgWDnmcLM9h3bo6O55iGlGhzr11gZIuKrForfuxaP7W1cQUCeEGtdHePB6Rh1FFYPM/53lJhH5k2EpB/8Ep2phamJRcJYbZhGuGVPkMdkBkMz1WaMhQoyMhbiBc/eXDptKNFHN/lP9aHmhBk1+rL7X9R4hmM3beYwBguqIr0lSLdVy9ULxmB7fK6M8DMROGvwRrSmR0/pqASRCTGsjnhlR1Q9pLf0FdgVocJcNpb6biUIfUcIUa2dw8yxWcrf8gW9WrRDZ+MWRYBQ2VsP3Cx63vUVmZ7QGMdsuyIh5vuUTvsBxK+lrbrM=]]></Encrypt></xml>";
const PLAIN_MESSAGE: &str = "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[oUser_openid_0001]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello]]></Content><MsgId>24000000000000001</MsgId></xml>";

fn safe() -> MsgCrypt {
    match MsgCrypt::new("mpToken", OWN_KEY, APP_ID) {
        Ok(crypt) => crypt,
        Err(error) => panic!("{error}"),
    }
}

#[test]
fn wechat_mp_02_handshake_echoes_echostr_verbatim() {
    let query = "signature=7d9bc3ce0e5e04a2b09574db5991dcfcab00c537&timestamp=1700000000&nonce=5555&echostr=8888888888";
    assert_eq!(
        verify_handshake("mpToken", &query_params(Some(query))).as_deref(),
        Ok("8888888888")
    );
    assert_eq!(
        verify_handshake("otherToken", &query_params(Some(query))),
        Err(OaError::Auth(CryptoError::Signature))
    );
    let without_echo = query.replace("&echostr=8888888888", "");
    assert_eq!(
        verify_handshake("mpToken", &query_params(Some(&without_echo))),
        Err(OaError::MissingParam("echostr"))
    );
}

#[test]
fn wechat_mp_01_signature_through_the_handshake() {
    let query = "signature=f21891de399b4e33a1a93c9a7b8a8fffb5a443ff&timestamp=1410685589&nonce=test&echostr=e";
    assert_eq!(
        verify_handshake("test", &query_params(Some(query))).as_deref(),
        Ok("e")
    );
}

#[test]
fn wechat_mp_03_safe_mode_post_opens_and_parses() {
    let params = query_params(Some(SAFE_QUERY));
    let xml = open_post(
        "mpToken",
        Some(&safe()),
        &params,
        SAFE_BODY.as_bytes(),
        NOW_MS,
    );
    assert_eq!(xml.as_deref(), Ok(PLAIN_MESSAGE));
    let expected = ChatEvent {
        platform: "wechat_oa".to_string(),
        account: "oa".to_string(),
        chat: "oUser_openid_0001".to_string(),
        chat_kind: ChatKind::Direct,
        sender: "oUser_openid_0001".to_string(),
        sender_name: None,
        text: "hello".to_string(),
        message_id: Some("24000000000000001".to_string()),
    };
    assert_eq!(
        parse_message(PLAIN_MESSAGE, "oa"),
        Ok(Received::Message(expected))
    );
    assert_eq!(
        account_name(PLAIN_MESSAGE).as_deref(),
        Some("gh_0123456789ab")
    );
}

#[test]
fn safe_mode_refuses_forgeries_stale_and_plain_callbacks() {
    let crypt = safe();
    let forged_msg = query_params(Some(
        &SAFE_QUERY.replace("msg_signature=5327", "msg_signature=5328"),
    ));
    assert_eq!(
        open_post(
            "mpToken",
            Some(&crypt),
            &forged_msg,
            SAFE_BODY.as_bytes(),
            NOW_MS
        ),
        Err(OaError::Auth(CryptoError::Signature))
    );
    let forged_plain = query_params(Some(
        &SAFE_QUERY.replace("signature=7d9b", "signature=7d9c"),
    ));
    assert_eq!(
        open_post(
            "mpToken",
            Some(&crypt),
            &forged_plain,
            SAFE_BODY.as_bytes(),
            NOW_MS
        ),
        Err(OaError::Auth(CryptoError::Signature))
    );
    let params = query_params(Some(SAFE_QUERY));
    assert!(matches!(
        open_post(
            "mpToken",
            Some(&crypt),
            &params,
            SAFE_BODY.as_bytes(),
            NOW_MS + 600_000
        ),
        Err(OaError::Stale(_))
    ));
    let plain = query_params(Some(
        "signature=7d9bc3ce0e5e04a2b09574db5991dcfcab00c537&timestamp=1700000000&nonce=5555",
    ));
    assert_eq!(
        open_post(
            "mpToken",
            Some(&crypt),
            &plain,
            PLAIN_MESSAGE.as_bytes(),
            NOW_MS
        ),
        Err(OaError::PlainInSafeMode)
    );
    let other_app = MsgCrypt::new("mpToken", OWN_KEY, "wxffffffffffffffff");
    let other_app = other_app.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        open_post(
            "mpToken",
            Some(&other_app),
            &params,
            SAFE_BODY.as_bytes(),
            NOW_MS
        ),
        Err(OaError::Auth(CryptoError::ReceiveId))
    );
}

#[test]
fn plain_mode_checks_the_query_signature_and_window() {
    let query = "signature=7d9bc3ce0e5e04a2b09574db5991dcfcab00c537&timestamp=1700000000&nonce=5555&openid=oUser_openid_0001";
    let params = query_params(Some(query));
    assert_eq!(
        open_post("mpToken", None, &params, PLAIN_MESSAGE.as_bytes(), NOW_MS).as_deref(),
        Ok(PLAIN_MESSAGE)
    );
    assert!(matches!(
        open_post(
            "mpToken",
            None,
            &params,
            PLAIN_MESSAGE.as_bytes(),
            NOW_MS - 301_000
        ),
        Err(OaError::Stale(_))
    ));
    assert_eq!(
        open_post("wrong", None, &params, PLAIN_MESSAGE.as_bytes(), NOW_MS),
        Err(OaError::Auth(CryptoError::Signature))
    );
    // An encrypted callback to a plain-mode account names the missing setting.
    let safe_params = query_params(Some(SAFE_QUERY));
    assert!(matches!(
        open_post("mpToken", None, &safe_params, SAFE_BODY.as_bytes(), NOW_MS),
        Err(OaError::Malformed(message)) if message.contains("aes_key_env")
    ));
    assert_eq!(nonce_key(&params).as_deref(), Some("query:1700000000:5555"));
}

#[test]
fn send_job_results_become_typed_events() {
    let template = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oU1]]></FromUserName>\
        <CreateTime>1700000100</CreateTime><MsgType><![CDATA[event]]></MsgType>\
        <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID>\
        <Status><![CDATA[failed:user block]]></Status></xml>";
    let Ok(Received::Event(event)) = parse_message(template, "oa") else {
        panic!("a template result must be a typed event");
    };
    assert_eq!(event.kind, "wechat_oa.template_send_finished");
    assert_eq!(event.event_id, "template:200163836");
    assert_eq!(event.payload["status"], "failed:user block");
    assert_eq!(event.payload["openid"], "oU1");

    let mass = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oAdmin]]></FromUserName>\
        <CreateTime>1700000200</CreateTime><MsgType><![CDATA[event]]></MsgType>\
        <Event><![CDATA[MASSSENDJOBFINISH]]></Event><MsgID>1000001625</MsgID>\
        <Status><![CDATA[send success]]></Status><TotalCount>100</TotalCount><FilterCount>80</FilterCount>\
        <SentCount>75</SentCount><ErrorCount>5</ErrorCount>\
        <CopyrightCheckResult><Count>0</Count><ResultList/><CheckState>1</CheckState></CopyrightCheckResult></xml>";
    let Ok(Received::Event(event)) = parse_message(mass, "oa") else {
        panic!("a mass-send result must be a typed event");
    };
    assert_eq!(event.kind, "wechat_oa.mass_send_finished");
    assert_eq!(event.event_id, "mass:1000001625");
    assert_eq!(event.payload["sent_count"], 75);
    assert_eq!(event.payload["error_count"], 5);

    let subscribe = "<xml><FromUserName>oU1</FromUserName><MsgType>event</MsgType><Event>subscribe</Event></xml>";
    assert!(matches!(
        parse_message(subscribe, "oa"),
        Ok(Received::Ignored(_))
    ));
    assert!(matches!(
        parse_message("<xml><MsgType>text</MsgType></xml>", "oa"),
        Err(OaError::Malformed(_))
    ));
}

#[test]
fn passive_replies_in_both_modes() {
    let plain = passive_reply(None, "gh_1", "oU1", "你好", 1_700_000_001, "9");
    let fields = parse_xml(&plain).unwrap_or_default();
    assert_eq!(fields.get("ToUserName"), Some("oU1"));
    assert_eq!(fields.get("FromUserName"), Some("gh_1"));
    assert_eq!(fields.get("Content"), Some("你好"));
    assert_eq!(fields.get("CreateTime"), Some("1700000001"));

    let crypt = safe();
    let sealed = passive_reply(Some(&crypt), "gh_1", "oU1", "你好", 1_700_000_001, "9");
    let envelope = parse_xml(&sealed).unwrap_or_default();
    let field = |name| envelope.get(name).unwrap_or_default().to_string();
    let opened = crypt.open(
        &field("MsgSignature"),
        &field("TimeStamp"),
        &field("Nonce"),
        &field("Encrypt"),
    );
    assert_eq!(opened.as_deref(), Ok(plain.as_str()));
}

proptest! {
    #[test]
    fn oa_parsers_never_panic(query in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..300), xml in ".{0,300}") {
        let params = query_params(Some(&query));
        let _ = verify_handshake("mpToken", &params);
        let _ = open_post("mpToken", Some(&safe()), &params, &body, NOW_MS);
        let _ = open_post("mpToken", None, &params, &body, NOW_MS);
        let _ = parse_message(&xml, "oa");
        let _ = account_name(&xml);
    }
}
