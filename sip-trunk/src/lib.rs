//! Papercup trunks: carrier profiles, the trunk and number model in the database,
//! outbound routing order and limits, failover and health policy. No network I/O here: signaling
//! does the sending (see ARCHITECTURE.md).
pub mod health;
pub mod profile;
pub mod routing;
pub mod store;

pub use health::{Health, HealthPolicy, TrunkHealth};
pub use profile::{Provider, TrunkTransport};
pub use routing::{ChannelGuard, Limits, Plan, Skip};
pub use store::{Attempt, AttemptDirection, Number, Trunk, TrunkError, TrunkSecret, TrunkSettings};
