//! Reads the DingTalk `[[channel]]` kinds: `dingtalk_robot` (custom group robot) and
//! `dingtalk_app` (work notifications or the app robot's 1:1 chats).

use super::accounts::{check_url, read_secret_env};
use crate::rules::model::{ChannelKind, DingtalkAppTarget, SecretRef};
use crate::rules::problem::Problem;
use crate::rules::reader::Fields;

/// DingTalk lets a robot's security settings list at most 10 keywords.
const MAX_KEYWORDS: usize = 10;

/// Reads every field before judging, so one run reports all problems of the entry.
pub(super) fn read_robot(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let access_token = read_secret_env(fields, "access_token_env", problems);
    let secret = optional_secret(fields, "secret_env", problems);
    let keywords = read_keywords(fields, problems);
    let base_url = optional_base_url(fields, problems);
    Some(ChannelKind::DingtalkRobot {
        access_token: access_token?,
        secret: secret?,
        keywords: keywords?,
        base_url: base_url?,
    })
}

pub(super) fn read_app(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let app_key = fields.string("app_key", problems);
    let app_key = fields
        .require(app_key, "app_key", problems)
        .and_then(|key| {
            if key.value.trim().is_empty() {
                problems.push(Problem::at(&key.pos, "`app_key` must not be empty"));
                return None;
            }
            Some(key.value)
        });
    let app_secret = read_secret_env(fields, "app_secret_env", problems);
    let target = read_target(fields, problems);
    let base_url = optional_base_url(fields, problems);
    Some(ChannelKind::DingtalkApp {
        app_key: app_key?,
        app_secret: app_secret?,
        target: target?,
        base_url: base_url?,
    })
}

