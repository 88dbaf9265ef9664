//! The send API end to end: requests over HTTP, delivery by a real dispatcher over a real
//! outbox, channels scripted per recipient so fallback along the route is observable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::router;
use super::testing::{Answer, Fixture, fixture, request, rules_with_tokens, send};
use crate::app::Live;
use crate::channels::{
    AddressKind, Audience, Channel, ChannelRegistry, ChannelStatus, ContentError, Message, Receipt,
    ReceiptError, ReceiptRequest, ReceiptStatus, SendContext, SendResult, Verdict,
};
use crate::delivery::{DeliverySetup, Dispatcher, Outbox};
use crate::rules::{DeliverySettings, Role};

const OPERATOR: (&str, &str) = ("authorization", "Bearer operator-secret");
const VIEWER: (&str, &str) = ("authorization", "Bearer viewer-secret");

/// Answers each recipient with a fixed verdict (delivered when unlisted) and records
/// every call: (recipient, text).
#[derive(Debug)]
struct Scripted {
    audience: Audience,
    verdicts: HashMap<String, Verdict>,
    calls: Mutex<Vec<(String, String)>>,
}

impl Scripted {
    fn new(audience: Audience, verdicts: &[(&str, Verdict)]) -> Arc<Self> {
        Arc::new(Self {
            audience,
            verdicts: verdicts
                .iter()
                .map(|(to, verdict)| (to.to_string(), verdict.clone()))
                .collect(),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Channel for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn audience(&self) -> Audience {
        self.audience
    }

    fn check(&self, message: &Message) -> Result<(), ContentError> {
        crate::channels::render::fit_chars("text", &message.text, 70)
    }

    async fn send(&self, ctx: &SendContext<'_>, message: &Message) -> SendResult {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((ctx.recipient.to_string(), message.text.clone()));
        }
        let verdict = self
            .verdicts
            .get(ctx.recipient)
            .cloned()
            .unwrap_or(Verdict::Delivered);
        SendResult::new(verdict, Some(200), "scripted").with_ref(format!("ref-{}", ctx.job_id))
    }

    /// Receipts are `{"ref", "status", "key"}` JSON, "signed" by `x-test-signature: ok`.
    fn receipts(&self, request: &ReceiptRequest<'_>) -> Option<Result<Vec<Receipt>, ReceiptError>> {
        if request
            .headers
            .get("x-test-signature")
            .is_none_or(|v| v != "ok")
        {
            return Some(Err(ReceiptError::Forged("bad signature".into())));
        }
        let parsed: Result<Value, _> = serde_json::from_slice(request.body);
        let Ok(body) = parsed else {
            return Some(Err(ReceiptError::Malformed("not JSON".into())));
        };
        let status = match body["status"].as_str() {
            Some("delivered") => ReceiptStatus::Delivered,
            Some("undelivered") => ReceiptStatus::Failed,
            other => ReceiptStatus::Other(other.unwrap_or_default().to_string()),
        };
        Some(Ok(vec![Receipt {
            event_key: body["key"].as_str().unwrap_or_default().to_string(),
            provider_ref: body["ref"].as_str().unwrap_or_default().to_string(),
            status,
            detail: "30003 unreachable handset".into(),
        }]))
    }
}

struct Setup(ChannelRegistry);

impl DeliverySetup for Setup {
    fn settings(&self) -> DeliverySettings {
        DeliverySettings::default()
    }
    fn channel(&self, id: &str) -> Option<ChannelStatus> {
        self.0.get(id).cloned()
    }
}

struct Harness {
    // Owns the database directory.
    _fx: Fixture,
    app: Router,
    im: Arc<Scripted>,
    sms: Arc<Scripted>,
    dispatcher: Dispatcher<Setup>,
}

/// Channels `im` (WeCom user ids; `bad-user` is not a member), `sms` (phones) and `off`
/// (disabled).
async fn harness() -> Harness {
    let rules = rules_with_tokens(&[
        ("dashboard", Role::Viewer, "viewer-secret"),
        ("ci-bot", Role::Operator, "operator-secret"),
    ]);
    let fx = fixture(rules).await;
    let im = Scripted::new(
        Audience::Person(AddressKind::WecomUser),
        &[
            ("bad-user", Verdict::RecipientInvalid),
            ("blocked-user", Verdict::ContentBlocked),
        ],
    );
    let sms = Scripted::new(Audience::Person(AddressKind::Phone), &[]);
    let registry = ChannelRegistry::from_statuses([
        ("im".to_string(), ChannelStatus::Ready(im.clone())),
        ("sms".to_string(), ChannelStatus::Ready(sms.clone())),
        (
            "off".to_string(),
            ChannelStatus::Disabled {
                reason: "environment variable `OFF_KEY` is not set".into(),
            },
        ),
    ]);
    let live = fx.state.live();
    fx.state.live.store(Arc::new(Live {
        rules: live.rules.clone(),
        channels: registry.clone(),
        disabled_inbound: Vec::new(),
    }));
    let dispatcher = Dispatcher::new(
        Outbox::new(fx.state.db.clone()),
        Arc::new(Setup(registry)),
        fx.state.clock.clone(),
        "test-worker".into(),
    );
    let app = router(fx.state.clone(), Router::new());
    Harness {
        _fx: fx,
        app,
        im,
        sms,
        dispatcher,
    }
}

async fn post(app: &Router, uri: &str, headers: &[(&str, &str)], body: Value) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(
        app,
        request("POST", uri, &all, Body::from(body.to_string())),
    )
    .await
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, request("GET", uri, &[VIEWER], Body::empty())).await
}

