//! Test peers for the media engine: a webrtc-rs browser stand-in, baresip driven over raw
//! SIP, tone generation and dominant-frequency analysis.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::engine::{MediaConfig, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

/// An engine on loopback with port ranges of its own (tests run in parallel).
pub fn engine(base: u16) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        rtp_ports: (base, base + 199),
        webrtc_ports: (base + 200, base + 399),
        port_drain: Duration::from_millis(200),
        echo_delay: Duration::from_millis(200),
        ..MediaConfig::default()
    })
    .unwrap()
}

/// `secs` of a sine at `freq` Hz, `rate` samples/s, amplitude 0.3.
pub fn sine(freq: f64, rate: u32, secs: f64) -> Vec<i16> {
    let n = (rate as f64 * secs) as usize;
    (0..n)
        .map(|i| {
            ((2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() * 0.3 * 32767.0)
                as i16
        })
        .collect()
}

/// The frequency (100–2000 Hz, 5 Hz steps) with the most energy, and the RMS level.
pub fn dominant(samples: &[i16], rate: u32) -> (f64, f64) {
    let x: Vec<f64> = samples.iter().map(|s| *s as f64).collect();
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt();
    let mut best = (0.0, 0.0);
    let mut f = 100.0;
    while f <= 2000.0 {
        // Goertzel.
        let w = 2.0 * std::f64::consts::PI * f / rate as f64;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for v in &x {
            let s0 = v + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let p = s1 * s1 + s2 * s2 - c * s1 * s2;
        if p > best.1 {
            best = (f, p);
        }
        f += 5.0;
    }
    (best.0, rms)
}

/// A mono 16-bit WAV.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let mut wav = Vec::new();
    let data = samples.len() as u32 * 2;
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).unwrap();
}

/// The samples of a 16-bit PCM WAV (first channel), and its rate.
pub fn read_wav(path: &Path) -> (Vec<i16>, u32) {
    let b = std::fs::read(path).unwrap();
    let channels = u16::from_le_bytes([b[22], b[23]]) as usize;
    let rate = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    // Find the data chunk.
    let mut i = 12;
    while i + 8 <= b.len() {
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        if &b[i..i + 4] == b"data" {
            // A recorder killed before it closed the file leaves the length at 0.
            let end = if len == 0 {
                b.len()
            } else {
                (i + 8 + len).min(b.len())
            };
            let s: Vec<i16> = b[i + 8..end]
                .chunks_exact(2 * channels)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (s, rate);
        }
        i += 8 + len;
    }
    (Vec::new(), rate)
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// baresip answering calls at `127.0.0.1:port`: its microphone plays `mic` (8 kHz WAV),
/// what it hears is recorded by its sndfile module in `home` (see [`recording`]).
/// `extra` is appended to the account line.
pub fn baresip(home: &Path, mic: &Path, extra: &str) -> (Running, u16) {
    let port = free_udp_port();
    std::fs::create_dir_all(home).unwrap();
    std::fs::write(
        home.join("config"),
        format!(
            "sip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule srtp.so\n\
             module aufile.so\nmodule aubridge.so\nmodule sndfile.so\nsnd_path {}\n\
             module_app account.so\nmodule_app menu.so\n\
             audio_source aufile,{}\naudio_player aubridge,sink\n",
            home.display(),
            mic.display(),
        ),
    )
    .unwrap();
    std::fs::write(
        home.join("accounts"),
        format!("<sip:peer@127.0.0.1:{port}>;regint=0;answermode=auto;audio_codecs=PCMU{extra}\n"),
    )
    .unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(home)
        .arg("-t")
        .arg("60")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(home.join("log.txt")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip (baresip-core) runs");
    (Running(child), port)
}

/// What baresip's sndfile module recorded of the audio it received (`dump-*-dec.wav`).
pub fn recording(home: &Path) -> Option<PathBuf> {
    std::fs::read_dir(home)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
}

/// webrtc-rs does not offer telephone-event (INTEROP.md); browsers do, at 48000 and
/// 8000. Make the offer look like Chrome's.
pub fn with_browser_dtmf(offer: &str) -> String {
    offer
        .replace("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111 126 110\r\n")
        .replace(
            "a=fmtp:111 minptime=10;useinbandfec=1\r\n",
            "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:126 telephone-event/48000\r\na=rtpmap:110 telephone-event/8000\r\n",
        )
}

/// A minimal SIP UAC over UDP, enough to call baresip and hang up.
pub struct SipCall {
    sock: UdpSocket,
    peer: SocketAddr,
    call_id: String,
    from_tag: String,
    to_tag: String,
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl SipCall {
    /// INVITEs `peer` with `sdp` and waits (bounded) for the 200 OK; returns its SDP.
    pub fn invite(peer_port: u16, sdp: &str) -> (Self, String) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let me = sock.local_addr().unwrap();
        let peer: SocketAddr = format!("127.0.0.1:{peer_port}").parse().unwrap();
        let call_id = format!("{}@test", rand::random::<u32>());
        let from_tag = format!("{}", rand::random::<u32>());
        let invite = format!(
            "INVITE sip:peer@{peer} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:test@{me}>;tag={from_tag}\r\nTo: <sip:peer@{peer}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:test@{me}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            rand::random::<u32>(),
            sdp.len()
        );
        let start = Instant::now();
        let mut sent_at = None::<Instant>;
        let mut buf = vec![0u8; 8192];
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "baresip never answered"
            );
            if sent_at.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                // baresip may still be starting: retransmit like a UAC would.
                sock.send_to(invite.as_bytes(), peer).unwrap();
                sent_at = Some(Instant::now());
            }
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let status = msg.split_whitespace().nth(1).unwrap_or("");
            if status.starts_with('1') {
                sent_at = Some(Instant::now() + Duration::from_secs(100));
                continue;
            }
            assert_eq!(status, "200", "baresip answered {msg}");
            let to = header(&msg, "To").unwrap();
            let to_tag = to
                .split("tag=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let body = msg.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            let call = Self {
                sock,
                peer,
                call_id,
                from_tag,
                to_tag,
            };
            call.send_in_dialog("ACK", 1);
            return (call, body);
        }
    }

    fn send_in_dialog(&self, method: &str, cseq: u32) {
        let me = self.sock.local_addr().unwrap();
        let peer = self.peer;
        let msg = format!(
            "{method} sip:peer@{peer} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:test@{me}>;tag={}\r\nTo: <sip:peer@{peer}>;tag={}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            rand::random::<u32>(),
            self.from_tag,
            self.to_tag,
            self.call_id
        );
        self.sock.send_to(msg.as_bytes(), peer).unwrap();
    }

    /// Sends BYE and waits (bounded) for its 200.
    pub fn bye(&self) {
        let mut buf = vec![0u8; 8192];
        for _ in 0..6 {
            self.send_in_dialog("BYE", 2);
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.contains("CSeq: 2 BYE") && msg.starts_with("SIP/2.0 200") {
                    return;
                }
            }
        }
    }
}

