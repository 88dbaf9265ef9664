//! From a chat message to replies: find the command word, resolve it against the rules,
//! check the caller's role, parse, run, and audit every step that reached a command.

use sqlx::AnyConnection;

use std::sync::LazyLock;

use super::commands::{self, Builtin, Failure, Invocation, Reach};
use super::listener;
use super::parse::{self, CommandWord};
use super::store::{self, AuditRecord, Outcome};
use super::text::{self, Lang};
use crate::app::{AppState, Live};
use crate::clock::SharedClock;
use crate::db::Db;
use crate::delivery::breaker::Breakers;
use crate::inbound::{Admission, ChatEvent, Effects, Reply};
use crate::read_mostly::ReadMostly;
use crate::rules::{CommandRule, Rules};

/// How close a typo must be to a command name to be offered as "did you mean"
/// (normalised Damerau–Levenshtein similarity, 1.0 = identical). 0.5 catches one slip in
/// a four-letter word (`/hlep`) without offering `/h` for every one-letter typo.
const SUGGESTION_THRESHOLD: f64 = 0.5;

/// Longest command word stored in the audit log for an unknown command.
const MAX_AUDITED_WORD_CHARS: usize = 64;

/// Answers chat commands. Holds one shared handle, so building one per request costs a
/// single reference count: it used to hold the database, clock, wake-up and breakers
/// apiece, and a callback paid for cloning and dropping each of them (reference counts
/// on cache lines every worker thread writes to).
#[derive(Debug, Clone)]
pub struct Bot {
    handles: Handles,
}

#[derive(Clone)]
enum Handles {
    /// A running server: wakes its delivery workers and reports their circuit breakers.
    Serving(AppState),
    /// Without delivery workers beside it: what it queues waits for their next poll.
    Standalone { db: Db, clock: SharedClock },
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handles::Serving(_) => formatter.write_str("Serving"),
            Handles::Standalone { db, .. } => formatter
                .debug_struct("Standalone")
                .field("db", db)
                .finish(),
        }
    }
}

impl Bot {
    /// A bot without delivery workers beside it: what it queues waits for their next poll.
    pub fn new(db: Db, clock: SharedClock) -> Self {
        Self {
            handles: Handles::Standalone { db, clock },
        }
    }

    /// The bot of a running server, which wakes its delivery workers and reports their
    /// circuit breakers.
    pub fn serving(state: &AppState) -> Self {
        Self {
            handles: Handles::Serving(state.clone()),
        }
    }

    fn db(&self) -> &Db {
        match &self.handles {
            Handles::Serving(state) => &state.db,
            Handles::Standalone { db, .. } => db,
        }
    }

    fn now_ms(&self) -> i64 {
        match &self.handles {
            Handles::Serving(state) => state.clock.now_ms(),
            Handles::Standalone { clock, .. } => clock.now_ms(),
        }
    }

    fn delivery_wake(&self) -> Option<&tokio::sync::Notify> {
        match &self.handles {
            Handles::Serving(state) => Some(&state.delivery_wake),
            Handles::Standalone { .. } => None,
        }
    }

    fn breakers(&self) -> Option<&Breakers> {
        match &self.handles {
            Handles::Serving(state) => Some(&state.breakers),
            Handles::Standalone { .. } => None,
        }
    }

    /// The replies to one chat message without a platform id to de-duplicate (the shell
    /// console); see [`Bot::handle_admitted`].
    pub async fn handle(&self, live: &Live, event: &ChatEvent) -> Vec<Reply> {
        self.handle_admitted(live, event, Admission::unrecorded())
            .await
    }

