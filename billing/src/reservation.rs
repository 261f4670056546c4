//! Real-time credit control (the RFC 4006 model): authorize, answer, extend, settle, expire.
//!
//! Money is only ever reserved by one conditional statement,
//! `UPDATE wallets SET reserved = reserved + :amt WHERE id = :w AND balance - reserved >= :amt`,
//! so any number of calls on any number of hosts cannot overdraw a wallet. Reads are only
//! used to size a request; a lost race is retried with fresh numbers.
//!
//! A reservation always holds exactly `cost(granted)`: the grant is block-aligned, so the
//! talk time it covers costs precisely what was reserved, and settlement (which never
//! bills beyond the grant) can never charge more than was held.
//!
//! Lock order is reservation row, then wallet row, in every transaction (no deadlocks on
//! PostgreSQL), and every transaction starts with a write (SQLite takes its write lock at
//! once instead of failing to upgrade a read).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::e164::normalize;
use crate::error::Refusal;
use crate::money::Micros;
use crate::tariff::Tariff;
use crate::{Billing, BillingError};

/// How often a lost race is retried before giving up with `Contention`.
const RETRIES: usize = 50;

/// A call asking to start.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Unique call id (signaling's); the ledger key of its charge.
    pub call_id: String,
    /// The wallet that pays.
    pub wallet_id: i64,
    /// Caller ID in E.164 (selects caller-class rates), or empty.
    pub caller: String,
    /// What was dialled.
    pub callee: String,
}

/// What a call may spend: the talk time covered by its reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The call.
    pub call_id: String,
    /// The paying wallet.
    pub wallet_id: i64,
    /// The node that owns the call.
    pub node_id: String,
    /// Caller ID.
    pub caller: String,
    /// The destination in E.164.
    pub callee: String,
    /// The rate's destination prefix.
    pub rate_prefix: String,
    /// The rate's terms, fixed for the call at authorization.
    pub tariff: Tariff,
    /// Micro-units held for the call (= cost of `granted_ms`).
    pub reserved: Micros,
    /// Talk time covered, from the answer.
    pub granted_ms: i64,
    /// True when the wallet could not cover a full slice: the call ends at the deadline.
    pub final_units: bool,
    /// Unix ms of authorization.
    pub created_at: i64,
    /// Unix ms of the answer, once answered.
    pub answered_at: Option<i64>,
    /// Unix ms of the last extension (or refresh).
    pub last_extended_at: i64,
    /// Unix ms after which another host may settle the reservation as lost.
    pub expires_at: i64,
}

impl Grant {
    /// The instant the granted talk time ends (answered calls).
    pub fn deadline(&self) -> Option<i64> {
        self.answered_at.map(|a| a + self.granted_ms)
    }

    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let final_units: i64 = row.try_get("final_units")?;
        Ok(Self {
            call_id: row.try_get("call_id")?,
            wallet_id: row.try_get("wallet_id")?,
            node_id: row.try_get("node_id")?,
            caller: row.try_get("caller")?,
            callee: row.try_get("callee")?,
            rate_prefix: row.try_get("rate_prefix")?,
            tariff: Tariff::from_row(row)?,
            reserved: row.try_get("amount")?,
            granted_ms: row.try_get("granted_ms")?,
            final_units: final_units != 0,
            created_at: row.try_get("created_at")?,
            answered_at: row.try_get("answered_at")?,
            last_extended_at: row.try_get("last_extended_at")?,
            expires_at: row.try_get("expires_at")?,
        })
    }
}

/// Why a call ended (stored in the CDR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndCause {
    /// A party hung up.
    Normal,
    /// The wallet's credit ran out and we hung up.
    CreditExhausted,
    /// Never answered (cancelled, busy, no answer, failed).
    NotAnswered,
    /// The owning host vanished; settled by another host's janitor.
    NodeLost,
    /// The owning host restarted and settled its leftovers.
    NodeRestart,
    /// Anything else, e.g. a SIP status (`"sip_503"`).
    Other(String),
}

