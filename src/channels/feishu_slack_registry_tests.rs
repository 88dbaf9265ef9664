//! The Feishu / Slack kinds built from the rules: ready with their secrets, disabled with
//! the variable's name (never a value) without them.

use std::sync::Arc;

use super::{AddressKind, Audience, ChannelRegistry, ChannelStatus};
use crate::clock::{ManualClock, SharedClock};
use crate::rules::{load, secret_warnings, test_secrets};

const RULES: &str = r#"
[[channel]]
id = "bot-signed"
kind = "feishu_bot"
hook_token_env = "QF_REG_FS_HOOK"
secret_env = "QF_REG_FS_SIGN_NEVER_SET"

[[channel]]
id = "bot-plain"
kind = "feishu_bot"
hook_token_env = "QF_REG_FS_HOOK"

[[channel]]
id = "app"
kind = "feishu_app"
app_id = "cli_a1"
app_secret_env = "QF_REG_FS_APP"

[[channel]]
id = "slack-bot"
kind = "slack"
bot_token_env = "QF_REG_SLACK_TOKEN_NEVER_SET"

[[channel]]
id = "slack-hook"
kind = "slack"
webhook_url_env = "QF_REG_SLACK_HOOK"
"#;

#[test]
fn each_kind_is_built_or_disabled_naming_its_variable() {
    test_secrets::set("QF_REG_FS_HOOK", "2b6a0c9e-6d1f");
    test_secrets::set("QF_REG_FS_APP", "app-secret-value");
    test_secrets::set(
        "QF_REG_SLACK_HOOK",
        "hooks.slack.com/services/T/B/hook-secret-value",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("channels.toml"), RULES).expect("write rules");
    let rules = load(dir.path()).expect("valid rules");
    let clock: SharedClock = Arc::new(ManualClock::new(0));
    let registry = ChannelRegistry::build(&rules, &clock);

    let ready = |id: &str| match registry.get(id) {
        Some(ChannelStatus::Ready(channel)) => (channel.kind(), channel.audience()),
        other => panic!("{id} is not ready: {other:?}"),
    };
    assert_eq!(
        ready("bot-plain"),
        ("feishu_bot", Audience::Group(AddressKind::FeishuOpenId))
    );
    assert_eq!(
        ready("app"),
        ("feishu_app", Audience::Person(AddressKind::FeishuOpenId))
    );

    let disabled: Vec<(&str, &str)> = registry.disabled().collect();
    let reason = |id: &str| {
        disabled
            .iter()
            .find(|(disabled_id, _)| *disabled_id == id)
            .map(|(_, reason)| reason.to_string())
            .unwrap_or_else(|| panic!("{id} should be disabled: {disabled:?}"))
    };
    assert!(reason("bot-signed").contains("QF_REG_FS_SIGN_NEVER_SET"));
    assert!(reason("slack-bot").contains("QF_REG_SLACK_TOKEN_NEVER_SET"));
    let hook = reason("slack-hook");
    assert!(hook.contains("QF_REG_SLACK_HOOK") && hook.contains("not an http(s) URL"));
    assert!(!hook.contains("hook-secret-value"), "{hook}");
    assert_eq!(disabled.len(), 3, "{disabled:?}");

    let warnings = secret_warnings(&rules);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("`bot-signed`")));
    assert!(warnings.iter().any(|w| w.contains("`slack-bot`")));
}
