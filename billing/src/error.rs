//! The billing crate's errors and the reasons a call is refused.

use serde::Serialize;

use crate::e164::NumberError;
use crate::import::DeckError;
use crate::money::{format_amount, Micros, MoneyError};

/// Why a call may not start (authorization refused). Shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refusal {
    /// The dialled string is not a valid phone number.
    #[error("not a valid number: {reason}")]
    InvalidNumber {
        /// Why.
        reason: String,
    },
    /// No rate covers the destination.
    #[error("no rate for {number}")]
    NoRate {
        /// The E.164 number.
        number: String,
    },
    /// The destination is on the global block-list (premium-rate, satellite…).
    #[error("calls to {number} are blocked (prefix {prefix})")]
    Blocked {
        /// The E.164 number.
        number: String,
        /// The blocked prefix that matched.
        prefix: String,
    },
    /// The wallet's country allow-list does not include the destination.
    #[error("calls to {country} are not enabled for this wallet")]
    CountryNotAllowed {
        /// ISO country of the destination.
        country: String,
    },
    /// The destination's price per minute is above the allowed maximum.
    #[error("destination costs {} per minute, above the maximum of {}", format_amount(*.rate_per_min), format_amount(*.max_per_min))]
    RateTooHigh {
        /// The destination's price per minute.
        rate_per_min: Micros,
        /// The maximum that applies.
        max_per_min: Micros,
    },
    /// The wallet cannot cover the first billing block and connect fee.
    #[error("insufficient balance: {} available, {} needed to start this call", format_amount(*.available), format_amount(*.needed))]
    InsufficientBalance {
        /// What the wallet has free (balance minus reservations).
        available: Micros,
        /// The cost of the first block plus connect fee.
        needed: Micros,
    },
}

impl Refusal {
    /// A stable machine-readable code (`"insufficient_balance"`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidNumber { .. } => "invalid_number",
            Refusal::NoRate { .. } => "no_rate",
            Refusal::Blocked { .. } => "blocked",
            Refusal::CountryNotAllowed { .. } => "country_not_allowed",
            Refusal::RateTooHigh { .. } => "rate_too_high",
            Refusal::InsufficientBalance { .. } => "insufficient_balance",
        }
    }

    /// The SIP status a desk phone gets: 402 Payment Required for money, 404 for numbers
    /// that do not exist, 403 Forbidden for policy.
    pub fn sip_status(&self) -> u16 {
        match self {
            Refusal::InsufficientBalance { .. } => 402,
            Refusal::InvalidNumber { .. } => 404,
            _ => 403,
        }
    }
}

/// Errors of the billing crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// The call may not start.
    #[error("call refused: {0}")]
    Refused(#[from] Refusal),
    /// No wallet with this id.
    #[error("no wallet with id {0}")]
    UnknownWallet(i64),
    /// A wallet for this owner already exists.
    #[error("a wallet for {kind} {owner:?} already exists (id {id})")]
    WalletExists {
        /// person or company.
        kind: String,
        /// The owner reference.
        owner: String,
        /// The existing wallet.
        id: i64,
    },
    /// No live reservation (or CDR) for this call.
    #[error("no call {0:?}")]
    UnknownCall(String),
    /// A reservation for this call id exists already.
    #[error("call {0:?} is already authorized")]
    DuplicateCall(String),
    /// A debit larger than the free balance.
    #[error("insufficient funds: {} available, {} requested", format_amount(*.available), format_amount(*.requested))]
    InsufficientFunds {
        /// Balance minus reservations.
        available: Micros,
        /// The debit asked for.
        requested: Micros,
    },
    /// The idempotency key was used before for a different movement.
    #[error("idempotency key {0:?} was already used for a different movement")]
    IdempotencyConflict(String),
    /// A bad argument (amount sign, kind, …).
    #[error("{0}")]
    Invalid(String),
    /// A malformed amount.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// A malformed number.
    #[error(transparent)]
    Number(#[from] NumberError),
    /// A rate deck with bad rows.
    #[error(transparent)]
    Deck(#[from] DeckError),
    /// Concurrent updates kept winning the race; the operation can be retried.
    #[error("too much contention on {0}, try again")]
    Contention(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

impl From<sqlx::Error> for BillingError {
    fn from(e: sqlx::Error) -> Self {
        BillingError::Storage(storage::StorageError::Sql(e))
    }
}