impl EndCause {
    /// The stored text.
    pub fn as_str(&self) -> &str {
        match self {
            EndCause::Normal => "normal",
            EndCause::CreditExhausted => "credit_exhausted",
            EndCause::NotAnswered => "not_answered",
            EndCause::NodeLost => "node_lost",
            EndCause::NodeRestart => "node_restart",
            EndCause::Other(s) => s,
        }
    }
}

/// A call that ended.
#[derive(Debug, Clone)]
pub struct SettleRequest {
    /// The call.
    pub call_id: String,
    /// Unix ms of the hangup.
    pub ended_at: i64,
    /// Why.
    pub cause: EndCause,
    /// The trunk that carried it.
    pub trunk: Option<String>,
    /// Quality figures from media (loss, jitter, MOS…).
    pub quality: Option<serde_json::Value>,
}

/// A call detail record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cdr {
    /// The call.
    pub call_id: String,
    /// Paying wallet.
    pub wallet_id: i64,
    /// Node that carried the call.
    pub node_id: String,
    /// Caller ID.
    pub caller: String,
    /// Destination, E.164.
    pub callee: String,
    /// Trunk used.
    pub trunk: Option<String>,
    /// Rate prefix applied.
    pub rate_prefix: String,
    /// The rate's terms.
    pub tariff: Tariff,
    /// Unix ms of authorization.
    pub created_at: i64,
    /// Unix ms of the answer.
    pub answered_at: Option<i64>,
    /// Unix ms of the hangup.
    pub ended_at: i64,
    /// Talk time billed against (answer to hangup, at most the grant), ms.
    pub duration_ms: i64,
    /// Billable seconds after increments.
    pub billable_secs: i64,
    /// What was charged, micro-units.
    pub cost: Micros,
    /// Why the call ended.
    pub hangup_cause: String,
    /// Quality figures.
    pub quality: Option<serde_json::Value>,
}

impl Cdr {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let quality: Option<String> = row.try_get("quality")?;
        Ok(Self {
            call_id: row.try_get("call_id")?,
            wallet_id: row.try_get("wallet_id")?,
            node_id: row.try_get("node_id")?,
            caller: row.try_get("caller")?,
            callee: row.try_get("callee")?,
            trunk: row.try_get("trunk")?,
            rate_prefix: row.try_get("rate_prefix")?,
            tariff: Tariff::from_row(row)?,
            created_at: row.try_get("created_at")?,
            answered_at: row.try_get("answered_at")?,
            ended_at: row.try_get("ended_at")?,
            duration_ms: row.try_get("duration_ms")?,
            billable_secs: row.try_get("billable_secs")?,
            cost: row.try_get("cost")?,
            hangup_cause: row.try_get("hangup_cause")?,
            quality: quality.and_then(|q| serde_json::from_str(&q).ok()),
        })
    }
}

const RES_COLS: &str = "call_id, wallet_id, node_id, caller, callee, rate_prefix, rate_per_min, \
     connect_fee, increment_first, increment_next, amount, granted_ms, final_units, created_at, \
     answered_at, last_extended_at, expires_at";
const CDR_COLS: &str = "call_id, wallet_id, node_id, caller, callee, trunk, rate_prefix, \
     rate_per_min, connect_fee, increment_first, increment_next, created_at, answered_at, \
     ended_at, duration_ms, billable_secs, cost, hangup_cause, quality";

/// Which reservations a settlement may take.
enum Only<'a> {
    Any,
    ExpiredBefore(i64),
    OwnedBy(&'a str),
}

/// Where the billed talk time ends.
enum EndAt {
    At(i64),
    LastExtension,
}

