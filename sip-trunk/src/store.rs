//! Trunks and numbers in the shared database (SQLite or PostgreSQL, the same queries).
//! A trunk's password is stored for digest answers but never leaves this module in
//! `Debug`, `Serialize` or any listing: only [`TrunkSecret`] carries it, for signaling.

use std::fmt;

use serde::Serialize;
use sqlx::Row;
use storage::Db;

use crate::profile::{Provider, TrunkTransport};

/// Errors of the trunk store, each naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrunkError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("trunk {0:?} already exists")]
    Exists(String),
    #[error("no trunk named {0:?}")]
    Unknown(String),
    #[error("number {0} is already ours")]
    NumberExists(String),
    #[error("number {0} is not ours")]
    UnknownNumber(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("trunk {trunk:?} still carries {count} number(s), e.g. {example}: remove or move them first")]
    InUse {
        trunk: String,
        count: usize,
        example: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TrunkError {
    TrunkError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A trunk as shown to operators (no password).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Trunk {
    pub id: i64,
    pub name: String,
    pub provider: Provider,
    pub host: String,
    pub port: Option<u16>,
    pub transport: TrunkTransport,
    pub srtp: bool,
    pub username: String,
    /// Whether a password is set (the password itself is never shown).
    pub has_password: bool,
    pub caller_ids: Vec<String>,
    pub codecs: Vec<String>,
    /// 0: unlimited.
    pub max_channels: u32,
    pub max_cps: u32,
    pub priority: u32,
    pub weight: u32,
    pub enabled: bool,
    pub inbound_sources: Vec<String>,
    /// E.164 prefixes this trunk carries (`+44`); empty: every destination.
    pub prefixes: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Trunk {
    /// The port calls and probes go to: the configured one, else the transport's default.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(self.transport.default_port())
    }

    /// The inbound sources as networks (a bare address is a /32 or /128).
    pub fn inbound_nets(&self) -> Vec<ipnet::IpNet> {
        self.inbound_sources
            .iter()
            .filter_map(|s| parse_source(s))
            .collect()
    }

    /// The Request-URI of an OPTIONS probe: `sip:host:port`.
    pub fn options_uri(&self) -> String {
        format!("sip:{}:{}", self.host, self.port_or_default())
    }
}

/// A trunk with its digest password, for signaling only.
#[derive(Clone)]
pub struct TrunkSecret {
    pub trunk: Trunk,
    pub password: String,
}

impl fmt::Debug for TrunkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrunkSecret")
            .field("trunk", &self.trunk)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Settings of a trunk to add, or (all `None` but those to change) to update.
#[derive(Clone, Default)]
pub struct TrunkSettings {
    pub provider: Option<Provider>,
    pub host: Option<String>,
    /// `Some(None)`: back to the transport's default port.
    pub port: Option<Option<u16>>,
    pub transport: Option<TrunkTransport>,
    pub srtp: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub caller_ids: Option<Vec<String>>,
    pub codecs: Option<Vec<String>>,
    pub max_channels: Option<u32>,
    pub max_cps: Option<u32>,
    pub priority: Option<u32>,
    pub weight: Option<u32>,
    pub enabled: Option<bool>,
    pub inbound_sources: Option<Vec<String>>,
    pub prefixes: Option<Vec<String>>,
}

impl fmt::Debug for TrunkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrunkSettings")
            .field("provider", &self.provider)
            .field("host", &self.host)
            .field("transport", &self.transport)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// An inbound source: a CIDR range, or one address.
pub fn parse_source(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Whether `s` is an E.164 number (`+` and 8 to 15 digits).
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

fn check_caller_id(c: &str) -> Result<(), TrunkError> {
    let ok = match c.strip_suffix('*') {
        Some(prefix) => prefix.strip_prefix('+').is_some_and(|d| {
            !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit())
        }),
        None => is_e164(c),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "caller_ids",
            format!("{c:?} is neither an E.164 number (+15551234567) nor a prefix (+1555*)"),
        ))
    }
}

fn check_host(h: &str) -> Result<(), TrunkError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "host",
            format!("{h:?} is not a host name or IP address"),
        ))
    }
}

