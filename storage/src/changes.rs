//! Change notifications between the CLI (or another host) and running servers.
//!
//! Each topic has a row in `change_seq`. A writer bumps it in the same transaction as the
//! change, so a watcher that sees the new number also sees the change. Watchers poll
//! (one tiny query per interval, works for SQLite files shared by a CLI process) and on
//! PostgreSQL also `LISTEN`, so a change made on another host is seen at once.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::AnyConnection;

use crate::{Backend, Db, StorageError};

const CHANNEL: &str = "papercup_changes";

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topic {
    /// The rate deck.
    Rates,
    /// Wallet balances or settings (a top-up may wake starved calls).
    Wallets,
    /// Destination policy (blocked prefixes).
    Policy,
    /// Trunks and numbers (routing, inbound sources, DIDs).
    Trunks,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 4] = [Topic::Rates, Topic::Wallets, Topic::Policy, Topic::Trunks];

    /// The topic's key in `change_seq`.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Rates => "rates",
            Topic::Wallets => "wallets",
            Topic::Policy => "policy",
            Topic::Trunks => "trunks",
        }
    }

    fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Records a change of `topic` inside the caller's transaction.
pub async fn bump(
    conn: &mut AnyConnection,
    backend: Backend,
    topic: Topic,
) -> Result<(), StorageError> {
    sqlx::query("UPDATE change_seq SET seq = seq + 1 WHERE topic = $1")
        .bind(topic.as_str())
        .execute(&mut *conn)
        .await?;
    if backend == Backend::Postgres {
        // Delivered when the transaction commits, not before.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(topic.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Waits for changes made by other processes (or this one).
#[derive(Debug)]
pub struct ChangeWatcher {
    db: Db,
    interval: Duration,
    seen: HashMap<Topic, i64>,
    listener: Option<PgListener>,
}

impl ChangeWatcher {
    /// Starts watching from the current state: only later changes are reported.
    pub async fn new(db: Db, interval: Duration) -> Result<Self, StorageError> {
        let listener = if db.backend() == Backend::Postgres {
            let mut l = PgListener::connect(db.url()).await?;
            l.listen(CHANNEL).await?;
            Some(l)
        } else {
            None
        };
        let mut w = Self {
            db,
            interval,
            seen: HashMap::new(),
            listener,
        };
        w.seen = w.read().await?;
        Ok(w)
    }

    async fn read(&self) -> Result<HashMap<Topic, i64>, StorageError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT topic, seq FROM change_seq")
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(t, s)| Topic::parse(&t).map(|t| (t, s)))
            .collect())
    }

    /// Returns the topics that changed since the last call, waiting until at least one did.
    pub async fn changed(&mut self) -> Result<Vec<Topic>, StorageError> {
        loop {
            match self.listener.as_mut() {
                Some(l) => {
                    // Either a NOTIFY or the poll interval, whichever first; a dropped
                    // LISTEN connection is re-established by PgListener itself.
                    let _ = tokio::time::timeout(self.interval, l.try_recv()).await;
                }
                None => tokio::time::sleep(self.interval).await,
            }
            let now = self.read().await?;
            let changed: Vec<Topic> = now
                .iter()
                .filter(|(t, s)| self.seen.get(t) != Some(s))
                .map(|(t, _)| *t)
                .collect();
            self.seen = now;
            if !changed.is_empty() {
                return Ok(changed);
            }
        }
    }
}
