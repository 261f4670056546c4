//! Wallets and the ledger: every movement of money is one ledger row with a unique
//! idempotency key, written in the same transaction as the balance change, so
//! `balance == sum(ledger.amount)` always holds and replaying a movement changes nothing.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::money::Micros;
use crate::{Billing, BillingError};

/// Who owns a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerKind {
    /// An individual caller.
    Person,
    /// A company; all its seats share the wallet.
    Company,
}

impl OwnerKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Person => "person",
            OwnerKind::Company => "company",
        }
    }

    /// Parses `person` or `company`.
    pub fn parse(s: &str) -> Result<Self, BillingError> {
        match s {
            "person" => Ok(OwnerKind::Person),
            "company" => Ok(OwnerKind::Company),
            other => Err(BillingError::Invalid(format!(
                "owner kind {other:?} is neither person nor company"
            ))),
        }
    }
}

/// A prepaid wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wallet {
    /// Id.
    pub id: i64,
    /// Person or company.
    pub owner_kind: OwnerKind,
    /// The owner's id in the account system (user id, company id).
    pub owner_ref: String,
    /// Display name.
    pub name: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Money in the wallet, micro-units.
    pub balance: Micros,
    /// Held by live calls, micro-units.
    pub reserved: Micros,
    /// ISO countries that may be called; `None`: all.
    pub allowed_countries: Option<Vec<String>>,
    /// The wallet's own maximum price per minute; `None`: the global one.
    pub max_rate_per_min: Option<Micros>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl Wallet {
    /// What new calls can still reserve.
    pub fn available(&self) -> Micros {
        self.balance - self.reserved
    }

    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let countries: Option<String> = row.try_get("allowed_countries")?;
        let kind: String = row.try_get("owner_kind")?;
        Ok(Self {
            id: row.try_get("id")?,
            owner_kind: OwnerKind::parse(&kind).map_err(|e| sqlx::Error::Decode(e.into()))?,
            owner_ref: row.try_get("owner_ref")?,
            name: row.try_get("name")?,
            currency: row.try_get("currency")?,
            balance: row.try_get("balance")?,
            reserved: row.try_get("reserved")?,
            allowed_countries: countries.map(|c| {
                c.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
            max_rate_per_min: row.try_get("max_rate_per_min")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A wallet to create.
#[derive(Debug, Clone)]
pub struct NewWallet {
    /// Person or company.
    pub owner_kind: OwnerKind,
    /// The owner's id.
    pub owner_ref: String,
    /// Display name.
    pub name: String,
    /// Country allow-list (ISO codes); `None`: all.
    pub allowed_countries: Option<Vec<String>>,
    /// Own maximum price per minute.
    pub max_rate_per_min: Option<Micros>,
}

/// The kind of a ledger movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// Money paid in (positive).
    Purchase,
    /// A settled call (negative).
    CallCharge,
    /// Money given back (either sign: to the wallet, or back to the card).
    Refund,
    /// Free credit (positive).
    Bonus,
    /// An operator's correction (either sign).
    Adjustment,
}

impl LedgerKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Purchase => "purchase",
            LedgerKind::CallCharge => "call_charge",
            LedgerKind::Refund => "refund",
            LedgerKind::Bonus => "bonus",
            LedgerKind::Adjustment => "adjustment",
        }
    }

    /// Parses a stored or typed name.
    pub fn parse(s: &str) -> Result<Self, BillingError> {
        Ok(match s {
            "purchase" => LedgerKind::Purchase,
            "call_charge" => LedgerKind::CallCharge,
            "refund" => LedgerKind::Refund,
            "bonus" => LedgerKind::Bonus,
            "adjustment" => LedgerKind::Adjustment,
            other => {
                return Err(BillingError::Invalid(format!(
                    "unknown ledger kind {other:?} (purchase, refund, bonus, adjustment)"
                )))
            }
        })
    }
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// Id.
    pub id: i64,
    /// Wallet.
    pub wallet_id: i64,
    /// Kind.
    pub kind: LedgerKind,
    /// Signed amount, micro-units.
    pub amount: Micros,
    /// Wallet balance right after this movement.
    pub balance_after: Micros,
    /// Unique per movement.
    pub idempotency_key: String,
    /// Call id, payment event id, …
    pub reference: Option<String>,
    /// Why.
    pub reason: String,
    /// Unix ms.
    pub created_at: i64,
}

impl LedgerEntry {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let kind: String = row.try_get("kind")?;
        Ok(Self {
            id: row.try_get("id")?,
            wallet_id: row.try_get("wallet_id")?,
            kind: LedgerKind::parse(&kind).map_err(|e| sqlx::Error::Decode(e.into()))?,
            amount: row.try_get("amount")?,
            balance_after: row.try_get("balance_after")?,
            idempotency_key: row.try_get("idempotency_key")?,
            reference: row.try_get("reference")?,
            reason: row.try_get("reason")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A movement to post.
#[derive(Debug, Clone)]
pub struct Movement {
    /// Wallet.
    pub wallet_id: i64,
    /// Kind (not `CallCharge`: calls are charged by settlement).
    pub kind: LedgerKind,
    /// Signed amount, micro-units.
    pub amount: Micros,
    /// Unique per movement: a payment event id, an adjustment id. Posting the same key
    /// again changes nothing.
    pub idempotency_key: String,
    /// Payment id or other reference.
    pub reference: Option<String>,
    /// Why (required for operator adjustments).
    pub reason: String,
}

/// The result of posting a movement.
#[derive(Debug, Clone, Serialize)]
pub struct Posted {
    /// The ledger row (the earlier one when replayed).
    pub entry: LedgerEntry,
    /// False when the idempotency key had been posted before and nothing changed.
    pub applied: bool,
}

const WALLET_COLS: &str = "id, owner_kind, owner_ref, name, currency, balance, reserved, \
     allowed_countries, max_rate_per_min, created_at, updated_at";
const LEDGER_COLS: &str =
    "id, wallet_id, kind, amount, balance_after, idempotency_key, reference, reason, created_at";

fn clean_countries(list: &Option<Vec<String>>) -> Result<Option<String>, BillingError> {
    let Some(list) = list else { return Ok(None) };
    let mut out = Vec::new();
    for c in list {
        let c = c.trim().to_ascii_uppercase();
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(BillingError::Invalid(format!(
                "country {c:?} is not an ISO 3166-1 alpha-2 code"
            )));
        }
        out.push(c);
    }
    Ok(Some(out.join(",")))
}

impl Billing {
    /// Creates a wallet with a zero balance.
    pub async fn create_wallet(&self, w: NewWallet) -> Result<Wallet, BillingError> {
        if w.owner_ref.trim().is_empty() {
            return Err(BillingError::Invalid("the owner reference is empty".into()));
        }
        if let Some(m) = w.max_rate_per_min {
            if m < 0 {
                return Err(BillingError::Invalid(
                    "max rate per minute is negative".into(),
                ));
            }
        }
        let countries = clean_countries(&w.allowed_countries)?;
        let now = self.now();
        let row = sqlx::query(&format!(
            "INSERT INTO wallets (owner_kind, owner_ref, name, currency, allowed_countries, \
             max_rate_per_min, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (owner_kind, owner_ref) DO NOTHING RETURNING {WALLET_COLS}"
        ))
        .bind(w.owner_kind.as_str())
        .bind(w.owner_ref.trim())
        .bind(&w.name)
        .bind(&self.inner.config.currency)
        .bind(countries)
        .bind(w.max_rate_per_min)
        .bind(now)
        .fetch_optional(self.db().pool())
        .await?;
        match row {
            Some(row) => Ok(Wallet::from_row(&row)?),
            None => {
                let (id,): (i64,) = sqlx::query_as(
                    "SELECT id FROM wallets WHERE owner_kind = $1 AND owner_ref = $2",
                )
                .bind(w.owner_kind.as_str())
                .bind(w.owner_ref.trim())
                .fetch_one(self.db().pool())
                .await?;
                Err(BillingError::WalletExists {
                    kind: w.owner_kind.as_str().into(),
                    owner: w.owner_ref,
                    id,
                })
            }
        }
    }

    /// Changes a wallet's destination policy. `None` leaves a setting as it is;
    /// `Some(None)` clears it.
    pub async fn update_wallet_policy(
        &self,
        wallet_id: i64,
        allowed_countries: Option<Option<Vec<String>>>,
        max_rate_per_min: Option<Option<Micros>>,
    ) -> Result<Wallet, BillingError> {
        let mut wallet = self.wallet(wallet_id).await?;
        if let Some(c) = allowed_countries {
            wallet.allowed_countries = clean_countries(&c)?.map(|s| {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            });
        }
        if let Some(m) = max_rate_per_min {
            wallet.max_rate_per_min = m;
        }
        let mut tx = self.db().pool().begin().await?;
        sqlx::query(
            "UPDATE wallets SET allowed_countries = $1, max_rate_per_min = $2, updated_at = $3 \
             WHERE id = $4",
        )
        .bind(wallet.allowed_countries.as_ref().map(|c| c.join(",")))
        .bind(wallet.max_rate_per_min)
        .bind(self.now())
        .bind(wallet_id)
        .execute(&mut *tx)
        .await?;
        storage::bump(&mut tx, self.db().backend(), storage::Topic::Wallets).await?;
        tx.commit().await?;
        self.wallet(wallet_id).await
    }

    /// One wallet.
    pub async fn wallet(&self, id: i64) -> Result<Wallet, BillingError> {
        let row = sqlx::query(&format!("SELECT {WALLET_COLS} FROM wallets WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db().pool())
            .await?
            .ok_or(BillingError::UnknownWallet(id))?;
        Ok(Wallet::from_row(&row)?)
    }

    /// Every wallet, by id.
    pub async fn wallets(&self) -> Result<Vec<Wallet>, BillingError> {
        let rows = sqlx::query(&format!("SELECT {WALLET_COLS} FROM wallets ORDER BY id"))
            .fetch_all(self.db().pool())
            .await?;
        Ok(rows
            .iter()
            .map(Wallet::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The newest `limit` ledger rows of a wallet, newest first.
    pub async fn ledger(
        &self,
        wallet_id: i64,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, BillingError> {
        let rows = sqlx::query(&format!(
            "SELECT {LEDGER_COLS} FROM ledger WHERE wallet_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(wallet_id)
        .bind(limit)
        .fetch_all(self.db().pool())
        .await?;
        Ok(rows
            .iter()
            .map(LedgerEntry::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The sum of a wallet's ledger (equals its balance; exposed for audits and tests).
    pub async fn ledger_sum(&self, wallet_id: i64) -> Result<Micros, BillingError> {
        let (sum,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger WHERE wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_one(self.db().pool())
        .await?;
        Ok(sum)
    }

    /// Posts a movement idempotently: the balance change and its ledger row commit
    /// together; a key posted before changes nothing and returns the earlier row. A debit
    /// never takes the balance below what live calls have reserved.
    pub async fn post(&self, m: Movement) -> Result<Posted, BillingError> {
        match m.kind {
            LedgerKind::CallCharge => {
                return Err(BillingError::Invalid(
                    "call charges are posted by settling the call".into(),
                ))
            }
            LedgerKind::Purchase | LedgerKind::Bonus if m.amount <= 0 => {
                return Err(BillingError::Invalid(format!(
                    "a {} must be a positive amount",
                    m.kind.as_str()
                )))
            }
            _ if m.amount == 0 => {
                return Err(BillingError::Invalid("the amount is zero".into()));
            }
            _ => {}
        }
        if m.idempotency_key.trim().is_empty() {
            return Err(BillingError::Invalid("the idempotency key is empty".into()));
        }
        let now = self.now();
        let mut tx = self.db().pool().begin().await?;
        // The write comes first: on SQLite it takes the write lock at once.
        let balance: Option<(i64,)> = sqlx::query_as(
            "UPDATE wallets SET balance = balance + $1, updated_at = $2 \
             WHERE id = $3 AND balance - reserved + $1 >= 0 RETURNING balance",
        )
        .bind(m.amount)
        .bind(now)
        .bind(m.wallet_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((balance_after,)) = balance else {
            tx.rollback().await?;
            if let Some(existing) = self.ledger_entry(&m.idempotency_key).await? {
                return self.replayed(existing, &m);
            }
            let w = self.wallet(m.wallet_id).await?;
            return Err(BillingError::InsufficientFunds {
                available: w.available(),
                requested: -m.amount,
            });
        };
        let inserted = sqlx::query(&format!(
            "INSERT INTO ledger (wallet_id, kind, amount, balance_after, idempotency_key, \
             reference, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {LEDGER_COLS}"
        ))
        .bind(m.wallet_id)
        .bind(m.kind.as_str())
        .bind(m.amount)
        .bind(balance_after)
        .bind(&m.idempotency_key)
        .bind(&m.reference)
        .bind(&m.reason)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        match inserted {
            Some(row) => {
                storage::bump(&mut tx, self.db().backend(), storage::Topic::Wallets).await?;
                tx.commit().await?;
                Ok(Posted {
                    entry: LedgerEntry::from_row(&row)?,
                    applied: true,
                })
            }
            None => {
                tx.rollback().await?;
                let existing = self
                    .ledger_entry(&m.idempotency_key)
                    .await?
                    .ok_or_else(|| BillingError::Contention("ledger".into()))?;
                self.replayed(existing, &m)
            }
        }
    }

    fn replayed(&self, existing: LedgerEntry, m: &Movement) -> Result<Posted, BillingError> {
        if existing.wallet_id == m.wallet_id
            && existing.amount == m.amount
            && existing.kind == m.kind
        {
            Ok(Posted {
                entry: existing,
                applied: false,
            })
        } else {
            Err(BillingError::IdempotencyConflict(m.idempotency_key.clone()))
        }
    }

    /// The ledger row with this idempotency key.
    pub async fn ledger_entry(&self, key: &str) -> Result<Option<LedgerEntry>, BillingError> {
        let row = sqlx::query(&format!(
            "SELECT {LEDGER_COLS} FROM ledger WHERE idempotency_key = $1"
        ))
        .bind(key)
        .fetch_optional(self.db().pool())
        .await?;
        Ok(row.as_ref().map(LedgerEntry::from_row).transpose()?)
    }
}
