//! The built-in chat commands this version knows, and the defaults that keep the bot
//! answering when the rules configure none of them.

use super::model::{CommandRule, Role};

/// Names of the built-in commands, the only valid `name`s of a `[[command]]` table.
pub const BUILTIN_COMMANDS: [&str; 4] = ["help", "whoami", "send-test", "quota"];

/// The configuration a built-in command gets when no `[[command]]` table names it, so
/// that a rules directory without commands still answers `/help`, `/whoami` and the rest.
pub fn default_command(name: &str) -> Option<CommandRule> {
    let (aliases, role, summary, usage) = match name {
        "help" => (
            "帮助",
            Some(Role::Viewer),
            "List the commands you may use, or show how to use one",
            "[command]",
        ),
        "whoami" => ("我是谁", None, "Show your platform, user id and role", ""),
        "send-test" => (
            "测试发送",
            Some(Role::Operator),
            "Send a one-off test message through a channel, via the outbox",
            "<channel> <to> <text>",
        ),
        "quota" => (
            "配额",
            Some(Role::Viewer),
            "Show what is left of each channel account's quota this minute, day and month",
            "[channel]",
        ),
        _ => return None,
    };
    Some(CommandRule {
        name: name.to_string(),
        aliases: vec![aliases.to_string()],
        role,
        summary: summary.to_string(),
        usage: usage.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_has_a_default_and_nothing_else_does() {
        for name in BUILTIN_COMMANDS {
            let rule = default_command(name).expect("built-in default");
            assert_eq!(rule.name, name);
            assert!(!rule.summary.is_empty());
        }
        assert_eq!(default_command("campaign-of-the-future"), None);
    }
}
