//! Reads the `[[channel]]` kinds of the WeCom / WeChat family: `wecom_robot`, `wecom_app`,
//! `wechat_oa`, and `qq` (accepted so configs load; the channel refuses to send).

use std::time::Duration;

use super::accounts::{check_url, read_secret_env};
use super::parse_duration_at;
use crate::rules::model::ChannelKind;
use crate::rules::problem::{At, Problem};
use crate::rules::reader::Fields;

/// Where each provider's API lives unless the rules point elsewhere.
pub(in crate::rules) const WECOM_BASE_URL: &str = "https://qyapi.weixin.qq.com";
pub(in crate::rules) const WECHAT_BASE_URL: &str = "https://api.weixin.qq.com";
pub(in crate::rules) const QQ_BOT_BASE_URL: &str = "https://api.sgroup.qq.com";

/// WeCom's default `duplicate_check_interval`, and the longest it accepts.
const DUPLICATE_CHECK_DEFAULT: Duration = Duration::from_secs(30 * 60);
const DUPLICATE_CHECK_MAX: Duration = Duration::from_secs(4 * 60 * 60);

pub(super) fn read_wecom_robot(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let key = read_secret_env(fields, "key_env", problems);
    let base_url = base_url(fields, WECOM_BASE_URL, problems);
    Some(ChannelKind::WecomRobot {
        key: key?,
        base_url: base_url?,
    })
}

pub(super) fn read_wecom_app(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let corp_id = required_text(fields, "corp_id", problems);
    let agent_id = read_agent_id(fields, problems);
    let secret = read_secret_env(fields, "secret_env", problems);
    let base_url = base_url(fields, WECOM_BASE_URL, problems);
    let duplicate_check = read_duplicate_check(fields, problems);
    Some(ChannelKind::WecomApp {
        corp_id: corp_id?,
        agent_id: agent_id?,
        secret: secret?,
        base_url: base_url?,
        duplicate_check: duplicate_check?,
    })
}

pub(super) fn read_wechat_oa(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let app_id = required_text(fields, "app_id", problems);
    let app_secret = read_secret_env(fields, "app_secret_env", problems);
    let template_id = optional_text(fields, "template_id", problems);
    let mass_send = read_mode(fields, problems);
    let base_url = base_url(fields, WECHAT_BASE_URL, problems);
    Some(ChannelKind::WechatOa {
        app_id: app_id?,
        app_secret: app_secret?,
        template_id: template_id?,
        mass_send: mass_send?,
        base_url: base_url?,
    })
}

pub(super) fn read_qq(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let app_id = required_text(fields, "app_id", problems);
    let app_secret = read_secret_env(fields, "app_secret_env", problems);
    let base_url = base_url(fields, QQ_BOT_BASE_URL, problems);
    Some(ChannelKind::Qq {
        app_id: app_id?,
        app_secret: app_secret?,
        base_url: base_url?,
    })
}

/// The app's AgentId, as an integer or a string of digits (the inbound `wecom_app` takes
/// a string, and operators copy the same value).
fn read_agent_id(fields: &mut Fields<'_, '_>, problems: &mut Vec<Problem>) -> Option<i64> {
    let Some((item, pos)) = fields.item("agent_id") else {
        problems.push(Problem::at(
            fields.pos(),
            format!("{} is missing the required key `agent_id`", fields.what()),
        ));
        return None;
    };
    let value = item
        .as_integer()
        .or_else(|| item.as_str().and_then(|text| text.trim().parse().ok()))
        .filter(|id| *id > 0);
    if value.is_none() {
        problems.push(Problem::at(
            &pos,
            "`agent_id` must be the app's AgentId, a positive number such as 1000002",
        ));
    }
    value
}

