//! The controller role: it takes a `coordination.k8s.io/v1` Lease so that only one replica acts, then
//! runs the reconcilers that turn Tenants into their namespaces' objects.

pub mod custom_quota;
mod fairness;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod replication;
pub mod resource_pool;
pub mod settled;
pub mod webhook_tls;

use std::sync::Arc;
use std::time::Duration;

use bulkhead_api::{Tenant, labels};
use bulkhead_cache::Cache;
use bulkhead_cache::kind::Change;
use futures::{Stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use leader::{LeaderElection, LeaseSettings};
pub use metrics::ControllerMetrics;

/// The controller role's settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Leader election; `None` runs without a Lease (one replica only).
    pub lease: Option<LeaseSettings>,
    /// The webhook's TLS manager; `None` when certificates come from elsewhere (cert-manager).
    pub webhook_tls: Option<webhook_tls::WebhookTls>,
    /// GlobalTenantResource and TenantResource replication.
    pub replication: replication::ReplicationSettings,
    /// The ValidatingWebhookConfiguration whose CustomQuota hook's rules the controller keeps (the
    /// counted kinds); empty for none.
    pub webhook_configuration: String,
}

/// The default time a Lease is valid without renewal.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Runs the controller role until `shutdown` is cancelled: leader election, and while this replica
/// leads, the Tenant controller. A held Lease is released on the way out.
pub async fn run(
    client: Client,
    cache: Cache,
    config: ControllerConfig,
    metrics: ControllerMetrics,
    leading: watch::Sender<bool>,
    up: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut is_leader = leading.subscribe();
    let instance = config.lease.as_ref().map(|l| l.identity.clone());
    let election = match config.lease {
        Some(settings) => {
            let election = LeaderElection::new(client.clone(), settings);
            tokio::spawn(election.run(leading, up, shutdown.clone()))
        }
        None => {
            info!("leader election disabled: this replica acts alone");
            leading.send_replace(true);
            up.send_replace(true);
            let stop = shutdown.clone();
            tokio::spawn(async move { stop.cancelled().await })
        }
    };
    let replication_ctx = Arc::new(replication::Context::new(
        client.clone(),
        cache.clone(),
        config.replication,
        metrics.clone(),
    ));
    let ctx = Arc::new(reconcile::Context::new(client, cache, metrics, instance));
    let webhook_tls = config.webhook_tls;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = is_leader.wait_for(|l| *l) => if changed.is_err() { break },
        }
        info!("leading: starting the Tenant controller");
        let lost = CancellationToken::new();
        let watch_lost = {
            let lost = lost.clone();
            let mut rx = is_leader.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = rx.wait_for(|l| !*l) => {}
                }
                lost.cancel();
            })
        };
        ctx.cache.wait_synced().await;
        let tls = webhook_tls
            .clone()
            .map(|settings| tokio::spawn(webhook_tls::keep(ctx.clone(), settings, lost.clone())));
        let replicating = tokio::spawn(replication::run(replication_ctx.clone(), lost.clone()));
        let quotas = tokio::spawn(custom_quota::keep(
            ctx.clone(),
            config.webhook_configuration.clone(),
            lost.clone(),
        ));
        let pools = tokio::spawn(resource_pool::keep(ctx.clone(), lost.clone()));
        lead(ctx.clone(), lost.clone()).await;
        if let Some(tls) = tls {
            tls.abort();
        }
        let _ = replicating.await;
        let _ = quotas.await;
        let _ = pools.await;
        watch_lost.abort();
        if shutdown.is_cancelled() {
            break;
        }
        info!("no longer leading: the Tenant controller stopped");
    }
    let _ = election.await;
}

