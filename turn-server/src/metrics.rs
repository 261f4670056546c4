//! Counters of the TURN relay, exported by the web crate.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

/// Live counters (relaxed atomics: figures for dashboards, not invariants).
#[derive(Debug, Default)]
pub struct TurnMetrics {
    pub(crate) allocations_active: AtomicI64,
    pub(crate) allocations_total: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) denied_peers: AtomicU64,
    pub(crate) quota_refusals: AtomicU64,
    pub(crate) packets_to_peers: AtomicU64,
    pub(crate) bytes_to_peers: AtomicU64,
    pub(crate) packets_from_peers: AtomicU64,
    pub(crate) bytes_from_peers: AtomicU64,
    pub(crate) dropped_over_bandwidth: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Allocations alive now.
    pub allocations_active: i64,
    /// Allocations created since start.
    pub allocations_total: u64,
    /// Requests whose credentials were refused.
    pub auth_failures: u64,
    /// Permissions, channels or packets refused because of the peer's address.
    pub denied_peers: u64,
    /// Allocations refused by a quota (486/508).
    pub quota_refusals: u64,
    /// Packets relayed from clients to peers.
    pub packets_to_peers: u64,
    /// Bytes relayed from clients to peers.
    pub bytes_to_peers: u64,
    /// Packets relayed from peers to clients.
    pub packets_from_peers: u64,
    /// Bytes relayed from peers to clients.
    pub bytes_from_peers: u64,
    /// Packets dropped by a bandwidth limit.
    pub dropped_over_bandwidth: u64,
}

impl TurnMetrics {
    /// A copy of the counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            allocations_active: self.allocations_active.load(Ordering::Relaxed),
            allocations_total: r(&self.allocations_total),
            auth_failures: r(&self.auth_failures),
            denied_peers: r(&self.denied_peers),
            quota_refusals: r(&self.quota_refusals),
            packets_to_peers: r(&self.packets_to_peers),
            bytes_to_peers: r(&self.bytes_to_peers),
            packets_from_peers: r(&self.packets_from_peers),
            bytes_from_peers: r(&self.bytes_from_peers),
            dropped_over_bandwidth: r(&self.dropped_over_bandwidth),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
