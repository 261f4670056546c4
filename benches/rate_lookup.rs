//! Rate lookup on a 100 000-prefix deck: the trie alone, and a full quote (E.164
//! normalisation with libphonenumber + trie), single thread.
//!
//! Run: `cargo bench --bench rate_lookup`

use std::hint::black_box;
use std::time::Instant;

use billing::{Rate, RateTrie, Tariff};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PREFIXES: usize = 100_000;
const LOOKUPS: usize = 2_000_000;

fn digits(rng: &mut StdRng, first: &str, len: usize) -> String {
    let mut s = first.to_string();
    while s.len() < len {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s
}

fn main() {
    let mut rng = StdRng::seed_from_u64(42);
    // Real country codes, so that full quotes see plausible numbers.
    let ccs = [
        "1", "44", "33", "49", "61", "91", "81", "39", "34", "55", "52", "7", "86", "27",
    ];
    let mut seen = std::collections::HashSet::new();
    let mut rates = Vec::with_capacity(PREFIXES);
    while rates.len() < PREFIXES {
        let cc = ccs[rng.random_range(0..ccs.len())];
        let len = rng.random_range(cc.len() + 1..=cc.len() + 6);
        let prefix = digits(&mut rng, cc, len);
        if !seen.insert(prefix.clone()) {
            continue;
        }
        rates.push(Rate {
            prefix,
            origin_prefix: String::new(),
            country: String::new(),
            description: String::new(),
            tariff: Tariff {
                rate_per_min: rng.random_range(1_000..500_000),
                connect_fee: 0,
                increment_first: 60,
                increment_next: 60,
            },
            effective_from: 0,
        });
    }
    for cc in ccs {
        rates.push(Rate {
            prefix: cc.into(),
            origin_prefix: String::new(),
            country: String::new(),
            description: String::new(),
            tariff: Tariff {
                rate_per_min: 10_000,
                connect_fee: 0,
                increment_first: 60,
                increment_next: 60,
            },
            effective_from: 0,
        });
    }
    let t = Instant::now();
    let trie = RateTrie::new(rates);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;

    let numbers: Vec<String> = (0..10_000)
        .map(|_| {
            let cc = ccs[rng.random_range(0..ccs.len())];
            digits(&mut rng, cc, 11 + cc.len().min(1))
        })
        .collect();
    // Warm up, then measure.
    let mut hits = 0usize;
    for n in &numbers {
        hits += usize::from(trie.lookup(n, "", 0).is_some());
    }
    let t = Instant::now();
    for i in 0..LOOKUPS {
        let n = &numbers[i % numbers.len()];
        if black_box(trie.lookup(black_box(n), "", 0)).is_some() {
            hits += 1;
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / LOOKUPS as f64;

    // Full quote path: normalisation dominates.
    let config = billing::BillingConfig::default();
    let quotes = 20_000;
    let t = Instant::now();
    for i in 0..quotes {
        let n = format!("+{}", numbers[i % numbers.len()]);
        if let Ok(e) = billing::e164::normalize(black_box(&n), config.default_country) {
            black_box(trie.lookup(e.digits(), "", 0));
        }
    }
    let quote_us = t.elapsed().as_secs_f64() * 1e6 / quotes as f64;

    println!("| what | result |");
    println!("|---|---|");
    println!(
        "| deck | {} prefixes ({} rates) |",
        PREFIXES + ccs.len(),
        trie.len()
    );
    println!("| trie build | {build_ms:.0} ms |");
    println!(
        "| trie lookup (longest prefix) | {ns:.0} ns/lookup over {LOOKUPS} lookups ({hits} hits) |"
    );
    println!("| E.164 normalise + lookup | {quote_us:.1} µs/quote over {quotes} quotes |");
}
