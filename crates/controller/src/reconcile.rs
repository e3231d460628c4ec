//! The Tenant reconciler: desired state from `bulkhead-policy`, applied with server-side apply, orphans
//! deleted, status kept. It reads only the shared cache and writes only what differs from what it last
//! applied, so an idle cluster gets no writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_api::config::{BulkheadConfigurationSpec, CapsuleMigration};
use bulkhead_api::tenant::{TenantState, TenantStatus};
use bulkhead_api::{Tenant, labels};
use bulkhead_cache::Cache;
use bulkhead_cache::kind::Change;
use bulkhead_cache::projected::{self, Owned, OwnedCache, OwnedKind};
use bulkhead_policy::desired::{self, Desired, QuotaObserved, TenantNamespace};
use bulkhead_policy::{migration, owners, quota};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::metrics::ControllerMetrics;

/// How often every tenant is reconciled even when nothing changed (drift the watches could not see).
pub const RESYNC: Duration = Duration::from_secs(600);

/// How many writes the controller has in flight at most, over all tenants: enough to keep the API
/// server busy, few enough that the client keeps its connections and the server its latency.
pub const WRITE_CONCURRENCY: usize = 16;

/// What the controller last applied to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The digest of the configuration sent.
    pub config: u64,
    /// The content digest of the object the API server answered with ([`projected::content_digest`]).
    pub content: u64,
    /// The resourceVersion it answered with, when a number.
    pub version: Option<u64>,
}

impl Applied {
    /// Whether `have` is the object as this apply left it, or an older version the cache still holds
    /// (its watch event is on its way and will trigger a reconcile of its own).
    fn holds(&self, have: &Owned) -> bool {
        self.content == have.content || self.is_newer_than(have.version)
    }

    /// Whether this apply's answer is newer than the cached version `cached`.
    fn is_newer_than(&self, cached: Option<u64>) -> bool {
        matches!((cached, self.version), (Some(cached), Some(written)) if cached < written)
    }
}

/// What the cache holds of an object about to be applied.
enum Current {
    /// The whole object (namespaces), as JSON.
    Whole(Option<Value>),
    /// The projection of an owned object, and the newest resourceVersion its kind's cache has seen.
    Projected(Option<Arc<Owned>>, u64),
}

/// What failed while reconciling a tenant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{step} {object}: {source}")]
    Api {
        /// What was being done.
        step: &'static str,
        /// Which object.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What the reconciler needs.
pub struct Context {
    /// Records Events on Tenants (identical ones are folded into one with a count).
    pub recorder: Recorder,
    /// Consecutive failed attempts per tenant, and when the next one is due, for backoff.
    pub failures: Mutex<HashMap<String, (u32, std::time::Instant)>>,
    /// A client with Bulkhead's own credentials.
    pub client: Client,
    /// The shared cache.
    pub cache: Cache,
    /// What was last applied, by object (a digest of kind, namespace and name): the configuration sent
    /// and the content the API server answered with. An entry is dropped when an apply fails, so the
    /// next reconcile applies again.
    pub applied: Mutex<HashMap<u64, Applied>>,
    /// Writes in flight, at most [`WRITE_CONCURRENCY`].
    pub writes: tokio::sync::Semaphore,
    /// The limits last written to each tenant-scope ResourceQuota (namespace, name): the cache may not
    /// have seen a raise yet, and sharing the tenant's budget must count it (see
    /// [`quota::raise_within_slack`]).
    pub quota_written: Mutex<HashMap<(String, String), BTreeMap<String, Quantity>>>,
    /// Metrics.
    pub metrics: ControllerMetrics,
    /// Each tenant's last status write: the watch event of that write is its echo and needs no
    /// reconcile, and a reconcile reading an older copy of the tenant does not write it again.
    pub status_written: Mutex<HashMap<String, StatusWritten>>,
    /// The namespaces whose objects are all as wanted.
    pub settled: crate::settled::Settled,
}

/// What the last status write of a tenant left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusWritten {
    /// The tenant as the API server answered ([`tenant_digest`]).
    pub tenant: u64,
    /// The status written.
    pub status: u64,
    /// The resourceVersion of the answer, when a number.
    pub version: Option<u64>,
}

