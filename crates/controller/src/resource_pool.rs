//! ResourcePools: the leader binds claims ([`bulkhead_policy::resource_pool::plan`]), keeps one
//! ResourceQuota per selected namespace (`bulkhead-pool-<pool>`: the pool's defaults plus the bound
//! claims there), and writes pool and claim status.
//!
//! Quotas are lowered at once and raised only within what nobody may hold now
//! ([`quota::raise_within_slack`]), the limits in force being the higher of the cached and the last
//! written: however stale the cache, the limits in force never add up to more than the pool holds.
//! A deleted pool (held by a finalizer) takes its quotas with it and lets its claims go, or deletes
//! the bound ones with `config.deleteBoundResources`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_api::labels;
use bulkhead_api::resource_pool::{
    POOL_FINALIZER, POOL_LABEL, PoolAllocation, PoolClaimRef, PoolExhaustion, PoolReference, QUOTA_PREFIX,
    RELEASE_ANNOTATION, ResourcePool, ResourcePoolClaim, ResourcePoolClaimStatus, ResourcePoolStatus,
};
use bulkhead_policy::quota::{self, format_millis, parse_millis};
use bulkhead_policy::resource_pool::{Claim, Observed, Outcome, Pool, plan};
use bulkhead_policy::selector;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::custom_quota::condition_of;
use crate::reconcile::Context;

/// How often the pools are counted again without a change.
const RESYNC: Duration = Duration::from_secs(30);
/// How long changes are gathered before counting.
const SETTLE: Duration = Duration::from_millis(100);

/// What the loop remembers between passes.
#[derive(Default)]
struct Memory {
    /// The limits last written to each pool quota (namespace, name).
    written: HashMap<(String, String), BTreeMap<String, Quantity>>,
    /// A digest of the last quota applied (namespace, name).
    applied: HashMap<(String, String), u64>,
}

