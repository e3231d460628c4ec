//! Well-known labels, annotations and names: the contract other tools rely on.

/// On every tenant namespace and every object Bulkhead creates: the name of the owning Tenant.
pub const TENANT: &str = "bulkhead.dev/tenant";
/// `app.kubernetes.io/managed-by`, set to [`MANAGED_BY_VALUE`] on every object Bulkhead creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`] on objects Bulkhead creates.
pub const MANAGED_BY_VALUE: &str = "bulkhead";
/// On objects created by replication (GlobalTenantResource / TenantResource): which resource made them,
/// as `<kind>.<namespace or "">.<name>` (kind lowercased).
pub const REPLICATED_BY: &str = "bulkhead.dev/replicated-by";
/// The annotation the scheduler's PodNodeSelector admission plugin reads on a namespace.
pub const NODE_SELECTOR_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/node-selector";
/// The label Kubernetes sets on every namespace to its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The field manager Bulkhead uses for every server-side apply.
pub const FIELD_MANAGER: &str = "bulkhead";
/// The finalizer the controller puts on Tenants to remove their cluster-scoped leftovers.
pub const TENANT_FINALIZER: &str = "bulkhead.dev/tenant-cleanup";
/// The name of the singleton BulkheadConfiguration.
pub const CONFIGURATION_NAME: &str = "default";
/// ClusterRole that lets tenant users create namespaces.
pub const NAMESPACE_PROVISIONER_ROLE: &str = "bulkhead-namespace-provisioner";
/// ClusterRole that lets tenant owners delete their namespaces.
pub const NAMESPACE_DELETER_ROLE: &str = "bulkhead-namespace-deleter";
/// Capsule's name for [`NAMESPACE_DELETER_ROLE`]; a migrated Tenant naming it gets Bulkhead's role.
pub const CAPSULE_NAMESPACE_DELETER_ROLE: &str = "capsule-namespace-deleter";
/// The label Capsule puts on tenant namespaces; migrated selectors that name it still match.
pub const CAPSULE_TENANT: &str = "capsule.clastix.io/tenant";
/// On a TenantOwner: the Tenant that has it as an owner without selecting it (Capsule's label).
pub const TENANT_OWNER_OF: &str = "projectcapsule.dev/tenant";
/// On a ServiceAccount in a tenant namespace, set to `"true"` by a tenant owner: the account becomes an
/// owner of the tenant (Capsule's label; needs `allowServiceAccountPromotion`).
pub const PROMOTE: &str = "owner.projectcapsule.dev/promote";
/// On a ServiceAccount in a tenant namespace, set to `"true"` by a tenant owner: the account gets the
/// cluster roles of the tenant's `rules[].permissions.promotions` in the rules' namespaces (Capsule's
/// label; needs `allowServiceAccountPromotion`).
pub const RULE_PROMOTE: &str = "projectcapsule.dev/promote";
/// The annotation on every object the controller applies: a digest of the configuration it applied, so
/// that after a restart it can tell, without writing, that an object is as it wants it.
pub const APPLIED: &str = "bulkhead.dev/applied";

/// Annotation replication sets on an object it adopted (one that existed before it): pruning gives
/// such an object back (only the fields replication set go) instead of deleting it, whatever the
/// resource's status remembers.
pub const ADOPTED: &str = "bulkhead.dev/adopted";
/// The label on a Tenant naming its tier of API fairness (`BulkheadConfiguration.spec.apiFairness.tiers`).
pub const API_TIER: &str = "bulkhead.dev/api-tier";
