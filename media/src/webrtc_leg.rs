//! The WebRTC leg toward a browser (webrtc 0.21): answers the browser's offer, audio
//! only — Opus 48 kHz with in-band FEC and telephone-event/48000 — as an ICE-lite agent
//! without mDNS, bound to one port of our pool, with the host candidate rewritten to the
//! public address. Connection state changes come out as [`WebRtcState`] events.
//!
//! INTEROP.md pitfalls handled here: browsers offer telephone-event at 48000 *and* 8000 —
//! the 8000 one is stripped before `set_remote_description`; `with_nat_1to1_ips` is ignored
//! in 0.21.1, so candidates are rewritten in the answer text; callbacks run on the
//! connection's driver task, so they only forward into channels, never block.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine as RtcMediaEngine, MIME_TYPE_OPUS,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::bridge::LegFormat;
use crate::codec::Codec;
use crate::engine::MediaEngine;
use crate::ports::PortLease;
use crate::quality::{LegQuality, RecvStats};
use crate::{Error, Result};

/// The connection states call control cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebRtcState {
    /// ICE and DTLS are up: media flows.
    Connected,
    /// Consent checks stopped answering; may recover.
    Disconnected,
    /// The browser is gone (or never connected): end the call.
    Failed,
    /// Closed by either side.
    Closed,
}

/// Packets from the browser and connection state changes, as the leg's driver sees them.
#[derive(Debug)]
pub enum WebRtcInput {
    /// An RTP packet (audio or telephone-event).
    Rtp(Packet),
    /// A connection state change.
    State(WebRtcState),
}

#[derive(Clone)]
struct Handler {
    tx: mpsc::Sender<WebRtcInput>,
    gathered: mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let state = match state {
            RTCPeerConnectionState::Connected => WebRtcState::Connected,
            RTCPeerConnectionState::Disconnected => WebRtcState::Disconnected,
            RTCPeerConnectionState::Failed => WebRtcState::Failed,
            RTCPeerConnectionState::Closed => WebRtcState::Closed,
            _ => return,
        };
        // State changes are rare and must not be lost: wait for room (the driver drains).
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(WebRtcInput::State(state)).await;
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.tx.clone();
        // The track's own reader: ends when the track or the call's receiver goes away.
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = evt {
                    match tx.try_send(WebRtcInput::Rtp(packet)) {
                        Ok(()) => {}
                        // A slow bridge drops audio rather than queueing latency.
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
        });
    }
}

/// One browser connection. Dropping it without [`WebRtcLeg::close`] still frees the port
/// once the connection's tasks end.
pub struct WebRtcLeg {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    format: LegFormat,
    _lease: PortLease,
    rx: mpsc::Receiver<WebRtcInput>,
    sent: u64,
    stats: RecvStats,
    started: Instant,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("format", &self.format)
            .field("ssrc", &self.ssrc)
            .finish_non_exhaustive()
    }
}

/// Removes the telephone-event/8000 payload type from a browser offer (the answer would
/// otherwise repeat a payload type), keeping telephone-event/48000.
pub fn strip_telephone_event_8000(sdp: &str) -> String {
    let pts: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .filter_map(|rest| {
            let (pt, enc) = rest.split_once(' ')?;
            enc.eq_ignore_ascii_case("telephone-event/8000")
                .then(|| pt.to_string())
        })
        .collect();
    if pts.is_empty() {
        return sdp.to_string();
    }
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end();
        let drop = pts.iter().any(|pt| {
            body.starts_with(&format!("a=rtpmap:{pt} "))
                || body.starts_with(&format!("a=fmtp:{pt} "))
                || body.starts_with(&format!("a=rtcp-fb:{pt} "))
        });
        if drop {
            continue;
        }
        if body.starts_with("m=audio ") {
            let kept: Vec<&str> = body
                .split(' ')
                .enumerate()
                .filter(|(i, f)| *i < 3 || !pts.iter().any(|pt| pt == f))
                .map(|(_, f)| f)
                .collect();
            out.push_str(&kept.join(" "));
            out.push_str("\r\n");
            continue;
        }
        out.push_str(line);
    }
    out
}

/// Rewrites the address of host candidates (and `c=` lines) from `private` to `public`.
pub fn rewrite_candidates(sdp: &str, private: IpAddr, public: IpAddr) -> String {
    if private == public {
        return sdp.to_string();
    }
    let (from, to) = (private.to_string(), public.to_string());
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("a=candidate:") || line.starts_with("c=") {
            let body = line.trim_end_matches(['\r', '\n']);
            out.push_str(
                &body
                    .split(' ')
                    .map(|f| if f == from { to.as_str() } else { f })
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The payload type the SDP maps to `name/rate`.
fn payload_type(sdp: &str, name: &str, rate: u32) -> Option<u8> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=rtpmap:"))
        .find_map(|rest| {
            let (pt, enc) = rest.split_once(' ')?;
            let mut parts = enc.split('/');
            let n = parts.next()?;
            let r: u32 = parts.next()?.parse().ok()?;
            (n.eq_ignore_ascii_case(name) && r == rate).then(|| pt.parse().ok())?
        })
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn telephone_event_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/telephone-event".to_owned(),
        clock_rate: 48000,
        channels: 1,
        sdp_fmtp_line: "0-16".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The codecs both our leg and a webrtc-rs client register (Opus 111, telephone-event 126).
pub fn media_engine() -> Result<RtcMediaEngine> {
    let err = |e: webrtc::error::Error| Error::WebRtc(e.to_string());
    let mut m = RtcMediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )
    .map_err(err)?;
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: telephone_event_codec(),
            payload_type: 126,
        },
        RtpCodecKind::Audio,
    )
    .map_err(err)?;
    Ok(m)
}

