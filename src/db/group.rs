//! Group commit: small, independent writes from concurrent requests (a callback id, an
//! audit row) share one transaction and so one durable commit. With SQLite's single writer
//! and `synchronous = FULL`, one commit per request caps a busy bot at the disk's flush rate;
//! batching the statements that are waiting when a commit starts costs each request at most
//! one commit's latency and divides the flushes by the concurrency.
//!
//! A caller chooses what it waits for: [`GroupCommit::insert`] answers after the commit
//! (nothing is acknowledged before it is durable), [`GroupCommit::queue`] only until the row
//! is in the queue, for rows whose loss in a crash is acceptable and which must not slow the
//! answer down. Since nobody waits for queued rows, a small group of them is held a few
//! milliseconds so more can join it. [`GroupCommit::flush`] is the barrier for both: it
//! returns once everything queued before it has been written, which is what graceful
//! shutdown and tests wait for.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::{AnyPool, PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::Backend;
use crate::read_mostly::ReadMostly;

/// Most rows in one grouped transaction. Under load every transaction is this full, so it
/// sets how many rows share one durable flush.
const MAX_GROUP: usize = 1024;

/// Most rows in one multi-row statement (7 columns: 1,792 parameters, far inside SQLite's
/// and PostgreSQL's limits). A group is cut into statements of power-of-two sizes, so each
/// table needs only a handful of distinct statements, which stay prepared (sqlx caches
/// them per connection) instead of one new statement per group size.
const MAX_ROWS_PER_STATEMENT: usize = 256;

/// How long a small group of queued rows (none awaited) waits for more before it is written.
const GATHER_QUEUED_ROWS: Duration = Duration::from_millis(4);

/// Grouped transactions in flight at once. SQLite has one writer, so a group waits for the
/// previous one; on PostgreSQL the next group is written while the last one waits for its
/// flush to disk. More than two only made the groups smaller and the server busier.
pub(super) fn groups_in_flight(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    }
}

/// A value bound to a grouped statement. Ordered so that a group can write its rows in
/// key order (see `shapes`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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

impl From<String> for Param {
    fn from(value: String) -> Self {
        Param::Text(value)
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
    fn shape(&self) -> Shape {
        (self.table, self.columns, self.unique)
    }

    /// Orders two rows of one shape by their unique key, without copying it.
    fn compare_keys(&self, other: &Insert) -> std::cmp::Ordering {
        self.unique
            .iter()
            .filter_map(|name| self.columns.iter().position(|c| c == name))
            .map(|i| self.values.get(i).cmp(&other.values.get(i)))
            .find(|order| order.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
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
    /// `None` for a queued row: nobody waits for its outcome, so a failure is logged here.
    reply: Option<oneshot::Sender<Result<bool, String>>>,
}

enum Job {
    Row(Pending),
    /// Answered once every row received before it has been written.
    Flush(oneshot::Sender<()>),
}

impl Job {
    /// Whether someone waits for this job's outcome.
    fn is_awaited(&self) -> bool {
        match self {
            Job::Row(row) => row.reply.is_some(),
            Job::Flush(_) => true,
        }
    }
}

/// The handle requests submit grouped writes through; cheap to clone. The committing
/// task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the committing task on `pool` (the writer pool) of a `backend` database.
    /// `copier`, on PostgreSQL, writes the rows of tables without a unique key with `COPY`
    /// (see [`copy_rows`]).
    pub fn start(pool: AnyPool, backend: Backend, copier: Option<PgPool>) -> Self {
        // Bounded: when the database falls behind, queueing waits, so requests slow down
        // instead of piling up rows in memory.
        let (queue, jobs) = mpsc::channel(MAX_GROUP * 4);
        let target = Target {
            pool,
            backend,
            copier,
        };
        tokio::spawn(commit_groups(target, jobs));
        Self { queue }
    }

    /// Inserts the row in the next grouped transaction and answers, after the commit,
    /// whether it was inserted (false: its unique key existed already).
    pub async fn insert(&self, insert: Insert) -> Result<bool, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Row(Pending {
            insert,
            reply: Some(reply),
        }))
        .await?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(sqlx::Error::Protocol)
    }

    /// Queues the row for the next grouped transaction without waiting for it: returns as
    /// soon as the queue has room. The row is lost if the process dies before its commit,
    /// and a failed write is only logged (with `qunfa_group_commit_lost_rows_total`).
    pub async fn queue(&self, insert: Insert) -> Result<(), sqlx::Error> {
        self.send(Job::Row(Pending {
            insert,
            reply: None,
        }))
        .await
    }

