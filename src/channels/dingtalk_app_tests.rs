//! Work notifications and robot 1:1 messages against a local stand-in for both DingTalk
//! hosts (one `base_url`), which checks tokens, query and header auth and body shapes the
//! way DingTalk does and answers with DingTalk's success and error bodies; plus the
//! classification tables and the per-user lists.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::answers::{
    Fate, ROBOT_FLOW_CONTROL_WAIT, classify_oapi, classify_v1, fates_from_send_result,
};
use super::*;
use crate::channels::dingtalk::{SHORT_THROTTLE, until_next_day, until_next_month};
use crate::channels::{Button, Format};
use crate::clock::ManualClock;

const NOW: i64 = 1_700_000_000_000;
const APP_KEY: &str = "dingappkey";
const APP_SECRET: &str = "app-secret-value";
const AGENT: i64 = 123_456_789;
const ROBOT: &str = "dingrobot";
const TASK: i64 = 256_271_667_526;
const QUERY_KEY: &str = "Ah0Xqb+fZyPHx3GAi2LjTkZxR2UL2yYqCuOSTzQOH8s=";

#[derive(Default)]
struct Api {
    legacy_fetches: usize,
    v1_fetches: usize,
    valid_legacy: Option<String>,
    valid_v1: Option<String>,
    /// The next send call finds its token expired (DingTalk revoked it early).
    expire_next: bool,
    /// Every token is refused, fresh or not.
    refuse_tokens: bool,
    async_answer: Option<Value>,
    async_bodies: Vec<Value>,
    /// `send_result`s in the order the reads get them (the last one repeats).
    send_results: VecDeque<Value>,
    result_reads: usize,
    batch_answer: Option<Value>,
    batch_bodies: Vec<Value>,
}

type Shared = Arc<Mutex<Api>>;

fn ding_error(code: i64, message: &str) -> axum::Json<Value> {
    axum::Json(json!({"errcode": code, "errmsg": message}))
}

fn token_ok(api: &mut Api, given: Option<&str>, legacy: bool) -> bool {
    let valid = if legacy {
        &mut api.valid_legacy
    } else {
        &mut api.valid_v1
    };
    let ok = given.is_some() && given == valid.as_deref() && !api.refuse_tokens;
    if ok && api.expire_next {
        api.expire_next = false;
        *valid = None;
        return false;
    }
    ok
}

async fn gettoken(
    State(api): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    let Ok(mut api) = api.lock() else {
        return ding_error(-1, "busy");
    };
    if query.get("appkey").map(String::as_str) != Some(APP_KEY)
        || query.get("appsecret").map(String::as_str) != Some(APP_SECRET)
    {
        return ding_error(40089, "不合法的appKey或appSecret");
    }
    api.legacy_fetches += 1;
    let token = format!("legacy-{}", api.legacy_fetches);
    api.valid_legacy = Some(token.clone());
    axum::Json(json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}))
}

async fn asyncsend(
    State(api): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let Ok(mut api) = api.lock() else {
        return ding_error(-1, "busy");
    };
    if !token_ok(
        &mut api,
        query.get("access_token").map(String::as_str),
        true,
    ) {
        return ding_error(42001, "access_token超时");
    }
    let users = body["userid_list"]
        .as_str()
        .map(|list| list.split(',').count());
    let msg_ok = match body["msg"]["msgtype"].as_str() {
        Some("text") => body["msg"]["text"]["content"].is_string(),
        Some("markdown") => {
            body["msg"]["markdown"]["title"].is_string()
                && body["msg"]["markdown"]["text"].is_string()
        }
        Some("action_card") => {
            let card = &body["msg"]["action_card"];
            card["title"].is_string()
                && card["markdown"].is_string()
                && (card["single_url"].is_string() || card["btn_json_list"].is_array())
        }
        _ => false,
    };
    if body["agent_id"] != json!(AGENT)
        || !users.is_some_and(|n| (1..=5000).contains(&n))
        || !msg_ok
    {
        return ding_error(40035, "缺少参数");
    }
    api.async_bodies.push(body);
    axum::Json(api.async_answer.clone().unwrap_or_else(
        || json!({"errcode": 0, "errmsg": "ok", "task_id": TASK, "request_id": "4jzllmte0wau"}),
    ))
}

