//! Replication: GlobalTenantResources and TenantResources copied into tenant namespaces.
//!
//! One reconciler per kind, fed by the shared cache like the Tenant controller. A reconcile plans the
//! objects (`bulkhead_policy::replication::plan`), applies them with server-side apply (skipped when
//! unchanged since the last apply), deletes what it applied before and no longer wants (only objects
//! carrying its `replicated-by` label), and records every item in the status. A GlobalTenantResource
//! writes as Bulkhead; a TenantResource writes only into its own tenant's namespaces, and as a
//! ServiceAccount of the tenant (impersonated), so RBAC limits it exactly as it limits the tenant.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_api::labels;
use bulkhead_api::replication::{
    DependsOn, ProcessedItem, ReplicatedResources, ReplicationOptions, ReplicationScope, ReplicationStatus,
};
use bulkhead_api::{GlobalTenantResource, TenantResource};
use bulkhead_cache::Cache;
use bulkhead_cache::kind::Change;
use bulkhead_cache::sources::MetadataEvent;
use bulkhead_policy::desired::TenantNamespace;
use bulkhead_policy::replication::{
    Input, Read, Selected, Target, Writer, key_of, owner_label, place, plan, reads,
};
use bulkhead_policy::selector;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::discovery::Scope;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The finalizer that lets a resource prune what it created (`pruningOnDelete`).
pub const FINALIZER: &str = "bulkhead.dev/replication-cleanup";

/// How replication runs.
#[derive(Clone, Debug)]
pub struct ReplicationSettings {
    /// The ServiceAccount (in the TenantResource's namespace) a TenantResource writes as when it names none.
    pub default_service_account: String,
    /// The connection settings impersonated clients are built from.
    pub kube_config: Option<kube::Config>,
}

/// What the replication reconcilers share.
pub struct Context {
    metrics: crate::metrics::ControllerMetrics,
    client: Client,
    cache: Cache,
    settings: ReplicationSettings,
    recorder: Recorder,
    discovered: Mutex<HashMap<(String, String), (ApiResource, Scope)>>,
    impersonated: Mutex<HashMap<String, Client>>,
    applied: Mutex<HashMap<AppliedKey, (u64, Option<String>)>>,
    /// What each resource (by owner label) read in its last reconcile: sources of `namespacedItems`
    /// and `context` objects, with templates filled in. Their watches follow this.
    reads: Mutex<HashMap<String, BTreeSet<Read>>>,
}

/// (owner label, apiVersion, kind, namespace, name) of an applied object.
type AppliedKey = (String, String, String, String, String);

/// A replication failure (reconciles are retried).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Context {
    /// A context for both reconcilers.
    pub fn new(
        client: Client,
        cache: Cache,
        settings: ReplicationSettings,
        metrics: crate::metrics::ControllerMetrics,
    ) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "bulkhead-replication".into(),
                instance: None,
            },
        );
        Context {
            metrics,
            client,
            cache,
            settings,
            recorder,
            discovered: Mutex::new(HashMap::new()),
            impersonated: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            reads: Mutex::new(HashMap::new()),
        }
    }

    /// A client acting as `user` (a ServiceAccount, with the groups the API server gives one).
    fn client_as(&self, user: &str) -> Result<Client, String> {
        if let Some(c) = self.impersonated.lock().get(user) {
            return Ok(c.clone());
        }
        let mut config = self
            .settings
            .kube_config
            .clone()
            .ok_or_else(|| "no connection settings to impersonate with".to_owned())?;
        config.auth_info.impersonate = Some(user.to_owned());
        // No groups: for a ServiceAccount the API server adds its groups itself, and Bulkhead needs no
        // right to impersonate groups (which would let it act as any group).
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config).map_err(|e| format!("cannot build a client as {user}: {e}"))?;
        self.impersonated.lock().insert(user.to_owned(), client.clone());
        Ok(client)
    }

    /// The API resource and scope of a kind, from discovery (remembered).
    async fn discover(&self, api_version: &str, kind: &str) -> Result<(ApiResource, Scope), String> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.discovered.lock().get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| format!("the API server does not serve {api_version} {kind}: {e}"))?;
        let found = (resource, caps.scope);
        self.discovered.lock().insert(key, found.clone());
        Ok(found)
    }
}

/// Parses a Go-style duration (`60s`, `5m`, `1h30m`, `500ms`); `None` if it does not parse.
pub fn parse_period(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return None,
        };
    }
    Some(total)
}

/// What a reconcile works on, for either kind.
struct Job<'a> {
    kind: &'static str,
    namespace: Option<&'a str>,
    name: String,
    owner: String,
    resources: &'a [ReplicatedResources],
    scope: ReplicationScope,
    settings: ReplicationOptions,
    previous: Vec<ProcessedItem>,
    /// The client reads and writes go through, and who it is (for messages).
    client: Client,
    writer: String,
}

