//! The `resourcepools` check: a bound claim whose resources its namespace uses cannot be changed,
//! released or deleted; claims name quantities; a pool cannot hold less than its claims take.
//!
//! Whether a claim is needed is read from its namespace's pool ResourceQuota on the API server, not
//! from the cache: the API server's quota admission writes `status.used` as it admits each object, so
//! the live read sees a pod admitted a moment ago that the cache may not have yet. (The controller
//! counts use beyond claims against the pool too, so even a claim let go in a race frees nothing that
//! runs.)

use bulkhead_api::resource_pool::{
    QUOTA_PREFIX, RELEASE_ANNOTATION, ResourcePoolClaimSpec, ResourcePoolClaimStatus, ResourcePoolSpec,
    ResourcePoolStatus,
};
use bulkhead_cache::Cache;
use bulkhead_policy::admission::Verdict;
use bulkhead_policy::resource_pool::{bad_quantities, needed, shrinks_below_claimed};
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;
use serde::Deserialize;

use crate::review::AdmissionRequest;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Claim {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<ResourcePoolClaimSpec>,
    #[serde(default)]
    status: Option<ResourcePoolClaimStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Pool {
    spec: Option<ResourcePoolSpec>,
    #[serde(default)]
    status: Option<ResourcePoolStatus>,
}

fn parse<T: for<'de> Deserialize<'de>>(
    raw: Option<&serde_json::value::RawValue>,
) -> Result<Option<T>, String> {
    raw.map(|r| serde_json::from_str(r.get()).map_err(|e| format!("cannot read the object: {e}")))
        .transpose()
}

/// Decides a write of a ResourcePool or a ResourcePoolClaim.
pub async fn decide(
    cache: &Cache,
    client: Option<&Client>,
    req: &AdmissionRequest,
) -> Result<Verdict, String> {
    let operation = req.operation()?;
    // kube-system's controllers (the namespace controller, the garbage collector) are never held back,
    // as the hook's match condition says; the pool still counts what a namespace uses.
    if req
        .user_info
        .username
        .starts_with("system:serviceaccount:kube-system:")
    {
        return Ok(Verdict::allow());
    }
    match req.kind.kind.as_str() {
        "ResourcePool" => {
            let (Some(new), Some(old)) = (
                parse::<Pool>(req.object.as_deref())?,
                parse::<Pool>(req.old_object.as_deref())?,
            ) else {
                return Ok(Verdict::allow());
            };
            let claimed = old
                .status
                .and_then(|s| s.allocation)
                .map(|a| a.claimed)
                .unwrap_or_default();
            let hard = new.spec.and_then(|s| s.quota.hard).unwrap_or_default();
            let short = shrinks_below_claimed(&hard, &claimed);
            if short.is_empty() {
                return Ok(Verdict::allow());
            }
            Ok(Verdict::deny(
                None,
                format!(
                    "ResourcePool {} cannot hold less than its claims and their use take: {}; release claims first",
                    req.name,
                    short.join("; ")
                ),
            ))
        }
        "ResourcePoolClaim" => {
            let new = parse::<Claim>(req.object.as_deref())?;
            let old = parse::<Claim>(req.old_object.as_deref())?;
            if let Some(message) = new
                .as_ref()
                .and_then(|c| c.spec.as_ref())
                .and_then(|spec| bad_quantities(&req.name, &spec.claim))
            {
                return Ok(Verdict::deny(None, message));
            }
            let Some(old) = old else {
                return Ok(Verdict::allow());
            };
            let what = match (&new, operation) {
                (None, _) => "deleted",
                (Some(new), _) if new.spec != old.spec => "changed",
                (Some(new), _) if releases(&new.metadata) && !releases(&old.metadata) => "released",
                _ => return Ok(Verdict::allow()),
            };
            let namespace = req.namespace.clone().unwrap_or_default();
            // A namespace being deleted goes with everything in it.
            if what == "deleted"
                && cache
                    .namespace(&namespace)
                    .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some())
            {
                return Ok(Verdict::allow());
            }
            let status = old.status.unwrap_or_default();
            let (Some(pool), false) = (status.pool, status.allocation.is_empty()) else {
                return Ok(Verdict::allow());
            };
            let Some(client) = client else {
                return Ok(Verdict::deny(
                    None,
                    "cannot tell whether the claim is in use: no API client; retry",
                ));
            };
            let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
            let quota = match quotas.get_opt(&format!("{QUOTA_PREFIX}{}", pool.name)).await {
                Ok(q) => q,
                Err(e) => {
                    return Ok(Verdict::deny(
                        None,
                        format!("cannot tell whether the claim is in use: {e}; retry"),
                    ));
                }
            };
            let Some(quota) = quota else {
                return Ok(Verdict::allow());
            };
            let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
            let used = quota.status.and_then(|s| s.used).unwrap_or_default();
            let in_use = needed(&status.allocation, &hard, &used);
            if in_use.is_empty() {
                return Ok(Verdict::allow());
            }
            Ok(Verdict::deny(
                None,
                format!(
                    "ResourcePoolClaim {} is in use in namespace {namespace} (ResourcePool {}) and cannot be {what}: {}; free what it pays for first",
                    req.name,
                    pool.name,
                    in_use.join("; ")
                ),
            ))
        }
        _ => Ok(Verdict::allow()),
    }
}

fn releases(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(RELEASE_ANNOTATION))
        .is_some_and(|v| v == "true")
}