async fn getsendresult(
    State(api): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let Ok(mut api) = api.lock() else {
        return ding_error(-1, "busy");
    };
    if !token_ok(
        &mut api,
        query.get("access_token").map(String::as_str),
        true,
    ) {
        return ding_error(42001, "access_token超时");
    }
    if body["agent_id"] != json!(AGENT) || body["task_id"] != json!(TASK) {
        return ding_error(40035, "缺少参数");
    }
    api.result_reads += 1;
    let result = if api.send_results.len() > 1 {
        api.send_results.pop_front()
    } else {
        api.send_results.front().cloned()
    };
    axum::Json(
        json!({"errcode": 0, "errmsg": "ok", "send_result": result.unwrap_or_else(|| json!({}))}),
    )
}

async fn access_token(
    State(api): State<Shared>,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let Ok(mut api) = api.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
    };
    if body["appKey"] != APP_KEY || body["appSecret"] != APP_SECRET {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"code": "invalidClientIdOrSecret", "message": "无效的clientId或者clientSecret"}),
            ),
        );
    }
    api.v1_fetches += 1;
    let token = format!("v1-{}", api.v1_fetches);
    api.valid_v1 = Some(token.clone());
    (
        StatusCode::OK,
        axum::Json(json!({"accessToken": token, "expireIn": 7200})),
    )
}

/// The `msgParam` keys each template needs.
fn template_keys(key: &str) -> Option<Vec<String>> {
    let fixed = |keys: &[&str]| Some(keys.iter().map(|k| k.to_string()).collect());
    match key {
        "sampleText" => fixed(&["content"]),
        "sampleMarkdown" => fixed(&["title", "text"]),
        "sampleActionCard" => fixed(&["title", "text", "singleTitle", "singleURL"]),
        _ => {
            let n: usize = key
                .strip_prefix("sampleActionCard")?
                .parse()
                .ok()
                .filter(|n| (2..=5).contains(n))?;
            let mut keys = vec!["title".to_string(), "text".to_string()];
            for i in 1..=n {
                keys.push(format!("actionTitle{i}"));
                keys.push(format!("actionURL{i}"));
            }
            Some(keys)
        }
    }
}

async fn batch_send(
    State(api): State<Shared>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let Ok(mut api) = api.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({})));
    };
    let bad = |code: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"code": code, "message": code, "requestid": "r"})),
        )
    };
    let token = headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok());
    if !token_ok(&mut api, token, false) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"code": "InvalidAuthentication", "message": "不合法的access_token", "requestid": "r"}),
            ),
        );
    }
    if body["robotCode"] != ROBOT {
        return bad("invalidParameter.robotCode.auth");
    }
    match body["userIds"].as_array().map(Vec::len) {
        Some(0) | None => return bad("invalidParameter.userIds.empty"),
        Some(n) if n > 20 => return bad("invalidParameter.userIds.overMax"),
        _ => {}
    }
    let Some(keys) = body["msgKey"].as_str().and_then(template_keys) else {
        return bad("invalidParameter.msgKey.invalid");
    };
    // msgParam is a JSON string, not an object.
    let param: Option<Value> = body["msgParam"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok());
    if !param.is_some_and(|param| keys.iter().all(|key| param[key].is_string())) {
        return bad("invalidParameter.msgParam.invalid");
    }
    api.batch_bodies.push(body);
    let answer = api.batch_answer.clone().unwrap_or_else(
        || json!({"processQueryKey": QUERY_KEY, "invalidStaffIdList": [], "flowControlledStaffIdList": []}),
    );
    (StatusCode::OK, axum::Json(answer))
}

async fn stand_in() -> (String, Shared) {
    let api: Shared = Arc::new(Mutex::new(Api::default()));
    let app = Router::new()
        .route("/gettoken", get(gettoken))
        .route(
            "/topapi/message/corpconversation/asyncsend_v2",
            post(asyncsend),
        )
        .route(
            "/topapi/message/corpconversation/getsendresult",
            post(getsendresult),
        )
        .route("/v1.0/oauth2/accessToken", post(access_token))
        .route("/v1.0/robot/oToMessages/batchSend", post(batch_send))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), api)
}

