//! The media of one call: a task that owns its legs and its [`Bridge`], moves packets
//! between them, sends RTCP, plays sources, and reports digits, connection changes and
//! failures to call control. Stopping it returns the quality figures for the CDR.

use std::time::{Duration, Instant};

use rtc::rtp::packet::Packet;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bridge::{AudioSource, Bridge, Counters, Event, Side, Transmit};
use crate::dtmf::Digit;
use crate::engine::{LiveGuard, MediaEngine};
use crate::quality::LegQuality;
use crate::rtp_leg::{Received, RtpLeg};
use crate::sdp::Direction;
use crate::webrtc_leg::{WebRtcInput, WebRtcLeg, WebRtcState};
use crate::{Error, Result};

/// One leg of a call, before its task starts.
#[derive(Debug)]
pub enum Leg {
    /// Toward a SIP peer.
    Rtp(Box<RtpLeg>),
    /// Toward a browser.
    WebRtc(Box<WebRtcLeg>),
}

impl From<RtpLeg> for Leg {
    fn from(l: RtpLeg) -> Self {
        Leg::Rtp(Box::new(l))
    }
}

impl From<WebRtcLeg> for Leg {
    fn from(l: WebRtcLeg) -> Self {
        Leg::WebRtc(Box::new(l))
    }
}

impl Leg {
    fn format(&self) -> Option<crate::bridge::LegFormat> {
        match self {
            Leg::Rtp(l) => l.format(),
            Leg::WebRtc(l) => Some(l.format()),
        }
    }

    fn quality(&self) -> LegQuality {
        match self {
            Leg::Rtp(l) => l.quality(),
            Leg::WebRtc(l) => l.quality(),
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<()> {
        match self {
            Leg::Rtp(l) => l.send(&packet).await,
            Leg::WebRtc(l) => l.send(packet).await,
        }
    }

    async fn recv(&mut self) -> Input {
        match self {
            Leg::Rtp(l) => match l.recv().await {
                Ok(Received::Rtp(p)) => Input::Rtp(p),
                Ok(Received::Nothing) => Input::Nothing,
                Err(e) => Input::Gone(e.to_string()),
            },
            Leg::WebRtc(l) => match l.recv().await {
                Some(WebRtcInput::Rtp(p)) => Input::Rtp(p),
                Some(WebRtcInput::State(s)) => Input::State(s),
                None => Input::Gone("the WebRTC connection ended".into()),
            },
        }
    }
}

enum Input {
    Rtp(Packet),
    State(WebRtcState),
    Nothing,
    Gone(String),
}

/// What the media of a call tells call control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A DTMF digit from leg `from`.
    Digit {
        /// The leg that sent it.
        from: Side,
        /// The digit and its duration.
        digit: Digit,
    },
    /// A source finished playing into leg `to`.
    SourceDone {
        /// The leg.
        to: Side,
    },
    /// The browser's connection changed state.
    WebRtc {
        /// The leg.
        side: Side,
        /// Its new state.
        state: WebRtcState,
    },
    /// A leg is dead (browser vanished, RTP timeout, socket error): hang up.
    Failed {
        /// The leg.
        side: Side,
        /// Why.
        reason: String,
    },
}

/// Quality figures and counters of a finished call, for the CDR.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MediaReport {
    /// The caller's leg.
    pub a: LegQuality,
    /// The far leg (absent for the echo test).
    pub b: Option<LegQuality>,
    /// Whether audio crossed without transcoding.
    pub passthrough: bool,
    /// Frames transcoded.
    pub transcoded: u64,
    /// Lost frames concealed.
    pub concealed: u64,
    /// DTMF packets translated.
    pub dtmf_packets: u64,
}

enum Command {
    Mute(Side, bool),
    Play(Side, Option<Box<dyn AudioSource>>),
    Remote(Side, String, oneshot::Sender<Result<String>>),
    Hold(Side, Direction, oneshot::Sender<Result<String>>),
    Stop,
}

