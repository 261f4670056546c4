//! Storage shared by the Papercup crates: one [`Db`] handle over SQLite (the default, an
//! embedded file) or PostgreSQL (production, several hosts), the embedded migrations, and
//! change notifications so that running servers see what the CLI changed.
//!
//! Every crate writes its queries once, against [`sqlx::AnyPool`], with `$1…$n`
//! placeholders (accepted by both backends) and `BIGINT` columns (money in micro-units and
//! times in Unix milliseconds are `i64`, never floats or database-specific types). The
//! backends differ only in the DDL of their migrations (`migrations/sqlite`,
//! `migrations/postgres`, one numbered sequence each).
//!
//! Change notifications: a writer calls [`bump`] inside its transaction; the
//! `change_seq` row of the topic grows by one (and on PostgreSQL a `NOTIFY` is sent on
//! commit). A [`ChangeWatcher`] polls the sequence numbers (and listens on PostgreSQL) and
//! reports the topics whose number moved.

#![forbid(unsafe_code)]

mod changes;
mod db;
#[cfg(feature = "testing")]
pub mod testing;

pub use changes::{bump, ChangeWatcher, Topic};
pub use db::{Backend, Db, DbOptions};

/// The wall clock in the unit every stored time uses: Unix milliseconds (0 before 1970).
/// Billing reads it through its injectable `Clock`; records without billing logic
/// (seats, bindings, trunks) call it directly.
pub fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL (expected sqlite://… or postgres://…): {0}")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot open database {url}: {source}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A filesystem error while preparing the SQLite file.
    #[error("cannot prepare database directory {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Removes the password from a database URL for logs and error messages.
pub fn redact_url(url: &str) -> String {
    // scheme://user:password@host/… → scheme://user:***@host/…
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://pc:s3cret@db:5432/papercup"),
            "postgres://pc:***@db:5432/papercup"
        );
        assert_eq!(redact_url("sqlite://papercup.db"), "sqlite://papercup.db");
        assert_eq!(
            redact_url("postgres://pc@db/papercup"),
            "postgres://pc@db/papercup"
        );
    }
}
