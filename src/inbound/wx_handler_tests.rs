//! The three handlers through the real router: handshakes, a signed `/whoami` answered,
//! forged and stale callbacks refused, replays acknowledged but run once (audit rows),
//! malformed bodies, typed events recorded once.
//!
//! Secrets are registered with `rules::test_secrets` (no environment changes needed).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::app::{AppState, Live};
use crate::bot::{recent_audit, test_support};
use crate::inbound::crypto::MsgCrypt;
use crate::inbound::store;
use crate::inbound::wx::parse_xml;
use crate::rules::{InboundAccount, InboundPlatform, Operator, Role, SecretRef};

const TOKEN_ENV: &str = "QUNFA_WX_TEST_TOKEN";
const KEY_ENV: &str = "QUNFA_WX_TEST_AES_KEY";
pub(super) const TOKEN: &str = "botToken123";
pub(super) const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const CORP: &str = "ww1234567890abcdef";
pub(super) const APP_ID: &str = "wx0123456789abcdef";
/// `test_support::START_MS` in seconds: the clock every callback is signed against.
pub(super) const NOW: i64 = test_support::START_MS / 1000;

/// Registers the accounts' token and AES key under their variable names.
pub(super) fn use_test_secrets() {
    crate::rules::test_secrets::set(TOKEN_ENV, TOKEN);
    crate::rules::test_secrets::set(KEY_ENV, KEY);
}

pub(super) async fn state() -> (tempfile::TempDir, AppState) {
    let (dir, db) = test_support::db().await;
    let state = test_support::app_state(db, "t", vec![]);
    let mut rules = test_support::rules();
    let secret = |env: &str| SecretRef::new(env);
    let account = |id: &str, platform| InboundAccount {
        id: id.to_string(),
        platform,
    };
    rules.inbound.extend([
        account(
            "app",
            InboundPlatform::WecomApp {
                token: secret(TOKEN_ENV),
                aes_key: secret(KEY_ENV),
                corp_id: CORP.to_string(),
                agent_id: Some("1000002".to_string()),
            },
        ),
        account(
            "robot",
            InboundPlatform::WecomAibot {
                token: secret(TOKEN_ENV),
                aes_key: secret(KEY_ENV),
            },
        ),
        account(
            "oa",
            InboundPlatform::WechatOa {
                token: secret(TOKEN_ENV),
                aes_key: Some(secret(KEY_ENV)),
                app_id: APP_ID.to_string(),
            },
        ),
        account(
            "oa-plain",
            InboundPlatform::WechatOa {
                token: secret(TOKEN_ENV),
                aes_key: None,
                app_id: APP_ID.to_string(),
            },
        ),
    ]);
    for platform in ["wecom_app", "wecom_aibot", "wechat_oa"] {
        rules.operators.push(Operator {
            platform: platform.to_string(),
            user: "zhangsan".to_string(),
            role: Role::Admin,
        });
    }
    state.live.store(Arc::new(Live {
        rules: Arc::new(rules),
        channels: Default::default(),
        disabled_inbound: Vec::new(),
    }));
    (dir, state)
}

pub(super) async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_string()))
        .unwrap();
    let peer: SocketAddr = "203.0.113.9:443".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = crate::http::router(state.clone(), crate::inbound::routes())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

pub(super) fn crypt(receive_id: &str) -> MsgCrypt {
    MsgCrypt::new(TOKEN, KEY, receive_id).unwrap()
}

/// A signed POST query and the encrypted payload for `plaintext`.
pub(super) fn sealed(
    crypt: &MsgCrypt,
    plaintext: &str,
    timestamp: i64,
    nonce: &str,
) -> (String, String) {
    let encrypt = crypt.encrypt(plaintext);
    let signature = crypt.signature(&timestamp.to_string(), nonce, &encrypt);
    let query = format!("msg_signature={signature}&timestamp={timestamp}&nonce={nonce}");
    (query, encrypt)
}

fn app_text(msg_id: &str, text: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>\
         <CreateTime>{NOW}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>\
         <MsgId>{msg_id}</MsgId><AgentID>1000002</AgentID></xml>"
    )
}

fn app_body(encrypt: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID>1000002</AgentID></xml>"
    )
}

/// Opens a sealed XML reply and returns its text message's fields.
pub(super) fn open_reply(crypt: &MsgCrypt, reply: &str) -> crate::inbound::wx::XmlFields {
    let envelope = parse_xml(reply).unwrap();
    let get = |name| envelope.get(name).unwrap().to_string();
    let plain = crypt
        .open(
            &get("MsgSignature"),
            &get("TimeStamp"),
            &get("Nonce"),
            &get("Encrypt"),
        )
        .unwrap();
    parse_xml(&plain).unwrap()
}

