//! `/send-test` and `/quota` through the router, against a real SQLite database and
//! channels built from rules the way `qunfa serve` builds them.

use std::sync::Arc;

use crate::app::Live;
use crate::bot::Bot;
use crate::bot::store::{self, Outcome};
use crate::bot::test_support::{self, START_MS};
use crate::channels::ChannelRegistry;
use crate::clock::SharedClock;
use crate::db::Db;
use crate::delivery::breaker::{BreakerSettings, Breakers};
use crate::delivery::quota::{Quotas, zone_named};
use crate::inbound::{Admission, InboundRuntime};
use crate::rules::{ChannelAccount, ChannelKind, Limits, Rules, SecretRef, default_command};

/// The shell rules plus both commands with their shipped defaults, a `log` channel limited
/// to 20 a minute and 30 a day per recipient, and a webhook whose secret is never set.
fn rules(log_path: &std::path::Path) -> Rules {
    let mut rules = test_support::rules();
    for name in ["send-test", "quota"] {
        let command = default_command(name).expect("built-in");
        rules.commands.insert(name.to_string(), command);
    }
    rules.channels = vec![
        ChannelAccount {
            id: "log".to_string(),
            kind: ChannelKind::Log {
                path: log_path.to_path_buf(),
            },
            limits: Limits {
                per_minute: Some(20),
                recipient_per_day: Some(30),
                ..Limits::default()
            },
            batch_size: None,
        },
        ChannelAccount {
            id: "hooks".to_string(),
            kind: ChannelKind::Webhook {
                url: "http://127.0.0.1:9/hook".to_string(),
                secret: SecretRef::new("QUNFA_TEST_SECRET_THAT_IS_NEVER_SET"),
            },
            limits: Limits::default(),
            batch_size: None,
        },
    ];
    rules
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    clock: SharedClock,
    live: Live,
}

async fn fixture() -> Fixture {
    let (dir, db) = test_support::db().await;
    let clock = test_support::clock();
    let rules = rules(&dir.path().join("outbox.jsonl"));
    let channels = ChannelRegistry::build(&rules, &clock);
    let live = Live {
        rules: Arc::new(rules),
        channels,
        disabled_inbound: Vec::new(),
    };
    Fixture {
        _dir: dir,
        db,
        clock,
        live,
    }
}

impl Fixture {
    fn bot(&self) -> Bot {
        Bot::new(self.db.clone(), self.clock.clone())
    }

    async fn ask(&self, sender: &str, text: &str) -> String {
        self.ask_as(&self.bot(), sender, text).await
    }

    async fn ask_as(&self, bot: &Bot, sender: &str, text: &str) -> String {
        let replies = bot
            .handle(&self.live, &test_support::event(sender, text))
            .await;
        assert_eq!(replies.len(), 1, "one reply to {text:?}: {replies:?}");
        replies.into_iter().map(|reply| reply.text).collect()
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.db.reader())
            .await
            .expect("count")
    }

    /// Every audit row as (command, outcome), sorted: rows queued together may be
    /// written in any order.
    async fn outcomes(&self) -> Vec<(String, Outcome)> {
        self.db.grouped().flush().await.expect("flush");
        let rows = store::recent_audit(&self.db, 100).await.expect("audit");
        let mut outcomes: Vec<(String, Outcome)> = rows
            .into_iter()
            .map(|row| (row.command, row.outcome))
            .collect();
        outcomes.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
        outcomes
    }
}

