//! Keeps the tenants' fair shares of the API server ([`bulkhead_policy::fairness`]): a priority level
//! per tier and a FlowSchema per tenant while the configuration has `apiFairness`, none without it.
//!
//! The whole set is computed again after any change to Tenants, Namespaces (a tenant's service
//! accounts follow its namespaces), the configuration, or the objects themselves (drift comes back),
//! then only what differs from the cache is written: an idle cluster gets no writes.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_api::Tenant;
use bulkhead_cache::kind::KindCache;
use bulkhead_policy::fairness::{FairShares, TenantFlows, fair_shares};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::reconcile::{Context, contained, strip_for_compare};
use crate::with_type;

/// How long a burst of changes may go on before the set is computed again.
const SETTLE: Duration = Duration::from_millis(300);
/// How long to wait before trying again after a failed write.
const RETRY: Duration = Duration::from_secs(5);

/// Keeps the fair-share objects as the configuration and the Tenants want them until `stop`.
pub(crate) async fn keep(ctx: Arc<Context>, stop: CancellationToken) {
    let cache = &ctx.cache;
    let mut triggers = Triggers {
        tenants: cache.tenants_feed().subscribe(),
        namespaces: cache.namespaces_feed().subscribe(),
        configurations: cache.configurations().subscribe(),
        flow_schemas: cache.flow_schemas().subscribe(),
        priority_levels: cache.priority_levels().subscribe(),
    };
    let mut reported: HashSet<(String, String)> = HashSet::new();
    loop {
        let wanted = wanted(&ctx);
        let failed = converge(&ctx, &wanted).await;
        let problems: HashSet<(String, String)> = wanted.problems.into_iter().collect();
        for (tenant, problem) in problems.difference(&reported) {
            if tenant.is_empty() {
                // The configuration's own: it has no status or Events of its own to carry it.
                warn!(problem, "apiFairness in the BulkheadConfiguration");
            } else if let Some(t) = cache.tenant(tenant) {
                ctx.warn(&t, "FairShare", problem.clone()).await;
            }
        }
        reported = problems;
        let wait = async {
            if failed {
                tokio::time::sleep(RETRY).await;
            } else {
                triggers.changed().await;
            }
            tokio::time::sleep(SETTLE).await;
            triggers.drain();
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            () = wait => {}
        }
    }
}

struct Triggers {
    tenants: broadcast::Receiver<bulkhead_cache::kind::Change<Tenant>>,
    namespaces: broadcast::Receiver<bulkhead_cache::kind::Change<k8s_openapi::api::core::v1::Namespace>>,
    configurations: broadcast::Receiver<bulkhead_cache::kind::Change<bulkhead_api::BulkheadConfiguration>>,
    flow_schemas: broadcast::Receiver<bulkhead_cache::kind::Change<FlowSchema>>,
    priority_levels: broadcast::Receiver<bulkhead_cache::kind::Change<PriorityLevelConfiguration>>,
}

impl Triggers {
    /// Waits for any change (a lag counts as one: something changed).
    async fn changed(&mut self) {
        tokio::select! {
            _ = self.tenants.recv() => {}
            _ = self.namespaces.recv() => {}
            _ = self.configurations.recv() => {}
            _ = self.flow_schemas.recv() => {}
            _ = self.priority_levels.recv() => {}
        }
    }

    /// Forgets what came during the settling time: the next computation sees it all.
    fn drain(&mut self) {
        fn empty<T: Clone>(rx: &mut broadcast::Receiver<T>) {
            while !matches!(
                rx.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
        }
        empty(&mut self.tenants);
        empty(&mut self.namespaces);
        empty(&mut self.configurations);
        empty(&mut self.flow_schemas);
        empty(&mut self.priority_levels);
    }
}

/// What the configuration and the cached Tenants want now.
fn wanted(ctx: &Context) -> FairShares {
    let config = ctx.cache.configuration();
    let Some(fairness) = &config.api_fairness else {
        return FairShares::default();
    };
    let tenants = ctx.cache.tenants().state();
    let namespaces: Vec<BTreeSet<String>> = tenants
        .iter()
        .map(|t| ctx.cache.namespaces_of(&t.name_any()))
        .collect();
    fair_shares(
        fairness,
        &config.user_groups,
        tenants
            .iter()
            .zip(&namespaces)
            .map(|(tenant, namespaces)| TenantFlows {
                tenant: tenant.as_ref(),
                namespaces,
            }),
    )
}

/// Applies what differs and deletes what is no longer wanted; levels are written before the
/// FlowSchemas that name them and deleted after. Returns whether anything failed.
async fn converge(ctx: &Context, wanted: &FairShares) -> bool {
    let client = &ctx.client;
    let mut failed = false;
    failed |= !apply_all(
        &Api::all(client.clone()),
        &wanted.levels,
        ctx.cache.priority_levels(),
    )
    .await;
    failed |= !apply_all(
        &Api::all(client.clone()),
        &wanted.flow_schemas,
        ctx.cache.flow_schemas(),
    )
    .await;
    failed |= !prune(
        &Api::all(client.clone()),
        &wanted.flow_schemas,
        ctx.cache.flow_schemas(),
    )
    .await;
    failed |= !prune(
        &Api::all(client.clone()),
        &wanted.levels,
        ctx.cache.priority_levels(),
    )
    .await;
    failed
}

/// A kind of fair-share object (FlowSchema, PriorityLevelConfiguration).
trait FairKind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + serde::Serialize + Send + Sync + 'static
{
}

impl<K> FairKind for K where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + serde::Serialize
        + Send
        + Sync
        + 'static
{
}

async fn apply_all<K: FairKind>(
    api: &Api<K>,
    wanted: &[K],
    cached: &KindCache<K, bulkhead_cache::admission::NoIndex>,
) -> bool {
    let mut ok = true;
    for object in wanted {
        let name = object.name_any();
        let patch = with_type(object);
        let current = cached
            .store()
            .get(&kube::runtime::reflector::ObjectRef::new(&name))
            .and_then(|have| serde_json::to_value(have.as_ref()).ok());
        if current.is_some_and(|have| contained(&strip_for_compare(&patch), &have)) {
            continue;
        }
        let params = PatchParams::apply(bulkhead_api::labels::FIELD_MANAGER).force();
        match api.patch(&name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => info!(kind = K::kind(&()).as_ref(), name, "applied a fair-share object"),
            Err(error) => {
                warn!(%error, kind = K::kind(&()).as_ref(), name, "cannot apply a fair-share object");
                ok = false;
            }
        }
    }
    ok
}

async fn prune<K: FairKind>(
    api: &Api<K>,
    wanted: &[K],
    cached: &KindCache<K, bulkhead_cache::admission::NoIndex>,
) -> bool {
    let keep: HashSet<String> = wanted.iter().map(ResourceExt::name_any).collect();
    let mut ok = true;
    for have in cached.store().state() {
        let name = have.name_any();
        if keep.contains(&name) || have.meta().deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => info!(kind = K::kind(&()).as_ref(), name, "deleted a fair-share object"),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                debug!(name, "already gone");
            }
            Err(error) => {
                warn!(%error, kind = K::kind(&()).as_ref(), name, "cannot delete a fair-share object");
                ok = false;
            }
        }
    }
    ok
}
