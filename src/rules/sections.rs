//! Reads the sections of one rules file into located values, checking everything that can
//! be checked inside one entry (types, keys, syntax, ranges). Checks that need every file
//! (duplicates, cross references) live in `assemble`.

use std::path::PathBuf;
use std::time::Duration;

use super::duration;
use super::model::{ApiToken, ChannelAccount, ChannelKind, InboundAccount, InboundPlatform, Role, SecretRef};
use super::problem::{At, Problem, Source};
use super::reader::{Fields, closest, tables_of};

mod delivery;

pub(super) use delivery::read_delivery;

pub(super) const SECTIONS: [&str; 6] = ["delivery", "inbound", "channel", "operator", "command", "api_token"];

pub(super) const PLATFORMS: [&str; 1] = ["shell"];
/// Named in the design and arriving in later versions: refused with "not supported yet"
/// rather than "unknown", so nobody hunts for a typo that is not there.
const PLANNED_PLATFORMS: [&str; 8] = [
    "wecom_aibot", "wecom_app", "wechat_oa", "dingtalk", "feishu", "slack", "qq", "standard",
];
pub(super) const CHANNEL_KINDS: [&str; 2] = ["log", "webhook"];
const PLANNED_CHANNEL_KINDS: [&str; 14] = [
    "wecom_robot", "wecom_app", "dingtalk_robot", "dingtalk_app", "feishu_bot", "feishu_app",
    "slack", "wechat_oa", "qq", "twilio_sms", "aliyun_sms", "tencent_sms", "smtp", "sendgrid",
];