impl TrunkSettings {
    fn validate(&self) -> Result<(), TrunkError> {
        if let Some(h) = &self.host {
            check_host(h)?;
        }
        if let Some(Some(0)) = self.port {
            return Err(invalid("port", "must be 1-65535"));
        }
        for c in self.caller_ids.iter().flatten() {
            check_caller_id(c)?;
        }
        for n in self.inbound_sources.iter().flatten() {
            if parse_source(n).is_none() {
                return Err(invalid(
                    "inbound_sources",
                    format!("{n:?} is not a CIDR range or address"),
                ));
            }
        }
        for p in self.prefixes.iter().flatten() {
            let ok = p.strip_prefix('+').is_some_and(|d| {
                !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit())
            });
            if !ok {
                return Err(invalid(
                    "prefixes",
                    format!("{p:?} is not an E.164 prefix (+44, +1555)"),
                ));
            }
        }
        if let Some(c) = &self.codecs {
            if c.is_empty() {
                return Err(invalid("codecs", "name at least one codec (PCMU, PCMA)"));
            }
        }
        if self.max_cps == Some(0) {
            return Err(invalid("max_cps", "must be at least 1"));
        }
        Ok(())
    }
}

const COLS: &str = "id, name, provider, host, port, transport, srtp, username, password, \
     caller_ids, codecs, max_channels, max_cps, priority, weight, enabled, inbound_sources, \
     prefixes, created_at, updated_at";

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn u32_col(row: &sqlx::any::AnyRow, col: &str) -> Result<u32, sqlx::Error> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<TrunkSecret, sqlx::Error> {
    let decode = |what: &str, v: String| sqlx::Error::Decode(format!("{what} {v:?}").into());
    let provider: String = row.try_get("provider")?;
    let transport: String = row.try_get("transport")?;
    let port: Option<i64> = row.try_get("port")?;
    let password: String = row.try_get("password")?;
    Ok(TrunkSecret {
        trunk: Trunk {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            provider: Provider::parse(&provider)
                .ok_or_else(|| decode("provider", provider.clone()))?,
            host: row.try_get("host")?,
            port: port.and_then(|p| u16::try_from(p).ok()),
            transport: TrunkTransport::parse(&transport)
                .ok_or_else(|| decode("transport", transport.clone()))?,
            srtp: row.try_get::<i64, _>("srtp")? != 0,
            username: row.try_get("username")?,
            has_password: !password.is_empty(),
            caller_ids: list(&row.try_get::<String, _>("caller_ids")?),
            codecs: list(&row.try_get::<String, _>("codecs")?),
            max_channels: u32_col(row, "max_channels")?,
            max_cps: u32_col(row, "max_cps")?,
            priority: u32_col(row, "priority")?,
            weight: u32_col(row, "weight")?,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            inbound_sources: list(&row.try_get::<String, _>("inbound_sources")?),
            prefixes: list(&row.try_get::<String, _>("prefixes")?),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        },
        password,
    })
}

/// Tells every running server (this host's and the others') that trunks or numbers
/// changed, so routing reloads them.
async fn changed(db: &Db) -> Result<(), TrunkError> {
    let mut conn = db.pool().acquire().await?;
    Ok(storage::bump(&mut conn, db.backend(), storage::Topic::Trunks).await?)
}

/// Every trunk with its password (for routing; never printed), by priority then name.
pub async fn secrets(db: &Db) -> Result<Vec<TrunkSecret>, TrunkError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLS} FROM trunks ORDER BY priority, name"
    ))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Adds a trunk; `provider` and `host` are required, the rest default from the profile.
pub async fn add(db: &Db, name: &str, s: &TrunkSettings) -> Result<Trunk, TrunkError> {
    if !valid_name(name) {
        return Err(invalid(
            "name",
            format!("{name:?}: use 1-64 letters, digits, '.', '_' or '-'"),
        ));
    }
    s.validate()?;
    let provider = s
        .provider
        .ok_or_else(|| invalid("provider", "required (twilio, telnyx, generic)"))?;
    let host = s.host.clone().ok_or_else(|| invalid("host", "required"))?;
    let now = storage::now_ms();
    let row = sqlx::query(&format!(
        "INSERT INTO trunks (name, provider, host, port, transport, srtp, username, password, \
         caller_ids, codecs, max_channels, max_cps, priority, weight, enabled, inbound_sources, \
         prefixes, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
         $12, $13, $14, $15, $16, $17, $18, $18) ON CONFLICT (name) DO NOTHING RETURNING {COLS}"
    ))
    .bind(name)
    .bind(provider.as_str())
    .bind(&host)
    .bind(s.port.flatten().map(i64::from))
    .bind(s.transport.unwrap_or(TrunkTransport::Udp).as_str())
    .bind(i64::from(s.srtp.unwrap_or(false)))
    .bind(s.username.clone().unwrap_or_default())
    .bind(s.password.clone().unwrap_or_default())
    .bind(s.caller_ids.clone().unwrap_or_default().join(","))
    .bind(
        s.codecs
            .clone()
            .unwrap_or_else(|| vec!["PCMU".into(), "PCMA".into()])
            .join(","),
    )
    .bind(i64::from(s.max_channels.unwrap_or(0)))
    .bind(i64::from(s.max_cps.unwrap_or(provider.default_max_cps())))
    .bind(i64::from(s.priority.unwrap_or(10)))
    .bind(i64::from(s.weight.unwrap_or(100)))
    .bind(i64::from(s.enabled.unwrap_or(true)))
    .bind(s.inbound_sources.clone().unwrap_or_default().join(","))
    .bind(s.prefixes.clone().unwrap_or_default().join(","))
    .bind(now)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(r) => {
            changed(db).await?;
            Ok(from_row(&r)?.trunk)
        }
        None => Err(TrunkError::Exists(name.into())),
    }
}

