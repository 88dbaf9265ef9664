//! Reads the `[[channel]]` kinds of the Feishu / Slack family: `feishu_bot`, `feishu_app`
//! and `slack`.

use super::accounts::{check_url, read_secret_env};
use crate::rules::model::{ChannelKind, FEISHU_BASE_URL, SLACK_BASE_URL, SecretRef, SlackAuth};
use crate::rules::problem::Problem;
use crate::rules::reader::Fields;

/// `hook_token_env` (the last path segment of the bot's webhook URL), `secret_env` when
/// the bot has signing on, `base_url`.
pub(super) fn read_feishu_bot(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let hook_token = read_secret_env(fields, "hook_token_env", problems);
    // Signing is one of three security options of a custom bot (with keywords and an IP
    // allow-list), so a bot may have no secret at all.
    let secret = optional_secret(fields, "secret_env", problems);
    let base_url = base_url(fields, FEISHU_BASE_URL, problems);
    Some(ChannelKind::FeishuBot {
        hook_token: hook_token?,
        secret: secret?,
        base_url: base_url?,
    })
}

/// `app_id`, `app_secret_env`, `base_url`.
pub(super) fn read_feishu_app(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let app_id = fields.string("app_id", problems);
    let app_id = fields.require(app_id, "app_id", problems).and_then(|id| {
        if id.value.trim().is_empty() {
            problems.push(Problem::at(
                &id.pos,
                "`app_id` must not be empty; it is the app's `cli_…` id",
            ));
            return None;
        }
        Some(id.value)
    });
    let app_secret = read_secret_env(fields, "app_secret_env", problems);
    let base_url = base_url(fields, FEISHU_BASE_URL, problems);
    Some(ChannelKind::FeishuApp {
        app_id: app_id?,
        app_secret: app_secret?,
        base_url: base_url?,
    })
}

/// Exactly one of `webhook_url_env` and `bot_token_env`; `base_url` only with a bot token,
/// because an incoming webhook's URL is whole and secret.
pub(super) fn read_slack(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let has_webhook = fields.contains("webhook_url_env");
    let has_token = fields.contains("bot_token_env");
    let webhook = optional_secret(fields, "webhook_url_env", problems);
    let token = optional_secret(fields, "bot_token_env", problems);
    let auth = match (webhook?, token?) {
        (Some(url), None) => SlackAuth::Webhook(url),
        (None, Some(token)) => SlackAuth::BotToken(token),
        (Some(_), Some(_)) => {
            fields.item("base_url");
            problems.push(Problem::at(
                &fields.key_pos("bot_token_env"),
                format!(
                    "{} sets both `webhook_url_env` and `bot_token_env`; a Slack channel \
                     posts either through one incoming webhook or as a bot, so keep one",
                    fields.what()
                ),
            ));
            return None;
        }
        (None, None) => {
            fields.item("base_url");
            // Both keys absent (an invalid one was already reported).
            if !has_webhook && !has_token {
                problems.push(Problem::at(
                    fields.pos(),
                    format!(
                        "{} needs `webhook_url_env` (an incoming webhook) or `bot_token_env` \
                         (a bot token for chat.postMessage)",
                        fields.what()
                    ),
                ));
            }
            return None;
        }
    };
    let base_url = match auth {
        SlackAuth::Webhook(_) if fields.contains("base_url") => {
            fields.item("base_url");
            problems.push(Problem::at(
                &fields.key_pos("base_url"),
                "`base_url` applies to `bot_token_env` only: an incoming webhook posts to \
                 the whole URL in `webhook_url_env`, so point that variable elsewhere instead",
            ));
            None
        }
        SlackAuth::Webhook(_) => Some(SLACK_BASE_URL.to_string()),
        SlackAuth::BotToken(_) => base_url(fields, SLACK_BASE_URL, problems),
    };
    Some(ChannelKind::Slack {
        auth,
        base_url: base_url?,
    })
}