impl Context {
    /// A context over a client and the shared cache.
    pub fn new(
        client: Client,
        cache: Cache,
        metrics: ControllerMetrics,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: "bulkhead".into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            failures: Mutex::new(HashMap::new()),
            client,
            cache,
            applied: Mutex::new(HashMap::new()),
            writes: tokio::sync::Semaphore::new(WRITE_CONCURRENCY),
            quota_written: Mutex::new(HashMap::new()),
            metrics,
            status_written: Mutex::new(HashMap::new()),
            settled: crate::settled::Settled::default(),
        }
    }

    /// Whether a change to an owned object of `kind` is the echo of this process's own write: the
    /// object is as the apply left it (same configuration, same content, nobody else wrote it since),
    /// it did not move between tenants, and no quota usage a tenant-scope budget shares changed. An
    /// echo needs no reconcile: the reconcile that wrote it saw to everything else.
    fn is_echo(&self, kind: &str, change: &projected::OwnedChange) -> bool {
        let Some(object) = &change.object else {
            return false;
        };
        if change.deleted || change.before.is_some() || object.touched || object.applied.is_none() {
            return false;
        }
        let key = object_key(kind, &object.namespace, &object.name);
        let own = self
            .applied
            .lock()
            .get(&key)
            .is_some_and(|last| Some(last.config) == object.applied && last.content == object.content);
        if !own {
            return false;
        }
        // Usage decides the namespaces' shares of a tenant-scope budget.
        !(change.usage_changed && self.tenant_of(object).is_some_and(|t| shares_budget(&t)))
    }

    fn tenant_of(&self, object: &Owned) -> Option<Arc<Tenant>> {
        self.cache.tenant(object.tenant.as_deref()?)
    }

    /// Hears of a change to an owned object of `kind` and returns whether it is an echo
    /// ([`Context::is_echo`]), which asks for no reconcile. It keeps the memo true to what the cache
    /// says: a deleted object is applied again when wanted, and after a relist (`object` absent:
    /// changes may have been missed) nothing is remembered, so the next reconciles go by the objects'
    /// annotations and managedFields. A changed namespace stops being settled ([`crate::settled`]); a
    /// quota's usage that no budget shares only refreshes the usage gauges.
    pub fn note(&self, kind: &str, change: &projected::OwnedChange) -> bool {
        match &change.object {
            Some(gone) if change.deleted => {
                self.applied
                    .lock()
                    .remove(&object_key(kind, &gone.namespace, &gone.name));
                self.settled.dirty(&gone.namespace);
                false
            }
            Some(object) => {
                let echo = self.is_echo(kind, change);
                if !echo {
                    self.settled.dirty(&object.namespace);
                } else if change.usage_changed
                    && let Some(tenant) = self.tenant_of(object)
                {
                    let observed = quota_observed(
                        self.cache.resource_quotas(),
                        &tenant.name_any(),
                        &self.quota_written.lock(),
                    );
                    self.metrics.observe_quota(&tenant, &observed.used);
                }
                echo
            }
            None => {
                self.applied.lock().clear();
                self.settled.clear();
                false
            }
        }
    }

    /// Hears of a namespace change and returns whether it is the echo of this process's metadata
    /// apply ([`Context::is_namespace_echo`]); anything else unsettles the namespace.
    pub fn note_namespace(&self, change: &Change<Namespace>) -> bool {
        match change {
            Change::Applied(ns, None) if self.is_namespace_echo(ns) => true,
            Change::Applied(ns, _) => {
                self.settled.dirty(&ns.name_any());
                false
            }
            Change::Deleted(ns) => {
                self.settled.forget(&ns.name_any());
                false
            }
        }
    }

    /// Whether a namespace change is the echo of this process's metadata apply: not terminating, and
    /// with the configuration and content the apply left. (The cache keeps namespaces without their
    /// managedFields: the content alone says nobody changed what Bulkhead applies.)
    fn is_namespace_echo(&self, namespace: &Namespace) -> bool {
        if namespace.metadata.deletion_timestamp.is_some() {
            return false;
        }
        let Some(config) = projected::applied_digest(&namespace.metadata) else {
            return false;
        };
        let key = object_key("Namespace", "", &namespace.name_any());
        let remembered = self.applied.lock().get(&key).copied();
        remembered
            .is_some_and(|last| last.config == config && last.content == projected::content_digest(namespace))
    }

    /// Whether a Tenant change is the echo of this process's status write: the tenant is exactly as
    /// that write left it.
    pub fn is_status_echo(&self, tenant: &Tenant) -> bool {
        let remembered = self.status_written.lock().get(&tenant.name_any()).copied();
        remembered.is_some_and(|w| w.tenant == tenant_digest(tenant))
    }

    /// Forgets what was remembered of a deleted tenant.
    pub fn forget_tenant(&self, tenant: &str) {
        self.status_written.lock().remove(tenant);
        self.failures.lock().remove(tenant);
    }

    pub(crate) async fn warn(&self, tenant: &Tenant, reason: &str, note: String) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &tenant.object_ref(&())).await {
            debug!(%error, "cannot record an Event");
        }
    }
}

/// Whether `want` (what Bulkhead applies) is contained in `have` (the object as cached).
pub(crate) fn contained(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            w.iter().all(|(k, v)| h.get(k).is_some_and(|hv| contained(v, hv)))
        }
        (w, h) => w == h,
    }
}