/// `agent_id` (work notifications) or `robot_code` (robot 1:1 chats), exactly one.
fn read_target(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<DingtalkAppTarget> {
    let had_agent = fields.contains("agent_id");
    let had_robot = fields.contains("robot_code");
    let agent_id = read_agent_id(fields, problems);
    let robot_code = fields.string("robot_code", problems).and_then(|code| {
        if code.value.trim().is_empty() {
            problems.push(Problem::at(&code.pos, "`robot_code` must not be empty"));
            return None;
        }
        Some(code)
    });
    match (had_agent, had_robot) {
        (true, true) => {
            problems.push(Problem::at(
                &fields.key_pos("robot_code"),
                format!(
                    "{} sets both `agent_id` and `robot_code`; set `agent_id` for work \
                     notifications or `robot_code` for robot 1:1 messages, not both \
                     (use two channels for both)",
                    fields.what()
                ),
            ));
            None
        }
        (false, false) => {
            problems.push(Problem::at(
                fields.pos(),
                format!(
                    "{} needs `agent_id` (work notifications) or `robot_code` (robot 1:1 \
                     messages)",
                    fields.what()
                ),
            ));
            None
        }
        (true, false) => agent_id.map(|agent_id| DingtalkAppTarget::WorkNotification { agent_id }),
        (false, true) => robot_code.map(|code| DingtalkAppTarget::Robot {
            robot_code: code.value,
        }),
    }
}

/// The agent id as DingTalk shows it: a positive number, written bare or quoted.
fn read_agent_id(fields: &mut Fields<'_, '_>, problems: &mut Vec<Problem>) -> Option<i64> {
    let (item, pos) = fields.item("agent_id")?;
    let value = item.as_integer().or_else(|| {
        item.as_str()
            .and_then(|text| text.trim().parse::<i64>().ok())
    });
    match value {
        Some(agent_id) if agent_id > 0 => Some(agent_id),
        _ => {
            problems.push(Problem::at(
                &pos,
                "`agent_id` must be the app's AgentId, a positive number such as 123456789",
            ));
            None
        }
    }
}

/// `keyword = "通知"` or `keyword = ["通知", "告警"]`: the robot's security keywords.
/// `Some(vec![])` when absent.
fn read_keywords(fields: &mut Fields<'_, '_>, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
    let Some((item, pos)) = fields.item("keyword") else {
        return Some(Vec::new());
    };
    let keywords: Option<Vec<String>> = if let Some(text) = item.as_str() {
        Some(vec![text.to_string()])
    } else if let Some(array) = item.as_array() {
        array
            .iter()
            .map(|value| value.as_str().map(str::to_string))
            .collect()
    } else {
        None
    };
    let complaint = match &keywords {
        None => Some("`keyword` must be a string or an array of strings".to_string()),
        Some(list) if list.is_empty() || list.iter().any(|k| k.trim().is_empty()) => {
            Some("`keyword` must not be empty; leave it out if the robot has none".to_string())
        }
        Some(list) if list.len() > MAX_KEYWORDS => Some(format!(
            "`keyword` lists {} keywords; a DingTalk robot has at most {MAX_KEYWORDS}",
            list.len()
        )),
        Some(_) => None,
    };
    match complaint {
        Some(message) => {
            problems.push(Problem::at(&pos, message));
            None
        }
        None => keywords,
    }
}

/// `Some(None)` when the key is absent (the feature is off), `None` when it is invalid.
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

/// `Some(None)` when absent (the provider's own hosts), `None` when invalid.
fn optional_base_url(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<Option<String>> {
    match fields.string("base_url", problems) {
        Some(url) => {
            check_url(url, problems).map(|url| Some(url.trim_end_matches('/').to_string()))
        }
        None if fields.contains("base_url") => None,
        None => Some(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ChannelKind, Rules, load};

    fn load_text(text: &str) -> Result<Rules, Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ding.toml"), text).expect("write rules");
        load(dir.path()).map_err(|error| {
            let prefix = format!("{}/", dir.path().display());
            error
                .problems
                .iter()
                .map(|p| p.to_string().replace(&prefix, ""))
                .collect()
        })
    }

    fn kind_of(text: &str) -> ChannelKind {
        match load_text(text) {
            Ok(rules) => rules.channels[0].kind.clone(),
            Err(problems) => panic!("expected valid rules, got {problems:#?}"),
        }
    }

    #[track_caller]
    fn one_problem(text: &str, location: &str, fragment: &str) {
        let problems = load_text(text).err().unwrap_or_default();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with(location), "{problems:#?}");
        assert!(problems[0].contains(fragment), "{problems:#?}");
    }

    #[test]
    fn a_robot_reads_its_secrets_keywords_and_base_url() {
        let kind = kind_of(
            "[[channel]]\nid = \"ops\"\nkind = \"dingtalk_robot\"\naccess_token_env = \"DT_TOKEN\"\n\
             secret_env = \"DT_SECRET\"\nkeyword = [\"通知\", \"告警\"]\nbase_url = \"http://127.0.0.1:9/\"\n",
        );
        assert_eq!(
            kind,
            ChannelKind::DingtalkRobot {
                access_token: SecretRef::new("DT_TOKEN"),
                secret: Some(SecretRef::new("DT_SECRET")),
                keywords: vec!["通知".into(), "告警".into()],
                base_url: Some("http://127.0.0.1:9".into()),
            }
        );
        let bare = kind_of(
            "[[channel]]\nid = \"ops\"\nkind = \"dingtalk_robot\"\naccess_token_env = \"DT_TOKEN\"\nkeyword = \"通知\"\n",
        );
        assert_eq!(
            bare,
            ChannelKind::DingtalkRobot {
                access_token: SecretRef::new("DT_TOKEN"),
                secret: None,
                keywords: vec!["通知".into()],
                base_url: None,
            }
        );
    }

    #[test]
    fn robot_defaults_are_the_published_limits() {
        let rules = load_text(
            "[[channel]]\nid = \"ops\"\nkind = \"dingtalk_robot\"\naccess_token_env = \"DT_TOKEN\"\n",
        )
        .unwrap_or_else(|problems| panic!("{problems:#?}"));
        assert_eq!(rules.channels[0].limits.per_minute, Some(20));
        assert_eq!(rules.channels[0].kind.max_batch(), 1);
    }

    #[test]
    fn an_app_reads_either_target_with_its_batch_cap_and_limits() {
        let text = "[[channel]]\nid = \"work\"\nkind = \"dingtalk_app\"\napp_key = \"dingkey\"\n\
                    app_secret_env = \"DT_APP_SECRET\"\nagent_id = \"123456\"\n";
        let rules = load_text(text).unwrap_or_else(|problems| panic!("{problems:#?}"));
        let channel = &rules.channels[0];
        assert_eq!(
            channel.kind,
            ChannelKind::DingtalkApp {
                app_key: "dingkey".into(),
                app_secret: SecretRef::new("DT_APP_SECRET"),
                target: DingtalkAppTarget::WorkNotification { agent_id: 123456 },
                base_url: None,
            }
        );
        assert_eq!(channel.kind.max_batch(), 100);
        assert_eq!(channel.limits.recipient_per_day, Some(500));

        let robot = kind_of(
            "[[channel]]\nid = \"bot\"\nkind = \"dingtalk_app\"\napp_key = \"dingkey\"\n\
             app_secret_env = \"DT_APP_SECRET\"\nrobot_code = \"dingrobot\"\nbatch_size = 20\n",
        );
        assert_eq!(robot.max_batch(), 20);
        assert!(matches!(
            robot,
            ChannelKind::DingtalkApp { target: DingtalkAppTarget::Robot { ref robot_code }, .. } if robot_code == "dingrobot"
        ));
    }

    #[test]
    fn an_app_needs_exactly_one_target() {
        let head = "[[channel]]\nid = \"work\"\nkind = \"dingtalk_app\"\napp_key = \"k\"\napp_secret_env = \"S\"\n";
        one_problem(head, "ding.toml:1:1", "needs `agent_id`");
        one_problem(
            &format!("{head}agent_id = 1\nrobot_code = \"r\"\n"),
            "ding.toml:7:1",
            "not both",
        );
        one_problem(
            &format!("{head}agent_id = -3\n"),
            "ding.toml:6:12",
            "positive number",
        );
        one_problem(
            &format!("{head}robot_code = \"r\"\nbatch_size = 21\n"),
            "ding.toml:7:14",
            "between 1 and 20",
        );
    }

    #[test]
    fn keywords_must_be_non_empty_strings_and_at_most_ten() {
        let head =
            "[[channel]]\nid = \"ops\"\nkind = \"dingtalk_robot\"\naccess_token_env = \"T\"\n";
        one_problem(
            &format!("{head}keyword = \"\"\n"),
            "ding.toml:5:11",
            "must not be empty",
        );
        one_problem(
            &format!("{head}keyword = [1]\n"),
            "ding.toml:5:11",
            "array of strings",
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("\"k{i}\"")).collect();
        one_problem(
            &format!("{head}keyword = [{}]\n", eleven.join(", ")),
            "ding.toml:5:11",
            "at most 10",
        );
        one_problem(
            &format!("{head}secret_env = \"sec\"\n"),
            "ding.toml:5:14",
            "NAME of an environment variable",
        );
    }
}
