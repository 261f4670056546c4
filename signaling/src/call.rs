//! The call-control seam: a sans-IO state machine per SIP leg. It is fed what happened
//! (responses, in-dialog requests, timers, local commands) and answers what to do; the
//! driver ([`crate::outbound`]) does the I/O on rsipstack. Later call control (browser
//! calls, desk-phone calls, trunk routing, billing) plugs into the same events.

use std::time::Duration;

use crate::sdp::Direction;
use crate::session_timer::{Negotiation, Refresher, SessionTimer};

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// INVITE sent, no answer yet.
    Calling,
    /// A provisional response with a To tag (180/183) arrived.
    Early,
    /// 2xx received and ACKed.
    Answered,
    /// BYE or CANCEL sent, waiting for the end.
    Ending,
    Ended,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up (BYE sent).
    LocalHangup,
    /// The far end hung up.
    RemoteHangup,
    /// We cancelled before an answer (or the answer crossed our CANCEL: ACK then BYE).
    Cancelled,
    /// Final non-2xx response.
    Rejected(u16),
    /// The far end stopped refreshing the session (RFC 4028).
    SessionExpired,
    /// Transport or transaction failure.
    Failed(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::LocalHangup => f.write_str("local hangup"),
            EndReason::RemoteHangup => f.write_str("remote hangup"),
            EndReason::Cancelled => f.write_str("cancelled"),
            EndReason::Rejected(s) => write!(f, "rejected {s}"),
            EndReason::SessionExpired => f.write_str("session expired"),
            EndReason::Failed(w) => write!(f, "failed: {w}"),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Provisional {
        status: u16,
        early_media: bool,
    },
    Answered {
        session_timer: Option<SessionTimer>,
        peer_allows_update: bool,
    },
    Rejected {
        status: u16,
    },
    /// The far end sent an offer in dialog (re-INVITE or UPDATE) with this direction and
    /// this `Session-Expires` negotiation.
    RemoteOffer {
        direction: Direction,
        timer: Negotiation,
    },
    /// A refresh without SDP (UPDATE without body).
    RemoteRefresh {
        timer: Negotiation,
    },
    /// The session timer deadline passed.
    TimerFired,
    /// Our own refresh got a 2xx (or failed: `ok = false`).
    RefreshDone {
        ok: bool,
    },
    LocalHangup,
    RemoteBye,
    Failed(String),
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Tell the application (bridge early media, start billing at answer…).
    Notify(Update),
    SendCancel,
    SendBye,
    /// Answer the far end's offer with our SDP in `direction`, plus the timer header.
    AnswerOffer {
        direction: Direction,
        timer: Option<SessionTimer>,
    },
    /// Answer a body-less refresh with 200 (and the timer header).
    AnswerRefresh {
        timer: Option<SessionTimer>,
    },
    /// Reject a refresh: 422 with Min-SE.
    RejectTooSmall {
        min_se: u32,
    },
    /// Refresh the session ourselves: UPDATE when the peer allows it, else re-INVITE with
    /// the unchanged SDP.
    SendRefresh {
        use_update: bool,
    },
    /// (Re)arm the session timer.
    ArmTimer(Duration),
    DisarmTimer,
}

/// Application-visible changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Ringing,
    EarlyMedia,
    Answered,
    RemoteHold(Direction),
    RemoteResume,
    Refreshed,
    Ended(EndReason),
}

/// One outbound leg's state.
#[derive(Debug, Clone)]
pub struct CallMachine {
    phase: Phase,
    timer: Option<SessionTimer>,
    peer_allows_update: bool,
    remote_hold: bool,
    cancel_requested: bool,
}

impl Default for CallMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl CallMachine {
    pub fn new() -> Self {
        Self {
            phase: Phase::Calling,
            timer: None,
            peer_allows_update: false,
            remote_hold: false,
            cancel_requested: false,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn session_timer(&self) -> Option<SessionTimer> {
        self.timer
    }

    fn end(&mut self, reason: EndReason, out: &mut Vec<Output>) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ended;
            out.push(Output::DisarmTimer);
            out.push(Output::Notify(Update::Ended(reason)));
        }
    }

