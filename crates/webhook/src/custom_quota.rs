//! The `customquotas` check: admits a create or update of a counted kind only if every CustomQuota and
//! GlobalCustomQuota counting it has room, and reserves that room in the quota's status before
//! answering.
//!
//! The reservation is written with the quota's resourceVersion as a precondition: two webhooks (two
//! replicas, or two requests in one) admitting at once cannot both take the last unit, since the
//! second write fails, is read again with the first one's reservation in it, and is judged anew. In one
//! process, writes to one quota also wait for each other, so they rarely conflict. A request that is
//! refused after reserving in some quotas gives those reservations back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bulkhead_api::custom_quota::{CustomQuotaStatus, QuotaReservation};
use bulkhead_api::{CustomQuota, GlobalCustomQuota};
use bulkhead_cache::Cache;
use bulkhead_cache::quota_ref::{AnyQuota, QuotaRef};
use bulkhead_policy::admission::Verdict;
use bulkhead_policy::custom_quota::{Gvk, Quota, Whole, admit, compile};
use bulkhead_policy::quota::format_millis;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::sync::Mutex;

use crate::review::AdmissionRequest;

/// How many times a reservation is tried against a quota that keeps changing under it.
const ATTEMPTS: usize = 12;

/// A quota's status as last read or written, with its resourceVersion.
#[derive(Clone, Debug)]
struct Seen {
    version: String,
    limit: Quantity,
    status: CustomQuotaStatus,
}

fn numeric(version: &str) -> u64 {
    version.parse().unwrap_or(0)
}

/// Per-quota locks and the newest version each was seen at, shared by the requests of one process.
#[derive(Default)]
pub struct Ledgers {
    locks: Mutex<HashMap<QuotaRef, Arc<tokio::sync::Mutex<Option<Seen>>>>>,
    /// Each quota compiled, with the uid and generation it was compiled at (a status write changes
    /// neither), so a request compiles no path.
    compiled: Mutex<HashMap<QuotaRef, Compiled>>,
}

type Compiled = (String, Option<i64>, Arc<Result<Quota, Vec<String>>>);

impl Ledgers {
    fn compiled(
        &self,
        key: &QuotaRef,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        compile_now: impl FnOnce() -> Result<Quota, Vec<String>>,
    ) -> Arc<Result<Quota, Vec<String>>> {
        let uid = meta.uid.clone().unwrap_or_default();
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((u, g, quota)) = compiled.get(key)
            && *u == uid
            && *g == meta.generation
        {
            return quota.clone();
        }
        let quota = Arc::new(compile_now());
        compiled.insert(key.clone(), (uid, meta.generation, quota.clone()));
        quota
    }

    fn lock_of(&self, key: &QuotaRef) -> Arc<tokio::sync::Mutex<Option<Seen>>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }
}

/// One quota the request counts in, and what the object uses of it after the write.
struct Affected {
    key: QuotaRef,
    usage: i128,
    cached: Seen,
}

