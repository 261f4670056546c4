//! Papercup's billing: money, rating, wallets, the ledger, real-time credit control and
//! CDRs. Every live call is metered against a prepaid wallet and hung up at the exact
//! instant its credit ends, on one host or on many sharing a PostgreSQL database.
//!
//! Main types: [`Billing`] (the engine over a [`storage::Db`], with an in-memory
//! [`RateTrie`] and an injected [`Clock`]), [`Tariff`] (increment and cost arithmetic),
//! [`Grant`] (what a call may spend), [`Meter`] (the sans-IO per-host scheduler of
//! extensions and hangups) and its tokio driver [`meter::spawn`].
//!
//! How a call is billed (see `BILLING.md`): [`Billing::authorize`] reserves the first
//! grant with one conditional `UPDATE` (no read-modify-write, so no overdraft under any
//! concurrency); [`Billing::answer`] starts the clock; the [`Meter`] asks for
//! [`Billing::extend`] ahead of use, and when a wallet can only cover part of the next
//! slice the grant becomes *final units* and the meter emits `HangUp` at the instant they
//! end; [`Billing::settle`] charges the billable duration, writes one ledger entry keyed by
//! the call id and the CDR, idempotently. Reservations carry the owning node id and an
//! expiry; [`Billing::expire_reservations`] settles those of dead hosts.

#![forbid(unsafe_code)]

pub mod clock;
pub mod e164;
mod error;
pub mod import;
pub mod meter;
pub mod money;
mod rates;
mod reservation;
pub mod tariff;
pub mod trie;
mod wallet;

use std::sync::{Arc, RwLock};

pub use clock::{Clock, FakeClock, SystemClock};
pub use error::{BillingError, Refusal};
pub use meter::{HangupReason, Meter, MeterEvent};
pub use rates::{BlockedPrefix, ImportSummary, RateQuote};
pub use reservation::{AuthorizeRequest, Cdr, EndCause, Grant, SettleRequest};
pub use tariff::Tariff;
pub use trie::{Rate, RateTrie};
pub use wallet::{LedgerEntry, LedgerKind, Movement, NewWallet, OwnerKind, Posted, Wallet};

use storage::Db;

/// Billing settings (the `[billing]` section of `papercup.toml`).
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// ISO 4217 code of new wallets and of the rate deck.
    pub currency: String,
    /// Country in which national numbers are read (`020 7123 4567` in GB).
    pub default_country: Option<phonenumber::country::Id>,
    /// Talk time of the first grant, at least one billing block (seconds).
    pub first_grant_secs: i64,
    /// Talk time added by each extension (seconds).
    pub slice_secs: i64,
    /// Extend when less than this much granted talk time is left (seconds).
    pub lead_secs: i64,
    /// Refuse destinations dearer than this per minute (a wallet may set its own).
    pub max_rate_per_min: money::Micros,
    /// Longest grant for a free destination (seconds).
    pub max_free_call_secs: i64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            default_country: Some(phonenumber::country::Id::US),
            first_grant_secs: 60,
            slice_secs: 60,
            lead_secs: 15,
            max_rate_per_min: 500_000,
            max_free_call_secs: 4 * 3600,
        }
    }
}

impl BillingConfig {
    /// How long a reservation lives without an extension before another host may settle
    /// it as lost: two slices.
    pub fn reservation_ttl_ms(&self) -> i64 {
        2 * self.slice_secs * 1000
    }
}

/// The billing engine. Cheap to clone; one per process.
#[derive(Debug, Clone)]
pub struct Billing {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    clock: Arc<dyn Clock>,
    node_id: String,
    config: BillingConfig,
    // Swapped whole on reload; readers clone the Arc and never hold the lock across await.
    rates: RwLock<Arc<RateTrie>>,
    blocked: RwLock<Arc<Vec<String>>>,
}

impl Billing {
    /// Creates the engine and loads the rate deck and block-list.
    pub async fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        node_id: impl Into<String>,
        config: BillingConfig,
    ) -> Result<Self, BillingError> {
        let b = Self {
            inner: Arc::new(Inner {
                db,
                clock,
                node_id: node_id.into(),
                config,
                rates: RwLock::new(Arc::new(RateTrie::default())),
                blocked: RwLock::new(Arc::new(Vec::new())),
            }),
        };
        b.reload_rates().await?;
        b.reload_policy().await?;
        Ok(b)
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// This host's node id (owner of its reservations).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The settings.
    pub fn config(&self) -> &BillingConfig {
        &self.inner.config
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), BillingError> {
        let _: (i64,) = sqlx::query_as("SELECT CAST(1 AS BIGINT)")
            .fetch_one(self.db().pool())
            .await?;
        Ok(())
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }
}