/// Keeps the pools until `stop`.
pub async fn keep(ctx: Arc<Context>, stop: CancellationToken) {
    let cache = ctx.cache.clone();
    let mut pools = cache.resource_pools().subscribe();
    let mut claims = cache.resource_pool_claims().subscribe();
    let mut quotas = cache.resource_quotas().subscribe();
    let mut namespaces = cache.namespaces_feed().subscribe();
    let mut memory = Memory::default();
    loop {
        let pass_failed = pass(&ctx, &mut memory).await;
        let wait = if pass_failed {
            Duration::from_secs(2)
        } else {
            RESYNC
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = pools.recv() => {}
            _ = claims.recv() => {}
            _ = quotas.recv() => {}
            _ = namespaces.recv() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(SETTLE).await;
        while pools.try_recv().is_ok()
            || claims.try_recv().is_ok()
            || quotas.try_recv().is_ok()
            || namespaces.try_recv().is_ok()
        {}
    }
}

fn claim_key(c: &ResourcePoolClaim) -> (String, String) {
    (c.namespace().unwrap_or_default(), c.name_any())
}

fn releasing(c: &ResourcePoolClaim) -> bool {
    c.annotations()
        .get(RELEASE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

fn pool_input(pool: &ResourcePool) -> Pool {
    let config = pool.spec.config.clone().unwrap_or_default();
    Pool {
        name: pool.name_any(),
        hard: pool
            .spec
            .quota
            .hard
            .iter()
            .flatten()
            .filter_map(|(r, q)| Some((r.clone(), parse_millis(&q.0)?)))
            .collect(),
        defaults: pool.spec.defaults.clone(),
        defaults_zero: config.defaults_zero.unwrap_or(false),
        ordered_queue: config.ordered_queue.unwrap_or(false),
    }
}

fn selected(pool: &ResourcePool, namespaces: &[(String, BTreeMap<String, String>)]) -> BTreeSet<String> {
    namespaces
        .iter()
        .filter(|(_, l)| {
            pool.spec
                .selectors
                .iter()
                .any(|s| selector::matches_namespace(s, l))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// One pass over every pool and claim; true when something could not be written.
async fn pass(ctx: &Context, memory: &mut Memory) -> bool {
    let cache = &ctx.cache;
    let pools = cache.resource_pools().store().state();
    let claims = cache.resource_pool_claims().store().state();
    // Most clusters have no pools: then a change of some quota or namespace costs nothing here.
    if pools.is_empty() && claims.is_empty() {
        return false;
    }
    let namespaces = cache.namespace_labels();
    let mut failed = false;
    let (deleting, active): (Vec<_>, Vec<_>) = pools
        .iter()
        .cloned()
        .partition(|p| p.metadata.deletion_timestamp.is_some());
    for pool in &deleting {
        if let Err(e) = finalize(ctx, pool, &claims, &namespaces).await {
            warn!(pool = %pool.name_any(), error = %e, "cannot let a deleted ResourcePool go");
            failed = true;
        }
    }
    // Which pool each claim claims from: its own, or one chosen for it.
    let selections: HashMap<String, BTreeSet<String>> = active
        .iter()
        .map(|p| (p.name_any(), selected(p, &namespaces)))
        .collect();
    let mut by_pool: HashMap<String, Vec<Arc<ResourcePoolClaim>>> = HashMap::new();
    let mut statuses: Vec<(Arc<ResourcePoolClaim>, ResourcePoolClaimStatus)> = Vec::new();
    for claim in &claims {
        match assign(claim, &active, &selections) {
            Ok(pool) => by_pool.entry(pool).or_default().push(claim.clone()),
            Err((reason, message)) => {
                let previous = claim.status.clone().unwrap_or_default();
                let status = ResourcePoolClaimStatus {
                    pool: None,
                    allocation: BTreeMap::new(),
                    conditions: vec![
                        condition_of("Assigned", false, reason, message.clone(), &previous.conditions),
                        condition_of("Bound", false, reason, message, &previous.conditions),
                    ],
                    observed_generation: claim.metadata.generation,
                };
                statuses.push((claim.clone(), status));
            }
        }
    }
    for pool in &active {
        let name = pool.name_any();
        if !pool.finalizers().iter().any(|f| f == POOL_FINALIZER)
            && let Err(e) = set_finalizer(ctx, pool, true).await
        {
            warn!(pool = %name, error = %e, "cannot hold a ResourcePool with a finalizer");
            failed = true;
        }
        let mine = by_pool.remove(&name).unwrap_or_default();
        match keep_pool(ctx, memory, pool, &selections[&name], &mine, &namespaces).await {
            Ok(mut s) => statuses.append(&mut s),
            Err(e) => {
                warn!(pool = %name, error = %e, "cannot keep a ResourcePool");
                failed = true;
            }
        }
    }
    for (claim, status) in statuses {
        let (ns, name) = claim_key(&claim);
        let pool = status.pool.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        for (condition, value) in [
            ("Bound", is_true(&status.conditions, "Bound")),
            ("InUse", is_true(&status.conditions, "InUse")),
        ] {
            ctx.metrics
                .resource_pool_claim
                .with_label_values(&[&ns, &name, &pool, condition])
                .set(i64::from(value));
        }
        if releasing(&claim) && !is_true(&status.conditions, "InUse") {
            // Released: it queues again (by its creation time, as any other).
            let patch = json!({"metadata": {"annotations": {RELEASE_ANNOTATION: null}}});
            if let Err(e) = Api::<ResourcePoolClaim>::namespaced(ctx.client.clone(), &ns)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!(claim = %format!("{ns}/{name}"), error = %e, "cannot release a ResourcePoolClaim");
                failed = true;
            }
        }
        if claim.status.as_ref() == Some(&status) {
            continue;
        }
        if let Err(e) = write_status::<ResourcePoolClaim>(
            Api::namespaced(ctx.client.clone(), &ns),
            &name,
            serde_json::to_value(&status).unwrap_or_default(),
        )
        .await
        {
            warn!(claim = %format!("{ns}/{name}"), error = %e, "cannot write a ResourcePoolClaim's status");
            failed = true;
        }
    }
    failed
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The pool a claim claims from, or why none.
fn assign(
    claim: &ResourcePoolClaim,
    active: &[Arc<ResourcePool>],
    selections: &HashMap<String, BTreeSet<String>>,
) -> Result<String, (&'static str, String)> {
    let ns = claim.namespace().unwrap_or_default();
    if let Some(wanted) = claim.spec.pool.as_deref().filter(|p| !p.is_empty()) {
        return if selections.contains_key(wanted) {
            Ok(wanted.to_owned())
        } else {
            Err(("Failed", format!("ResourcePool {wanted:?} not found")))
        };
    }
    let holds_all = |p: &ResourcePool| {
        let hard = p.spec.quota.hard.clone().unwrap_or_default();
        claim.spec.claim.keys().all(|r| hard.contains_key(r))
    };
    let candidates: Vec<&Arc<ResourcePool>> = active
        .iter()
        .filter(|p| selections[&p.name_any()].contains(&ns) && holds_all(p))
        .collect();
    // The pool chosen before stays chosen while it may be claimed from.
    if let Some(before) = claim.status.as_ref().and_then(|s| s.pool.as_ref())
        && candidates.iter().any(|p| p.name_any() == before.name)
    {
        return Ok(before.name.clone());
    }
    let has_room = |p: &ResourcePool| {
        let available = p
            .status
            .as_ref()
            .and_then(|s| s.allocation.as_ref())
            .map(|a| a.available.clone())
            .unwrap_or_default();
        claim.spec.claim.iter().all(|(r, q)| {
            let left = available.get(r).and_then(|a| parse_millis(&a.0)).unwrap_or(0);
            parse_millis(&q.0).is_some_and(|want| want <= left)
        })
    };
    candidates
        .iter()
        .find(|p| has_room(p))
        .or(candidates.first())
        .map(|p| p.name_any())
        .ok_or((
            "Unassigned",
            format!(
                "no ResourcePool selects namespace {ns} and holds {}",
                claim.spec.claim.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ))
}

/// Binds the pool's claims, keeps its quotas and status; returns the claims' statuses.
async fn keep_pool(
    ctx: &Context,
    memory: &mut Memory,
    pool: &ResourcePool,
    namespaces: &BTreeSet<String>,
    claims: &[Arc<ResourcePoolClaim>],
    all_namespaces: &[(String, BTreeMap<String, String>)],
) -> Result<Vec<(Arc<ResourcePoolClaim>, ResourcePoolClaimStatus)>, String> {
    let name = pool.name_any();
    let uid = pool.uid().unwrap_or_default();
    let quota_name = format!("{QUOTA_PREFIX}{name}");
    let input = pool_input(pool);
    let mut observed: BTreeMap<String, Observed> = BTreeMap::new();
    for ns in namespaces {
        let key = (ns.clone(), quota_name.clone());
        let cached = ctx
            .cache
            .resource_quotas()
            .get(ns, &quota_name)
            .and_then(|q| q.quota.clone());
        let cached_hard = cached.as_ref().map(|q| q.hard()).unwrap_or_default();
        // The limits in force: the higher of the cached and the last written.
        let in_force = match memory.written.get(&key) {
            Some(last) => crate::reconcile::higher_limits(&cached_hard, last),
            None => cached_hard,
        };
        let used = cached.and_then(|q| q.used()).unwrap_or_default();
        observed.insert(ns.clone(), Observed { in_force, used });
    }
    let inputs: Vec<Claim> = claims
        .iter()
        .map(|c| {
            let status = c.status.clone().unwrap_or_default();
            Claim {
                namespace: c.namespace().unwrap_or_default(),
                name: c.name_any(),
                created: c
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                claim: c.spec.claim.clone(),
                bound: !releasing(c)
                    && is_true(&status.conditions, "Bound")
                    && status.pool.as_ref().is_some_and(|p| p.uid == uid)
                    && status.allocation == c.spec.claim,
            }
        })
        .collect();
    let planned = plan(&input, namespaces, &inputs, &observed);
    // Lower at once, raise within the slack.
    let written = quota::raise_within_slack(
        pool.spec.quota.hard.as_ref().unwrap_or(&BTreeMap::new()),
        planned.hard.clone(),
        |ns| observed.get(ns).map(|o| &o.used),
        |ns| observed.get(ns).map(|o| &o.in_force),
    );
    let mut short = false;
    for (ns, hard) in &written {
        if planned.hard.get(ns) != Some(hard) {
            short = true;
        }
        // A namespace being deleted keeps counting (its pods still run) but takes no writes: the API
        // server refuses new content there, and its quota goes with it.
        if ctx
            .cache
            .namespace(ns)
            .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
        {
            continue;
        }
        apply_quota(ctx, memory, pool, ns, &quota_name, hard).await?;
    }
    // Namespaces no longer selected lose the pool's quota.
    for (ns, _) in all_namespaces {
        if namespaces.contains(ns) || ctx.cache.resource_quotas().get(ns, &quota_name).is_none() {
            continue;
        }
        delete_quota(ctx, memory, ns, &quota_name).await?;
    }
    // Claims' statuses.
    let pool_ref = PoolReference {
        name: name.clone(),
        uid: uid.clone(),
    };
    let mut statuses = Vec::new();
    let mut bound: BTreeMap<String, Vec<PoolClaimRef>> = BTreeMap::new();
    for (claim, (outcome, in_use)) in claims.iter().zip(&planned.claims) {
        let previous = claim.status.clone().unwrap_or_default();
        let is_bound = *outcome == Outcome::Bound;
        let message = outcome.message(&claim.spec.claim);
        let assigned_ok = !matches!(outcome, Outcome::Failed(_));
        let in_use_message = if *in_use {
            "what the namespace uses needs this claim: it cannot be changed, released or deleted".to_owned()
        } else {
            "the namespace does not need this claim".to_owned()
        };
        let status = ResourcePoolClaimStatus {
            pool: Some(pool_ref.clone()),
            allocation: if is_bound {
                claim.spec.claim.clone()
            } else {
                BTreeMap::new()
            },
            conditions: vec![
                condition_of(
                    "Assigned",
                    assigned_ok,
                    if assigned_ok { "Succeeded" } else { "Failed" },
                    if assigned_ok {
                        format!("claims from ResourcePool {name}")
                    } else {
                        message.clone()
                    },
                    &previous.conditions,
                ),
                condition_of("Bound", is_bound, outcome.reason(), message, &previous.conditions),
                condition_of(
                    "InUse",
                    *in_use,
                    if *in_use { "Used" } else { "Unused" },
                    in_use_message,
                    &previous.conditions,
                ),
            ],
            observed_generation: claim.metadata.generation,
        };
        if is_bound {
            bound
                .entry(claim.namespace().unwrap_or_default())
                .or_default()
                .push(PoolClaimRef {
                    name: claim.name_any(),
                    uid: claim.uid().unwrap_or_default(),
                    claims: claim.spec.claim.clone(),
                });
        }
        statuses.push((claim.clone(), status));
    }
    // The pool's status.
    let hard = pool.spec.quota.hard.clone().unwrap_or_default();
    let mut allocation = PoolAllocation {
        hard: hard.clone(),
        ..PoolAllocation::default()
    };
    for (r, limit) in &input.hard {
        let taken = planned.claimed.get(r).copied().unwrap_or(0);
        allocation
            .claimed
            .insert(r.clone(), Quantity(format_millis(taken)));
        allocation
            .available
            .insert(r.clone(), Quantity(format_millis((limit - taken).max(0))));
        for (value, amount) in [
            ("hard", *limit),
            ("claimed", taken),
            ("available", (limit - taken).max(0)),
        ] {
            ctx.metrics
                .resource_pool
                .with_label_values(&[&name, r, value])
                .set(amount as f64 / 1000.0);
        }
    }
    let exhaustions: BTreeMap<String, PoolExhaustion> = planned
        .exhausted
        .iter()
        .map(|(r, asked)| {
            let left = input.hard[r] - planned.claimed.get(r).copied().unwrap_or(0);
            (
                r.clone(),
                PoolExhaustion {
                    requesting: Quantity(format_millis(*asked)),
                    available: Quantity(format_millis(left.max(0))),
                },
            )
        })
        .collect();
    let previous = pool.status.clone().unwrap_or_default();
    let bad: Vec<&String> = pool
        .spec
        .quota
        .hard
        .iter()
        .flatten()
        .filter(|(_, q)| parse_millis(&q.0).is_none())
        .map(|(r, _)| r)
        .collect();
    let ready = bad.is_empty();
    let claim_count = bound.values().map(Vec::len).sum::<usize>() as i64;
    let status = ResourcePoolStatus {
        namespaces: namespaces.iter().cloned().collect(),
        namespace_count: Some(namespaces.len() as i64),
        claim_count: Some(claim_count),
        allocation: Some(allocation),
        claims: bound,
        conditions: vec![
            condition_of(
                "Ready",
                ready,
                if ready { "Succeeded" } else { "Failed" },
                if ready {
                    if short {
                        "counted; some quotas are raised as room is freed".to_owned()
                    } else {
                        "counted".to_owned()
                    }
                } else {
                    format!(
                        "not quantities in quota.hard: {}",
                        bad.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )
                },
                &previous.conditions,
            ),
            condition_of(
                "Exhausted",
                !exhaustions.is_empty(),
                if exhaustions.is_empty() {
                    "Available"
                } else {
                    "Exhausted"
                },
                if exhaustions.is_empty() {
                    "no claim waits for room".to_owned()
                } else {
                    format!(
                        "claims wait for room in {}",
                        exhaustions.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
                &previous.conditions,
            ),
        ],
        exhaustions,
        observed_generation: pool.metadata.generation,
    };
    if pool.status.as_ref() != Some(&status) {
        write_status::<ResourcePool>(
            Api::all(ctx.client.clone()),
            &name,
            serde_json::to_value(&status).unwrap_or_default(),
        )
        .await?;
    }
    Ok(statuses)
}

/// Applies a namespace's pool quota, unless it is as last applied and the cache agrees.
async fn apply_quota(
    ctx: &Context,
    memory: &mut Memory,
    pool: &ResourcePool,
    ns: &str,
    name: &str,
    hard: &BTreeMap<String, Quantity>,
) -> Result<(), String> {
    let mut spec = json!({"hard": hard});
    if let Some(scopes) = &pool.spec.quota.scopes {
        spec["scopes"] = json!(scopes);
    }
    if let Some(scope_selector) = &pool.spec.quota.scope_selector {
        spec["scopeSelector"] = json!(scope_selector);
    }
    let object = json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                labels::MANAGED_BY: labels::MANAGED_BY_VALUE,
                POOL_LABEL: pool.name_any(),
            },
        },
        "spec": spec,
    });
    let digest = bulkhead_cache::projected::digest(&object);
    let key = (ns.to_owned(), name.to_owned());
    let cached_hard = ctx
        .cache
        .resource_quotas()
        .get(ns, name)
        .and_then(|q| q.quota.clone())
        .map(|q| q.hard());
    if memory.applied.get(&key) == Some(&digest) && cached_hard.as_ref() == Some(hard) {
        return Ok(());
    }
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), ns);
    let params = PatchParams::apply(labels::FIELD_MANAGER).force();
    // Remembered before the write: a raise may land even if its answer is lost.
    memory.written.insert(key.clone(), hard.clone());
    match api.patch(name, &params, &Patch::Apply(&object)).await {
        Ok(_) => {
            memory.applied.insert(key, digest);
            Ok(())
        }
        Err(e) => {
            memory.applied.remove(&key);
            Err(format!("cannot apply ResourceQuota {ns}/{name}: {e}"))
        }
    }
}

async fn delete_quota(ctx: &Context, memory: &mut Memory, ns: &str, name: &str) -> Result<(), String> {
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(format!("cannot delete ResourceQuota {ns}/{name}: {e}")),
    }
    let key = (ns.to_owned(), name.to_owned());
    memory.written.remove(&key);
    memory.applied.remove(&key);
    Ok(())
}

/// A merge patch of an object's status.
async fn write_status<K>(api: Api<K>, name: &str, status: Value) -> Result<(), String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Fields emptied since are written as null, so a merge patch removes them.
    let mut status = status;
    if let Some(map) = status.as_object_mut() {
        for field in [
            "pool",
            "allocation",
            "claims",
            "exhaustions",
            "conditions",
            "namespaces",
        ] {
            map.entry(field).or_insert(Value::Null);
        }
    }
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(format!("cannot write the status of {name}: {e}")),
    }
}