/// What the leader does until `stop`: the cluster-wide objects, the tenants' fair shares and the Tenant
/// controller.
async fn lead(ctx: Arc<reconcile::Context>, stop: CancellationToken) {
    let cluster = tokio::spawn(keep_cluster_objects(ctx.clone(), stop.clone()));
    let fair_shares = tokio::spawn(tracing::Instrument::instrument(
        fairness::keep(ctx.clone(), stop.clone()),
        tracing::info_span!("fair_shares"),
    ));
    let cache = &ctx.cache;
    // A subscription that falls behind has missed changes: nothing is taken as settled any more and
    // every tenant is reconciled at once, rather than at the periodic resync.
    let (lag_tx, lag_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let on_lag: Lagged = {
        let ctx = ctx.clone();
        Arc::new(move || {
            ctx.settled.clear();
            let _ = lag_tx.send(());
        })
    };
    // The configuration says how every tenant is kept (its Capsule migration phase, default namespace
    // rules): when it changes, nothing is settled any more and every tenant is reconciled.
    let configuration = {
        let (on_lag, mut rx) = (on_lag.clone(), cache.configurations().subscribe());
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => on_lag(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    };
    let everyone = {
        let cache = cache.clone();
        futures::stream::unfold(lag_rx, |mut rx| async move { rx.recv().await.map(|()| ((), rx)) }).flat_map(
            move |()| {
                let all: Vec<ObjectRef<Tenant>> = cache
                    .tenants()
                    .state()
                    .iter()
                    .map(|t| ObjectRef::from_obj(&**t))
                    .collect();
                futures::stream::iter(all)
            },
        )
    };
    // Subscribe before reading the store, so nothing falls between the two.
    let tenant_changes = changes(cache.tenants_feed().subscribe(), on_lag.clone());
    let current: Vec<Result<Tenant, watcher::Error>> = cache
        .tenants()
        .state()
        .iter()
        .map(|t| Ok((**t).clone()))
        .collect();
    let echoes = ctx.clone();
    let trigger = futures::stream::iter(current).chain(tenant_changes.filter_map(move |c| {
        let item = match c {
            // The echo of the status the last reconcile wrote asks for nothing.
            Change::Applied(t, _) if echoes.is_status_echo(&t) => None,
            Change::Applied(t, _) => Some(Ok((*t).clone())),
            Change::Deleted(t) => {
                echoes.metrics.forget_tenant(&t.name_any());
                echoes.forget_tenant(&t.name_any());
                None
            }
        };
        std::future::ready(item)
    }));
    let namespace_echoes = ctx.clone();
    let namespaces = changes(cache.namespaces_feed().subscribe(), on_lag.clone())
        .filter(move |change| std::future::ready(!namespace_echoes.note_namespace(change)));
    let by_label = tenant_refs(namespaces)
        .merge(owned_refs(&ctx, cache.role_bindings(), &on_lag))
        .merge(owned_refs(&ctx, cache.resource_quotas(), &on_lag))
        .merge(owned_refs(&ctx, cache.limit_ranges(), &on_lag))
        .merge(owned_refs(&ctx, cache.network_policies(), &on_lag))
        .merge(owner_refs(cache, &on_lag))
        .merge(promotion_refs(cache, &on_lag))
        .merge(everyone);
    let stopped = stop.clone();
    Controller::for_stream(trigger, cache.tenants().clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .reconcile_on(by_label)
        .graceful_shutdown_on(async move { stopped.cancelled().await })
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()))
        .await;
    cluster.abort();
    fair_shares.abort();
    configuration.abort();
}

trait MergeExt: Stream + Sized {
    fn merge<S: Stream<Item = Self::Item>>(self, other: S) -> futures::stream::Select<Self, S> {
        futures::stream::select(self, other)
    }
}

impl<S: Stream> MergeExt for S {}

/// How many tenants are reconciled at once. Their writes share [`reconcile::WRITE_CONCURRENCY`]
/// requests in flight; more tenants at once would only hold more desired state in memory.
pub const RECONCILE_CONCURRENCY: u16 = 32;

/// What to do when a subscription has fallen behind the cache.
type Lagged = Arc<dyn Fn() + Send + Sync>;

/// A cache subscription as a stream. After a lag, `lagged` is called (the changes missed are not known).
fn changes<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    lagged: Lagged,
) -> impl Stream<Item = T> + Send {
    futures::stream::unfold((rx, lagged), |(mut rx, lagged)| async move {
        loop {
            match rx.recv().await {
                Ok(change) => return Some((change, (rx, lagged))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "the controller fell behind the cache: reconciling every tenant"
                    );
                    lagged();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The Tenants a changed object belongs to, by its tenant label: now and, if it moved, before.
fn tenant_refs<K: Resource + Send + Sync + 'static>(
    changes: impl Stream<Item = Change<K>> + Send,
) -> impl Stream<Item = ObjectRef<Tenant>> + Send {
    changes.flat_map(|change| futures::stream::iter(tenants_of(&change)))
}

/// The Tenants a changed object of an owned kind belongs to: now and, if it moved, before. The echoes
/// of the controller's own writes ask for nothing ([`reconcile::Context::note`]).
fn owned_refs<K: bulkhead_cache::projected::OwnedKind>(
    ctx: &Arc<reconcile::Context>,
    cached: &bulkhead_cache::projected::OwnedCache<K>,
    on_lag: &Lagged,
) -> impl Stream<Item = ObjectRef<Tenant>> + Send + use<K> {
    let ctx = ctx.clone();
    let kind = K::kind(&());
    changes(cached.subscribe(), on_lag.clone()).flat_map(move |change| {
        if ctx.note(&kind, &change) {
            return futures::stream::iter(Vec::new());
        }
        let refs: Vec<ObjectRef<Tenant>> = change
            .tenant
            .iter()
            .chain(change.before.iter())
            .map(|t| ObjectRef::new(t))
            .collect();
        futures::stream::iter(refs)
    })
}

/// The Tenants a changed TenantOwner concerns: those that select it now, and those whose owners
/// list its subject (it may have been selected before).
fn owner_refs(cache: &Cache, on_lag: &Lagged) -> impl Stream<Item = ObjectRef<Tenant>> + Send + use<> {
    let cache = cache.clone();
    changes(cache.tenant_owners().subscribe(), on_lag.clone()).flat_map(move |change| {
        let (Change::Applied(owner, _) | Change::Deleted(owner)) = &change;
        let subject = owner.spec.subject();
        let refs: Vec<ObjectRef<Tenant>> = cache
            .tenants()
            .state()
            .iter()
            .filter(|t| {
                bulkhead_policy::owners::selects(t, owner) || t.owner_subjects().any(|s| s == subject)
            })
            .map(|t| ObjectRef::from_obj(&**t))
            .collect();
        futures::stream::iter(refs)
    })
}

/// The Tenant whose namespace holds a ServiceAccount whose promotion label (to owner, or for rule
/// promotions) changed.
fn promotion_refs(cache: &Cache, on_lag: &Lagged) -> impl Stream<Item = ObjectRef<Tenant>> + Send + use<> {
    let cache = cache.clone();
    let both = futures::stream::select(
        changes(cache.promoted_service_accounts().subscribe(), on_lag.clone()),
        changes(cache.rule_promoted_service_accounts().subscribe(), on_lag.clone()),
    );
    both.flat_map(move |change| {
        let (Change::Applied(sa, _) | Change::Deleted(sa)) = &change;
        let refs: Vec<ObjectRef<Tenant>> = sa
            .metadata
            .namespace
            .as_deref()
            .and_then(|ns| cache.tenant_of_namespace(ns))
            .map(|t| ObjectRef::new(&t))
            .into_iter()
            .collect();
        futures::stream::iter(refs)
    })
}

fn tenants_of<K: Resource>(change: &Change<K>) -> Vec<ObjectRef<Tenant>> {
    let tenant = |o: &K| o.labels().get(labels::TENANT).cloned();
    let (now, before) = match change {
        Change::Applied(o, previous) => (tenant(o), previous.clone()),
        Change::Deleted(o) => (tenant(o), None),
    };
    let mut refs: Vec<ObjectRef<Tenant>> = now.iter().map(|t| ObjectRef::new(t)).collect();
    if let Some(before) = before.filter(|b| Some(b) != now.as_ref()) {
        refs.push(ObjectRef::new(&before));
    }
    refs
}

/// Keeps the namespace provisioner and deleter ClusterRoles and the provisioner binding for the
/// configured user groups, applying them again whenever the configuration changes.
async fn keep_cluster_objects(ctx: Arc<reconcile::Context>, stop: CancellationToken) {
    let mut config_changes = ctx.cache.configurations().subscribe();
    let mut owner_changes = ctx.cache.tenant_owners().subscribe();
    let mut promotions = ctx.cache.promoted_service_accounts().subscribe();
    loop {
        let config = ctx.cache.configuration();
        let accounts = provisioning_service_accounts(&ctx.cache, &config);
        let (roles, binding) = bulkhead_policy::desired::cluster_objects(&config.user_groups, &accounts);
        let roles_api: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(ctx.client.clone());
        for role in roles {
            let name = role.name_any();
            if let Err(error) = apply_unless_current(&roles_api, &name, with_type(&role)).await {
                warn!(%error, name, "cannot apply the ClusterRole");
            }
        }
        let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(ctx.client.clone());
        let name = binding.name_any();
        if let Err(error) = apply_unless_current(&bindings, &name, with_type(&binding)).await {
            warn!(%error, name, "cannot apply the ClusterRoleBinding");
        }
        // A namespace joining or leaving a tenant changes which promoted accounts count: looked at again
        // every minute.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = config_changes.recv() => {}
            _ = owner_changes.recv() => {}
            _ = promotions.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// The ServiceAccounts that may create namespaces beside the user groups: those TenantOwners name with
/// `aggregate` (the webhook treats them as tenant users wherever they live), and, where the
/// configuration allows promotion, the promoted ones living in tenant namespaces.
fn provisioning_service_accounts(
    cache: &Cache,
    config: &bulkhead_api::BulkheadConfigurationSpec,
) -> Vec<bulkhead_api::Subject> {
    let owners = cache.tenant_owners().store().state();
    let mut accounts = bulkhead_policy::owners::aggregated_service_accounts(owners.iter().map(AsRef::as_ref));
    if config.allow_service_account_promotion {
        for sa in cache.promoted_service_accounts().store().state() {
            let (Some(namespace), Some(name)) =
                (sa.metadata.namespace.as_deref(), sa.metadata.name.as_deref())
            else {
                continue;
            };
            if cache.tenant_of_namespace(namespace).is_some() {
                accounts.push(bulkhead_api::Subject::ServiceAccount(
                    bulkhead_policy::owners::service_account_user(namespace, name),
                ));
            }
        }
    }
    accounts.sort();
    accounts.dedup();
    accounts
}

/// Server-side applies `patch` (with its digest in the [`labels::APPLIED`] annotation) unless the object
/// already carries this digest and nobody else wrote it since: a restart reads, and writes nothing.
pub(crate) async fn apply_unless_current<K>(
    api: &Api<K>,
    name: &str,
    mut patch: serde_json::Value,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let config = bulkhead_cache::projected::stamp_applied(&mut patch);
    if let Some(current) = api.get_opt(name).await?
        && bulkhead_cache::projected::applied_digest(current.meta()) == Some(config)
        && !bulkhead_cache::projected::touched(current.meta())
    {
        return Ok(false);
    }
    let params = PatchParams::apply(labels::FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&patch)).await?;
    Ok(true)
}

pub(crate) fn with_type<K: Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    value["apiVersion"] = serde_json::json!(K::api_version(&()));
    value["kind"] = serde_json::json!(K::kind(&()));
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;

    fn ns(tenant: Option<&str>) -> Arc<Namespace> {
        let mut n = Namespace::default();
        n.metadata.name = Some("x".into());
        n.metadata.labels = tenant.map(|t| [(labels::TENANT.to_owned(), t.to_owned())].into());
        Arc::new(n)
    }

    #[tokio::test]
    async fn a_subscription_that_falls_behind_says_so_and_goes_on() {
        let (tx, rx) = broadcast::channel(2);
        let lags = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = lags.clone();
        let stream = changes(
            rx,
            Arc::new(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        );
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let heard: Vec<i32> = stream.collect().await;
        assert_eq!(heard, [3, 4], "the newest changes, after the lag");
        assert_eq!(lags.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_namespace_moving_between_tenants_triggers_both() {
        let names = |refs: Vec<ObjectRef<Tenant>>| refs.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(tenants_of(&Change::Applied(ns(Some("b")), Some("a".into())))),
            ["b", "a"]
        );
        assert_eq!(
            names(tenants_of(&Change::Applied(ns(Some("a")), Some("a".into())))),
            ["a"]
        );
        assert_eq!(
            names(tenants_of(&Change::Applied(ns(None), Some("a".into())))),
            ["a"]
        );
        assert_eq!(names(tenants_of(&Change::Deleted(ns(Some("a"))))), ["a"]);
        assert!(tenants_of(&Change::Applied(ns(None), None)).is_empty());
    }
}
