//! All SQL of the bot: the `command_audit` trail of who ran which chat command, where, and
//! what came of it.

use crate::clock::UnixMillis;
use crate::db::{Db, Insert};

/// What came of one command message, as stored in `command_audit.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Recorded before a command with effects runs, and replaced by its result; a row
    /// left in this state means the process stopped mid-command.
    Started,
    Ok,
    /// The caller's role is below the command's.
    Denied,
    /// A slash word that names no command.
    Unknown,
    /// The command line could not be parsed or its arguments were wrong.
    Invalid,
    /// The command failed on our side.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Started,
        Outcome::Ok,
        Outcome::Denied,
        Outcome::Unknown,
        Outcome::Invalid,
        Outcome::Error,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Unknown => "unknown",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }

    /// Reads the stored spelling back.
    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// One row of `command_audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: UnixMillis,
    pub platform: String,
    pub account: String,
    pub chat: String,
    pub sender: String,
    /// The command's canonical name, or the word as typed when it named no command.
    pub command: String,
    pub outcome: Outcome,
}

/// Appends one row and returns its id.
pub async fn insert_audit(db: &Db, record: &AuditRecord) -> Result<i64, sqlx::Error> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO command_audit (at, platform, account, chat, sender, command, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(record.at)
    .bind(&record.platform)
    .bind(&record.account)
    .bind(&record.chat)
    .bind(&record.sender)
    .bind(&record.command)
    .bind(record.outcome.as_str())
    .fetch_one(db.writer())
    .await?;
    Ok(id)
}

/// Writes an audit row whose id nobody needs, sharing a durable commit with other
/// requests' small writes (group commit): every command message writes one.
pub async fn append_audit(db: &Db, record: &AuditRecord) -> Result<(), sqlx::Error> {
    db.grouped()
        .insert(Insert {
            table: "command_audit",
            columns: &[
                "at", "platform", "account", "chat", "sender", "command", "outcome",
            ],
            unique: &[],
            values: vec![
                record.at.into(),
                (&record.platform).into(),
                (&record.account).into(),
                (&record.chat).into(),
                (&record.sender).into(),
                (&record.command).into(),
                record.outcome.as_str().into(),
            ],
        })
        .await?;
    Ok(())
}

/// Replaces the outcome of a row written as [`Outcome::Started`].
pub async fn finish_audit(db: &Db, id: i64, outcome: Outcome) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE command_audit SET outcome = $1 WHERE id = $2")
        .bind(outcome.as_str())
        .bind(id)
        .execute(db.writer())
        .await?;
    Ok(())
}

/// The newest `limit` rows, newest first. An outcome this binary does not know (written
/// by a newer version) reads as [`Outcome::Error`] rather than failing the whole list.
pub async fn recent_audit(db: &Db, limit: i64) -> Result<Vec<AuditRecord>, sqlx::Error> {
    type Row = (i64, String, String, String, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT at, platform, account, chat, sender, command, outcome FROM command_audit \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(at, platform, account, chat, sender, command, outcome)| AuditRecord {
                at,
                platform,
                account,
                chat,
                sender,
                command,
                outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Error),
            },
        )
        .collect())
}
