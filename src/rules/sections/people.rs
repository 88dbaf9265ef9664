//! Reads `[[operator]]`, `[[command]]` and `[[api_token]]` entries: who may do what.

use super::{FileRules, RawCommand, RawOperator};
use crate::rules::model::{ApiToken, Role};
use crate::rules::problem::{At, Problem};
use crate::rules::reader::{Fields, closest};

fn read_role(
    fields: &mut Fields<'_, '_>,
    allow_anyone: bool,
    problems: &mut Vec<Problem>,
) -> Option<At<Option<Role>>> {
    let role = fields.string("role", problems)?;
    if allow_anyone && role.value == "anyone" {
        return Some(At {
            value: None,
            pos: role.pos,
        });
    }
    if let Some(parsed) = Role::parse(&role.value) {
        return Some(At {
            value: Some(parsed),
            pos: role.pos,
        });
    }
    let mut names: Vec<&str> = Role::ALL.iter().map(|role| role.as_str()).collect();
    if allow_anyone {
        names.push("anyone");
    }
    let suggestion = closest(&role.value, &names)
        .map(|known| format!("did you mean `{known}`? "))
        .unwrap_or_default();
    problems.push(Problem::at(
        &role.pos,
        format!(
            "unknown role `{}`; {suggestion}roles: {}",
            role.value,
            names.join(", ")
        ),
    ));
    None
}

fn non_empty(
    value: At<String>,
    key: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<At<String>> {
    if value.value.trim().is_empty() {
        problems.push(Problem::at(
            &value.pos,
            format!("`{key}` in {what} must not be empty"),
        ));
        return None;
    }
    Some(value)
}

pub(super) fn read_operator(
    mut fields: Fields<'_, '_>,
    rules: &mut FileRules,
    problems: &mut Vec<Problem>,
) {
    let what = fields.what().to_string();
    let platform = fields.string("platform", problems);
    let platform = fields.require(platform, "platform", problems);
    let user = fields.string("user", problems);
    let user = fields
        .require(user, "user", problems)
        .and_then(|user| non_empty(user, "user", &what, problems));
    let role = read_role(&mut fields, false, problems);
    let role = fields.require(role, "role", problems);
    fields.finish(problems);
    if let (
        Some(platform),
        Some(user),
        Some(At {
            value: Some(role), ..
        }),
    ) = (platform, user, role)
    {
        rules.operators.push(RawOperator {
            platform,
            user,
            role,
        });
    }
}

pub(super) fn read_command(
    mut fields: Fields<'_, '_>,
    rules: &mut FileRules,
    problems: &mut Vec<Problem>,
) {
    let what = fields.what().to_string();
    let name = fields.string("name", problems);
    let name = fields.require(name, "name", problems);
    let aliases = fields.string_array("aliases", problems).unwrap_or_default();
    for alias in &aliases {
        if alias.value.is_empty()
            || alias.value.chars().any(char::is_whitespace)
            || alias.value.starts_with('/')
        {
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
    let usage = fields
        .string("usage", problems)
        .map(|usage| usage.value)
        .unwrap_or_default();
    fields.finish(problems);
    if let (Some(name), Some(summary)) = (name, summary) {
        let role = role.and_then(|role| role.value);
        rules.commands.push(RawCommand {
            name,
            aliases,
            role,
            summary: summary.value,
            usage,
        });
    }
}

pub(super) fn read_api_token(
    mut fields: Fields<'_, '_>,
    rules: &mut FileRules,
    problems: &mut Vec<Problem>,
) {
    let what = fields.what().to_string();
    let name = fields.string("name", problems);
    let name = fields
        .require(name, "name", problems)
        .and_then(|name| non_empty(name, "name", &what, problems));
    let role = read_role(&mut fields, false, problems);
    let role = fields.require(role, "role", problems);
    let digest = fields.string("sha256", problems);
    let digest = fields
        .require(digest, "sha256", problems)
        .and_then(|digest| {
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
    if let (
        Some(name),
        Some(At {
            value: Some(role), ..
        }),
        Some(sha256),
    ) = (name, role, digest)
    {
        rules.api_tokens.push(At {
            value: ApiToken {
                name: name.value,
                role,
                sha256,
            },
            pos: name.pos,
        });
    }
}
