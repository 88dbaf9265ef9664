//! Loads, validates and watches the `bot-rules/` directory. Pure apart from reading the
//! directory: the rest of the service sees only the validated [`Rules`].
//!
//! `load` turns the directory into [`Rules`] or a [`RulesError`] listing every problem as
//! `file:line:col: message`; `check` adds the secret warnings for `qunfa check-rules`;
//! `spawn_watcher` tells the caller when to reload (SIGHUP or a changed `*.toml` file).

mod assemble;
mod commands;
mod duration;
mod load;
mod model;
mod problem;
mod reader;
mod sections;
mod watch;

#[cfg(test)]
mod tests;

pub use commands::{BUILTIN_COMMANDS, default_command};
pub use load::{CheckReport, check, disabled_inbound, load, secret_warnings};
pub use model::*;
pub use problem::{Problem, RulesError};
pub use watch::{ReloadCause, spawn_watcher};
