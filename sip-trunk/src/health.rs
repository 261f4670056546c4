//! Trunk health, sans-IO: the result of each OPTIONS probe goes in, an up/down state with
//! hysteresis comes out (a trunk is marked down after `down_after` failed probes in a row
//! and up again after `up_after` answered ones), with the last latency. Routing skips a
//! down trunk. Any final response counts as "answered": a carrier that says 403 or 404 to
//! OPTIONS is alive.

use serde::Serialize;

/// What routing needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not probed yet (routed to: a new trunk must not wait for a probe).
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    /// Whether routing may use the trunk.
    pub fn routable(self) -> bool {
        self != Health::Down
    }
}

/// Hysteresis thresholds.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    pub down_after: u32,
    pub up_after: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            down_after: 2,
            up_after: 2,
        }
    }
}

/// One trunk's health.
#[derive(Debug, Clone, Serialize)]
pub struct TrunkHealth {
    pub state: Health,
    /// Round trip of the last answered probe, milliseconds.
    pub latency_ms: Option<f64>,
    /// The last probe's outcome, for operators ("200 OK", "connection refused").
    pub last_result: String,
    #[serde(skip)]
    successes: u32,
    #[serde(skip)]
    failures: u32,
}

impl Default for TrunkHealth {
    fn default() -> Self {
        Self {
            state: Health::Unknown,
            latency_ms: None,
            last_result: String::new(),
            successes: 0,
            failures: 0,
        }
    }
}

impl TrunkHealth {
    /// Feeds one probe result; returns the new state when it changed.
    pub fn record(
        &mut self,
        policy: HealthPolicy,
        answered: Option<f64>,
        result: impl Into<String>,
    ) -> Option<Health> {
        self.last_result = result.into();
        let before = self.state;
        match answered {
            Some(latency) => {
                self.latency_ms = Some(latency);
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.state != Health::Up
                    && (self.state == Health::Unknown || self.successes >= policy.up_after.max(1))
                {
                    self.state = Health::Up;
                }
            }
            None => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.state != Health::Down && self.failures >= policy.down_after.max(1) {
                    self.state = Health::Down;
                }
            }
        }
        (self.state != before).then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis() {
        let p = HealthPolicy {
            down_after: 2,
            up_after: 3,
        };
        let mut h = TrunkHealth::default();
        assert!(h.state.routable());
        assert_eq!(
            h.record(p, Some(3.0), "200 OK"),
            Some(Health::Up),
            "first answer: up at once"
        );
        assert_eq!(h.record(p, None, "timeout"), None, "one miss is not down");
        assert_eq!(h.record(p, Some(4.0), "200 OK"), None);
        assert_eq!(h.record(p, None, "timeout"), None);
        assert_eq!(h.record(p, None, "timeout"), Some(Health::Down));
        assert!(!h.state.routable());
        assert_eq!(h.record(p, Some(1.0), "200 OK"), None);
        assert_eq!(h.record(p, Some(1.0), "200 OK"), None);
        assert_eq!(h.record(p, Some(1.5), "200 OK"), Some(Health::Up));
        assert_eq!(h.latency_ms, Some(1.5));
        assert_eq!(h.last_result, "200 OK");
    }
}