/// A local audio track with a fixed SSRC, sending Opus.
pub fn audio_track(ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "papercup".to_owned(),
        "papercup-audio".to_owned(),
        "papercup-audio".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: opus_codec(),
            ..Default::default()
        }],
    )))
}

impl WebRtcLeg {
    /// Answers a browser's offer. Returns the leg and the answer SDP (candidates carry
    /// the public address).
    pub async fn answer(engine: &MediaEngine, offer: &str) -> Result<(Self, String)> {
        let err = |e: webrtc::error::Error| Error::WebRtc(e.to_string());
        let cfg = engine.config.clone();
        let offer = strip_telephone_event_8000(offer);
        let opus_pt = payload_type(&offer, "opus", 48000)
            .ok_or_else(|| Error::Negotiation("the offer has no Opus".into()))?;
        let dtmf_pt = payload_type(&offer, "telephone-event", 48000);

        let lease = engine.webrtc_ports.acquire()?;
        let addr: SocketAddr = lease.addr();
        let mut media = media_engine()?;
        let registry = rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors(
            Registry::new(),
            &mut media,
        )
        .map_err(err)?;
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(addr.ip().is_loopback())
            .with_ice_timeouts(
                Some(cfg.webrtc_failed_after / 2),
                Some(cfg.webrtc_failed_after / 2),
                Some(Duration::from_secs(2)),
            )
            .build();
        let (tx, rx) = mpsc::channel(256);
        let (gathered_tx, mut gathered) = mpsc::channel(1);
        let handler = Arc::new(Handler {
            tx,
            gathered: gathered_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(vec![addr.to_string()])
            .build()
            .await
            .map_err(err)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc: u32 = rand::random();
        let track = audio_track(ssrc);
        let result = async {
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(err)?;
            pc.set_remote_description(RTCSessionDescription::offer(offer).map_err(err)?)
                .await
                .map_err(err)?;
            let answer = pc.create_answer(None).await.map_err(err)?;
            pc.set_local_description(answer).await.map_err(err)?;
            // ICE-lite gathers only its host candidate: this is immediate, but bounded.
            let _ = tokio::time::timeout(Duration::from_secs(2), gathered.recv()).await;
            pc.local_description()
                .await
                .ok_or_else(|| Error::WebRtc("no local description".into()))
        }
        .await;
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let sdp = rewrite_candidates(&answer.sdp, addr.ip(), engine.advertised_ip());
        let leg = Self {
            pc,
            track,
            ssrc,
            format: LegFormat {
                codec: Codec::Opus,
                pt: opus_pt,
                dtmf_pt: dtmf_pt
                    .filter(|pt| payload_type(&sdp, "telephone-event", 48000) == Some(*pt)),
            },
            _lease: lease,
            rx,
            sent: 0,
            stats: RecvStats::new(48000),
            started: Instant::now(),
        };
        Ok((leg, sdp))
    }

    /// What was negotiated.
    pub fn format(&self) -> LegFormat {
        self.format
    }

    /// Waits for the next packet or state change. Cancel-safe. `None`: the connection's
    /// tasks are gone.
    pub async fn recv(&mut self) -> Option<WebRtcInput> {
        let input = self.rx.recv().await;
        if let Some(WebRtcInput::Rtp(p)) = &input {
            if p.header.payload_type == self.format.pt {
                let arrival = Instant::now().saturating_duration_since(self.started);
                self.stats
                    .on_packet(p.header.sequence_number, p.header.timestamp, arrival);
            }
        }
        input
    }

    /// The leg's quality figures so far (no RTT: the browser's RTCP stays in the stack).
    pub fn quality(&self) -> LegQuality {
        LegQuality::from_stats(&self.stats, self.sent, None, Codec::Opus.impairment())
    }

    /// Sends one RTP packet (SRTP is the stack's). The SSRC is the track's.
    pub async fn send(&mut self, mut packet: Packet) -> Result<()> {
        packet.header.ssrc = self.ssrc;
        self.sent += 1;
        self.track
            .write_rtp(packet)
            .await
            .map_err(|e| Error::WebRtc(e.to_string()))
    }

    /// Packets sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Closes the connection (DTLS close_notify to the browser).
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing the WebRTC connection");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHROME: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n";

    #[test]
    fn strips_only_telephone_event_8000() {
        let s = strip_telephone_event_8000(CHROME);
        assert!(s.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110\r\n"));
        assert!(!s.contains("a=rtpmap:126"));
        assert_eq!(payload_type(&s, "telephone-event", 48000), Some(110));
        assert_eq!(payload_type(&s, "opus", 48000), Some(111));
        assert_eq!(payload_type(&s, "telephone-event", 8000), None);
    }

    #[test]
    fn rewrites_host_candidates() {
        let sdp = "c=IN IP4 10.0.0.5\r\na=candidate:1 1 udp 2130706431 10.0.0.5 20002 typ host\r\na=other:10.0.0.5\r\n";
        let out = rewrite_candidates(
            sdp,
            "10.0.0.5".parse().unwrap(),
            "203.0.113.9".parse().unwrap(),
        );
        assert_eq!(out, "c=IN IP4 203.0.113.9\r\na=candidate:1 1 udp 2130706431 203.0.113.9 20002 typ host\r\na=other:10.0.0.5\r\n");
    }
}