/// Every trunk, by priority then name.
pub async fn trunks(db: &Db) -> Result<Vec<Trunk>, TrunkError> {
    Ok(secrets(db).await?.into_iter().map(|t| t.trunk).collect())
}

/// One trunk with its password (for signaling).
pub async fn secret(db: &Db, name: &str) -> Result<TrunkSecret, TrunkError> {
    let row = sqlx::query(&format!("SELECT {COLS} FROM trunks WHERE name = $1"))
        .bind(name)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| TrunkError::Unknown(name.into()))?;
    Ok(from_row(&row)?)
}

/// One trunk.
pub async fn trunk(db: &Db, name: &str) -> Result<Trunk, TrunkError> {
    Ok(secret(db, name).await?.trunk)
}

/// Changes the given settings of a trunk.
pub async fn update(db: &Db, name: &str, s: &TrunkSettings) -> Result<Trunk, TrunkError> {
    s.validate()?;
    let cur = secret(db, name).await?;
    let t = &cur.trunk;
    let provider = s.provider.unwrap_or(t.provider);
    let done = sqlx::query(
        "UPDATE trunks SET provider = $1, host = $2, port = $3, transport = $4, srtp = $5, \
         username = $6, password = $7, caller_ids = $8, codecs = $9, max_channels = $10, \
         max_cps = $11, priority = $12, weight = $13, enabled = $14, inbound_sources = $15, \
         prefixes = $16, updated_at = $17 WHERE name = $18",
    )
    .bind(provider.as_str())
    .bind(s.host.clone().unwrap_or_else(|| t.host.clone()))
    .bind(s.port.unwrap_or(t.port).map(i64::from))
    .bind(s.transport.unwrap_or(t.transport).as_str())
    .bind(i64::from(s.srtp.unwrap_or(t.srtp)))
    .bind(s.username.clone().unwrap_or_else(|| t.username.clone()))
    .bind(s.password.clone().unwrap_or_else(|| cur.password.clone()))
    .bind(
        s.caller_ids
            .clone()
            .unwrap_or_else(|| t.caller_ids.clone())
            .join(","),
    )
    .bind(
        s.codecs
            .clone()
            .unwrap_or_else(|| t.codecs.clone())
            .join(","),
    )
    .bind(i64::from(s.max_channels.unwrap_or(t.max_channels)))
    .bind(i64::from(s.max_cps.unwrap_or(t.max_cps)))
    .bind(i64::from(s.priority.unwrap_or(t.priority)))
    .bind(i64::from(s.weight.unwrap_or(t.weight)))
    .bind(i64::from(s.enabled.unwrap_or(t.enabled)))
    .bind(
        s.inbound_sources
            .clone()
            .unwrap_or_else(|| t.inbound_sources.clone())
            .join(","),
    )
    .bind(
        s.prefixes
            .clone()
            .unwrap_or_else(|| t.prefixes.clone())
            .join(","),
    )
    .bind(storage::now_ms())
    .bind(name)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(TrunkError::Unknown(name.into()));
    }
    changed(db).await?;
    trunk(db, name).await
}

/// Removes a trunk that carries no number.
pub async fn remove(db: &Db, name: &str) -> Result<(), TrunkError> {
    let t = trunk(db, name).await?;
    let nums: Vec<(String,)> =
        sqlx::query_as("SELECT e164 FROM numbers WHERE trunk_id = $1 ORDER BY e164")
            .bind(t.id)
            .fetch_all(db.pool())
            .await?;
    if let Some((example,)) = nums.first() {
        return Err(TrunkError::InUse {
            trunk: name.into(),
            count: nums.len(),
            example: example.clone(),
        });
    }
    sqlx::query("DELETE FROM trunks WHERE id = $1")
        .bind(t.id)
        .execute(db.pool())
        .await?;
    changed(db).await
}