#[tokio::test]
async fn wecom_app_handshake_command_replay_forgery_staleness_and_malformed() {
    use_test_secrets();
    let (_dir, state) = state().await;
    let app = crypt(CORP);

    let echo = app.encrypt("4817293651");
    let signature = app.signature(&NOW.to_string(), "5", &echo);
    let encoded = percent_encoding::utf8_percent_encode(&echo, percent_encoding::NON_ALPHANUMERIC);
    let uri = format!(
        "/webhooks/app?msg_signature={signature}&timestamp={NOW}&nonce=5&echostr={encoded}"
    );
    assert_eq!(
        call(&state, "GET", &uri, "").await,
        (StatusCode::OK, "4817293651".to_string())
    );

    let (query, encrypt) = sealed(&app, &app_text("900001", "/whoami"), NOW, "11");
    let uri = format!("/webhooks/app?{query}");
    let (status, reply) = call(&state, "POST", &uri, &app_body(&encrypt)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let message = open_reply(&app, &reply);
    assert_eq!(message.get("ToUserName"), Some("zhangsan"));
    assert_eq!(message.get("FromUserName"), Some(CORP));
    let content = message.get("Content").unwrap_or_default();
    assert!(
        content.contains("wecom_app") && content.contains("admin"),
        "{content}"
    );

    // WeCom's retry of the same message: acknowledged empty, not run again.
    assert_eq!(
        call(&state, "POST", &uri, &app_body(&encrypt)).await,
        (StatusCode::OK, String::new())
    );
    state.db.grouped().flush().await.unwrap();
    assert_eq!(recent_audit(&state.db, 10).await.unwrap().len(), 1);

    let forged = uri.replace("msg_signature=", "msg_signature=0");
    assert_eq!(
        call(&state, "POST", &forged, &app_body(&encrypt)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (stale_query, stale) = sealed(&app, &app_text("900002", "/whoami"), NOW - 3600, "12");
    let (status, body) = call(
        &state,
        "POST",
        &format!("/webhooks/app?{stale_query}"),
        &app_body(&stale),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("stale"), "{body}");
    let (status, _) = call(
        &state,
        "POST",
        &uri,
        "<xml><ToUserName>x</ToUserName></xml>",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    state.db.grouped().flush().await.unwrap();
    assert_eq!(recent_audit(&state.db, 10).await.unwrap().len(), 1);
}

/// A stand-in for WeCom's `response_url`: forwards every body it receives.
async fn response_url_mock() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/cgi-bin/aibot/response",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(body);
                axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        format!("http://{address}/cgi-bin/aibot/response?response_code=RC"),
        receiver,
    )
}

#[tokio::test]
async fn wecom_aibot_answers_through_response_url_once_and_records_card_clicks() {
    use_test_secrets();
    let (_dir, state) = state().await;
    let robot = crypt("");
    let (url, mut replies) = response_url_mock().await;
    let message = serde_json::json!({"msgid": "m-1", "aibotid": "B", "chatid": "wrkG1", "chattype": "group",
        "from": {"userid": "zhangsan"}, "response_url": url, "msgtype": "text",
        "text": {"content": "@RobotA /whoami"}});
    let (query, encrypt) = sealed(&robot, &message.to_string(), NOW, "21");
    let uri = format!("/webhooks/robot?{query}");
    let body = serde_json::json!({"encrypt": encrypt}).to_string();
    assert_eq!(
        call(&state, "POST", &uri, &body).await,
        (StatusCode::OK, String::new())
    );
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), replies.recv()).await;
    let reply = reply.unwrap().unwrap();
    assert_eq!(reply["msgtype"], "markdown");
    let content = reply["markdown"]["content"].as_str().unwrap_or_default();
    assert!(
        content.contains("wecom_aibot") && content.contains("admin"),
        "{content}"
    );

    assert_eq!(
        call(&state, "POST", &uri, &body).await,
        (StatusCode::OK, String::new())
    );
    state
        .inbound
        .finish_replies(std::time::Duration::from_secs(5))
        .await;
    state.db.grouped().flush().await.unwrap();
    let audit = recent_audit(&state.db, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].chat.as_str(), audit[0].command.as_str()),
        ("wrkG1", "whoami")
    );
    assert!(
        replies.try_recv().is_err(),
        "a replay must not answer again"
    );

    let click = serde_json::json!({"msgid": "ev-1", "chatid": "wrkG1", "chattype": "group",
        "from": {"userid": "lisi"}, "msgtype": "event", "event": {"eventtype": "template_card_event",
        "template_card_event": {"card_type": "button_interaction", "event_key": "ok", "task_id": "camp-1"}}});
    let (query, encrypt) = sealed(&robot, &click.to_string(), NOW, "22");
    let body = serde_json::json!({"encrypt": encrypt}).to_string();
    for _ in 0..2 {
        let answer = call(&state, "POST", &format!("/webhooks/robot?{query}"), &body).await;
        assert_eq!(answer.0, StatusCode::OK);
    }
    let events = store::recent_platform_events(&state.db, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "wecom_aibot.template_card_clicked");
    assert_eq!(events[0].payload["task_id"], "camp-1");

    let forged = uri.replace("nonce=21", "nonce=99");
    assert_eq!(
        call(&state, "POST", &forged, &body).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&state, "POST", &uri, "not json").await.0,
        StatusCode::BAD_REQUEST
    );
}