impl Billing {
    /// Authorizes a call: normalises the number, rates it, applies the destination policy
    /// and reserves the first grant (at least one billing block plus connect fee; up to
    /// `first_grant_secs`). A wallet that cannot cover the first block gets a refusal.
    pub async fn authorize(&self, req: AuthorizeRequest) -> Result<Grant, BillingError> {
        let number = normalize(&req.callee, self.config().default_country).map_err(|e| {
            Refusal::InvalidNumber {
                reason: e.to_string(),
            }
        })?;
        let rate = self.rate_for(&number, &req.caller)?;
        let t = rate.tariff;
        let first = t.align_up_secs(self.config().first_grant_secs.max(t.increment_first));
        let (done,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM calls WHERE call_id = $1")
            .bind(&req.call_id)
            .fetch_one(self.db().pool())
            .await?;
        if done > 0 {
            return Err(BillingError::DuplicateCall(req.call_id));
        }
        for _ in 0..RETRIES {
            let wallet = self.wallet(req.wallet_id).await?;
            self.check_policy(&wallet, &number, &rate)?;
            let available = wallet.available();
            let Some(secs) = t
                .max_affordable_secs(available, self.config().max_free_call_secs)
                .map(|s| s.min(first))
            else {
                return Err(Refusal::InsufficientBalance {
                    available,
                    needed: t.cost_of_secs(t.increment_first),
                }
                .into());
            };
            let amount = t.cost_of_secs(secs);
            let now = self.now();
            let mut tx = self.db().pool().begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO reservations (call_id, wallet_id, node_id, caller, callee, \
                 rate_prefix, rate_per_min, connect_fee, increment_first, increment_next, amount, \
                 granted_ms, final_units, created_at, answered_at, last_extended_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, $14, $15) \
                 ON CONFLICT (call_id) DO NOTHING",
            )
            .bind(&req.call_id)
            .bind(req.wallet_id)
            .bind(self.node_id())
            .bind(&req.caller)
            .bind(&number.number)
            .bind(&rate.prefix)
            .bind(t.rate_per_min)
            .bind(t.connect_fee)
            .bind(t.increment_first)
            .bind(t.increment_next)
            .bind(amount)
            .bind(secs * 1000)
            .bind(i64::from(secs < first))
            .bind(now)
            .bind(now + self.config().reservation_ttl_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Err(BillingError::DuplicateCall(req.call_id));
            }
            if !reserve(&mut tx, req.wallet_id, amount, now).await? {
                tx.rollback().await?; // someone took the money first: size again
                continue;
            }
            tx.commit().await?;
            tracing::debug!(call_id = %req.call_id, wallet = req.wallet_id, secs, amount, "authorized");
            return Ok(Grant {
                call_id: req.call_id,
                wallet_id: req.wallet_id,
                node_id: self.node_id().to_string(),
                caller: req.caller,
                callee: number.number,
                rate_prefix: rate.prefix,
                tariff: t,
                reserved: amount,
                granted_ms: secs * 1000,
                final_units: secs < first,
                created_at: now,
                answered_at: None,
                last_extended_at: now,
                expires_at: now + self.config().reservation_ttl_ms(),
            });
        }
        Err(BillingError::Contention(format!(
            "wallet {}",
            req.wallet_id
        )))
    }

    /// Records the answer: the granted talk time counts from `answered_at`. Idempotent.
    pub async fn answer(&self, call_id: &str, answered_at: i64) -> Result<Grant, BillingError> {
        let row = sqlx::query(&format!(
            "UPDATE reservations SET answered_at = $2, last_extended_at = $2, expires_at = $3 \
             WHERE call_id = $1 AND answered_at IS NULL RETURNING {RES_COLS}"
        ))
        .bind(call_id)
        .bind(answered_at)
        .bind(answered_at.max(self.now()) + self.config().reservation_ttl_ms())
        .fetch_optional(self.db().pool())
        .await?;
        match row {
            Some(row) => Ok(Grant::from_row(&row)?),
            None => self.grant(call_id).await, // answered before (or unknown)
        }
    }

