//! The chat-command bot: a [`ChatEvent`](crate::inbound::ChatEvent) in, replies out. Finds
//! the command word, resolves it against the rules (names and aliases), checks the
//! caller's role, runs the built-in, and writes the audit trail. Messages that are not
//! commands: opt-out keywords and feedback from non-operators (`listener.rs`).
//!
//! Knows nothing of platforms or HTTP: inbound adapters build the event and deliver the
//! replies. All SQL lives in `store.rs`; every user-facing sentence in `text.rs`.

mod commands;
mod listener;
mod parse;
mod router;
mod store;
mod text;

#[cfg(test)]
pub(crate) mod test_support;

pub use commands::Builtin;
pub use listener::has_opted_out;
pub use parse::{CommandWord, ParseError, ParsedCommand, command_word, parse, quote};
pub use router::Bot;
#[cfg(test)]
pub(crate) use store::queue_audit;
pub use store::{AuditRecord, Outcome, recent_audit};
pub use text::Lang;
