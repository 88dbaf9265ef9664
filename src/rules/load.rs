//! Reads a `bot-rules/` directory: every `*.toml` file in it, sorted by name, parsed,
//! merged and validated as a whole. Reports every problem found, across all files.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::assemble::assemble;
use super::model::{ChannelKind, Rules, SecretRef, SlackAuth};
use super::problem::{Problem, RulesError, Source};
use super::sections::{FileRules, read_file};

/// Loads and validates the rules in `dir`. On failure, every problem found, each with
/// the file, line and column to fix.
pub fn load(dir: &Path) -> Result<Rules, RulesError> {
    let (rules, problems) = read_dir_rules(dir);
    match rules {
        Some(rules) if problems.is_empty() => Ok(rules),
        _ => Err(RulesError { problems }),
    }
}

/// What `qunfa check-rules` prints: problems make the rules unusable; warnings (missing
/// secrets) only disable the accounts they name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

/// Validates `dir` as [`load`] does, and also reports the accounts whose secret is not in
/// the environment, even when there are problems too, so one run shows everything to fix.
pub fn check(dir: &Path) -> CheckReport {
    let (rules, problems) = read_dir_rules(dir);
    CheckReport {
        warnings: rules.as_ref().map(secret_warnings).unwrap_or_default(),
        problems,
    }
}

/// One line per account that is disabled because its secret variable does not resolve.
/// Names the variable, never prints a value.
pub fn secret_warnings(rules: &Rules) -> Vec<String> {
    let channels = rules.channels.iter().filter_map(|channel| {
        let secrets: Vec<&SecretRef> = match &channel.kind {
            ChannelKind::Log { .. } => vec![],
            ChannelKind::Webhook { secret, .. } => vec![secret],
            ChannelKind::WecomRobot { key, .. } => vec![key],
            ChannelKind::WecomApp { secret, .. } => vec![secret],
            ChannelKind::WechatOa { app_secret, .. } => vec![app_secret],
            // The QQ channel never sends, so it needs no secret to be "ready".
            ChannelKind::Qq { .. } => vec![],
            ChannelKind::DingtalkRobot {
                access_token,
                secret,
                ..
            } => std::iter::once(access_token).chain(secret).collect(),
            ChannelKind::DingtalkApp { app_secret, .. } => vec![app_secret],
            // -- feishu / slack
            ChannelKind::FeishuBot {
                hook_token, secret, ..
            } => std::iter::once(hook_token).chain(secret).collect(),
            ChannelKind::FeishuApp { app_secret, .. } => vec![app_secret],
            ChannelKind::Slack { auth, .. } => match auth {
                SlackAuth::Webhook(secret) | SlackAuth::BotToken(secret) => vec![secret],
            },
            ChannelKind::TwilioSms { auth_token, .. } => vec![auth_token],
            ChannelKind::AliyunSms {
                access_key_secret, ..
            } => vec![access_key_secret],
            ChannelKind::TencentSms { secret_key, .. } => vec![secret_key],
            ChannelKind::Sendgrid { api_key, .. } => vec![api_key],
            ChannelKind::Smtp { password, .. } => password.iter().collect(),
        };
        missing_secrets(&channel.id, secrets)
    });
    let inbound = disabled_inbound(rules)
        .into_iter()
        .map(|(id, reason)| format!("inbound account `{id}` is disabled: {reason}"));
    channels.chain(inbound).collect()
}

/// The warning for a channel some of whose secret variables do not resolve.
fn missing_secrets<'a>(
    id: &str,
    secrets: impl IntoIterator<Item = &'a SecretRef>,
) -> Option<String> {
    let missing: Vec<String> = secrets
        .into_iter()
        .filter_map(|secret| secret.resolve().err())
        .collect();
    (!missing.is_empty()).then(|| format!("channel `{id}` is disabled: {}", missing.join("; ")))
}

