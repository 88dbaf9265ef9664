//! Merges the files of a rules directory into one [`Rules`], checking what needs all of
//! them at once: duplicates, cross references, and the built-in command defaults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::commands::{BUILTIN_COMMANDS, default_command};
use super::model::{CommandRule, Operator, Rules};
use super::problem::{Pos, Problem};
use super::reader::closest;
use super::sections::{FileRules, RawCommand};

/// Builds the rules from every file's contribution, in file order. Entries that failed
/// their own checks are already left out; the result is only used when `problems` stays
/// empty (or, by `check`, for warnings).
pub(super) fn assemble(dir: &Path, files: Vec<FileRules>, problems: &mut Vec<Problem>) -> Rules {
    let mut rules = Rules {
        dir: dir.to_path_buf(),
        delivery: Default::default(),
        inbound: Vec::new(),
        channels: Vec::new(),
        operators: Vec::new(),
        commands: BTreeMap::new(),
        api_tokens: Vec::new(),
    };
    let mut delivery_at: Option<Pos> = None;
    let mut inbound_ids = FirstSeen::default();
    let mut channel_ids = FirstSeen::default();
    let mut operator_keys = FirstSeen::default();
    let mut token_names = FirstSeen::default();
    let mut token_digests = FirstSeen::default();
    let platforms: HashSet<String> = files
        .iter()
        .flat_map(|file| file.inbound_platforms.iter().cloned())
        .collect();
    let mut commands = Vec::new();

    for file in files {
        if let Some(delivery) = file.delivery {
            match &delivery_at {
                Some(first) => problems.push(Problem::at(
                    &delivery.pos,
                    format!("[delivery] is already defined at {first}; keep a single [delivery] section across all files"),
                )),
                None => {
                    delivery_at = Some(delivery.pos);
                    rules.delivery = delivery.value;
                }
            }
        }
        for account in file.inbound {
            if inbound_ids.is_new(
                &account.value.id,
                &account.pos,
                "inbound id",
                "[[inbound]] account",
                problems,
            ) {
                rules.inbound.push(account.value);
            }
        }
        for account in file.channels {
            if channel_ids.is_new(
                &account.value.id,
                &account.pos,
                "channel id",
                "[[channel]]",
                problems,
            ) {
                rules.channels.push(account.value);
            }
        }
        for operator in file.operators {
            if !platforms.contains(&operator.platform.value) {
                problems.push(Problem::at(
                    &operator.platform.pos,
                    unused_platform_message(&operator.platform.value, &platforms),
                ));
                continue;
            }
            let key = format!(
                "`{}` on platform `{}`",
                operator.user.value, operator.platform.value
            );
            if let Some((first, _)) = operator_keys.claim(&key, &operator.user.pos, "") {
                problems.push(Problem::at(
                    &operator.user.pos,
                    format!("operator {key} is already listed at {first}; list each person once, with their highest role"),
                ));
            } else {
                rules.operators.push(Operator {
                    platform: operator.platform.value,
                    user: operator.user.value,
                    role: operator.role,
                });
            }
        }
        for token in file.api_tokens {
            let digest = hex::encode(token.value.sha256);
            let name_is_new = token_names.is_new(
                &token.value.name,
                &token.pos,
                "api_token name",
                "[[api_token]]",
                problems,
            );
            let earlier = token_digests.claim(&digest, &token.pos, &token.value.name);
            if let Some((first, first_name)) = &earlier {
                problems.push(Problem::at(
                    &token.pos,
                    format!(
                        "api_token `{}` has the same sha256 as `{first_name}` at {first}; give every \
                         caller its own token so the audit log knows who called",
                        token.value.name
                    ),
                ));
            }
            let digest_is_new = earlier.is_none();
            if name_is_new && digest_is_new {
                rules.api_tokens.push(token.value);
            }
        }
        commands.extend(file.commands);
    }
    rules.commands = assemble_commands(commands, problems);
    if let Some(alerts) = &rules.delivery.alerts
        && rules.channel(&alerts.channel).is_none()
    {
        let pos = delivery_at.unwrap_or_else(|| Pos::start_of(dir));
        problems.push(Problem::at(
            &pos,
            format!(
                "[delivery] alerts_channel names `{}`, which is no [[channel]] id",
                alerts.channel
            ),
        ));
    }
    rules
}

