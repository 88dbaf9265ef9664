//! Reads the sections of one rules file into located values, checking everything that can
//! be checked inside one entry (types, keys, syntax, ranges). Checks that need every file
//! (duplicates, cross references) live in `assemble`.

use std::time::Duration;

use super::duration;
use super::model::{ApiToken, ChannelAccount, DeliverySettings, InboundAccount, Role};
use super::problem::{At, Problem, Source};
use super::reader::{Fields, closest, tables_of};

mod accounts;
// -- wecom / wechat
mod wecom;
// -- dingtalk
mod dingtalk;
// -- feishu / slack
mod feishu_slack;
// -- sms / email
mod delivery;
mod inbound;
mod people;
mod sms_email;

use accounts::read_channel;
use delivery::read_delivery;
use inbound::read_inbound;
use people::{read_api_token, read_command, read_operator};

pub(super) const SECTIONS: [&str; 6] = [
    "delivery",
    "inbound",
    "channel",
    "operator",
    "command",
    "api_token",
];

/// Channel kinds this version reads (one per line, grouped by provider family).
pub(super) const CHANNEL_KINDS: &[&str] = &[
    "log",
    "webhook",
    // -- wecom / wechat
    "wecom_robot",
    "wecom_app",
    "wechat_oa",
    "qq",
    // -- dingtalk
    "dingtalk_robot",
    "dingtalk_app",
    // -- feishu / slack
    "feishu_bot",
    "feishu_app",
    "slack",
    // -- sms / email
    "twilio_sms",
    "aliyun_sms",
    "tencent_sms",
    "smtp",
    "sendgrid",
];

/// Everything one file contributes, each value with where it was written.
#[derive(Default)]
pub(super) struct FileRules {
    pub delivery: Option<At<DeliverySettings>>,
    pub inbound: Vec<At<InboundAccount>>,
    /// Platform names as written, supported or not, so an operator on a platform whose
    /// account was refused is not reported a second time.
    pub inbound_platforms: Vec<String>,
    pub channels: Vec<At<ChannelAccount>>,
    pub operators: Vec<RawOperator>,
    pub commands: Vec<RawCommand>,
    pub api_tokens: Vec<At<ApiToken>>,
}

pub(super) struct RawOperator {
    pub platform: At<String>,
    pub user: At<String>,
    pub role: Role,
}

pub(super) struct RawCommand {
    pub name: At<String>,
    pub aliases: Vec<At<String>>,
    pub role: Option<Role>,
    pub summary: String,
    pub usage: String,
}

/// Reads every section of one parsed file.
pub(super) fn read_file(
    source: &Source<'_>,
    root: &toml_edit::Table,
    problems: &mut Vec<Problem>,
) -> FileRules {
    let mut rules = FileRules::default();
    for (name, item) in root.iter() {
        let key_pos = source.pos(root.key(name).and_then(|key| key.span()));
        if name == "delivery" {
            match item.as_table_like() {
                Some(table) => {
                    // Implicit tables (`[delivery.retry]` alone) have no span of their own.
                    let pos = item
                        .span()
                        .map_or(key_pos.clone(), |span| source.pos_of_offset(span.start));
                    let settings = read_delivery(source, table, pos.clone(), problems);
                    rules.delivery = Some(At {
                        value: settings,
                        pos,
                    });
                }
                None => problems.push(Problem::at(
                    &key_pos,
                    "`delivery` must be a table; write it as a [delivery] section",
                )),
            }
            continue;
        }
        if !SECTIONS.contains(&name) {
            let suggestion = closest(name, &SECTIONS)
                .map(|known| format!("did you mean `{known}`? "))
                .unwrap_or_default();
            problems.push(Problem::at(
                &key_pos,
                format!(
                    "unknown section `{name}`; {suggestion}sections: {}",
                    SECTIONS.join(", ")
                ),
            ));
            continue;
        }
        for (table, pos) in tables_of(source, name, &key_pos, item, problems) {
            let what = format!("[[{name}]]");
            let fields = Fields::new(source, table, &what, pos);
            match name {
                "inbound" => read_inbound(fields, &mut rules, problems),
                "channel" => read_channel(fields, &mut rules, problems),
                "operator" => read_operator(fields, &mut rules, problems),
                "command" => read_command(fields, &mut rules, problems),
                "api_token" => read_api_token(fields, &mut rules, problems),
                // Unknown sections were reported above, and `delivery` is not an array.
                _ => {}
            }
        }
    }
    rules
}

/// Account ids are URL path segments and appear in logs: keep them plain.
pub(super) fn is_valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let allowed = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    match bytes.split_first() {
        Some((first, rest)) => {
            allowed(first)
                && rest.len() <= 63
                && rest.iter().all(|b| allowed(b) || *b == b'_' || *b == b'-')
        }
        None => false,
    }
}

fn read_id(fields: &mut Fields<'_, '_>, problems: &mut Vec<Problem>) -> Option<At<String>> {
    let id = fields.string("id", problems);
    let id = fields.require(id, "id", problems)?;
    if !is_valid_id(&id.value) {
        problems.push(Problem::at(
            &id.pos,
            format!(
                "invalid id `{}` in {}: use 1 to 64 lowercase letters, digits, `_` or `-`, \
                 starting with a letter or digit",
                id.value,
                fields.what()
            ),
        ));
    }
    Some(id)
}

/// Reports an unknown or not yet supported name of a platform or channel kind.
fn unsupported(what: &str, value: &At<String>, supported: &[&str], planned: &[&str]) -> Problem {
    let list = supported.join(", ");
    if planned.contains(&value.value.as_str()) {
        return Problem::at(
            &value.pos,
            format!(
                "{what} `{}` is not supported by this version yet; supported: {list}",
                value.value
            ),
        );
    }
    let suggestion = closest(&value.value, supported)
        .map(|known| format!("did you mean `{known}`? "))
        .unwrap_or_default();
    Problem::at(
        &value.pos,
        format!(
            "unknown {what} `{}`; {suggestion}supported: {list}",
            value.value
        ),
    )
}

/// Reads a duration field; `None` when absent or invalid (the problem is recorded).
pub(super) fn read_duration(
    fields: &mut Fields<'_, '_>,
    key: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<At<Duration>> {
    let text = fields.string(key, problems)?;
    parse_duration_at(text, key, fields.what(), problems)
}

pub(super) fn parse_duration_at(
    text: At<String>,
    key: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<At<Duration>> {
    match duration::parse(&text.value) {
        Ok(value) => Some(At {
            value,
            pos: text.pos,
        }),
        Err(reason) => {
            problems.push(Problem::at(
                &text.pos,
                format!(
                    "invalid duration `{}` for `{key}` in {what}: {reason}; {}",
                    text.value,
                    duration::HINT
                ),
            ));
            None
        }
    }
}