    /// Extends an answered call's grant by one slice ahead of use. When the wallet can only
    /// cover part of it, the grant is extended as far as the money goes and marked final:
    /// the call must end at [`Grant::deadline`]. For a call not yet answered this only
    /// refreshes the reservation's expiry. Calling it again after a top-up lifts a final
    /// grant.
    pub async fn extend(&self, call_id: &str) -> Result<Grant, BillingError> {
        for _ in 0..RETRIES {
            let row = sqlx::query(&format!(
                "SELECT {RES_COLS}, (SELECT balance - reserved FROM wallets w \
                 WHERE w.id = r.wallet_id) AS available FROM reservations r WHERE call_id = $1"
            ))
            .bind(call_id)
            .fetch_optional(self.db().pool())
            .await?
            .ok_or_else(|| BillingError::UnknownCall(call_id.to_string()))?;
            let mut g = Grant::from_row(&row)?;
            let available: i64 = row.try_get("available")?;
            let now = self.now();
            let expires = now + self.config().reservation_ttl_ms();
            if g.answered_at.is_none() {
                sqlx::query(
                    "UPDATE reservations SET last_extended_at = $2, expires_at = $3 WHERE call_id = $1",
                )
                .bind(call_id)
                .bind(now)
                .bind(expires)
                .execute(self.db().pool())
                .await?;
                g.last_extended_at = now;
                g.expires_at = expires;
                return Ok(g);
            }
            let t = g.tariff;
            let granted_secs = g.granted_ms / 1000;
            let target = t.align_up_secs(granted_secs + self.config().slice_secs);
            let budget = g.reserved + available;
            let new_secs = t
                .max_affordable_secs(budget, self.config().max_free_call_secs)
                .unwrap_or(0)
                .min(target)
                .max(granted_secs);
            let final_units = new_secs < target;
            let extra = t.cost_of_secs(new_secs) - g.reserved;
            let mut tx = self.db().pool().begin().await?;
            let updated = sqlx::query(
                "UPDATE reservations SET amount = amount + $2, granted_ms = $3, final_units = $4, \
                 last_extended_at = $5, expires_at = $6 WHERE call_id = $1 AND granted_ms = $7",
            )
            .bind(call_id)
            .bind(extra)
            .bind(new_secs * 1000)
            .bind(i64::from(final_units))
            .bind(now)
            .bind(expires)
            .bind(g.granted_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                tx.rollback().await?; // extended or settled meanwhile
                continue;
            }
            if extra > 0 && !reserve(&mut tx, g.wallet_id, extra, now).await? {
                tx.rollback().await?;
                continue;
            }
            tx.commit().await?;
            tracing::debug!(call_id, granted_secs = new_secs, final_units, "extended");
            g.reserved += extra;
            g.granted_ms = new_secs * 1000;
            g.final_units = final_units;
            g.last_extended_at = now;
            g.expires_at = expires;
            return Ok(g);
        }
        Err(BillingError::Contention(format!("call {call_id}")))
    }

    /// Settles an ended call: charges the billable duration (answer to hangup, never
    /// beyond the grant), releases the reservation, writes one ledger row keyed by the call
    /// id and the CDR, in one transaction. Settling again returns the same CDR and changes
    /// nothing.
    pub async fn settle(&self, req: SettleRequest) -> Result<Cdr, BillingError> {
        let cdr = self
            .settle_one(
                &req.call_id,
                Only::Any,
                EndAt::At(req.ended_at),
                req.cause.as_str(),
                req.trunk.as_deref(),
                req.quality.as_ref(),
            )
            .await?;
        match cdr {
            Some(cdr) => Ok(cdr),
            None => self
                .cdr(&req.call_id)
                .await?
                .ok_or(BillingError::UnknownCall(req.call_id)),
        }
    }