/// Everything one file contributes, each value with where it was written.
#[derive(Default)]
pub(super) struct FileRules {
    pub delivery: Option<At<super::model::DeliverySettings>>,
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
pub(super) fn read_file(source: &Source<'_>, root: &toml_edit::Table, problems: &mut Vec<Problem>) -> FileRules {
    let mut rules = FileRules::default();
    for (name, item) in root.iter() {
        let key_pos = source.pos(root.key(name).and_then(|key| key.span()));
        if name == "delivery" {
            match item.as_table_like() {
                Some(table) => {
                    // Implicit tables (`[delivery.retry]` alone) have no span of their own.
                    let pos = item.span().map_or(key_pos.clone(), |span| source.pos_of_offset(span.start));
                    let settings = read_delivery(source, table, pos.clone(), problems);
                    rules.delivery = Some(At { value: settings, pos });
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
                format!("unknown section `{name}`; {suggestion}sections: {}", SECTIONS.join(", ")),
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
                _ => read_api_token(fields, &mut rules, problems),
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
            allowed(first) && rest.len() <= 63 && rest.iter().all(|b| allowed(b) || *b == b'_' || *b == b'-')
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
            format!("{what} `{}` is not supported by this version yet; supported: {list}", value.value),
        );
    }
    let suggestion = closest(&value.value, supported)
        .map(|known| format!("did you mean `{known}`? "))
        .unwrap_or_default();
    Problem::at(&value.pos, format!("unknown {what} `{}`; {suggestion}supported: {list}", value.value))
}

fn read_inbound(mut fields: Fields<'_, '_>, rules: &mut FileRules, problems: &mut Vec<Problem>) {
    let id = read_id(&mut fields, problems);
    let platform = fields.string("platform", problems);
    let Some(platform) = fields.require(platform, "platform", problems) else { return };
    rules.inbound_platforms.push(platform.value.clone());
    let platform = match platform.value.as_str() {
        "shell" => InboundPlatform::Shell,
        _ => return problems.push(unsupported("platform", &platform, &PLATFORMS, &PLANNED_PLATFORMS)),
    };
    fields.finish(problems);
    if let Some(id) = id {
        rules.inbound.push(At { value: InboundAccount { id: id.value, platform }, pos: id.pos });
    }
}

fn read_channel(mut fields: Fields<'_, '_>, rules: &mut FileRules, problems: &mut Vec<Problem>) {
    let id = read_id(&mut fields, problems);
    let kind = fields.string("kind", problems);
    let Some(kind) = fields.require(kind, "kind", problems) else { return };
    let kind = match kind.value.as_str() {
        "log" => read_log_channel(&mut fields, problems),
        "webhook" => read_webhook_channel(&mut fields, problems),
        _ => return problems.push(unsupported("channel kind", &kind, &CHANNEL_KINDS, &PLANNED_CHANNEL_KINDS)),
    };
    fields.finish(problems);
    if let (Some(id), Some(kind)) = (id, kind) {
        rules.channels.push(At { value: ChannelAccount { id: id.value, kind }, pos: id.pos });
    }
}

fn read_log_channel(fields: &mut Fields<'_, '_>, problems: &mut Vec<Problem>) -> Option<ChannelKind> {
    let path = fields.string("path", problems);
    let path = fields.require(path, "path", problems)?;
    if path.value.trim().is_empty() || path.value.contains('\0') {
        problems.push(Problem::at(&path.pos, "`path` of a log channel must name a file, such as \"qunfa-outbox.jsonl\""));
        return None;
    }
    Some(ChannelKind::Log { path: PathBuf::from(path.value) })
}

fn read_webhook_channel(fields: &mut Fields<'_, '_>, problems: &mut Vec<Problem>) -> Option<ChannelKind> {
    let url = fields.string("url", problems);
    let url = fields.require(url, "url", problems).and_then(|url| check_url(url, problems));
    let secret = read_secret_env(fields, "secret_env", problems);
    Some(ChannelKind::Webhook { url: url?, secret: secret? })
}

fn check_url(url: At<String>, problems: &mut Vec<Problem>) -> Option<String> {
    let complaint = match reqwest::Url::parse(&url.value) {
        Err(error) => Some(format!("`{}` is not a valid URL ({error})", url.value)),
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
            Some(format!("`{}` must start with http:// or https://", url.value))
        }
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
pub(super) fn is_valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_uppercase() || first == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn read_secret_env(fields: &mut Fields<'_, '_>, key: &'static str, problems: &mut Vec<Problem>) -> Option<SecretRef> {
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

pub(super) fn read_role(fields: &mut Fields<'_, '_>, allow_anyone: bool, problems: &mut Vec<Problem>) -> Option<At<Option<Role>>> {
    let role = fields.string("role", problems)?;
    if allow_anyone && role.value == "anyone" {
        return Some(At { value: None, pos: role.pos });
    }
    if let Some(parsed) = Role::parse(&role.value) {
        return Some(At { value: Some(parsed), pos: role.pos });
    }
    let mut names: Vec<&str> = Role::ALL.iter().map(|role| role.as_str()).collect();
    if allow_anyone {
        names.push("anyone");
    }
    let suggestion = closest(&role.value, &names)
        .map(|known| format!("did you mean `{known}`? "))
        .unwrap_or_default();
    problems.push(Problem::at(&role.pos, format!("unknown role `{}`; {suggestion}roles: {}", role.value, names.join(", "))));
    None
}

fn non_empty(value: At<String>, key: &str, what: &str, problems: &mut Vec<Problem>) -> Option<At<String>> {
    if value.value.trim().is_empty() {
        problems.push(Problem::at(&value.pos, format!("`{key}` in {what} must not be empty")));
        return None;
    }
    Some(value)
}

fn read_operator(mut fields: Fields<'_, '_>, rules: &mut FileRules, problems: &mut Vec<Problem>) {
    let what = fields.what().to_string();
    let platform = fields.string("platform", problems);
    let platform = fields.require(platform, "platform", problems);
    let user = fields.string("user", problems);
    let user = fields.require(user, "user", problems).and_then(|user| non_empty(user, "user", &what, problems));
    let role = read_role(&mut fields, false, problems);
    let role = fields.require(role, "role", problems);
    fields.finish(problems);
    if let (Some(platform), Some(user), Some(At { value: Some(role), .. })) = (platform, user, role) {
        rules.operators.push(RawOperator { platform, user, role });
    }
}

fn read_command(mut fields: Fields<'_, '_>, rules: &mut FileRules, problems: &mut Vec<Problem>) {
    let what = fields.what().to_string();
    let name = fields.string("name", problems);
    let name = fields.require(name, "name", problems);
    let aliases = fields.string_array("aliases", problems).unwrap_or_default();
    for alias in &aliases {
        if alias.value.is_empty() || alias.value.chars().any(char::is_whitespace) || alias.value.starts_with('/') {
            problems.push(Problem::at(
                &alias.pos,
                format!(
                    "alias `{}` must be one word without spaces, written without the leading `/`",
                    alias.value
                ),
            ));
        }
    }
    let role = read_role(&mut fields, true, problems);
    let summary = fields.string("summary", problems);
    let summary = fields
        .require(summary, "summary", problems)
        .and_then(|summary| non_empty(summary, "summary", &what, problems));
    let usage = fields.string("usage", problems).map(|usage| usage.value).unwrap_or_default();
    fields.finish(problems);
    if let (Some(name), Some(summary)) = (name, summary) {
        let role = role.and_then(|role| role.value);
        rules.commands.push(RawCommand { name, aliases, role, summary: summary.value, usage });
    }
}

fn read_api_token(mut fields: Fields<'_, '_>, rules: &mut FileRules, problems: &mut Vec<Problem>) {
    let what = fields.what().to_string();
    let name = fields.string("name", problems);
    let name = fields.require(name, "name", problems).and_then(|name| non_empty(name, "name", &what, problems));
    let role = read_role(&mut fields, false, problems);
    let role = fields.require(role, "role", problems);
    let digest = fields.string("sha256", problems);
    let digest = fields.require(digest, "sha256", problems).and_then(|digest| {
        let mut bytes = [0u8; 32];
        if digest.value.len() == 64 && hex::decode_to_slice(&digest.value, &mut bytes).is_ok() {
            return Some(bytes);
        }
        problems.push(Problem::at(
            &digest.pos,
            "`sha256` must be 64 hexadecimal characters: the SHA-256 digest of the token, such as \
             the output of `printf %s \"$TOKEN\" | sha256sum`",
        ));
        None
    });
    fields.finish(problems);
    if let (Some(name), Some(At { value: Some(role), .. }), Some(sha256)) = (name, role, digest) {
        rules.api_tokens.push(At { value: ApiToken { name: name.value, role, sha256 }, pos: name.pos });
    }
}

/// Reads a duration field; `None` when absent or invalid (the problem is recorded).
pub(super) fn read_duration(fields: &mut Fields<'_, '_>, key: &'static str, problems: &mut Vec<Problem>) -> Option<At<Duration>> {
    let text = fields.string(key, problems)?;
    parse_duration_at(text, key, fields.what(), problems)
}

pub(super) fn parse_duration_at(text: At<String>, key: &str, what: &str, problems: &mut Vec<Problem>) -> Option<At<Duration>> {
    match duration::parse(&text.value) {
        Ok(value) => Some(At { value, pos: text.pos }),
        Err(reason) => {
            problems.push(Problem::at(
                &text.pos,
                format!("invalid duration `{}` for `{key}` in {what}: {reason}; {}", text.value, duration::HINT),
            ));
            None
        }
    }
}
