//! Reads `[[inbound]]` entries: the chat accounts that send us callbacks, with each
//! platform's own field names and secrets named by environment variable.

use super::accounts::{check_url, read_secret_env};
use super::{FileRules, read_duration, read_id, unsupported};
use crate::rules::model::{
    FEISHU_BASE_URL, InboundAccount, InboundPlatform, QQ_BASE_URL, SLACK_BASE_URL,
    STANDARD_TOLERANCE, SecretRef,
};
use crate::rules::problem::{At, Problem};
use crate::rules::reader::Fields;

pub(super) fn read_inbound(
    mut fields: Fields<'_, '_>,
    rules: &mut FileRules,
    problems: &mut Vec<Problem>,
) {
    let id = read_id(&mut fields, problems);
    let platform = fields.string("platform", problems);
    let Some(platform) = fields.require(platform, "platform", problems) else {
        return;
    };
    rules.inbound_platforms.push(platform.value.clone());
    if !InboundPlatform::NAMES.contains(&platform.value.as_str()) {
        return problems.push(unsupported(
            "platform",
            &platform,
            &InboundPlatform::NAMES,
            &[],
        ));
    }
    let settings = read_platform(&platform.value, &mut fields, problems);
    fields.finish(problems);
    if let (Some(id), Some(platform)) = (id, settings) {
        rules.inbound.push(At {
            value: InboundAccount {
                id: id.value,
                platform,
            },
            pos: id.pos,
        });
    }
}

/// Reads every field of the platform before judging, so one run reports all problems.
fn read_platform(
    name: &str,
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<InboundPlatform> {
    match name {
        "shell" => Some(InboundPlatform::Shell),
        "wecom_aibot" => {
            let token = read_secret_env(fields, "token_env", problems);
            let aes_key = read_secret_env(fields, "aes_key_env", problems);
            Some(InboundPlatform::WecomAibot {
                token: token?,
                aes_key: aes_key?,
            })
        }
        "wecom_app" => {
            let token = read_secret_env(fields, "token_env", problems);
            let aes_key = read_secret_env(fields, "aes_key_env", problems);
            let corp_id = required_text(fields, "corp_id", problems);
            let agent_id = optional_text(fields, "agent_id", problems);
            Some(InboundPlatform::WecomApp {
                token: token?,
                aes_key: aes_key?,
                corp_id: corp_id?,
                agent_id,
            })
        }
        "wechat_oa" => {
            let token = read_secret_env(fields, "token_env", problems);
            let aes_key = optional_secret(fields, "aes_key_env", problems);
            let app_id = required_text(fields, "app_id", problems);
            Some(InboundPlatform::WechatOa {
                token: token?,
                aes_key: aes_key?,
                app_id: app_id?,
            })
        }
        "dingtalk" => Some(InboundPlatform::Dingtalk {
            app_secret: read_secret_env(fields, "app_secret_env", problems)?,
        }),
        "feishu" => {
            let verification_token = read_secret_env(fields, "verification_token_env", problems);
            let encrypt_key = optional_secret(fields, "encrypt_key_env", problems);
            let app_id = required_text(fields, "app_id", problems);
            let app_secret = read_secret_env(fields, "app_secret_env", problems);
            let base_url = base_url(fields, FEISHU_BASE_URL, problems);
            Some(InboundPlatform::Feishu {
                verification_token: verification_token?,
                encrypt_key: encrypt_key?,
                app_id: app_id?,
                app_secret: app_secret?,
                base_url: base_url?,
            })
        }
        "slack" => {
            let signing_secret = read_secret_env(fields, "signing_secret_env", problems);
            let bot_token = optional_secret(fields, "bot_token_env", problems);
            let base_url = base_url(fields, SLACK_BASE_URL, problems);
            Some(InboundPlatform::Slack {
                signing_secret: signing_secret?,
                bot_token: bot_token?,
                base_url: base_url?,
            })
        }
        "qq" => {
            let app_id = required_text(fields, "app_id", problems);
            let app_secret = read_secret_env(fields, "app_secret_env", problems);
            let base_url = base_url(fields, QQ_BASE_URL, problems);
            Some(InboundPlatform::Qq {
                app_id: app_id?,
                app_secret: app_secret?,
                base_url: base_url?,
            })
        }
        "standard" => {
            let secret = read_secret_env(fields, "secret_env", problems);
            let tolerance = if fields.contains("tolerance") {
                Some(read_duration(fields, "tolerance", problems)?.value)
            } else {
                Some(STANDARD_TOLERANCE)
            };
            Some(InboundPlatform::Standard {
                secret: secret?,
                tolerance: tolerance?,
            })
        }
        _ => None,
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

fn optional_text(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    fields
        .string(key, problems)
        .map(|value| value.value)
        .filter(|value| !value.trim().is_empty())
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