/// One of our numbers (DIDs).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Number {
    pub e164: String,
    pub trunk: String,
    pub owner_kind: Option<String>,
    pub owner_ref: Option<String>,
    pub target: String,
    pub created_at: i64,
}

/// Adds a number reached through `trunk`.
pub async fn add_number(db: &Db, e164: &str, trunk_name: &str) -> Result<Number, TrunkError> {
    if !is_e164(e164) {
        return Err(invalid(
            "number",
            format!("{e164:?} is not E.164 (+15551234567)"),
        ));
    }
    let t = trunk(db, trunk_name).await?;
    let now = storage::now_ms();
    let done = sqlx::query(
        "INSERT INTO numbers (e164, trunk_id, target, created_at, updated_at) \
         VALUES ($1, $2, '', $3, $3) ON CONFLICT (e164) DO NOTHING",
    )
    .bind(e164)
    .bind(t.id)
    .bind(now)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(TrunkError::NumberExists(e164.into()));
    }
    changed(db).await?;
    number(db, e164).await
}

const NUMBER_SELECT: &str = "SELECT n.e164, t.name AS trunk, n.owner_kind, n.owner_ref, n.target, \
     n.created_at FROM numbers n JOIN trunks t ON t.id = n.trunk_id";

fn number_from_row(row: &sqlx::any::AnyRow) -> Result<Number, sqlx::Error> {
    Ok(Number {
        e164: row.try_get("e164")?,
        trunk: row.try_get("trunk")?,
        owner_kind: row.try_get("owner_kind")?,
        owner_ref: row.try_get("owner_ref")?,
        target: row.try_get("target")?,
        created_at: row.try_get("created_at")?,
    })
}

/// One number.
pub async fn number(db: &Db, e164: &str) -> Result<Number, TrunkError> {
    let row = sqlx::query(&format!("{NUMBER_SELECT} WHERE n.e164 = $1"))
        .bind(e164)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| TrunkError::UnknownNumber(e164.into()))?;
    Ok(number_from_row(&row)?)
}

/// Every number, by number.
pub async fn numbers(db: &Db) -> Result<Vec<Number>, TrunkError> {
    let rows = sqlx::query(&format!("{NUMBER_SELECT} ORDER BY n.e164"))
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(number_from_row).collect::<Result<_, _>>()?)
}

/// Gives a number to an owner (a person or a company) and a routing target.
pub async fn assign_number(
    db: &Db,
    e164: &str,
    owner_kind: &str,
    owner_ref: &str,
    target: &str,
) -> Result<Number, TrunkError> {
    if !matches!(owner_kind, "person" | "company") {
        return Err(invalid(
            "owner_kind",
            format!("{owner_kind:?}: person or company"),
        ));
    }
    if owner_ref.trim().is_empty() {
        return Err(invalid("owner", "must not be empty"));
    }
    let done = sqlx::query(
        "UPDATE numbers SET owner_kind = $1, owner_ref = $2, target = $3, updated_at = $4 \
         WHERE e164 = $5",
    )
    .bind(owner_kind)
    .bind(owner_ref.trim())
    .bind(target)
    .bind(storage::now_ms())
    .bind(e164)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(TrunkError::UnknownNumber(e164.into()));
    }
    changed(db).await?;
    number(db, e164).await
}

/// Removes a number.
pub async fn remove_number(db: &Db, e164: &str) -> Result<(), TrunkError> {
    let done = sqlx::query("DELETE FROM numbers WHERE e164 = $1")
        .bind(e164)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(TrunkError::UnknownNumber(e164.into()));
    }
    changed(db).await
}

/// One host's view of one trunk.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthRow {
    pub trunk: String,
    pub node_id: String,
    pub state: String,
    pub latency_ms: Option<f64>,
    pub last_result: String,
    pub checked_at: i64,
}