/// Decides a request of the `customquotas` hook.
pub async fn decide(
    cache: &Cache,
    client: Option<&Client>,
    ledgers: &Ledgers,
    request: &AdmissionRequest,
) -> Result<Verdict, String> {
    if !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
        return Ok(Verdict::allow());
    }
    if request.kind.group == bulkhead_api::GROUP
        && matches!(request.kind.kind.as_str(), "CustomQuota" | "GlobalCustomQuota")
    {
        return check_quota(request);
    }
    let Some(namespace) = request.namespace.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(Verdict::allow());
    };
    let mut object: Value = match request.object.as_deref() {
        Some(raw) => {
            serde_json::from_str(raw.get()).map_err(|e| format!("the object cannot be read: {e}"))?
        }
        None => return Ok(Verdict::allow()),
    };
    let mut old: Option<Value> = request
        .old_object
        .as_deref()
        .filter(|r| r.get() != "null")
        .map(|raw| serde_json::from_str(raw.get()))
        .transpose()
        .map_err(|e| format!("the old object cannot be read: {e}"))?;
    let mut gvk = Gvk {
        group: request.kind.group.clone(),
        version: request.kind.version.clone(),
        kind: request.kind.kind.clone(),
    };
    match request.sub_resource.as_deref() {
        // A Pod's resize carries the whole Pod.
        None | Some("resize") => {}
        // A scale carries a Scale: the object is judged as it will be, its replicas replaced.
        Some("scale") => match scaled(cache, client, request, namespace, &object).await? {
            Some((parent_gvk, before, after)) => {
                gvk = parent_gvk;
                old = Some(before);
                object = after;
            }
            None => return Ok(Verdict::allow()),
        },
        Some(_) => return Ok(Verdict::allow()),
    }
    let namespace_labels = namespace_labels(cache, client, namespace).await?;
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(&request.name)
        .to_owned();
    let whole = Whole::new(&object);
    let old_whole = old.as_ref().map(Whole::new);
    let mut affected = Vec::new();
    let mut consider = |key: QuotaRef,
                        quota: Arc<Result<Quota, Vec<String>>>,
                        seen: &dyn Fn() -> Seen|
     -> Result<(), String> {
        let Ok(quota) = quota.as_ref() else {
            // A quota that cannot be compiled is reported in its status by the controller and
            // enforces nothing.
            return Ok(());
        };
        if !quota.counts_kind(&gvk) || !quota.selects_namespace(namespace, &namespace_labels) {
            return Ok(());
        }
        let usage = quota.usage(&gvk, &whole).map_err(|e| {
            format!(
                "{} cannot count {} {namespace}/{name}: {e}",
                key.describe(),
                gvk.kind
            )
        })?;
        let Some(usage) = usage else { return Ok(()) };
        if let Some(old) = &old_whole
            && let Ok(Some(before)) = quota.usage(&gvk, old)
            && usage <= before
        {
            return Ok(());
        }
        affected.push(Affected {
            key,
            usage,
            cached: seen(),
        });
        Ok(())
    };
    for q in cache.custom_quotas().store().state() {
        if q.namespace().as_deref() != Some(namespace) {
            continue;
        }
        let key = QuotaRef::Namespaced(namespace.to_owned(), q.name_any());
        let quota = ledgers.compiled(&key, q.meta(), || compile(&q.definition()));
        let seen = || seen_from(&q.meta().resource_version, &q.spec.limit, q.status.as_ref());
        if let Err(message) = consider(key, quota, &seen) {
            return Ok(Verdict::deny(None, message));
        }
    }
    for q in cache.global_custom_quotas().store().state() {
        let key = QuotaRef::Global(q.name_any());
        let quota = ledgers.compiled(&key, q.meta(), || compile(&q.definition()));
        let seen = || seen_from(&q.meta().resource_version, &q.spec.limit, q.status.as_ref());
        if let Err(message) = consider(key, quota, &seen) {
            return Ok(Verdict::deny(None, message));
        }
    }
    if affected.is_empty() {
        return Ok(Verdict::allow());
    }
    if uid.is_empty() {
        return Ok(Verdict::deny(
            None,
            format!("{} {namespace}/{name} has no uid to reserve quota for", gvk.kind),
        ));
    }
    let Some(client) = client else {
        return Ok(Verdict::deny(None, "quotas cannot be reserved: no API client"));
    };
    affected.sort_by(|a, b| a.key.cmp(&b.key));
    let dry_run = request.dry_run == Some(true);
    let verb = if request.operation == "CREATE" {
        "creating"
    } else {
        "updating"
    };
    let mut reserved: Vec<&QuotaRef> = Vec::new();
    for a in &affected {
        let reservation = QuotaReservation {
            uid: uid.clone(),
            namespace: namespace.to_owned(),
            name: name.clone(),
            usage: Quantity(format_millis(a.usage)),
            time: k8s_openapi::jiff::Timestamp::now().to_string(),
        };
        match reserve(client, ledgers, a, reservation, dry_run).await {
            Ok(wrote) => {
                if wrote {
                    reserved.push(&a.key);
                }
            }
            Err(Refusal::Exceeded(detail)) => {
                release(client, ledgers, &reserved, &uid).await;
                return Ok(Verdict::deny(
                    None,
                    format!(
                        "{verb} {} {namespace}/{name} exceeds the limit of {}: {detail}",
                        gvk.kind,
                        a.key.describe()
                    ),
                ));
            }
            Err(Refusal::Failed(error)) => {
                release(client, ledgers, &reserved, &uid).await;
                return Ok(Verdict::deny(
                    None,
                    format!("cannot reserve room in {} (retry): {error}", a.key.describe()),
                ));
            }
        }
    }
    Ok(Verdict::allow())
}