/// The selected tenants, each with its object (for templates) and its namespaces.
fn selected_tenants(cache: &Cache, tenants: &BTreeSet<String>) -> Vec<Selected> {
    let mut out = Vec::new();
    for tenant in tenants {
        let Some(object) = cache.tenant(tenant) else {
            continue;
        };
        let mut namespaces = Vec::new();
        for ns in cache.namespaces_of(tenant) {
            if let Some(n) = cache.namespace(&ns)
                && n.metadata.deletion_timestamp.is_none()
            {
                namespaces.push(Target {
                    tenant: tenant.clone(),
                    namespace: TenantNamespace {
                        name: ns,
                        labels: n.labels().clone(),
                    },
                });
            }
        }
        let mut value = serde_json::to_value(&*object).unwrap_or_default();
        if let Some(meta) = value["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        out.push(Selected {
            tenant: value,
            namespaces,
        });
    }
    out
}

/// Does every read a plan asks for: one object by name, or a list by namespace and selector.
async fn do_reads(
    ctx: &Context,
    client: &Client,
    wanted: BTreeSet<Read>,
) -> HashMap<Read, Result<Vec<Value>, String>> {
    let mut out = HashMap::new();
    for read in wanted {
        let result = async {
            let (resource, scope) = ctx.discover(&read.api_version, &read.kind).await?;
            let api: Api<DynamicObject> = match (&scope, &read.namespace) {
                (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
                _ => Api::all_with(client.clone(), &resource),
            };
            let types = kube::core::TypeMeta {
                api_version: read.api_version.clone(),
                kind: read.kind.clone(),
            };
            let found: Vec<DynamicObject> = match &read.name {
                Some(name) => api
                    .get_opt(name)
                    .await
                    .map_err(|e| one_line(&e))?
                    .into_iter()
                    .collect(),
                None => {
                    let mut params = ListParams::default();
                    if !read.selector.is_empty() {
                        params = params.labels(&read.selector);
                    }
                    api.list(&params).await.map_err(|e| one_line(&e))?.items
                }
            };
            Ok(found
                .into_iter()
                .map(|mut o| {
                    o.types = Some(types.clone());
                    o.metadata.managed_fields = None;
                    serde_json::to_value(o).unwrap_or_default()
                })
                .collect())
        }
        .await;
        out.insert(read, result);
    }
    out
}

/// Applies the plan, prunes what is no longer wanted; returns the processed items and problems.
async fn run_job(
    ctx: &Context,
    job: &Job<'_>,
    writer: &Writer,
    tenants: &[Selected],
) -> (Vec<ProcessedItem>, Vec<String>) {
    let input = Input {
        owner: &job.owner,
        writer,
        scope: job.scope,
        resources: job.resources,
        tenants,
    };
    let wanted_reads = reads(&input);
    {
        let mut recorded = ctx.reads.lock();
        if wanted_reads.is_empty() {
            recorded.remove(&job.owner);
        } else {
            recorded.insert(job.owner.clone(), wanted_reads.clone());
        }
    }
    let listed = do_reads(ctx, &job.client, wanted_reads).await;
    let lookup = |read: &Read| listed.get(read).cloned().unwrap_or_else(|| Ok(Vec::new()));
    let planned = plan(&input, &lookup);
    let mut problems = planned.problems;
    let tenant_namespaces: BTreeSet<String> = tenants
        .iter()
        .flat_map(|t| t.namespaces.iter().map(|n| n.namespace.name.clone()))
        .collect();
    let mut processed = Vec::new();
    let mut wanted: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    for mut object in planned.objects {
        let (api_version, kind, planned_namespace, name) = key_of(&object);
        let tenant = object["metadata"]["labels"][labels::TENANT]
            .as_str()
            .map(str::to_owned);
        let discovered = ctx.discover(&api_version, &kind).await;
        let placed = discovered.clone().and_then(|(_, scope)| {
            place(
                writer,
                job.scope,
                scope == Scope::Namespaced,
                &planned_namespace,
                &tenant_namespaces,
            )
        });
        let cluster_scoped = matches!(&discovered, Ok((_, Scope::Cluster)));
        let namespace = match &placed {
            Ok(ns) => ns.clone(),
            Err(_) if cluster_scoped => String::new(),
            Err(_) => planned_namespace,
        };
        let mut item = ProcessedItem {
            api_version: api_version.clone(),
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            tenant,
            message: None,
            applied: false,
            adopted: job.previous.iter().any(|p| {
                p.adopted
                    && (&p.api_version, &p.kind, &p.namespace, &p.name)
                        == (&api_version, &kind, &namespace, &name)
            }),
        };
        if !wanted.insert((api_version.clone(), kind.clone(), namespace.clone(), name.clone())) {
            // The same cluster-scoped item planned for every namespace is refused once, not again.
            if placed.is_ok() {
                problems.push(format!(
                    "{kind} {} is named twice; the first one is applied",
                    slash(&namespace, &name)
                ));
            }
            continue;
        }
        let result = async {
            let (resource, _) = discovered?;
            let namespace = placed?;
            if let Some(meta) = object["metadata"].as_object_mut() {
                if namespace.is_empty() {
                    meta.remove("namespace");
                } else {
                    meta.insert("namespace".into(), json!(namespace));
                }
            }
            apply_one(ctx, job, &resource, &namespace, &object, &mut item.adopted).await
        }
        .await;
        match result {
            Ok(()) => item.applied = true,
            Err(message) => {
                problems.push(format!("{kind} {}: {message}", slash(&item.namespace, &name)));
                item.message = Some(message);
            }
        }
        processed.push(item);
    }
    // Prune what was applied before and is no longer wanted.
    for old in &job.previous {
        let key = (
            old.api_version.clone(),
            old.kind.clone(),
            old.namespace.clone(),
            old.name.clone(),
        );
        if !old.applied || wanted.contains(&key) {
            continue;
        }
        if let Err(e) = delete_ours(ctx, &job.client, &job.owner, old).await {
            problems.push(format!(
                "{} {}: cannot remove: {e}",
                old.kind,
                slash(&old.namespace, &old.name)
            ));
        }
    }
    processed.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    (processed, problems)
}

/// `namespace/name`, or the name alone for a cluster-scoped object.
fn slash(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

fn api_for(client: &Client, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
    if namespace.is_empty() {
        Api::all_with(client.clone(), resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, resource)
    }
}

/// Applies one object (skipped when unchanged since the last apply). An object that exists and was
/// not made by this resource is left alone unless `settings.adopt`; an adopted object is applied
/// with `force` only when `settings.force` says so.
async fn apply_one(
    ctx: &Context,
    job: &Job<'_>,
    resource: &ApiResource,
    namespace: &str,
    object: &Value,
    adopted: &mut bool,
) -> Result<(), String> {
    let (api_version, kind, _, name) = key_of(object);
    let key = (
        job.owner.clone(),
        api_version,
        kind.clone(),
        namespace.to_owned(),
        name.clone(),
    );
    let h = bulkhead_cache::projected::digest(object);
    if ctx
        .applied
        .lock()
        .get(&key)
        .is_some_and(|(applied, _)| *applied == h)
    {
        return Ok(());
    }
    let api = api_for(&job.client, resource, namespace);
    if !*adopted {
        let existing = api
            .get_metadata_opt(&name)
            .await
            .map_err(|e| format!("cannot read it as {}: {}", job.writer, one_line(&e)))?;
        if let Some(existing) = existing {
            let ours =
                existing.labels().get(labels::REPLICATED_BY).map(String::as_str) == Some(job.owner.as_str());
            // Adopted before, though the status that said so may not have been written.
            if ours
                && existing
                    .annotations()
                    .get(labels::ADOPTED)
                    .is_some_and(|v| v == "true")
            {
                *adopted = true;
            }
            if !ours {
                if !job.settings.adopt {
                    return Err(format!(
                        "exists and was not made by this {}: set settings.adopt to manage it",
                        job.kind
                    ));
                }
                *adopted = true;
            }
        }
    }
    let mut params = PatchParams::apply(labels::FIELD_MANAGER);
    if !*adopted || job.settings.force {
        params = params.force();
    }
    // An adopted object carries the mark on itself, so pruning gives it back even if the status
    // recording the adoption is lost.
    let marked;
    let object = if *adopted {
        let mut copy = object.clone();
        copy["metadata"]["annotations"][labels::ADOPTED] = json!("true");
        marked = copy;
        &marked
    } else {
        object
    };
    match api.patch(&name, &params, &Patch::Apply(object)).await {
        Ok(written) => {
            ctx.applied
                .lock()
                .insert(key, (h, written.metadata.resource_version));
            Ok(())
        }
        Err(e) => {
            ctx.applied.lock().remove(&key);
            Err(format!("cannot apply as {}: {}", job.writer, one_line(&e)))
        }
    }
}

/// Deletes an object this resource created, if it still carries its label.
async fn delete_ours(
    ctx: &Context,
    client: &Client,
    owner: &str,
    item: &ProcessedItem,
) -> Result<(), String> {
    let (resource, _) = ctx.discover(&item.api_version, &item.kind).await?;
    let api = api_for(client, &resource, &item.namespace);
    let Some(current) = api.get_metadata_opt(&item.name).await.map_err(|e| one_line(&e))? else {
        return Ok(());
    };
    if current.labels().get(labels::REPLICATED_BY).map(String::as_str) != Some(owner) {
        return Ok(()); // not ours (any more): leave it
    }
    if item.adopted
        || current
            .annotations()
            .get(labels::ADOPTED)
            .is_some_and(|v| v == "true")
    {
        // It existed before: give back only the fields this resource set, by applying nothing.
        let mut empty = json!({"apiVersion": item.api_version, "kind": item.kind,
            "metadata": {"name": item.name}});
        if !item.namespace.is_empty() {
            empty["metadata"]["namespace"] = json!(item.namespace);
        }
        api.patch(
            &item.name,
            &PatchParams::apply(labels::FIELD_MANAGER).force(),
            &Patch::Apply(&empty),
        )
        .await
        .map(|_| ())
        .map_err(|e| one_line(&e))?;
    } else {
        api.delete(&item.name, &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| one_line(&e))?;
    }
    ctx.applied.lock().retain(|k, _| {
        !(k.0 == owner
            && k.1 == item.api_version
            && k.2 == item.kind
            && k.3 == item.namespace
            && k.4 == item.name)
    });
    Ok(())
}

fn one_line(error: &dyn std::fmt::Display) -> String {
    error.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ready_condition(problems: &[String], previous: Option<&Condition>) -> Condition {
    let (status, reason, message) = if problems.is_empty() {
        ("True", "Replicated", "every item is applied".to_owned())
    } else {
        ("False", "ItemsFailed", problems.join("; "))
    };
    let transition = previous
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(jiff_now()));
    Condition {
        type_: "Ready".to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: transition,
        observed_generation: None,
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Writes the status if it differs from what the object has.
async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    current: Option<&ReplicationStatus>,
    status: ReplicationStatus,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let same = current.is_some_and(|c| {
        c.processed_items == status.processed_items
            && c.observed_generation == status.observed_generation
            && c.conditions
                .iter()
                .map(|x| (&x.status, &x.message))
                .eq(status.conditions.iter().map(|x| (&x.status, &x.message)))
    });
    if same {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
    .map_err(|e| Error(format!("cannot write the status of {name}: {}", one_line(&e))))
}

async fn set_finalizer<K>(api: &Api<K>, object: &K, present: bool) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<String> = object.finalizers().to_vec();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    if has == present {
        return Ok(());
    }
    let mut next: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
    if present {
        next.push(FINALIZER.to_owned());
    }
    let patch = json!({"metadata": {"finalizers": next, "resourceVersion": object.resource_version()}});
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| {
            Error(format!(
                "cannot update the finalizers of {}: {}",
                object.name_any(),
                one_line(&e)
            ))
        })
}

impl Context {
    async fn warn<K: Resource<DynamicType = ()>>(&self, object: &K, reason: &str, note: String) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Replicate".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            debug!(%error, "cannot record an Event");
        }
    }
}

