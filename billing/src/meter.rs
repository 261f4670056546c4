//! The meter: one scheduler per host for every live call's credit.
//!
//! [`Meter`] is sans-IO: it holds one deadline per call in a binary heap and, given `now`,
//! says what is due — `Extend` a call whose grant ends within the lead time, or `HangUp`
//! a call whose final units are used up, at the exact deadline. It never touches the
//! database; the driver ([`spawn`]) runs the extensions against [`Billing`] and feeds the
//! results back with [`Meter::extended`]. Cost per call: one heap entry and one wake-up
//! per slice (not a task and a DB round-trip per call per second).
//!
//! While an extension is in flight the call's timer is its deadline: if the database is
//! slow or down, the call is still hung up when its credit ends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::reservation::Grant;
use crate::{Billing, BillingError};

/// Why the meter ends a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupReason {
    /// The wallet's credit is used up.
    CreditExhausted,
}

/// Work the meter asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeterEvent {
    /// Call [`Billing::extend`] for this call and report with [`Meter::extended`].
    Extend {
        /// The call.
        call_id: Arc<str>,
    },
    /// End the call now: its granted talk time ended at `deadline`.
    HangUp {
        /// The call.
        call_id: Arc<str>,
        /// Unix ms at which the credit ended.
        deadline: i64,
        /// Why.
        reason: HangupReason,
    },
}

#[derive(Debug)]
struct Tracked {
    wallet_id: i64,
    answered_at: Option<i64>,
    granted_ms: i64,
    final_units: bool,
    /// An extension is in flight.
    pending: bool,
    /// Last refresh of an unanswered call.
    refreshed_at: i64,
    /// Sequence number of the live heap entry (older entries are stale).
    seq: u64,
}

/// The sans-IO scheduler. Times are Unix milliseconds.
#[derive(Debug)]
pub struct Meter {
    lead_ms: i64,
    refresh_ms: i64,
    retry_ms: i64,
    heap: BinaryHeap<Reverse<(i64, u64, Arc<str>)>>,
    calls: HashMap<Arc<str>, Tracked>,
    next_seq: u64,
}

impl Meter {
    /// A meter that extends `lead_ms` before a grant ends and refreshes unanswered calls
    /// every `refresh_ms`.
    pub fn new(lead_ms: i64, refresh_ms: i64) -> Self {
        Self {
            lead_ms,
            refresh_ms: refresh_ms.max(1),
            retry_ms: 1_000,
            heap: BinaryHeap::new(),
            calls: HashMap::new(),
            next_seq: 0,
        }
    }

    /// A meter configured from the billing settings.
    pub fn for_billing(billing: &Billing) -> Self {
        let c = billing.config();
        Self::new(
            c.lead_secs * 1000,
            (c.slice_secs - c.lead_secs).max(1) * 1000,
        )
    }

    /// Number of calls tracked.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is tracked.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Starts (or updates) tracking a call from its grant.
    pub fn track(&mut self, grant: &Grant, now: i64) {
        let id: Arc<str> = Arc::from(grant.call_id.as_str());
        let t = self.calls.entry(id.clone()).or_insert(Tracked {
            wallet_id: grant.wallet_id,
            answered_at: None,
            granted_ms: 0,
            final_units: false,
            pending: false,
            refreshed_at: now,
            seq: 0,
        });
        // A late reply from a refresh made before the answer must not undo the answer.
        t.answered_at = grant.answered_at.or(t.answered_at);
        t.granted_ms = grant.granted_ms;
        t.final_units = grant.final_units;
        t.pending = false;
        t.refreshed_at = now;
        self.schedule(&id, now);
    }

    /// Reports the result of an extension (same as [`Meter::track`]; a call that ended
    /// meanwhile is ignored).
    pub fn extended(&mut self, grant: &Grant, now: i64) {
        if self.calls.contains_key(grant.call_id.as_str()) {
            self.track(grant, now);
        }
    }

    /// Reports a failed extension: retried shortly, but the call still ends at its deadline.
    pub fn extend_failed(&mut self, call_id: &str, now: i64) {
        let Some((id, t)) = self.calls.get_key_value(call_id) else {
            return;
        };
        let id = id.clone();
        let deadline = t.answered_at.map(|a| a + t.granted_ms);
        let at = match deadline {
            Some(d) => (now + self.retry_ms).min(d),
            None => now + self.retry_ms,
        };
        if let Some(t) = self.calls.get_mut(&id) {
            t.pending = false;
        }
        self.push(&id, at);
    }

    /// Stops tracking a call (it ended).
    pub fn remove(&mut self, call_id: &str) {
        // Its heap entry goes stale and is skipped when popped.
        self.calls.remove(call_id);
    }

