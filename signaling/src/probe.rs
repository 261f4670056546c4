//! An OPTIONS probe toward a trunk (`papercup trunk test`, and the health checks to come):
//! reachability, latency and the answer, or a clear reason why not.
//!
//! A probe is one stateless request over its own socket, so it can run from the CLI while
//! a server runs on the same host: UDP with RFC 3261 retransmissions (T1 doubling) on a
//! connected socket (an ICMP "port unreachable" is reported as a refused connection), or
//! one TCP connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A probe's answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeResult {
    pub target: SocketAddr,
    pub transport: String,
    pub status: u16,
    pub reason: String,
    /// Time from the first send to the final response.
    pub latency_ms: f64,
    /// The far end's `Server` or `User-Agent` header, when given.
    pub agent: Option<String>,
}

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{transport} {target}: connection refused (nothing listens there)")]
    Refused {
        target: SocketAddr,
        transport: String,
    },
    #[error("{transport} {target}: {reason}")]
    Io {
        target: SocketAddr,
        transport: String,
        reason: String,
    },
    #[error("{transport} {target}: no answer within {secs} s (host down, port filtered, or not a SIP server)")]
    Timeout {
        target: SocketAddr,
        transport: String,
        secs: u64,
    },
    #[error("{transport} {target}: the answer is not a SIP response: {reason}")]
    Malformed {
        target: SocketAddr,
        transport: String,
        reason: String,
    },
    #[error("probing over {0} is not supported yet (use udp or tcp)")]
    Unsupported(String),
}

fn token() -> String {
    let mut rng = rand::rng();
    (0..16)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

fn options(local: SocketAddr, transport: &str, uri: &str) -> String {
    format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/{} {local};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:papercup@{local}>;tag={}\r\nTo: <{uri}>\r\n\
         Call-ID: {}@papercup\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\n\
         User-Agent: papercup/{}\r\nContent-Length: 0\r\n\r\n",
        transport.to_ascii_uppercase(),
        token(),
        token(),
        token(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// A final response's status, reason phrase and `Server`/`User-Agent`.
type Final = (u16, String, Option<String>);

/// The final response in `bytes`, if they hold a complete one (`Err`: not SIP).
fn final_response(bytes: &[u8]) -> Option<Result<Final, String>> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    if parts.next() != Some("SIP/2.0") {
        return Some(Err(format!("{status_line:?}")));
    }
    let Some(status) = parts.next().and_then(|c| c.parse::<u16>().ok()) else {
        return Some(Err(format!("{status_line:?}")));
    };
    if status < 200 {
        return None;
    }
    let reason = parts.next().unwrap_or("").to_string();
    let agent = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        matches!(
            k.trim().to_ascii_lowercase().as_str(),
            "server" | "user-agent"
        )
        .then(|| v.trim().to_string())
    });
    Some(Ok((status, reason, agent)))
}

/// Where a trunk's `host:port` is: an IP literal (brackets allowed) as is, a name by its
/// first A/AAAA record.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ProbeError> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolve = |reason: String| ProbeError::Resolve {
        host: host.into(),
        reason,
    };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| resolve(e.to_string()))?
        .next()
        .ok_or_else(|| resolve("no address".into()))
}

/// Sends OPTIONS `uri` to `host:port` over `transport` and waits for the final answer.
pub async fn options_probe(
    host: &str,
    port: u16,
    transport: &str,
    uri: &str,
    timeout: Duration,
) -> Result<ProbeResult, ProbeError> {
    let target = resolve(host, port).await?;
    let t = transport.to_ascii_lowercase();
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ProbeError::Refused {
                target,
                transport: t.clone(),
            }
        } else {
            ProbeError::Io {
                target,
                transport: t.clone(),
                reason: e.to_string(),
            }
        }
    };
    let malformed = |reason: String| ProbeError::Malformed {
        target,
        transport: t.clone(),
        reason,
    };
    let timed_out = || ProbeError::Timeout {
        target,
        transport: t.clone(),
        secs: timeout.as_secs(),
    };
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let start = Instant::now();
    let deadline = start + timeout;
    let mut buf = vec![0u8; 65535];
    let (status, reason, agent) = match t.as_str() {
        "udp" => {
            let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
            sock.connect(target).await.map_err(io)?;
            let local = sock.local_addr().map_err(io)?;
            let msg = options(local, "udp", uri);
            let mut wait = Duration::from_millis(500);
            loop {
                sock.send(msg.as_bytes()).await.map_err(io)?;
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                match tokio::time::timeout(wait.min(left), sock.recv(&mut buf)).await {
                    Ok(Ok(n)) => match final_response(&buf[..n]) {
                        Some(Ok(r)) => break r,
                        Some(Err(reason)) => return Err(malformed(reason)),
                        None => continue, // 1xx: keep waiting
                    },
                    Ok(Err(e)) => return Err(io(e)),
                    Err(_) => wait = (wait * 2).min(Duration::from_secs(4)),
                }
            }
        }
        "tcp" => {
            let mut s = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target))
                .await
                .map_err(|_| timed_out())?
                .map_err(io)?;
            let local = s.local_addr().map_err(io)?;
            s.write_all(options(local, "tcp", uri).as_bytes())
                .await
                .map_err(io)?;
            let mut got = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let n = tokio::time::timeout(left, s.read(&mut buf))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(io)?;
                if n == 0 {
                    return Err(ProbeError::Io {
                        target,
                        transport: t.clone(),
                        reason: "connection closed without an answer".into(),
                    });
                }
                got.extend_from_slice(&buf[..n]);
                match final_response(&got) {
                    Some(Ok(r)) => break r,
                    Some(Err(reason)) => return Err(malformed(reason)),
                    None => {
                        // Drop a complete provisional response and read on.
                        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            if final_response(&got[..end + 4]).is_none() {
                                got.drain(..end + 4);
                            }
                        }
                    }
                }
            }
        }
        other => return Err(ProbeError::Unsupported(other.into())),
    };
    Ok(ProbeResult {
        target,
        transport: t,
        status,
        reason,
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        agent,
    })
}

/// Probes `trunk` (its host, port, transport) with OPTIONS.
pub async fn probe_trunk(
    trunk: &sip_trunk::Trunk,
    timeout: Duration,
) -> Result<ProbeResult, ProbeError> {
    options_probe(
        &trunk.host,
        trunk.port_or_default(),
        trunk.transport.as_str(),
        &trunk.options_uri(),
        timeout,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_final_responses_only() {
        assert_eq!(final_response(b"SIP/2.0 100 Trying\r\n\r\n"), None);
        assert_eq!(
            final_response(b"SIP/2.0 200 OK\r\nServer: sipp\r\n"),
            None,
            "incomplete"
        );
        assert_eq!(
            final_response(b"SIP/2.0 200 OK\r\nServer: sipp\r\n\r\n"),
            Some(Ok((200, "OK".into(), Some("sipp".into()))))
        );
        assert!(matches!(
            final_response(b"HTTP/1.1 400 Bad\r\n\r\n"),
            Some(Err(_))
        ));
    }
}
