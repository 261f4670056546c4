//! Abuse resistance at the SIP edge: a per-source request rate limit, and blocking of a
//! source that fails authentication too often.
//!
//! Checked for every received request (responses only against blocks: they answer our own
//! requests) before any parsing beyond the transport's, so a
//! scanner flooding REGISTER/INVITE/OPTIONS with bad credentials costs a hash lookup per
//! packet once blocked, and cannot starve legitimate phones (they are other sources, with
//! their own buckets). A source is an IP address: behind one NAT, phones share a fate, as
//! with fail2ban — raise `sip.auth_fail_limit` for big offices or exempt their range.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// Limits of the guard.
#[derive(Debug, Clone)]
pub struct AbuseConfig {
    /// Failed authentications from one source within `auth_fail_window` that block it.
    pub auth_fail_limit: u32,
    pub auth_fail_window: Duration,
    /// How long a blocked source stays blocked.
    pub block_for: Duration,
    /// Sustained requests per second allowed from one source (0: unlimited).
    pub rate_per_sec: u32,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Sources never limited nor blocked (trunks, monitoring).
    pub exempt: Vec<IpNet>,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            auth_fail_limit: 10,
            auth_fail_window: Duration::from_secs(60),
            block_for: Duration::from_secs(600),
            rate_per_sec: 50,
            burst: 200,
            exempt: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Source {
    tokens: f64,
    refilled: Instant,
    failures: Vec<Instant>,
    blocked_until: Option<Instant>,
}

impl Source {
    fn new(tokens: f64, now: Instant) -> Self {
        Self {
            tokens,
            refilled: now,
            failures: Vec::new(),
            blocked_until: None,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Blocked,
    RateLimited,
}

/// The guard; share it with `Arc`.
#[derive(Debug)]
pub struct AbuseGuard {
    config: AbuseConfig,
    /// Exempt ranges learnt at run time (the trunks' inbound sources).
    extra_exempt: std::sync::RwLock<Vec<IpNet>>,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

const MAX_SOURCES: usize = 100_000;

impl AbuseGuard {
    pub fn new(config: AbuseConfig) -> Self {
        Self {
            config,
            extra_exempt: std::sync::RwLock::new(Vec::new()),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the exempt ranges learnt at run time (trunk sources), on top of the
    /// configured ones.
    pub fn set_extra_exempt(&self, nets: Vec<IpNet>) {
        *self.extra_exempt.write().unwrap_or_else(|p| p.into_inner()) = nets;
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.config.exempt.iter().any(|n| n.contains(&ip))
            || self
                .extra_exempt
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|n| n.contains(&ip))
    }

    /// Admits one message from `ip` (consumes a token).
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.exempt(ip) {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_SOURCES && !map.contains_key(&ip) {
            prune(&mut map, now, self.config.auth_fail_window);
        }
        let burst = f64::from(self.config.burst.max(1));
        let s = map.entry(ip).or_insert_with(|| Source::new(burst, now));
        if let Some(until) = s.blocked_until {
            if now < until {
                return Err(Refusal::Blocked);
            }
            s.blocked_until = None;
            s.failures.clear();
        }
        if self.config.rate_per_sec == 0 {
            return Ok(());
        }
        let elapsed = now.duration_since(s.refilled).as_secs_f64();
        s.refilled = now;
        s.tokens = (s.tokens + elapsed * f64::from(self.config.rate_per_sec)).min(burst);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Ok(())
        } else {
            Err(Refusal::RateLimited)
        }
    }

    /// Whether `ip` is blocked now.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.lock()
            .get(&ip)
            .and_then(|s| s.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failed authentication; returns true when this failure blocked the source.
    pub fn auth_failed(&self, ip: IpAddr) -> bool {
        if self.exempt(ip) || self.config.auth_fail_limit == 0 {
            return false;
        }
        let now = Instant::now();
        let window = self.config.auth_fail_window;
        let mut map = self.lock();
        let burst = f64::from(self.config.burst.max(1));
        let s = map.entry(ip).or_insert_with(|| Source::new(burst, now));
        s.failures.retain(|t| now.duration_since(*t) < window);
        s.failures.push(now);
        if s.blocked_until.is_none() && s.failures.len() >= self.config.auth_fail_limit as usize {
            s.blocked_until = Some(now + self.config.block_for);
            return true;
        }
        false
    }

    /// A successful authentication forgives the source's earlier failures.
    pub fn auth_succeeded(&self, ip: IpAddr) {
        if let Some(s) = self.lock().get_mut(&ip) {
            s.failures.clear();
        }
    }

    /// Sources blocked now, with the time left.
    pub fn blocked(&self) -> Vec<(IpAddr, Duration)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter_map(|(ip, s)| {
                s.blocked_until
                    .filter(|u| *u > now)
                    .map(|u| (*ip, u.duration_since(now)))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Source>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn prune(map: &mut HashMap<IpAddr, Source>, now: Instant, window: Duration) {
    map.retain(|_, s| {
        s.blocked_until.is_some_and(|u| u > now)
            || s.failures.iter().any(|t| now.duration_since(*t) < window)
    });
    if map.len() >= MAX_SOURCES {
        // Only blocked sources left and still full: keep the blocks, forget buckets.
        map.retain(|_, s| s.blocked_until.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn blocks_after_limit_and_spares_others() {
        let g = AbuseGuard::new(AbuseConfig {
            auth_fail_limit: 3,
            ..AbuseConfig::default()
        });
        let bad = ip("192.0.2.1");
        assert!(!g.auth_failed(bad));
        assert!(!g.auth_failed(bad));
        assert!(g.auth_failed(bad));
        assert_eq!(g.admit(bad), Err(Refusal::Blocked));
        assert!(g.admit(ip("192.0.2.2")).is_ok());
        assert_eq!(g.blocked().len(), 1);
    }

    #[test]
    fn success_forgives_and_exempt_never_blocks() {
        let g = AbuseGuard::new(AbuseConfig {
            auth_fail_limit: 2,
            exempt: vec!["10.0.0.0/8".parse().expect("net")],
            ..AbuseConfig::default()
        });
        let a = ip("192.0.2.1");
        g.auth_failed(a);
        g.auth_succeeded(a);
        assert!(!g.auth_failed(a));
        for _ in 0..10 {
            assert!(!g.auth_failed(ip("10.1.2.3")));
        }
        assert!(g.admit(ip("10.1.2.3")).is_ok());
    }

    #[test]
    fn rate_limit_refuses_beyond_burst() {
        let g = AbuseGuard::new(AbuseConfig {
            rate_per_sec: 1,
            burst: 5,
            ..AbuseConfig::default()
        });
        let a = ip("192.0.2.9");
        let admitted = (0..20).filter(|_| g.admit(a).is_ok()).count();
        assert_eq!(admitted, 5);
        assert!(g.admit(ip("192.0.2.10")).is_ok());
    }
}
