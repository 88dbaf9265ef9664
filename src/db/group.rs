//! Group commit: small, independent writes from concurrent requests (a callback id, an
//! audit row) share one transaction and so one durable commit. With SQLite's single writer
//! and `synchronous = FULL`, one commit per request caps a busy bot at the disk's flush rate;
//! batching the statements that are waiting when a commit starts costs each request at most
//! one commit's latency and divides the flushes by the concurrency.
//!
//! Each caller still gets its own answer only after the transaction holding its statement
//! committed, so nothing is acknowledged before it is durable.

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

/// Most statements in one grouped transaction.
const MAX_GROUP: usize = 256;

/// A value bound to a grouped statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    I64(i64),
    Text(String),
    Null,
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::I64(value)
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Text(value.to_string())
    }
}

impl From<&String> for Param {
    fn from(value: &String) -> Self {
        Param::Text(value.clone())
    }
}

/// One row to insert as part of a group. Rows of the same table, columns and unique key
/// are written with one multi-row statement: every statement is a round trip to the
/// database (for SQLite, a hand-off to its worker thread), which is what a busy bot pays for.
#[derive(Debug, Clone)]
pub struct Insert {
    pub table: &'static str,
    pub columns: &'static [&'static str],
    /// Text columns of a unique key: a row whose key exists already is skipped
    /// (`ON CONFLICT DO NOTHING`) and reported as not inserted. Empty: always inserted.
    pub unique: &'static [&'static str],
    /// One value per column, in `columns` order.
    pub values: Vec<Param>,
}

impl Insert {
    fn shape(
        &self,
    ) -> (
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    ) {
        (self.table, self.columns, self.unique)
    }

    fn key(&self) -> Vec<String> {
        self.unique
            .iter()
            .map(|name| {
                let index = self.columns.iter().position(|c| c == name);
                match index.and_then(|i| self.values.get(i)) {
                    Some(Param::Text(text)) => text.clone(),
                    Some(Param::I64(value)) => value.to_string(),
                    Some(Param::Null) | None => String::new(),
                }
            })
            .collect()
    }
}

struct Pending {
    insert: Insert,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// Rows per multi-row statement: well inside SQLite's and PostgreSQL's parameter limits.
const ROWS_PER_STATEMENT: usize = 100;

/// The handle requests submit grouped writes through; cheap to clone. The committing
/// task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the committing task on `pool` (the writer pool).
    pub fn start(pool: AnyPool) -> Self {
        let (queue, pending) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(commit_groups(pool, pending));
        Self { queue }
    }

    /// Inserts the row in the next grouped transaction and answers, after the commit,
    /// whether it was inserted (false: its unique key existed already).
    pub async fn insert(&self, insert: Insert) -> Result<bool, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { insert, reply })
            .await
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(sqlx::Error::Protocol)
    }
}

fn stopped() -> sqlx::Error {
    sqlx::Error::Protocol("the group-commit task has stopped".to_string())
}

async fn commit_groups(pool: AnyPool, mut pending: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while pending.recv_many(&mut group, MAX_GROUP).await > 0 {
        match run_group(&pool, &group).await {
            Ok(inserted) => {
                for (item, inserted) in group.drain(..).zip(inserted) {
                    let _ = item.reply.send(Ok(inserted));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for item in group.drain(..) {
                    let _ = item.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// One transaction for the whole group: all of it commits or none of it does, and every
/// caller hears the same outcome. Answers per row, in the group's order.
async fn run_group(pool: &AnyPool, group: &[Pending]) -> Result<Vec<bool>, sqlx::Error> {
    let mut inserted = vec![false; group.len()];
    let mut shapes: Vec<(_, Vec<usize>)> = Vec::new();
    for (index, item) in group.iter().enumerate() {
        let shape = item.insert.shape();
        match shapes.iter_mut().find(|(known, _)| *known == shape) {
            Some((_, members)) => members.push(index),
            None => shapes.push((shape, vec![index])),
        }
    }
    let mut tx = pool.begin().await?;
    for ((table, columns, unique), members) in &shapes {
        for chunk in members.chunks(ROWS_PER_STATEMENT) {
            let rows = (0..chunk.len())
                .map(|row| {
                    let placeholders = (0..columns.len())
                        .map(|column| format!("${}", row * columns.len() + column + 1))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({placeholders})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut sql = format!("INSERT INTO {table} ({}) VALUES {rows}", columns.join(", "));
            if !unique.is_empty() {
                let key = unique.join(", ");
                sql.push_str(&format!(" ON CONFLICT ({key}) DO NOTHING RETURNING {key}"));
            }
            let mut query = sqlx::query(&sql);
            for &index in chunk {
                for param in &group[index].insert.values {
                    query = match param {
                        Param::I64(value) => query.bind(*value),
                        Param::Text(value) => query.bind(value.as_str()),
                        Param::Null => query.bind(None::<String>),
                    };
                }
            }
            if unique.is_empty() {
                query.execute(&mut *tx).await?;
                for &index in chunk {
                    inserted[index] = true;
                }
                continue;
            }
            let mut new_keys: Vec<Vec<String>> = query
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| {
                    (0..unique.len())
                        .map(|i| row.try_get::<String, _>(i))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<_, _>>()?;
            // A key inserted by this statement belongs to its first row in the group; a
            // repeat of it in the same group is a duplicate like any other.
            for &index in chunk {
                let key = group[index].insert.key();
                if let Some(position) = new_keys.iter().position(|new| *new == key) {
                    new_keys.swap_remove(position);
                    inserted[index] = true;
                }
            }
        }
    }
    tx.commit().await?;
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDb;

    fn event(account: &str, id: &str) -> Insert {
        Insert {
            table: "inbound_events",
            columns: &["account", "event_id", "received_at"],
            unique: &["account", "event_id"],
            values: vec![account.into(), id.into(), 1i64.into()],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_each_get_their_own_answer_after_commit() {
        let test_db = TestDb::sqlite().await.unwrap();
        let db = test_db.db.clone();
        let writes = (0..200).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let id = format!("e{}", i % 100);
                db.grouped().insert(event("acct", &id)).await
            })
        });
        let mut inserted = 0;
        for write in writes {
            inserted += u32::from(write.await.unwrap().unwrap());
        }
        assert_eq!(inserted, 100, "each id is new exactly once");
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM inbound_events")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(rows, 100, "visible to other connections: committed");
        test_db.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_statement_fails_its_group_and_the_next_group_still_commits() {
        let test_db = TestDb::sqlite().await.unwrap();
        let grouped = test_db.db.grouped().clone();
        let broken = grouped
            .insert(Insert {
                table: "no_such_table",
                columns: &["x"],
                unique: &[],
                values: vec![Param::Null],
            })
            .await;
        assert!(broken.is_err());
        assert!(grouped.insert(event("a", "x")).await.unwrap());
        assert!(!grouped.insert(event("a", "x")).await.unwrap());
        test_db.cleanup().await.unwrap();
    }
}