/// Records this host's view of a trunk.
pub async fn record_health(
    db: &Db,
    trunk_id: i64,
    node_id: &str,
    h: &crate::health::TrunkHealth,
    now: i64,
) -> Result<(), TrunkError> {
    sqlx::query(
        "INSERT INTO trunk_health (trunk_id, node_id, state, latency_us, last_result, checked_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (trunk_id, node_id) DO UPDATE SET \
         state = $3, latency_us = $4, last_result = $5, checked_at = $6",
    )
    .bind(trunk_id)
    .bind(node_id)
    .bind(h.state.as_str())
    .bind(h.latency_ms.map(|l| (l * 1000.0).round() as i64))
    .bind(&h.last_result)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Every host's view of every trunk, by trunk then host.
pub async fn health(db: &Db) -> Result<Vec<HealthRow>, TrunkError> {
    let rows = sqlx::query(
        "SELECT t.name, h.node_id, h.state, h.latency_us, h.last_result, h.checked_at \
         FROM trunk_health h JOIN trunks t ON t.id = h.trunk_id ORDER BY t.name, h.node_id",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(HealthRow {
                trunk: r.try_get("name")?,
                node_id: r.try_get("node_id")?,
                state: r.try_get("state")?,
                latency_ms: r
                    .try_get::<Option<i64>, _>("latency_us")?
                    .map(|us| us as f64 / 1000.0),
                last_result: r.try_get("last_result")?,
                checked_at: r.try_get("checked_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Which way a call attempt went.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttemptDirection {
    /// To a trunk.
    Outbound,
    /// From a trunk to one of our numbers.
    Inbound,
}

impl AttemptDirection {
    fn as_str(self) -> &'static str {
        match self {
            AttemptDirection::Outbound => "outbound",
            AttemptDirection::Inbound => "inbound",
        }
    }
}

/// One trunk tried (or skipped) for a call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attempt {
    pub call_id: String,
    /// 1, 2, … in the order tried.
    pub seq: i64,
    pub node_id: String,
    pub direction: AttemptDirection,
    pub trunk: String,
    /// The Request-URI sent (or received).
    pub target: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// The final SIP status, if one came.
    pub status: Option<u16>,
    /// What happened: `answered`, `rejected 503 → next trunk`, `skipped: down`, …
    pub outcome: String,
}

impl Attempt {
    /// An attempt starting now.
    pub fn start(
        call_id: &str,
        seq: i64,
        node_id: &str,
        direction: AttemptDirection,
        trunk: &str,
        target: &str,
    ) -> Self {
        Self {
            call_id: call_id.into(),
            seq,
            node_id: node_id.into(),
            direction,
            trunk: trunk.into(),
            target: target.into(),
            started_at: storage::now_ms(),
            ended_at: None,
            status: None,
            outcome: String::new(),
        }
    }

    /// Ends it now with `status` (if a final response came) and `outcome`.
    pub fn end(&mut self, status: Option<u16>, outcome: impl Into<String>) {
        self.ended_at = Some(storage::now_ms());
        self.status = status;
        self.outcome = outcome.into();
    }
}

/// Logs the start of an attempt (or, with `ended_at` and `outcome` set, a skipped one).
pub async fn record_attempt(db: &Db, a: &Attempt) -> Result<(), TrunkError> {
    sqlx::query(
        "INSERT INTO call_attempts (call_id, seq, node_id, direction, trunk, target, started_at, \
         ended_at, status, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (call_id, seq) DO UPDATE SET ended_at = $8, status = $9, outcome = $10",
    )
    .bind(&a.call_id)
    .bind(a.seq)
    .bind(&a.node_id)
    .bind(a.direction.as_str())
    .bind(&a.trunk)
    .bind(&a.target)
    .bind(a.started_at)
    .bind(a.ended_at)
    .bind(a.status.map(i64::from))
    .bind(&a.outcome)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Every attempt of a call, in order.
pub async fn attempts(db: &Db, call_id: &str) -> Result<Vec<Attempt>, TrunkError> {
    let rows = sqlx::query(
        "SELECT call_id, seq, node_id, direction, trunk, target, started_at, ended_at, status, \
         outcome FROM call_attempts WHERE call_id = $1 ORDER BY seq",
    )
    .bind(call_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let dir: String = r.try_get("direction")?;
            Ok(Attempt {
                call_id: r.try_get("call_id")?,
                seq: r.try_get("seq")?,
                node_id: r.try_get("node_id")?,
                direction: if dir == "inbound" {
                    AttemptDirection::Inbound
                } else {
                    AttemptDirection::Outbound
                },
                trunk: r.try_get("trunk")?,
                target: r.try_get("target")?,
                started_at: r.try_get("started_at")?,
                ended_at: r.try_get("ended_at")?,
                status: r
                    .try_get::<Option<i64>, _>("status")?
                    .and_then(|s| u16::try_from(s).ok()),
                outcome: r.try_get("outcome")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}
