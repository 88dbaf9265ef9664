//! The built-in commands the rules can configure, what each does, and whether it changes
//! anything (which decides how strictly it is audited).

use sqlx::AnyConnection;

use super::parse::ParsedCommand;
use super::text::{self, Identity, Lang, QuotaLine};
use crate::channels::{ChannelRegistry, ChannelStatus};
use crate::clock::UnixMillis;
use crate::db::Db;
use crate::delivery::breaker::{BreakerState, Breakers};
use crate::delivery::quota::{Quotas, zone_named};
use crate::delivery::route;
use crate::delivery::{Accepted, Outbox};
use crate::inbound::{ChatEvent, Reply};
use crate::rules::{CommandRule, Role, Rules};

/// A command this binary implements, named in the rules by [`Builtin::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Help,
    Whoami,
    SendTest,
    Quota,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [
        Builtin::Help,
        Builtin::Whoami,
        Builtin::SendTest,
        Builtin::Quota,
    ];

    /// The name `[[command]] name = "…"` refers to.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Help => "help",
            Builtin::Whoami => "whoami",
            Builtin::SendTest => "send-test",
            Builtin::Quota => "quota",
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
            Builtin::Help | Builtin::Whoami | Builtin::Quota => false,
            Builtin::SendTest => true,
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
    pub reach: Reach<'a>,
}

/// What commands reach beyond the message: the channels of the same rules version, the
/// database, and this process's circuit breakers (absent where no workers run).
#[derive(Clone, Copy)]
pub struct Reach<'a> {
    pub channels: &'a ChannelRegistry,
    pub db: &'a Db,
    pub now: UnixMillis,
    pub breakers: Option<&'a Breakers>,
}

/// Why a command did not succeed, with the reply that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The caller's input was wrong; audited as `invalid`.
    Invalid(String),
    /// Something failed on our side; audited as `error`.
    Internal(String),
}

/// Runs `builtin`. A command with effects writes through `writes`, the transaction that
/// also records the chat message's callback id and audit row.
pub async fn run(
    builtin: Builtin,
    call: &Invocation<'_>,
    writes: Option<&mut AnyConnection>,
) -> Result<Vec<Reply>, Failure> {
    match builtin {
        Builtin::Help => help(call),
        Builtin::Whoami => whoami(call),
        Builtin::SendTest => send_test(call, writes).await,
        Builtin::Quota => quota(call).await,
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

/// `/send-test <channel> <to> <text>`: one message through the outbox, committed with the
/// chat message's callback id, so a platform's retry of the command sends nothing twice.
/// `to` is `-` for a group robot, which posts to its own group. The text is every word
/// after `to`, then the message's further lines.
async fn send_test(
    call: &Invocation<'_>,
    writes: Option<&mut AnyConnection>,
) -> Result<Vec<Reply>, Failure> {
    let Invocation {
        rules,
        parsed,
        lang,
        reach,
        ..
    } = *call;
    let (Some(channel_id), Some(to)) = (parsed.args.first(), parsed.args.get(1)) else {
        return Err(Failure::Invalid(text::bad_arguments(lang, call.command)));
    };
    let mut message_text = parsed.args[2..].join(" ");
    if let Some(body) = &parsed.body {
        if !message_text.is_empty() {
            message_text.push('\n');
        }
        message_text.push_str(body);
    }
    if !parsed.flags.is_empty() || message_text.trim().is_empty() {
        return Err(Failure::Invalid(text::bad_arguments(lang, call.command)));
    }
    let Some(status) = reach.channels.get(channel_id) else {
        let known: Vec<&str> = reach.channels.ids().collect();
        return Err(Failure::Invalid(text::unknown_channel(
            lang, channel_id, &known,
        )));
    };
    let to = if to == "-" { "" } else { to.as_str() };
    let message = route::test_request(channel_id, status, to, &message_text)
        .and_then(|request| route::resolve(&request, None, reach.channels))
        .map_err(|refused| Failure::Invalid(text::send_test_refused(lang, &refused.message)))?;
    let Some(writes) = writes else {
        tracing::error!("/send-test ran without a transaction; nothing was queued");
        return Err(Failure::Internal(text::send_test_failed(lang)));
    };
    let max_age = rules.delivery.retry.max_age;
    match Outbox::accept_one(writes, &message, reach.now, max_age).await {
        Ok(Accepted::Message { id, .. }) => {
            tracing::info!(channel = %channel_id, message = %id, sender = %call.event.sender, "test message queued from chat");
            Ok(vec![Reply::text(text::send_test_queued(
                lang, channel_id, &id,
            ))])
        }
        // Only a message with an idempotency key can meet an earlier one; a test has none.
        Ok(Accepted::KeyReused { id }) => {
            tracing::error!(channel = %channel_id, earlier = %id, "a keyless test message was taken for an earlier one");
            Err(Failure::Internal(text::send_test_failed(lang)))
        }
        Err(error) => {
            tracing::error!(channel = %channel_id, %error, "could not queue a test message from chat");
            Err(Failure::Internal(text::send_test_failed(lang)))
        }
    }
}

/// `/quota [channel]`: each channel account's use of its minute, day and month quotas, its
/// per-recipient limits, and whether it can send at all (disabled, circuit open).
async fn quota(call: &Invocation<'_>) -> Result<Vec<Reply>, Failure> {
    let Invocation {
        rules,
        parsed,
        lang,
        reach,
        ..
    } = *call;
    if !parsed.flags.is_empty() || parsed.args.len() > 1 {
        return Err(Failure::Invalid(text::bad_arguments(lang, call.command)));
    }
    let ids: Vec<&str> = match parsed.args.first() {
        Some(id) if reach.channels.get(id).is_some() => vec![id.as_str()],
        Some(id) => {
            let known: Vec<&str> = reach.channels.ids().collect();
            return Err(Failure::Invalid(text::unknown_channel(lang, id, &known)));
        }
        None => reach.channels.ids().collect(),
    };
    let zone = zone_named(&rules.delivery.quota_time_zone);
    let quotas = Quotas::new(reach.db.clone(), zone.clone());
    let circuits = reach.breakers.map(Breakers::snapshot).unwrap_or_default();
    let mut lines = Vec::with_capacity(ids.len());
    for id in ids {
        let limits = reach.channels.limits(id);
        let usage = quotas
            .usage(id, &limits, reach.now)
            .await
            .map_err(|error| {
                tracing::error!(channel = %id, %error, "could not read quota counters");
                Failure::Internal(text::quota_unavailable(lang))
            })?;
        let disabled = match reach.channels.get(id) {
            Some(ChannelStatus::Disabled { reason }) => Some(reason.as_str()),
            _ => None,
        };
        let circuit_open_until = circuits
            .iter()
            .find(|(channel, _)| channel == id)
            .filter(|(_, view)| view.state != BreakerState::Closed)
            .map(|(_, view)| view.until);
        lines.push(QuotaLine {
            channel: id,
            limits,
            usage,
            disabled,
            circuit_open_until,
        });
    }
    Ok(vec![Reply::text(text::quota(
        lang,
        &rules.delivery.quota_time_zone,
        &zone,
        reach.now,
        &lines,
    ))])
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
