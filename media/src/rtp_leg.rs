//! The RTP leg toward a SIP peer (trunk or desk phone): a port pair from the pool, SDP
//! offer/answer, symmetric RTP with safe latching, optional SDES-SRTP, RTCP SR/RR and
//! the receive statistics behind the quality figures.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::net::UdpSocket;

use crate::bridge::LegFormat;
use crate::codec::Codec;
use crate::engine::MediaEngine;
use crate::ports::PortLease;
use crate::quality::{ntp_middle32, ntp_timestamp, rtt, LegQuality, RecvStats};
use crate::sdp::{Direction, LocalAudio, RemoteAudio};
use crate::srtp::{SdesCrypto, SrtpSession, Suite};
use crate::{Error, Result};

/// The telephone-event payload type we offer.
pub const DTMF_PT: u8 = 101;
/// Packets from a new source address before we latch to it.
const LATCH_AFTER: u32 = 3;

/// Whether the stream is encrypted, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// Plain `RTP/AVP`.
    #[default]
    None,
    /// `RTP/SAVP` with SDES keys of this suite.
    Sdes(Suite),
}

#[derive(Debug)]
struct Remote {
    audio: RemoteAudio,
    rtp: SocketAddr,
    rtcp: SocketAddr,
}

/// What a received datagram turned out to be.
#[derive(Debug)]
pub enum Received {
    /// An RTP packet for the bridge.
    Rtp(Packet),
    /// Consumed here (RTCP, a packet we refused, a packet before the answer).
    Nothing,
}

/// One RTP leg. See the module documentation.
#[derive(Debug)]
pub struct RtpLeg {
    _lease: PortLease,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    local: LocalAudio,
    remote: Option<Remote>,
    format: Option<LegFormat>,
    srtp: Option<SrtpSession>,
    nat_mode: bool,
    candidate: Option<(SocketAddr, u32)>,
    refused: u64,
    stats: RecvStats,
    started: Instant,
    last_received: Instant,
    remote_ssrc: Option<u32>,
    our_ssrc: u32,
    sent: u64,
    sent_octets: u64,
    last_ts: Option<(u32, Instant)>,
    last_sr: Option<(u32, Instant)>,
    rtt: Option<Duration>,
    session_id: u64,
    version: u64,
    buf: Vec<u8>,
    rtcp_buf: Vec<u8>,
}

