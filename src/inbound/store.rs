//! SQL of the inbound side: processed callback ids (so a retried callback never runs a
//! command twice, also after a restart) and non-message platform events.

use sqlx::AnyConnection;

use crate::clock::UnixMillis;
use crate::db::{Db, Insert};

/// The `inbound_events` row that records `event_id` for `account`, for the group commit
/// (a duplicate key is skipped, not an error).
pub(crate) fn event_row(account: &str, event_id: &str, now: UnixMillis) -> Insert {
    Insert {
        table: "inbound_events",
        columns: &["account", "event_id", "received_at"],
        unique: &["account", "event_id"],
        values: vec![account.into(), event_id.into(), now.into()],
    }
}

/// Records `event_id` for `account` on `connection` (inside the caller's transaction);
/// true when this is the first time it is seen.
pub(crate) async fn insert_event(
    connection: &mut AnyConnection,
    account: &str,
    event_id: &str,
    now: UnixMillis,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbound_events (account, event_id, received_at) VALUES ($1, $2, $3) \
         ON CONFLICT (account, event_id) DO NOTHING",
    )
    .bind(account)
    .bind(event_id)
    .bind(now)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The `limit` most recently received (account, event id) pairs, newest first: from
/// `inbound_events`, and from the audit rows of read-only commands, which carry their
/// message's id instead of a row of their own (see `bot::store::queue_audit`).
pub(crate) async fn recent_event_keys(
    db: &Db,
    limit: usize,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT account, event_id, received_at FROM \
           (SELECT account, event_id, received_at FROM inbound_events \
            ORDER BY received_at DESC LIMIT $1) AS events \
         UNION ALL \
         SELECT account, callback_id, at FROM \
           (SELECT account, callback_id, at FROM command_audit WHERE callback_id IS NOT NULL \
            ORDER BY id DESC LIMIT $1) AS audited \
         ORDER BY received_at DESC LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.reader())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(account, event_id, _)| (account, event_id))
        .collect())
}

/// Keeps a verified non-message event for the delivery and campaign layers, once per
/// `dedup_key`: the key and the event commit together. True when stored by this call.
#[expect(
    clippy::too_many_arguments,
    reason = "one row's columns, named at the call site"
)]
pub async fn record_platform_event_once(
    db: &Db,
    platform: &str,
    account: &str,
    dedup_key: &str,
    kind: &str,
    event_id: &str,
    payload: &serde_json::Value,
    now: UnixMillis,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.writer().begin().await?;
    let first = insert_event(&mut tx, account, dedup_key, now).await?;
    if first {
        sqlx::query(
            "INSERT INTO platform_events (platform, account, kind, event_id, payload, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(platform)
        .bind(account)
        .bind(kind)
        .bind(event_id)
        .bind(payload.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(first)
}

/// One stored platform event, for tests and the later campaign layer.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformEventRow {
    pub platform: String,
    pub account: String,
    pub kind: String,
    pub event_id: Option<String>,
    pub payload: serde_json::Value,
}

/// The most recent platform events, newest first.
pub async fn recent_platform_events(
    db: &Db,
    limit: i64,
) -> Result<Vec<PlatformEventRow>, sqlx::Error> {
    let rows: Vec<(String, String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT platform, account, kind, event_id, payload FROM platform_events \
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(platform, account, kind, event_id, payload)| PlatformEventRow {
                platform,
                account,
                kind,
                event_id,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::{AuditRecord, Outcome, queue_audit};
    use crate::db::testing::TestDb;

    async fn recent_ids_come_from_both_tables_newest_first(db: &Db) {
        for (event_id, at) in [("e-1", 1), ("e-3", 3), ("e-5", 5)] {
            db.grouped()
                .queue(event_row("acct", event_id, at))
                .await
                .unwrap();
        }
        for (callback_id, at) in [(Some("a-2"), 2), (Some("a-4"), 4), (None, 6)] {
            let record = AuditRecord {
                at,
                platform: "dingtalk".into(),
                account: "acct".into(),
                chat: "c".into(),
                sender: "u".into(),
                command: "whoami".into(),
                outcome: Outcome::Ok,
            };
            queue_audit(db, record, callback_id).await.unwrap();
        }
        db.grouped().flush().await.unwrap();
        let ids = |keys: Vec<(String, String)>| -> Vec<String> {
            keys.into_iter()
                .map(|(account, id)| {
                    assert_eq!(account, "acct");
                    id
                })
                .collect()
        };
        assert_eq!(
            ids(recent_event_keys(db, 3).await.unwrap()),
            ["e-5", "a-4", "e-3"],
            "an audit row without a callback id (the shell) is no id"
        );
        assert_eq!(
            ids(recent_event_keys(db, 10).await.unwrap()),
            ["e-5", "a-4", "e-3", "a-2", "e-1"]
        );
    }

    #[tokio::test]
    async fn recent_ids_come_from_both_tables_newest_first_on_sqlite() {
        let test_db = TestDb::sqlite().await.unwrap();
        recent_ids_come_from_both_tables_newest_first(&test_db.db).await;
        test_db.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn recent_ids_come_from_both_tables_newest_first_on_postgres() {
        let Some(test_db) = TestDb::postgres().await.unwrap() else {
            return;
        };
        recent_ids_come_from_both_tables_newest_first(&test_db.db).await;
        test_db.cleanup().await.unwrap();
    }
}
