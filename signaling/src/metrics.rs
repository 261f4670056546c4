//! Counters and gauges of the SIP core, for the web crate to export.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

/// Methods counted separately; anything else is `other`.
pub const METHODS: [&str; 11] = [
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "UPDATE", "INFO", "PRACK", "REFER",
    "other",
];

/// Live counters (relaxed atomics: monotonic counts, no ordering needed).
#[derive(Debug, Default)]
pub struct SipMetrics {
    requests: [AtomicU64; METHODS.len()],
    /// Responses we sent, by class 1xx..6xx.
    responses_sent: [AtomicU64; 6],
    pub malformed: AtomicU64,
    pub auth_failures: AtomicU64,
    pub auth_successes: AtomicU64,
    pub sources_blocked: AtomicU64,
    pub dropped_blocked: AtomicU64,
    pub dropped_rate_limited: AtomicU64,
    pub registrations: AtomicU64,
    pub unregistrations: AtomicU64,
    pub active_dialogs: AtomicI64,
    pub calls_started: AtomicU64,
    pub calls_ended: AtomicU64,
}

/// A point-in-time copy, serialisable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SipMetricsSnapshot {
    pub requests: Vec<(String, u64)>,
    pub responses_sent: Vec<(String, u64)>,
    pub malformed: u64,
    pub auth_failures: u64,
    pub auth_successes: u64,
    pub sources_blocked: u64,
    pub dropped_blocked: u64,
    pub dropped_rate_limited: u64,
    pub registrations: u64,
    pub unregistrations: u64,
    pub active_dialogs: i64,
    pub calls_started: u64,
    pub calls_ended: u64,
}

fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(method))
        .unwrap_or(METHODS.len() - 1)
}

fn class_index(status: u16) -> Option<usize> {
    match status {
        100..=699 => Some(usize::from(status / 100 - 1)),
        _ => None,
    }
}

impl SipMetrics {
    pub fn request(&self, method: &str) {
        if let Some(c) = self.requests.get(method_index(method)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn response_sent(&self, status: u16) {
        if let Some(c) = class_index(status).and_then(|i| self.responses_sent.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SipMetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let classes = |a: &[AtomicU64; 6]| {
            a.iter()
                .enumerate()
                .map(|(i, c)| (format!("{}xx", i + 1), load(c)))
                .collect()
        };
        SipMetricsSnapshot {
            requests: METHODS
                .iter()
                .zip(&self.requests)
                .map(|(m, c)| ((*m).to_string(), load(c)))
                .collect(),
            responses_sent: classes(&self.responses_sent),
            malformed: load(&self.malformed),
            auth_failures: load(&self.auth_failures),
            auth_successes: load(&self.auth_successes),
            sources_blocked: load(&self.sources_blocked),
            dropped_blocked: load(&self.dropped_blocked),
            dropped_rate_limited: load(&self.dropped_rate_limited),
            registrations: load(&self.registrations),
            unregistrations: load(&self.unregistrations),
            active_dialogs: self.active_dialogs.load(Ordering::Relaxed),
            calls_started: load(&self.calls_started),
            calls_ended: load(&self.calls_ended),
        }
    }
}