fn count(ctx: &Context, kind: &str, result: &Result<Action, Error>) {
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics
        .replication_reconciles
        .with_label_values(&[kind, outcome])
        .inc();
}

/// Reconciles a GlobalTenantResource.
pub async fn reconcile_global(object: Arc<GlobalTenantResource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_global_inner(&object, &ctx).await;
    count(&ctx, "GlobalTenantResource", &result);
    result
}

/// Reconciles a TenantResource.
pub async fn reconcile_tenant(object: Arc<TenantResource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_tenant_inner(&object, &ctx).await;
    count(&ctx, "TenantResource", &result);
    result
}

async fn reconcile_global_inner(object: &GlobalTenantResource, ctx: &Context) -> Result<Action, Error> {
    let name = object.name_any();
    let api: Api<GlobalTenantResource> = Api::all(ctx.client.clone());
    let owner = owner_label("GlobalTenantResource", None, &name);
    let previous = object.status.clone().unwrap_or_default();
    let job = |resources, previous| Job {
        kind: "GlobalTenantResource",
        namespace: None,
        name: name.clone(),
        owner: owner.clone(),
        resources,
        scope: object.spec.scope,
        settings: object.spec.settings.clone(),
        previous,
        client: ctx.client.clone(),
        writer: "bulkhead".to_owned(),
    };
    if object.metadata.deletion_timestamp.is_some() {
        if object.spec.pruning_on_delete {
            let prune = job(&[], previous.processed_items.clone());
            let (_, problems) = run_job(ctx, &prune, &Writer::Global, &[]).await;
            if !problems.is_empty() {
                return Err(Error(problems.join("; ")));
            }
        }
        ctx.reads.lock().remove(&owner);
        set_finalizer(&api, object, false).await?;
        ctx.metrics
            .observe_replication("GlobalTenantResource", "", &name, None);
        return Ok(Action::await_change());
    }
    set_finalizer(&api, object, true).await?;
    let j = job(&object.spec.resources, previous.processed_items.clone());
    if let Some(action) = hold(ctx, object, &api, &j, &previous).await? {
        return Ok(action);
    }
    let tenants: BTreeSet<String> = ctx
        .cache
        .tenants()
        .state()
        .iter()
        .filter(|t| {
            object
                .spec
                .tenant_selector
                .as_ref()
                .is_none_or(|s| selector::matches(s, t.labels()))
        })
        .map(|t| t.name_any())
        .collect();
    let selected = selected_tenants(&ctx.cache, &tenants);
    let (processed, problems) = run_job(ctx, &j, &Writer::Global, &selected).await;
    finish(
        ctx,
        object,
        &api,
        &j,
        previous,
        processed,
        problems,
        &object.spec.resync_period,
    )
    .await
}

