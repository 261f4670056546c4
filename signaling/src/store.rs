//! Seats (SIP accounts of desk phones, each paying from a wallet) and registrar bindings,
//! in the shared database (SQLite or PostgreSQL, the same queries).

use serde::Serialize;
use sqlx::Row;
use storage::Db;

use crate::digest::{ha1, Algorithm};

/// Errors of the seat and binding store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("seat {0:?} already exists")]
    SeatExists(String),
    #[error("no seat named {0:?}")]
    UnknownSeat(String),
    #[error("no wallet with id {0}")]
    UnknownWallet(i64),
    #[error("invalid seat name {0:?}: use 1-64 letters, digits, '.', '_' or '-'")]
    BadUsername(String),
    #[error("password too short: at least 8 characters")]
    WeakPassword,
}

/// A seat as stored (without its password hashes).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Seat {
    pub id: i64,
    pub username: String,
    pub wallet_id: i64,
    pub display_name: String,
    pub realm: String,
    pub disabled: bool,
    pub created_at: i64,
}

/// What the registrar needs to verify a digest.
#[derive(Debug, Clone)]
pub struct SeatSecret {
    pub seat: Seat,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl SeatSecret {
    pub fn ha1(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// A registrar binding.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Binding {
    pub seat_id: i64,
    pub username: String,
    /// The Contact URI the phone registered.
    pub contact: String,
    /// Where its REGISTER really came from: `transport:ip:port` (NAT: we send there).
    pub source: String,
    pub transport: String,
    pub call_id: String,
    pub cseq: i64,
    pub user_agent: String,
    pub node_id: String,
    pub expires_at: i64,
    pub registered_at: i64,
    pub updated_at: i64,
}

const SEAT_COLS: &str = "id, username, wallet_id, display_name, realm, disabled, created_at";

fn seat_from_row(row: &sqlx::any::AnyRow) -> Result<Seat, sqlx::Error> {
    Ok(Seat {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        wallet_id: row.try_get("wallet_id")?,
        display_name: row.try_get("display_name")?,
        realm: row.try_get("realm")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

const BINDING_COLS: &str = "r.seat_id, s.username, r.contact, r.source, r.transport, r.call_id, \
     r.cseq, r.user_agent, r.node_id, r.expires_at, r.registered_at, r.updated_at";

fn binding_from_row(row: &sqlx::any::AnyRow) -> Result<Binding, sqlx::Error> {
    Ok(Binding {
        seat_id: row.try_get("seat_id")?,
        username: row.try_get("username")?,
        contact: row.try_get("contact")?,
        source: row.try_get("source")?,
        transport: row.try_get("transport")?,
        call_id: row.try_get("call_id")?,
        cseq: row.try_get("cseq")?,
        user_agent: row.try_get("user_agent")?,
        node_id: row.try_get("node_id")?,
        expires_at: row.try_get("expires_at")?,
        registered_at: row.try_get("registered_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Creates a seat paying from `wallet_id`, with `password` kept only as HA1 for `realm`.
pub async fn create_seat(
    db: &Db,
    username: &str,
    wallet_id: i64,
    password: &str,
    realm: &str,
    display_name: &str,
) -> Result<Seat, StoreError> {
    if !valid_username(username) {
        return Err(StoreError::BadUsername(username.into()));
    }
    if password.chars().count() < 8 {
        return Err(StoreError::WeakPassword);
    }
    let wallet: Option<(i64,)> = sqlx::query_as("SELECT id FROM wallets WHERE id = $1")
        .bind(wallet_id)
        .fetch_optional(db.pool())
        .await?;
    if wallet.is_none() {
        return Err(StoreError::UnknownWallet(wallet_id));
    }
    let now = storage::now_ms();
    let row = sqlx::query(&format!(
        "INSERT INTO seats (username, wallet_id, display_name, realm, ha1_md5, ha1_sha256, \
         disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) \
         ON CONFLICT (username) DO NOTHING RETURNING {SEAT_COLS}"
    ))
    .bind(username)
    .bind(wallet_id)
    .bind(display_name)
    .bind(realm)
    .bind(ha1(Algorithm::Md5, username, realm, password))
    .bind(ha1(Algorithm::Sha256, username, realm, password))
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(row) => Ok(seat_from_row(&row)?),
        None => Err(StoreError::SeatExists(username.into())),
    }
}

/// Sets a new password (for `realm`, which may have changed since).
pub async fn set_password(
    db: &Db,
    username: &str,
    password: &str,
    realm: &str,
) -> Result<(), StoreError> {
    if password.chars().count() < 8 {
        return Err(StoreError::WeakPassword);
    }
    let done = sqlx::query(
        "UPDATE seats SET realm = $1, ha1_md5 = $2, ha1_sha256 = $3, updated_at = $4 \
         WHERE username = $5",
    )
    .bind(realm)
    .bind(ha1(Algorithm::Md5, username, realm, password))
    .bind(ha1(Algorithm::Sha256, username, realm, password))
    .bind(storage::now_ms())
    .bind(username)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::UnknownSeat(username.into()));
    }
    Ok(())
}

/// Enables or disables a seat; disabling also drops its bindings.
pub async fn set_disabled(db: &Db, username: &str, disabled: bool) -> Result<(), StoreError> {
    let mut tx = db.pool().begin().await?;
    let done = sqlx::query("UPDATE seats SET disabled = $1, updated_at = $2 WHERE username = $3")
        .bind(i64::from(disabled))
        .bind(storage::now_ms())
        .bind(username)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::UnknownSeat(username.into()));
    }
    if disabled {
        sqlx::query(
            "DELETE FROM registrations WHERE seat_id = (SELECT id FROM seats WHERE username = $1)",
        )
        .bind(username)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Every seat, by name.
pub async fn seats(db: &Db) -> Result<Vec<Seat>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {SEAT_COLS} FROM seats ORDER BY username"))
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(seat_from_row).collect::<Result<_, _>>()?)
}

/// The seat and its HA1s, for the registrar.
pub async fn seat_secret(db: &Db, username: &str) -> Result<Option<SeatSecret>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {SEAT_COLS}, ha1_md5, ha1_sha256 FROM seats WHERE username = $1"
    ))
    .bind(username)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(SeatSecret {
        seat: seat_from_row(&row)?,
        ha1_md5: row.try_get("ha1_md5")?,
        ha1_sha256: row.try_get("ha1_sha256")?,
    }))
}