/// Reconciles one tenant.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&tenant, &ctx).await;
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[outcome]).inc();
    ctx.metrics
        .duration
        .with_label_values(&[outcome])
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let name = tenant.name_any();
    if tenant.metadata.deletion_timestamp.is_some() {
        // Namespaces and everything in them go with the Tenant through their ownerReferences.
        return Ok(Action::await_change());
    }
    let cache = &ctx.cache;
    let config = cache.configuration();
    let (default_problems, mut default_failures) = create_default_namespaces(ctx, tenant, &config).await;
    default_failures.extend(adopt_capsule_namespaces(ctx, tenant, &config).await);
    let namespaces: Vec<TenantNamespace> = cache
        .namespaces_of(&name)
        .into_iter()
        .filter_map(|ns| cache.namespace(&ns))
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .map(|ns| TenantNamespace {
            name: ns.name_any(),
            labels: ns.labels().clone(),
        })
        .collect();
    // The owners: spec.owners, the TenantOwners the tenant selects and the ServiceAccounts its owners
    // promoted. Everything below provisions them all; the status lists them for the webhook and proxy.
    let in_tenant: BTreeSet<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    let owners = {
        let promoted = cache.promoted_in(&in_tenant);
        let tenant_owners = cache.tenant_owners().store().state();
        owners::effective(
            tenant,
            tenant_owners.iter().map(AsRef::as_ref),
            &promoted,
            &config,
        )
    };
    // Rule promotions become rule bindings of the promoted ServiceAccounts.
    let owned_tenant = {
        let mut t = owners::with_rule_promotions(tenant, &cache.rule_promoted_in(&in_tenant), &config);
        t.spec.owners = owners.clone();
        t
    };
    let tenant = &owned_tenant;
    let quotas = quota_observed(cache.resource_quotas(), &name, &ctx.quota_written.lock());
    ctx.metrics.observe_quota(tenant, &quotas.used);
    // A tenant of many namespaces is provisioned a few namespaces at a time, so that its desired state
    // is never all in memory at once; tenant-scope quotas share one budget over all of them.
    let shared_budget = shares_budget(tenant);
    let chunk = if shared_budget {
        namespaces.len().max(1)
    } else {
        NAMESPACE_CHUNK
    };
    // Namespaces nothing happened to since a reconcile left them as wanted are not compared again.
    let mark = ctx.settled.mark();
    let tenant_inputs = projected::digest(&json!([name, tenant.metadata.uid, tenant.spec]));
    let inputs = |ns: &TenantNamespace| projected::digest(&json!([tenant_inputs, ns.name, ns.labels]));
    let mut settled = HashSet::new();
    let pending: Vec<TenantNamespace> = namespaces
        .iter()
        .filter(|ns| {
            let skip = !shared_budget && ctx.settled.is_settled(&ns.name, inputs(ns), RESYNC);
            if skip {
                settled.insert(ns.name.clone());
            }
            !skip
        })
        .cloned()
        .collect();
    let mut settling = Vec::new();
    // The spec's problems (owners that are no valid subjects) are the same for every namespace; so are
    // those admission refuses (regexes that do not compile, CIDRs that do not parse), which a Tenant
    // applied while the webhook was down (it fails open for Tenants) may still have.
    let mut problems = desired::desired_state(tenant, &[], &quotas).problems;
    // Cluster roles the configuration does not let tenants hand out are reported and not bound (the
    // chart's RBAC would refuse the binding anyway).
    problems.extend(desired::unbindable_roles(tenant, &config));
    let provisioned = desired::without_unbindable_roles(tenant, &config);
    problems.extend(bulkhead_policy::admission::tenant_problems_beyond_owners(tenant));
    problems.extend(default_problems);
    let mut failures = default_failures;
    let mut wanted = Wanted::default();
    for part in pending.chunks(chunk) {
        let failed_before = failures.len();
        let desired = desired::desired_state(&provisioned, part, &quotas);
        // Problems a namespace shows (a rule binding's template that fails over it).
        for problem in &desired.problems {
            if !problems.contains(problem) {
                problems.push(problem.clone());
            }
        }
        failures.extend(apply_namespaces(ctx, tenant, &desired, config.capsule_migration).await);
        failures.extend(
            apply_kind(
                ctx,
                &desired.role_bindings,
                cache.role_bindings(),
                &mut wanted.role_bindings,
            )
            .await,
        );
        let quotas = lowered_first(&desired.resource_quotas, cache.resource_quotas());
        let quota_failures =
            apply_kind(ctx, &quotas, cache.resource_quotas(), &mut wanted.resource_quotas).await;
        // Only tenant-scope quotas share a budget whose limits in force must be remembered.
        if shared_budget {
            remember_quota_limits(ctx, &quotas, quota_failures.is_empty());
        } else {
            forget_quota_limits(ctx, &quotas);
        }
        failures.extend(quota_failures);
        failures.extend(
            apply_kind(
                ctx,
                &desired.limit_ranges,
                cache.limit_ranges(),
                &mut wanted.limit_ranges,
            )
            .await,
        );
        failures.extend(
            apply_kind(
                ctx,
                &desired.network_policies,
                cache.network_policies(),
                &mut wanted.network_policies,
            )
            .await,
        );
        if failures.len() == failed_before {
            settling.extend(part.iter().map(|ns| (ns.name.clone(), inputs(ns))));
        }
    }
    let failed_before = failures.len();
    failures.extend(prune_kind(ctx, &name, &wanted.role_bindings, &settled, cache.role_bindings()).await);
    failures.extend(
        prune_kind(
            ctx,
            &name,
            &wanted.resource_quotas,
            &settled,
            cache.resource_quotas(),
        )
        .await,
    );
    failures.extend(prune_kind(ctx, &name, &wanted.limit_ranges, &settled, cache.limit_ranges()).await);
    failures.extend(
        prune_kind(
            ctx,
            &name,
            &wanted.network_policies,
            &settled,
            cache.network_policies(),
        )
        .await,
    );
    if failures.len() == failed_before {
        for (namespace, inputs) in settling {
            ctx.settled.settle(&namespace, inputs, mark);
        }
    }

    let messages: Vec<String> = failures.iter().map(ToString::to_string).collect();
    for problem in &problems {
        ctx.warn(tenant, "InvalidSpec", problem.clone()).await;
    }
    for message in &messages {
        ctx.warn(tenant, "ApplyFailed", message.clone()).await;
    }
    if let Err(e) = update_status(ctx, tenant, &namespaces, &problems, &messages).await {
        ctx.warn(tenant, "StatusFailed", e.to_string()).await;
        return Err(e);
    }
    ctx.metrics.observe_tenant(
        tenant,
        namespaces.len(),
        problems.is_empty() && failures.is_empty(),
    );
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => {
            ctx.failures.lock().remove(&name);
            Ok(Action::requeue(RESYNC))
        }
    }
}

/// Creates the tenant's default namespaces that do not exist ([`desired::default_namespaces`]): what
/// cannot be made is returned as problems, the creates that failed as failures. A create that finds the
/// namespace made meanwhile (the cache had not seen it) is no failure: its watch event brings the next
/// reconcile, which sees whose it is.
async fn create_default_namespaces(
    ctx: &Context,
    tenant: &Tenant,
    config: &BulkheadConfigurationSpec,
) -> (Vec<String>, Vec<Error>) {
    let listed = tenant
        .spec
        .namespace_options
        .as_ref()
        .is_some_and(|o| !o.default_namespaces.is_empty());
    if !listed {
        return (Vec::new(), Vec::new());
    }
    let cache = &ctx.cache;
    let name = tenant.name_any();
    let count = cache.namespaces_of(&name).len();
    let plan = desired::default_namespaces(tenant, config, count, |ns| match cache.namespace(ns) {
        None => desired::Existing::Absent,
        Some(found) => desired::Existing::Present {
            tenant: found.labels().get(labels::TENANT).cloned(),
            terminating: found.metadata.deletion_timestamp.is_some(),
        },
    });
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let mut failures = Vec::new();
    for namespace in &plan.create {
        let ns = namespace.name_any();
        let _permit = ctx.writes.acquire().await;
        match api.create(&kube::api::PostParams::default(), namespace).await {
            Ok(_) => {
                info!(tenant = %name, namespace = %ns, "created a default namespace");
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(tenant = %name, namespace = %ns, "the default namespace exists already");
            }
            Err(source) => failures.push(Error::Api {
                step: "create default namespace",
                object: ns,
                source,
            }),
        }
    }
    (plan.problems, failures)
}