async fn reconcile_tenant_inner(object: &TenantResource, ctx: &Context) -> Result<Action, Error> {
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<TenantResource> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = owner_label("TenantResource", Some(&namespace), &name);
    let previous = object.status.clone().unwrap_or_default();
    let sa = object
        .spec
        .service_account
        .as_ref()
        .map_or(ctx.settings.default_service_account.as_str(), |s| s.name.as_str());
    let writer = format!("system:serviceaccount:{namespace}:{sa}");
    let client = match ctx.client_as(&writer) {
        Ok(c) => c,
        Err(e) => return Err(Error(e)),
    };
    let j = Job {
        kind: "TenantResource",
        namespace: Some(&namespace),
        name: name.clone(),
        owner,
        resources: &object.spec.resources,
        scope: object.spec.scope,
        settings: object.spec.settings.clone(),
        previous: previous.processed_items.clone(),
        client,
        writer,
    };
    let own = Writer::Tenant {
        own: namespace.clone(),
    };
    if object.metadata.deletion_timestamp.is_some() {
        if object.spec.pruning_on_delete {
            let prune = Job { resources: &[], ..j };
            let (_, problems) = run_job(ctx, &prune, &own, &[]).await;
            if !problems.is_empty() {
                return Err(Error(problems.join("; ")));
            }
        }
        ctx.reads
            .lock()
            .remove(&owner_label("TenantResource", Some(&namespace), &name));
        set_finalizer(&api, object, false).await?;
        ctx.metrics
            .observe_replication("TenantResource", &namespace, &name, None);
        return Ok(Action::await_change());
    }
    set_finalizer(&api, object, true).await?;
    if let Some(action) = hold(ctx, object, &api, &j, &previous).await? {
        return Ok(action);
    }
    // Outside a tenant there is nowhere to copy to: the run with no targets prunes what it made while
    // the namespace had one.
    let (selected, mut problems) = match ctx.cache.tenant_of_namespace(&namespace) {
        Some(tenant) => (
            selected_tenants(&ctx.cache, &BTreeSet::from([tenant])),
            Vec::new(),
        ),
        None => (
            Vec::new(),
            vec![format!(
                "namespace `{namespace}` is not part of a tenant: a TenantResource replicates only within its own tenant"
            )],
        ),
    };
    let (processed, more) = run_job(ctx, &j, &own, &selected).await;
    problems.extend(more);
    finish(
        ctx,
        object,
        &api,
        &j,
        previous,
        processed,
        problems,
        &object.spec.resync_period,
    )
    .await
}

