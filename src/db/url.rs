//! Parsing of `--database` values into a backend and a location.

use std::path::PathBuf;

/// Where the data lives, as chosen by `--database` / `QUNFA_DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file: `sqlite:path`, `sqlite://path`, or a bare path.
    Sqlite(PathBuf),
    /// A PostgreSQL URL: `postgres://…` or `postgresql://…`.
    Postgres(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("the database URL is empty; use a SQLite path such as ./qunfa.db or a postgres:// URL")]
    Empty,
    #[error(
        "unsupported database URL scheme `{0}`; use a SQLite path (sqlite://./qunfa.db) or postgres://user@host/db"
    )]
    Scheme(String),
    #[error("SQLite URL options are not supported (`{0}`); give a plain file path")]
    SqliteParams(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(UrlError::Empty);
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_string()));
        }
        let path = if let Some(rest) = raw.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = raw.strip_prefix("sqlite:") {
            rest
        } else if let Some((scheme, _)) = raw.split_once("://") {
            return Err(UrlError::Scheme(scheme.to_string()));
        } else {
            raw
        };
        if let Some((_, params)) = path.split_once('?') {
            return Err(UrlError::SqliteParams(params.to_string()));
        }
        if path.is_empty() || path == ":memory:" {
            // An in-memory database would silently lose the outbox on exit.
            return Err(UrlError::Empty);
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }

    /// The URL in the form sqlx expects.
    pub fn sqlx_url(&self) -> String {
        match self {
            Self::Sqlite(path) => {
                let display = path.to_string_lossy();
                // Percent-encode the characters that would end the path part of the URL.
                let encoded = display
                    .replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23");
                format!("sqlite://{encoded}?mode=rwc")
            }
            Self::Postgres(url) => url.clone(),
        }
    }

    /// The location without any password, for logs and error messages.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) => redact_password(url),
        }
    }

    /// The SQLite file, when this is one.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{userinfo}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_paths_and_sqlite_schemes_select_sqlite() {
        for raw in ["./qunfa.db", "sqlite://./qunfa.db", "sqlite:./qunfa.db"] {
            assert_eq!(
                DatabaseUrl::parse(raw),
                Ok(DatabaseUrl::Sqlite(PathBuf::from("./qunfa.db")))
            );
        }
    }

    #[test]
    fn postgres_urls_select_postgres_and_hide_passwords() {
        let url = DatabaseUrl::parse("postgres://app:s3cret@db:5432/qunfa").unwrap();
        assert!(matches!(url, DatabaseUrl::Postgres(_)));
        assert_eq!(url.redacted(), "postgres://app:***@db:5432/qunfa");
        assert!(!url.redacted().contains("s3cret"));
    }

    #[test]
    fn unknown_schemes_and_memory_databases_are_refused() {
        assert_eq!(
            DatabaseUrl::parse("mysql://x/y"),
            Err(UrlError::Scheme("mysql".into()))
        );
        assert_eq!(DatabaseUrl::parse("sqlite::memory:"), Err(UrlError::Empty));
        assert_eq!(DatabaseUrl::parse("  "), Err(UrlError::Empty));
    }

    #[test]
    fn special_characters_in_paths_survive_the_url() {
        let url = DatabaseUrl::Sqlite(PathBuf::from("/tmp/a?b#c%d.db"));
        assert_eq!(url.sqlx_url(), "sqlite:///tmp/a%3Fb%23c%25d.db?mode=rwc");
    }
}
