//! The media engine of one host: its configuration and port pools, shared by every call.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Codec;
use crate::ports::PortPool;
use crate::Result;

/// How a host's media is set up (`[media]` in the config file).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The private address RTP and WebRTC sockets bind on.
    pub bind_ip: IpAddr,
    /// The address peers reach us at (written in SDP and ICE candidates); `bind_ip` when
    /// not behind 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    /// RTP leg ports (even RTP, odd RTCP), inclusive.
    pub rtp_ports: (u16, u16),
    /// WebRTC leg ports, inclusive (one per browser connection).
    pub webrtc_ports: (u16, u16),
    /// How long a released port rests before it is handed out again, so that late
    /// packets of an ended call never reach a new one.
    pub port_drain: Duration,
    /// Latch to any source address (phones behind NAT), not only the negotiated peer's IP.
    pub nat_mode: bool,
    /// Codecs offered to SIP peers, in order. Trunks get PCMU/PCMA whatever this says.
    pub phone_codecs: Vec<Codec>,
    /// How long the echo test waits before playing back.
    pub echo_delay: Duration,
    /// A WebRTC connection that stays disconnected this long has failed (the browser
    /// vanished): the call ends.
    pub webrtc_failed_after: Duration,
    /// An RTP leg that receives nothing for this long (outside hold) has failed.
    pub rtp_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            public_ip: None,
            rtp_ports: (10000, 20000),
            webrtc_ports: (20002, 30000),
            port_drain: Duration::from_secs(30),
            nat_mode: false,
            phone_codecs: vec![Codec::Pcmu, Codec::Pcma],
            echo_delay: Duration::from_millis(500),
            webrtc_failed_after: Duration::from_secs(10),
            rtp_timeout: Duration::from_secs(60),
        }
    }
}

/// Shared by every call of the host: configuration, port pools and a live-call gauge.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    pub(crate) config: Arc<MediaConfig>,
    pub(crate) rtp_ports: PortPool,
    pub(crate) webrtc_ports: PortPool,
    live: Arc<AtomicUsize>,
}

impl MediaEngine {
    /// An engine with `config`'s pools.
    pub fn new(config: MediaConfig) -> Result<Self> {
        let rtp_ports = PortPool::new(
            config.bind_ip,
            config.rtp_ports.0,
            config.rtp_ports.1,
            2,
            config.port_drain,
        )?;
        let webrtc_ports = PortPool::new(
            config.bind_ip,
            config.webrtc_ports.0,
            config.webrtc_ports.1,
            1,
            config.port_drain,
        )?;
        Ok(Self {
            config: Arc::new(config),
            rtp_ports,
            webrtc_ports,
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// The address written in SDP.
    pub fn advertised_ip(&self) -> IpAddr {
        self.config.public_ip.unwrap_or(self.config.bind_ip)
    }

    /// RTP ports in use (pairs).
    pub fn rtp_ports_in_use(&self) -> usize {
        self.rtp_ports.in_use()
    }

    /// WebRTC ports in use.
    pub fn webrtc_ports_in_use(&self) -> usize {
        self.webrtc_ports.in_use()
    }

    /// Calls whose media task is running.
    pub fn live_calls(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn live_guard(&self) -> LiveGuard {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.live.clone())
    }
}

/// Counts a running media task until dropped.
#[derive(Debug)]
pub(crate) struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
