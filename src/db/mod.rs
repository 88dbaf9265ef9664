//! Database access: which backend a URL selects, the connection pools, and the embedded
//! migrations. SQL for each concept lives in that concept's `store.rs`; this module only
//! owns connections and schema versions.
//!
//! Both backends run through sqlx's `Any` driver so one set of store functions serves
//! both. Queries use `$1`-style placeholders, which SQLite accepts as numbered
//! parameters, and only types `Any` maps faithfully (i64, f64, text, blobs): instants are
//! stored as Unix milliseconds. Where the SQL really differs (row locking), the store
//! asks [`Db::backend`].

mod group;
pub mod testing;
mod url;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Executor};

pub use group::{GroupCommit, Insert, Param};
pub use url::{DatabaseUrl, UrlError};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/db/migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("src/db/migrations/postgres");

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The engine behind a connection.
    pub fn of(conn: &sqlx::AnyConnection) -> Backend {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Appends bind parameter number `number` (1-based): `$N` on PostgreSQL, an anonymous
    /// `?` on SQLite. sqlx resolves each numbered SQLite parameter by a linear search of the
    /// statement's parameter names, which makes statements with thousands of them (multi-row
    /// inserts, long `IN` lists) quadratic; anonymous ones bind by position, so callers must
    /// number in textual order.
    pub fn push_param(self, sql: &mut String, number: usize) {
        match self {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => {
                let _ = write!(sql, "${number}");
            }
        }
    }

    /// `sql` written with `$1, $2, …` in textual order, each once, in this backend's
    /// placeholders (see [`Backend::push_param`]).
    pub fn positional(self, sql: &str) -> String {
        if self == Backend::Postgres {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        let mut expected = 1usize;
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                let mut number = 0usize;
                while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                    number = number.saturating_mul(10).saturating_add(digit as usize);
                    chars.next();
                }
                debug_assert_eq!(number, expected, "placeholders out of order in {sql}");
                expected += 1;
                self.push_param(&mut out, number);
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Errors opening or migrating the database, each phrased so the operator knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(
        "cannot open the SQLite database at {path}: {source} (check that the directory exists and is writable, or pass --database)"
    )]
    OpenSqlite { path: PathBuf, source: sqlx::Error },
    #[error(
        "cannot connect to PostgreSQL at {target}: {source} (check that the server is running and the URL is right)"
    )]
    ConnectPostgres { target: String, source: sqlx::Error },
    #[error(
        "the database was migrated by a newer qunfa (it has schema version {found}, this binary knows up to {known}); upgrade qunfa or point --database elsewhere"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error(
        "a schema migration was edited after it was applied (version {0}); restore the original migration file"
    )]
    EditedMigration(i64),
    #[error("applying database migrations failed: {0}")]
    Migrate(#[source] MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// Connection pools for one database.
///
/// SQLite allows one writer at a time; giving writes a single-connection pool turns lock
/// contention (and `SQLITE_BUSY` upgrades from read to write transactions) into an
/// orderly queue, while reads use a separate pool. PostgreSQL uses one pool for both.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
    writer: AnyPool,
    reader: AnyPool,
    /// Shared: a `Db` is cloned with every request's application state.
    url: Arc<DatabaseUrl>,
    grouped: GroupCommit,
    /// PostgreSQL only: the group commit's connections for `COPY`, closed with the rest.
    copier: Option<sqlx::PgPool>,
}

fn install_drivers() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(sqlx::any::install_default_drivers);
}

