//! The built-in commands the rules can configure, what each does, and whether it changes
//! anything (which decides how strictly it is audited).

use super::parse::ParsedCommand;
use super::text::{self, Identity, Lang};
use crate::inbound::{ChatEvent, Reply};
use crate::rules::{CommandRule, Role, Rules};

/// A command this binary implements, named in the rules by [`Builtin::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Help,
    Whoami,
}

impl Builtin {
    pub const ALL: [Builtin; 2] = [Builtin::Help, Builtin::Whoami];

    /// The name `[[command]] name = "…"` refers to.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Help => "help",
            Builtin::Whoami => "whoami",
        }
    }

    /// The built-in a rules command name refers to, if this binary has it.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether running the command changes state (sends, schedules, approves). Such a
    /// command only runs once its audit row is written; read-only ones answer even when
    /// the audit log cannot be written.
    pub fn has_effects(self) -> bool {
        match self {
            Builtin::Help | Builtin::Whoami => false,
        }
    }
}

/// Everything a command sees about the message that called it.
pub struct Invocation<'a> {
    pub rules: &'a Rules,
    pub event: &'a ChatEvent,
    pub command: &'a CommandRule,
    pub parsed: &'a ParsedCommand,
    pub lang: Lang,
    pub caller: Option<Role>,
}

/// Why a command did not succeed, with the reply that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The caller's input was wrong; audited as `invalid`.
    Invalid(String),
    /// Something failed on our side; audited as `error`.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "no built-in fails internally yet; campaign commands will"
        )
    )]
    Internal(String),
}

pub async fn run(builtin: Builtin, call: &Invocation<'_>) -> Result<Vec<Reply>, Failure> {
    match builtin {
        Builtin::Help => help(call),
        Builtin::Whoami => whoami(call),
    }
}

fn may_use(caller: Option<Role>, command: &CommandRule) -> bool {
    match command.role {
        None => true,
        Some(required) => caller.is_some_and(|role| role.allows(required)),
    }
}

fn help(call: &Invocation<'_>) -> Result<Vec<Reply>, Failure> {
    let Invocation {
        rules,
        event,
        parsed,
        lang,
        caller,
        ..
    } = *call;
    if !parsed.flags.is_empty() || parsed.args.len() > 1 {
        return Err(Failure::Invalid(text::bad_arguments(lang, call.command)));
    }
    if let Some(topic) = parsed.args.first() {
        let name = topic.trim_start_matches(['/', '／']);
        return match rules.command(name) {
            Some(command) => Ok(vec![Reply::text(text::help_detail(
                lang,
                command,
                may_use(caller, command),
            ))]),
            None => Err(Failure::Invalid(text::help_unknown_topic(lang, topic))),
        };
    }
    let usable: Vec<&CommandRule> = rules
        .commands
        .values()
        .filter(|command| may_use(caller, command))
        .collect();
    let reply = if usable.is_empty() {
        text::help_none_usable(lang, &event.platform, &event.sender)
    } else {
        text::help_list(lang, &usable)
    };
    Ok(vec![Reply::text(reply)])
}

fn whoami(call: &Invocation<'_>) -> Result<Vec<Reply>, Failure> {
    let parsed = call.parsed;
    if !parsed.flags.is_empty() || !parsed.args.is_empty() {
        return Err(Failure::Invalid(text::bad_arguments(
            call.lang,
            call.command,
        )));
    }
    let event = call.event;
    let identity = Identity {
        platform: &event.platform,
        user: &event.sender,
        name: event.sender_name.as_deref(),
        account: &event.account,
        role: call.caller,
    };
    Ok(vec![Reply::text(text::whoami(call.lang, &identity))])
}