/// A quota itself: refused when a path, field selector or the limit cannot be read, saying each
/// problem (the CRD's rules catch the rest).
fn check_quota(request: &AdmissionRequest) -> Result<Verdict, String> {
    let Some(raw) = request.object.as_deref() else {
        return Ok(Verdict::allow());
    };
    let (what, problems) = if request.kind.kind == "CustomQuota" {
        let q: CustomQuota =
            serde_json::from_str(raw.get()).map_err(|e| format!("the CustomQuota cannot be read: {e}"))?;
        let what = format!(
            "CustomQuota {}/{}",
            q.namespace().unwrap_or_default(),
            q.name_any()
        );
        (what, compile(&q.definition()).err())
    } else {
        let q: GlobalCustomQuota = serde_json::from_str(raw.get())
            .map_err(|e| format!("the GlobalCustomQuota cannot be read: {e}"))?;
        let what = format!("GlobalCustomQuota {}", q.name_any());
        (what, compile(&q.definition()).err())
    };
    Ok(match problems {
        Some(problems) => Verdict::deny(None, format!("{what}: {}", problems.join("; "))),
        None => Verdict::allow(),
    })
}

/// For a write of the `scale` subresource: the parent's kind, the parent as it is and as it will be
/// (its `.spec.replicas` set from the Scale). `None` when no quota counts the parent's resource.
async fn scaled(
    cache: &Cache,
    client: Option<&Client>,
    request: &AdmissionRequest,
    namespace: &str,
    scale: &Value,
) -> Result<Option<(Gvk, Value, Value)>, String> {
    let Some(resource) = &request.resource else {
        return Ok(None);
    };
    // The kind a resource is served as, from the quotas' targets (the controller wrote them from
    // discovery).
    let targets = cache
        .custom_quotas()
        .store()
        .state()
        .into_iter()
        .filter_map(|q| q.status.clone())
        .chain(
            cache
                .global_custom_quotas()
                .store()
                .state()
                .into_iter()
                .filter_map(|q| q.status.clone()),
        )
        .flat_map(|s| s.targets);
    let mut target = None;
    for t in targets {
        if t.group == resource.group && t.version == resource.version && t.resource == resource.resource {
            target = Some(t);
            break;
        }
    }
    let Some(target) = target else { return Ok(None) };
    let Some(client) = client else {
        return Err("a scale cannot be judged: no API client".to_owned());
    };
    let gvk = kube::api::GroupVersionKind::gvk(&target.group, &target.version, &target.kind);
    let api_resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, &target.resource);
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource);
    let parent = api
        .get(&request.name)
        .await
        .map_err(|e| format!("cannot read {} {namespace}/{}: {e}", target.kind, request.name))?;
    let before = serde_json::to_value(&parent).map_err(|e| e.to_string())?;
    let mut after = before.clone();
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(Value::from(0));
    match after.get_mut("spec").and_then(Value::as_object_mut) {
        Some(spec) => {
            spec.insert("replicas".to_owned(), replicas);
        }
        None => after["spec"] = json!({"replicas": replicas}),
    }
    Ok(Some((
        Gvk {
            group: target.group,
            version: target.version,
            kind: target.kind,
        },
        before,
        after,
    )))
}

fn seen_from(version: &Option<String>, limit: &Quantity, status: Option<&CustomQuotaStatus>) -> Seen {
    Seen {
        version: version.clone().unwrap_or_default(),
        limit: limit.clone(),
        status: status.cloned().unwrap_or_default(),
    }
}

fn seen_of(q: &AnyQuota) -> Seen {
    seen_from(&q.meta().resource_version, q.definition().limit, q.status())
}

