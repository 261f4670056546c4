//! Relay sockets: one UDP socket per allocation on the relay address, wrapped so that
//! nothing is ever sent to a peer the filter denies (whatever the TURN state machine
//! decided), packets from denied peers are dropped, bandwidth is limited per allocation
//! and per server, and relayed traffic is counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use tokio::net::UdpSocket;
use turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use crate::filter::PeerFilter;
use crate::metrics::TurnMetrics;

/// A token bucket of bytes per second (one second of burst). `0` means unlimited.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: u64,
    // (tokens, last refill). Never held across an await.
    state: Mutex<(u64, Instant)>,
}

impl Bucket {
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            rate: bytes_per_sec,
            state: Mutex::new((bytes_per_sec, Instant::now())),
        }
    }

    /// Takes `n` bytes if available.
    pub fn take(&self, n: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(s.1);
        let refill = (elapsed.as_micros() as u64).saturating_mul(self.rate) / 1_000_000;
        if refill > 0 {
            s.0 = (s.0 + refill).min(self.rate);
            s.1 = now;
        }
        let n = n as u64;
        if s.0 >= n {
            s.0 -= n;
            true
        } else {
            false
        }
    }
}

/// Creates relay sockets for allocations.
pub(crate) struct Relays {
    pub bind_ip: IpAddr,
    pub public_ip: IpAddr,
    pub ports: Option<(u16, u16)>,
    pub filter: Arc<PeerFilter>,
    pub metrics: Arc<TurnMetrics>,
    pub per_allocation_bps: u64,
    pub server_bucket: Arc<Bucket>,
}

#[async_trait]
impl RelayAddressGenerator for Relays {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if use_ipv4 != self.bind_ip.is_ipv4() {
            return Err(turn::Error::Other(
                "requested address family is not served".into(),
            ));
        }
        let socket = match (requested_port, self.ports) {
            (p, _) if p != 0 => relay_socket(SocketAddr::new(self.bind_ip, p))?,
            (_, None) => relay_socket(SocketAddr::new(self.bind_ip, 0))?,
            (_, Some((lo, hi))) => {
                // Random ports in the range, a bounded number of tries.
                let mut bound = None;
                for _ in 0..64 {
                    let p = lo + (rand_u16() % (hi - lo + 1));
                    if let Ok(s) = relay_socket(SocketAddr::new(self.bind_ip, p)) {
                        bound = Some(s);
                        break;
                    }
                }
                bound
                    .ok_or_else(|| turn::Error::Other(format!("no free relay port in {lo}-{hi}")))?
            }
        };
        let mut relay_addr = socket.local_addr()?;
        relay_addr.set_ip(self.public_ip);
        let conn = RelayConn {
            socket,
            filter: self.filter.clone(),
            metrics: self.metrics.clone(),
            bucket: Bucket::new(self.per_allocation_bps / 8),
            server_bucket: self.server_bucket.clone(),
        };
        Ok((Arc::new(conn), relay_addr))
    }
}

/// A relay socket with a larger receive buffer than the default (no SO_REUSEPORT: a relay
/// port belongs to one allocation).
fn relay_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(1 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process and per instance: enough to spread ports.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u16
}

struct RelayConn {
    socket: UdpSocket,
    filter: Arc<PeerFilter>,
    metrics: Arc<TurnMetrics>,
    bucket: Bucket,
    server_bucket: Arc<Bucket>,
}

impl RelayConn {
    fn within_bandwidth(&self, n: usize) -> bool {
        let now = Instant::now();
        let ok = self.bucket.take(n, now) && self.server_bucket.take(n, now);
        if !ok {
            TurnMetrics::add(&self.metrics.dropped_over_bandwidth, 1);
        }
        ok
    }
}

#[async_trait]
impl Conn for RelayConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "relay sockets are not connected".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if !self.filter.allows(from.ip()) {
                TurnMetrics::add(&self.metrics.denied_peers, 1);
                continue;
            }
            if !self.within_bandwidth(n) {
                continue;
            }
            TurnMetrics::add(&self.metrics.packets_from_peers, 1);
            TurnMetrics::add(&self.metrics.bytes_from_peers, n as u64);
            return Ok((n, from));
        }
    }

    async fn send(&self, _buf: &[u8]) -> webrtc_util::Result<usize> {
        Err(webrtc_util::Error::Other(
            "relay sockets need a peer address".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        // The last line of defence: whatever state the TURN machine is in, nothing goes
        // to a denied address.
        if !self.filter.allows(target.ip()) {
            TurnMetrics::add(&self.metrics.denied_peers, 1);
            return Err(webrtc_util::Error::Other(format!(
                "peer {target} is not allowed"
            )));
        }
        if !self.within_bandwidth(buf.len()) {
            return Ok(buf.len()); // dropped, like a congested link
        }
        let n = self.socket.send_to(buf, target).await?;
        TurnMetrics::add(&self.metrics.packets_to_peers, 1);
        TurnMetrics::add(&self.metrics.bytes_to_peers, n as u64);
        Ok(n)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_at_their_rate() {
        let b = Bucket::new(1_000);
        let t0 = Instant::now();
        assert!(b.take(800, t0));
        assert!(!b.take(300, t0));
        assert!(b.take(300, t0 + Duration::from_millis(100)));
        assert!(!b.take(1, t0 + Duration::from_millis(100)));
        assert!(Bucket::new(0).take(usize::MAX, t0), "0 is unlimited");
    }
}