fn unused_platform_message(platform: &str, platforms: &HashSet<String>) -> String {
    if platforms.is_empty() {
        return format!(
            "no [[inbound]] account uses platform `{platform}`, so this operator could never send a \
             command; add an [[inbound]] account with platform = \"{platform}\""
        );
    }
    let mut used: Vec<&str> = platforms.iter().map(String::as_str).collect();
    used.sort_unstable();
    let suggestion = closest(platform, &used)
        .map(|known| format!("did you mean `{known}`? "))
        .unwrap_or_default();
    format!(
        "no [[inbound]] account uses platform `{platform}`; {suggestion}platforms in use: {}",
        used.join(", ")
    )
}

/// Remembers where each unique name was first written, so a duplicate names both places.
#[derive(Default)]
struct FirstSeen {
    seen: HashMap<String, (Pos, String)>,
}

impl FirstSeen {
    /// Records `key` as written at `pos` by `owner`, or returns the earlier occurrence.
    fn claim(&mut self, key: &str, pos: &Pos, owner: &str) -> Option<(Pos, String)> {
        if let Some(first) = self.seen.get(key) {
            return Some(first.clone());
        }
        self.seen
            .insert(key.to_string(), (pos.clone(), owner.to_string()));
        None
    }

    /// Claims an id or name; a duplicate is reported with where the first one is.
    fn is_new(
        &mut self,
        key: &str,
        pos: &Pos,
        what: &str,
        section: &str,
        problems: &mut Vec<Problem>,
    ) -> bool {
        match self.claim(key, pos, "") {
            Some((first, _)) => {
                problems.push(Problem::at(
                    pos,
                    format!("duplicate {what} `{key}`: already used at {first}; give each {section} its own"),
                ));
                false
            }
            None => true,
        }
    }
}

/// Checks command names and aliases, then adds the default of every built-in command the
/// rules leave out, so the bot always answers `/help` and `/whoami`.
fn assemble_commands(
    raw: Vec<RawCommand>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, CommandRule> {
    let mut names = FirstSeen::default();
    let mut accepted = Vec::new();
    for command in raw {
        let name = &command.name;
        if !BUILTIN_COMMANDS.contains(&name.value.as_str()) {
            let suggestion = closest(&name.value, &BUILTIN_COMMANDS)
                .map(|known| format!("did you mean `{known}`? "))
                .unwrap_or_default();
            problems.push(Problem::at(
                &name.pos,
                format!(
                    "unknown command `{}`; {suggestion}built-in commands: {}",
                    name.value,
                    BUILTIN_COMMANDS.join(", ")
                ),
            ));
            continue;
        }
        match names.claim(&name.value, &name.pos, "") {
            Some((first, _)) => problems.push(Problem::at(
                &name.pos,
                format!(
                    "command `{}` is already configured at {first}; configure each command in one [[command]] table",
                    name.value
                ),
            )),
            None => accepted.push(command),
        }
    }

    // Lower-cased alias → (where, which command), to keep aliases unique across commands.
    let mut taken: HashMap<String, (Pos, String)> = HashMap::new();
    let mut commands = BTreeMap::new();
    for command in accepted {
        let owner = command.name.value;
        let mut aliases = Vec::new();
        for alias in command.aliases {
            let lowered = alias.value.to_lowercase();
            let complaint = if lowered == owner {
                Some(format!(
                    "alias `{}` repeats the command's own name; remove it",
                    alias.value
                ))
            } else if BUILTIN_COMMANDS.contains(&lowered.as_str()) {
                Some(format!(
                    "alias `{}` of `{owner}` is the name of the built-in command `{lowered}`; choose another alias",
                    alias.value
                ))
            } else if let Some((first, first_owner)) = taken.get(&lowered) {
                Some(format!(
                    "alias `{}` of `{owner}` is already an alias of `{first_owner}` at {first}; aliases must \
                     be unique across all commands, ignoring case",
                    alias.value
                ))
            } else {
                None
            };
            match complaint {
                Some(message) => problems.push(Problem::at(&alias.pos, message)),
                None => {
                    taken.insert(lowered, (alias.pos, owner.clone()));
                    aliases.push(alias.value);
                }
            }
        }
        let rule = CommandRule {
            name: owner.clone(),
            aliases,
            role: command.role,
            summary: command.summary,
            usage: command.usage,
        };
        commands.insert(owner, rule);
    }
    for name in BUILTIN_COMMANDS {
        if commands.contains_key(name) {
            continue;
        }
        if let Some(mut rule) = default_command(name) {
            // A configured command's alias wins over a default one.
            rule.aliases
                .retain(|alias| !taken.contains_key(&alias.to_lowercase()));
            commands.insert(name.to_string(), rule);
        }
    }
    commands
}
