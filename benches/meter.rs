//! Meter CPU with 10 000 live calls: one simulated hour of the sans-IO scheduler, every
//! extension answered at once with a new 60 s grant (the database is measured by the
//! billing_cycles bench), a tenth of the calls on final units and hung up.
//!
//! Run: `cargo bench --bench meter`

use std::time::Instant;

use billing::{Grant, Meter, MeterEvent, Tariff};

const CALLS: usize = 10_000;
const HOUR_MS: i64 = 3_600_000;

fn grant(i: usize, answered_at: i64, granted_ms: i64, final_units: bool) -> Grant {
    Grant {
        call_id: format!("call-{i}"),
        wallet_id: (i % 100) as i64,
        node_id: "bench".into(),
        caller: String::new(),
        callee: "+442071234567".into(),
        rate_prefix: "44".into(),
        tariff: Tariff {
            rate_per_min: 12_000,
            connect_fee: 0,
            increment_first: 1,
            increment_next: 1,
        },
        reserved: 0,
        granted_ms,
        final_units,
        created_at: answered_at,
        answered_at: Some(answered_at),
        last_extended_at: answered_at,
        expires_at: answered_at,
    }
}

fn main() {
    let mut meter = Meter::new(15_000, 45_000);
    let mut grants: Vec<i64> = vec![60_000; CALLS];
    // Answers spread over the first minute, as in a real busy hour.
    let t = Instant::now();
    for i in 0..CALLS {
        let answered = (i as i64 * 60_000) / CALLS as i64;
        meter.track(&grant(i, answered, 60_000, false), answered);
    }
    let track_us = t.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
    let (mut extends, mut hangups, mut wakeups) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    let mut now = 0;
    while let Some(at) = meter.next_timeout() {
        if at > HOUR_MS {
            break;
        }
        now = at;
        wakeups += 1;
        while let Some(ev) = meter.poll(now) {
            match ev {
                MeterEvent::Extend { call_id } => {
                    extends += 1;
                    let i: usize = call_id[5..].parse().unwrap_or(0);
                    grants[i] += 60_000;
                    // Every tenth call's wallet runs dry after 10 minutes.
                    let final_units = i % 10 == 0 && grants[i] >= 600_000;
                    let answered = (i as i64 * 60_000) / CALLS as i64;
                    meter.extended(&grant(i, answered, grants[i], final_units), now);
                }
                MeterEvent::HangUp { .. } => hangups += 1,
            }
        }
    }
    let cpu = t.elapsed();
    let simulated_s = now as f64 / 1e3;
    println!("| what | result |");
    println!("|---|---|");
    println!(
        "| live calls | {CALLS} ({} at the end of the hour) |",
        meter.len()
    );
    println!("| simulated | {simulated_s:.0} s: {extends} extensions, {hangups} hangups, {wakeups} timer wake-ups |");
    println!(
        "| scheduler CPU for the hour | {:.1} ms |",
        cpu.as_secs_f64() * 1e3
    );
    println!(
        "| CPU per simulated second | {:.1} µs ({:.4} % of one core) |",
        cpu.as_secs_f64() * 1e6 / simulated_s,
        cpu.as_secs_f64() / simulated_s * 100.0
    );
    println!(
        "| per extension handled | {:.2} µs |",
        cpu.as_secs_f64() * 1e6 / extends.max(1) as f64
    );
    println!("| track a new call | {track_us:.2} µs |");
}
