//! The rate deck and destination policy in the database, and their in-memory copies.

use std::sync::Arc;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::e164::{normalize, E164};
use crate::error::Refusal;
use crate::money::Micros;
use crate::tariff::Tariff;
use crate::trie::{Rate, RateTrie};
use crate::wallet::Wallet;
use crate::{Billing, BillingError};

const RATE_COLS: &str = "prefix, origin_prefix, country, description, rate_per_min, connect_fee, \
     increment_first, increment_next, effective_from";
/// Rows per INSERT statement (9 parameters each; well under both backends' limits).
const BATCH: usize = 500;

/// What an import wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    /// Rate rows written (inserted or updated).
    pub written: usize,
    /// Rows deleted first (`--replace`).
    pub deleted: u64,
    /// Rate rows in the deck afterwards.
    pub total: i64,
}

/// A priced destination, as shown before a call.
#[derive(Debug, Clone, Serialize)]
pub struct RateQuote {
    /// The number in E.164.
    pub number: String,
    /// Its country, if known.
    pub country: Option<String>,
    /// The rate that applies.
    pub rate: Rate,
}

/// A blocked destination prefix.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedPrefix {
    /// E.164 digits.
    pub prefix: String,
    /// Why.
    pub reason: String,
    /// Unix ms.
    pub created_at: i64,
}

fn rate_from_row(row: &AnyRow) -> Result<Rate, sqlx::Error> {
    Ok(Rate {
        prefix: row.try_get("prefix")?,
        origin_prefix: row.try_get("origin_prefix")?,
        country: row.try_get("country")?,
        description: row.try_get("description")?,
        tariff: Tariff::from_row(row)?,
        effective_from: row.try_get("effective_from")?,
    })
}

impl Billing {
    /// Writes a parsed deck in one transaction: all of it or nothing. Rows with the same
    /// (prefix, caller class, effective date) are replaced; `replace` deletes the whole
    /// deck first. `progress(written, total)` is called after each batch.
    pub async fn import_rates(
        &self,
        rates: &[Rate],
        replace: bool,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<ImportSummary, BillingError> {
        let mut tx = self.db().pool().begin().await?;
        let deleted = if replace {
            sqlx::query("DELETE FROM rates")
                .execute(&mut *tx)
                .await?
                .rows_affected()
        } else {
            0
        };
        let mut written = 0;
        for chunk in rates.chunks(BATCH) {
            let mut sql = format!("INSERT INTO rates ({RATE_COLS}) VALUES ");
            for i in 0..chunk.len() {
                let b = i * 9;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${},${},${},${},${},${},${},${},${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9
                ));
            }
            sql.push_str(
                " ON CONFLICT (prefix, origin_prefix, effective_from) DO UPDATE SET \
                 country = excluded.country, description = excluded.description, \
                 rate_per_min = excluded.rate_per_min, connect_fee = excluded.connect_fee, \
                 increment_first = excluded.increment_first, increment_next = excluded.increment_next",
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(&r.prefix)
                    .bind(&r.origin_prefix)
                    .bind(&r.country)
                    .bind(&r.description)
                    .bind(r.tariff.rate_per_min)
                    .bind(r.tariff.connect_fee)
                    .bind(r.tariff.increment_first)
                    .bind(r.tariff.increment_next)
                    .bind(r.effective_from);
            }
            q.execute(&mut *tx).await?;
            written += chunk.len();
            progress(written, rates.len());
        }
        storage::bump(&mut tx, self.db().backend(), storage::Topic::Rates).await?;
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM rates")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        self.reload_rates().await?;
        Ok(ImportSummary {
            written,
            deleted,
            total,
        })
    }

