//! The dispatcher's governance of a channel, end to end over a real outbox: a disabled
//! account opens its circuit at once, later messages skip it without a call and fall back
//! along their routes, the ops chat is told once; a per-minute quota spaces sends out and
//! holds the rest without losing any; a probe after the cool-down closes the circuit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::route::{self, MessageRequest};
use super::{DeliverySetup, Dispatcher, Outbox};
use crate::channels::{
    AddressKind, Audience, Channel, ChannelRegistry, ChannelStatus, Message, SendContext,
    SendResult, Verdict,
};
use crate::clock::{Clock, ManualClock, SharedClock};
use crate::db::testing::TestDb;
use crate::rules::{DeliverySettings, Limits};

/// Answers every call with the verdict currently set, and counts calls.
#[derive(Debug)]
struct Switchable {
    audience: Audience,
    verdict: Mutex<Verdict>,
    calls: Mutex<Vec<String>>,
}

impl Switchable {
    fn new(audience: Audience, verdict: Verdict) -> Arc<Self> {
        Arc::new(Self {
            audience,
            verdict: Mutex::new(verdict),
            calls: Mutex::default(),
        })
    }
    fn set(&self, verdict: Verdict) {
        *self.verdict.lock().unwrap() = verdict;
    }
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Channel for Switchable {
    fn kind(&self) -> &'static str {
        "switchable"
    }
    fn audience(&self) -> Audience {
        self.audience
    }
    async fn send(&self, ctx: &SendContext<'_>, _: &Message) -> SendResult {
        self.calls.lock().unwrap().push(ctx.recipient.to_string());
        let verdict = self.verdict.lock().unwrap().clone();
        SendResult::new(verdict, Some(200), "switchable")
    }
}

struct Setup {
    registry: ChannelRegistry,
    limits: Limits,
    alerts: Mutex<Vec<(String, String)>>,
}

impl DeliverySetup for Setup {
    fn settings(&self) -> DeliverySettings {
        DeliverySettings::default()
    }
    fn channel(&self, id: &str) -> Option<ChannelStatus> {
        self.registry.get(id).cloned()
    }
    fn limits(&self, id: &str) -> Limits {
        if id == "sms" {
            self.limits
        } else {
            Limits::default()
        }
    }
    fn alert(&self, key: String, about_channel: String, _text: String) {
        self.alerts.lock().unwrap().push((key, about_channel));
    }
}

struct Harness {
    db: TestDb,
    outbox: Outbox,
    clock: Arc<ManualClock>,
    robot: Arc<Switchable>,
    sms: Arc<Switchable>,
    setup: Arc<Setup>,
    dispatcher: Dispatcher<Setup>,
}

async fn harness(sms_limits: Limits) -> Harness {
    let db = TestDb::sqlite().await.unwrap();
    let outbox = Outbox::new(db.db.clone());
    let clock = Arc::new(ManualClock::new(1_764_000_000_000));
    let shared: SharedClock = clock.clone();
    let robot = Switchable::new(
        Audience::Group(AddressKind::WecomUser),
        Verdict::AccountDisabled,
    );
    let sms = Switchable::new(Audience::Person(AddressKind::Phone), Verdict::Delivered);
    let registry = ChannelRegistry::from_statuses([
        ("robot".to_string(), ChannelStatus::Ready(robot.clone())),
        ("sms".to_string(), ChannelStatus::Ready(sms.clone())),
    ]);
    let setup = Arc::new(Setup {
        registry,
        limits: sms_limits,
        alerts: Mutex::default(),
    });
    let dispatcher = Dispatcher::new(outbox.clone(), setup.clone(), shared, "w".into());
    Harness {
        db,
        outbox,
        clock,
        robot,
        sms,
        setup,
        dispatcher,
    }
}

impl Harness {
    async fn send(&self, route: &[&str], phone: &str) -> String {
        let request: MessageRequest = serde_json::from_value(serde_json::json!({
            "recipient": {"wecom_user": "zhangsan", "phone": phone},
            "route": route,
            "content": {"text": "你好"}
        }))
        .unwrap();
        let message = route::resolve(&request, None, &self.setup.registry).unwrap();
        let accepted = self
            .outbox
            .accept_messages(&[message], self.clock.now_ms(), Duration::from_secs(86_400))
            .await
            .unwrap();
        match &accepted[0] {
            super::Accepted::Message { id, .. } => id.clone(),
            other => panic!("{other:?}"),
        }
    }

    async fn state(&self, id: &str) -> String {
        let view = self.outbox.message(id).await.unwrap().unwrap();
        serde_json::to_value(view.state)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[tokio::test]
async fn a_disabled_robot_opens_its_circuit_and_pending_messages_fall_back() {
    let h = harness(Limits::default()).await;
    let first = h.send(&["robot", "sms"], "+861").await;
    h.dispatcher.drain_due().await.unwrap();
    h.dispatcher.drain_due().await.unwrap();
    assert_eq!(h.state(&first).await, "delivered");
    assert_eq!((h.robot.calls(), h.sms.calls()), (1, 1));
    let alerts = h.setup.alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "told once: {alerts:?}");
    assert!(alerts[0].0.starts_with("circuit-open:robot:"));

    // While open: no call on the robot, straight to SMS.
    let second = h.send(&["robot", "sms"], "+862").await;
    h.dispatcher.drain_due().await.unwrap();
    h.dispatcher.drain_due().await.unwrap();
    assert_eq!(h.state(&second).await, "delivered");
    assert_eq!((h.robot.calls(), h.sms.calls()), (1, 2));
    let view = h.outbox.message(&second).await.unwrap().unwrap();
    assert_eq!(view.steps[0].attempts[0].outcome, "circuit_open");

    // A message with nowhere else to go waits for the circuit instead of failing.
    let third = h.send(&["robot"], "+863").await;
    h.dispatcher.drain_due().await.unwrap();
    assert_eq!(h.state(&third).await, "sending");
    assert_eq!(h.robot.calls(), 1);

    // After the cool-down one probe goes; the robot works again, the circuit closes.
    h.robot.set(Verdict::Delivered);
    h.clock.advance(Duration::from_secs(11 * 60));
    h.dispatcher.drain_due().await.unwrap();
    assert_eq!(h.state(&third).await, "delivered");
    assert_eq!(h.robot.calls(), 2);
    let alerts = h.setup.alerts.lock().unwrap().clone();
    assert!(
        alerts[1].0.starts_with("circuit-closed:robot:"),
        "{alerts:?}"
    );
    h.db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_per_minute_quota_spaces_sends_and_loses_none() {
    let limits = Limits {
        per_minute: Some(2),
        ..Limits::default()
    };
    let h = harness(limits).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(h.send(&["sms"], &format!("+86{i}")).await);
    }
    h.dispatcher.drain_due().await.unwrap();
    assert_eq!(h.sms.calls(), 1, "the rest are paced, not burst");
    for _ in 0..20 {
        h.clock.advance(Duration::from_secs(31));
        h.dispatcher.drain_due().await.unwrap();
    }
    assert_eq!(h.sms.calls(), 5);
    for id in &ids {
        assert_eq!(h.state(id).await, "delivered");
    }
    h.db.cleanup().await.unwrap();
}
