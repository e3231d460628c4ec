//! CustomQuotas and GlobalCustomQuotas: the leader counts what each uses and writes it to its status
//! (`usage`, `claims`, `namespaces`, `targets`, `Ready`), keeps the reservations the webhook wrote for
//! objects not counted yet (dropping the counted and the expired), and keeps the rules of the webhook
//! hook that admits the counted kinds.
//!
//! Every write carries the resourceVersion it was computed from, so it never overwrites a reservation
//! the webhook wrote meanwhile: on a conflict the quota is read again and the status computed anew.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_api::custom_quota::{CustomQuotaStatus, QuotaClaim, QuotaDefinition, QuotaTarget, QuotaUsage};
use bulkhead_cache::quota_ref::QuotaRef;
use bulkhead_cache::quota_sources::KindState;
use bulkhead_policy::custom_quota::{Gvk, Quota, compile, paths_by_kind, pending_reservations};
use bulkhead_policy::quota::{format_millis, parse_millis};
use bulkhead_policy::webhooks::{CUSTOM_QUOTAS_HOOK, custom_quota_rules};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::reconcile::Context;

/// How often the quotas are counted again without a change (reservations expire meanwhile).
const RESYNC: Duration = Duration::from_secs(15);
/// How often the hook's rules are read back without a change of the counted kinds.
const RULES_RECHECK: Duration = Duration::from_secs(60);
/// How long changes are gathered before counting (a burst of creates is counted once).
const SETTLE: Duration = Duration::from_millis(150);

/// Which quota.
type Key = QuotaRef;