    /// Settles reservations whose owner stopped extending them (a host that died),
    /// charging up to their last extension. Run by every host's janitor; each reservation
    /// is settled exactly once whoever gets there first.
    pub async fn expire_reservations(&self) -> Result<Vec<Cdr>, BillingError> {
        let now = self.now();
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT call_id FROM reservations WHERE expires_at < $1 ORDER BY expires_at LIMIT 1000",
        )
        .bind(now)
        .fetch_all(self.db().pool())
        .await?;
        let mut out = Vec::new();
        for (id,) in ids {
            if let Some(cdr) = self
                .settle_one(
                    &id,
                    Only::ExpiredBefore(now),
                    EndAt::LastExtension,
                    "node_lost",
                    None,
                    None,
                )
                .await?
            {
                tracing::warn!(call_id = %id, node = %cdr.node_id, cost = cdr.cost, "settled an expired reservation");
                out.push(cdr);
            }
        }
        Ok(out)
    }

    /// At start-up: settles the reservations this node left behind (its calls died with
    /// the previous process), charging up to their last extension.
    pub async fn settle_own_leftovers(&self) -> Result<Vec<Cdr>, BillingError> {
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT call_id FROM reservations WHERE node_id = $1")
                .bind(self.node_id())
                .fetch_all(self.db().pool())
                .await?;
        let mut out = Vec::new();
        let node = self.node_id().to_string();
        for (id,) in ids {
            if let Some(cdr) = self
                .settle_one(
                    &id,
                    Only::OwnedBy(&node),
                    EndAt::LastExtension,
                    "node_restart",
                    None,
                    None,
                )
                .await?
            {
                out.push(cdr);
            }
        }
        Ok(out)
    }

    async fn settle_one(
        &self,
        call_id: &str,
        only: Only<'_>,
        end: EndAt,
        cause: &str,
        trunk: Option<&str>,
        quality: Option<&serde_json::Value>,
    ) -> Result<Option<Cdr>, BillingError> {
        let mut tx = self.db().pool().begin().await?;
        let base = "DELETE FROM reservations WHERE call_id = $1";
        let row = match only {
            Only::Any => {
                sqlx::query(&format!("{base} RETURNING {RES_COLS}"))
                    .bind(call_id)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            Only::ExpiredBefore(t) => {
                sqlx::query(&format!("{base} AND expires_at < $2 RETURNING {RES_COLS}"))
                    .bind(call_id)
                    .bind(t)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            Only::OwnedBy(n) => {
                sqlx::query(&format!("{base} AND node_id = $2 RETURNING {RES_COLS}"))
                    .bind(call_id)
                    .bind(n)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let g = Grant::from_row(&row)?;
        let ended_at = match end {
            EndAt::At(t) => t,
            EndAt::LastExtension => g.last_extended_at,
        };
        let (duration_ms, billable_secs, cost) = match g.answered_at {
            Some(a) => {
                // Never bill past the grant: the hangup latency is ours, not the caller's.
                let d = (ended_at - a).clamp(0, g.granted_ms);
                let billed = g.tariff.billed_secs(d);
                (d, billed, g.tariff.cost_of_secs(billed).min(g.reserved))
            }
            None => (0, 0, 0),
        };
        // The CDR first: the wallet row is locked from its UPDATE to the commit, so that
        // stretch is kept to the UPDATE and the ledger row.
        let quality_text = quality.map(serde_json::Value::to_string);
        sqlx::query(&format!(
            "INSERT INTO calls ({CDR_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
             $12, $13, $14, $15, $16, $17, $18, $19)"
        ))
        .bind(call_id)
        .bind(g.wallet_id)
        .bind(&g.node_id)
        .bind(&g.caller)
        .bind(&g.callee)
        .bind(trunk)
        .bind(&g.rate_prefix)
        .bind(g.tariff.rate_per_min)
        .bind(g.tariff.connect_fee)
        .bind(g.tariff.increment_first)
        .bind(g.tariff.increment_next)
        .bind(g.created_at)
        .bind(g.answered_at)
        .bind(ended_at)
        .bind(duration_ms)
        .bind(billable_secs)
        .bind(cost)
        .bind(cause)
        .bind(quality_text)
        .execute(&mut *tx)
        .await?;
        let now = self.now();
        let (balance_after,): (i64,) = sqlx::query_as(
            "UPDATE wallets SET balance = balance - $1, reserved = reserved - $2, updated_at = $3 \
             WHERE id = $4 RETURNING balance",
        )
        .bind(cost)
        .bind(g.reserved)
        .bind(now)
        .bind(g.wallet_id)
        .fetch_one(&mut *tx)
        .await?;
        if cost > 0 {
            let inserted = sqlx::query(
                "INSERT INTO ledger (wallet_id, kind, amount, balance_after, idempotency_key, \
                 reference, reason, created_at) VALUES ($1, 'call_charge', $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(g.wallet_id)
            .bind(-cost)
            .bind(balance_after)
            .bind(format!("call:{call_id}"))
            .bind(call_id)
            .bind(format!("call to {} ({billable_secs} s)", g.callee))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Err(BillingError::IdempotencyConflict(format!("call:{call_id}")));
            }
        }
        tx.commit().await?;
        tracing::debug!(call_id, billable_secs, cost, cause, "settled");
        Ok(Some(Cdr {
            call_id: call_id.to_string(),
            wallet_id: g.wallet_id,
            node_id: g.node_id,
            caller: g.caller,
            callee: g.callee,
            trunk: trunk.map(str::to_string),
            rate_prefix: g.rate_prefix,
            tariff: g.tariff,
            created_at: g.created_at,
            answered_at: g.answered_at,
            ended_at,
            duration_ms,
            billable_secs,
            cost,
            hangup_cause: cause.to_string(),
            quality: quality.cloned(),
        }))
    }

    /// The live reservation of a call.
    pub async fn grant(&self, call_id: &str) -> Result<Grant, BillingError> {
        let row = sqlx::query(&format!(
            "SELECT {RES_COLS} FROM reservations WHERE call_id = $1"
        ))
        .bind(call_id)
        .fetch_optional(self.db().pool())
        .await?
        .ok_or_else(|| BillingError::UnknownCall(call_id.to_string()))?;
        Ok(Grant::from_row(&row)?)
    }

    /// Every live reservation (all hosts), oldest first.
    pub async fn live_grants(&self) -> Result<Vec<Grant>, BillingError> {
        let rows = sqlx::query(&format!(
            "SELECT {RES_COLS} FROM reservations ORDER BY created_at, call_id"
        ))
        .fetch_all(self.db().pool())
        .await?;
        Ok(rows.iter().map(Grant::from_row).collect::<Result<_, _>>()?)
    }

    /// The CDR of a settled call.
    pub async fn cdr(&self, call_id: &str) -> Result<Option<Cdr>, BillingError> {
        let row = sqlx::query(&format!("SELECT {CDR_COLS} FROM calls WHERE call_id = $1"))
            .bind(call_id)
            .fetch_optional(self.db().pool())
            .await?;
        Ok(row.as_ref().map(Cdr::from_row).transpose()?)
    }

    /// CDRs, newest first, optionally of one wallet.
    pub async fn cdrs(&self, wallet_id: Option<i64>, limit: i64) -> Result<Vec<Cdr>, BillingError> {
        let rows = match wallet_id {
            Some(w) => {
                sqlx::query(&format!(
                    "SELECT {CDR_COLS} FROM calls WHERE wallet_id = $1 \
                     ORDER BY ended_at DESC, call_id LIMIT $2"
                ))
                .bind(w)
                .bind(limit)
                .fetch_all(self.db().pool())
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {CDR_COLS} FROM calls ORDER BY ended_at DESC, call_id LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(self.db().pool())
                .await?
            }
        };
        Ok(rows.iter().map(Cdr::from_row).collect::<Result<_, _>>()?)
    }

    /// The total charged to a wallet by settled calls (for audits and tests).
    pub async fn cdr_cost_sum(&self, wallet_id: i64) -> Result<Micros, BillingError> {
        let (sum,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(cost), 0) AS BIGINT) FROM calls WHERE wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_one(self.db().pool())
        .await?;
        Ok(sum)
    }

    /// The sum of a wallet's live reservations (equals `wallets.reserved`).
    pub async fn reservation_sum(&self, wallet_id: i64) -> Result<Micros, BillingError> {
        let (sum,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM reservations WHERE wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_one(self.db().pool())
        .await?;
        Ok(sum)
    }
}

/// The one statement that reserves money: succeeds only if the wallet has it free.
async fn reserve(
    conn: &mut sqlx::AnyConnection,
    wallet_id: i64,
    amount: Micros,
    now: i64,
) -> Result<bool, BillingError> {
    let n = sqlx::query(
        "UPDATE wallets SET reserved = reserved + $1, updated_at = $2 \
         WHERE id = $3 AND balance - reserved >= $1",
    )
    .bind(amount)
    .bind(now)
    .bind(wallet_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
