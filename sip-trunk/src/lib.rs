//! Papercup trunks: carrier profiles, the trunk and number model in the database, and
//! (next) outbound routing, failover and health policy. No network I/O here: signaling
//! does the sending (see ARCHITECTURE.md).
pub mod health;
pub mod profile;
pub mod store;

pub use health::{Health, HealthPolicy, TrunkHealth};
pub use profile::{Provider, TrunkTransport};
pub use store::{Number, Trunk, TrunkError, TrunkSecret, TrunkSettings};