/// What [`hold`] reads of either replication kind.
trait Replicating {
    /// `spec.cordoned` and `spec.dependsOn`.
    fn hold_fields(&self) -> (bool, &[DependsOn]);
    /// Whether the resource of the same kind (a TenantResource: in the same namespace) named `name` is
    /// Ready; `None` when there is none.
    fn sibling_ready(&self, cache: &Cache, name: &str) -> Option<bool>;
}

impl Replicating for GlobalTenantResource {
    fn hold_fields(&self) -> (bool, &[DependsOn]) {
        (self.spec.cordoned, &self.spec.depends_on)
    }

    fn sibling_ready(&self, cache: &Cache, name: &str) -> Option<bool> {
        let store = cache.global_tenant_resources().store();
        let found = store.state().into_iter().find(|g| g.name_any() == name)?;
        Some(is_ready(found.meta().generation, found.status.as_ref()))
    }
}

impl Replicating for TenantResource {
    fn hold_fields(&self) -> (bool, &[DependsOn]) {
        (self.spec.cordoned, &self.spec.depends_on)
    }

    fn sibling_ready(&self, cache: &Cache, name: &str) -> Option<bool> {
        let store = cache.tenant_resources().store();
        let found = store
            .state()
            .into_iter()
            .find(|t| t.name_any() == name && t.namespace() == self.namespace())?;
        Some(is_ready(found.meta().generation, found.status.as_ref()))
    }
}