/// Adds or removes the pool's finalizer, with the resourceVersion as a precondition.
async fn set_finalizer(ctx: &Context, pool: &ResourcePool, hold: bool) -> Result<(), String> {
    let mut finalizers: Vec<String> = pool
        .finalizers()
        .iter()
        .filter(|f| *f != POOL_FINALIZER)
        .cloned()
        .collect();
    if hold {
        finalizers.push(POOL_FINALIZER.to_owned());
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": pool.resource_version(),
    }});
    match Api::<ResourcePool>::all(ctx.client.clone())
        .patch(&pool.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile: the next pass sees the new version.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Lets a deleted pool go: its quotas are deleted, its bound claims deleted too with
/// `deleteBoundResources` (else let go: the next pass finds them without a pool), then the finalizer
/// is removed.
async fn finalize(
    ctx: &Context,
    pool: &ResourcePool,
    claims: &[Arc<ResourcePoolClaim>],
    namespaces: &[(String, BTreeMap<String, String>)],
) -> Result<(), String> {
    if !pool.finalizers().iter().any(|f| f == POOL_FINALIZER) {
        return Ok(());
    }
    let name = pool.name_any();
    let quota_name = format!("{QUOTA_PREFIX}{name}");
    let mut memory = Memory::default();
    for (ns, _) in namespaces {
        if ctx.cache.resource_quotas().get(ns, &quota_name).is_some() {
            delete_quota(ctx, &mut memory, ns, &quota_name).await?;
        }
    }
    let delete_bound = pool
        .spec
        .config
        .as_ref()
        .and_then(|c| c.delete_bound_resources)
        .unwrap_or(false);
    if delete_bound {
        let uid = pool.uid().unwrap_or_default();
        for claim in claims {
            let status = claim.status.clone().unwrap_or_default();
            if status.pool.as_ref().is_some_and(|p| p.uid == uid) && is_true(&status.conditions, "Bound") {
                let (ns, claim_name) = claim_key(claim);
                match Api::<ResourcePoolClaim>::namespaced(ctx.client.clone(), &ns)
                    .delete(&claim_name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        info!(pool = %name, claim = %format!("{ns}/{claim_name}"), "deleted a bound claim of a deleted pool")
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(format!("cannot delete ResourcePoolClaim {ns}/{claim_name}: {e}")),
                }
            }
        }
    }
    set_finalizer(ctx, pool, false).await
}
