//! The media crate's one error type.

use std::net::IpAddr;

/// Everything that can go wrong in the media engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from the network that do not parse (RTP, RTCP, telephone-event, SDP).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed ("RTP", "telephone-event", "SDP", ...).
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// libopus refused to create a codec or to code a frame.
    #[error("codec: {0}")]
    Codec(String),
    /// The SRTP context refused a key or a packet.
    #[error("SRTP: {0}")]
    Srtp(String),
    /// An SDP offer or answer we cannot work with (no common codec, bad crypto line).
    #[error("SDP negotiation: {0}")]
    Negotiation(String),
    /// A socket could not be bound or used.
    #[error("media I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The WebRTC stack failed.
    #[error("WebRTC: {0}")]
    WebRtc(String),
    /// Every port of the pool is in use or still draining.
    #[error("no free media port on {ip} ({in_use} in use, {draining} draining)")]
    PortsExhausted {
        /// The address the pool binds on.
        ip: IpAddr,
        /// Ports held by live legs.
        in_use: usize,
        /// Ports released too recently to be handed out again.
        draining: usize,
    },
    /// A port pool configured with a range that holds no usable slot.
    #[error("invalid media port range {first}..={last} (step {step}): {reason}")]
    InvalidPortRange {
        /// First port of the configured range.
        first: u16,
        /// Last port of the configured range (inclusive).
        last: u16,
        /// Ports per slot (2 for RTP+RTCP, 1 for WebRTC).
        step: u16,
        /// Why the range was refused.
        reason: &'static str,
    },
}

impl Error {
    /// A parse failure of `what`.
    pub fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// The media crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