    /// After a top-up: calls on final units try to extend again at once. With `None`,
    /// every starved call is woken (the change did not say which wallet).
    pub fn wake_starved(&mut self, wallet_id: Option<i64>, now: i64) -> usize {
        let ids: Vec<Arc<str>> = self
            .calls
            .iter()
            .filter(|(_, t)| {
                t.final_units && !t.pending && wallet_id.is_none_or(|w| w == t.wallet_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(t) = self.calls.get_mut(id) {
                t.final_units = false;
            }
            self.push(id, now);
        }
        ids.len()
    }

    /// When the next event is due, if any.
    pub fn next_timeout(&mut self) -> Option<i64> {
        while let Some(Reverse((at, seq, id))) = self.heap.peek() {
            match self.calls.get(id) {
                Some(t) if t.seq == *seq => return Some(*at),
                _ => {
                    self.heap.pop(); // stale
                }
            }
        }
        None
    }

    /// The next event due at or before `now`.
    pub fn poll(&mut self, now: i64) -> Option<MeterEvent> {
        loop {
            let Reverse((at, seq, _)) = self.heap.peek()?;
            if *at > now {
                return None;
            }
            let seq = *seq;
            let Reverse((_, _, id)) = self.heap.pop()?;
            let Some(t) = self.calls.get_mut(&id) else {
                continue;
            };
            if t.seq != seq {
                continue;
            }
            let deadline = t.answered_at.map(|a| a + t.granted_ms);
            match deadline {
                Some(d) if now >= d => {
                    self.calls.remove(&id);
                    return Some(MeterEvent::HangUp {
                        call_id: id,
                        deadline: d,
                        reason: HangupReason::CreditExhausted,
                    });
                }
                Some(d) if t.final_units || t.pending => {
                    // Not yet: woken early (e.g. re-scheduled); wait for the deadline.
                    self.push(&id, d);
                }
                Some(d) => {
                    t.pending = true;
                    // Guard: if the extension does not come back, hang up at the deadline.
                    self.push(&id, d);
                    return Some(MeterEvent::Extend { call_id: id });
                }
                None if t.pending => {
                    // A refresh is in flight; the next one is scheduled when it reports.
                }
                None => {
                    t.pending = true;
                    t.refreshed_at = now;
                    return Some(MeterEvent::Extend { call_id: id });
                }
            }
        }
    }

    fn schedule(&mut self, id: &Arc<str>, now: i64) {
        let Some(t) = self.calls.get(id) else { return };
        let at = match t.answered_at {
            Some(a) if t.final_units => a + t.granted_ms,
            Some(a) => (a + t.granted_ms - self.lead_ms).max(now.min(a + t.granted_ms)),
            None => t.refreshed_at + self.refresh_ms,
        };
        self.push(id, at);
    }

    fn push(&mut self, id: &Arc<str>, at: i64) {
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(t) = self.calls.get_mut(id) {
            t.seq = seq;
            self.heap.push(Reverse((at, seq, id.clone())));
        }
    }
}

/// Commands to a running meter.
#[derive(Debug)]
enum Command {
    Track(Grant),
    Remove(String),
    WakeStarved(Option<i64>),
    Extended(Result<Grant, (String, BillingError)>),
}

/// A handle to the meter task of this host.
#[derive(Debug, Clone)]
pub struct MeterHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl MeterHandle {
    /// Tracks a call from its grant (after authorize, and again after answer).
    pub fn track(&self, grant: Grant) {
        let _ = self.tx.send(Command::Track(grant));
    }

    /// Stops tracking a call (before settling it).
    pub fn remove(&self, call_id: &str) {
        let _ = self.tx.send(Command::Remove(call_id.to_string()));
    }

    /// Wakes starved calls after a top-up.
    pub fn wake_starved(&self, wallet_id: Option<i64>) {
        let _ = self.tx.send(Command::WakeStarved(wallet_id));
    }
}

/// Starts the meter task. `HangUp` events go to `hangups` (call control ends the call and
/// settles it); the task stops when every [`MeterHandle`] is dropped.
pub fn spawn(
    billing: Billing,
    hangups: mpsc::UnboundedSender<MeterEvent>,
) -> (MeterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = MeterHandle { tx: tx.clone() };
    let task = tokio::spawn(run(billing, rx, tx.downgrade(), hangups));
    (handle, task)
}

async fn run(
    billing: Billing,
    mut rx: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::WeakUnboundedSender<Command>,
    hangups: mpsc::UnboundedSender<MeterEvent>,
) {
    let mut meter = Meter::for_billing(&billing);
    let clock = billing.clock().clone();
    loop {
        let now = clock.now_ms();
        while let Some(ev) = meter.poll(now) {
            match ev {
                MeterEvent::Extend { call_id } => {
                    let (b, tx) = (billing.clone(), tx.clone());
                    tokio::spawn(async move {
                        let r = b
                            .extend(&call_id)
                            .await
                            .map_err(|e| (call_id.to_string(), e));
                        if let Some(tx) = tx.upgrade() {
                            let _ = tx.send(Command::Extended(r));
                        }
                    });
                }
                hangup @ MeterEvent::HangUp { .. } => {
                    let _ = hangups.send(hangup);
                }
            }
        }
        let sleep = meter
            .next_timeout()
            .map(|at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(3600));
        let cmd = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(c) => Some(c),
                None => return,
            },
            _ = tokio::time::sleep(sleep) => None,
        };
        let now = clock.now_ms();
        match cmd {
            Some(Command::Track(g)) => meter.track(&g, now),
            Some(Command::Remove(id)) => meter.remove(&id),
            Some(Command::WakeStarved(w)) => {
                meter.wake_starved(w, now);
            }
            Some(Command::Extended(Ok(g))) => meter.extended(&g, now),
            Some(Command::Extended(Err((id, e)))) => {
                match e {
                    // Settled meanwhile: nothing left to meter.
                    BillingError::UnknownCall(_) => meter.remove(&id),
                    e => {
                        tracing::warn!(call_id = %id, error = %e, "extension failed; retrying");
                        meter.extend_failed(&id, now);
                    }
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::Tariff;

    fn grant(id: &str, answered: Option<i64>, granted_ms: i64, final_units: bool) -> Grant {
        Grant {
            call_id: id.into(),
            wallet_id: 1,
            node_id: "n".into(),
            caller: String::new(),
            callee: "+442071234567".into(),
            rate_prefix: "44".into(),
            tariff: Tariff {
                rate_per_min: 1,
                connect_fee: 0,
                increment_first: 1,
                increment_next: 1,
            },
            reserved: 0,
            granted_ms,
            final_units,
            created_at: 0,
            answered_at: answered,
            last_extended_at: 0,
            expires_at: 0,
        }
    }

    #[test]
    fn extends_at_the_lead_and_hangs_up_at_the_final_deadline() {
        let mut m = Meter::new(15_000, 45_000);
        m.track(&grant("a", Some(1_000), 60_000, false), 1_000);
        assert_eq!(m.next_timeout(), Some(46_000));
        assert_eq!(m.poll(45_999), None);
        assert_eq!(
            m.poll(46_000),
            Some(MeterEvent::Extend {
                call_id: "a".into()
            })
        );
        // The extension grants only 10 more seconds: final units.
        m.extended(&grant("a", Some(1_000), 70_000, true), 46_010);
        assert_eq!(m.next_timeout(), Some(71_000));
        assert_eq!(m.poll(70_999), None);
        assert_eq!(
            m.poll(71_000),
            Some(MeterEvent::HangUp {
                call_id: "a".into(),
                deadline: 71_000,
                reason: HangupReason::CreditExhausted
            })
        );
        assert!(m.is_empty());
        assert_eq!(m.next_timeout(), None);
    }

    #[test]
    fn an_extension_that_never_returns_still_hangs_up_at_the_deadline() {
        let mut m = Meter::new(15_000, 45_000);
        m.track(&grant("a", Some(0), 60_000, false), 0);
        assert!(matches!(m.poll(45_000), Some(MeterEvent::Extend { .. })));
        assert_eq!(m.poll(59_999), None);
        assert!(matches!(
            m.poll(60_000),
            Some(MeterEvent::HangUp {
                deadline: 60_000,
                ..
            })
        ));
    }

    #[test]
    fn removed_calls_produce_nothing() {
        let mut m = Meter::new(15_000, 45_000);
        m.track(&grant("a", Some(0), 60_000, true), 0);
        m.remove("a");
        assert_eq!(m.poll(1_000_000), None);
        assert_eq!(m.next_timeout(), None);
    }

    #[test]
    fn top_ups_wake_starved_calls() {
        let mut m = Meter::new(15_000, 45_000);
        m.track(&grant("a", Some(0), 30_000, true), 0);
        m.track(&grant("b", Some(0), 60_000, false), 0);
        assert_eq!(m.wake_starved(Some(1), 10_000), 1);
        assert_eq!(
            m.poll(10_000),
            Some(MeterEvent::Extend {
                call_id: "a".into()
            })
        );
        assert_eq!(m.poll(10_000), None);
    }

    #[test]
    fn unanswered_calls_are_refreshed() {
        let mut m = Meter::new(15_000, 45_000);
        m.track(&grant("a", None, 60_000, false), 0);
        assert_eq!(m.next_timeout(), Some(45_000));
        assert!(matches!(m.poll(45_000), Some(MeterEvent::Extend { .. })));
        m.extended(&grant("a", None, 60_000, false), 45_005);
        assert_eq!(m.next_timeout(), Some(90_005));
        // Answered: now the grant's end counts.
        m.track(&grant("a", Some(50_000), 60_000, false), 50_000);
        assert_eq!(m.next_timeout(), Some(95_000));
    }

    #[test]
    fn failed_extensions_are_retried_before_the_deadline() {
        let mut m = Meter::new(15_000, 45_000);
        m.track(&grant("a", Some(0), 60_000, false), 0);
        assert!(matches!(m.poll(45_000), Some(MeterEvent::Extend { .. })));
        m.extend_failed("a", 45_100);
        assert_eq!(m.next_timeout(), Some(46_100));
        assert!(matches!(m.poll(46_100), Some(MeterEvent::Extend { .. })));
        m.extend_failed("a", 59_500);
        assert_eq!(m.next_timeout(), Some(60_000));
        assert!(matches!(m.poll(60_000), Some(MeterEvent::HangUp { .. })));
    }
}
