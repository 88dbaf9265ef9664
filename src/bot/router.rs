//! From a chat message to replies: find the command word, resolve it against the rules,
//! check the caller's role, parse, run, and audit every step that reached a command.

use std::future::Future;

use super::commands::{self, Builtin, Failure, Invocation};
use super::listener;
use super::parse::{self, CommandWord};
use super::store::{self, AuditRecord, Outcome};
use super::text::{self, Lang};
use crate::clock::SharedClock;
use crate::db::Db;
use crate::inbound::{ChatEvent, Reply};
use crate::rules::{CommandRule, Rules};

/// How close a typo must be to a command name to be offered as "did you mean"
/// (normalised Damerau–Levenshtein similarity, 1.0 = identical). 0.5 catches one slip in
/// a four-letter word (`/hlep`) without offering `/h` for every one-letter typo.
const SUGGESTION_THRESHOLD: f64 = 0.5;

/// Longest command word stored in the audit log for an unknown command.
const MAX_AUDITED_WORD_CHARS: usize = 64;

/// Answers chat commands. Holds only shared handles, so building one per request is free.
#[derive(Debug, Clone)]
pub struct Bot {
    db: Db,
    clock: SharedClock,
}

impl Bot {
    /// Cheap: both are shared handles.
    pub fn new(db: Db, clock: SharedClock) -> Self {
        Self { db, clock }
    }

    /// The replies to one chat message: none for chatter that is not a command, one or
    /// more otherwise. Never fails: problems become replies and log lines.
    pub async fn handle(&self, rules: &Rules, event: &ChatEvent) -> Vec<Reply> {
        let Some(word) = parse::command_word(&event.text) else {
            return listener::listen(&self.db, self.clock.now_ms(), rules, event).await;
        };
        let lang = Lang::for_word(word.name);
        let Some(command) = rules.command(word.name) else {
            if !word.slashed {
                // Not a command: an opt-out, feedback, or an operator's chatter.
                return listener::listen(&self.db, self.clock.now_ms(), rules, event).await;
            }
            return self.unknown(rules, event, word, lang).await;
        };
        let caller = rules.role_of(&event.platform, &event.sender);
        if let Some(required) = command.role
            && !caller.is_some_and(|role| role.allows(required))
        {
            self.audit(event, &command.name, Outcome::Denied).await;
            let platform = &event.platform;
            let reply = text::denied(lang, command, required, caller, platform, &event.sender);
            return vec![Reply::text(reply)];
        }
        let parsed = match parse::parse(&event.text) {
            Ok(Some(parsed)) => parsed,
            // command_word found a word, so parse does too; stay quiet rather than panic.
            Ok(None) => return Vec::new(),
            Err(error) => {
                self.audit(event, &command.name, Outcome::Invalid).await;
                return vec![Reply::text(text::parse_error(lang, &error, command))];
            }
        };
        let Some(builtin) = Builtin::from_name(&command.name) else {
            // The rules loader only accepts built-in names; this guards a rules file
            // written for a newer version being loaded by an older binary.
            self.audit(event, &command.name, Outcome::Error).await;
            return vec![Reply::text(text::not_implemented(lang, &command.name))];
        };
        let call = Invocation {
            rules,
            event,
            command,
            parsed: &parsed,
            lang,
            caller,
        };
        let work = commands::run(builtin, &call);
        self.run_audited(event, command, builtin.has_effects(), lang, work)
            .await
    }

    async fn unknown(
        &self,
        rules: &Rules,
        event: &ChatEvent,
        word: CommandWord<'_>,
        lang: Lang,
    ) -> Vec<Reply> {
        let typed: String = word.name.chars().take(MAX_AUDITED_WORD_CHARS).collect();
        self.audit(event, &format!("/{typed}"), Outcome::Unknown)
            .await;
        let suggestion = suggest(rules, word.name);
        vec![Reply::text(text::unknown_command(
            lang,
            word.name,
            suggestion.as_deref(),
        ))]
    }

    /// Runs a command under the audit policy.
    ///
    /// The design promises that every command is audited, but refusing `/whoami` because
    /// the audit table cannot be written would lock people out of the very commands they
    /// use to diagnose an outage, while losing the record of a read-only query harms
    /// no one. So: a command with effects writes a `started` row first and does not run
    /// unless that succeeds (the row then takes the real outcome); a read-only command
    /// runs first and its row is best effort, logged when it cannot be written.
    async fn run_audited(
        &self,
        event: &ChatEvent,
        command: &CommandRule,
        has_effects: bool,
        lang: Lang,
        work: impl Future<Output = Result<Vec<Reply>, Failure>>,
    ) -> Vec<Reply> {
        let started = if has_effects {
            match store::insert_audit(
                &self.db,
                &self.record(event, &command.name, Outcome::Started),
            )
            .await
            {
                Ok(id) => Some(id),
                Err(error) => {
                    tracing::error!(command = %command.name, %error, "refusing a command with effects: its audit row could not be written");
                    count(&command.name, Outcome::Error);
                    return vec![Reply::text(text::audit_unavailable(lang))];
                }
            }
        } else {
            None
        };
        let (outcome, replies) = match work.await {
            Ok(replies) => (Outcome::Ok, replies),
            Err(Failure::Invalid(reply)) => (Outcome::Invalid, vec![Reply::text(reply)]),
            Err(Failure::Internal(reply)) => (Outcome::Error, vec![Reply::text(reply)]),
        };
        match started {
            Some(id) => {
                count(&command.name, outcome);
                if let Err(error) = store::finish_audit(&self.db, id, outcome).await {
                    tracing::error!(command = %command.name, audit.id = id, outcome = outcome.as_str(), %error, "could not record a command's outcome; its audit row stays `started`");
                }
            }
            None => self.audit(event, &command.name, outcome).await,
        }
        replies
    }

    /// Best-effort audit row for a message that did not get to run anything.
    async fn audit(&self, event: &ChatEvent, command: &str, outcome: Outcome) {
        count(command, outcome);
        let record = self.record(event, command, outcome);
        if let Err(error) = store::append_audit(&self.db, &record).await {
            tracing::error!(command, outcome = outcome.as_str(), %error, "could not write a command audit row; answering anyway");
        }
    }

    fn record(&self, event: &ChatEvent, command: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            at: self.clock.now_ms(),
            platform: event.platform.clone(),
            account: event.account.clone(),
            chat: event.chat.clone(),
            sender: event.sender.clone(),
            command: command.to_string(),
            outcome,
        }
    }
}

fn count(command: &str, outcome: Outcome) {
    // Unknown words are free text: one label value for all of them keeps the series bounded.
    let label = if outcome == Outcome::Unknown {
        "unknown".to_string()
    } else {
        command.to_string()
    };
    metrics::counter!("qunfa_commands_total", "command" => label, "outcome" => outcome.as_str())
        .increment(1);
}

/// The command name or alias closest to a mistyped word, when it is close enough.
fn suggest(rules: &Rules, typed: &str) -> Option<String> {
    let typed = typed.to_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for command in rules.commands.values() {
        for candidate in std::iter::once(&command.name).chain(&command.aliases) {
            let score = strsim::normalized_damerau_levenshtein(&typed, &candidate.to_lowercase());
            if score >= SUGGESTION_THRESHOLD && best.is_none_or(|(top, _)| score > top) {
                best = Some((score, candidate));
            }
        }
    }
    best.map(|(_, candidate)| candidate.to_string())
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