/// Migration from Capsule (`capsuleMigration` set): the namespaces Capsule made for a tenant of this
/// name (its label and its ownerReference both say so) get Bulkhead's tenant label, after which they
/// are the tenant's like any other. One that another Bulkhead tenant holds is left alone.
async fn adopt_capsule_namespaces(
    ctx: &Context,
    tenant: &Tenant,
    config: &BulkheadConfigurationSpec,
) -> Vec<Error> {
    if config.capsule_migration.is_none() {
        return Vec::new();
    }
    let name = tenant.name_any();
    let candidates: Vec<String> = ctx
        .cache
        .capsule_namespaces_of(&name)
        .iter()
        .filter_map(|ns| ctx.cache.namespace(ns))
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| !ns.labels().contains_key(labels::TENANT))
        .filter(|ns| migration::capsule_tenant_of(ns) == Some(name.as_str()))
        .map(|ns| ns.name_any())
        .collect();
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let mut failures = Vec::new();
    for ns in candidates {
        let patch = json!({"metadata": {"labels": {labels::TENANT: name}}});
        let _permit = ctx.writes.acquire().await;
        match api
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => info!(tenant = %name, namespace = %ns, "adopted a namespace from Capsule"),
            Err(source) => failures.push(Error::Api {
                step: "adopt Capsule namespace",
                object: ns,
                source,
            }),
        }
    }
    failures
}

/// The quotas whose limits go down come first: while some quotas are updated and others not yet, the
/// limits in force never add up to more than either the old or the new shares do.
fn lowered_first(desired: &[ResourceQuota], cached: &OwnedCache<ResourceQuota>) -> Vec<ResourceQuota> {
    let lowers = |quota: &ResourceQuota| {
        let current = cached.get(&quota.namespace().unwrap_or_default(), &quota.name_any());
        let current_hard = current.as_ref().and_then(|c| c.quota.as_ref()).map(|q| q.hard());
        let wanted = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
        wanted.iter().flat_map(|h| h.iter()).any(|(resource, want)| {
            let now = current_hard
                .as_ref()
                .and_then(|h| h.get(resource))
                .and_then(|q| quota::parse_millis(&q.0));
            matches!((now, quota::parse_millis(&want.0)), (Some(now), Some(want)) if want < now)
        })
    };
    let mut ordered = desired.to_vec();
    ordered.sort_by_key(|q| !lowers(q));
    ordered
}

/// Records the limits just written. When some write failed its outcome is unknown: a limit is then
/// remembered as the higher of the old and the new, which is what may be in force.
fn remember_quota_limits(ctx: &Context, written: &[ResourceQuota], all_succeeded: bool) {
    let mut memo = ctx.quota_written.lock();
    for quota in written {
        let Some(hard) = quota.spec.as_ref().and_then(|s| s.hard.clone()) else {
            continue;
        };
        let key = (quota.namespace().unwrap_or_default(), quota.name_any());
        let entry = memo.entry(key).or_default();
        if all_succeeded {
            *entry = hard;
        } else {
            *entry = higher_limits(entry, &hard);
        }
    }
}

/// Drops what was remembered of these quotas (their tenant's budget is no longer shared).
fn forget_quota_limits(ctx: &Context, quotas: &[ResourceQuota]) {
    let mut memo = ctx.quota_written.lock();
    if memo.is_empty() {
        return;
    }
    for quota in quotas {
        memo.remove(&(quota.namespace().unwrap_or_default(), quota.name_any()));
    }
}

/// Each resource's higher limit of the two.
pub(crate) fn higher_limits(
    a: &BTreeMap<String, Quantity>,
    b: &BTreeMap<String, Quantity>,
) -> BTreeMap<String, Quantity> {
    let mut out = a.clone();
    for (resource, q) in b {
        let keep = out.get(resource).and_then(|o| quota::parse_millis(&o.0));
        if keep.is_none_or(|k| quota::parse_millis(&q.0).is_some_and(|n| n > k)) {
            out.insert(resource.clone(), q.clone());
        }
    }
    out
}

/// What each namespace's quota for each item reports as used, and the limits it holds in force: the
/// higher of what the cache shows and what this process last wrote.
fn quota_observed(
    cached: &OwnedCache<ResourceQuota>,
    tenant: &str,
    written: &HashMap<(String, String), BTreeMap<String, Quantity>>,
) -> QuotaObserved {
    let prefix = format!("bulkhead-{tenant}-");
    let mut observed = QuotaObserved::default();
    for (ns, name) in cached.of_tenant(tenant) {
        let Some(index) = name.strip_prefix(&prefix).and_then(|i| i.parse::<usize>().ok()) else {
            continue;
        };
        let Some(state) = cached.get(&ns, &name).and_then(|q| q.quota.clone()) else {
            continue;
        };
        let (ns, name) = (ns.to_string(), name.to_string());
        if let Some(used) = state.used() {
            observed.used.insert((ns.clone(), index), used);
        }
        let cached_hard = state.hard();
        let hard = match written.get(&(ns.clone(), name.clone())) {
            Some(last) => higher_limits(&cached_hard, last),
            None => cached_hard,
        };
        observed.in_force.insert((ns, index), hard);
    }
    // Quotas written but not in the cache yet hold their limits all the same.
    for ((ns, name), last) in written {
        let Some(index) = name.strip_prefix(&prefix).and_then(|i| i.parse::<usize>().ok()) else {
            continue;
        };
        observed
            .in_force
            .entry((ns.clone(), index))
            .or_insert_with(|| last.clone());
    }
    observed
}

