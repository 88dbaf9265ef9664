//! Slack: the official and SDK-computed vectors (`slack-01..03` in the shared vectors file),
//! the window, classification of every callback shape, and no panic on any bytes.

use proptest::prelude::*;

use super::*;

const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const DOC_TS: &str = "1531420618";
const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const DOC_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

const EVENT_SECRET: &str = "0123456789abcdef0123456789abcdef";
const EVENT_BODY: &str = r#"{"token":"XXYYZZ","team_id":"T0001","api_app_id":"A0001","event":{"type":"app_mention","user":"U0001","text":"<@U0BOT> campaign status","ts":"1700000000.000100","channel":"C0001","event_ts":"1700000000.000100"},"type":"event_callback","event_id":"Ev0001","event_time":1700000000}"#;
const EVENT_SIGNATURE: &str = "v0=5a63ae6bca0df9259c63e9d26a3a0c9cdd282143334e59937ae72636037d45b1";

#[test]
fn slack_01_official_slash_command_vector() {
    let secret = DOC_SECRET.as_bytes();
    assert_eq!(
        signature_header(secret, DOC_TS, DOC_BODY.as_bytes()),
        DOC_SIGNATURE
    );
    let now = 1_531_420_618 + 10;
    assert_eq!(
        verify(secret, DOC_TS, DOC_SIGNATURE, DOC_BODY.as_bytes(), now),
        Ok(())
    );
    let SlackCallback::Command {
        event,
        response_url,
    } = parse("ops", DOC_BODY.as_bytes()).unwrap()
    else {
        panic!("a slash command")
    };
    assert_eq!(event.text, "/webhook-collect");
    assert_eq!(event.sender, "U2CERLKJA");
    assert_eq!(event.sender_name.as_deref(), Some("roadrunner"));
    assert_eq!(event.chat, "G8PSS9T3V");
    assert_eq!(event.chat_kind, ChatKind::Group);
    assert_eq!(
        event.message_id.as_deref(),
        Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    );
    assert_eq!(
        response_url.as_deref(),
        Some("https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN")
    );
}

#[test]
fn slack_02_event_vector_and_app_mention() {
    let secret = EVENT_SECRET.as_bytes();
    let ts = "1700000000";
    assert_eq!(
        signature_header(secret, ts, EVENT_BODY.as_bytes()),
        EVENT_SIGNATURE
    );
    assert_eq!(
        verify(
            secret,
            ts,
            EVENT_SIGNATURE,
            EVENT_BODY.as_bytes(),
            1_700_000_000
        ),
        Ok(())
    );
    let callback = parse("ops", EVENT_BODY.as_bytes()).unwrap();
    assert_eq!(callback.dedup_key(), Some("Ev0001"));
    let SlackCallback::Message { event, reply } = callback else {
        panic!("an app mention")
    };
    assert_eq!(event.text, "campaign status");
    assert_eq!(event.sender, "U0001");
    assert_eq!(event.chat, "C0001");
    assert_eq!(reply.channel, "C0001");
    assert_eq!(reply.thread_ts, None);
}

#[test]
fn slack_03_url_verification() {
    let body = r#"{"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}"#;
    assert_eq!(
        parse("ops", body.as_bytes()).unwrap(),
        SlackCallback::UrlVerification {
            challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".into()
        }
    );
}

#[test]
fn a_tampered_body_or_another_secret_fails() {
    let mut body = DOC_BODY.as_bytes().to_vec();
    body[0] ^= 1;
    let now = 1_531_420_618;
    let secret = DOC_SECRET.as_bytes();
    assert_eq!(
        verify(secret, DOC_TS, DOC_SIGNATURE, &body, now),
        Err(SlackError::BadSignature)
    );
    assert_eq!(
        verify(b"other", DOC_TS, DOC_SIGNATURE, DOC_BODY.as_bytes(), now),
        Err(SlackError::BadSignature)
    );
    // The signed timestamp is part of the MAC: moving it breaks the signature.
    assert_eq!(
        verify(
            secret,
            "1531420619",
            DOC_SIGNATURE,
            DOC_BODY.as_bytes(),
            now
        ),
        Err(SlackError::BadSignature)
    );
    let without_prefix = DOC_SIGNATURE.trim_start_matches("v0=");
    assert_eq!(
        verify(secret, DOC_TS, without_prefix, DOC_BODY.as_bytes(), now),
        Err(SlackError::BadSignature)
    );
}

#[test]
fn the_window_is_five_minutes_both_ways() {
    let secret = DOC_SECRET.as_bytes();
    let sent = 1_531_420_618;
    let check = |now| verify(secret, DOC_TS, DOC_SIGNATURE, DOC_BODY.as_bytes(), now);
    assert_eq!(check(sent + 300), Ok(()));
    assert_eq!(check(sent - 300), Ok(()));
    assert_eq!(check(sent + 301), Err(SlackError::Stale { age_secs: 301 }));
    assert_eq!(check(sent - 301), Err(SlackError::Stale { age_secs: -301 }));
}

