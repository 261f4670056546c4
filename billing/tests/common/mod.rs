//! Helpers shared by the billing integration tests (each runs on SQLite and PostgreSQL).
#![allow(dead_code)]

use std::sync::Arc;

use billing::{
    Billing, BillingConfig, Clock, FakeClock, LedgerKind, Movement, NewWallet, OwnerKind, Rate,
    Tariff,
};
use storage::testing::TestDb;

/// 2026-11-21T12:00:00Z: tests start here so that effective dates are meaningful.
pub const T0: i64 = 1_795_262_400_000;

pub async fn billing(db: &TestDb, clock: Arc<dyn Clock>, node: &str) -> Billing {
    billing_with(db, clock, node, BillingConfig::default()).await
}

pub async fn billing_with(
    db: &TestDb,
    clock: Arc<dyn Clock>,
    node: &str,
    config: BillingConfig,
) -> Billing {
    Billing::new(db.db.clone(), clock, node, config)
        .await
        .expect("billing engine")
}

pub fn fake_clock() -> Arc<FakeClock> {
    Arc::new(FakeClock::new(T0))
}

pub fn tariff(rate_per_min: i64, connect_fee: i64, x: i64, y: i64) -> Tariff {
    Tariff {
        rate_per_min,
        connect_fee,
        increment_first: x,
        increment_next: y,
    }
}

pub async fn add_rate(b: &Billing, prefix: &str, country: &str, t: Tariff) {
    let rate = Rate {
        prefix: prefix.into(),
        origin_prefix: String::new(),
        country: country.into(),
        description: format!("test {prefix}"),
        tariff: t,
        effective_from: 0,
    };
    b.import_rates(&[rate], false, &mut |_, _| {})
        .await
        .expect("import rate");
}

pub async fn funded_wallet(b: &Billing, owner: &str, amount: i64) -> i64 {
    let w = b
        .create_wallet(NewWallet {
            owner_kind: OwnerKind::Company,
            owner_ref: owner.into(),
            name: owner.into(),
            allowed_countries: None,
            max_rate_per_min: None,
        })
        .await
        .expect("create wallet");
    if amount > 0 {
        b.post(Movement {
            wallet_id: w.id,
            kind: LedgerKind::Purchase,
            amount,
            idempotency_key: format!("seed:{owner}"),
            reference: None,
            reason: "test funds".into(),
        })
        .await
        .expect("fund wallet");
    }
    w.id
}

/// Asserts the wallet invariants: balance == sum(ledger), reserved == sum(reservations),
/// balance - reserved >= 0.
pub async fn assert_invariants(b: &Billing, wallet_id: i64) {
    let w = b.wallet(wallet_id).await.expect("wallet");
    assert!(w.balance - w.reserved >= 0, "overdrawn: {w:?}");
    assert_eq!(
        w.balance,
        b.ledger_sum(wallet_id).await.expect("ledger sum"),
        "balance != sum(ledger)"
    );
    assert_eq!(
        w.reserved,
        b.reservation_sum(wallet_id).await.expect("reservation sum"),
        "reserved != sum(reservations)"
    );
}
