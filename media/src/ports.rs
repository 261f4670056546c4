//! The media port pool: which local UDP ports the legs of a call bind to.
//!
//! Ports come from a configured range (which the firewall opens), as slots of two for RTP
//! legs (an even RTP port and RTCP on the next odd one) or one for WebRTC legs (RTP and
//! RTCP multiplexed). A released port is not handed out again until it has drained for a
//! while, so that late packets of a finished call cannot land in a new call on the same
//! port. Time comes from a [`Clock`] so that tests can drive it; the pool holds a
//! `std::sync::Mutex` only for the few instructions of each operation, never across an
//! `.await`, so it is safe to use from async code without an async lock.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::{Error, Result};

/// A source of monotonic time, so that drain periods can be tested without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        // The only place in this module that reads the real clock.
        Instant::now()
    }
}

/// One slot in the free list: its (first) port and when it was last released.
#[derive(Debug, Clone, Copy)]
struct FreeSlot {
    port: u16,
    /// `None` for a port never handed out since the pool was created.
    released: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    /// FIFO: never-used slots first, then released slots in release order. Because release
    /// instants only grow, if the front slot is still draining, so is every slot behind it.
    free: VecDeque<FreeSlot>,
    in_use: usize,
}

/// A pool of local media ports on one address. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct PortPool {
    ip: IpAddr,
    drain: Duration,
    capacity: usize,
    clock: Arc<dyn Clock>,
    // std Mutex on purpose: every critical section is a few instructions with no await.
    inner: Arc<Mutex<Inner>>,
}

impl PortPool {
    /// A pool over `first..=last` on `ip`, `step` 2 for RTP+RTCP slots or 1 for single
    /// ports, where released ports wait `drain` before reuse; uses the system clock.
    pub fn new(ip: IpAddr, first: u16, last: u16, step: u16, drain: Duration) -> Result<Self> {
        Self::with_clock(ip, first, last, step, drain, Arc::new(SystemClock))
    }

    /// As [`new`](Self::new), with an explicit clock.
    pub fn with_clock(
        ip: IpAddr,
        first: u16,
        last: u16,
        step: u16,
        drain: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let slots = slots(first, last, step)?;
        // Start at a random slot so that a restarted process does not immediately reuse
        // the ports the previous instance was using (their peers may still be sending).
        let offset = rand::rng().random_range(0..slots.len());
        Ok(Self::from_slots(ip, slots, offset, drain, clock))
    }