/// `duplicate_check`: a duration up to 4 h, or `false` to switch WeCom's check off.
/// `Some(None)` is "off", `None` an invalid value (the problem is recorded).
fn read_duplicate_check(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<Option<Duration>> {
    let Some((item, pos)) = fields.item("duplicate_check") else {
        return Some(Some(DUPLICATE_CHECK_DEFAULT));
    };
    if let Some(enabled) = item.as_bool() {
        return Some(enabled.then_some(DUPLICATE_CHECK_DEFAULT));
    }
    let Some(text) = item.as_str() else {
        problems.push(Problem::at(
            &pos,
            "`duplicate_check` must be a duration such as \"30m\", or false to switch it off",
        ));
        return None;
    };
    let what = fields.what().to_string();
    let text = At {
        value: text.to_string(),
        pos,
    };
    let interval = parse_duration_at(text, "duplicate_check", &what, problems)?;
    if interval.value < Duration::from_secs(1) || interval.value > DUPLICATE_CHECK_MAX {
        problems.push(Problem::at(
            &interval.pos,
            "`duplicate_check` must be between 1s and 4h, the interval WeCom accepts",
        ));
        return None;
    }
    Some(Some(interval.value))
}

/// `mode`: `"template"` (default) or `"mass"`; `Some(true)` for mass sends.
fn read_mode(fields: &mut Fields<'_, '_>, problems: &mut Vec<Problem>) -> Option<bool> {
    let Some(mode) = fields.string("mode", problems) else {
        return (!fields.contains("mode")).then_some(false);
    };
    match mode.value.as_str() {
        "template" => Some(false),
        "mass" => Some(true),
        other => {
            problems.push(Problem::at(
                &mode.pos,
                format!("unknown `mode` `{other}`; use \"template\" or \"mass\""),
            ));
            None
        }
    }
}

fn required_text(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let value = fields.string(key, problems);
    let value = fields.require(value, key, problems)?;
    if value.value.trim().is_empty() {
        problems.push(Problem::at(
            &value.pos,
            format!("`{key}` must not be empty"),
        ));
        return None;
    }
    Some(value.value)
}

/// `Some(None)` when absent or blank, `None` when it has the wrong type.
fn optional_text(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<Option<String>> {
    match fields.string(key, problems) {
        Some(value) => Some(Some(value.value).filter(|text| !text.trim().is_empty())),
        None if fields.contains(key) => None,
        None => Some(None),
    }
}

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
    use super::*;
    use crate::rules::model::{Limits, SecretRef};
    use crate::rules::{ChannelAccount, load};

    fn load_channels(toml: &str) -> Result<Vec<ChannelAccount>, Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("channels.toml"), toml).expect("write rules");
        match load(dir.path()) {
            Ok(rules) => Ok(rules.channels),
            Err(error) => Err(error.problems.iter().map(|p| p.to_string()).collect()),
        }
    }

    fn one_channel(toml: &str) -> ChannelAccount {
        match load_channels(toml) {
            Ok(mut channels) if channels.len() == 1 => channels.remove(0),
            other => panic!("expected one channel, got {other:?}"),
        }
    }

    fn problem(toml: &str) -> String {
        match load_channels(toml) {
            Err(problems) => problems.join("\n"),
            Ok(channels) => panic!("expected a problem, loaded {channels:?}"),
        }
    }

    #[test]
    fn a_robot_reads_its_key_and_gets_the_published_limit() {
        let account = one_channel(
            "[[channel]]\nid = \"ops\"\nkind = \"wecom_robot\"\nkey_env = \"QUNFA_ROBOT_KEY\"\n",
        );
        assert_eq!(
            account.kind,
            ChannelKind::WecomRobot {
                key: SecretRef::new("QUNFA_ROBOT_KEY"),
                base_url: WECOM_BASE_URL.to_string(),
            }
        );
        assert_eq!(account.limits.per_minute, Some(20));
        assert_eq!(account.batch_size, None);
        assert_eq!(account.kind.max_batch(), 1);
    }

    #[test]
    fn an_app_takes_agent_id_as_number_or_string_and_checks_duplicates_by_default() {
        for agent in ["1000002", "\"1000002\""] {
            let account = one_channel(&format!(
                "[[channel]]\nid = \"app\"\nkind = \"wecom_app\"\ncorp_id = \"ww1\"\n\
                 agent_id = {agent}\nsecret_env = \"APP_SECRET\"\nbase_url = \"http://127.0.0.1:9/\"\n"
            ));
            assert_eq!(
                account.kind,
                ChannelKind::WecomApp {
                    corp_id: "ww1".into(),
                    agent_id: 1_000_002,
                    secret: SecretRef::new("APP_SECRET"),
                    base_url: "http://127.0.0.1:9".into(),
                    duplicate_check: Some(DUPLICATE_CHECK_DEFAULT),
                }
            );
            assert_eq!(
                account.limits,
                Limits {
                    recipient_per_minute: Some(30),
                    ..Limits::default()
                }
            );
            assert_eq!(account.kind.max_batch(), 1000);
        }
    }

    #[test]
    fn the_duplicate_check_can_be_tuned_or_switched_off() {
        let app = "[[channel]]\nid = \"app\"\nkind = \"wecom_app\"\ncorp_id = \"ww1\"\nagent_id = 1\nsecret_env = \"S\"\n";
        let interval = |toml: &str| match one_channel(toml).kind {
            ChannelKind::WecomApp {
                duplicate_check, ..
            } => duplicate_check,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            interval(&format!("{app}duplicate_check = \"2h\"\n")),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(interval(&format!("{app}duplicate_check = false\n")), None);
        assert!(problem(&format!("{app}duplicate_check = \"5h\"\n")).contains("between 1s and 4h"));
        assert!(
            problem(&format!("{app}duplicate_check = 30\n")).contains("false to switch it off")
        );
        assert!(
            problem(&app.replace("agent_id = 1", "agent_id = \"x\"")).contains("positive number")
        );
        assert!(problem(&app.replace("agent_id = 1\n", "")).contains("`agent_id`"));
    }

    #[test]
    fn wechat_oa_defaults_to_template_messages_and_reads_mass_mode() {
        let oa = "[[channel]]\nid = \"oa\"\nkind = \"wechat_oa\"\napp_id = \"wx1\"\napp_secret_env = \"OA_SECRET\"\n";
        let template = one_channel(&format!("{oa}template_id = \"tpl-1\"\n"));
        assert_eq!(
            template.kind,
            ChannelKind::WechatOa {
                app_id: "wx1".into(),
                app_secret: SecretRef::new("OA_SECRET"),
                template_id: Some("tpl-1".into()),
                mass_send: false,
                base_url: WECHAT_BASE_URL.into(),
            }
        );
        assert_eq!(template.limits.per_day, Some(100_000));
        assert_eq!(template.kind.max_batch(), 1);

        let mass = one_channel(&format!("{oa}mode = \"mass\"\nbatch_size = 500\n"));
        assert!(matches!(
            mass.kind,
            ChannelKind::WechatOa {
                mass_send: true,
                template_id: None,
                ..
            }
        ));
        assert_eq!(mass.limits.recipient_per_month, Some(4));
        assert_eq!(mass.batch_size, Some(500));
        assert_eq!(mass.kind.max_batch(), 10_000);

        assert!(problem(&format!("{oa}mode = \"tag\"\n")).contains("\"template\" or \"mass\""));
    }

    #[test]
    fn qq_is_accepted_so_existing_configs_load() {
        let account = one_channel(
            "[[channel]]\nid = \"qq\"\nkind = \"qq\"\napp_id = \"102\"\napp_secret_env = \"QQ_SECRET\"\n",
        );
        assert_eq!(
            account.kind,
            ChannelKind::Qq {
                app_id: "102".into(),
                app_secret: SecretRef::new("QQ_SECRET"),
                base_url: QQ_BOT_BASE_URL.into(),
            }
        );
        assert!(account.limits.is_unlimited());
    }

    #[test]
    fn unknown_keys_and_missing_fields_are_reported() {
        let text = problem("[[channel]]\nid = \"ops\"\nkind = \"wecom_robot\"\nkey = \"abc\"\n");
        assert!(
            text.contains("missing the required key `key_env`"),
            "{text}"
        );
        assert!(text.contains("unknown key `key`"), "{text}");
    }
}