    /// Reloads the in-memory deck from the database (after an import by another process).
    pub async fn reload_rates(&self) -> Result<usize, BillingError> {
        let rows = sqlx::query(&format!(
            "SELECT {RATE_COLS} FROM rates ORDER BY prefix, origin_prefix, effective_from"
        ))
        .fetch_all(self.db().pool())
        .await?;
        let rates = rows
            .iter()
            .map(rate_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let n = rates.len();
        let trie = Arc::new(RateTrie::new(rates));
        *self
            .inner
            .rates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = trie;
        Ok(n)
    }

    /// The in-memory deck.
    pub fn rate_trie(&self) -> Arc<RateTrie> {
        self.inner
            .rates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Rates from the database, optionally those whose prefix starts with `prefix`.
    pub async fn list_rates(
        &self,
        prefix: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Rate>, BillingError> {
        let pattern = format!("{}%", prefix.unwrap_or("").trim_start_matches('+'));
        let rows = sqlx::query(&format!(
            "SELECT {RATE_COLS} FROM rates WHERE prefix LIKE $1 \
             ORDER BY prefix, origin_prefix, effective_from LIMIT $2"
        ))
        .bind(pattern)
        .bind(limit)
        .fetch_all(self.db().pool())
        .await?;
        Ok(rows.iter().map(rate_from_row).collect::<Result<_, _>>()?)
    }

    /// Normalises a dialled number and finds its rate now. `caller` (E.164 or empty)
    /// selects caller-ID class rates.
    pub fn quote(&self, dialled: &str, caller: &str) -> Result<RateQuote, Refusal> {
        let number = normalize(dialled, self.config().default_country).map_err(|e| {
            Refusal::InvalidNumber {
                reason: e.to_string(),
            }
        })?;
        let rate = self.rate_for(&number, caller)?;
        Ok(RateQuote {
            number: number.number.clone(),
            country: number.country.clone(),
            rate,
        })
    }

    pub(crate) fn rate_for(&self, number: &E164, caller: &str) -> Result<Rate, Refusal> {
        let origin = caller.trim_start_matches('+');
        self.rate_trie()
            .lookup(number.digits(), origin, self.now())
            .cloned()
            .ok_or_else(|| Refusal::NoRate {
                number: number.number.clone(),
            })
    }

    /// Applies the destination policy: global block-list, the wallet's country
    /// allow-list, and the maximum price per minute.
    pub(crate) fn check_policy(
        &self,
        wallet: &Wallet,
        number: &E164,
        rate: &Rate,
    ) -> Result<(), Refusal> {
        let blocked = self
            .inner
            .blocked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(p) = blocked
            .iter()
            .find(|p| number.digits().starts_with(p.as_str()))
        {
            return Err(Refusal::Blocked {
                number: number.number.clone(),
                prefix: p.clone(),
            });
        }
        if let Some(allowed) = &wallet.allowed_countries {
            let country = number
                .country
                .clone()
                .unwrap_or_else(|| rate.country.clone());
            if !allowed.contains(&country) {
                return Err(Refusal::CountryNotAllowed { country });
            }
        }
        let max: Micros = wallet
            .max_rate_per_min
            .unwrap_or(self.config().max_rate_per_min);
        if rate.tariff.rate_per_min > max {
            return Err(Refusal::RateTooHigh {
                rate_per_min: rate.tariff.rate_per_min,
                max_per_min: max,
            });
        }
        Ok(())
    }

    /// Adds a prefix to the global block-list.
    pub async fn block_prefix(&self, prefix: &str, reason: &str) -> Result<(), BillingError> {
        let p = prefix.trim().trim_start_matches('+');
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BillingError::Invalid(format!(
                "prefix {prefix:?} is not E.164 digits"
            )));
        }
        let mut tx = self.db().pool().begin().await?;
        sqlx::query(
            "INSERT INTO blocked_prefixes (prefix, reason, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (prefix) DO UPDATE SET reason = excluded.reason",
        )
        .bind(p)
        .bind(reason)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        storage::bump(&mut tx, self.db().backend(), storage::Topic::Policy).await?;
        tx.commit().await?;
        self.reload_policy().await?;
        Ok(())
    }

    /// Removes a prefix from the block-list; false if it was not there.
    pub async fn unblock_prefix(&self, prefix: &str) -> Result<bool, BillingError> {
        let mut tx = self.db().pool().begin().await?;
        let n = sqlx::query("DELETE FROM blocked_prefixes WHERE prefix = $1")
            .bind(prefix.trim().trim_start_matches('+'))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        storage::bump(&mut tx, self.db().backend(), storage::Topic::Policy).await?;
        tx.commit().await?;
        self.reload_policy().await?;
        Ok(n > 0)
    }

    /// The block-list.
    pub async fn blocked_prefixes(&self) -> Result<Vec<BlockedPrefix>, BillingError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT prefix, reason, created_at FROM blocked_prefixes ORDER BY prefix",
        )
        .fetch_all(self.db().pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(prefix, reason, created_at)| BlockedPrefix {
                prefix,
                reason,
                created_at,
            })
            .collect())
    }

    /// Reloads the block-list from the database.
    pub async fn reload_policy(&self) -> Result<usize, BillingError> {
        let list: Vec<String> = self
            .blocked_prefixes()
            .await?
            .into_iter()
            .map(|b| b.prefix)
            .collect();
        let n = list.len();
        *self
            .inner
            .blocked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(list);
        Ok(n)
    }
}