    fn from_slots(
        ip: IpAddr,
        slots: Vec<u16>,
        offset: usize,
        drain: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let capacity = slots.len();
        let mut free: VecDeque<FreeSlot> = slots
            .into_iter()
            .map(|port| FreeSlot {
                port,
                released: None,
            })
            .collect();
        free.rotate_left(offset % capacity.max(1));
        Self {
            ip,
            drain,
            capacity,
            clock,
            inner: Arc::new(Mutex::new(Inner { free, in_use: 0 })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is two counters and a queue, each update complete before any panic
        // could occur, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_draining(&self, slot: &FreeSlot, now: Instant) -> bool {
        slot.released
            .is_some_and(|t| now.saturating_duration_since(t) < self.drain)
    }

    /// Takes a free port (the RTP port of a slot when `step` is 2).
    pub fn acquire(&self) -> Result<PortLease> {
        let now = self.clock.now();
        let mut inner = self.lock();
        match inner.free.front() {
            Some(slot) if !self.is_draining(slot, now) => {
                let port = slot.port;
                inner.free.pop_front();
                inner.in_use += 1;
                Ok(PortLease {
                    pool: self.clone(),
                    port,
                })
            }
            _ => {
                let in_use = inner.in_use;
                let draining = inner.free.len();
                Err(Error::PortsExhausted {
                    ip: self.ip,
                    in_use,
                    // Every free slot is draining, or the front would have been handed out.
                    draining,
                })
            }
        }
    }

    fn release(&self, port: u16) {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.in_use = inner.in_use.saturating_sub(1);
        inner.free.push_back(FreeSlot {
            port,
            released: Some(now),
        });
    }

    /// Ports (slots) held by live leases.
    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// Free slots released less than the drain period ago.
    pub fn draining(&self) -> usize {
        let now = self.clock.now();
        let inner = self.lock();
        inner
            .free
            .iter()
            .filter(|s| self.is_draining(s, now))
            .count()
    }

    /// Number of slots in the range.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The address the pool's ports are on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// The slots of `first..=last` for `step`, or why there are none.
fn slots(first: u16, last: u16, step: u16) -> Result<Vec<u16>> {
    let invalid = |reason| Error::InvalidPortRange {
        first,
        last,
        step,
        reason,
    };
    if first > last {
        return Err(invalid("first port is above last port"));
    }
    if first == 0 {
        return Err(invalid("port 0 cannot be bound explicitly"));
    }
    let (first32, last32) = (u32::from(first), u32::from(last));
    let ports: Vec<u16> = match step {
        1 => (first..=last).collect(),
        2 => {
            // RTP on an even port (RFC 3550 section 11), RTCP on port + 1, both in range.
            let start = first32 + (first32 & 1);
            (start..)
                .step_by(2)
                .take_while(|p| *p < last32)
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        }
        _ => return Err(invalid("step must be 1 (WebRTC) or 2 (RTP + RTCP)")),
    };
    if ports.is_empty() {
        return Err(invalid("no even RTP port with RTCP on the next port fits"));
    }
    Ok(ports)
}

/// A port held by a leg; returned to the pool (to drain) when dropped.
#[derive(Debug)]
pub struct PortLease {
    pool: PortPool,
    port: u16,
}

impl PortLease {
    /// The port (the RTP port; RTCP is `port + 1` for a step-2 pool).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pool's address.
    pub fn ip(&self) -> IpAddr {
        self.pool.ip
    }

    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.pool.ip, self.port)
    }

    /// Gives back a port that failed to bind (another process holds it). It goes to the
    /// back of the queue as just released, so the pool tries every other port first and
    /// retries this one only after a drain period.
    pub fn quarantine(self) {
        tracing::debug!(ip = %self.pool.ip, port = self.port, "media port quarantined");
        // Drop does the bookkeeping.
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.release(self.port);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    #[derive(Debug)]
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(Self(Mutex::new(Instant::now())))
        }
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const DRAIN: Duration = Duration::from_secs(30);

    fn pool(first: u16, last: u16, step: u16, clock: &Arc<ManualClock>) -> PortPool {
        PortPool::with_clock(IP, first, last, step, DRAIN, clock.clone()).unwrap()
    }

    #[test]
    fn step_two_gives_even_ports_with_rtcp_in_range() {
        let clock = ManualClock::new();
        let p = pool(10_001, 10_020, 2, &clock);
        assert_eq!(p.capacity(), 9); // 10002, 10004, ..., 10018 (10020 has no 10021)
        let leases: Vec<_> = (0..p.capacity()).map(|_| p.acquire().unwrap()).collect();
        let ports: HashSet<u16> = leases.iter().map(PortLease::port).collect();
        assert_eq!(ports.len(), 9);
        for port in &ports {
            assert_eq!(port % 2, 0);
            assert!(*port >= 10_001 && *port < 10_020, "{port}");
        }
        assert_eq!(leases[0].ip(), IP);
        assert_eq!(leases[0].addr(), SocketAddr::new(IP, leases[0].port()));
        assert_eq!(p.in_use(), 9);
    }

    #[test]
    fn step_one_uses_every_port() {
        let clock = ManualClock::new();
        let p = pool(20_000, 20_004, 1, &clock);
        assert_eq!(p.capacity(), 5);
        let mut ports: Vec<_> = (0..5).map(|_| p.acquire().unwrap()).collect();
        ports.sort_by_key(PortLease::port);
        let got: Vec<u16> = ports.iter().map(PortLease::port).collect();
        assert_eq!(got, vec![20_000, 20_001, 20_002, 20_003, 20_004]);
    }

    #[test]
    fn capacities_and_invalid_ranges() {
        let clock = ManualClock::new();
        assert_eq!(pool(10_000, 10_009, 2, &clock).capacity(), 5);
        let only = pool(10_001, 10_004, 2, &clock);
        assert_eq!(only.capacity(), 1);
        assert_eq!(only.acquire().unwrap().port(), 10_002);
        assert_eq!(pool(10_000, 10_001, 2, &clock).capacity(), 1);
        assert_eq!(pool(65_534, 65_535, 2, &clock).capacity(), 1);
        assert_eq!(pool(65_535, 65_535, 1, &clock).capacity(), 1);
        assert_eq!(pool(1, 65_535, 2, &clock).capacity(), 32_767);

        for (first, last, step) in [
            (10_010, 10_000, 2), // reversed
            (10_000, 10_000, 2), // no room for RTCP
            (10_001, 10_002, 2), // 10002 would need 10003
            (65_535, 65_535, 2), // no even port
            (10_000, 10_010, 3), // bad step
            (10_000, 10_010, 0),
            (0, 10, 1), // port 0
        ] {
            let err =
                PortPool::with_clock(IP, first, last, step, DRAIN, clock.clone()).unwrap_err();
            assert!(
                matches!(err, Error::InvalidPortRange { first: f, last: l, .. } if f == first && l == last),
                "{first}..={last} step {step}: {err}"
            );
        }
        let err = PortPool::new(IP, 5, 4, 1, DRAIN).unwrap_err();
        assert!(err.to_string().contains("5..=4"), "{err}");
    }

    #[test]
    fn exhaustion_names_counts() {
        let clock = ManualClock::new();
        let p = pool(10_000, 10_005, 2, &clock);
        let a = p.acquire().unwrap();
        let _b = p.acquire().unwrap();
        let _c = p.acquire().unwrap();
        let err = p.acquire().unwrap_err();
        assert!(
            matches!(
                err,
                Error::PortsExhausted {
                    ip: IP,
                    in_use: 3,
                    draining: 0
                }
            ),
            "{err}"
        );
        drop(a);
        let err = p.acquire().unwrap_err();
        assert!(
            matches!(
                err,
                Error::PortsExhausted {
                    in_use: 2,
                    draining: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("2 in use, 1 draining"), "{err}");
    }

    #[test]
    fn released_port_drains_before_reuse() {
        let clock = ManualClock::new();
        let p = pool(10_000, 10_001, 2, &clock); // a single slot
        let lease = p.acquire().unwrap();
        assert_eq!(lease.port(), 10_000);
        drop(lease);
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.draining(), 1);
        assert!(p.acquire().is_err());
        clock.advance(DRAIN - Duration::from_millis(1));
        assert!(p.acquire().is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(p.draining(), 0);
        let again = p.acquire().unwrap();
        assert_eq!(again.port(), 10_000);
    }

    #[test]
    fn fresh_ports_are_preferred_and_order_is_fifo() {
        let clock = ManualClock::new();
        let p = PortPool::from_slots(IP, vec![1000, 1002, 1004], 1, DRAIN, clock.clone());
        let a = p.acquire().unwrap();
        assert_eq!(a.port(), 1002); // rotated start
        drop(a);
        clock.advance(DRAIN * 2);
        // The never-used ports come before the released one, even after it drained.
        assert_eq!(p.acquire().unwrap().port(), 1004);
        // (that lease was dropped at once: 1004 is now behind 1002)
        assert_eq!(p.acquire().unwrap().port(), 1000);
        assert_eq!(p.acquire().unwrap().port(), 1002);
    }

    #[test]
    fn quarantine_puts_port_at_the_back_as_draining() {
        let clock = ManualClock::new();
        let p = PortPool::from_slots(IP, vec![1000, 1002], 0, DRAIN, clock.clone());
        let bad = p.acquire().unwrap();
        assert_eq!(bad.port(), 1000);
        bad.quarantine();
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.draining(), 1);
        let good = p.acquire().unwrap();
        assert_eq!(good.port(), 1002);
        assert!(p.acquire().is_err());
        clock.advance(DRAIN);
        assert_eq!(p.acquire().unwrap().port(), 1000);
        drop(good);
    }

    #[test]
    fn random_offset_stays_within_slots() {
        let clock = ManualClock::new();
        for _ in 0..20 {
            let p = pool(30_000, 30_009, 2, &clock);
            let port = p.acquire().unwrap().port();
            assert!((30_000..=30_008).contains(&port) && port % 2 == 0);
        }
    }

    #[test]
    fn many_cycles_return_to_zero() {
        let clock = ManualClock::new();
        let p = PortPool::with_clock(IP, 40_000, 40_099, 2, Duration::ZERO, clock.clone()).unwrap();
        let clone = p.clone();
        for i in 0..1000 {
            let a = p.acquire().unwrap();
            let b = clone.acquire().unwrap();
            assert_ne!(a.port(), b.port());
            assert_eq!(p.in_use(), 2);
            if i % 2 == 0 {
                drop(a);
                b.quarantine();
            } else {
                drop(b);
                drop(a);
            }
            clock.advance(Duration::from_millis(1));
        }
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.draining(), 0);
        assert_eq!(p.capacity(), 50);
        assert_eq!(p.lock().free.len(), 50);
    }
}