/// How many namespaces of a tenant are provisioned together (their desired objects in memory at once).
const NAMESPACE_CHUNK: usize = 16;

/// The objects a reconcile wants, by kind, as (namespace, name): what is not among them is pruned.
#[derive(Default)]
struct Wanted {
    role_bindings: BTreeSet<(String, String)>,
    resource_quotas: BTreeSet<(String, String)>,
    limit_ranges: BTreeSet<(String, String)>,
    network_policies: BTreeSet<(String, String)>,
}

/// Applies the namespaces' metadata (labels, annotations and the ownerReference that makes the
/// namespace go with its Tenant: the admission webhook sets it at creation; here it also reaches
/// namespaces an administrator labelled into the tenant), one namespace after the other.
async fn apply_namespaces(
    ctx: &Context,
    tenant: &Tenant,
    desired: &Desired,
    phase: Option<CapsuleMigration>,
) -> Vec<Error> {
    let mut failures = Vec::new();
    for metadata in &desired.namespaces {
        let cached = ctx.cache.namespace(&metadata.namespace);
        let present = cached
            .as_ref()
            .and_then(|n| n.metadata.owner_references.clone())
            .unwrap_or_default();
        let wanted = migration::owner_references(&present, &desired::tenant_owner_reference(tenant), phase);
        // Capsule's ownerReferences belong to Capsule's field manager: an apply cannot remove them, a
        // patch of the whole list (at the version read) can.
        let releasing =
            phase == Some(CapsuleMigration::Complete) && present.iter().any(migration::is_capsule_tenant);
        if releasing && let Some(ns) = &cached {
            let patch =
                json!({"metadata": {"ownerReferences": wanted, "resourceVersion": ns.resource_version()}});
            let api: Api<Namespace> = Api::all(ctx.client.clone());
            let _permit = ctx.writes.acquire().await;
            match api
                .patch(
                    &metadata.namespace,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    info!(tenant = %tenant.name_any(), namespace = %metadata.namespace, "released a namespace from Capsule's Tenant")
                }
                Err(source) => failures.push(Error::Api {
                    step: "release namespace from Capsule",
                    object: metadata.namespace.clone(),
                    source,
                }),
            }
            continue; // applied once the change is in the cache
        }
        let owner = wanted
            .last()
            .cloned()
            .unwrap_or_else(|| desired::tenant_owner_reference(tenant));
        let mut patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": metadata.namespace, "labels": metadata.labels, "ownerReferences": [owner]}});
        if !metadata.annotations.is_empty() {
            patch["metadata"]["annotations"] = json!(metadata.annotations);
        }
        let current = cached.and_then(|n| serde_json::to_value(&*n).ok());
        if let Err(e) = apply_if_changed::<Namespace>(
            ctx,
            Api::all(ctx.client.clone()),
            &metadata.namespace,
            patch,
            Current::Whole(current),
        )
        .await
        {
            failures.push(e);
        }
    }
    failures
}

/// Applies every desired object of a kind that changed (several at once, within the controller's
/// write budget; each patch made only when its turn comes), adding each to `wanted`.
async fn apply_kind<K: OwnedKind>(
    ctx: &Context,
    desired: &[K],
    cached: &OwnedCache<K>,
    wanted: &mut BTreeSet<(String, String)>,
) -> Vec<Error> {
    wanted.extend(
        desired
            .iter()
            .map(|o| (o.namespace().unwrap_or_default(), o.name_any())),
    );
    // By index: a closure over `&K` would not be general enough for the Controller's Send bound.
    futures::stream::iter((0..desired.len()).map(|i| apply_owned(ctx, &desired[i], cached)))
        .buffer_unordered(WRITE_CONCURRENCY)
        .filter_map(|r| std::future::ready(r.err()))
        .collect()
        .await
}

/// Applies one desired object unless it is current.
async fn apply_owned<K: OwnedKind>(ctx: &Context, object: &K, cached: &OwnedCache<K>) -> Result<(), Error> {
    let ns = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let Ok(mut patch) = serde_json::to_value(object) else {
        return Ok(());
    };
    patch["apiVersion"] = json!(K::api_version(&()));
    patch["kind"] = json!(K::kind(&()));
    let current = cached.get(&ns, &name);
    let seen = cached.latest_version();
    apply_if_changed::<K>(
        ctx,
        Api::namespaced(ctx.client.clone(), &ns),
        &name,
        patch,
        Current::Projected(current, seen),
    )
    .await
}

/// Deletes this tenant's objects of a kind that are not `wanted` (and that it owns), outside the
/// `settled` namespaces (whose objects this reconcile did not compute).
async fn prune_kind<K: OwnedKind>(
    ctx: &Context,
    tenant: &str,
    wanted: &BTreeSet<(String, String)>,
    settled: &HashSet<String>,
    cached: &OwnedCache<K>,
) -> Vec<Error> {
    let mut failures = Vec::new();
    for (ns, name) in cached.of_tenant(tenant) {
        if settled.contains(&*ns) {
            continue;
        }
        let (ns, name) = (ns.to_string(), name.to_string());
        if wanted.contains(&(ns.clone(), name.clone())) {
            continue;
        }
        // Only what this Tenant owns: the labels alone could be copied onto anything.
        let owned_by_tenant = cached
            .get(&ns, &name)
            .is_some_and(|o| o.owner.as_deref() == Some(tenant));
        if !owned_by_tenant {
            continue;
        }
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        let permit = ctx.writes.acquire().await;
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                info!(tenant, kind = K::kind(&()).as_ref(), namespace = %ns, name, "deleted what the tenant no longer wants")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => failures.push(Error::Api {
                step: "deleting",
                object: format!("{} {ns}/{name}", K::kind(&())),
                source,
            }),
        }
        drop(permit);
        ctx.applied.lock().remove(&object_key(&K::kind(&()), &ns, &name));
    }
    failures
}

