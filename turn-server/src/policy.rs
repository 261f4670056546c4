//! Our answers to the TURN server's policy questions: per-user and total allocation
//! quotas, the peer filter, lifetimes, and the metrics of refusals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use turn::policy::{AllocationRefusal, ServerPolicy};

use crate::filter::PeerFilter;
use crate::metrics::TurnMetrics;

/// The user id inside a REST username (`"<expiry>:<user>"`): quotas count per user, not per
/// credential (every minted credential has a new expiry).
pub(crate) fn user_of(username: &str) -> &str {
    username.split_once(':').map(|(_, u)| u).unwrap_or(username)
}

#[derive(Debug)]
pub(crate) struct Policy {
    pub filter: Arc<PeerFilter>,
    pub per_user: usize,
    pub total: usize,
    pub max_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub max_nonces: usize,
    pub metrics: Arc<TurnMetrics>,
    // Never held across an await: the hook is synchronous.
    pub users: Mutex<HashMap<String, usize>>,
}

impl Policy {
    /// An allocation closed (from the server's close notifications).
    pub fn closed(&self, username: &str) {
        self.release_allocation(username);
    }

    #[cfg(test)]
    pub fn live_total(&self) -> usize {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }
}

impl ServerPolicy for Policy {
    fn reserve_allocation(&self, username: &str, src: SocketAddr) -> Result<(), AllocationRefusal> {
        let user = user_of(username);
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = users.values().sum();
        let refusal = if total >= self.total {
            Some(AllocationRefusal::InsufficientCapacity)
        } else if users.get(user).copied().unwrap_or(0) >= self.per_user {
            Some(AllocationRefusal::QuotaReached)
        } else {
            None
        };
        if let Some(r) = refusal {
            TurnMetrics::add(&self.metrics.quota_refusals, 1);
            tracing::info!(user, client = %src, refusal = ?r, "TURN allocation refused");
            return Err(r);
        }
        *users.entry(user.to_string()).or_insert(0) += 1;
        self.metrics
            .allocations_active
            .fetch_add(1, Ordering::Relaxed);
        TurnMetrics::add(&self.metrics.allocations_total, 1);
        tracing::info!(user, client = %src, "TURN allocation");
        Ok(())
    }

    fn release_allocation(&self, username: &str) {
        let user = user_of(username);
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
            self.metrics
                .allocations_active
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn allow_peer(&self, peer: SocketAddr) -> bool {
        self.filter.allows(peer.ip())
    }

    fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    fn nonce_lifetime(&self) -> Duration {
        self.nonce_lifetime
    }

    fn max_nonces(&self) -> usize {
        self.max_nonces
    }

    fn auth_failed(&self, _username: &str, src: SocketAddr) {
        TurnMetrics::add(&self.metrics.auth_failures, 1);
        tracing::debug!(client = %src, "TURN authentication failed");
    }

    fn peer_denied(&self, peer: SocketAddr) {
        TurnMetrics::add(&self.metrics.denied_peers, 1);
        tracing::debug!(%peer, "TURN peer denied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(per_user: usize, total: usize) -> Policy {
        Policy {
            filter: Arc::new(PeerFilter::new(&[], &[], &[])),
            per_user,
            total,
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            max_nonces: 10,
            metrics: Arc::new(TurnMetrics::default()),
            users: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn quotas_count_per_user_across_credentials() {
        let p = policy(2, 3);
        let src: SocketAddr = "192.0.2.1:1".parse().expect("addr");
        assert!(p.reserve_allocation("100:alice", src).is_ok());
        assert!(p.reserve_allocation("200:alice", src).is_ok());
        assert_eq!(
            p.reserve_allocation("300:alice", src),
            Err(AllocationRefusal::QuotaReached)
        );
        assert!(p.reserve_allocation("100:bob", src).is_ok());
        assert_eq!(
            p.reserve_allocation("100:carol", src),
            Err(AllocationRefusal::InsufficientCapacity)
        );
        p.closed("100:alice");
        assert!(p.reserve_allocation("300:alice", src).is_ok());
        assert_eq!(p.live_total(), 3);
        let m = p.metrics.snapshot();
        assert_eq!(
            (m.allocations_active, m.allocations_total, m.quota_refusals),
            (3, 4, 2)
        );
    }
}