#[test]
fn slash_command_text_joins_the_command_and_its_arguments() {
    let body = "command=%2Fcampaign&text=stats+42&user_id=U1&channel_id=D1&channel_name=directmessage&trigger_id=t1";
    let SlackCallback::Command { event, .. } = parse("ops", body.as_bytes()).unwrap() else {
        panic!("a slash command")
    };
    assert_eq!(event.text, "/campaign stats 42");
    assert_eq!(event.chat_kind, ChatKind::Direct);
    assert!(matches!(
        parse("ops", b"command=%2Fwhoami&user_id=U1"),
        Err(SlackError::Malformed(_))
    ));
}

#[test]
fn interactivity_and_unknown_envelopes_are_ignored() {
    assert!(matches!(
        parse("ops", b"payload=%7B%7D").unwrap(),
        SlackCallback::Ignored { .. }
    ));
    let rate_limited = br#"{"type":"app_rate_limited","team_id":"T1"}"#;
    assert!(matches!(
        parse("ops", rate_limited).unwrap(),
        SlackCallback::Ignored { .. }
    ));
}

fn event_body(event: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "event_callback", "event_id": "Ev9", "event": event}))
        .unwrap()
}

#[test]
fn only_people_s_mentions_and_direct_messages_reach_the_bot() {
    let direct = event_body(
        json!({"type": "message", "channel_type": "im", "user": "U1",
        "text": "/whoami", "channel": "D1", "thread_ts": "1.2"}),
    );
    let SlackCallback::Message { event, reply } = parse("ops", &direct).unwrap() else {
        panic!("a direct message")
    };
    assert_eq!(event.chat_kind, ChatKind::Direct);
    assert_eq!(reply.thread_ts.as_deref(), Some("1.2"));
    for ignored in [
        json!({"type": "message", "channel_type": "channel", "user": "U1", "text": "x", "channel": "C1"}),
        json!({"type": "message", "channel_type": "im", "bot_id": "B1", "text": "x", "channel": "D1"}),
        json!({"type": "message", "channel_type": "im", "subtype": "message_changed", "channel": "D1"}),
        json!({"type": "reaction_added", "user": "U1"}),
    ] {
        let callback = parse("ops", &event_body(ignored)).unwrap();
        assert!(matches!(callback, SlackCallback::Ignored { .. }));
        assert_eq!(callback.dedup_key(), Some("Ev9"));
    }
    assert!(matches!(
        parse("ops", br#"{"type":"event_callback","event":{}}"#),
        Err(SlackError::Malformed(_))
    ));
}

#[test]
fn mentions_are_stripped_only_at_the_start() {
    assert_eq!(strip_mentions("<@U0BOT> /help"), "/help");
    assert_eq!(
        strip_mentions("  <@U0BOT|qunfa>  <@U2> 群发 预览 42 "),
        "群发 预览 42"
    );
    assert_eq!(strip_mentions("/help <@U2>"), "/help <@U2>");
    assert_eq!(strip_mentions("<@broken"), "<@broken");
}

#[test]
fn reply_bodies_escape_markup_and_keep_the_thread() {
    let replies = [Reply::text("a < b & c"), Reply::text("二")];
    assert_eq!(
        command_answer(&replies),
        json!({"response_type": "in_channel", "text": "a &lt; b &amp; c\n\n二"})
    );
    let target = PostTarget {
        channel: "C1".into(),
        thread_ts: Some("1.2".into()),
    };
    assert_eq!(
        post_message_body(&target, &replies[1..]),
        json!({"channel": "C1", "text": "二", "thread_ts": "1.2"})
    );
    assert_eq!(
        post_message_url("http://127.0.0.1:9/api/"),
        "http://127.0.0.1:9/api/chat.postMessage"
    );
}

proptest! {
    #[test]
    fn parse_and_verify_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512),
                                    ts in ".{0,20}", signature in ".{0,80}", now in any::<i64>()) {
        let _ = parse("ops", &body);
        let _ = verify(b"secret", &ts, &signature, &body, now);
    }

    #[test]
    fn json_shaped_bodies_never_panic(value in any::<Option<String>>(), kind in "[a-z_]{0,20}") {
        let body = serde_json::to_vec(&json!({"type": "event_callback", "event_id": value,
            "event": {"type": kind, "channel_type": "im", "user": value, "text": value, "channel": value}}))
            .unwrap();
        let _ = parse("ops", &body);
    }

    #[test]
    fn whatever_is_signed_verifies(body in proptest::collection::vec(any::<u8>(), 0..256),
                                   sent in 0i64..4_000_000_000) {
        let ts = sent.to_string();
        let signature = signature_header(b"s3cret", &ts, &body);
        prop_assert_eq!(verify(b"s3cret", &ts, &signature, &body, sent), Ok(()));
    }
}