#[tokio::test]
async fn send_test_queues_one_message_through_the_outbox_with_its_audit_row() {
    let f = fixture().await;
    let reply = f.ask("admin", "/send-test log alice hello  world").await;
    assert!(reply.starts_with("queued through `log` as msg_"), "{reply}");
    let (recipient, payload): (String, String) =
        sqlx::query_as("SELECT recipient, payload FROM delivery_jobs")
            .fetch_one(f.db.reader())
            .await
            .expect("one job");
    assert_eq!(recipient, "alice");
    let message: serde_json::Value = serde_json::from_str(&payload).expect("payload JSON");
    assert_eq!(message["text"], "hello world", "{payload}");
    assert_eq!(f.count("messages").await, 1);
    assert_eq!(
        f.outcomes().await,
        vec![("send-test".to_string(), Outcome::Ok)]
    );

    // The further lines of the chat message belong to the text; Chinese gets Chinese.
    let zh = f.ask("admin", "测试发送 log bob 第一行\n第二行").await;
    assert!(zh.starts_with("已通过 `log` 加入发送队列"), "{zh}");
    let payload: String =
        sqlx::query_scalar("SELECT payload FROM delivery_jobs WHERE recipient = 'bob'")
            .fetch_one(f.db.reader())
            .await
            .expect("bob's job");
    assert!(payload.contains(r#""text":"第一行\n第二行""#), "{payload}");
}

#[tokio::test]
async fn a_retried_send_test_callback_sends_nothing_twice() {
    let f = fixture().await;
    let runtime = Arc::new(InboundRuntime::default());
    let event = test_support::event("admin", "/send-test log alice hi");
    let admit = |runtime: &Arc<InboundRuntime>| {
        Admission::claim(runtime, "shell", "callback-1", START_MS).expect("first sight")
    };
    let first = f
        .bot()
        .handle_admitted(&f.live, &event, admit(&runtime))
        .await;
    assert!(first[0].text.contains("queued"), "{first:?}");
    // A restarted process has forgotten the id; the database has not.
    let restarted = Arc::new(InboundRuntime::default());
    let retry = f
        .bot()
        .handle_admitted(&f.live, &event, admit(&restarted))
        .await;
    assert!(
        retry.is_empty(),
        "the retry is answered by nothing: {retry:?}"
    );
    assert_eq!(f.count("messages").await, 1);
    assert_eq!(f.count("delivery_jobs").await, 1);
}

#[tokio::test]
async fn send_test_refusals_say_why_and_queue_nothing() {
    let f = fixture().await;
    let cases = [
        (
            "viewer",
            "/send-test log alice hi",
            "needs the role operator or higher",
        ),
        (
            "admin",
            "/send-test log alice",
            "Usage: /send-test <channel> <to> <text>",
        ),
        ("admin", "/send-test", "Usage: /send-test"),
        (
            "admin",
            "/send-test log alice hi --now",
            "Usage: /send-test",
        ),
        (
            "admin",
            "/send-test sms alice hi",
            "there is no channel `sms` in the rules. Channels: hooks, log",
        ),
        (
            "admin",
            "/send-test hooks alice hi",
            "nothing was queued: channel `hooks` is disabled",
        ),
        (
            "admin",
            "/send-test log - hi",
            "nothing was queued: no channel of the route can reach this recipient",
        ),
    ];
    for (sender, text, expected) in cases {
        let reply = f.ask(sender, text).await;
        assert!(reply.contains(expected), "{text:?} → {reply}");
    }
    assert_eq!(f.count("messages").await, 0);
    assert_eq!(f.count("delivery_jobs").await, 0);
    let mut expected = vec![("send-test".to_string(), Outcome::Denied)];
    expected.extend((1..cases.len()).map(|_| ("send-test".to_string(), Outcome::Invalid)));
    assert_eq!(f.outcomes().await, expected);
}

#[tokio::test]
async fn quota_shows_what_each_account_has_left_in_the_quota_zone() {
    let f = fixture().await;
    let zone = zone_named(&f.live.rules.delivery.quota_time_zone);
    let limits = f.live.channels.limits("log");
    Quotas::new(f.db.clone(), zone)
        .reserve("log", &limits, &["a", "b", "c"], START_MS)
        .await
        .expect("reserve");
    let reply = f.ask("viewer", "/quota").await;
    // START_MS is 2025-11-24 16:00:00 UTC, midnight in Shanghai.
    assert!(
        reply.starts_with("Quotas at 11-25 00:00 (Asia/Shanghai):"),
        "{reply}"
    );
    assert!(
        reply.contains("\nlog: minute 3/20 (17 left, resets 11-25 00:01); each recipient 30/day"),
        "{reply}"
    );
    assert!(
        reply.contains("\nhooks: no account limits; DISABLED: "),
        "{reply}"
    );
    assert!(
        reply.contains("QUNFA_TEST_SECRET_THAT_IS_NEVER_SET"),
        "the operator is told which variable to set: {reply}"
    );

    let one = f.ask("viewer", "配额 log").await;
    assert_eq!(
        one,
        "配额（Asia/Shanghai 11-25 00:00）：\nlog: 每分钟 3/20（剩余 17，11-25 00:01 重置）；每位接收人 每天 30"
    );
    let unknown = f.ask("viewer", "/quota nope").await;
    assert!(unknown.contains("there is no channel `nope`"), "{unknown}");
    let outcomes = f.outcomes().await;
    assert!(
        outcomes.contains(&("quota".to_string(), Outcome::Invalid)),
        "{outcomes:?}"
    );
    let stranger = f.ask("someone", "/quota").await;
    assert!(
        stranger.contains("needs the role viewer or higher"),
        "{stranger}"
    );
}

#[tokio::test]
async fn quota_reports_an_open_circuit_of_the_serving_workers() {
    let f = fixture().await;
    let state = test_support::app_state(f.db.clone(), "t", vec![]);
    let settings = BreakerSettings::default();
    let disabled = crate::channels::Verdict::AccountDisabled;
    open_circuit(&state.breakers, &settings, &disabled);
    let bot = Bot::serving(&state);
    let reply = f.ask_as(&bot, "admin", "/quota log").await;
    assert!(
        reply.contains("; circuit OPEN until 11-25 00:10"),
        "{reply}"
    );
}

fn open_circuit(
    breakers: &Breakers,
    settings: &BreakerSettings,
    verdict: &crate::channels::Verdict,
) {
    breakers.record("log", settings, verdict, START_MS);
}