impl Db {
    /// Opens the database (creating a SQLite file if needed) without touching the schema.
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, DbError> {
        install_drivers();
        match url {
            DatabaseUrl::Sqlite(path) => Self::connect_sqlite(url, path).await,
            DatabaseUrl::Postgres(_) => {
                let connect_error = |source| DbError::ConnectPostgres {
                    target: url.redacted(),
                    source,
                };
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url.sqlx_url())
                    .await
                    .map_err(connect_error)?;
                // The group commit's `COPY` needs the PostgreSQL driver itself: `Any` has
                // no copy protocol. As many connections as groups it writes at once.
                let copier = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(group::groups_in_flight(Backend::Postgres) as u32)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url.sqlx_url())
                    .await
                    .map_err(connect_error)?;
                Ok(Self {
                    backend: Backend::Postgres,
                    grouped: GroupCommit::start(
                        pool.clone(),
                        Backend::Postgres,
                        Some(copier.clone()),
                    ),
                    copier: Some(copier),
                    writer: pool.clone(),
                    reader: pool,
                    url: Arc::new(url.clone()),
                })
            }
        }
    }

    async fn connect_sqlite(url: &DatabaseUrl, path: &Path) -> Result<Self, DbError> {
        let open_error = |source| DbError::OpenSqlite {
            path: path.to_path_buf(),
            source,
        };
        let writer = sqlite_pool(&url.sqlx_url(), 1).await.map_err(open_error)?;
        let reader = sqlite_pool(&url.sqlx_url(), 4).await.map_err(open_error)?;
        Ok(Self {
            backend: Backend::Sqlite,
            grouped: GroupCommit::start(writer.clone(), Backend::Sqlite, None),
            copier: None,
            writer,
            reader,
            url: Arc::new(url.clone()),
        })
    }

    /// Opens the database and brings its schema up to date.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, DbError> {
        let db = Self::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Applies every embedded migration that has not run yet; refuses a schema that a newer
    /// binary wrote, since running old code on it could corrupt data.
    pub async fn migrate(&self) -> Result<MigrationReport, DbError> {
        let migrator = self.migrator();
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let before = self.applied_versions().await?;
        if let Some(&found) = before.iter().find(|v| **v > known) {
            return Err(DbError::NewerSchema { found, known });
        }
        migrator.run(&self.writer).await.map_err(|e| match e {
            MigrateError::VersionMissing(found) => DbError::NewerSchema { found, known },
            MigrateError::VersionMismatch(v) => DbError::EditedMigration(v),
            other => DbError::Migrate(other),
        })?;
        let after = self.applied_versions().await?;
        Ok(MigrationReport {
            applied: after.len().saturating_sub(before.len()),
            version: after.iter().copied().max().unwrap_or(0),
        })
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    async fn applied_versions(&self) -> Result<Vec<i64>, DbError> {
        let exists: Option<(i64,)> = match self.backend {
            Backend::Sqlite => {
                sqlx::query_as(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_optional(&self.reader)
                .await?
            }
            Backend::Postgres => {
                sqlx::query_as("SELECT 1::BIGINT FROM pg_tables WHERE tablename = '_sqlx_migrations' AND schemaname = current_schema()")
                    .fetch_optional(&self.reader)
                    .await?
            }
        };
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.reader)
                .await?;
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for statements that write (and for reads that must see the latest write).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Small independent writes that may share a transaction (and a durable commit) with
    /// other requests' writes; see [`GroupCommit`].
    pub fn grouped(&self) -> &GroupCommit {
        &self.grouped
    }

    /// The pool for read-only queries.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map(|_| ())
    }

    /// Writes what is still queued for a group commit, then closes the pools.
    pub async fn close(&self) {
        if let Err(error) = self.grouped.flush().await {
            tracing::error!(%error, "rows queued for the database could not be written at shutdown");
        }
        self.writer.close().await;
        self.reader.close().await;
        if let Some(copier) = &self.copier {
            copier.close().await;
        }
    }
}

/// What `qunfa migrate` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: usize,
    pub version: i64,
}

async fn sqlite_pool(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers proceed while the single writer commits; FULL sync makes
                // an accepted command or queued message survive a power cut, not just a
                // process kill. busy_timeout covers the reader pool meeting a checkpoint.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

#[cfg(test)]
mod placeholder_tests {
    use super::Backend;

    #[test]
    fn sqlite_gets_anonymous_placeholders_in_order() {
        let sql = "UPDATE t SET a = $1 WHERE b = $2 AND id IN ($3, $4, $10)";
        assert_eq!(Backend::Postgres.positional(sql), sql);
        let sqlite = "UPDATE t SET a = $1 WHERE b = $2 AND id IN ($3, $4, $5)";
        assert_eq!(
            Backend::Sqlite.positional(sqlite),
            "UPDATE t SET a = ? WHERE b = ? AND id IN (?, ?, ?)"
        );
        assert_eq!(Backend::Sqlite.positional("SELECT '$'"), "SELECT '$'");
        let mut sql = String::new();
        Backend::Postgres.push_param(&mut sql, 12);
        Backend::Sqlite.push_param(&mut sql, 13);
        assert_eq!(sql, "$12?");
    }
}