    fn apply_timer(
        &mut self,
        n: &Negotiation,
        out: &mut Vec<Output>,
    ) -> Result<Option<SessionTimer>, u32> {
        match n {
            Negotiation::TooSmall { min_se } => Err(*min_se),
            Negotiation::Timer(t) => {
                self.timer = Some(*t);
                out.push(Output::ArmTimer(t.deadline()));
                Ok(Some(*t))
            }
            // A refresh without Session-Expires keeps the running timer, restarted.
            Negotiation::None => {
                if let Some(t) = self.timer {
                    out.push(Output::ArmTimer(t.deadline()));
                }
                Ok(self.timer)
            }
        }
    }

    /// Feeds one input; returns the outputs in order.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.phase == Phase::Ended {
            return out;
        }
        match input {
            Input::Provisional {
                status,
                early_media,
            } => {
                if matches!(self.phase, Phase::Calling | Phase::Early) && status > 100 {
                    self.phase = Phase::Early;
                    out.push(Output::Notify(if early_media {
                        Update::EarlyMedia
                    } else {
                        Update::Ringing
                    }));
                }
            }
            Input::Answered {
                session_timer,
                peer_allows_update,
            } => {
                self.peer_allows_update = peer_allows_update;
                if self.cancel_requested {
                    // CANCEL crossed the 200 OK: rsipstack ACKs that 2xx and sends BYE
                    // itself (exactly once); the call is over for us.
                    self.end(EndReason::Cancelled, &mut out);
                    return out;
                }
                self.phase = Phase::Answered;
                self.timer = session_timer;
                out.push(Output::Notify(Update::Answered));
                if let Some(t) = session_timer {
                    out.push(Output::ArmTimer(t.deadline()));
                }
            }
            Input::Rejected { status } => {
                let reason = if self.cancel_requested && status == 487 {
                    EndReason::Cancelled
                } else {
                    EndReason::Rejected(status)
                };
                self.end(reason, &mut out);
            }
            Input::RemoteOffer { direction, timer } => match self.apply_timer(&timer, &mut out) {
                Err(min_se) => out.push(Output::RejectTooSmall { min_se }),
                Ok(t) => {
                    out.push(Output::AnswerOffer {
                        direction: direction.answer(),
                        timer: t,
                    });
                    if direction.is_hold() {
                        self.remote_hold = true;
                        out.push(Output::Notify(Update::RemoteHold(direction)));
                    } else if self.remote_hold {
                        self.remote_hold = false;
                        out.push(Output::Notify(Update::RemoteResume));
                    } else {
                        out.push(Output::Notify(Update::Refreshed));
                    }
                }
            },
            Input::RemoteRefresh { timer } => match self.apply_timer(&timer, &mut out) {
                Err(min_se) => out.push(Output::RejectTooSmall { min_se }),
                Ok(t) => {
                    out.push(Output::AnswerRefresh { timer: t });
                    out.push(Output::Notify(Update::Refreshed));
                }
            },
            Input::TimerFired => match self.timer {
                Some(t) if self.phase == Phase::Answered => match t.refresher {
                    Refresher::Us => out.push(Output::SendRefresh {
                        use_update: self.peer_allows_update,
                    }),
                    Refresher::Them => {
                        self.phase = Phase::Ending;
                        out.push(Output::SendBye);
                        self.end(EndReason::SessionExpired, &mut out);
                    }
                },
                _ => {}
            },
            Input::RefreshDone { ok } => {
                if let Some(t) = self.timer {
                    if ok {
                        out.push(Output::ArmTimer(t.deadline()));
                    } else {
                        self.phase = Phase::Ending;
                        out.push(Output::SendBye);
                        self.end(EndReason::Failed("session refresh failed".into()), &mut out);
                    }
                }
            }
            Input::LocalHangup => match self.phase {
                Phase::Calling | Phase::Early => {
                    self.cancel_requested = true;
                    out.push(Output::SendCancel);
                }
                Phase::Answered => {
                    self.phase = Phase::Ending;
                    out.push(Output::SendBye);
                    self.end(EndReason::LocalHangup, &mut out);
                }
                Phase::Ending | Phase::Ended => {}
            },
            Input::RemoteBye => self.end(EndReason::RemoteHangup, &mut out),
            Input::Failed(why) => self.end(EndReason::Failed(why), &mut out),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(interval: u32, refresher: Refresher) -> SessionTimer {
        SessionTimer {
            interval,
            refresher,
        }
    }

    #[test]
    fn early_media_then_answer() {
        let mut m = CallMachine::new();
        assert_eq!(
            m.handle(Input::Provisional {
                status: 183,
                early_media: true
            }),
            vec![Output::Notify(Update::EarlyMedia)]
        );
        let out = m.handle(Input::Answered {
            session_timer: Some(timer(1800, Refresher::Us)),
            peer_allows_update: true,
        });
        assert_eq!(
            out,
            vec![
                Output::Notify(Update::Answered),
                Output::ArmTimer(Duration::from_secs(900))
            ]
        );
        assert_eq!(
            m.handle(Input::TimerFired),
            vec![Output::SendRefresh { use_update: true }]
        );
    }

    #[test]
    fn hold_and_resume_answers() {
        let mut m = CallMachine::new();
        m.handle(Input::Answered {
            session_timer: None,
            peer_allows_update: false,
        });
        let out = m.handle(Input::RemoteOffer {
            direction: Direction::SendOnly,
            timer: Negotiation::None,
        });
        assert_eq!(
            out[0],
            Output::AnswerOffer {
                direction: Direction::RecvOnly,
                timer: None
            }
        );
        assert_eq!(
            out[1],
            Output::Notify(Update::RemoteHold(Direction::SendOnly))
        );
        let out = m.handle(Input::RemoteOffer {
            direction: Direction::Inactive,
            timer: Negotiation::None,
        });
        assert_eq!(
            out[0],
            Output::AnswerOffer {
                direction: Direction::Inactive,
                timer: None
            }
        );
        let out = m.handle(Input::RemoteOffer {
            direction: Direction::SendRecv,
            timer: Negotiation::None,
        });
        assert_eq!(
            out[0],
            Output::AnswerOffer {
                direction: Direction::SendRecv,
                timer: None
            }
        );
        assert_eq!(out[1], Output::Notify(Update::RemoteResume));
    }

    #[test]
    fn cancel_crossing_answer_sends_bye() {
        let mut m = CallMachine::new();
        assert_eq!(m.handle(Input::LocalHangup), vec![Output::SendCancel]);
        let out = m.handle(Input::Answered {
            session_timer: None,
            peer_allows_update: false,
        });
        assert!(
            !out.contains(&Output::SendBye),
            "the stack sends the one BYE: {out:?}"
        );
        assert_eq!(m.phase(), Phase::Ended);
        assert!(out.contains(&Output::Notify(Update::Ended(EndReason::Cancelled))));
    }

    #[test]
    fn refresh_too_small_and_expiry() {
        let mut m = CallMachine::new();
        m.handle(Input::Answered {
            session_timer: Some(timer(120, Refresher::Them)),
            peer_allows_update: false,
        });
        let out = m.handle(Input::RemoteRefresh {
            timer: Negotiation::TooSmall { min_se: 90 },
        });
        assert_eq!(out, vec![Output::RejectTooSmall { min_se: 90 }]);
        let out = m.handle(Input::TimerFired);
        assert_eq!(out[0], Output::SendBye);
        assert!(out.contains(&Output::Notify(Update::Ended(EndReason::SessionExpired))));
        assert!(m.handle(Input::RemoteBye).is_empty());
    }
}
