//! Credit-control throughput: authorize + answer + extend + settle cycles per second with
//! 100 concurrent calls sharing one wallet, on SQLite and on PostgreSQL.
//!
//! Run: `cargo bench --bench billing_cycles` (PostgreSQL when PAPERCUP_BENCH_PG_URL or
//! PAPERCUP_TEST_PG_URL names a server; scripts/bench starts one).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use billing::{
    AuthorizeRequest, Billing, BillingConfig, EndCause, LedgerKind, Movement, NewWallet, OwnerKind,
    Rate, SettleRequest, SystemClock, Tariff,
};

const CALLS: usize = 100;
const SECONDS: u64 = 10;

async fn run(url: &str, label: &str) -> anyhow::Result<()> {
    let db = common::open_db(url).await?;
    let b = Billing::new(db, Arc::new(SystemClock), "bench", BillingConfig::default()).await?;
    let rate = Rate {
        prefix: "44".into(),
        origin_prefix: String::new(),
        country: "GB".into(),
        description: "bench".into(),
        tariff: Tariff {
            rate_per_min: 12_000,
            connect_fee: 0,
            increment_first: 1,
            increment_next: 1,
        },
        effective_from: 0,
    };
    b.import_rates(&[rate], false, &mut |_, _| {}).await?;
    let w = b
        .create_wallet(NewWallet {
            owner_kind: OwnerKind::Company,
            owner_ref: format!("bench-{}", rand::random::<u64>()),
            name: "bench".into(),
            allowed_countries: None,
            max_rate_per_min: None,
        })
        .await?;
    b.post(Movement {
        wallet_id: w.id,
        kind: LedgerKind::Purchase,
        amount: 1_000_000_000_000,
        idempotency_key: format!("bench-{}", rand::random::<u64>()),
        reference: None,
        reason: "bench".into(),
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CALLS {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("bench-{t}-{n}-{}", rand::random::<u32>());
                b.authorize(AuthorizeRequest {
                    call_id: id.clone(),
                    wallet_id: w.id,
                    caller: String::new(),
                    callee: "+442071234567".into(),
                })
                .await?;
                let now = b.clock().now_ms();
                b.answer(&id, now).await?;
                b.extend(&id).await?;
                b.settle(SettleRequest {
                    call_id: id,
                    ended_at: now + 30_000,
                    cause: EndCause::Normal,
                    trunk: None,
                    quality: None,
                })
                .await?;
                n += 1;
            }
            Ok::<u64, billing::BillingError>(n)
        }));
    }
    let mut cycles = 0;
    for t in tasks {
        cycles += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let wallet = b.wallet(w.id).await?;
    assert_eq!(wallet.balance, b.ledger_sum(w.id).await?);
    assert_eq!(wallet.reserved, 0);
    println!(
        "| {label} | {CALLS} | {cycles} | {:.0} cycles/s | {:.1} ms |",
        cycles as f64 / secs,
        secs * 1e3 * CALLS as f64 / cycles as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("| backend | concurrent calls (one wallet) | cycles in {SECONDS} s | throughput | mean cycle latency |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    run(
        &format!("sqlite://{}/bench.db", dir.path().display()),
        "SQLite (file, WAL)",
    )
    .await?;
    if let Some(url) = common::pg_url() {
        run(&url, "PostgreSQL (loopback)").await?;
    }
    Ok(())
}
