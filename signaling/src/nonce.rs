//! Our own nonce store for server-side digest authentication.
//!
//! rsipstack only offers a `verify_digest` helper; used alone it accepts any nonce, so a
//! captured `Authorization` header can be replayed forever (RustPBX, built on it, has this
//! hole). Here every nonce is issued by us, expires after a configured lifetime
//! (→ `stale=true`, the client retries without asking its user), and each `nc` value is
//! accepted once per nonce (→ a replay is refused).
//!
//! Nonces live in this host's memory: a phone that reaches another host (or this one after
//! a restart) presenting an unknown nonce is simply challenged again with `stale=true`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// What the store says about a presented nonce and nonce count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by us, fresh, and this `nc` was not used before with it.
    Fresh,
    /// Expired or unknown: challenge again with `stale=true`.
    Stale,
    /// This `nc` was already used with this nonce (or is not a hex count): a replay.
    Replayed,
}

#[derive(Debug)]
struct Entry {
    issued: Instant,
    used_nc: HashSet<u32>,
}

/// Issued nonces; cheap to share (`Arc`).
#[derive(Debug)]
pub struct NonceStore {
    lifetime: Duration,
    capacity: usize,
    max_uses: usize,
    inner: Mutex<HashMap<String, Entry>>,
}

impl NonceStore {
    /// `lifetime`: how long a nonce is accepted; `capacity`: outstanding nonces kept at most
    /// (the oldest are dropped first when full, so a flood cannot grow memory).
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        Self {
            lifetime,
            capacity: capacity.max(16),
            max_uses: 10_000,
            inner: Mutex::new(HashMap::new()),
        }
    }

    /// A new random nonce (128 bits, hex).
    pub fn issue(&self) -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let nonce = hex::encode(bytes);
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.capacity {
            let lifetime = self.lifetime;
            map.retain(|_, e| now.duration_since(e.issued) < lifetime);
            if map.len() >= self.capacity {
                // Still full of live nonces: drop the oldest half.
                let mut ages: Vec<Instant> = map.values().map(|e| e.issued).collect();
                ages.sort_unstable();
                if let Some(cut) = ages.get(ages.len() / 2).copied() {
                    map.retain(|_, e| e.issued > cut);
                }
            }
        }
        map.insert(
            nonce.clone(),
            Entry {
                issued: now,
                used_nc: HashSet::new(),
            },
        );
        nonce
    }

    /// Checks `nonce` with the hex nonce count `nc` and, when fresh, records the count as
    /// used. Call only after the digest response itself verified (a wrong password must not
    /// burn counts).
    pub fn check_and_use(&self, nonce: &str, nc: &str) -> NonceCheck {
        let Ok(count) = u32::from_str_radix(nc, 16) else {
            return NonceCheck::Replayed;
        };
        if nc.len() != 8 || count == 0 {
            return NonceCheck::Replayed;
        }
        let mut map = self.lock();
        let Some(entry) = map.get_mut(nonce) else {
            return NonceCheck::Stale;
        };
        if entry.issued.elapsed() >= self.lifetime || entry.used_nc.len() >= self.max_uses {
            map.remove(nonce);
            return NonceCheck::Stale;
        }
        if entry.used_nc.insert(count) {
            NonceCheck::Fresh
        } else {
            NonceCheck::Replayed
        }
    }

    /// Whether `nonce` was issued by us and has not expired (no count recorded).
    pub fn is_live(&self, nonce: &str) -> bool {
        self.lock()
            .get(nonce)
            .is_some_and(|e| e.issued.elapsed() < self.lifetime)
    }

    /// Outstanding nonces.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no nonce is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_count_once_then_replay() {
        let store = NonceStore::new(Duration::from_secs(60), 100);
        let n = store.issue();
        assert_eq!(n.len(), 32);
        assert_eq!(store.check_and_use(&n, "00000001"), NonceCheck::Fresh);
        assert_eq!(store.check_and_use(&n, "00000001"), NonceCheck::Replayed);
        assert_eq!(store.check_and_use(&n, "00000002"), NonceCheck::Fresh);
        assert_eq!(store.check_and_use(&n, "0000000G"), NonceCheck::Replayed);
        assert_eq!(store.check_and_use(&n, "1"), NonceCheck::Replayed);
        assert_eq!(
            store.check_and_use("not-ours", "00000001"),
            NonceCheck::Stale
        );
    }

    #[test]
    fn expired_nonce_is_stale() {
        let store = NonceStore::new(Duration::from_millis(1), 100);
        let n = store.issue();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!store.is_live(&n));
        assert_eq!(store.check_and_use(&n, "00000001"), NonceCheck::Stale);
    }

    #[test]
    fn bounded_under_flood() {
        let store = NonceStore::new(Duration::from_secs(60), 100);
        let first = store.issue();
        for _ in 0..10_000 {
            store.issue();
        }
        assert!(store.len() <= 100);
        assert!(!store.is_live(&first));
    }
}
