//! The media engine: the legs of a call (WebRTC toward browsers, RTP toward SIP peers),
//! the bridge between them (transcoding or pass-through, DTMF translation), the port
//! pools they bind from, and the quality figures that end up in the CDR.
//!
//! The protocol logic is sans-IO (packets and instants in, packets out); the I/O shells
//! (`rtp_leg`, `webrtc_leg`, `session`) own sockets and tasks.

pub mod bridge;
pub mod codec;
pub mod dtmf;
pub mod engine;
pub mod error;
pub mod g711;
pub mod ports;
pub mod quality;
pub mod rtp_leg;
pub mod sdp;
pub mod session;
pub mod srtp;
pub mod webrtc_leg;
pub use error::{Error, Result};