fn app(base: &str, target: DingtalkAppTarget, secret: &str) -> DingtalkAppChannel {
    DingtalkAppChannel::new(
        APP_KEY,
        SecretString::from(secret),
        target,
        Some(base),
        Duration::from_secs(5),
        Arc::new(ManualClock::new(NOW)),
    )
    .without_readback_pause()
}

fn work(base: &str) -> DingtalkAppChannel {
    app(
        base,
        DingtalkAppTarget::WorkNotification { agent_id: AGENT },
        APP_SECRET,
    )
}

fn robot(base: &str) -> DingtalkAppChannel {
    app(
        base,
        DingtalkAppTarget::Robot {
            robot_code: ROBOT.into(),
        },
        APP_SECRET,
    )
}

fn contexts<'a>(users: &'a [&'a str]) -> Vec<SendContext<'a>> {
    users
        .iter()
        .enumerate()
        .map(|(n, user)| SendContext {
            job_id: n as i64,
            idempotency_key: "key",
            attempt: 1,
            recipient: user,
        })
        .collect()
}

fn with<T>(api: &Shared, read: impl FnOnce(&mut Api) -> T) -> T {
    let mut guard = api.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    read(&mut guard)
}

// ---- work notifications ------------------------------------------------------------------

#[tokio::test]
async fn a_task_is_read_back_and_filtered_users_are_not_delivered() {
    let (base, api) = stand_in().await;
    with(&api, |api| {
        api.send_results.push_back(json!({
            "read_user_id_list": ["u1"],
            "unread_user_id_list": ["u2", "u3", "u4", "u5"],
            "forbidden_list": [{"code": "143106", "count": 1, "userid": "u3"}],
            "forbidden_user_id_list": ["u3", "u4"],
            "failed_user_id_list": ["u5"],
            "invalid_user_id_list": ["ghost"],
        }))
    });
    let users = ["u1", "u2", "u3", "u4", "u5", "ghost"];
    let results = work(&base)
        .send_batch(&contexts(&users), &Message::text("双十一提醒"))
        .await;
    let verdicts: Vec<Verdict> = results.iter().map(|r| r.verdict.clone()).collect();
    let tomorrow = Verdict::RateLimited {
        wait: until_next_day(NOW),
    };
    assert_eq!(
        verdicts,
        vec![
            Verdict::Delivered,
            Verdict::Delivered,
            tomorrow.clone(),
            tomorrow,
            Verdict::RecipientInvalid,
            Verdict::RecipientInvalid,
        ]
    );
    assert!(
        results
            .iter()
            .all(|r| r.provider_ref.as_deref() == Some("256271667526"))
    );
    assert!(results[0].detail.contains("read"), "{}", results[0].detail);
    assert!(
        results[2]
            .detail
            .contains("already went to this user today"),
        "{}",
        results[2].detail
    );
    let sent = with(&api, |api| api.async_bodies.clone());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["userid_list"], "u1,u2,u3,u4,u5,ghost");
    assert_eq!(
        sent[0]["msg"],
        json!({"msgtype": "text", "text": {"content": "双十一提醒"}})
    );
}

#[tokio::test]
async fn a_result_still_filling_is_read_again() {
    let (base, api) = stand_in().await;
    with(&api, |api| {
        api.send_results
            .push_back(json!({"unread_user_id_list": ["u1"]}));
        api.send_results
            .push_back(json!({"unread_user_id_list": ["u1"], "forbidden_user_id_list": ["u2"]}));
    });
    let results = work(&base)
        .send_batch(&contexts(&["u1", "u2"]), &Message::text("hi"))
        .await;
    assert_eq!(results[0].verdict, Verdict::Delivered);
    assert_eq!(
        results[1].verdict,
        Verdict::RateLimited {
            wait: until_next_day(NOW)
        }
    );
    assert_eq!(with(&api, |api| api.result_reads), 2);
}

