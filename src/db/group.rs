//! Group commit: small, independent writes from concurrent requests (a callback id, an
//! audit row) share one transaction and so one durable commit. With SQLite's single writer
//! and `synchronous = FULL`, one commit per request caps a busy bot at the disk's flush rate;
//! batching the statements that are waiting when a commit starts costs each request at most
//! one commit's latency and divides the flushes by the concurrency.
//!
//! Each caller still gets its own answer only after the transaction holding its statement
//! committed, so nothing is acknowledged before it is durable.

use sqlx::AnyPool;
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

struct Pending {
    sql: &'static str,
    params: Vec<Param>,
    reply: oneshot::Sender<Result<u64, String>>,
}

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

    /// Runs `sql` inside the next grouped transaction and answers, after the commit, with
    /// the rows it affected.
    pub async fn execute(&self, sql: &'static str, params: Vec<Param>) -> Result<u64, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { sql, params, reply })
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
            Ok(affected) => {
                for (item, rows) in group.drain(..).zip(affected) {
                    let _ = item.reply.send(Ok(rows));
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
/// caller hears the same outcome.
async fn run_group(pool: &AnyPool, group: &[Pending]) -> Result<Vec<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut affected = Vec::with_capacity(group.len());
    for item in group {
        let mut query = sqlx::query(item.sql);
        for param in &item.params {
            query = match param {
                Param::I64(value) => query.bind(*value),
                Param::Text(value) => query.bind(value.as_str()),
                Param::Null => query.bind(None::<String>),
            };
        }
        affected.push(query.execute(&mut *tx).await?.rows_affected());
    }
    tx.commit().await?;
    Ok(affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDb;

    const INSERT: &str = "INSERT INTO inbound_events (account, event_id, received_at) \
                          VALUES ($1, $2, $3) ON CONFLICT (account, event_id) DO NOTHING";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_each_get_their_own_answer_after_commit() {
        let test_db = TestDb::sqlite().await.unwrap();
        let db = test_db.db.clone();
        let writes = (0..200).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let id = format!("e{}", i % 100);
                db.grouped()
                    .execute(INSERT, vec!["acct".into(), id.as_str().into(), 1i64.into()])
                    .await
            })
        });
        let mut inserted = 0;
        for write in writes {
            inserted += write.await.unwrap().unwrap();
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
            .execute("INSERT INTO no_such_table VALUES ($1)", vec![Param::Null])
            .await;
        assert!(broken.is_err());
        let next = grouped
            .execute(INSERT, vec!["a".into(), "x".into(), 1i64.into()])
            .await
            .unwrap();
        assert_eq!(next, 1);
        test_db.cleanup().await.unwrap();
    }
}
