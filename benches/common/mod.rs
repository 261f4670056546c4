//! Helpers shared by the benchmarks.
#![allow(dead_code)]

/// CPU time (user + system) of process `pid` so far, in seconds: fields 14 and 15 of
/// /proc/PID/stat, in clock ticks (100 Hz on Linux).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A free UDP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A database for a bench: pool of 20 (the benches run many tasks at once).
pub async fn open_db(url: &str) -> anyhow::Result<storage::Db> {
    Ok(storage::Db::open(
        url,
        &storage::DbOptions {
            max_connections: 20,
            ..storage::DbOptions::default()
        },
    )
    .await?)
}

/// The PostgreSQL server to bench against (PAPERCUP_BENCH_PG_URL, else
/// PAPERCUP_TEST_PG_URL), or `None` after saying how to get the PostgreSQL rows.
pub fn pg_url() -> Option<String> {
    let url = std::env::var("PAPERCUP_BENCH_PG_URL")
        .or_else(|_| std::env::var("PAPERCUP_TEST_PG_URL"))
        .ok();
    if url.is_none() {
        eprintln!("PostgreSQL skipped: set PAPERCUP_BENCH_PG_URL");
    }
    url
}