    /// Returns once every row queued or inserted before this call has been written
    /// (committed, or failed and reported). Graceful shutdown calls it before closing the
    /// pools; tests call it before reading rows that were queued.
    pub async fn flush(&self) -> Result<(), sqlx::Error> {
        let (done, finished) = oneshot::channel();
        self.send(Job::Flush(done)).await?;
        finished.await.map_err(|_| stopped())
    }

    async fn send(&self, job: Job) -> Result<(), sqlx::Error> {
        self.queue.send(job).await.map_err(|_| stopped())
    }
}

fn stopped() -> sqlx::Error {
    sqlx::Error::Protocol("the group-commit task has stopped".to_string())
}

/// Where groups are written.
#[derive(Clone)]
struct Target {
    pool: AnyPool,
    backend: Backend,
    copier: Option<PgPool>,
}

async fn commit_groups(target: Target, mut jobs: mpsc::Receiver<Job>) {
    let limit = groups_in_flight(target.backend);
    let mut writing = JoinSet::new();
    let mut received = Vec::with_capacity(MAX_GROUP);
    let mut barriers = Vec::new();
    loop {
        // Waiting for a free slot before taking rows lets a group gather everything that
        // arrived while the previous ones were being written.
        while writing.len() >= limit {
            finished(writing.join_next().await);
        }
        if jobs.recv_many(&mut received, MAX_GROUP).await == 0 {
            break;
        }
        if received.len() < MAX_GROUP / 2 && !received.iter().any(Job::is_awaited) {
            // Nobody waits for these rows: letting more join them costs no one time and
            // saves the database work per row (fewer transactions, pages written again).
            tokio::time::sleep(GATHER_QUEUED_ROWS).await;
            while received.len() < MAX_GROUP {
                let Ok(job) = jobs.try_recv() else { break };
                received.push(job);
            }
        }
        let mut rows = Vec::with_capacity(received.len());
        for job in received.drain(..) {
            match job {
                Job::Row(row) => rows.push(row),
                Job::Flush(done) => barriers.push(done),
            }
        }
        if !rows.is_empty() {
            writing.spawn(write_rows(target.clone(), rows));
        }
        if !barriers.is_empty() {
            // Every row received before a barrier is in a group started by now.
            while let Some(result) = writing.join_next().await {
                finished(Some(result));
            }
            for done in barriers.drain(..) {
                let _ = done.send(());
            }
        }
    }
    while let Some(result) = writing.join_next().await {
        finished(Some(result));
    }
}

fn finished(result: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(error)) = result {
        tracing::error!(%error, "a group-commit task failed; its callers were told it stopped");
    }
}

/// Writes one batch and answers every caller. The rows that go through `COPY` (see
/// [`copy_rows`]) are written per table, each in a transaction of its own; the rest is one
/// transaction, and if that fails while holding rows of several shapes, each shape is tried
/// again on its own, so one table's problem (a failing constraint, a missing table) does
/// not take other requests' unrelated rows down with it.
async fn write_rows(target: Target, rows: Vec<Pending>) {
    let Target {
        pool,
        backend,
        copier,
    } = target;
    let (copied, shapes): (Vec<_>, Vec<_>) = shapes(&rows)
        .into_iter()
        .partition(|((_, _, unique), _)| copier.is_some() && unique.is_empty());
    let mut outcome: Vec<Result<bool, String>> = vec![Ok(false); rows.len()];
    if let Some(copier) = &copier {
        for (shape, members) in &copied {
            let result = copy_rows(copier, *shape, &rows, members).await;
            for &index in members {
                outcome[index] = result.as_ref().map(|()| true).map_err(ToString::to_string);
            }
        }
    }
    if !shapes.is_empty() {
        match run_group(&pool, backend, &rows, &shapes).await {
            Err(_) if shapes.len() > 1 => {
                for shape in &shapes {
                    let alone = std::slice::from_ref(shape);
                    let result = run_group(&pool, backend, &rows, alone).await;
                    for &index in &shape.1 {
                        outcome[index] = match &result {
                            Ok(answers) => Ok(answers[index]),
                            Err(error) => Err(error.to_string()),
                        };
                    }
                }
            }
            Err(error) => {
                for (_, members) in &shapes {
                    for &index in members {
                        outcome[index] = Err(error.to_string());
                    }
                }
            }
            Ok(inserted) => {
                for (_, members) in &shapes {
                    for &index in members {
                        outcome[index] = Ok(inserted[index]);
                    }
                }
            }
        }
    }
    for (row, outcome) in rows.into_iter().zip(outcome) {
        match row.reply {
            Some(reply) => {
                let _ = reply.send(outcome);
            }
            None => {
                if let Err(error) = outcome {
                    lost(row.insert.table, &error);
                }
            }
        }
    }
}