/// The running media of a call. Dropping it stops the task (ports are freed).
#[derive(Debug)]
pub struct CallMedia {
    cmds: mpsc::Sender<Command>,
    events: mpsc::Receiver<MediaEvent>,
    task: Option<JoinHandle<MediaReport>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Mute(..) => "Mute",
            Command::Play(..) => "Play",
            Command::Remote(..) => "Remote",
            Command::Hold(..) => "Hold",
            Command::Stop => "Stop",
        })
    }
}

impl CallMedia {
    /// Starts bridging leg `a` and leg `b`. Both must have negotiated a format.
    pub fn bridge(engine: &MediaEngine, a: Leg, b: Leg) -> Result<Self> {
        let (fa, fb) = match (a.format(), b.format()) {
            (Some(fa), Some(fb)) => (fa, fb),
            _ => {
                return Err(Error::Negotiation(
                    "a leg has no negotiated codec yet".into(),
                ))
            }
        };
        Ok(Self::spawn(engine, Bridge::new(fa, fb), a, Some(b)))
    }

    /// Starts the echo test on leg `a`: it hears itself after the configured delay.
    pub fn echo(engine: &MediaEngine, a: Leg) -> Result<Self> {
        let fa = a
            .format()
            .ok_or_else(|| Error::Negotiation("the leg has no negotiated codec yet".into()))?;
        let bridge = Bridge::echo(fa, engine.config.echo_delay);
        Ok(Self::spawn(engine, bridge, a, None))
    }

    fn spawn(engine: &MediaEngine, bridge: Bridge, a: Leg, b: Option<Leg>) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let driver = Driver {
            bridge,
            legs: [Some(a), b],
            cmds: cmd_rx,
            events: ev_tx,
            rtp_timeout: engine.config.rtp_timeout,
            _live: engine.live_guard(),
        };
        Self {
            cmds: cmd_tx,
            events: ev_rx,
            task: Some(tokio::spawn(driver.run())),
        }
    }

    /// The next event. `None` once the task has ended.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }

    /// Mutes (or unmutes) what leg `side` sends.
    pub async fn set_muted(&self, side: Side, muted: bool) {
        let _ = self.cmds.send(Command::Mute(side, muted)).await;
    }

    /// Plays `source` into leg `to` (None stops it); bridged audio resumes after it.
    pub async fn play(&self, to: Side, source: Option<Box<dyn AudioSource>>) {
        let _ = self.cmds.send(Command::Play(to, source)).await;
    }

    /// A new SDP from an RTP leg's peer (re-INVITE: hold, resume, new address or keys).
    /// Returns our answer.
    pub async fn update_remote(&self, side: Side, sdp: String) -> Result<String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Remote(side, sdp, tx))
            .await
            .map_err(|_| Error::Negotiation("the call's media has ended".into()))?;
        rx.await
            .map_err(|_| Error::Negotiation("the call's media has ended".into()))?
    }

    /// A new offer of ours for an RTP leg with `direction` (we put the peer on hold or
    /// resume it). Apply the peer's answer with [`CallMedia::update_remote`].
    pub async fn reoffer(&self, side: Side, direction: Direction) -> Result<String> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Hold(side, direction, tx))
            .await
            .map_err(|_| Error::Negotiation("the call's media has ended".into()))?;
        rx.await
            .map_err(|_| Error::Negotiation("the call's media has ended".into()))?
    }

    /// Stops the media and returns its figures.
    pub async fn stop(mut self) -> MediaReport {
        let _ = self.cmds.send(Command::Stop).await;
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => MediaReport::default(),
        }
    }
}

struct Driver {
    bridge: Bridge,
    legs: [Option<Leg>; 2],
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<MediaEvent>,
    rtp_timeout: Duration,
    _live: LiveGuard,
}