/// Whether `tenant`'s quotas are tenant-scope: one budget shared by its namespaces by their usage.
fn shares_budget(tenant: &Tenant) -> bool {
    tenant
        .spec
        .resource_quotas
        .as_ref()
        .is_some_and(|q| q.scope == bulkhead_api::tenant::QuotaScope::Tenant)
}

/// A digest of a whole Tenant but the metadata every write changes (resourceVersion, managedFields).
fn tenant_digest(tenant: &Tenant) -> u64 {
    let mut value = serde_json::to_value(tenant).unwrap_or_default();
    if let Some(Value::Object(meta)) = value.get_mut("metadata") {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    projected::digest(&value)
}

/// The memo key of one object.
fn object_key(kind: &str, namespace: &str, name: &str) -> u64 {
    projected::digest(&json!([kind, namespace, name]))
}

/// Server-side applies `patch` unless the object is as this configuration makes it: for a whole cached
/// object, the configuration (with its digest annotation) is contained in it; for a projection, this
/// process applied this configuration and nobody changed the object since, or (after a restart, with
/// nothing remembered) the object carries this configuration's digest and nobody else wrote it since.
async fn apply_if_changed<K>(
    ctx: &Context,
    api: Api<K>,
    name: &str,
    mut patch: Value,
    current: Current,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + serde::Serialize,
{
    let namespace = patch
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let key = object_key(&K::kind(&()), &namespace, name);
    let config = projected::stamp_applied(&mut patch);
    let remembered = ctx.applied.lock().get(&key).copied();
    if is_current(&patch, config, remembered, &current) {
        if remembered.is_none()
            && let Current::Projected(Some(have), _) = &current
        {
            ctx.applied.lock().insert(
                key,
                Applied {
                    config,
                    content: have.content,
                    version: have.version,
                },
            );
        }
        return Ok(());
    }
    let params = PatchParams::apply(labels::FIELD_MANAGER).force();
    let permit = ctx.writes.acquire().await;
    let result = api.patch(name, &params, &Patch::Apply(&patch)).await;
    drop(permit);
    match result {
        Ok(answer) => {
            debug!(kind = K::kind(&()).as_ref(), namespace, name, "applied");
            ctx.applied.lock().insert(
                key,
                Applied {
                    config,
                    content: projected::content_digest(&answer),
                    version: projected::version(answer.meta().resource_version.as_deref()),
                },
            );
            Ok(())
        }
        Err(source) => {
            ctx.applied.lock().remove(&key);
            Err(Error::Api {
                step: "applying",
                object: format!("{}/{namespace}/{name}", K::kind(&())),
                source,
            })
        }
    }
}

/// Whether the object is as the configuration `patch` (digest `config`) makes it, by what the cache
/// holds and what this process remembers applying.
fn is_current(patch: &Value, config: u64, remembered: Option<Applied>, current: &Current) -> bool {
    match current {
        Current::Whole(None) => false,
        // Created by this process, and the cache has not come as far as that create yet.
        Current::Projected(None, seen) => {
            remembered.is_some_and(|last| last.config == config && last.version.is_some_and(|v| v > *seen))
        }
        Current::Whole(Some(have)) => {
            contained(&strip_for_compare(patch), have)
                || remembered.is_some_and(|last| {
                    let cached =
                        projected::version(have.pointer("/metadata/resourceVersion").and_then(Value::as_str));
                    last.config == config && last.is_newer_than(cached)
                })
        }
        Current::Projected(Some(have), _) => match remembered {
            Some(last) => last.config == config && last.holds(have),
            None => have.applied == Some(config) && !have.touched,
        },
    }
}

/// The parts of an applied configuration the cached object is compared on (the cache keeps no
/// apiVersion/kind for some clients, and the server fills in defaults we do not send).
pub(crate) fn strip_for_compare(patch: &Value) -> Value {
    let mut p = patch.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
    }
    p
}

async fn update_status(
    ctx: &Context,
    tenant: &Tenant,
    namespaces: &[TenantNamespace],
    problems: &[String],
    failures: &[String],
) -> Result<(), Error> {
    let mut names: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    names.sort();
    let problems: Vec<String> = problems.iter().chain(failures).cloned().collect();
    let (status, reason, message) = if problems.is_empty() {
        (
            "True",
            "Reconciled",
            format!("{} namespaces have everything the spec asks for", names.len()),
        )
    } else {
        ("False", "Failed", problems.join("; "))
    };
    let previous = tenant.status.clone().unwrap_or_default();
    let previous_ready = previous.conditions.iter().find(|c| c.type_ == "Ready");
    let transition = match previous_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let ready = Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: transition,
        observed_generation: tenant.metadata.generation,
    };
    let next = TenantStatus {
        state: Some(if tenant.spec.cordoned {
            TenantState::Cordoned
        } else {
            TenantState::Active
        }),
        size: u32::try_from(names.len()).unwrap_or(u32::MAX),
        namespaces: names,
        // `tenant` is the Tenant as provisioned: its owners are all of them.
        owners: owners::status(&tenant.spec.owners),
        observed_generation: tenant.metadata.generation,
        conditions: vec![ready],
    };
    if previous == next {
        return Ok(());
    }
    let mut patch = json!({"status": next});
    // A merge patch leaves out what it does not name: emptied lists are written as null.
    for list in ["namespaces", "owners"] {
        if patch["status"].get(list).is_none() {
            patch["status"][list] = Value::Null;
        }
    }
    let status = projected::digest(&patch);
    let name = tenant.name_any();
    // This status is written already, and the cache has not seen that write yet.
    let written = ctx.status_written.lock().get(&name).copied();
    if let Some(written) = written
        && written.status == status
        && matches!((projected::version(tenant.metadata.resource_version.as_deref()), written.version),
            (Some(cached), Some(version)) if cached < version)
    {
        return Ok(());
    }
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|answer| {
            ctx.status_written.lock().insert(
                name.clone(),
                StatusWritten {
                    tenant: tenant_digest(&answer),
                    status,
                    version: projected::version(answer.metadata.resource_version.as_deref()),
                },
            );
        })
        .map_err(|source| Error::Api {
            step: "updating the status of",
            object: format!("Tenant {}", tenant.name_any()),
            source,
        })
}

