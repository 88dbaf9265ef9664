//! Reads `[[channel]]` entries, the outbound accounts, and the URL and secret-name checks
//! every account shares.

use std::path::PathBuf;

use super::{CHANNEL_KINDS, FileRules, read_id, unsupported};
use crate::rules::model::{ChannelAccount, ChannelKind, Limits, SecretRef};
use crate::rules::problem::{At, Problem};
use crate::rules::reader::Fields;

pub(super) fn read_channel(
    mut fields: Fields<'_, '_>,
    rules: &mut FileRules,
    problems: &mut Vec<Problem>,
) {
    let id = read_id(&mut fields, problems);
    let kind = fields.string("kind", problems);
    let Some(kind) = fields.require(kind, "kind", problems) else {
        return;
    };
    let kind = match kind.value.as_str() {
        "log" => read_log_channel(&mut fields, problems),
        "webhook" => read_webhook_channel(&mut fields, problems),
        // -- wecom / wechat
        "wecom_robot" => super::wecom::read_wecom_robot(&mut fields, problems),
        "wecom_app" => super::wecom::read_wecom_app(&mut fields, problems),
        "wechat_oa" => super::wecom::read_wechat_oa(&mut fields, problems),
        "qq" => super::wecom::read_qq(&mut fields, problems),

        // -- dingtalk
        "dingtalk_robot" => super::dingtalk::read_robot(&mut fields, problems),
        "dingtalk_app" => super::dingtalk::read_app(&mut fields, problems),

        // -- feishu / slack
        "feishu_bot" => super::feishu_slack::read_feishu_bot(&mut fields, problems),
        "feishu_app" => super::feishu_slack::read_feishu_app(&mut fields, problems),
        "slack" => super::feishu_slack::read_slack(&mut fields, problems),

        // -- sms / email
        "twilio_sms" => super::sms_email::read_twilio_sms_channel(&mut fields, problems),
        "aliyun_sms" => super::sms_email::read_aliyun_sms_channel(&mut fields, problems),
        "tencent_sms" => super::sms_email::read_tencent_sms_channel(&mut fields, problems),
        "smtp" => super::sms_email::read_smtp_channel(&mut fields, problems),
        "sendgrid" => super::sms_email::read_sendgrid_channel(&mut fields, problems),
        _ => {
            return problems.push(unsupported("channel kind", &kind, CHANNEL_KINDS, &[]));
        }
    };
    let limits = kind
        .as_ref()
        .map(|kind| read_limits(&mut fields, kind.default_limits(), problems));
    let batch_size = kind
        .as_ref()
        .and_then(|kind| read_batch_size(&mut fields, kind.max_batch(), problems));
    fields.finish(problems);
    if let (Some(id), Some(kind), Some(limits)) = (id, kind, limits) {
        rules.channels.push(At {
            value: ChannelAccount {
                id: id.value,
                kind,
                limits,
                batch_size,
            },
            pos: id.pos,
        });
    }
}

/// `per_minute`, `per_day`, `per_month` and their `recipient_` forms; each replaces the
/// kind's default, and 0 removes that limit (for accounts with a raised vendor quota).
fn read_limits(
    fields: &mut Fields<'_, '_>,
    defaults: Limits,
    problems: &mut Vec<Problem>,
) -> Limits {
    let mut read = |key: &'static str, default: Option<u32>| -> Option<u32> {
        let Some(value) = fields.integer(key, problems) else {
            return default;
        };
        match u32::try_from(value.value) {
            Ok(0) => None,
            Ok(limit) => Some(limit),
            Err(_) => {
                problems.push(Problem::at(
                    &value.pos,
                    format!("`{key}` must be between 0 (no limit) and {}", u32::MAX),
                ));
                default
            }
        }
    };
    Limits {
        per_minute: read("per_minute", defaults.per_minute),
        per_day: read("per_day", defaults.per_day),
        per_month: read("per_month", defaults.per_month),
        recipient_per_minute: read("recipient_per_minute", defaults.recipient_per_minute),
        recipient_per_day: read("recipient_per_day", defaults.recipient_per_day),
        recipient_per_month: read("recipient_per_month", defaults.recipient_per_month),
    }
}

fn read_batch_size(
    fields: &mut Fields<'_, '_>,
    api_cap: usize,
    problems: &mut Vec<Problem>,
) -> Option<usize> {
    let value = fields.integer("batch_size", problems)?;
    match usize::try_from(value.value) {
        Ok(size) if (1..=api_cap).contains(&size) => Some(size),
        _ => {
            problems.push(Problem::at(
                &value.pos,
                format!("`batch_size` must be between 1 and {api_cap}, this API's most recipients per call"),
            ));
            None
        }
    }
}

fn read_log_channel(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let path = fields.string("path", problems);
    let path = fields.require(path, "path", problems)?;
    if path.value.trim().is_empty() || path.value.contains('\0') {
        problems.push(Problem::at(
            &path.pos,
            "`path` of a log channel must name a file, such as \"qunfa-outbox.jsonl\"",
        ));
        return None;
    }
    Some(ChannelKind::Log {
        path: PathBuf::from(path.value),
    })
}

fn read_webhook_channel(
    fields: &mut Fields<'_, '_>,
    problems: &mut Vec<Problem>,
) -> Option<ChannelKind> {
    let url = fields.string("url", problems);
    let url = fields
        .require(url, "url", problems)
        .and_then(|url| check_url(url, problems));
    let secret = read_secret_env(fields, "secret_env", problems);
    Some(ChannelKind::Webhook {
        url: url?,
        secret: secret?,
    })
}

pub(super) fn check_url(url: At<String>, problems: &mut Vec<Problem>) -> Option<String> {
    let complaint = match reqwest::Url::parse(&url.value) {
        Err(error) => Some(format!("`{}` is not a valid URL ({error})", url.value)),
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => Some(format!(
            "`{}` must start with http:// or https://",
            url.value
        )),
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => Some(
            "the URL contains a user name or password; secrets never live in rules files, \
             use secret_env instead"
                .to_string(),
        ),
        Ok(_) => None,
    };
    match complaint {
        Some(message) => {
            problems.push(Problem::at(&url.pos, message));
            None
        }
        None => Some(url.value),
    }
}

/// Environment variable names as POSIX shells accept them, upper case by convention.
fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_uppercase() || first == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

pub(super) fn read_secret_env(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<SecretRef> {
    let name = fields.string(key, problems);
    let name = fields.require(name, key, problems)?;
    if !is_valid_env_name(&name.value) {
        problems.push(Problem::at(
            &name.pos,
            format!(
                "`{key}` must be the NAME of an environment variable (upper-case letters, digits \
                 and `_`, not starting with a digit), such as \"QUNFA_HOOK_SECRET\"; never put the \
                 secret itself in the rules"
            ),
        ));
        return None;
    }
    Some(SecretRef::new(name.value))
}