async fn recv_on(leg: &mut Option<Leg>) -> Input {
    match leg {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Driver {
    async fn run(mut self) -> MediaReport {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut rtcp = tokio::time::interval(Duration::from_secs(5));
        rtcp.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut out: Vec<Transmit> = Vec::with_capacity(8);
        loop {
            let [a, b] = &mut self.legs;
            let needs_tick = self.bridge.needs_tick();
            tokio::select! {
                input = recv_on(a) => self.on_input(Side::A, input, &mut out),
                input = recv_on(b) => self.on_input(Side::B, input, &mut out),
                _ = tick.tick(), if needs_tick => self.bridge.on_tick(Instant::now(), &mut out),
                _ = rtcp.tick() => self.housekeeping().await,
                cmd = self.cmds.recv() => match cmd {
                    None | Some(Command::Stop) => break,
                    Some(cmd) => self.on_command(cmd),
                },
            }
            for t in out.drain(..) {
                if let Some(leg) = self.legs[index(t.to)].as_mut() {
                    if let Err(e) = leg.send(t.packet).await {
                        tracing::trace!(error = %e, "media send failed");
                    }
                }
            }
            self.forward_events();
        }
        self.bridge.finish();
        self.forward_events();
        let counters: Counters = self.bridge.counters();
        let report = MediaReport {
            a: self.legs[0].as_ref().map(Leg::quality).unwrap_or_default(),
            b: self.legs[1].as_ref().map(Leg::quality),
            passthrough: self.bridge.is_passthrough(),
            transcoded: counters.transcoded,
            concealed: counters.concealed,
            dtmf_packets: counters.dtmf,
        };
        for leg in self.legs.iter_mut() {
            if let Some(Leg::WebRtc(w)) = leg.take() {
                w.close().await;
            }
        }
        report
    }

    fn on_input(&mut self, side: Side, input: Input, out: &mut Vec<Transmit>) {
        match input {
            Input::Rtp(p) => self.bridge.on_packet(side, p, Instant::now(), out),
            Input::Nothing => {}
            Input::State(state) => {
                let _ = self.events.try_send(MediaEvent::WebRtc { side, state });
                if matches!(state, WebRtcState::Failed) {
                    self.fail(side, "the browser's connection failed".into());
                }
            }
            Input::Gone(reason) => self.fail(side, reason),
        }
    }

    fn fail(&mut self, side: Side, reason: String) {
        // The leg is dropped (its port freed); call control hangs up on the event. A
        // browser connection is closed so that its own tasks and socket end too.
        if let Some(Leg::WebRtc(w)) = self.legs[index(side)].take() {
            tokio::spawn(async move { w.close().await });
        }
        let _ = self.events.try_send(MediaEvent::Failed { side, reason });
    }

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        let mut dead = Vec::new();
        for (i, leg) in self.legs.iter_mut().enumerate() {
            if let Some(Leg::Rtp(l)) = leg {
                if let Err(e) = l.send_report().await {
                    tracing::trace!(error = %e, "RTCP report not sent");
                }
                if l.peer_sends() && l.silent_for(now) > self.rtp_timeout {
                    dead.push(if i == 0 { Side::A } else { Side::B });
                }
            }
        }
        for side in dead {
            self.fail(side, "no RTP received (media timeout)".into());
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Mute(side, muted) => self.bridge.set_muted(side, muted),
            Command::Play(side, source) => self.bridge.set_source(side, source),
            Command::Remote(side, sdp, reply) => {
                let result = match self.legs[index(side)].as_mut() {
                    Some(Leg::Rtp(l)) => l.set_remote(&sdp).map(|fmt| {
                        self.bridge.set_format(side, fmt);
                        l.local_sdp()
                    }),
                    _ => Err(Error::Negotiation("not an RTP leg".into())),
                };
                let _ = reply.send(result);
            }
            Command::Hold(side, direction, reply) => {
                let result = match self.legs[index(side)].as_mut() {
                    Some(Leg::Rtp(l)) => Ok(l.reoffer(direction)),
                    _ => Err(Error::Negotiation("not an RTP leg".into())),
                };
                let _ = reply.send(result);
            }
            Command::Stop => {}
        }
    }

    fn forward_events(&mut self) {
        while let Some(ev) = self.bridge.poll_event() {
            let ev = match ev {
                Event::Digit { from, digit } => {
                    tracing::debug!(?from, digit = %digit.digit, ms = digit.duration_ms(), "DTMF");
                    MediaEvent::Digit { from, digit }
                }
                Event::SourceDone { to } => MediaEvent::SourceDone { to },
            };
            let _ = self.events.try_send(ev);
        }
    }
}