    /// The replies to one admitted chat message: none for chatter that is not a command,
    /// one or more otherwise. Never fails: problems become replies and log lines. Records
    /// the message's callback id as its work needs: queued without waiting when nothing
    /// has effects, in the transaction of the effects otherwise (see [`Admission`]).
    pub async fn handle_admitted(
        &self,
        live: &Live,
        event: &ChatEvent,
        admission: Admission,
    ) -> Vec<Reply> {
        let rules = &live.rules;
        let now = self.now_ms();
        let Some(word) = parse::command_word(&event.text) else {
            return listener::listen(self.db(), now, rules, event, admission).await;
        };
        let lang = Lang::for_word(word.name);
        let Some(command) = rules.command(word.name) else {
            if !word.slashed {
                // Not a command: an opt-out, feedback, or an operator's chatter.
                return listener::listen(self.db(), now, rules, event, admission).await;
            }
            return self.unknown(rules, event, word, lang, admission).await;
        };
        let caller = rules.role_of(&event.platform, &event.sender);
        if let Some(required) = command.role
            && !caller.is_some_and(|role| role.allows(required))
        {
            self.audit_later(admission, event, &command.name, Outcome::Denied)
                .await;
            let platform = &event.platform;
            let reply = text::denied(lang, command, required, caller, platform, &event.sender);
            return vec![Reply::text(reply)];
        }
        let parsed = match parse::parse(&event.text) {
            Ok(Some(parsed)) => parsed,
            // command_word found a word, so parse does too; stay quiet rather than panic.
            Ok(None) => {
                admission.record_later(self.db()).await;
                return Vec::new();
            }
            Err(error) => {
                self.audit_later(admission, event, &command.name, Outcome::Invalid)
                    .await;
                return vec![Reply::text(text::parse_error(lang, &error, command))];
            }
        };
        let Some(builtin) = Builtin::from_name(&command.name) else {
            // The rules loader only accepts built-in names; this guards a rules file
            // written for a newer version being loaded by an older binary.
            self.audit_later(admission, event, &command.name, Outcome::Error)
                .await;
            return vec![Reply::text(text::not_implemented(lang, &command.name))];
        };
        let call = Invocation {
            rules,
            event,
            command,
            parsed: &parsed,
            lang,
            caller,
            reach: Reach {
                channels: &live.channels,
                db: self.db(),
                now,
                breakers: self.breakers(),
            },
        };
        // A command with effects writes through the connection it is given here, so its
        // writes commit with the callback id and the audit row.
        let work =
            async |writes: Option<&mut AnyConnection>| commands::run(builtin, &call, writes).await;
        let has_effects = builtin.has_effects();
        let replies = self
            .run_audited(event, command, has_effects, lang, admission, work)
            .await;
        if has_effects && let Some(wake) = self.delivery_wake() {
            // After the commit: a worker woken earlier would find nothing yet.
            wake.notify_one();
        }
        replies
    }

