//! Throwaway databases for tests: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database on the server named by `PAPERCUP_TEST_PG_URL` (the test script
//! starts one). Every storage test runs on both.

use rand::Rng;

use crate::{Db, DbOptions};

/// The environment variable naming the PostgreSQL server for tests.
pub const PG_URL_VAR: &str = "PAPERCUP_TEST_PG_URL";
/// Set to `1` to run the SQLite half only (for a quick local loop; CI never sets it).
pub const SKIP_PG_VAR: &str = "PAPERCUP_TEST_SKIP_PG";

/// A test database and whatever keeps it alive.
#[derive(Debug)]
pub struct TestDb {
    /// The migrated database.
    pub db: Db,
    /// The URL, for opening a second pool (a second "host") on the same database.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// A migrated SQLite database in a new temporary directory.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}/papercup.db", dir.path().display());
    let db = Db::open(&url, &DbOptions::default())
        .await
        .expect("open sqlite test database");
    TestDb {
        db,
        url,
        _dir: Some(dir),
    }
}

/// A migrated, empty PostgreSQL database, or `None` when the run explicitly skips
/// PostgreSQL. Panics when no server is configured, so that a missing database can never
/// pass for a green run.
pub async fn postgres() -> Option<TestDb> {
    if std::env::var(SKIP_PG_VAR).as_deref() == Ok("1") {
        eprintln!("{SKIP_PG_VAR}=1: skipping the PostgreSQL half of this test");
        return None;
    }
    let admin_url = std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{PG_URL_VAR} is not set: the storage tests run on PostgreSQL too. \
             Run scripts/test (it starts a server), or set {SKIP_PG_VAR}=1 for SQLite only."
        )
    });
    let name = format!("pc_test_{:016x}", rand::rng().random::<u64>());
    let admin = Db::connect(
        &admin_url,
        &DbOptions {
            max_connections: 1,
            ..DbOptions::default()
        },
    )
    .await
    .expect("connect to the PostgreSQL test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .expect("create the test database");
    admin.close().await;
    let url = replace_db_name(&admin_url, &name);
    let db = Db::open(&url, &DbOptions::default())
        .await
        .expect("open the PostgreSQL test database");
    Some(TestDb {
        db,
        url,
        _dir: None,
    })
}

/// Both backends (PostgreSQL unless skipped explicitly).
pub async fn all() -> Vec<TestDb> {
    let mut v = vec![sqlite().await];
    if let Some(pg) = postgres().await {
        v.push(pg);
    }
    v
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            super::replace_db_name("postgres://u@127.0.0.1:5433/postgres", "x"),
            "postgres://u@127.0.0.1:5433/x"
        );
        assert_eq!(
            super::replace_db_name("postgres://u@h:1?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
    }
}
