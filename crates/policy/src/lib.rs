//! Bulkhead's pure decisions. Every function here takes plain data and returns plain data: no client,
//! no async, no clock. The webhook, the proxy, the controller and the offline `check` command call the
//! same functions, so they can never disagree.

pub mod admission;
pub mod cel;
pub mod custom_quota;
pub mod desired;
pub mod fairness;
pub mod identity;
pub mod migration;
pub mod owners;
pub mod proxy;
pub mod quota;
pub mod replication;
pub mod resource_pool;
pub mod selector;
pub mod template;
pub mod webhooks;

pub use identity::{Caller, CallerClass, classify};