/// After a failure: retry this tenant later, doubling the wait with each consecutive failure (1 s up to
/// 5 min; the first failures are often a moment's, such as a webhook still loading its certificate).
/// Other tenants are not held up: each is scheduled on its own.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = tenant.name_any();
    // A failure counts as a new attempt only once the retry it waited for is due: a burst of changes
    // to the tenant's objects (its namespaces appearing one by one) runs several reconciles that fail
    // for the same reason within a second, and must not take the backoff to minutes for it.
    let (attempts, delay) = {
        let now = std::time::Instant::now();
        let mut failures = ctx.failures.lock();
        next_attempt(failures.entry(name.clone()).or_insert((0, now)), now)
    };
    warn!(tenant = %name, %error, attempts, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Records a failure in `(attempts, due)` at `now`: a new attempt (and a longer backoff) only when the
/// retry was due; the attempts and the time left until the retry.
pub fn next_attempt(entry: &mut (u32, std::time::Instant), now: std::time::Instant) -> (u32, Duration) {
    let (n, due) = entry;
    if now >= *due {
        *n = n.saturating_add(1);
        *due = now + backoff(*n);
    }
    (*n, due.saturating_duration_since(now))
}

/// 1 s, 2 s, 4 s, ... at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(10);
    Duration::from_secs(secs.min(300))
}

