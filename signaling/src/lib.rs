//! Papercup SIP signaling: the SIP core on rsipstack (transports, transactions, dialogs),
//! edge validation of everything received, the registrar with digest authentication, abuse
//! resistance, and INVITE handling as caller and callee.
pub mod abuse;
pub mod b2bua;
pub mod call;
pub mod digest;
pub mod edge;
pub mod metrics;
pub mod nonce;
pub mod outbound;
pub mod probe;
pub mod registrar;
pub mod sdp;
pub mod server;
pub mod session_timer;
pub mod store;

pub use rsipstack::sip::Transport;
pub use server::{SipConfig, SipError, SipServer, SipStatus, SipStatusSnapshot};