/// Writes the `members` rows of a shape without a unique key with PostgreSQL's `COPY`, in
/// a transaction of their own. A multi-row INSERT binds every value as a parameter and
/// builds an expression per row; `COPY` streams the rows as text and inserts them a page at
/// a time. With the audit row of every answered command on this path, the server spent
/// two thirds of its time per callback on the INSERT's parameters (`benches/inbound.rs`).
async fn copy_rows(
    copier: &PgPool,
    (table, columns, _): Shape,
    group: &[Pending],
    members: &[usize],
) -> Result<(), sqlx::Error> {
    let mut data = String::with_capacity(members.len() * 96);
    for &index in members {
        copy_line(&mut data, &group[index].insert.values);
    }
    let mut tx = copier.begin().await?;
    if !awaited(group, members) {
        sqlx::query(NO_FLUSH_WAIT).execute(&mut *tx).await?;
    }
    let statement = format!("COPY {table} ({}) FROM STDIN", columns.join(", "));
    let mut copy = tx.copy_in_raw(&statement).await?;
    if let Err(error) = copy.send(data.into_bytes()).await {
        let _ = copy.abort("qunfa could not send the rows").await;
        return Err(error);
    }
    copy.finish().await?;
    tx.commit().await
}

/// One row in `COPY`'s text format: tab-separated, `\N` for NULL, and backslash, tab,
/// newline and carriage return escaped, which is all that format gives meaning to.
fn copy_line(line: &mut String, values: &[Param]) {
    for (position, value) in values.iter().enumerate() {
        if position > 0 {
            line.push('\t');
        }
        match value {
            Param::I64(number) => {
                let _ = write!(line, "{number}");
            }
            Param::Null => line.push_str("\\N"),
            Param::Text(text) => {
                for character in text.chars() {
                    match character {
                        '\\' => line.push_str("\\\\"),
                        '\t' => line.push_str("\\t"),
                        '\n' => line.push_str("\\n"),
                        '\r' => line.push_str("\\r"),
                        '\0' => line.push_str(POSTGRES_NUL),
                        other => line.push(other),
                    }
                }
            }
        }
    }
    line.push('\n');
}

/// What a NUL character in text becomes on PostgreSQL, whose text types cannot hold one:
/// refused, it failed the whole statement, so one message with a NUL in its text lost the
/// grouped rows of everyone else's messages beside it. SQLite stores it as it is.
const POSTGRES_NUL: &str = "\u{FFFD}";

/// For a PostgreSQL transaction of rows nobody waits for, which a crash of this process
/// may lose anyway (see [`GroupCommit::queue`]): its commit need not wait for the WAL
/// flush, which the WAL writer does within a fraction of a second. Rows somebody waits for
/// keep the server's setting, so their answer still means durable.
const NO_FLUSH_WAIT: &str = "SET LOCAL synchronous_commit = off";

/// Whether anyone waits for one of the `members` rows of `group`.
fn awaited<'a>(group: &[Pending], members: impl IntoIterator<Item = &'a usize>) -> bool {
    members
        .into_iter()
        .any(|&index| group[index].reply.is_some())
}

fn lost(table: &'static str, error: &str) {
    metrics::counter!("qunfa_group_commit_lost_rows_total", "table" => table).increment(1);
    tracing::error!(table, %error, "a queued row could not be written and is lost");
}

type Shape = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

/// The batch's rows by shape (table, columns, unique key), as indexes, in the order the
/// group writes them: shapes by table, and the rows of a shape with a unique key by that
/// key (rows with the same key in arrival order, so the first one is the one inserted).
///
/// On PostgreSQL two groups are in flight at once, and an insert waits for the other
/// transaction's uncommitted row with the same unique key: two groups that met the same
/// keys in opposite orders (a platform's retry racing its original) deadlocked, and the
/// server aborted one of them. In one order throughout, one waits for the other instead.
fn shapes(rows: &[Pending]) -> Vec<(Shape, Vec<usize>)> {
    let mut shapes: Vec<(Shape, Vec<usize>)> = Vec::new();
    for (index, item) in rows.iter().enumerate() {
        let shape = item.insert.shape();
        match shapes.iter_mut().find(|(known, _)| *known == shape) {
            Some((_, members)) => members.push(index),
            None => shapes.push((shape, vec![index])),
        }
    }
    shapes.sort_by_key(|((table, _, _), _)| *table);
    for ((_, _, unique), members) in &mut shapes {
        if !unique.is_empty() {
            members.sort_by(|&a, &b| rows[a].insert.compare_keys(&rows[b].insert));
        }
    }
    shapes
}