#[tokio::test]
async fn users_never_reported_count_as_accepted_after_three_reads() {
    let (base, api) = stand_in().await;
    let result = work(&base)
        .send(&contexts(&["u1"])[0], &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::Delivered);
    assert!(
        result.detail.contains("had not reported"),
        "{}",
        result.detail
    );
    assert_eq!(result.provider_ref.as_deref(), Some("256271667526"));
    assert_eq!(with(&api, |api| api.result_reads), READBACK_ROUNDS);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_call_repeated() {
    let (base, api) = stand_in().await;
    let channel = work(&base);
    with(&api, |api| {
        api.send_results
            .push_back(json!({"unread_user_id_list": ["u1"]}))
    });
    let first = channel
        .send(&contexts(&["u1"])[0], &Message::text("one"))
        .await;
    assert_eq!(first.verdict, Verdict::Delivered);
    assert_eq!(with(&api, |api| api.legacy_fetches), 1);
    with(&api, |api| api.expire_next = true);
    let second = channel
        .send(&contexts(&["u1"])[0], &Message::text("two"))
        .await;
    assert_eq!(second.verdict, Verdict::Delivered, "{}", second.detail);
    assert_eq!(
        with(&api, |api| (api.legacy_fetches, api.async_bodies.len())),
        (2, 2)
    );
}

#[tokio::test]
async fn a_token_refused_after_a_refresh_disables_the_account() {
    let (base, api) = stand_in().await;
    with(&api, |api| api.refuse_tokens = true);
    let result = work(&base)
        .send(&contexts(&["u1"])[0], &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert_eq!(with(&api, |api| api.legacy_fetches), 2);
}

#[tokio::test]
async fn a_wrong_app_secret_disables_the_account_without_sending() {
    let (base, api) = stand_in().await;
    let channel = app(
        &base,
        DingtalkAppTarget::WorkNotification { agent_id: AGENT },
        "wrong",
    );
    let result = channel
        .send(&contexts(&["u1"])[0], &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert!(result.detail.contains("40089"), "{}", result.detail);
    assert!(!result.detail.contains("wrong"), "{}", result.detail);
    assert!(with(&api, |api| api.async_bodies.is_empty()));
}

#[tokio::test]
async fn an_error_in_a_200_is_never_success() {
    let (base, api) = stand_in().await;
    with(&api, |api| {
        api.async_answer = Some(json!({"errcode": 90018, "errmsg": "请求的频率超过限制"}))
    });
    let results = work(&base)
        .send_batch(&contexts(&["u1", "u2"]), &Message::text("hi"))
        .await;
    assert!(results.iter().all(|r| r.verdict
        == Verdict::RateLimited {
            wait: SHORT_THROTTLE
        }));
    with(&api, |api| {
        api.async_answer = Some(json!({"errcode": 1430002, "errmsg": "消息内容违规"}))
    });
    let result = work(&base)
        .send(&contexts(&["u1"])[0], &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::ContentBlocked);
}

#[tokio::test]
async fn cards_become_action_cards_and_bad_recipients_are_not_sent() {
    let (base, api) = stand_in().await;
    let card = Message {
        format: Format::Card,
        title: Some("审批".into()),
        buttons: vec![
            Button {
                text: "同意".into(),
                url: "https://x.example/y".into(),
            },
            Button {
                text: "拒绝".into(),
                url: "https://x.example/n".into(),
            },
        ],
        ..Message::text("请审批")
    };
    let results = work(&base)
        .send_batch(&contexts(&["u1", "a,b", ""]), &card)
        .await;
    assert_eq!(results[1].verdict, Verdict::RecipientInvalid);
    assert_eq!(results[2].verdict, Verdict::RecipientInvalid);
    let sent = with(&api, |api| api.async_bodies.clone());
    assert_eq!(sent[0]["userid_list"], "u1");
    assert_eq!(
        sent[0]["msg"]["action_card"],
        json!({
            "title": "审批",
            "markdown": "请审批",
            "btn_orientation": "0",
            "btn_json_list": [
                {"title": "同意", "action_url": "https://x.example/y"},
                {"title": "拒绝", "action_url": "https://x.example/n"},
            ],
        })
    );
}

// ---- robot 1:1 ---------------------------------------------------------------------------

#[tokio::test]
async fn robot_lists_map_back_to_each_user() {
    let (base, api) = stand_in().await;
    with(&api, |api| {
        api.batch_answer = Some(json!({
            "processQueryKey": QUERY_KEY,
            "invalidStaffIdList": ["ghost"],
            "flowControlledStaffIdList": ["busy"],
            "filteredStaffIdList": ["hidden"],
        }))
    });
    let message = Message {
        format: Format::Markdown,
        ..Message::text("## 上线\n今晚十点")
    };
    let results = robot(&base)
        .send_batch(&contexts(&["u1", "ghost", "busy", "hidden"]), &message)
        .await;
    let verdicts: Vec<Verdict> = results.iter().map(|r| r.verdict.clone()).collect();
    assert_eq!(
        verdicts,
        vec![
            Verdict::Delivered,
            Verdict::RecipientInvalid,
            Verdict::RateLimited {
                wait: ROBOT_FLOW_CONTROL_WAIT
            },
            Verdict::RecipientInvalid,
        ]
    );
    assert!(
        results
            .iter()
            .all(|r| r.provider_ref.as_deref() == Some(QUERY_KEY))
    );
    let sent = with(&api, |api| api.batch_bodies.clone());
    assert_eq!(sent[0]["msgKey"], "sampleMarkdown");
    assert_eq!(
        sent[0]["msgParam"],
        json!({"title": "上线", "text": "## 上线\n今晚十点"}).to_string()
    );
}

#[tokio::test]
async fn robot_batches_are_cut_at_twenty_and_tokens_refreshed_once() {
    let (base, api) = stand_in().await;
    let channel = robot(&base);
    let users: Vec<String> = (0..25).map(|n| format!("u{n}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let results = channel
        .send_batch(&contexts(&user_refs), &Message::text("hi"))
        .await;
    assert!(results.iter().all(|r| r.verdict == Verdict::Delivered));
    let sizes: Vec<usize> = with(&api, |api| {
        api.batch_bodies
            .iter()
            .map(|b| b["userIds"].as_array().map_or(0, Vec::len))
            .collect()
    });
    assert_eq!(sizes, vec![20, 5]);
    assert_eq!(with(&api, |api| api.v1_fetches), 1);

    with(&api, |api| api.expire_next = true);
    let again = channel
        .send(&contexts(&["u1"])[0], &Message::text("again"))
        .await;
    assert_eq!(again.verdict, Verdict::Delivered, "{}", again.detail);
    assert_eq!(with(&api, |api| api.v1_fetches), 2);

    with(&api, |api| api.refuse_tokens = true);
    let refused = channel
        .send(&contexts(&["u1"])[0], &Message::text("refused"))
        .await;
    assert_eq!(refused.verdict, Verdict::AccountDisabled);
    assert_eq!(with(&api, |api| api.v1_fetches), 3);
}

#[tokio::test]
async fn a_robot_code_the_app_does_not_own_disables_the_account() {
    let (base, _) = stand_in().await;
    let channel = app(
        &base,
        DingtalkAppTarget::Robot {
            robot_code: "other".into(),
        },
        APP_SECRET,
    );
    let result = channel
        .send(&contexts(&["u1"])[0], &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
    assert_eq!(result.status, Some(400));
    let bad_secret = app(
        &base,
        DingtalkAppTarget::Robot {
            robot_code: ROBOT.into(),
        },
        "wrong",
    );
    let result = bad_secret
        .send(&contexts(&["u1"])[0], &Message::text("hi"))
        .await;
    assert_eq!(result.verdict, Verdict::AccountDisabled);
}

#[tokio::test]
async fn robot_cards_pick_the_template_by_button_count() {
    let (base, api) = stand_in().await;
    let buttons = |n: usize| {
        (1..=n)
            .map(|i| Button {
                text: format!("选项{i}"),
                url: format!("https://x.example/{i}"),
            })
            .collect::<Vec<_>>()
    };
    let card = |n| Message {
        format: Format::Card,
        buttons: buttons(n),
        ..Message::text("请选择")
    };
    let channel = robot(&base);
    for n in 1..=5 {
        let result = channel.send(&contexts(&["u1"])[0], &card(n)).await;
        assert_eq!(result.verdict, Verdict::Delivered, "{n}: {}", result.detail);
    }
    let keys: Vec<Value> = with(&api, |api| {
        api.batch_bodies
            .iter()
            .map(|b| b["msgKey"].clone())
            .collect()
    });
    assert_eq!(
        keys,
        vec![
            json!("sampleActionCard"),
            json!("sampleActionCard2"),
            json!("sampleActionCard3"),
            json!("sampleActionCard4"),
            json!("sampleActionCard5")
        ]
    );
    let six = channel.send(&contexts(&["u1"])[0], &card(6)).await;
    assert_eq!(six.verdict, Verdict::ContentBlocked);
    assert_eq!(six.status, None);
    assert_eq!(with(&api, |api| api.batch_bodies.len()), 5);
}

// ---- content limits ----------------------------------------------------------------------

#[test]
fn card_limits_are_checked_before_sending() {
    let channel = work("http://127.0.0.1:9");
    let card = |title: &str, label: &str, url: &str| Message {
        format: Format::Card,
        title: Some(title.into()),
        buttons: vec![Button {
            text: label.into(),
            url: url.into(),
        }],
        ..Message::text("x")
    };
    assert!(
        channel
            .check(&card("标题", "查看", "https://x.example"))
            .is_ok()
    );
    assert!(
        channel
            .check(&card(&"标".repeat(65), "查看", "https://x.example"))
            .is_err()
    );
    assert!(
        channel
            .check(&card("标题", &"查".repeat(21), "https://x.example"))
            .is_err()
    );
    assert!(
        channel
            .check(&card(
                "标题",
                "查看",
                &format!("https://x.example/{}", "a".repeat(490))
            ))
            .is_err()
    );
    assert!(
        channel
            .check(&card("标题", "", "https://x.example"))
            .is_err()
    );
    let robot = robot("http://127.0.0.1:9");
    assert!(robot.check(&Message::text("群".repeat(4990))).is_ok());
    assert!(robot.check(&Message::text("群".repeat(5010))).is_err());
}

#[test]
fn links_become_single_button_cards() {
    let link = Message {
        format: Format::Link,
        title: Some("双十一".into()),
        url: Some("https://x.example/s".into()),
        ..Message::text("今晚八点")
    };
    assert_eq!(
        app_render::work_notification(&link).ok(),
        Some(json!({"msgtype": "action_card", "action_card": {
            "title": "双十一", "markdown": "今晚八点", "single_title": "查看详情", "single_url": "https://x.example/s"
        }}))
    );
    let (key, param) = app_render::robot(&link).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(key, "sampleActionCard");
    assert_eq!(
        serde_json::from_str::<Value>(&param).ok(),
        Some(
            json!({"title": "双十一", "text": "今晚八点", "singleTitle": "查看详情", "singleURL": "https://x.example/s"})
        )
    );
}

#[test]
fn debug_output_hides_the_app_secret() {
    let shown = format!("{:?}", work("http://127.0.0.1:9"));
    assert!(
        shown.contains(APP_KEY) && !shown.contains(APP_SECRET),
        "{shown}"
    );
}

// ---- classification tables ---------------------------------------------------------------

fn oapi(status: u16, body: Value) -> Verdict {
    classify_oapi(status, None, body.to_string().as_bytes(), NOW).verdict
}

#[test]
fn oapi_errcodes_are_classified() {
    let code = |c: i64| oapi(200, json!({"errcode": c, "errmsg": "x"}));
    let tomorrow = Verdict::RateLimited {
        wait: until_next_day(NOW),
    };
    let minute = Verdict::RateLimited {
        wait: SHORT_THROTTLE,
    };
    assert_eq!(code(0), Verdict::Delivered);
    assert_eq!(code(-1), Verdict::Retryable { after: None });
    for c in [40014, 42001, 40089, 60011, 60020] {
        assert_eq!(code(c), Verdict::AccountDisabled, "{c}");
    }
    for c in [
        143103, 143104, 143203, 143204, 1430003, 90002, 90005, 90006, 90018, 90019,
    ] {
        assert_eq!(code(c), minute, "{c}");
    }
    for c in [143105, 143106, 143205, 143206] {
        assert_eq!(code(c), tomorrow, "{c}");
    }
    assert_eq!(
        code(90020),
        Verdict::RateLimited {
            wait: until_next_month(NOW)
        }
    );
    assert_eq!(code(1430002), Verdict::ContentBlocked);
    assert_eq!(code(1430004), Verdict::RecipientInvalid);
    assert_eq!(code(1430000), Verdict::ContentBlocked);
    assert_eq!(code(40035), Verdict::ContentBlocked);
    assert_eq!(
        classify_oapi(200, None, b"<html>", NOW).verdict,
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        classify_oapi(503, None, b"", NOW).verdict,
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        classify_oapi(403, None, b"", NOW).verdict,
        Verdict::AccountDisabled
    );
    assert_eq!(
        classify_oapi(429, Some(Duration::from_secs(3)), b"", NOW).verdict,
        Verdict::RateLimited {
            wait: Duration::from_secs(3)
        }
    );
}

#[test]
fn v1_errors_are_classified() {
    let error = |status: u16, code: &str| {
        classify_v1(
            status,
            None,
            json!({"code": code, "message": "m"}).to_string().as_bytes(),
            NOW,
        )
        .verdict
    };
    assert_eq!(
        error(401, "InvalidAuthentication"),
        Verdict::AccountDisabled
    );
    assert_eq!(
        error(403, "Forbidden.AccessDenied.AccessTokenPermissionDenied"),
        Verdict::AccountDisabled
    );
    assert_eq!(
        error(400, "invalidParameter.robotCode.auth"),
        Verdict::AccountDisabled
    );
    assert_eq!(error(400, "bot.stopped"), Verdict::AccountDisabled);
    assert_eq!(
        error(400, "invalidParameter.msgParam.invalid"),
        Verdict::ContentBlocked
    );
    assert_eq!(
        error(400, "invalidParameter.userIds.overMax"),
        Verdict::ContentBlocked
    );
    assert_eq!(
        error(403, "Forbidden.AccessDenied.QpsLimitForApi"),
        Verdict::RateLimited {
            wait: SHORT_THROTTLE
        }
    );
    assert_eq!(
        error(403, "Forbidden.AccessDenied.ApiCountLimitForOrg"),
        Verdict::RateLimited {
            wait: until_next_month(NOW)
        }
    );
    assert_eq!(
        error(500, "ServiceUnavailable"),
        Verdict::Retryable { after: None }
    );
    assert_eq!(
        error(429, "Throttling"),
        Verdict::RateLimited {
            wait: SHORT_THROTTLE
        }
    );
    assert_eq!(
        classify_v1(200, None, b"{}", NOW).verdict,
        Verdict::Retryable { after: None }
    );
    assert!(answers::v1_token_expired(
        400,
        br#"{"code":"InvalidAuthentication"}"#
    ));
    assert!(!answers::v1_token_expired(
        400,
        br#"{"code":"invalidParameter.msgKey.invalid"}"#
    ));
}

#[test]
fn send_result_lists_override_in_order_of_severity() {
    let fates = fates_from_send_result(
        Some(&json!({
            "read_user_id_list": "a,b",
            "forbidden_list": [
                {"code": 143103, "count": 5000, "userid": "a"},
                {"code": "1430004", "userid": "b"},
                {"userid": "c"},
            ],
            "invalid_user_id_list": ["a"],
        })),
        NOW,
    );
    assert!(matches!(
        fates.get("a"),
        Some(Fate::NotDelivered(Verdict::RecipientInvalid, _))
    ));
    assert!(
        matches!(fates.get("b"), Some(Fate::NotDelivered(Verdict::RecipientInvalid, why)) if why.contains("protected"))
    );
    assert!(matches!(
        fates.get("c"),
        Some(Fate::NotDelivered(Verdict::RateLimited { wait }, _)) if *wait == until_next_day(NOW)
    ));
    assert!(fates_from_send_result(None, NOW).is_empty());
}

proptest! {
    #[test]
    fn rendering_and_answers_never_panic(
        text in "\\PC{0,300}",
        title in proptest::option::of("\\PC{0,80}"),
        format in 0usize..4,
        buttons in 0usize..8,
        label in "\\PC{0,30}",
        answer in "\\PC{0,200}",
    ) {
        let format = [Format::Text, Format::Markdown, Format::Link, Format::Card][format];
        let message = Message {
            format,
            title,
            url: Some("https://x.example".into()),
            buttons: (0..buttons).map(|n| Button { text: label.clone(), url: format!("https://x.example/{n}") }).collect(),
            ..Message::text(text)
        };
        let _ = app_render::work_notification(&message);
        let _ = app_render::robot(&message);
        let _ = classify_oapi(200, None, answer.as_bytes(), NOW);
        let _ = classify_v1(400, None, answer.as_bytes(), NOW);
        let parsed = serde_json::from_str::<Value>(&answer).ok();
        let _ = fates_from_send_result(parsed.as_ref(), NOW);
    }
}