/// A webrtc-rs peer connection playing the browser: offers Opus + telephone-event/48000.
pub struct Browser {
    pub pc: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    pub rx: mpsc::UnboundedReceiver<Packet>,
    pub state: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    seq: u16,
}

#[derive(Clone)]
struct BrowserHandler {
    tx: mpsc::UnboundedSender<Packet>,
    state: mpsc::UnboundedSender<RTCPeerConnectionState>,
    gathered: mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for BrowserHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = evt {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
    }
}

impl Browser {
    /// Creates the connection and its offer.
    pub async fn offer() -> (Self, String) {
        let mut media = media::webrtc_leg::media_engine().unwrap();
        let registry = rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors(
            rtc::interceptor::Registry::new(),
            &mut media,
        )
        .unwrap();
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(true)
            .build();
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = mpsc::unbounded_channel();
        let (gathered_tx, mut gathered) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(BrowserHandler {
                tx,
                state: state_tx,
                gathered: gathered_tx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc = rand::random();
        let track = media::webrtc_leg::audio_track(ssrc);
        pc.add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered.recv()).await;
        let sdp = pc.local_description().await.unwrap().sdp;
        (
            Self {
                pc,
                track,
                ssrc,
                rx,
                state,
                seq: 1,
            },
            sdp,
        )
    }

    /// Takes the gateway's answer and waits (bounded) until connected.
    pub async fn connect(&mut self, answer: String) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.state.recv()).await {
                Ok(Some(RTCPeerConnectionState::Connected)) => return,
                Ok(Some(RTCPeerConnectionState::Failed)) => panic!("browser connection failed"),
                Ok(Some(_)) => continue,
                _ => panic!("browser never connected"),
            }
        }
    }

    /// Sends one RTP packet with payload type `pt`.
    pub async fn send(&mut self, pt: u8, marker: bool, ts: u32, payload: Vec<u8>) {
        let p = Packet {
            header: Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: self.seq,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        self.seq = self.seq.wrapping_add(1);
        self.track.write_rtp(p).await.unwrap();
    }
}

/// Temporary directory path helper.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("papercup-media-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