async fn namespace_labels(
    cache: &Cache,
    client: Option<&Client>,
    namespace: &str,
) -> Result<BTreeMap<String, String>, String> {
    if let Some(ns) = cache.namespace(namespace) {
        return Ok(ns.metadata.labels.clone().unwrap_or_default());
    }
    let Some(client) = client else {
        return Ok(BTreeMap::new());
    };
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(ns) => Ok(ns.and_then(|n| n.metadata.labels).unwrap_or_default()),
        Err(e) => Err(format!("cannot read namespace {namespace}: {e}")),
    }
}

enum Refusal {
    Exceeded(String),
    Failed(String),
}

/// Reserves `usage` for the object in one quota; `Ok(true)` if a reservation was written.
async fn reserve(
    client: &Client,
    ledgers: &Ledgers,
    affected: &Affected,
    reservation: QuotaReservation,
    dry_run: bool,
) -> Result<bool, Refusal> {
    let lock = ledgers.lock_of(&affected.key);
    let mut last = lock.lock().await;
    // The newest of what the cache holds and what this process last wrote or read.
    let mut seen = match last.as_ref() {
        Some(l) if numeric(&l.version) > numeric(&affected.cached.version) => l.clone(),
        _ => affected.cached.clone(),
    };
    for _ in 0..ATTEMPTS {
        let limit = bulkhead_policy::quota::parse_millis(&seen.limit.0).unwrap_or(0);
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let kept = match admit(
            limit,
            &seen.status.claims,
            &seen.status.reservations,
            reservation.clone(),
            affected.usage,
            now,
        ) {
            Ok(None) => return Ok(false),
            Ok(Some(kept)) => kept,
            Err(exceeded) => return Err(Refusal::Exceeded(exceeded.describe())),
        };
        if dry_run {
            return Ok(false);
        }
        match write_reservations(client, &affected.key, &seen.version, &kept).await {
            Ok(written) => {
                *last = Some(written);
                return Ok(true);
            }
            Err(WriteError::Conflict) => {
                seen = read(client, &affected.key).await.map_err(Refusal::Failed)?;
                *last = Some(seen.clone());
            }
            Err(WriteError::Other(e)) => return Err(Refusal::Failed(e)),
        }
    }
    Err(Refusal::Failed(format!(
        "the quota changed under every one of {ATTEMPTS} attempts"
    )))
}

/// Takes back the reservations of `uid` in `keys` (a request refused by a later quota). Best effort:
/// a reservation left behind expires anyway.
async fn release(client: &Client, ledgers: &Ledgers, keys: &[&QuotaRef], uid: &str) {
    for key in keys {
        let lock = ledgers.lock_of(key);
        let mut last = lock.lock().await;
        for _ in 0..3 {
            let Ok(seen) = read(client, key).await else { break };
            let kept: Vec<QuotaReservation> = seen
                .status
                .reservations
                .iter()
                .filter(|r| r.uid != uid)
                .cloned()
                .collect();
            match write_reservations(client, key, &seen.version, &kept).await {
                Ok(written) => {
                    *last = Some(written);
                    break;
                }
                Err(WriteError::Conflict) => continue,
                Err(WriteError::Other(_)) => break,
            }
        }
    }
}

enum WriteError {
    Conflict,
    Other(String),
}

async fn read(client: &Client, key: &QuotaRef) -> Result<Seen, String> {
    let q = key.get(client).await.map_err(|e| e.to_string())?;
    Ok(seen_of(&q))
}

async fn write_reservations(
    client: &Client,
    key: &QuotaRef,
    version: &str,
    reservations: &[QuotaReservation],
) -> Result<Seen, WriteError> {
    let patch = json!({
        "metadata": {"resourceVersion": version},
        "status": {"reservations": reservations},
    });
    let result = key.patch_status(client, &patch).await.map(|q| seen_of(&q));
    result.map_err(|e| match e {
        kube::Error::Api(status) if status.code == 409 => WriteError::Conflict,
        other => WriteError::Other(other.to_string()),
    })
}