/// Live bindings (not expired at `now`), optionally of one seat, by seat and contact.
pub async fn bindings(
    db: &Db,
    username: Option<&str>,
    now: i64,
) -> Result<Vec<Binding>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {BINDING_COLS} FROM registrations r JOIN seats s ON s.id = r.seat_id \
         WHERE r.expires_at > $1 AND ($2 = '' OR s.username = $2) \
         ORDER BY s.username, r.contact"
    ))
    .bind(now)
    .bind(username.unwrap_or(""))
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(binding_from_row)
        .collect::<Result<_, _>>()?)
}

/// One REGISTER's changes to a seat's bindings, applied in one transaction.
#[derive(Debug, Clone)]
pub enum BindingChange {
    /// Add or refresh this contact until `expires_at`.
    Upsert(Binding),
    /// Remove this contact.
    Remove { contact: String },
    /// Remove every contact of the seat (`Contact: *`).
    RemoveAll,
}

/// The outcome of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied; the seat's live bindings now.
    Applied(Vec<Binding>),
    /// Refused (RFC 3261 §10.3 step 7): same Call-ID with a CSeq not higher than stored.
    OutOfOrder { contact: String },
}

/// Applies a REGISTER's binding changes atomically (RFC 3261 §10.3 steps 6-8).
pub async fn apply(
    db: &Db,
    seat_id: i64,
    call_id: &str,
    cseq: i64,
    changes: &[BindingChange],
    now: i64,
) -> Result<ApplyOutcome, StoreError> {
    let mut tx = db.pool().begin().await?;
    // Write first (SQLite takes the write lock now, not on an upgrade later), and drop
    // the seat's expired bindings while at it.
    sqlx::query("DELETE FROM registrations WHERE seat_id = $1 AND expires_at <= $2")
        .bind(seat_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    for change in changes {
        let contact = match change {
            BindingChange::Upsert(b) => Some(b.contact.as_str()),
            BindingChange::Remove { contact } => Some(contact.as_str()),
            BindingChange::RemoveAll => None,
        };
        let existing: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT contact, call_id, cseq FROM registrations WHERE seat_id = $1 \
             AND ($2 = '' OR contact = $2)",
        )
        .bind(seat_id)
        .bind(contact.unwrap_or(""))
        .fetch_all(&mut *tx)
        .await?;
        if let Some((contact, _, _)) = existing
            .iter()
            .find(|(_, cid, seq)| cid == call_id && *seq >= cseq)
        {
            return Ok(ApplyOutcome::OutOfOrder {
                contact: contact.clone(),
            });
        }
        match change {
            BindingChange::Upsert(b) => {
                sqlx::query(
                    "INSERT INTO registrations (seat_id, contact, source, transport, call_id, \
                     cseq, user_agent, node_id, expires_at, registered_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
                     ON CONFLICT (seat_id, contact) DO UPDATE SET source = $3, transport = $4, \
                     call_id = $5, cseq = $6, user_agent = $7, node_id = $8, expires_at = $9, \
                     updated_at = $10",
                )
                .bind(seat_id)
                .bind(&b.contact)
                .bind(&b.source)
                .bind(&b.transport)
                .bind(call_id)
                .bind(cseq)
                .bind(&b.user_agent)
                .bind(&b.node_id)
                .bind(b.expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            BindingChange::Remove { contact } => {
                sqlx::query("DELETE FROM registrations WHERE seat_id = $1 AND contact = $2")
                    .bind(seat_id)
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?;
            }
            BindingChange::RemoveAll => {
                sqlx::query("DELETE FROM registrations WHERE seat_id = $1")
                    .bind(seat_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    let rows = sqlx::query(&format!(
        "SELECT {BINDING_COLS} FROM registrations r JOIN seats s ON s.id = r.seat_id \
         WHERE r.seat_id = $1 AND r.expires_at > $2 ORDER BY r.contact"
    ))
    .bind(seat_id)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let live = rows
        .iter()
        .map(binding_from_row)
        .collect::<Result<_, _>>()?;
    tx.commit().await?;
    Ok(ApplyOutcome::Applied(live))
}

/// Deletes expired bindings everywhere; returns how many.
pub async fn prune_expired(db: &Db, now: i64) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
            .bind(now)
            .execute(db.pool())
            .await?
            .rows_affected(),
    )
}
