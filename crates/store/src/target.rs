//! Choosing a backend from one `--store` argument: a `postgres://` (or
//! `postgresql://`) URL is PostgreSQL, anything else is a data directory for
//! SQLite.

use std::fmt;
use std::path::PathBuf;

use crate::{Journaled, PostgresStore, Store, StoreError, Sync};

/// Where the store is, as the operator named it.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A data directory holding `tasks.db`.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (it may carry a password: see `Display`).
    Postgres(String),
}

impl Target {
    /// Reads a `--store` argument. Never fails: what is not a PostgreSQL URL
    /// is a path (a bad URL is reported when [`open`] connects).
    pub fn parse(arg: &str) -> Target {
        let lower = arg.get(..13).unwrap_or(arg).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Target::Postgres(arg.to_owned())
        } else {
            Target::Sqlite(PathBuf::from(arg))
        }
    }

    /// The backend's name, for logs and health: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres(_) => "postgres",
        }
    }
}

/// Shows a URL without its password, so that it can be logged.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sqlite(dir) => write!(f, "{}", dir.display()),
            Target::Postgres(url) => f.write_str(&crate::pg::redact(url)),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({}: {self})", self.kind())
    }
}

/// A reader of the store `target` names (open the store first: it creates
/// the schema).
pub fn open_reader(target: &Target) -> Result<Box<dyn crate::StoreReader>, StoreError> {
    Ok(match target {
        Target::Sqlite(dir) => Box::new(crate::SqliteReader::open(dir)?),
        Target::Postgres(url) => Box::new(crate::PostgresReader::connect(url)?),
    })
}

/// Opens the store `target` names, applying its migrations. SQLite is
/// opened behind its journal ([`crate::Journaled`]); `sync` applies to it.
/// PostgreSQL's durability is the server's (`synchronous_commit`).
///
/// Blocks (a PostgreSQL connection is made): it may be called from async
/// code, which it leaves alone by doing its network work on a thread of its
/// own.
pub fn open(target: &Target, sync: Sync) -> Result<Box<dyn Store>, StoreError> {
    Ok(match target {
        Target::Sqlite(dir) => Box::new(Journaled::open(dir, sync)?),
        Target::Postgres(url) => Box::new(PostgresStore::connect(url)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_everything_else_is_a_directory() {
        for url in ["postgres://u@h/db", "postgresql://h:5432/db", "POSTGRES://h/db"] {
            assert!(matches!(Target::parse(url), Target::Postgres(_)), "{url}");
        }
        for path in ["/var/lib/legacygpu", "data", "postgres", "./postgres:/x", ""] {
            assert_eq!(Target::parse(path), Target::Sqlite(PathBuf::from(path)), "{path}");
        }
    }

    #[test]
    fn a_password_is_never_displayed() {
        let t = Target::parse("postgres://lg:hunter2@db.example:5432/tasks");
        assert_eq!(t.to_string(), "postgres://lg:***@db.example:5432/tasks");
        assert!(!format!("{t:?}").contains("hunter2"));
        let t = Target::parse("postgres://db.example/tasks?password=hunter2&sslmode=disable");
        assert!(!t.to_string().contains("hunter2"), "{t}");
    }
}
