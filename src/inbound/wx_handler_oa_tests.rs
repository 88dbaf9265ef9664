//! The WeChat Official Account handler through the real router: the plain handshake, safe
//! and plain mode replies, refusals, replays, and send-job results recorded once. Runs in
//! a child process with the secrets set, like the WeCom handler tests.

use axum::http::StatusCode;

use super::tests::{APP_ID, NOW, TOKEN, call, crypt, open_reply, sealed, state, use_test_secrets};
use crate::bot::recent_audit;
use crate::inbound::store;
use crate::inbound::wx::parse_xml;

fn oa_text(msg_id: &str, text: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>\
         <CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>\
         <MsgId>{msg_id}</MsgId></xml>"
    )
}

fn oa_query(nonce: &str, timestamp: i64) -> String {
    let signature = crate::inbound::crypto::sorted_sha1(&[TOKEN, &timestamp.to_string(), nonce]);
    format!("signature={signature}&timestamp={timestamp}&nonce={nonce}&openid=zhangsan")
}

#[tokio::test]
async fn wechat_oa_plain_and_safe_modes_replies_and_send_job_events() {
    use_test_secrets();
    let (_dir, state) = state().await;
    let handshake = format!("/webhooks/oa?{}&echostr=plain-echo", oa_query("1", NOW));
    assert_eq!(
        call(&state, "GET", &handshake, "").await,
        (StatusCode::OK, "plain-echo".to_string())
    );

    // Safe mode: sealed in, sealed out.
    let mp = crypt(APP_ID);
    let (sealed_query, encrypt) = sealed(&mp, &oa_text("700001", "/whoami"), NOW, "31");
    let uri = format!(
        "/webhooks/oa?{}&encrypt_type=aes&{sealed_query}",
        oa_query("31", NOW)
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    let (status, reply) = call(&state, "POST", &uri, &body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let message = open_reply(&mp, &reply);
    assert_eq!(message.get("FromUserName"), Some("gh_0123456789ab"));
    assert!(
        message
            .get("Content")
            .unwrap_or_default()
            .contains("wechat_oa")
    );
    assert_eq!(
        call(&state, "POST", &uri, &body).await,
        (StatusCode::OK, "success".to_string())
    );
    // A plain callback to the safe-mode account is refused: its body is unsigned.
    let plain_uri = format!("/webhooks/oa?{}", oa_query("32", NOW));
    assert_eq!(
        call(&state, "POST", &plain_uri, &oa_text("700002", "/whoami"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // Plain mode: plain in, plain out; a reused signed query is not processed again.
    let plain_uri = format!("/webhooks/oa-plain?{}", oa_query("41", NOW));
    let (status, reply) = call(&state, "POST", &plain_uri, &oa_text("700003", "/whoami")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        parse_xml(&reply)
            .unwrap()
            .get("Content")
            .unwrap_or_default()
            .contains("wechat_oa")
    );
    let forged_body = oa_text("700004", "/whoami");
    assert_eq!(
        call(&state, "POST", &plain_uri, &forged_body).await,
        (StatusCode::OK, "success".to_string())
    );
    let stale_uri = format!("/webhooks/oa-plain?{}", oa_query("42", NOW - 600));
    assert_eq!(
        call(&state, "POST", &stale_uri, &oa_text("700005", "/whoami"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let bad_uri = format!("/webhooks/oa-plain?{}", oa_query("43", NOW));
    assert_eq!(
        call(&state, "POST", &bad_uri, "<xml><a>").await.0,
        StatusCode::BAD_REQUEST
    );
    state.db.grouped().flush().await.unwrap();
    assert_eq!(recent_audit(&state.db, 10).await.unwrap().len(), 2);

    let finished = format!(
        "<xml><ToUserName>gh_0123456789ab</ToUserName><FromUserName>oU1</FromUserName><CreateTime>{NOW}</CreateTime>\
         <MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>200163836</MsgID><Status>success</Status></xml>"
    );
    for nonce in ["51", "52"] {
        let (sealed_query, encrypt) = sealed(&mp, &finished, NOW, nonce);
        let uri = format!(
            "/webhooks/oa?{}&encrypt_type=aes&{sealed_query}",
            oa_query(nonce, NOW)
        );
        let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
        assert_eq!(
            call(&state, "POST", &uri, &body).await,
            (StatusCode::OK, "success".to_string())
        );
    }
    let events = store::recent_platform_events(&state.db, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "wechat_oa.template_send_finished");
    assert_eq!(events[0].event_id.as_deref(), Some("template:200163836"));
}