impl RtpLeg {
    async fn bind(engine: &MediaEngine) -> Result<(PortLease, UdpSocket, UdpSocket)> {
        // A port of the range may be held by another program: skip it (it rests in the
        // pool like a released one) and try the next, a bounded number of times.
        let mut last_err = None;
        for _ in 0..16 {
            let lease = engine.rtp_ports.acquire()?;
            let rtp = UdpSocket::bind(lease.addr()).await;
            let rtcp = UdpSocket::bind(SocketAddr::new(lease.ip(), lease.port() + 1)).await;
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => return Ok((lease, rtp, rtcp)),
                (Err(e), _) | (_, Err(e)) => {
                    last_err = Some(e);
                    lease.quarantine();
                }
            }
        }
        Err(Error::Io(last_err.unwrap_or_else(|| {
            std::io::Error::other("no bindable RTP port")
        })))
    }

    async fn new(engine: &MediaEngine, local: LocalAudio) -> Result<Self> {
        let (lease, rtp, rtcp) = Self::bind(engine).await?;
        let now = Instant::now();
        Ok(Self {
            local: LocalAudio {
                port: lease.port(),
                ..local
            },
            _lease: lease,
            rtp,
            rtcp,
            remote: None,
            format: None,
            srtp: None,
            nat_mode: engine.config.nat_mode,
            candidate: None,
            refused: 0,
            stats: RecvStats::new(8000),
            started: now,
            last_received: now,
            remote_ssrc: None,
            our_ssrc: rand::random(),
            sent: 0,
            sent_octets: 0,
            last_ts: None,
            last_sr: None,
            rtt: None,
            session_id: rand::random::<u32>() as u64,
            version: 1,
            buf: vec![0; 2048],
            rtcp_buf: vec![0; 2048],
        })
    }

    /// A leg that offers `codecs` (and telephone-event/8000): returns the leg and our SDP.
    pub async fn offer(
        engine: &MediaEngine,
        codecs: &[Codec],
        security: Security,
    ) -> Result<(Self, String)> {
        let local = LocalAudio {
            ip: engine.advertised_ip(),
            port: 0,
            codecs: codecs
                .iter()
                .map(|c| (*c, c.default_payload_type()))
                .collect(),
            dtmf_pt: Some(DTMF_PT),
            crypto: match security {
                Security::None => None,
                Security::Sdes(suite) => Some(SdesCrypto::generate(1, suite)),
            },
            direction: Direction::SendRecv,
        };
        let leg = Self::new(engine, local).await?;
        let sdp = leg.local_sdp();
        Ok((leg, sdp))
    }

    /// A leg that answers a peer's offer, choosing the first of the peer's codecs that is
    /// in `codecs`. Errors (no common codec, unusable crypto) mean a 488 for the peer.
    pub async fn answer(
        engine: &MediaEngine,
        offer: &str,
        codecs: &[Codec],
    ) -> Result<(Self, String)> {
        let remote = RemoteAudio::parse(offer)?;
        let (codec, pt) = remote
            .codecs()
            .into_iter()
            .find(|(c, _)| codecs.contains(c))
            .ok_or_else(|| Error::Negotiation("no common audio codec".into()))?;
        let dtmf_pt = remote.telephone_event(codec.clock_rate());
        let crypto = if remote.is_secure() {
            let theirs = remote
                .crypto
                .first()
                .ok_or_else(|| Error::Negotiation("RTP/SAVP without a=crypto".into()))?;
            Some(SdesCrypto::generate(theirs.tag, theirs.suite))
        } else {
            None
        };
        let local = LocalAudio {
            ip: engine.advertised_ip(),
            port: 0,
            codecs: vec![(codec, pt)],
            dtmf_pt,
            crypto,
            direction: remote.direction.reversed(),
        };
        let mut leg = Self::new(engine, local).await?;
        leg.apply_remote(remote)?;
        let sdp = leg.local_sdp();
        Ok((leg, sdp))
    }

    /// Takes the peer's answer to our offer (or a later offer that changes direction or
    /// address, e.g. hold). Returns the negotiated format.
    pub fn set_remote(&mut self, sdp: &str) -> Result<LegFormat> {
        let remote = RemoteAudio::parse(sdp)?;
        self.apply_remote(remote)?;
        self.format
            .ok_or_else(|| Error::Negotiation("no common audio codec".into()))
    }

    fn apply_remote(&mut self, remote: RemoteAudio) -> Result<()> {
        let (codec, pt) = remote
            .codecs()
            .into_iter()
            .find(|(c, _)| self.local.codecs.iter().any(|(l, _)| l == c))
            .ok_or_else(|| Error::Negotiation("no common audio codec".into()))?;
        // Answers keep the offer's payload types; what we send uses the peer's.
        let dtmf_pt = self
            .local
            .dtmf_pt
            .and_then(|_| remote.telephone_event(codec.clock_rate()));
        match (&self.local.crypto, remote.is_secure()) {
            (Some(ours), true) => {
                let theirs = remote
                    .crypto
                    .iter()
                    .find(|c| c.tag == ours.tag && c.suite == ours.suite)
                    .or_else(|| remote.crypto.iter().find(|c| c.suite == ours.suite))
                    .ok_or_else(|| Error::Negotiation("no matching a=crypto".into()))?;
                // A re-INVITE with the same keys keeps the contexts (and their replay
                // windows and rollover counters); new keys start new ones.
                let same = self
                    .remote
                    .as_ref()
                    .is_some_and(|r| r.audio.crypto.contains(theirs));
                if !same || self.srtp.is_none() {
                    self.srtp = Some(SrtpSession::new(ours, theirs)?);
                }
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err(Error::Negotiation(
                    "we require SRTP (RTP/SAVP) and the peer answered RTP/AVP".into(),
                ))
            }
            (None, true) => {
                return Err(Error::Negotiation(
                    "the peer wants SRTP on a plain RTP leg".into(),
                ))
            }
        }
        let rtp = SocketAddr::new(remote.ip, remote.port);
        let rtcp = SocketAddr::new(remote.ip, remote.rtcp_port);
        // Keep a latched address across re-INVITEs from the same peer.
        let (rtp, rtcp) = match &self.remote {
            Some(old) if old.audio.ip == remote.ip && old.audio.port == remote.port => {
                (old.rtp, old.rtcp)
            }
            _ => (rtp, rtcp),
        };
        if self.stats_clock() != codec.clock_rate() {
            self.stats = RecvStats::new(codec.clock_rate());
        }
        self.format = Some(LegFormat { codec, pt, dtmf_pt });
        self.local.direction = remote.direction.reversed();
        self.remote = Some(Remote {
            audio: remote,
            rtp,
            rtcp,
        });
        Ok(())
    }

    fn stats_clock(&self) -> u32 {
        self.format.map_or(8000, |f| f.codec.clock_rate())
    }

    /// Our current SDP (after an offer or answer, with the direction we agreed to).
    pub fn local_sdp(&self) -> String {
        self.local.to_sdp(self.session_id, self.version)
    }

    /// Our SDP for a new offer/answer in the same session (a re-INVITE): same
    /// session id, version + 1, direction `direction`.
    pub fn reoffer(&mut self, direction: Direction) -> String {
        self.version += 1;
        self.local.direction = direction;
        self.local_sdp()
    }

    /// What was negotiated, once the peer's SDP is known.
    pub fn format(&self) -> Option<LegFormat> {
        self.format
    }

    /// Our RTP address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.rtp.local_addr()?)
    }

    /// Where we send RTP (after latching, where the peer really is).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote.as_ref().map(|r| r.rtp)
    }

    /// Whether the peer currently sends us media (not on hold).
    pub fn peer_sends(&self) -> bool {
        self.remote
            .as_ref()
            .is_some_and(|r| r.audio.direction.sends())
    }

    /// How long nothing arrived.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_received)
    }

    /// Waits for the next datagram on the RTP or RTCP port. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Received> {
        tokio::select! {
            r = self.rtp.recv_from(&mut self.buf) => {
                let (n, from) = r?;
                Ok(self.on_rtp(n, from))
            }
            r = self.rtcp.recv_from(&mut self.rtcp_buf) => {
                let (n, from) = r?;
                self.on_rtcp(n, from);
                Ok(Received::Nothing)
            }
        }
    }

    /// Whether a datagram from `from` may be media of this leg, latching to it after a
    /// few packets when the peer is behind NAT (only the negotiated IP, unless NAT mode).
    fn accept_source(&mut self, from: SocketAddr) -> bool {
        let nat_mode = self.nat_mode;
        let Some(remote) = self.remote.as_mut() else {
            return false;
        };
        if from == remote.rtp {
            self.candidate = None;
            return true;
        }
        if from.ip() != remote.audio.ip && !nat_mode {
            self.refused += 1;
            return false;
        }
        let count = match self.candidate {
            Some((addr, n)) if addr == from => n + 1,
            _ => 1,
        };
        self.candidate = Some((from, count));
        if count >= LATCH_AFTER {
            tracing::debug!(%from, was = %remote.rtp, "RTP latched to the real source");
            remote.rtp = from;
            remote.rtcp = SocketAddr::new(from.ip(), from.port().wrapping_add(1));
            self.candidate = None;
        }
        true
    }

    fn on_rtp(&mut self, n: usize, from: SocketAddr) -> Received {
        let data = &self.buf[..n];
        if n < 12 || data[0] >> 6 != 2 {
            return Received::Nothing;
        }
        // Plain RTP is parsed before latching so that junk cannot move us; SRTP is
        // authenticated first.
        let plain = match self.srtp.as_mut() {
            Some(s) => match s.unprotect_rtp(data) {
                Ok(p) => Bytes::from(p),
                Err(e) => {
                    tracing::trace!(error = %e, "SRTP packet refused");
                    self.refused += 1;
                    return Received::Nothing;
                }
            },
            None => Bytes::copy_from_slice(data),
        };
        let mut b = plain;
        let Ok(packet) = Packet::unmarshal(&mut b) else {
            self.refused += 1;
            return Received::Nothing;
        };
        if !self.accept_source(from) {
            return Received::Nothing;
        }
        let now = Instant::now();
        self.last_received = now;
        if self
            .format
            .is_some_and(|f| f.pt == packet.header.payload_type)
        {
            self.stats.on_packet(
                packet.header.sequence_number,
                packet.header.timestamp,
                now.saturating_duration_since(self.started),
            );
        }
        self.remote_ssrc = Some(packet.header.ssrc);
        Received::Rtp(packet)
    }

    fn on_rtcp(&mut self, n: usize, from: SocketAddr) {
        let Some(remote) = self.remote.as_ref() else {
            return;
        };
        if from.ip() != remote.audio.ip && from.ip() != remote.rtp.ip() && !self.nat_mode {
            return;
        }
        let data = &self.rtcp_buf[..n];
        let plain = match self.srtp.as_mut() {
            Some(s) => match s.unprotect_rtcp(data) {
                Ok(p) => p,
                Err(_) => return,
            },
            None => data.to_vec(),
        };
        let mut b = Bytes::from(plain);
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut b) else {
            return;
        };
        let now = Instant::now();
        let now_mid = ntp_middle32(ntp_timestamp(unix_now()));
        for p in packets {
            let reports = if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                self.last_sr = Some((ntp_middle32(sr.ntp_time), now));
                sr.reports.clone()
            } else if let Some(rr) = p.as_any().downcast_ref::<ReceiverReport>() {
                rr.reports.clone()
            } else {
                continue;
            };
            for r in reports {
                if r.ssrc == self.our_ssrc {
                    if let Some(d) = rtt(now_mid, r.last_sender_report, r.delay) {
                        self.rtt = Some(d);
                    }
                }
            }
        }
    }

    /// Sends one RTP packet to the peer (encrypting it on a secure leg).
    pub async fn send(&mut self, packet: &Packet) -> Result<()> {
        let Some(remote) = self.remote.as_ref() else {
            return Ok(());
        };
        // A peer that holds us (sendonly from us is recvonly for them) still gets media
        // only if it asked to receive.
        if matches!(
            remote.audio.direction,
            Direction::SendOnly | Direction::Inactive
        ) {
            return Ok(());
        }
        let to = remote.rtp;
        let raw = packet
            .marshal()
            .map_err(|e| Error::malformed("RTP", e.to_string()))?;
        let wire = match self.srtp.as_mut() {
            Some(s) => s.protect_rtp(&raw)?,
            None => raw.to_vec(),
        };
        self.rtp.send_to(&wire, to).await?;
        self.sent += 1;
        self.sent_octets += packet.payload.len() as u64;
        self.our_ssrc = packet.header.ssrc;
        self.last_ts = Some((packet.header.timestamp, Instant::now()));
        Ok(())
    }

    /// Sends an RTCP report: a sender report once we have sent media, else a receiver
    /// report; with a reception block once the peer has sent media.
    pub async fn send_report(&mut self) -> Result<()> {
        let Some(remote) = self.remote.as_ref() else {
            return Ok(());
        };
        let to = remote.rtcp;
        let now = Instant::now();
        let reports = match self.remote_ssrc {
            Some(ssrc) => {
                let block = self.stats.report_block();
                let (lsr, delay) = match self.last_sr {
                    Some((mid, at)) => {
                        let d = now.saturating_duration_since(at);
                        (mid, (d.as_secs_f64() * 65536.0) as u32)
                    }
                    None => (0, 0),
                };
                vec![ReceptionReport {
                    ssrc,
                    fraction_lost: block.fraction_lost,
                    total_lost: block.total_lost,
                    last_sequence_number: block.extended_max_seq,
                    jitter: block.jitter,
                    last_sender_report: lsr,
                    delay,
                }]
            }
            None => Vec::new(),
        };
        let packet: Box<dyn rtc::rtcp::packet::Packet> = match self.last_ts {
            Some((ts, at)) => {
                let rate = self.stats_clock() as f64;
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                Box::new(SenderReport {
                    ssrc: self.our_ssrc,
                    ntp_time: ntp_timestamp(unix_now()),
                    rtp_time: ts.wrapping_add((elapsed * rate) as u32),
                    packet_count: self.sent as u32,
                    octet_count: self.sent_octets as u32,
                    reports,
                    profile_extensions: Bytes::new(),
                })
            }
            None => Box::new(ReceiverReport {
                ssrc: self.our_ssrc,
                reports,
                profile_extensions: Bytes::new(),
            }),
        };
        let raw: BytesMut = rtc::rtcp::packet::marshal(&[packet])
            .map_err(|e| Error::malformed("RTCP", e.to_string()))?;
        let wire = match self.srtp.as_mut() {
            Some(s) => s.protect_rtcp(&raw)?,
            None => raw.to_vec(),
        };
        self.rtcp.send_to(&wire, to).await?;
        Ok(())
    }

    /// The leg's quality figures so far.
    pub fn quality(&self) -> LegQuality {
        let codec = self.format.map_or(Codec::Pcmu, |f| f.codec);
        LegQuality::from_stats(&self.stats, self.sent, self.rtt, codec.impairment())
    }

    /// Datagrams refused (wrong source, failed SRTP authentication, not RTP).
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
