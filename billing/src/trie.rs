//! The in-memory rate deck: a digit trie keyed by destination prefix, each node holding the
//! rates for that prefix (per caller-ID class and effective date). Lookup walks the dialled
//! digits once, O(digits), and takes the deepest node with a rate that applies.

use serde::Serialize;

use crate::tariff::Tariff;

/// One rate row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Destination prefix, E.164 digits without `+`.
    pub prefix: String,
    /// Caller-ID class: the rate applies when the caller's E.164 digits start with this
    /// (empty: any caller).
    pub origin_prefix: String,
    /// ISO 3166-1 alpha-2 of the destination, as the deck says.
    pub country: String,
    /// The deck's description ("United Kingdom - Mobile").
    pub description: String,
    /// The priced terms.
    #[serde(flatten)]
    pub tariff: Tariff,
    /// Unix milliseconds from which the rate applies (0: always).
    pub effective_from: i64,
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: [u32; 10],
    /// Indexes into `RateTrie::rates`.
    rates: Vec<u32>,
}

/// An immutable, shareable rate deck. Rebuilt (not mutated) when the rates change.
#[derive(Debug, Clone)]
pub struct RateTrie {
    nodes: Vec<Node>,
    rates: Vec<Rate>,
}

impl Default for RateTrie {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl RateTrie {
    /// Builds the trie. Rates whose prefix holds a non-digit are skipped (the importer
    /// never stores such rows).
    pub fn new(rates: Vec<Rate>) -> Self {
        let mut nodes = vec![Node::default()];
        for (i, rate) in rates.iter().enumerate() {
            if !rate.prefix.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let mut at = 0usize;
            for b in rate.prefix.bytes() {
                let d = usize::from(b - b'0');
                let next = nodes[at].children[d];
                at = if next == 0 {
                    nodes.push(Node::default());
                    let id = nodes.len() - 1;
                    nodes[at].children[d] = id as u32;
                    id
                } else {
                    next as usize
                };
            }
            nodes[at].rates.push(i as u32);
        }
        Self { nodes, rates }
    }

    /// Number of rate rows.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether the deck is empty.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// Every rate, in load order.
    pub fn rates(&self) -> &[Rate] {
        &self.rates
    }

    /// The rate for a call to `dest` (E.164 digits) from `origin` (E.164 digits of the
    /// caller ID, empty if unknown) at `now_ms`: the longest destination prefix that has
    /// an applicable rate; within it the longest matching caller-ID class, then the latest
    /// effective date not in the future.
    pub fn lookup(&self, dest: &str, origin: &str, now_ms: i64) -> Option<&Rate> {
        let mut path: [u32; 32] = [0; 32];
        let mut depth = 0usize;
        let mut at = 0usize;
        path[0] = 0;
        for b in dest.bytes() {
            if !b.is_ascii_digit() || depth + 1 >= path.len() {
                break;
            }
            let next = self.nodes[at].children[usize::from(b - b'0')];
            if next == 0 {
                break;
            }
            at = next as usize;
            depth += 1;
            path[depth] = next;
        }
        for &node in path[..=depth].iter().rev() {
            let best = self.nodes[node as usize]
                .rates
                .iter()
                .map(|&i| &self.rates[i as usize])
                .filter(|r| r.effective_from <= now_ms && origin.starts_with(&r.origin_prefix))
                .max_by_key(|r| (r.origin_prefix.len(), r.effective_from));
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(prefix: &str, origin: &str, per_min: i64, from: i64) -> Rate {
        Rate {
            prefix: prefix.into(),
            origin_prefix: origin.into(),
            country: String::new(),
            description: format!("{prefix}/{origin}@{from}"),
            tariff: Tariff {
                rate_per_min: per_min,
                connect_fee: 0,
                increment_first: 60,
                increment_next: 60,
            },
            effective_from: from,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RateTrie::new(vec![
            rate("44", "", 100, 0),
            rate("4420", "", 200, 0),
            rate("447", "", 300, 0),
        ]);
        let get = |n: &str| t.lookup(n, "", 0).map(|r| r.tariff.rate_per_min);
        assert_eq!(get("442071234567"), Some(200));
        assert_eq!(get("447400123456"), Some(300));
        assert_eq!(get("441611234567"), Some(100));
        assert_eq!(get("33123456789"), None);
        assert_eq!(get(""), None);
    }

    #[test]
    fn caller_id_class_narrows_within_a_prefix() {
        let t = RateTrie::new(vec![
            rate("44", "", 100, 0),
            rate("44", "1", 50, 0),
            rate("4420", "33", 70, 0),
        ]);
        let get = |n: &str, o: &str| t.lookup(n, o, 0).map(|r| r.tariff.rate_per_min);
        assert_eq!(get("442071234567", "14155550000"), Some(50));
        assert_eq!(get("442071234567", "33123456789"), Some(70));
        // 4420 has only a French-origin rate: a German caller falls back to 44.
        assert_eq!(get("442071234567", "4930123456"), Some(100));
        assert_eq!(get("442071234567", ""), Some(100));
    }

    #[test]
    fn effective_dates_apply_in_time() {
        let t = RateTrie::new(vec![rate("1", "", 10, 0), rate("1", "", 20, 1_000)]);
        assert_eq!(
            t.lookup("14155550000", "", 999)
                .map(|r| r.tariff.rate_per_min),
            Some(10)
        );
        assert_eq!(
            t.lookup("14155550000", "", 1_000)
                .map(|r| r.tariff.rate_per_min),
            Some(20)
        );
        let future_only = RateTrie::new(vec![rate("1", "", 20, 5_000)]);
        assert!(future_only.lookup("14155550000", "", 0).is_none());
    }
}
