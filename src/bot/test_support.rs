//! Fixtures shared by the bot and inbound tests: a small rule set, chat events, and a
//! fresh SQLite database per test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use secrecy::SecretString;

use crate::app::{AppState, Live};
use crate::channels::ChannelRegistry;
use crate::clock::{ManualClock, SharedClock};
use crate::db::{DatabaseUrl, Db};
use crate::inbound::{ChatEvent, ChatKind};
use crate::rules::{
    CommandRule, DeliverySettings, InboundAccount, InboundPlatform, Operator, Role, Rules,
};

/// An arbitrary fixed instant, so audit timestamps are predictable.
pub const START_MS: i64 = 1_764_000_000_000;

/// A `shell` inbound account, operators `admin` (admin) and `viewer` (viewer) on the
/// shell platform, and the `help` (viewer, aliases 帮助/h) and `whoami` (anyone, alias
/// 我是谁) commands.
pub fn rules() -> Rules {
    let operator = |user: &str, role| Operator {
        platform: "shell".to_string(),
        user: user.to_string(),
        role,
    };
    let command = |name: &str, aliases: &[&str], role, summary: &str, usage: &str| CommandRule {
        name: name.to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        role,
        summary: summary.to_string(),
        usage: usage.to_string(),
    };
    let commands = [
        command(
            "help",
            &["帮助", "h"],
            Some(Role::Viewer),
            "List the commands you may use, or show how to use one",
            "[command]",
        ),
        command(
            "whoami",
            &["我是谁"],
            None,
            "Show your platform, user id and role",
            "",
        ),
    ];
    Rules {
        dir: PathBuf::from("bot-rules"),
        delivery: DeliverySettings::default(),
        inbound: vec![InboundAccount {
            id: "shell".to_string(),
            platform: InboundPlatform::Shell,
        }],
        channels: Vec::new(),
        operators: vec![
            operator("admin", Role::Admin),
            operator("viewer", Role::Viewer),
        ],
        commands: commands
            .into_iter()
            .map(|command| (command.name.clone(), command))
            .collect::<BTreeMap<_, _>>(),
        api_tokens: Vec::new(),
    }
}

/// `rules` in force with no channels.
pub fn live(rules: &Rules) -> Live {
    Live {
        rules: Arc::new(rules.clone()),
        channels: ChannelRegistry::default(),
        disabled_inbound: Vec::new(),
    }
}

/// A direct message on the shell account.
pub fn event(sender: &str, text: &str) -> ChatEvent {
    ChatEvent {
        platform: "shell".to_string(),
        account: "shell".to_string(),
        chat: "console".to_string(),
        chat_kind: ChatKind::Direct,
        sender: sender.to_string(),
        sender_name: None,
        text: text.to_string(),
        message_id: None,
    }
}

/// A migrated database in its own temporary directory; keep the directory alive.
pub async fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = Db::open(&DatabaseUrl::Sqlite(dir.path().join("t.db")))
        .await
        .expect("open test database");
    (dir, db)
}

pub fn clock() -> SharedClock {
    Arc::new(ManualClock::new(START_MS))
}

/// Application state over [`rules`], with `token` as the shell token and the given
/// inbound accounts disabled.
pub fn app_state(db: Db, token: &str, disabled_inbound: Vec<(String, String)>) -> AppState {
    let live = Live {
        rules: Arc::new(rules()),
        channels: ChannelRegistry::default(),
        disabled_inbound,
    };
    AppState::from(crate::app::AppParts {
        db,
        live: Arc::new(ArcSwap::from_pointee(live)),
        clock: clock(),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        shell_token: Arc::new(SecretString::from(token.to_string())),
        admin_token: None,
        inbound: Default::default(),
        delivery_wake: Default::default(),
        breakers: Default::default(),
    })
}