/// Labels of the objects the controller applies, for the chart's and tests' reference.
pub fn managed_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_within_a_backoff_are_one_attempt() {
        let start = std::time::Instant::now();
        let mut entry = (0, start);
        assert_eq!(next_attempt(&mut entry, start), (1, Duration::from_secs(1)));
        // Eight more failures within the same second (a burst of events): still the first attempt,
        // retried when it was due.
        for ms in 1..9 {
            let (n, left) = next_attempt(&mut entry, start + Duration::from_millis(ms * 100));
            assert_eq!(n, 1);
            assert_eq!(left, Duration::from_millis(1000 - ms * 100));
        }
        // The retry fails: the second attempt waits 2 s, the third 4 s.
        let at = start + Duration::from_secs(1);
        assert_eq!(next_attempt(&mut entry, at), (2, Duration::from_secs(2)));
        assert_eq!(
            next_attempt(&mut entry, at + Duration::from_secs(2)),
            (3, Duration::from_secs(4))
        );
    }

    #[test]
    fn containment_ignores_what_the_server_adds() {
        let want = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"hard": {"pods": "5"}}});
        let have = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "uid": "x"}, "spec": {"hard": {"pods": "5"}}, "status": {}});
        assert!(contained(&want, &have));
        assert!(!contained(
            &want,
            &json!({"metadata": {"labels": {"a": "2"}}, "spec": {"hard": {"pods": "5"}}})
        ));
        assert!(!contained(
            &json!({"subjects": [{"name": "a"}]}),
            &json!({"subjects": [{"name": "a"}, {"name": "b"}]})
        ));
        assert_ne!(projected::digest(&want), projected::digest(&have));
    }

    fn context() -> Context {
        // Never called: the echo rules read only the memo and the cache.
        let client = Client::try_from(kube::Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap();
        Context::new(client, Cache::detached(), ControllerMetrics::unregistered(), None)
    }

    fn quota(tenant: &str, label: &str, used: Option<&str>) -> ResourceQuota {
        let mut patch = json!({"metadata": {"name": "bulkhead-a-0", "namespace": "ns",
            "labels": {labels::TENANT: tenant, "x": label}}, "spec": {"hard": {"pods": "5"}}});
        projected::stamp_applied(&mut patch);
        let mut quota: ResourceQuota = serde_json::from_value(patch).unwrap();
        quota.metadata.managed_fields = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(labels::FIELD_MANAGER.into()),
                operation: Some("Apply".into()),
                time: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            },
        ]);
        quota.status = used.map(|u| k8s_openapi::api::core::v1::ResourceQuotaStatus {
            used: Some([("pods".to_owned(), Quantity(u.to_owned()))].into()),
            hard: None,
        });
        quota
    }

    fn change_of(ctx: &Context, object: ResourceQuota) -> projected::OwnedChange {
        let mut changes = ctx.cache.resource_quotas().subscribe();
        ctx.cache
            .resource_quotas()
            .apply(kube::runtime::watcher::Event::Apply(object));
        changes.try_recv().unwrap()
    }

    fn remember(ctx: &Context, object: &ResourceQuota) {
        ctx.applied.lock().insert(
            object_key("ResourceQuota", "ns", "bulkhead-a-0"),
            Applied {
                config: projected::applied_digest(&object.metadata).unwrap(),
                content: projected::content_digest(object),
                version: None,
            },
        );
    }

    fn tenant(name: &str, scope: &str) -> Tenant {
        serde_json::from_value(json!({"apiVersion": "bulkhead.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name}, "spec": {"owners": [{"kind": "User", "name": "alice"}],
            "resourceQuotas": {"scope": scope, "items": [{"hard": {"pods": "5"}}]}}}))
        .unwrap()
    }

    #[tokio::test]
    async fn the_echo_of_an_own_write_triggers_nothing_and_anything_else_does() {
        let ctx = context();
        let written = quota("a", "1", None);
        // Not remembered (another process wrote it, or a restart): not an echo.
        assert!(!ctx.is_echo("ResourceQuota", &change_of(&ctx, written.clone())));
        remember(&ctx, &written);
        assert!(ctx.is_echo("ResourceQuota", &change_of(&ctx, written.clone())));
        // Another kind's memo entry does not count.
        assert!(!ctx.is_echo("LimitRange", &change_of(&ctx, written.clone())));
        // Someone changed a label: the reconcile puts it back.
        assert!(!ctx.is_echo("ResourceQuota", &change_of(&ctx, quota("a", "2", None))));
        // It moved to another tenant: both tenants hear of it.
        change_of(&ctx, written.clone());
        let moved = quota("b", "1", None);
        remember(&ctx, &moved);
        assert!(!ctx.is_echo("ResourceQuota", &change_of(&ctx, moved)));
        // Someone else wrote it after Bulkhead's apply, even with the same content.
        let mut touched = written.clone();
        touched.metadata.managed_fields.as_mut().unwrap().push(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some("kubectl-edit".into()),
                operation: Some("Update".into()),
                time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            },
        );
        change_of(&ctx, written.clone());
        assert!(!ctx.is_echo("ResourceQuota", &change_of(&ctx, touched)));
    }

    #[tokio::test]
    async fn quota_usage_triggers_a_reconcile_only_where_it_shares_a_budget() {
        let ctx = context();
        let written = quota("a", "1", None);
        remember(&ctx, &written);
        ctx.cache
            .tenants_feed()
            .apply(kube::runtime::watcher::Event::Apply(tenant("a", "Namespace")));
        change_of(&ctx, written.clone());
        assert!(ctx.note("ResourceQuota", &change_of(&ctx, quota("a", "1", Some("1")))));
        let gauge = ctx
            .metrics
            .quota_used
            .with_label_values(&["a", "0", "pods"])
            .get();
        assert_eq!(gauge, 1.0, "the usage gauge follows without a reconcile");
        ctx.cache
            .tenants_feed()
            .apply(kube::runtime::watcher::Event::Apply(tenant("a", "Tenant")));
        assert!(!ctx.note("ResourceQuota", &change_of(&ctx, quota("a", "1", Some("2")))));
        // The same usage again (another status write) changes nothing.
        assert!(ctx.note("ResourceQuota", &change_of(&ctx, quota("a", "1", Some("2")))));
    }

    #[tokio::test]
    async fn an_object_not_yet_cached_is_not_created_twice_and_a_deleted_one_is_created_again() {
        let ctx = context();
        let patch = json!({"metadata": {"name": "bulkhead-a-0", "namespace": "ns"}});
        let created = Applied {
            config: 7,
            content: 1,
            version: Some(100),
        };
        // The cache has seen this kind up to version 90: the create's event is still on its way.
        assert!(is_current(
            &patch,
            7,
            Some(created),
            &Current::Projected(None, 90)
        ));
        // It has come past the create and holds no such object: deleted since, so applied again.
        assert!(!is_current(
            &patch,
            7,
            Some(created),
            &Current::Projected(None, 100)
        ));
        // Another configuration is wanted now, or nothing is remembered: applied.
        assert!(!is_current(
            &patch,
            8,
            Some(created),
            &Current::Projected(None, 90)
        ));
        assert!(!is_current(&patch, 7, None, &Current::Projected(None, 90)));

        // The deletion's event forgets the create; a relist forgets everything.
        let written = quota("a", "1", None);
        remember(&ctx, &written);
        change_of(&ctx, written.clone());
        let mut changes = ctx.cache.resource_quotas().subscribe();
        ctx.cache
            .resource_quotas()
            .apply(kube::runtime::watcher::Event::Delete(written.clone()));
        let deleted = changes.try_recv().unwrap();
        assert!(deleted.deleted && !ctx.is_echo("ResourceQuota", &deleted));
        ctx.note("ResourceQuota", &deleted);
        assert!(ctx.applied.lock().is_empty());
        remember(&ctx, &written);
        ctx.note(
            "ResourceQuota",
            &projected::OwnedChange {
                tenant: Some("a".into()),
                before: None,
                object: None,
                usage_changed: false,
                deleted: false,
            },
        );
        assert!(ctx.applied.lock().is_empty());
    }

    #[tokio::test]
    async fn a_namespace_echo_is_as_the_apply_left_it_and_not_terminating() {
        let ctx = context();
        let mut patch = json!({"metadata": {"name": "ns", "labels": {labels::TENANT: "a"}}});
        let config = projected::stamp_applied(&mut patch);
        // As the cache holds it: no managedFields.
        let namespace: Namespace = serde_json::from_value(patch).unwrap();
        assert!(!ctx.is_namespace_echo(&namespace), "nothing remembered");
        ctx.applied.lock().insert(
            object_key("Namespace", "", "ns"),
            Applied {
                config,
                content: projected::content_digest(&namespace),
                version: None,
            },
        );
        assert!(ctx.is_namespace_echo(&namespace));
        let mut relabelled = namespace.clone();
        relabelled.labels_mut().insert("team".into(), "x".into());
        assert!(!ctx.is_namespace_echo(&relabelled));
        let mut terminating = namespace.clone();
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(
            !ctx.is_namespace_echo(&terminating),
            "its tenant loses it from its status"
        );
    }

    #[tokio::test]
    async fn a_status_echo_is_the_tenant_exactly_as_written() {
        let ctx = context();
        let mut written = tenant("a", "Namespace");
        written.metadata.resource_version = Some("5".into());
        ctx.status_written.lock().insert(
            "a".into(),
            StatusWritten {
                tenant: tenant_digest(&written),
                status: 0,
                version: Some(5),
            },
        );
        let mut echo = written.clone();
        echo.metadata.resource_version = Some("6".into());
        assert!(ctx.is_status_echo(&echo));
        let mut edited = echo.clone();
        edited.spec.cordoned = true;
        assert!(!ctx.is_status_echo(&edited));
        assert!(!ctx.is_status_echo(&tenant("b", "Namespace")));
        ctx.forget_tenant("a");
        assert!(!ctx.is_status_echo(&echo));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
