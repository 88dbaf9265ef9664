//! Fresh, isolated databases for tests: a SQLite file in a temporary directory, or a new
//! PostgreSQL database (created and dropped per test) on the server named by
//! `QUNFA_TEST_POSTGRES_URL`. Public so integration tests and benchmarks share it.

use std::path::PathBuf;

use sqlx::{Connection, Executor};

use super::{DatabaseUrl, Db};

/// The variable that enables the PostgreSQL half of the storage suite.
pub const POSTGRES_URL_VAR: &str = "QUNFA_TEST_POSTGRES_URL";

/// A database that exists for one test. Call [`TestDb::cleanup`] at the end; a test that
/// panics leaves its database behind, which is what you want for a post-mortem.
#[derive(Debug)]
pub struct TestDb {
    pub db: Db,
    leftover: Leftover,
}

#[derive(Debug)]
enum Leftover {
    SqliteDir(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

impl TestDb {
    /// A migrated SQLite database in a new temporary directory.
    pub async fn sqlite() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("qunfa-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let db = Db::open(&DatabaseUrl::Sqlite(dir.join("qunfa.db"))).await?;
        Ok(Self {
            db,
            leftover: Leftover::SqliteDir(dir),
        })
    }

    /// A migrated PostgreSQL database of its own, or `None` when
    /// `QUNFA_TEST_POSTGRES_URL` is not set. When it is set, failing to connect is an
    /// error, never a skip.
    pub async fn postgres() -> anyhow::Result<Option<Self>> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
            return Ok(None);
        };
        super::install_drivers();
        let name = format!("qunfa_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::AnyConnection::connect(&admin_url)
            .await
            .map_err(|e| {
                anyhow::anyhow!("{POSTGRES_URL_VAR}={admin_url} is set but unreachable: {e}")
            })?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        admin.close().await?;
        let mut url = reqwest::Url::parse(&admin_url)?;
        url.set_path(&name);
        let db = Db::open(&DatabaseUrl::parse(url.as_str())?).await?;
        Ok(Some(Self {
            db,
            leftover: Leftover::PostgresDatabase { admin_url, name },
        }))
    }

    /// Closes the pools and removes the database.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        self.db.close().await;
        match self.leftover {
            Leftover::SqliteDir(dir) => std::fs::remove_dir_all(dir)?,
            Leftover::PostgresDatabase { admin_url, name } => {
                let mut admin = sqlx::AnyConnection::connect(&admin_url).await?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await?;
                admin.close().await?;
            }
        }
        Ok(())
    }
}
