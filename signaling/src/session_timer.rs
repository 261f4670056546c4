//! Session timers (RFC 4028), sans-IO: negotiation of `Session-Expires`/`Min-SE` and the
//! deadlines that follow (refresh at half the interval when we are the refresher; BYE if
//! the far end, the refresher, lets the session expire).

use std::time::Duration;

/// Who refreshes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Us,
    Them,
}

/// A negotiated session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: u32,
    pub refresher: Refresher,
}

impl SessionTimer {
    /// When to act after the last refresh: our refresh at half the interval, or (their
    /// refresh overdue) BYE at the interval minus min(32 s, interval/3) (RFC 4028 §10).
    pub fn deadline(&self) -> Duration {
        let secs = u64::from(self.interval);
        match self.refresher {
            Refresher::Us => Duration::from_secs(secs / 2),
            Refresher::Them => Duration::from_secs(secs - (secs / 3).min(32)),
        }
    }

    /// `Session-Expires` header value for a request or response, from the side whose
    /// role in the dialog is `we_are_uac`.
    pub fn header_value(&self, we_are_uac: bool) -> String {
        let refresher = match (self.refresher, we_are_uac) {
            (Refresher::Us, true) | (Refresher::Them, false) => "uac",
            _ => "uas",
        };
        format!("{};refresher={refresher}", self.interval)
    }
}

/// `Session-Expires: 1800;refresher=uac` → (1800, Some("uac")).
pub fn parse_session_expires(value: &str) -> Option<(u32, Option<String>)> {
    let mut parts = value.split(';');
    let secs = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some((secs, refresher))
}

/// Our answer to a session refresh (or initial) request received as UAS of that
/// transaction, with `we_are_uac` our role in the dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiation {
    /// No timer was asked for.
    None,
    /// Run this timer; put its header in the 2xx.
    Timer(SessionTimer),
    /// 422 Session Interval Too Small with this Min-SE.
    TooSmall { min_se: u32 },
}

/// Negotiates a received request's `Session-Expires` (RFC 4028 §9): below `min_se` → 422;
/// the requester picks the refresher, else the UAC of the request refreshes.
pub fn negotiate_request(
    session_expires: Option<&str>,
    min_se: u32,
    we_are_uac: bool,
) -> Negotiation {
    let Some((interval, refresher)) = session_expires.and_then(parse_session_expires) else {
        return Negotiation::None;
    };
    if interval < min_se {
        return Negotiation::TooSmall { min_se };
    }
    // The request's sender is "uac" of this transaction; in dialog terms the original
    // caller is the uac. `we_are_uac`: we placed the dialog's INVITE.
    let refresher = match refresher.as_deref() {
        Some("uac") if we_are_uac => Refresher::Us,
        Some("uac") => Refresher::Them,
        Some("uas") if we_are_uac => Refresher::Them,
        Some("uas") => Refresher::Us,
        _ => Refresher::Them,
    };
    Negotiation::Timer(SessionTimer {
        interval,
        refresher,
    })
}

/// The timer from the 2xx to an INVITE we sent (we are the dialog's UAC): the response's
/// `Session-Expires` rules; absent, no timer runs.
pub fn from_answer(session_expires: Option<&str>) -> Option<SessionTimer> {
    let (interval, refresher) = session_expires.and_then(parse_session_expires)?;
    Some(SessionTimer {
        interval,
        refresher: match refresher.as_deref() {
            Some("uas") => Refresher::Them,
            _ => Refresher::Us,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate_request(None, 90, true), Negotiation::None);
        assert_eq!(
            negotiate_request(Some("60"), 90, true),
            Negotiation::TooSmall { min_se: 90 }
        );
        assert_eq!(
            negotiate_request(Some("120;refresher=uas"), 90, true),
            Negotiation::Timer(SessionTimer {
                interval: 120,
                refresher: Refresher::Them
            })
        );
        assert_eq!(
            negotiate_request(Some("120;refresher=uac"), 90, true),
            Negotiation::Timer(SessionTimer {
                interval: 120,
                refresher: Refresher::Us
            })
        );
        let t = from_answer(Some("1800;refresher=uac")).expect("timer");
        assert_eq!(t.refresher, Refresher::Us);
        assert_eq!(t.deadline(), Duration::from_secs(900));
        let t = SessionTimer {
            interval: 90,
            refresher: Refresher::Them,
        };
        assert_eq!(t.deadline(), Duration::from_secs(60));
        assert_eq!(t.header_value(true), "90;refresher=uas");
        assert!(from_answer(None).is_none());
    }
}