/// One transaction for the rows of `shapes`: all of them commit or none do. Answers per
/// row of `group`, by index (rows outside `shapes` read as not inserted).
async fn run_group(
    pool: &AnyPool,
    backend: Backend,
    group: &[Pending],
    shapes: &[(Shape, Vec<usize>)],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut inserted = vec![false; group.len()];
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres && !awaited(group, shapes.iter().flat_map(|(_, m)| m)) {
        sqlx::query(NO_FLUSH_WAIT).execute(&mut *tx).await?;
    }
    for (shape, members) in shapes {
        let (_, _, unique) = *shape;
        let mut rest: &[usize] = members;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(statement_rows(rest.len()));
            rest = after;
            // Which rows were new only matters to callers that wait for the answer; for
            // queued rows the database skips duplicates and nothing is read back.
            let answered = !unique.is_empty() && chunk.iter().any(|&i| group[i].reply.is_some());
            let sql = cached_insert_sql(*shape, backend, chunk.len(), answered);
            let mut query = sqlx::query(&sql);
            for &index in chunk {
                for param in &group[index].insert.values {
                    query = match param {
                        Param::I64(value) => query.bind(*value),
                        Param::Text(value)
                            if backend == Backend::Postgres && value.contains('\0') =>
                        {
                            query.bind(value.replace('\0', POSTGRES_NUL))
                        }
                        Param::Text(value) => query.bind(value.as_str()),
                        Param::Null => query.bind(None::<String>),
                    };
                }
            }
            if !answered {
                query.execute(&mut *tx).await?;
                for &index in chunk {
                    inserted[index] = unique.is_empty();
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
            // repeat of it in the same group is a duplicate like any other. (A repeat in
            // another statement of the group meets the first row's key and is skipped.)
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

/// How many of `remaining` rows the next statement takes: the largest power of two that
/// fits, at most [`MAX_ROWS_PER_STATEMENT`].
fn statement_rows(remaining: usize) -> usize {
    let fits = 1 << remaining.max(1).ilog2();
    fits.min(MAX_ROWS_PER_STATEMENT)
}

/// [`insert_sql`], written once per shape, size and backend: a group is cut into
/// statements of a handful of sizes, and writing a statement of a few thousand
/// placeholders again for each of them was a measurable part of every grouped row's cost.
fn cached_insert_sql(shape: Shape, backend: Backend, rows: usize, returning: bool) -> Arc<str> {
    type Statements = ReadMostly<(Shape, Backend, usize, bool), Arc<str>>;
    static STATEMENTS: LazyLock<Statements> = LazyLock::new(Default::default);
    let key = (shape, backend, rows, returning);
    STATEMENTS.with(
        &key,
        || key,
        || insert_sql(shape, backend, rows, returning).into(),
        Arc::clone,
    )
}

/// The multi-row INSERT for `rows` rows of `shape`, returning the unique keys it inserted
/// when `returning`. SQLite gets anonymous `?` parameters: sqlx looks up the name of every
/// numbered one, which SQLite finds by a linear search, so `$n` costs time quadratic in a
/// statement's parameter count.
fn insert_sql(
    (table, columns, unique): Shape,
    backend: Backend,
    rows: usize,
    returning: bool,
) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns.len() {
            if column > 0 {
                sql.push_str(", ");
            }
            backend.push_param(&mut sql, row * columns.len() + column + 1);
        }
        sql.push(')');
    }
    if !unique.is_empty() {
        let key = unique.join(", ");
        let _ = write!(sql, " ON CONFLICT ({key}) DO NOTHING");
        if returning {
            let _ = write!(sql, " RETURNING {key}");
        }
    }
    sql
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

    /// An audit row as the bot queues it, with `chat` and `callback_id` to vary.
    fn audit_row(chat: &str, callback_id: Option<&str>) -> Insert {
        Insert {
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
                7i64.into(),
                "p".into(),
                "a".into(),
                chat.into(),
                "s".into(),
                "whoami".into(),
                "ok".into(),
                callback_id.map_or(Param::Null, Param::from),
            ],
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

    async fn count(db: &crate::db::Db, table: &str) -> i64 {
        let (rows,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(db.reader())
            .await
            .unwrap();
        rows
    }

    async fn queued_rows_are_written_by_the_time_flush_returns(test_db: TestDb) {
        let grouped = test_db.db.grouped().clone();
        for i in 0..600 {
            // More than one batch, with a duplicate of every id.
            grouped
                .queue(event("acct", &format!("e{}", i % 300)))
                .await
                .unwrap();
        }
        grouped.flush().await.unwrap();
        assert_eq!(count(&test_db.db, "inbound_events").await, 300);
        grouped.flush().await.unwrap();
        test_db.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn queued_rows_are_written_by_the_time_flush_returns_on_sqlite() {
        queued_rows_are_written_by_the_time_flush_returns(TestDb::sqlite().await.unwrap()).await;
    }

    #[tokio::test]
    async fn queued_rows_are_written_by_the_time_flush_returns_on_postgres() {
        if let Some(test_db) = TestDb::postgres().await.unwrap() {
            queued_rows_are_written_by_the_time_flush_returns(test_db).await;
        }
    }

    #[tokio::test]
    async fn a_failing_table_does_not_take_the_other_rows_of_its_batch_down_on_sqlite() {
        a_failing_table_does_not_take_the_other_rows_of_its_batch_down(
            TestDb::sqlite().await.unwrap(),
        )
        .await;
    }

    /// On PostgreSQL the failing table (no unique key) goes through `COPY`.
    #[tokio::test]
    async fn a_failing_table_does_not_take_the_other_rows_of_its_batch_down_on_postgres() {
        if let Some(test_db) = TestDb::postgres().await.unwrap() {
            a_failing_table_does_not_take_the_other_rows_of_its_batch_down(test_db).await;
        }
    }

    async fn a_failing_table_does_not_take_the_other_rows_of_its_batch_down(test_db: TestDb) {
        let grouped = test_db.db.grouped().clone();
        // On this single-threaded runtime the committer runs only once the test awaits an
        // answer, so the queued row and the inserted one arrive as one batch.
        grouped
            .queue(Insert {
                table: "no_such_table",
                columns: &["x"],
                unique: &[],
                values: vec![Param::Null],
            })
            .await
            .unwrap();
        grouped.queue(event("a", "queued")).await.unwrap();
        assert!(grouped.insert(event("a", "awaited")).await.unwrap());
        grouped.flush().await.unwrap();
        assert_eq!(count(&test_db.db, "inbound_events").await, 2);
        test_db.cleanup().await.unwrap();
    }

    #[test]
    fn copy_lines_escape_what_the_text_format_gives_meaning_to() {
        let mut line = String::new();
        copy_line(
            &mut line,
            &[
                Param::I64(-42),
                "tab\there, line\nbreak\r, back\\slash \\N".into(),
                Param::Null,
                "".into(),
                "退订 \"quoted\" ,;".into(),
            ],
        );
        assert_eq!(
            line,
            "-42\ttab\\there, line\\nbreak\\r, back\\\\slash \\\\N\t\\N\t\t退订 \"quoted\" ,;\n"
        );
    }

    /// What the text format makes of a value is what was queued: checked against the
    /// database, which parses `COPY` on PostgreSQL (and binds parameters on SQLite).
    async fn awkward_text_is_stored_as_it_was_given(test_db: TestDb) {
        let texts = [
            "tab\there",
            "line\nbreak\r\n",
            "back\\slash",
            "\\N",
            "",
            "退订 \"quoted\" ,;|",
            "\\.",
        ];
        let grouped = test_db.db.grouped().clone();
        for text in &texts[1..] {
            grouped.queue(audit_row(text, Some(text))).await.unwrap();
        }
        assert!(grouped.insert(audit_row(texts[0], None)).await.unwrap());
        grouped.flush().await.unwrap();
        let mut stored: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT chat, callback_id FROM command_audit ORDER BY id")
                .fetch_all(test_db.db.reader())
                .await
                .unwrap();
        let mut expected: Vec<(String, Option<String>)> = texts[1..]
            .iter()
            .map(|text| (text.to_string(), Some(text.to_string())))
            .collect();
        expected.push((texts[0].to_string(), None));
        stored.sort();
        expected.sort();
        assert_eq!(stored, expected);
        test_db.cleanup().await.unwrap();
    }

    /// One message with a NUL in its text must not cost the other rows of its group:
    /// PostgreSQL's text types refuse the character, on the `COPY` path and the INSERT one.
    #[tokio::test]
    async fn a_nul_in_text_does_not_fail_the_group_on_postgres() {
        let Some(test_db) = TestDb::postgres().await.unwrap() else {
            return;
        };
        let grouped = test_db.db.grouped().clone();
        grouped.queue(audit_row("before", None)).await.unwrap();
        grouped.queue(audit_row("nul\0here", None)).await.unwrap();
        grouped.queue(event("acct", "evt\0nul")).await.unwrap();
        grouped.queue(audit_row("after", None)).await.unwrap();
        assert!(grouped.insert(event("acct", "plain")).await.unwrap());
        grouped.flush().await.unwrap();
        let (chats,): (String,) =
            sqlx::query_as("SELECT string_agg(chat, ',' ORDER BY id) FROM command_audit")
                .fetch_one(test_db.db.reader())
                .await
                .unwrap();
        assert_eq!(chats, "before,nul\u{FFFD}here,after");
        assert_eq!(count(&test_db.db, "inbound_events").await, 2);
        test_db.cleanup().await.unwrap();
    }

    #[tokio::test]
    async fn awkward_text_is_stored_as_it_was_given_on_sqlite() {
        awkward_text_is_stored_as_it_was_given(TestDb::sqlite().await.unwrap()).await;
    }

    #[tokio::test]
    async fn awkward_text_is_stored_as_it_was_given_on_postgres() {
        if let Some(test_db) = TestDb::postgres().await.unwrap() {
            awkward_text_is_stored_as_it_was_given(test_db).await;
        }
    }

    #[tokio::test]
    async fn closing_the_database_writes_what_is_still_queued() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::db::DatabaseUrl::Sqlite(dir.path().join("q.db"));
        let db = crate::db::Db::open(&url).await.unwrap();
        for i in 0..50 {
            db.grouped()
                .queue(event("acct", &format!("e{i}")))
                .await
                .unwrap();
        }
        db.close().await;
        let reopened = crate::db::Db::open(&url).await.unwrap();
        assert_eq!(count(&reopened, "inbound_events").await, 50);
        reopened.close().await;
    }

    /// Every group takes its rows' unique keys in one order, so two groups in flight on
    /// PostgreSQL wait for each other instead of deadlocking.
    #[test]
    fn a_group_writes_tables_by_name_and_rows_by_key() {
        let audit = |text: &str| Insert {
            table: "command_audit",
            columns: &["text"],
            unique: &[],
            values: vec![text.into()],
        };
        let pending = |insert: Insert| Pending {
            insert,
            reply: None,
        };
        let rows = vec![
            pending(event("acct", "e3")),
            pending(audit("z")),
            pending(event("acct", "e1")),
            pending(audit("a")),
            pending(event("acct", "e3")),
            pending(event("acct", "e2")),
        ];
        let order: Vec<(&str, Vec<usize>)> = shapes(&rows)
            .into_iter()
            .map(|((table, _, _), members)| (table, members))
            .collect();
        assert_eq!(
            order,
            [
                ("command_audit", vec![1, 3]),
                ("inbound_events", vec![2, 5, 0, 4]),
            ]
        );
    }

    #[test]
    fn groups_are_cut_into_few_distinct_statement_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for total in 1..=MAX_GROUP {
            let mut rest = total;
            let mut statements = 0;
            while rest > 0 {
                let rows = statement_rows(rest);
                assert!(rows <= rest && rows <= MAX_ROWS_PER_STATEMENT);
                sizes.insert(rows);
                rest -= rows;
                statements += 1;
            }
            assert!(
                statements <= 12,
                "{total} rows took {statements} statements"
            );
        }
        assert_eq!(sizes.len(), 9, "1, 2, 4, ... 256: {sizes:?}");
    }

    #[test]
    fn placeholders_suit_the_backend() {
        let shape = event("a", "b").shape();
        assert_eq!(
            insert_sql(shape, Backend::Sqlite, 2, true),
            "INSERT INTO inbound_events (account, event_id, received_at) VALUES (?, ?, ?), (?, ?, ?) \
             ON CONFLICT (account, event_id) DO NOTHING RETURNING account, event_id"
        );
        let queued = insert_sql(shape, Backend::Postgres, 2, false);
        assert!(queued.contains("($1, $2, $3), ($4, $5, $6)"), "{queued}");
        assert!(queued.ends_with("DO NOTHING"), "{queued}");
    }
}