fn message(wecom_user: &str) -> Value {
    json!({
        "recipient": {"wecom_user": wecom_user, "phone": "+8613800000000"},
        "route": ["off", "im", "sms"],
        "content": {"text": "双十一 starts now", "per_channel": {"sms": {"text": "Sale now. TD to stop"}}}
    })
}

#[tokio::test]
async fn a_message_is_delivered_on_the_first_channel_that_can_reach_the_person() {
    let h = harness().await;
    let answer = post(&h.app, "/api/v1/messages", &[OPERATOR], message("zhangsan")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let id = answer.json()["id"].as_str().unwrap().to_string();

    let queued = get(&h.app, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["steps"][0]["state"], "skipped");
    assert!(
        queued["steps"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("OFF_KEY")
    );
    assert_eq!(queued["steps"][2]["state"], "waiting");

    h.dispatcher.drain_due().await.unwrap();
    let done = get(&h.app, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(done["state"], "delivered");
    assert_eq!(done["steps"][1]["state"], "delivered");
    assert_eq!(done["steps"][1]["attempts"][0]["outcome"], "delivered");
    assert!(
        done["steps"][1]["attempts"][0]["provider_ref"]
            .as_str()
            .unwrap()
            .starts_with("ref-")
    );
    assert_eq!(done["steps"][2]["state"], "waiting");
    assert_eq!(
        h.im.calls(),
        vec![("zhangsan".to_string(), "双十一 starts now".to_string())]
    );
    assert!(h.sms.calls().is_empty());
}

#[tokio::test]
async fn an_unreachable_recipient_falls_back_to_the_next_channel_with_its_own_content() {
    let h = harness().await;
    let answer = post(&h.app, "/api/v1/messages", &[OPERATOR], message("bad-user")).await;
    let id = answer.json()["id"].as_str().unwrap().to_string();
    h.dispatcher.drain_due().await.unwrap();
    h.dispatcher.drain_due().await.unwrap();
    let done = get(&h.app, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(done["state"], "delivered", "{done}");
    assert_eq!(done["steps"][1]["state"], "failed");
    assert!(
        done["steps"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("moved on to step 2")
    );
    assert_eq!(done["steps"][2]["state"], "delivered");
    assert_eq!(
        h.sms.calls(),
        vec![(
            "+8613800000000".to_string(),
            "Sale now. TD to stop".to_string()
        )]
    );
}

/// Refused content stops the message: the route shares its content, so the next channel
/// would be refused too, and a retry would be refused again.
#[tokio::test]
async fn a_content_blocked_answer_stops_the_message_without_retry_or_fallback() {
    let h = harness().await;
    let answer = post(
        &h.app,
        "/api/v1/messages",
        &[OPERATOR],
        message("blocked-user"),
    )
    .await;
    let id = answer.json()["id"].as_str().unwrap().to_string();
    h.dispatcher.drain_due().await.unwrap();
    h.dispatcher.drain_due().await.unwrap();
    let done = get(&h.app, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["steps"][1]["state"], "failed");
    assert_eq!(
        done["steps"][1]["attempts"][0]["outcome"],
        "content_blocked"
    );
    assert_eq!(done["steps"][2]["state"], "waiting", "{done}");
    assert_eq!(h.im.calls().len(), 1, "not retried");
    assert!(h.sms.calls().is_empty(), "no fallback");
}

#[tokio::test]
async fn the_same_idempotency_key_is_one_message_and_a_reused_key_is_refused() {
    let h = harness().await;
    let key = ("idempotency-key", "order-42-shipped");
    let first = post(
        &h.app,
        "/api/v1/messages",
        &[OPERATOR, key],
        message("zhangsan"),
    )
    .await;
    let again = post(
        &h.app,
        "/api/v1/messages",
        &[OPERATOR, key],
        message("zhangsan"),
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(first.json()["id"], again.json()["id"]);
    let other = post(
        &h.app,
        "/api/v1/messages",
        &[OPERATOR, key],
        message("lisi"),
    )
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.json()["error"]["code"], "idempotency_key_reused");
    h.dispatcher.drain_due().await.unwrap();
    assert_eq!(h.im.calls().len(), 1, "one message, one send");
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let h = harness().await;
    let too_long = json!({"recipient": {"wecom_user": "u"}, "route": ["im"], "content": {"text": "x".repeat(71)}});
    let answer = post(&h.app, "/api/v1/messages", &[OPERATOR], too_long).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json()["error"]["code"], "content_not_sendable");
    let unknown =
        json!({"recipient": {"wecom_user": "u"}, "route": ["fax"], "content": {"text": "x"}});
    let answer = post(&h.app, "/api/v1/messages", &[OPERATOR], unknown).await;
    assert_eq!(answer.json()["error"]["code"], "unknown_channel");
    let malformed = post(
        &h.app,
        "/api/v1/messages",
        &[OPERATOR],
        json!({"recipient": 1}),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let viewer = post(&h.app, "/api/v1/messages", &[VIEWER], message("u")).await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN);
    let batch = json!({"messages": [message("a"), {"recipient": {}, "route": ["im"], "content": {"text": "x"}}]});
    let answer = post(&h.app, "/api/v1/messages:batch", &[OPERATOR], batch).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("messages[1]")
    );
    assert_eq!(
        h.dispatcher.drain_due().await.unwrap(),
        0,
        "nothing was queued"
    );
    let missing = get(&h.app, "/api/v1/messages/msg_nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_batch_is_stored_in_order_and_sent() {
    let h = harness().await;
    let messages: Vec<Value> = (0..5).map(|i| message(&format!("user-{i}"))).collect();
    let answer = post(
        &h.app,
        "/api/v1/messages:batch",
        &[OPERATOR],
        json!({"messages": messages}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let ids = answer.json()["ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 5);
    h.dispatcher.drain_due().await.unwrap();
    let mut called: Vec<String> = h.im.calls().into_iter().map(|(to, _)| to).collect();
    called.sort();
    assert_eq!(
        called,
        (0..5).map(|i| format!("user-{i}")).collect::<Vec<_>>()
    );
    for id in ids {
        let view = get(
            &h.app,
            &format!("/api/v1/messages/{}", id.as_str().unwrap()),
        )
        .await
        .json();
        assert_eq!(view["state"], "delivered");
    }
}

#[tokio::test]
async fn a_test_message_goes_through_the_outbox_to_the_given_address() {
    let h = harness().await;
    let body = json!({"to": "+15550001", "text": "hello from qunfa"});
    let answer = post(
        &h.app,
        "/api/v1/channels/sms/test-messages",
        &[OPERATOR],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    h.dispatcher.drain_due().await.unwrap();
    assert_eq!(
        h.sms.calls(),
        vec![("+15550001".to_string(), "hello from qunfa".to_string())]
    );
    let off = post(
        &h.app,
        "/api/v1/channels/off/test-messages",
        &[OPERATOR],
        body.clone(),
    )
    .await;
    assert_eq!(off.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(off.json()["error"]["code"], "channel_disabled");
    let none = post(
        &h.app,
        "/api/v1/channels/fax/test-messages",
        &[OPERATOR],
        body,
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_undelivered_receipt_moves_the_message_to_its_next_channel_once() {
    let h = harness().await;
    let body = json!({
        "recipient": {"wecom_user": "zhangsan", "phone": "+8613800000000"},
        "route": ["sms", "im"],
        "content": {"text": "code 1234"}
    });
    let id = post(&h.app, "/api/v1/messages", &[OPERATOR], body)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.dispatcher.drain_due().await.unwrap();
    let sent = get(&h.app, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(sent["state"], "delivered");
    let provider_ref = sent["steps"][0]["attempts"][0]["provider_ref"]
        .as_str()
        .unwrap()
        .to_string();

    let receipt = json!({"ref": provider_ref, "status": "undelivered", "key": "evt-1"});
    let forged = post(&h.app, "/receipts/sms", &[], receipt.clone()).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let signed = ("x-test-signature", "ok");
    for _ in 0..2 {
        let answer = post(&h.app, "/receipts/sms", &[signed], receipt.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    let none = post(&h.app, "/receipts/nope", &[signed], receipt).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    h.dispatcher.drain_due().await.unwrap();
    let moved = get(&h.app, &format!("/api/v1/messages/{id}")).await.json();
    assert_eq!(moved["steps"][0]["state"], "failed", "{moved}");
    assert!(
        moved["steps"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("30003")
    );
    assert_eq!(
        moved["steps"][0]["receipts"].as_array().unwrap().len(),
        1,
        "a retried receipt is one"
    );
    assert_eq!(moved["steps"][1]["state"], "delivered");
    assert_eq!(moved["state"], "delivered");
    assert_eq!(h.im.calls().len(), 1);
}