/// `Some(None)` when the key is absent, `None` when it is invalid (reported).
fn optional_secret(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<Option<SecretRef>> {
    if !fields.contains(key) {
        fields.item(key);
        return Some(None);
    }
    read_secret_env(fields, key, problems).map(Some)
}

/// The provider's API root unless the rules point elsewhere (a proxy, a test server).
fn base_url(
    fields: &mut Fields<'_, '_>,
    default: &str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    match fields.string("base_url", problems) {
        Some(url) => check_url(url, problems).map(|url| url.trim_end_matches('/').to_string()),
        None if fields.contains("base_url") => None,
        None => Some(default.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::{ChannelKind, Limits, SlackAuth, load};

    fn load_one(channel: &str) -> Result<ChannelKind, Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("c.toml"), channel).expect("write rules");
        match load(dir.path()) {
            Ok(rules) => Ok(rules.channels[0].kind.clone()),
            Err(error) => Err(error.problems.iter().map(|p| p.to_string()).collect()),
        }
    }

    fn problems(channel: &str) -> Vec<String> {
        match load_one(channel) {
            Ok(kind) => panic!("expected problems, got {kind:?}"),
            Err(problems) => problems,
        }
    }

    #[test]
    fn a_feishu_bot_reads_its_token_optional_secret_and_base_url() {
        let kind = load_one(
            "[[channel]]\nid = \"ops\"\nkind = \"feishu_bot\"\nhook_token_env = \"FS_HOOK\"\n",
        );
        let Ok(ChannelKind::FeishuBot {
            hook_token,
            secret,
            base_url,
        }) = kind
        else {
            panic!("{kind:?}");
        };
        assert_eq!(hook_token.env, "FS_HOOK");
        assert_eq!(secret, None);
        assert_eq!(base_url, "https://open.feishu.cn");

        let kind = load_one(
            "[[channel]]\nid = \"ops\"\nkind = \"feishu_bot\"\nhook_token_env = \"FS_HOOK\"\n\
             secret_env = \"FS_SIGN\"\nbase_url = \"https://open.larksuite.com/\"\n",
        );
        let Ok(ChannelKind::FeishuBot {
            secret, base_url, ..
        }) = kind
        else {
            panic!("{kind:?}");
        };
        assert_eq!(secret.map(|s| s.env), Some("FS_SIGN".to_string()));
        assert_eq!(base_url, "https://open.larksuite.com");
    }

    #[test]
    fn a_feishu_bot_never_takes_the_secret_itself() {
        let found = problems(
            "[[channel]]\nid = \"ops\"\nkind = \"feishu_bot\"\nhook_token_env = \"FS_HOOK\"\n\
             secret_env = \"abc123secret\"\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("c.toml:5:14"), "{found:?}");
        assert!(found[0].contains("NAME of an environment variable"));
    }

    #[test]
    fn a_feishu_app_needs_an_app_id_and_secret() {
        let kind = load_one(
            "[[channel]]\nid = \"fs\"\nkind = \"feishu_app\"\napp_id = \"cli_a1\"\n\
             app_secret_env = \"FS_APP_SECRET\"\n",
        );
        assert_eq!(
            kind,
            Ok(ChannelKind::FeishuApp {
                app_id: "cli_a1".into(),
                app_secret: crate::rules::SecretRef::new("FS_APP_SECRET"),
                base_url: "https://open.feishu.cn".into(),
            })
        );
        let found = problems("[[channel]]\nid = \"fs\"\nkind = \"feishu_app\"\napp_id = \" \"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found
                .iter()
                .any(|p| p.contains("c.toml:4:10: `app_id` must not be empty"))
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("missing the required key `app_secret_env`"))
        );
    }

    #[test]
    fn the_published_limits_are_the_defaults_and_the_rules_can_change_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("c.toml"),
            "[[channel]]\nid = \"a\"\nkind = \"feishu_app\"\napp_id = \"cli_a1\"\n\
             app_secret_env = \"S\"\n\n\
             [[channel]]\nid = \"b\"\nkind = \"feishu_bot\"\nhook_token_env = \"H\"\n\
             per_minute = 20\n\n\
             [[channel]]\nid = \"c\"\nkind = \"slack\"\nbot_token_env = \"T\"\n",
        )
        .expect("write rules");
        let rules = load(dir.path()).expect("valid rules");
        assert_eq!(rules.channels[0].limits.per_minute, Some(1000));
        assert_eq!(rules.channels[1].limits.per_minute, Some(20));
        assert_eq!(
            rules.channels[2].limits,
            Limits {
                recipient_per_minute: Some(60),
                ..Limits::default()
            }
        );
        assert!(
            rules
                .channels
                .iter()
                .all(|channel| channel.kind.max_batch() == 1)
        );
    }

    #[test]
    fn slack_takes_a_webhook_or_a_bot_token() {
        let kind = load_one(
            "[[channel]]\nid = \"s\"\nkind = \"slack\"\nwebhook_url_env = \"SLACK_HOOK\"\n",
        );
        assert_eq!(
            kind,
            Ok(ChannelKind::Slack {
                auth: SlackAuth::Webhook(crate::rules::SecretRef::new("SLACK_HOOK")),
                base_url: "https://slack.com/api".into(),
            })
        );
        let kind = load_one(
            "[[channel]]\nid = \"s\"\nkind = \"slack\"\nbot_token_env = \"SLACK_BOT\"\n\
             base_url = \"http://127.0.0.1:9/api\"\n",
        );
        assert_eq!(
            kind,
            Ok(ChannelKind::Slack {
                auth: SlackAuth::BotToken(crate::rules::SecretRef::new("SLACK_BOT")),
                base_url: "http://127.0.0.1:9/api".into(),
            })
        );
    }

    #[test]
    fn slack_refuses_neither_both_or_a_base_url_for_a_webhook() {
        let neither = problems("[[channel]]\nid = \"s\"\nkind = \"slack\"\n");
        assert_eq!(neither.len(), 1, "{neither:?}");
        assert!(neither[0].contains("needs `webhook_url_env`"));

        let both = problems(
            "[[channel]]\nid = \"s\"\nkind = \"slack\"\nwebhook_url_env = \"A\"\n\
             bot_token_env = \"B\"\n",
        );
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(both[0].contains("c.toml:5:1"), "{both:?}");
        assert!(both[0].contains("sets both"));

        let base = problems(
            "[[channel]]\nid = \"s\"\nkind = \"slack\"\nwebhook_url_env = \"A\"\n\
             base_url = \"https://example.com\"\n",
        );
        assert_eq!(base.len(), 1, "{base:?}");
        assert!(base[0].contains("c.toml:5:1"), "{base:?}");
        assert!(base[0].contains("applies to `bot_token_env` only"));
    }
}
