//! Outbound routing policy: which trunks a call to a destination may take, in what order,
//! and whether a trunk has room for one more call right now. No I/O: signaling asks, then
//! sends.
//!
//! Order: trunks whose prefix matches the destination longest come first (a trunk with no
//! prefix carries everything, as the shortest match); then lower `priority`; among equals,
//! a weighted random order (`weight`), so traffic splits in proportion. Disabled trunks,
//! trunks this host sees down, and trunks that may not present the caller ID are left out
//! (and reported, so the call's log says why). Channel and calls-per-second limits are
//! checked when an attempt starts ([`Limits::acquire`]), since they change by the moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::Rng;

use crate::health::Health;
use crate::store::{Trunk, TrunkSecret};

/// Why a trunk was not tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Disabled,
    /// This host's health checks see it down.
    Down,
    /// The trunk's caller-ID policy does not allow the number presented.
    CallerId,
    /// `max_channels` calls are up already.
    Channels,
    /// `max_cps` calls started within the last second.
    Cps,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Disabled => "disabled",
            Skip::Down => "down",
            Skip::CallerId => "caller ID not allowed on this trunk",
            Skip::Channels => "channel limit reached",
            Skip::Cps => "calls-per-second limit reached",
        }
    }
}

/// The trunks a call may try, best first, and those left out with the reason.
#[derive(Debug, Default)]
pub struct Plan {
    pub candidates: Vec<TrunkSecret>,
    pub skipped: Vec<(String, Skip)>,
}

/// Length of the longest prefix of `trunk` matching `dest` (`Some(0)` for a trunk with no
/// prefixes), or `None` when the trunk does not carry the destination.
pub fn prefix_match(trunk: &Trunk, dest: &str) -> Option<usize> {
    if trunk.prefixes.is_empty() {
        return Some(0);
    }
    trunk
        .prefixes
        .iter()
        .filter(|p| dest.starts_with(p.as_str()))
        .map(String::len)
        .max()
}

/// Whether `trunk` may present `caller_id` (`None`: anonymous). An empty list allows any
/// of our numbers, and anonymous calls.
pub fn allows_caller_id(trunk: &Trunk, caller_id: Option<&str>) -> bool {
    if trunk.caller_ids.is_empty() {
        return true;
    }
    let Some(cid) = caller_id else { return false };
    trunk.caller_ids.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => cid.starts_with(prefix),
        None => cid == p,
    })
}

/// Orders the trunks for a call to `dest` (E.164) presenting `caller_id`. `health` gives
/// this host's view of a trunk (by id).
pub fn plan(
    trunks: &[TrunkSecret],
    dest: &str,
    caller_id: Option<&str>,
    health: impl Fn(i64) -> Health,
    rng: &mut impl Rng,
) -> Plan {
    let mut out = Plan::default();
    // (prefix length, priority, trunk)
    let mut eligible: Vec<(usize, u32, &TrunkSecret)> = Vec::new();
    for ts in trunks {
        let t = &ts.trunk;
        let Some(len) = prefix_match(t, dest) else {
            continue;
        };
        let skip = if !t.enabled {
            Some(Skip::Disabled)
        } else if health(t.id) == Health::Down {
            Some(Skip::Down)
        } else if !allows_caller_id(t, caller_id) {
            Some(Skip::CallerId)
        } else {
            None
        };
        match skip {
            Some(s) => out.skipped.push((t.name.clone(), s)),
            None => eligible.push((len, t.priority, ts)),
        }
    }
    eligible.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut i = 0;
    while i < eligible.len() {
        let key = (eligible[i].0, eligible[i].1);
        let mut group: Vec<&TrunkSecret> = eligible[i..]
            .iter()
            .take_while(|e| (e.0, e.1) == key)
            .map(|e| e.2)
            .collect();
        i += group.len();
        // Weighted order without replacement; weight 0 goes last.
        while !group.is_empty() {
            let total: u64 = group.iter().map(|t| u64::from(t.trunk.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                let mut r = rng.random_range(0..total);
                group
                    .iter()
                    .position(|t| {
                        let w = u64::from(t.trunk.weight);
                        if r < w {
                            true
                        } else {
                            r -= w;
                            false
                        }
                    })
                    .unwrap_or(0)
            };
            out.candidates.push(group.remove(pick).clone());
        }
    }
    out
}

#[derive(Debug)]
struct Load {
    channels: u32,
    /// Start instants of the calls of the last second (at most `max_cps`).
    recent: std::collections::VecDeque<Instant>,
}

/// This host's live channels and call rate per trunk. Limits are per host: with several
/// hosts, configure each trunk's limits as the carrier's divided by the number of hosts.
#[derive(Debug, Default)]
pub struct Limits {
    loads: Mutex<HashMap<i64, Load>>,
}

/// One channel of a trunk, held for the life of an attempt (and the call it becomes).
#[derive(Debug)]
pub struct ChannelGuard {
    limits: Arc<Limits>,
    trunk_id: i64,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        let mut loads = self.limits.loads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loads.get_mut(&self.trunk_id) {
            l.channels = l.channels.saturating_sub(1);
        }
    }
}