/// Whether a replication resource is Ready for the generation it has now.
fn is_ready(generation: Option<i64>, status: Option<&ReplicationStatus>) -> bool {
    status.is_some_and(|s| {
        s.observed_generation == generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Holds a resource back while it is cordoned or something it depends on is not Ready: nothing is
/// applied or deleted, and the status says why. `Some` is the action to return.
async fn hold<K>(
    ctx: &Context,
    object: &K,
    api: &Api<K>,
    job: &Job<'_>,
    previous: &ReplicationStatus,
) -> Result<Option<Action>, Error>
where
    K: Replicating + Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let (cordoned, depends_on) = object.hold_fields();
    let ready = |dep: &DependsOn| object.sibling_ready(&ctx.cache, &dep.name);
    let (reason, message, action) = if cordoned {
        (
            "Cordoned",
            "cordoned: nothing is applied or deleted while spec.cordoned is true".to_owned(),
            Action::await_change(),
        )
    } else {
        let waiting: Vec<String> = depends_on
            .iter()
            .filter_map(|d| match ready(d) {
                Some(true) => None,
                Some(false) => Some(format!("`{}` is not Ready", d.name)),
                None => Some(format!("`{}` does not exist", d.name)),
            })
            .collect();
        if waiting.is_empty() {
            return Ok(None);
        }
        (
            "DependencyNotReady",
            format!("waits for {}", waiting.join(", ")),
            Action::requeue(Duration::from_secs(5)),
        )
    };
    let condition = Condition {
        reason: reason.to_owned(),
        ..ready_condition(
            std::slice::from_ref(&message),
            previous.conditions.iter().find(|c| c.type_ == "Ready"),
        )
    };
    let status = ReplicationStatus {
        processed_items: previous.processed_items.clone(),
        observed_generation: object.meta().generation,
        conditions: vec![condition],
    };
    write_status(api, &job.name, Some(previous), status).await?;
    Ok(Some(action))
}

#[allow(clippy::too_many_arguments)]
async fn finish<K>(
    ctx: &Context,
    object: &K,
    api: &Api<K>,
    job: &Job<'_>,
    previous: ReplicationStatus,
    processed: Vec<ProcessedItem>,
    problems: Vec<String>,
    resync: &str,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for problem in &problems {
        ctx.warn(object, "ReplicationFailed", problem.clone()).await;
    }
    let applied = processed.iter().filter(|i| i.applied).count();
    ctx.metrics.observe_replication(
        job.kind,
        job.namespace.unwrap_or_default(),
        &job.name,
        Some((applied, processed.len() - applied)),
    );
    let condition = ready_condition(&problems, previous.conditions.iter().find(|c| c.type_ == "Ready"));
    let status = ReplicationStatus {
        processed_items: processed,
        observed_generation: object.meta().generation,
        conditions: vec![condition],
    };
    write_status(api, &job.name, Some(&previous), status).await?;
    debug!(kind = job.kind, namespace = ?job.namespace, name = %job.name, problems = problems.len(), "replicated");
    Ok(Action::requeue(
        parse_period(resync).unwrap_or(Duration::from_secs(60)),
    ))
}

fn error_policy<K>(_object: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(%error, "replication failed");
    Action::requeue(Duration::from_secs(5))
}

fn changes<K: Send + Sync + 'static>(
    rx: tokio::sync::broadcast::Receiver<Change<K>>,
) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            // After a lag, one trigger stands for everything missed.
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// A watched source: apiVersion, kind, namespace (empty: all), label selector.
type SourceKey = (String, String, String, String);

fn source_key(read: &Read) -> SourceKey {
    (
        read.api_version.clone(),
        read.kind.clone(),
        read.namespace.clone().unwrap_or_default(),
        read.selector.clone(),
    )
}

/// Keeps one metadata watch per source the resources read in their last reconcile (sources of
/// `namespacedItems` and `context` objects, templates filled in), so that a changed source is copied
/// or rendered again at once rather than at the next resync.
async fn watch_sources(
    ctx: Arc<Context>,
    changes: tokio::sync::broadcast::Sender<SourceKey>,
    stop: CancellationToken,
) {
    let mut running: HashMap<SourceKey, CancellationToken> = HashMap::new();
    loop {
        let wanted: BTreeSet<SourceKey> = ctx.reads.lock().values().flatten().map(source_key).collect();
        running.retain(|key, token| {
            let keep = wanted.contains(key);
            if !keep {
                token.cancel();
            }
            keep
        });
        for key in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let Ok((resource, scope)) = ctx.discover(&key.0, &key.1).await else {
                continue; // reported by the reconcile
            };
            let namespace = (scope == Scope::Namespaced && !key.2.is_empty()).then(|| key.2.clone());
            let token = stop.child_token();
            let selector = (!key.3.is_empty()).then(|| key.3.clone());
            let (changes, signal) = (changes.clone(), key.clone());
            bulkhead_cache::sources::watch_metadata(
                ctx.client.clone(),
                resource,
                namespace,
                selector,
                token.clone(),
                move |event| {
                    // The end of the first list counts too: the source may have changed between the
                    // reconcile that read it and the start of this watch. Nobody listening is fine.
                    if !matches!(event, MetadataEvent::Listed(_)) {
                        let _ = changes.send(signal.clone());
                    }
                },
            );
            running.insert(key, token);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Watches every kind replication has written, cluster-wide, by the `replicated-by` label: a copy
/// deleted, or changed by anyone but Bulkhead (its resourceVersion is not the one Bulkhead's apply
/// returned), is forgotten and its resource reconciled, which puts it back.
async fn watch_copies(
    ctx: Arc<Context>,
    drifted: tokio::sync::broadcast::Sender<String>,
    stop: CancellationToken,
) {
    let mut running: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let kinds: BTreeSet<(String, String)> = ctx
            .applied
            .lock()
            .keys()
            .map(|k| (k.1.clone(), k.2.clone()))
            .collect();
        for (api_version, kind) in kinds {
            if running.contains(&(api_version.clone(), kind.clone())) {
                continue;
            }
            let Ok((resource, _)) = ctx.discover(&api_version, &kind).await else {
                continue;
            };
            let (watch_ctx, drifted) = (ctx.clone(), drifted.clone());
            let (av, k) = (api_version.clone(), kind.clone());
            let mut listed: BTreeSet<(String, String, String)> = BTreeSet::new();
            bulkhead_cache::sources::watch_metadata(
                ctx.client.clone(),
                resource,
                None,
                Some(labels::REPLICATED_BY.to_owned()),
                stop.clone(),
                move |event| {
                    let (object, deleted) = match event {
                        MetadataEvent::Listed(o) | MetadataEvent::Applied(o) => (o, false),
                        MetadataEvent::Deleted(o) => (o, true),
                        MetadataEvent::ListDone => {
                            // Copies of this kind that were applied but not listed were deleted
                            // before the watch (re)started.
                            let mut applied = watch_ctx.applied.lock();
                            let gone: Vec<_> = applied
                                .keys()
                                .filter(|key| key.1 == av && key.2 == k)
                                .filter(|key| {
                                    !listed.contains(&(key.0.clone(), key.3.clone(), key.4.clone()))
                                })
                                .cloned()
                                .collect();
                            for key in &gone {
                                applied.remove(key);
                            }
                            drop(applied);
                            for owner in gone.into_iter().map(|key| key.0).collect::<BTreeSet<_>>() {
                                let _ = drifted.send(owner);
                            }
                            listed.clear();
                            return;
                        }
                    };
                    let Some((owner, namespace, name)) = copy_key(object) else {
                        return;
                    };
                    if matches!(event, MetadataEvent::Listed(_)) {
                        listed.insert((owner.clone(), namespace.clone(), name.clone()));
                    }
                    let key = (owner.clone(), av.clone(), k.clone(), namespace, name);
                    let mut applied = watch_ctx.applied.lock();
                    let drift = match applied.get(&key) {
                        None => false, // not applied by this process (yet)
                        Some(_) if deleted => true,
                        Some((_, version)) => {
                            version.is_some() && *version != object.metadata.resource_version
                        }
                    };
                    if drift {
                        applied.remove(&key);
                        drop(applied);
                        let _ = drifted.send(owner);
                    }
                },
            );
            running.insert((api_version, kind));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// (owner, namespace, name) of a copy, the owner from its `replicated-by` label (none without it).
fn copy_key(object: &PartialObjectMeta<DynamicObject>) -> Option<(String, String, String)> {
    let owner = object.metadata.labels.as_ref()?.get(labels::REPLICATED_BY)?;
    Some((
        owner.clone(),
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    ))
}

/// The resources of a store whose `replicated-by` value is `owner`.
fn owned_by<K: Resource<DynamicType = ()> + Clone>(
    store: &kube::runtime::reflector::Store<K>,
    owner: &str,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|o| owner_label(&K::kind(&()), o.meta().namespace.as_deref(), &o.name_any()) == owner)
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// The resources of a store whose last reconcile read from `key`.
fn readers<K: Resource<DynamicType = ()> + Clone>(
    ctx: &Context,
    store: &kube::runtime::reflector::Store<K>,
    key: &SourceKey,
) -> Vec<ObjectRef<K>> {
    let owners: Vec<String> = ctx
        .reads
        .lock()
        .iter()
        .filter(|(_, reads)| reads.iter().any(|r| &source_key(r) == key))
        .map(|(owner, _)| owner.clone())
        .collect();
    owners.iter().flat_map(|owner| owned_by(store, owner)).collect()
}

fn source_changes<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(key) => return Some((key, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {} // the resync covers it
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Runs both reconcilers until `stop`.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let cache = ctx.cache.clone();
    let (source_tx, _) = tokio::sync::broadcast::channel::<SourceKey>(1024);
    let global_sources = {
        let (store, ctx) = (cache.global_tenant_resources().store().clone(), ctx.clone());
        source_changes(source_tx.subscribe())
            .flat_map(move |key| futures::stream::iter(readers(&ctx, &store, &key)))
    };
    let tenant_sources = {
        let (store, ctx) = (cache.tenant_resources().store().clone(), ctx.clone());
        source_changes(source_tx.subscribe())
            .flat_map(move |key| futures::stream::iter(readers(&ctx, &store, &key)))
    };
    let watcher = tokio::spawn(watch_sources(ctx.clone(), source_tx, stop.clone()));
    let (drift_tx, _) = tokio::sync::broadcast::channel::<String>(1024);
    let global_drift = {
        let store = cache.global_tenant_resources().store().clone();
        source_changes(drift_tx.subscribe())
            .flat_map(move |owner| futures::stream::iter(owned_by(&store, &owner)))
    };
    let tenant_drift = {
        let store = cache.tenant_resources().store().clone();
        source_changes(drift_tx.subscribe())
            .flat_map(move |owner| futures::stream::iter(owned_by(&store, &owner)))
    };
    let copies = tokio::spawn(watch_copies(ctx.clone(), drift_tx, stop.clone()));
    // Any tenant or namespace change may change which namespaces a resource fills: all are looked at
    // again (the controller's queue folds bursts).
    let global_store = cache.global_tenant_resources().store().clone();
    let tenant_store = cache.tenant_resources().store().clone();
    let all_global = {
        let store = global_store.clone();
        move |()| {
            futures::stream::iter(
                store
                    .state()
                    .iter()
                    .map(|o| ObjectRef::from_obj(&**o))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let all_tenant = {
        let store = tenant_store.clone();
        move |()| {
            futures::stream::iter(
                store
                    .state()
                    .iter()
                    .map(|o| ObjectRef::from_obj(&**o))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let global_trigger = futures::stream::select(
        changes(cache.tenants_feed().subscribe()),
        changes(cache.namespaces_feed().subscribe()),
    )
    .flat_map(all_global);
    let tenant_trigger = futures::stream::select(
        changes(cache.tenants_feed().subscribe()),
        changes(cache.namespaces_feed().subscribe()),
    )
    .flat_map(all_tenant);
    let global_items = resource_stream(cache.global_tenant_resources().subscribe(), global_store.state());
    let tenant_items = resource_stream(cache.tenant_resources().subscribe(), tenant_store.state());
    let (s1, s2) = (stop.clone(), stop.clone());
    let global = Controller::for_stream(global_items, global_store)
        .reconcile_on(futures::stream::select(
            futures::stream::select(global_trigger, global_sources),
            global_drift,
        ))
        .graceful_shutdown_on(async move { s1.cancelled().await })
        .run(reconcile_global, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    let tenant = Controller::for_stream(tenant_items, tenant_store)
        .reconcile_on(futures::stream::select(
            futures::stream::select(tenant_trigger, tenant_sources),
            tenant_drift,
        ))
        .graceful_shutdown_on(async move { s2.cancelled().await })
        .run(reconcile_tenant, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    tokio::join!(global, tenant);
    watcher.abort();
    copies.abort();
}

/// The current objects, then every change (deletions are seen by the reconcile of the object's
/// finalizer update).
fn resource_stream<K: Clone + Send + Sync + 'static>(
    rx: tokio::sync::broadcast::Receiver<Change<K>>,
    current: Vec<Arc<K>>,
) -> impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send {
    let updates = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(Change::Applied(o, _)) => return Some(((*o).clone(), rx)),
                Ok(Change::Deleted(_)) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    futures::stream::iter(current.into_iter().map(|o| (*o).clone()))
        .chain(updates)
        .map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_like_go_durations() {
        assert_eq!(parse_period("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_period("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_period("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_period("soon"), None);
        assert_eq!(parse_period(""), None);
    }
}