    async fn unknown(
        &self,
        rules: &Rules,
        event: &ChatEvent,
        word: CommandWord<'_>,
        lang: Lang,
        admission: Admission,
    ) -> Vec<Reply> {
        let typed: String = word.name.chars().take(MAX_AUDITED_WORD_CHARS).collect();
        self.audit_later(admission, event, &format!("/{typed}"), Outcome::Unknown)
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
    /// no one. So a read-only command runs and answers at once; its audit row and callback
    /// id are queued for the next group commit, not waited for.
    ///
    /// A command with effects runs inside one transaction that also holds the message's
    /// callback id and, at the end, its audit row; it answers only after that commits. A
    /// crash before the commit leaves no trace, so the platform's retry runs it once; after
    /// the commit the retry is a duplicate. Its writes sit in a savepoint: when it fails,
    /// they are undone and only the id and the failure's audit row are kept. No audit row,
    /// no effects: if the audit cannot be written, nothing is kept and the caller is told.
    async fn run_audited(
        &self,
        event: &ChatEvent,
        command: &CommandRule,
        has_effects: bool,
        lang: Lang,
        admission: Admission,
        work: impl AsyncFnOnce(Option<&mut AnyConnection>) -> Result<Vec<Reply>, Failure>,
    ) -> Vec<Reply> {
        if !has_effects {
            let (outcome, replies) = settle(work(None).await);
            self.audit_later(admission, event, &command.name, outcome)
                .await;
            return replies;
        }
        let effects = match admission.begin(self.db()).await {
            Ok(Some(effects)) => effects,
            // A retry of a message whose command already ran and answered.
            Ok(None) => return Vec::new(),
            Err(error) => {
                tracing::error!(command = %command.name, %error, "refusing a command with effects: its transaction could not be opened");
                count(&command.name, Outcome::Error);
                return vec![Reply::text(text::audit_unavailable(lang))];
            }
        };
        match self.run_in(effects, event, command, work).await {
            Ok((outcome, replies)) => {
                count(&command.name, outcome);
                replies
            }
            Err(error) => {
                tracing::error!(command = %command.name, %error, "a command with effects was rolled back: its writes or audit row could not be committed");
                count(&command.name, Outcome::Error);
                vec![Reply::text(text::audit_unavailable(lang))]
            }
        }
    }

    /// The effectful half of [`Bot::run_audited`]: the work in a savepoint of `effects`,
    /// then the audit row, then the commit.
    async fn run_in(
        &self,
        mut effects: Effects,
        event: &ChatEvent,
        command: &CommandRule,
        work: impl AsyncFnOnce(Option<&mut AnyConnection>) -> Result<Vec<Reply>, Failure>,
    ) -> Result<(Outcome, Vec<Reply>), sqlx::Error> {
        let mut savepoint = sqlx::Connection::begin(effects.connection()).await?;
        let result = work(Some(&mut *savepoint)).await;
        if result.is_ok() {
            savepoint.commit().await?;
        } else {
            savepoint.rollback().await?;
        }
        let (outcome, replies) = settle(result);
        let record = self.record(event, &command.name, outcome);
        store::insert_audit(effects.connection(), &record).await?;
        effects.commit().await?;
        Ok((outcome, replies))
    }

    /// Records a message's callback id and audit row without waiting for either to commit.
    async fn audit_later(
        &self,
        admission: Admission,
        event: &ChatEvent,
        command: &str,
        outcome: Outcome,
    ) {
        count(command, outcome);
        let callback_id = admission.into_recorded_in_audit();
        let callback_id = callback_id.as_ref().map(|id| id.event_id());
        let record = self.record(event, command, outcome);
        if let Err(error) = store::queue_audit(self.db(), record, callback_id).await {
            tracing::error!(command, outcome = outcome.as_str(), %error, "could not queue a command's audit row, which also records its callback id; answering anyway (a platform retry of this message would be answered again)");
        }
    }

    fn record(&self, event: &ChatEvent, command: &str, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            at: self.now_ms(),
            platform: event.platform.clone(),
            account: event.account.clone(),
            chat: event.chat.clone(),
            sender: event.sender.clone(),
            command: command.to_string(),
            outcome,
        }
    }
}

/// A command's result as its audit outcome and replies.
fn settle(result: Result<Vec<Reply>, Failure>) -> (Outcome, Vec<Reply>) {
    match result {
        Ok(replies) => (Outcome::Ok, replies),
        Err(Failure::Invalid(reply)) => (Outcome::Invalid, vec![Reply::text(reply)]),
        Err(Failure::Internal(reply)) => (Outcome::Error, vec![Reply::text(reply)]),
    }
}

fn count(command: &str, outcome: Outcome) {
    /// The counters already registered, per outcome, by command. The handles belong to
    /// the recorder installed when they were made: `serve` installs it before it answers
    /// anything.
    static COUNTERS: LazyLock<[ReadMostly<Box<str>, metrics::Counter>; Outcome::ALL.len()]> =
        LazyLock::new(Default::default);
    // Unknown words are free text: one label value for all of them keeps the series bounded.
    let label = if outcome == Outcome::Unknown {
        "unknown"
    } else {
        command
    };
    let by_command = &COUNTERS[outcome as usize];
    by_command.with(
        label,
        || label.into(),
        || {
            metrics::counter!(
                "qunfa_commands_total",
                "command" => label.to_string(),
                "outcome" => outcome.as_str()
            )
        },
        |counter| counter.increment(1),
    );
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