/// Counts the quotas until `stop`, keeping the hook's rules in the validating configuration
/// `configuration` (none when empty).
pub async fn keep(ctx: Arc<Context>, configuration: String, stop: CancellationToken) {
    let cache = ctx.cache.clone();
    let mut custom = cache.custom_quotas().subscribe();
    let mut global = cache.global_custom_quotas().subscribe();
    let mut namespaces = cache.namespaces_feed().subscribe();
    let sources = cache.quota_sources().changed();
    let mut rules_applied: Option<Vec<(String, String, String)>> = None;
    // The configuration is read again now and then even when the kinds have not changed: someone
    // may have replaced it (the TLS manager re-creates it without these rules if it was deleted).
    let mut rules_checked = std::time::Instant::now();
    loop {
        let quotas = quotas(&ctx);
        let compiled: Vec<&Quota> = quotas.iter().filter_map(|(_, _, q)| q.as_ref().ok()).collect();
        let wanted = paths_by_kind(compiled.iter().copied());
        cache.quota_sources().ensure(&ctx.client, &wanted, &stop).await;
        let mut served = Vec::new();
        for gvk in wanted.keys() {
            if let Some(KindState::Watched { resource, .. }) = cache.quota_sources().state(gvk) {
                served.push((gvk.group.clone(), gvk.version.clone(), resource));
            }
        }
        served.sort();
        let mut wait = RESYNC;
        if !configuration.is_empty()
            && (rules_applied.as_ref() != Some(&served) || rules_checked.elapsed() >= RULES_RECHECK)
        {
            rules_checked = std::time::Instant::now();
            match apply_rules(&ctx, &configuration, &served).await {
                Ok(()) => rules_applied = Some(served),
                Err(e) => {
                    // The configuration may not be registered yet (the TLS manager starts with us).
                    debug!(error = %e, "cannot keep the CustomQuota hook's rules yet; trying again");
                    wait = Duration::from_secs(2);
                }
            }
        }
        let namespace_labels = cache.namespace_labels();
        for (key, object, quota) in &quotas {
            if let Err(e) = count(&ctx, key, object, quota, &namespace_labels).await {
                warn!(quota = ?key, error = %e, "cannot write a CustomQuota's status");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = custom.recv() => {}
            _ = global.recv() => {}
            _ = namespaces.recv() => {}
            _ = sources.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(SETTLE).await;
        // What arrived while settling is counted now.
        while custom.try_recv().is_ok() || global.try_recv().is_ok() || namespaces.try_recv().is_ok() {}
    }
}

/// A quota as read: its key, the object's parts the status needs, and the compiled quota.
type Read = (Key, Object, Result<Quota, Vec<String>>);

#[derive(Clone, Debug)]
struct Object {
    limit: Quantity,
    generation: Option<i64>,
    version: String,
    status: CustomQuotaStatus,
    definition_sources: Vec<bulkhead_api::custom_quota::QuotaSource>,
    per_claim_metrics: bool,
}

fn object_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    d: &QuotaDefinition<'_>,
    status: Option<&CustomQuotaStatus>,
) -> Object {
    Object {
        limit: d.limit.clone(),
        generation: meta.generation,
        version: meta.resource_version.clone().unwrap_or_default(),
        status: status.cloned().unwrap_or_default(),
        definition_sources: d.sources.to_vec(),
        per_claim_metrics: d.per_claim_metrics,
    }
}

fn quotas(ctx: &Context) -> Vec<Read> {
    let mut out: Vec<Read> = Vec::new();
    for q in ctx.cache.custom_quotas().store().state() {
        let d = q.definition();
        out.push((
            Key::Namespaced(q.namespace().unwrap_or_default(), q.name_any()),
            object_of(q.meta(), &d, q.status.as_ref()),
            compile(&d),
        ));
    }
    for q in ctx.cache.global_custom_quotas().store().state() {
        let d = q.definition();
        out.push((
            Key::Global(q.name_any()),
            object_of(q.meta(), &d, q.status.as_ref()),
            compile(&d),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn condition(ok: bool, reason: &str, message: String, previous: &[Condition]) -> Condition {
    condition_of("Ready", ok, reason, message, previous)
}

/// A condition of `type_`, keeping the transition time of the previous one of the same status.
pub(crate) fn condition_of(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    previous: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: since,
        observed_generation: None,
    }
}

/// The status a quota should have now (reservations aside).
fn desired(
    ctx: &Context,
    key: &Key,
    object: &Object,
    quota: &Result<Quota, Vec<String>>,
    namespace_labels: &[(String, BTreeMap<String, String>)],
) -> (CustomQuotaStatus, Vec<(QuotaClaim, f64)>) {
    let previous = &object.status.conditions;
    let quota = match quota {
        Ok(q) => q,
        Err(problems) => {
            let status = CustomQuotaStatus {
                conditions: vec![condition(false, "Invalid", problems.join("; "), previous)],
                observed_generation: object.generation,
                ..Default::default()
            };
            return (status, Vec::new());
        }
    };
    let mut namespaces: Vec<String> = match key {
        Key::Namespaced(ns, _) => vec![ns.clone()],
        Key::Global(_) => namespace_labels
            .iter()
            .filter(|(name, labels)| quota.selects_namespace(name, labels))
            .map(|(name, _)| name.clone())
            .collect(),
    };
    namespaces.sort();
    let mut problems = Vec::new();
    // A kind not listed (or whose watch fails) cannot be counted: its claims stay as they were, or the
    // webhook would take the quota for empty.
    let mut blocked = false;
    let mut targets = Vec::new();
    let mut claims = Vec::new();
    let mut kinds: Vec<&Gvk> = Vec::new();
    for (source, spec) in quota.sources.iter().zip(&object.definition_sources) {
        let state = ctx.cache.quota_sources().state(&source.gvk);
        let resource = match &state {
            Some(KindState::Watched {
                resource,
                synced,
                error,
            }) => {
                if let Some(e) = error {
                    problems.push(format!("cannot watch {}: {e}", resource));
                    blocked = true;
                } else if !synced {
                    problems.push(format!("{resource} not listed yet"));
                    blocked = true;
                }
                resource.clone()
            }
            Some(KindState::Unavailable(reason)) => {
                problems.push(reason.clone());
                blocked = true;
                String::new()
            }
            None => {
                problems.push(format!("{} not watched yet", source.gvk.kind));
                blocked = true;
                String::new()
            }
        };
        targets.push(QuotaTarget {
            group: source.gvk.group.clone(),
            version: source.gvk.version.clone(),
            kind: source.gvk.kind.clone(),
            resource,
            op: spec.op,
            path: spec.path.clone().unwrap_or_default(),
            scope: "namespace".to_owned(),
        });
        if !kinds.contains(&&source.gvk) {
            kinds.push(&source.gvk);
        }
    }
    if blocked {
        problems.truncate(8);
        let mut status = object.status.clone();
        status.conditions = vec![condition(false, "Incomplete", problems.join("; "), previous)];
        status.targets = targets;
        status.namespaces = namespaces;
        status.observed_generation = object.generation;
        return (status, Vec::new());
    }
    for gvk in kinds {
        let objects = ctx.cache.quota_sources().objects(gvk, |ns| {
            namespaces.binary_search_by(|n| n.as_str().cmp(ns)).is_ok()
        });
        for counted in objects {
            match quota.usage(gvk, &counted.projection) {
                Ok(Some(usage)) => claims.push((
                    QuotaClaim {
                        group: gvk.group.clone(),
                        version: gvk.version.clone(),
                        kind: gvk.kind.clone(),
                        namespace: counted.namespace,
                        name: counted.name,
                        uid: counted.uid,
                        usage: Quantity(format_millis(usage)),
                    },
                    usage as f64 / 1000.0,
                )),
                Ok(None) => {}
                Err(e) => problems.push(format!(
                    "{} {}/{}: {e}",
                    gvk.kind, counted.namespace, counted.name
                )),
            }
        }
    }
    let limit = parse_millis(&object.limit.0).unwrap_or(0);
    let used: i128 = claims
        .iter()
        .map(|(c, _)| parse_millis(&c.usage.0).unwrap_or(0))
        .sum();
    problems.truncate(8);
    let ready = if problems.is_empty() {
        condition(true, "Succeeded", "reconciled".to_owned(), previous)
    } else {
        condition(false, "Incomplete", problems.join("; "), previous)
    };
    let status = CustomQuotaStatus {
        usage: Some(QuotaUsage {
            used: Some(Quantity(format_millis(used))),
            available: Some(Quantity(format_millis((limit - used).max(0)))),
        }),
        claims: claims.iter().map(|(c, _)| c.clone()).collect(),
        reservations: Vec::new(),
        namespaces,
        targets,
        conditions: vec![ready],
        observed_generation: object.generation,
    };
    (status, claims)
}

async fn count(
    ctx: &Context,
    key: &Key,
    object: &Object,
    quota: &Result<Quota, Vec<String>>,
    namespace_labels: &[(String, BTreeMap<String, String>)],
) -> Result<(), String> {
    let (mut status, claims) = desired(ctx, key, object, quota, namespace_labels);
    let (kind, namespace, name) = match key {
        Key::Namespaced(ns, name) => ("CustomQuota", ns.as_str(), name.as_str()),
        Key::Global(name) => ("GlobalCustomQuota", "", name.as_str()),
    };
    let limit = parse_millis(&object.limit.0).unwrap_or(0) as f64 / 1000.0;
    let used = status
        .usage
        .as_ref()
        .and_then(|u| u.used.as_ref())
        .and_then(|q| parse_millis(&q.0))
        .unwrap_or(0) as f64
        / 1000.0;
    let m = &ctx.metrics.custom_quota;
    m.with_label_values(&[kind, namespace, name, "used"]).set(used);
    m.with_label_values(&[kind, namespace, name, "limit"]).set(limit);
    m.with_label_values(&[kind, namespace, name, "available"])
        .set((limit - used).max(0.0));
    if object.per_claim_metrics {
        for (c, usage) in &claims {
            ctx.metrics
                .custom_quota_item
                .with_label_values(&[kind, namespace, name, &c.kind, &c.namespace, &c.name])
                .set(*usage);
        }
    }
    let mut current = object.clone();
    for _ in 0..8 {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let sources = ctx.cache.quota_sources();
        status.reservations =
            pending_reservations(&current.status.reservations, now, |uid| sources.was_deleted(uid));
        if status == current.status {
            return Ok(());
        }
        // A merge patch leaves out what it does not name: a list emptied is written as null.
        let mut body = serde_json::to_value(&status).map_err(|e| e.to_string())?;
        if let Some(fields) = body.as_object_mut() {
            for key in [
                "usage",
                "claims",
                "reservations",
                "namespaces",
                "targets",
                "conditions",
            ] {
                fields.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.version},
            "status": body,
        });
        let result = key.patch_status(&ctx.client, &patch).await.map(|_| ());
        match result {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                debug!(quota = ?key, "a CustomQuota changed while it was counted; reading it again");
                let q = key.get(&ctx.client).await.map_err(|e| e.to_string())?;
                current = object_of(q.meta(), &q.definition(), q.status());
                if current.limit != object.limit || current.generation != object.generation {
                    // The spec changed: the next pass counts it.
                    return Ok(());
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the quota kept changing while it was written".to_owned())
}

/// Sets the hook's rules in the validating configuration, leaving the rest as it is.
async fn apply_rules(
    ctx: &Context,
    configuration: &str,
    served: &[(String, String, String)],
) -> Result<(), String> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(ctx.client.clone());
    for _ in 0..5 {
        let mut config = api
            .get(configuration)
            .await
            .map_err(|e| format!("cannot read ValidatingWebhookConfiguration {configuration}: {e}"))?;
        let rules = custom_quota_rules(served);
        let Some(hook) = config
            .webhooks
            .iter_mut()
            .flatten()
            .find(|w| w.name == CUSTOM_QUOTAS_HOOK)
        else {
            return Err(format!(
                "ValidatingWebhookConfiguration {configuration} has no hook {CUSTOM_QUOTAS_HOOK}"
            ));
        };
        let wanted = (!rules.is_empty()).then_some(rules);
        if hook.rules == wanted {
            return Ok(());
        }
        hook.rules = wanted;
        match api.replace(configuration, &PostParams::default(), &config).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return Err(format!(
                    "cannot write ValidatingWebhookConfiguration {configuration}: {e}"
                ));
            }
        }
    }
    Err(format!(
        "ValidatingWebhookConfiguration {configuration} kept changing"
    ))
}
