//! All SQL of the bot: the `command_audit` trail of who ran which chat command, where, and
//! what came of it.

use sqlx::AnyConnection;

use crate::clock::UnixMillis;
use crate::db::{Db, Insert, Param};

/// What came of one command message, as stored in `command_audit.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
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
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Denied,
        Outcome::Unknown,
        Outcome::Invalid,
        Outcome::Error,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
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

/// Appends one row on `connection`, inside the transaction that holds the command's
/// effects: the effects and their audit row commit together or not at all.
pub async fn insert_audit(
    connection: &mut AnyConnection,
    record: &AuditRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO command_audit (at, platform, account, chat, sender, command, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(record.at)
    .bind(&record.platform)
    .bind(&record.account)
    .bind(&record.chat)
    .bind(&record.sender)
    .bind(&record.command)
    .bind(record.outcome.as_str())
    .execute(connection)
    .await?;
    Ok(())
}

/// Queues a row for the next group commit without waiting for it to commit (the audit
/// of work without effects is best effort: a crash may lose the last rows, and a failed
/// write is logged by the group commit). Only waits while the queue is full.
///
/// `callback_id` is the platform's id of the message, recorded in this row instead of a
/// row of its own in `inbound_events` (`record.account` is the inbound account it belongs
/// to); after a restart the recent ids are read back from both tables.
pub async fn queue_audit(
    db: &Db,
    record: AuditRecord,
    callback_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    db.grouped()
        .queue(Insert {
            table: "command_audit",
            columns: &[
                "at",
                "platform",
                "account",
                "chat",
                "sender",
                "command",
                "outcome",
                "callback_id",
            ],
            unique: &[],
            values: vec![
                record.at.into(),
                record.platform.into(),
                record.account.into(),
                record.chat.into(),
                record.sender.into(),
                record.command.into(),
                record.outcome.as_str().into(),
                callback_id.map_or(Param::Null, Param::from),
            ],
        })
        .await
}

/// The newest `limit` committed rows, newest first (queued rows need a
/// [`GroupCommit::flush`](crate::db::GroupCommit::flush) first). An outcome this binary
/// does not know (written by a newer version, or the `started` of an older one) reads as
/// [`Outcome::Error`] rather than failing the whole list.
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