impl Limits {
    /// Takes a channel of `trunk` for an attempt starting `now`, or says which limit is
    /// reached.
    pub fn acquire(self: &Arc<Self>, trunk: &Trunk, now: Instant) -> Result<ChannelGuard, Skip> {
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        let l = loads.entry(trunk.id).or_insert_with(|| Load {
            channels: 0,
            recent: Default::default(),
        });
        if trunk.max_channels > 0 && l.channels >= trunk.max_channels {
            return Err(Skip::Channels);
        }
        while l
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t).as_millis() >= 1000)
        {
            l.recent.pop_front();
        }
        if l.recent.len() >= trunk.max_cps as usize {
            return Err(Skip::Cps);
        }
        l.recent.push_back(now);
        l.channels += 1;
        Ok(ChannelGuard {
            limits: self.clone(),
            trunk_id: trunk.id,
        })
    }

    /// Live channels of a trunk on this host.
    pub fn channels(&self, trunk_id: i64) -> u32 {
        let loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        loads.get(&trunk_id).map_or(0, |l| l.channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Provider, TrunkTransport};
    use rand::SeedableRng;

    fn trunk(id: i64, name: &str, priority: u32, weight: u32, prefixes: &[&str]) -> TrunkSecret {
        TrunkSecret {
            trunk: Trunk {
                id,
                name: name.into(),
                provider: Provider::Generic,
                host: "127.0.0.1".into(),
                port: None,
                transport: TrunkTransport::Udp,
                srtp: false,
                username: String::new(),
                has_password: false,
                caller_ids: Vec::new(),
                codecs: vec!["PCMU".into()],
                max_channels: 0,
                max_cps: 10,
                priority,
                weight,
                enabled: true,
                inbound_sources: Vec::new(),
                prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
                created_at: 0,
                updated_at: 0,
            },
            password: String::new(),
        }
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.candidates.iter().map(|t| t.trunk.name.as_str()).collect()
    }

    #[test]
    fn longest_prefix_then_priority_and_skips_with_reasons() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut down = trunk(4, "down", 1, 100, &[]);
        down.trunk.name = "down".into();
        let mut off = trunk(5, "off", 1, 100, &[]);
        off.trunk.enabled = false;
        let ts = vec![
            trunk(1, "any-b", 20, 100, &[]),
            trunk(2, "uk", 50, 100, &["+44"]),
            trunk(3, "any-a", 10, 100, &[]),
            down,
            off,
            trunk(6, "us", 1, 100, &["+1"]),
        ];
        let p = plan(
            &ts,
            "+442071234567",
            None,
            |id| if id == 4 { Health::Down } else { Health::Up },
            &mut rng,
        );
        assert_eq!(names(&p), ["uk", "any-a", "any-b"]);
        assert_eq!(
            p.skipped,
            vec![("down".into(), Skip::Down), ("off".into(), Skip::Disabled)]
        );
    }

    #[test]
    fn weights_split_traffic_in_proportion() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ts = vec![trunk(1, "a", 10, 300, &[]), trunk(2, "b", 10, 100, &[])];
        let mut first_a = 0;
        for _ in 0..4000 {
            let p = plan(&ts, "+15551234567", None, |_| Health::Up, &mut rng);
            assert_eq!(p.candidates.len(), 2);
            if p.candidates[0].trunk.name == "a" {
                first_a += 1;
            }
        }
        // Expected 3000 of 4000 (weight 300 against 100).
        assert!((2800..3200).contains(&first_a), "{first_a}");
    }

    #[test]
    fn caller_id_policy() {
        let mut t = trunk(1, "a", 10, 100, &[]).trunk;
        assert!(allows_caller_id(&t, None));
        t.caller_ids = vec!["+1555*".into(), "+442071234567".into()];
        assert!(allows_caller_id(&t, Some("+15550001111")));
        assert!(allows_caller_id(&t, Some("+442071234567")));
        assert!(!allows_caller_id(&t, Some("+442071234568")));
        assert!(!allows_caller_id(&t, None));
    }

    #[test]
    fn channel_and_cps_limits() {
        let limits = Arc::new(Limits::default());
        let mut t = trunk(1, "a", 10, 100, &[]).trunk;
        t.max_channels = 2;
        t.max_cps = 3;
        let now = Instant::now();
        let a = limits.acquire(&t, now).expect("first");
        let _b = limits.acquire(&t, now).expect("second");
        assert_eq!(limits.acquire(&t, now).err(), Some(Skip::Channels));
        drop(a);
        assert_eq!(limits.channels(1), 1);
        let _c = limits.acquire(&t, now).expect("a freed channel");
        t.max_channels = 0;
        // Three calls started within this second: the fourth waits for the next one.
        assert_eq!(limits.acquire(&t, now).err(), Some(Skip::Cps));
        let later = now + std::time::Duration::from_millis(1000);
        assert!(limits.acquire(&t, later).is_ok());
    }
}
