//! Papercup patch: a hook consulted for every message a transport receives, before the
//! endpoint sees it.
//!
//! The published crate drops a datagram it cannot parse without a word and closes a
//! stream on one; an element must answer a malformed request with `400 Bad Request` and a
//! reason (RFC 3261 §21.4.1, RFC 4475). The filter also sees well-formed messages, so the
//! application can refuse the ones the parser accepts but the RFCs do not (missing or
//! repeated mandatory headers, CSeq/method mismatch, …) and throttle abusive sources
//! before any transaction state is created. It runs inline in the read loop: no I/O.
use crate::sip::{SipMessage, Transport};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;

/// What to do with a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterVerdict {
    /// Hand it to the endpoint.
    Accept,
    /// Forget it.
    Drop,
    /// Send these bytes back to the source (a 400 or 503, say) and forget the message.
    Reply(Vec<u8>),
}

/// The hook; see the module documentation.
pub trait IncomingFilter: Send + Sync {
    /// `parsed` is the crate parser's result for `raw` (its error as text).
    fn filter(
        &self,
        source: SocketAddr,
        transport: Transport,
        raw: &[u8],
        parsed: Result<&SipMessage, &str>,
    ) -> FilterVerdict;
}

pub type IncomingFilterRef = Arc<dyn IncomingFilter>;

#[cfg(feature = "platform-tokio")]
tokio::task_local! {
    /// The filter of the transport layer that spawned a stream connection's read loop.
    pub(crate) static STREAM_FILTER: IncomingFilterRef;
}

/// The filter for the current stream read loop, if any.
#[cfg(feature = "platform-tokio")]
pub(crate) fn stream_filter() -> Option<IncomingFilterRef> {
    STREAM_FILTER.try_with(|f| f.clone()).ok()
}
