//! Bulkhead's API: the custom resources of the `bulkhead.dev/v1alpha1` group and the labels and
//! annotations other tools rely on.
//!
//! Field names follow Capsule's `capsule.clastix.io/v1beta2` Tenant wherever Capsule has the feature,
//! so that a Capsule manifest is migrated by changing its `apiVersion`. This crate does no I/O.

pub mod common;
pub mod config;
pub mod crds;
pub mod custom_quota;
pub mod gateway;
pub mod labels;
pub mod namespace_rules;
pub mod owner;
pub mod proxy_setting;
pub mod replication;
pub mod resource_pool;
pub mod rules;
mod schema;
pub mod tenant;
pub mod tenant_owner;
pub mod validation;

pub use config::{BulkheadConfiguration, BulkheadConfigurationSpec};
pub use custom_quota::{CustomQuota, CustomQuotaSpec, GlobalCustomQuota, GlobalCustomQuotaSpec};
pub use owner::{OwnerKind, OwnerSpec, ProxyKind, ProxyOperation, ProxySettings, Subject};
pub use proxy_setting::{GlobalProxySettings, GlobalProxySettingsSpec, ProxySetting, ProxySettingSpec};
pub use replication::{GlobalTenantResource, GlobalTenantResourceSpec, TenantResource, TenantResourceSpec};
pub use resource_pool::{ResourcePool, ResourcePoolClaim, ResourcePoolClaimSpec, ResourcePoolSpec};
pub use tenant::{Tenant, TenantSpec, TenantState, TenantStatus};
pub use tenant_owner::{TenantOwner, TenantOwnerSpec};

/// The API group of every Bulkhead custom resource.
pub const GROUP: &str = "bulkhead.dev";
/// The served and stored version of every Bulkhead custom resource.
pub const VERSION: &str = "v1alpha1";
/// `GROUP/VERSION`, as written in a manifest's `apiVersion`.
pub const API_VERSION: &str = "bulkhead.dev/v1alpha1";
