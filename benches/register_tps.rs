//! REGISTER transactions per second with digest authentication: the SIP core in this
//! process (UDP on loopback, seats in SQLite or PostgreSQL), sipp (Debian's sip-tester) as
//! the load generator in another process, one seat re-registering over and over (sipp 3.6
//! cannot take digest users from an injection file; 1 000 other seats fill the table). One
//! registration = REGISTER → 401 → REGISTER with credentials → 200 (two transactions,
//! one nonce, one HA1 lookup, one binding upsert).
//!
//! Run: `cargo bench --bench register_tps` (PostgreSQL too when PAPERCUP_BENCH_PG_URL or
//! PAPERCUP_TEST_PG_URL names a server; scripts/bench starts one).

mod common;
use common::{cpu_secs, free_port};

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use signaling::{SipConfig, SipServer};

const SEATS: usize = 1_000;
const PASSWORD: &str = "bench-password";

async fn run(url: &str, label: &str, rates: &[u32]) -> anyhow::Result<()> {
    let db = common::open_db(url).await?;
    // Seats of this run (a fresh prefix: PostgreSQL keeps earlier runs' rows).
    let run_id: u32 = rand::random::<u32>() % 1_000_000;
    let now = 1_000i64;
    let (wallet,): (i64,) = sqlx::query_as(
        "INSERT INTO wallets (owner_kind, owner_ref, name, currency, created_at, updated_at) \
         VALUES ('company', $1, 'bench', 'USD', $2, $2) RETURNING id",
    )
    .bind(format!("bench-{run_id}"))
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    for i in 0..SEATS {
        let user = format!("b{run_id}u{i}");
        signaling::store::create_seat(&db, &user, wallet, PASSWORD, "papercup", "").await?;
    }
    let seat = format!("b{run_id}u0");

    let port = free_port();
    let mut cfg = SipConfig {
        udp: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        tcp: Vec::new(),
        ..SipConfig::default()
    };
    cfg.abuse.rate_per_sec = 0; // one source sends everything
    cfg.registrar.node_id = "bench".into();
    let server = SipServer::start(cfg, db.clone()).await?;
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/register_bench.xml");

    for &rate in rates {
        let calls = rate * 10;
        let me = std::process::id();
        let before_cpu = cpu_secs(me);
        let before_ok = server.metrics().snapshot().registrations;
        let start = Instant::now();
        let out = tokio::task::spawn_blocking({
            let seat = seat.clone();
            move || {
                Command::new("sipp")
                    .arg(format!("127.0.0.1:{port}"))
                    .args(["-sf", scenario, "-s", &seat, "-au", &seat, "-ap", PASSWORD])
                    .args(["-i", "127.0.0.1", "-nostdin", "-r", &rate.to_string()])
                    .args(["-m", &calls.to_string(), "-l", "2000", "-timeout", "60"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
            }
        })
        .await??;
        let elapsed = start.elapsed();
        let cpu = cpu_secs(me) - before_cpu;
        let ok = server.metrics().snapshot().registrations - before_ok;
        println!(
            "| {label} | {rate}/s offered × {calls} | {ok} | {:.1} s | {:.0} reg/s | {:.2} s | {:.0} ms | {} |",
            elapsed.as_secs_f64(),
            ok as f64 / elapsed.as_secs_f64(),
            cpu,
            cpu * 1000.0 / (ok.max(1) as f64) * 1000.0,
            if out.success() { "0 failed" } else { "some failed (sipp exit ≠ 0)" },
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    server.shutdown().await;
    db.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!("| backend | load (sipp) | registrations | wall | throughput | server CPU | CPU per 1 000 registrations | result |");
    println!("|---|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    run(&url, "SQLite (file, WAL)", &[500, 1000, 2000]).await?;
    if let Some(url) = common::pg_url() {
        run(&url, "PostgreSQL (loopback)", &[500, 1000, 2000]).await?;
    }
    Ok(())
}
