//! Papercup patch: a hook through which the embedding server decides on allocations
//! (quotas), relayed peers (address filtering) and lifetimes, and learns of failed
//! authentications. See PATCHES.md.

use std::net::SocketAddr;
use std::time::Duration;

/// Why an allocation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationRefusal {
    /// 486 Allocation Quota Reached: this user has too many allocations.
    QuotaReached,
    /// 508 Insufficient Capacity: the server is full.
    InsufficientCapacity,
}

/// Decisions the server delegates to its embedder. Called inline in the read loop: no I/O.
pub trait ServerPolicy: Send + Sync {
    /// Reserves room for a new allocation of `username`; the reservation is returned with
    /// [`ServerPolicy::release_allocation`] when the allocation cannot be created, and
    /// otherwise when it closes (through `alloc_close_notify`, by the embedder).
    fn reserve_allocation(&self, username: &str, src: SocketAddr)
        -> Result<(), AllocationRefusal>;
    /// Returns a reservation whose allocation could not be created.
    fn release_allocation(&self, username: &str);
    /// Whether data may be relayed to (and permissions or channels created for) `peer`.
    fn allow_peer(&self, peer: SocketAddr) -> bool;
    /// The longest allocation lifetime granted (RFC 5766 recommends 3600 s).
    fn max_lifetime(&self) -> Duration {
        Duration::from_secs(3600)
    }
    /// How long a nonce stays valid.
    fn nonce_lifetime(&self) -> Duration {
        Duration::from_secs(3600)
    }
    /// How many outstanding nonces the server keeps at most.
    fn max_nonces(&self) -> usize {
        100_000
    }
    /// A request carried credentials that did not verify.
    fn auth_failed(&self, _username: &str, _src: SocketAddr) {}
    /// A request named a peer that [`ServerPolicy::allow_peer`] refused.
    fn peer_denied(&self, _peer: SocketAddr) {}
}