/// The inbound accounts that cannot take callbacks because a secret variable is missing
/// or empty, each with the reason (variable names, never values).
pub fn disabled_inbound(rules: &Rules) -> Vec<(String, String)> {
    rules
        .inbound
        .iter()
        .filter_map(|account| {
            let missing: Vec<String> = account
                .platform
                .secrets()
                .into_iter()
                .filter_map(|secret| secret.resolve().err())
                .collect();
            (!missing.is_empty()).then(|| (account.id.clone(), missing.join("; ")))
        })
        .collect()
}

/// Whether a directory entry is a rules file. Dot files are skipped because editors keep
/// lock and backup files there (Emacs' `.#rules.toml` is a dangling symlink).
pub(super) fn is_rules_file_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.ends_with(".toml") && !name.starts_with('.')
}

/// The rules built from whatever was readable (`None` when nothing was), and every
/// problem found, sorted by file and position.
fn read_dir_rules(dir: &Path) -> (Option<Rules>, Vec<Problem>) {
    let mut problems = Vec::new();
    let paths = match rules_files(dir) {
        Ok(paths) => paths,
        Err(problem) => return (None, vec![problem]),
    };
    if paths.is_empty() {
        let message = format!(
            "no *.toml files in the rules directory `{}`; add rules files there (the shipped \
             bot-rules/ directory is a working example) or point --rules at another directory",
            dir.display()
        );
        return (None, vec![Problem::whole(dir, message)]);
    }
    let files: Vec<FileRules> = paths
        .iter()
        .filter_map(|path| read_one_file(path, &mut problems))
        .collect();
    let rules = assemble(dir, files, &mut problems);
    problems.sort_by(|left, right| {
        (&left.path, left.line, left.column).cmp(&(&right.path, right.line, right.column))
    });
    (Some(rules), problems)
}

fn rules_files(dir: &Path) -> Result<Vec<PathBuf>, Problem> {
    let entries = std::fs::read_dir(dir).map_err(|error| {
        let message = match error.kind() {
            ErrorKind::NotFound => format!(
                "the rules directory `{}` does not exist; create it or point --rules at the \
                 directory that holds your *.toml rules",
                dir.display()
            ),
            ErrorKind::NotADirectory => format!(
                "`{}` is not a directory; --rules takes the directory that holds the *.toml rules",
                dir.display()
            ),
            _ => format!(
                "cannot read the rules directory `{}`: {error}",
                dir.display()
            ),
        };
        Problem::whole(dir, message)
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| {
            Problem::whole(
                dir,
                format!(
                    "cannot list the rules directory `{}`: {error}",
                    dir.display()
                ),
            )
        })?;
        let name = entry.file_name();
        // Follows symlinks, so a linked rules file counts and a directory named x.toml does not.
        let is_dir = std::fs::metadata(entry.path()).is_ok_and(|meta| meta.is_dir());
        if is_rules_file_name(&name) && !is_dir {
            paths.push(dir.join(name));
        }
    }
    paths.sort();
    Ok(paths)
}

fn read_one_file(path: &Path, problems: &mut Vec<Problem>) -> Option<FileRules> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            problems.push(Problem::whole(
                path,
                format!("cannot read this rules file: {error}"),
            ));
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            let prefix = String::from_utf8_lossy(valid);
            let source = Source {
                path,
                text: &prefix,
            };
            problems.push(Problem::at(
                &source.pos_of_offset(prefix.len()),
                "the file is not valid UTF-8; save it as UTF-8",
            ));
            return None;
        }
    };
    let source = Source { path, text: &text };
    match toml_edit::ImDocument::parse(text.as_str()) {
        Ok(document) => Some(read_file(&source, document.as_table(), problems)),
        Err(error) => {
            let message = error.message().trim().replace('\n', "; ");
            problems.push(Problem::at(
                &source.pos(error.span()),
                format!("TOML syntax error: {message}"),
            ));
            None
        }
    }
}
