//! The object store: every object as JSON, one global resourceVersion counter, a bounded history of
//! changes for watches, and the write semantics the API server applies (resourceVersion conflicts,
//! no-op updates, the status subresource, finalizers, namespace termination, owner-reference garbage
//! collection).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::registry::{GroupResource, Registry, ResourceType};
use crate::status::{ApiError, ApiResult};

/// What a watch event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object was removed.
    Deleted,
}

/// One change, as kept in the history and sent to watches.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Which bucket.
    pub gr: GroupResource,
    /// The object's namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for Deleted: its last state).
    pub object: Arc<Value>,
    /// The object before the change (Modified only).
    pub old: Option<Arc<Value>>,
}

/// How many changes are kept for watches that resume from a resourceVersion.
const HISTORY: usize = 100_000;

type Bucket = BTreeMap<(String, String), Arc<Value>>;

/// The store. It lives behind one lock; every write sends its change to the broadcast while holding it,
/// so watches see changes in resourceVersion order.
pub struct Store {
    rv: u64,
    uid_seed: u64,
    objects: HashMap<GroupResource, Bucket>,
    history: VecDeque<Arc<Change>>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Server-side apply: what each field manager last applied to each object.
    applied: HashMap<(GroupResource, String, String, String), Value>,
    /// Counts of writes, for tests that check idleness: (verb, group/resource) -> count.
    pub writes: BTreeMap<(String, String), u64>,
}

/// Options of a delete.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    /// `propagationPolicy=Orphan`: dependents are not collected.
    pub orphan: bool,
    /// A uid precondition.
    pub uid: Option<String>,
    /// A resourceVersion precondition.
    pub resource_version: Option<String>,
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta(object: &Value, field: &str) -> Option<String> {
    object.get("metadata")?.get(field)?.as_str().map(str::to_owned)
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable_metadata(),
    }
}

#[allow(clippy::panic)]
fn unreachable_metadata() -> ! {
    // metadata was made an object just above.
    panic!("metadata is an object")
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// The object without the fields that change on every write, to detect no-op updates. ObjectMeta is a
/// typed struct in the API server whose empty maps and lists are omitted: `labels: {}` is no labels.
fn comparable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
        m.remove("generation");
        m.retain(|_, v| {
            !(v.as_object().is_some_and(|x| x.is_empty()) || v.as_array().is_some_and(|x| x.is_empty()))
        });
    }
    o
}

fn spec_part(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        let (changes, _) = broadcast::channel(65_536);
        let uid_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            ^ u64::from(std::process::id());
        Store {
            rv: 1,
            uid_seed,
            objects: HashMap::new(),
            history: VecDeque::new(),
            changes,
            applied: HashMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// The changes after `rv` for a bucket, or 410 if they are no longer kept.
    pub fn changes_since(&self, rv: u64, gr: &GroupResource) -> ApiResult<Vec<Arc<Change>>> {
        let oldest = self.history.front().map(|c| c.rv).unwrap_or(self.rv + 1);
        if rv + 1 < oldest && rv < self.rv {
            return Err(ApiError::gone(rv, oldest - 1));
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > rv && &c.gr == gr)
            .cloned()
            .collect())
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// A fresh uid, as the API server gives each new object.
    pub fn new_uid(&mut self) -> String {
        let n = self.next_counter();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (self.uid_seed >> 32) as u32,
            (self.uid_seed >> 16) as u16,
            n >> 12 & 0xfff,
            n & 0xfff,
            n
        )
    }

    fn next_counter(&mut self) -> u64 {
        self.uid_seed = self
            .uid_seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.uid_seed >> 16
    }

    fn record(
        &mut self,
        gr: &GroupResource,
        namespace: &str,
        kind: EventType,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
        rv: u64,
    ) {
        let change = Arc::new(Change {
            rv,
            gr: gr.clone(),
            namespace: namespace.to_owned(),
            kind,
            object,
            old,
        });
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        // No receiver is fine: nobody watches.
        let _ = self.changes.send(change);
    }

    fn count_write(&mut self, verb: &str, gr: &GroupResource) {
        let name = if gr.group.is_empty() {
            gr.resource.clone()
        } else {
            format!("{}.{}", gr.resource, gr.group)
        };
        *self.writes.entry((verb.to_owned(), name)).or_default() += 1;
    }

    /// One object.
    pub fn get(&self, gr: &GroupResource, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(gr)?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every object of a bucket, optionally in one namespace, ordered by namespace and name.
    pub fn list(&self, gr: &GroupResource, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(bucket) = self.objects.get(gr) else {
            return Vec::new();
        };
        match namespace {
            Some(ns) => bucket
                .range((ns.to_owned(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, o)| o.clone())
                .collect(),
            None => bucket.values().cloned().collect(),
        }
    }

    /// Every object in every bucket (for RBAC, GC and admission lookups).
    pub fn buckets(&self) -> impl Iterator<Item = (&GroupResource, &Bucket)> {
        self.objects.iter()
    }

    /// Creates an object. `object` must already carry apiVersion and kind.
    pub fn create(&mut self, rt: &ResourceType, namespace: &str, mut object: Value) -> ApiResult<Arc<Value>> {
        let gr = rt.group_resource();
        let name = match meta(&object, "name").filter(|n| !n.is_empty()) {
            Some(name) => name,
            None => match meta(&object, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => {
                    let suffix: String = (0..5)
                        .map(|_| {
                            let n = (self.next_counter() % 36) as u8;
                            (if n < 10 { b'0' + n } else { b'a' + n - 10 }) as char
                        })
                        .collect();
                    format!("{prefix}{suffix}")
                }
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        &["metadata.name: Required value: name or generateName is required".into()],
                    ));
                }
            },
        };
        if let Some(problem) = invalid_name(rt, &name) {
            return Err(ApiError::invalid(
                rt,
                &name,
                &[format!("metadata.name: Invalid value: \"{name}\": {problem}")],
            ));
        }
        if self.get(&gr, namespace, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.namespaced {
            let ns_gr = GroupResource {
                group: String::new(),
                resource: "namespaces".into(),
            };
            match self.get(&ns_gr, "", namespace) {
                None => {
                    let mut e = ApiError::not_found(&namespace_type(), namespace);
                    e.message = format!("namespaces \"{namespace}\" not found");
                    return Err(e);
                }
                Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        rt.group_resource_name()
                    )));
                }
                Some(_) => {}
            }
        }
        if !namespace.is_empty() {
            self.check_quota(&rt.group_resource(), namespace, &name)?;
        }
        let rv = self.next_rv();
        // The uid given before validating admission (see `admission`), as the API server's
        // BeforeCreate does; a client's own uid never gets this far.
        let uid = match meta(&object, "uid").filter(|u| !u.is_empty()) {
            Some(uid) => uid,
            None => self.new_uid(),
        };
        let m = meta_mut(&mut object);
        m.insert("name".into(), json!(name));
        if rt.namespaced {
            m.insert("namespace".into(), json!(namespace));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(uid));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        if rt.status
            && let Some(o) = object.as_object_mut()
        {
            o.remove("status");
        }
        if rt.group.is_empty() && rt.plural == "namespaces" {
            let m = meta_mut(&mut object);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        let object = Arc::new(object);
        self.objects
            .entry(gr.clone())
            .or_default()
            .insert((namespace.to_owned(), name), object.clone());
        self.count_write("create", &gr);
        self.record(&gr, namespace, EventType::Added, object.clone(), None, rv);
        if !namespace.is_empty() {
            self.refresh_quota_status(namespace);
        }
        Ok(object)
    }

    /// Replaces an object (PUT), on the main resource or on its `status` subresource. A stale
    /// resourceVersion is a 409; an update that changes nothing is not a write (no new resourceVersion).
    pub fn update(
        &mut self,
        registry: &Registry,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        subresource: Option<&str>,
    ) -> ApiResult<Arc<Value>> {
        let gr = rt.group_resource();
        let old = self
            .get(&gr, namespace, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(body_name) = meta(&object, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = meta(&object, "resourceVersion").filter(|rv| !rv.is_empty())
            && Some(rv) != meta(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(rt, name));
        }
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        // Who wrote what (set by the handler): kept whatever part of the object is written.
        let managed_fields = object.pointer("/metadata/managedFields").cloned();
        match subresource {
            Some("status") => {
                let status = object.get("status").cloned();
                object = (*old).clone();
                match status {
                    Some(s) => object["status"] = s,
                    None => {
                        if let Some(o) = object.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            Some("finalize") => {
                let finalizers = object.pointer("/spec/finalizers").cloned();
                object = (*old).clone();
                object["spec"]["finalizers"] = finalizers.unwrap_or_else(|| json!([]));
            }
            _ => {
                if rt.status {
                    match old.get("status") {
                        Some(s) => object["status"] = s.clone(),
                        None => {
                            if let Some(o) = object.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                if rt.group.is_empty() && rt.plural == "namespaces" {
                    // spec.finalizers changes only through namespaces/finalize.
                    object["spec"] = old.get("spec").cloned().unwrap_or_else(|| json!({}));
                }
            }
        }
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        let m = meta_mut(&mut object);
        if let Some(fields) = managed_fields {
            m.insert("managedFields".into(), fields);
        }
        for keep in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(keep) {
                Some(v) => m.insert(keep.into(), v.clone()),
                None => m.remove(keep),
            };
        }
        if spec_part(&object) != spec_part(&old) {
            let generation = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1) + 1;
            meta_mut(&mut object).insert("generation".into(), json!(generation));
        }
        if comparable(&object) == comparable(&old) {
            return Ok(old);
        }
        let rv = self.next_rv();
        meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        let object = Arc::new(object);
        self.count_write("update", &gr);
        if object.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&object) {
            // The last finalizer is gone: the object goes.
            self.remove(registry, &gr, namespace, name, object.clone(), rv, false);
            return Ok(object);
        }
        self.objects
            .entry(gr.clone())
            .or_default()
            .insert((namespace.to_owned(), name.to_owned()), object.clone());
        self.record(&gr, namespace, EventType::Modified, object.clone(), Some(old), rv);
        // A pod changing phase, or a quota's limits changing, changes what the quotas report.
        if is_core(rt, "pods") || (is_core(rt, "resourcequotas") && subresource != Some("status")) {
            self.refresh_quota_status(namespace);
        }
        Ok(object)
    }

    /// Deletes an object: at once, or (with finalizers) by marking it for deletion.
    pub fn delete(
        &mut self,
        registry: &Registry,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Arc<Value>> {
        let gr = rt.group_resource();
        let old = self
            .get(&gr, namespace, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if options
            .uid
            .as_ref()
            .is_some_and(|uid| Some(uid) != meta(&old, "uid").as_ref())
            || options
                .resource_version
                .as_ref()
                .is_some_and(|rv| Some(rv) != meta(&old, "resourceVersion").as_ref())
        {
            return Err(ApiError::conflict(rt, name));
        }
        self.count_write("delete", &gr);
        let is_namespace = rt.group.is_empty() && rt.plural == "namespaces";
        if is_namespace || has_finalizers(&old) {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut marked = (*old).clone();
            meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(now()));
            meta_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(0));
            if is_namespace {
                marked["status"] = json!({"phase": "Terminating"});
            }
            let rv = self.next_rv();
            meta_mut(&mut marked).insert("resourceVersion".into(), json!(rv.to_string()));
            let marked = Arc::new(marked);
            self.objects
                .entry(gr.clone())
                .or_default()
                .insert((namespace.to_owned(), name.to_owned()), marked.clone());
            self.record(&gr, namespace, EventType::Modified, marked.clone(), Some(old), rv);
            if is_namespace {
                self.terminate_namespace(registry, name);
            }
            return Ok(marked);
        }
        let rv = self.next_rv();
        self.remove(registry, &gr, namespace, name, old.clone(), rv, options.orphan);
        Ok(old)
    }

    /// Removes an object for good, then collects its dependents and, if it was the last thing holding
    /// up a terminating namespace, the namespace.
    #[allow(clippy::too_many_arguments)]
    fn remove(
        &mut self,
        registry: &Registry,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        last: Arc<Value>,
        rv: u64,
        orphan: bool,
    ) {
        if let Some(bucket) = self.objects.get_mut(gr) {
            bucket.remove(&(namespace.to_owned(), name.to_owned()));
        }
        self.applied
            .retain(|(g, ns, n, _), _| !(g == gr && ns == namespace && n == name));
        let mut gone = (*last).clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(gr, namespace, EventType::Deleted, Arc::new(gone), None, rv);
        if !orphan && let Some(uid) = meta(&last, "uid") {
            self.collect_dependents(registry, &uid);
        }
        if gr.group.is_empty() && gr.resource == "namespaces" {
            return;
        }
        if !namespace.is_empty() {
            self.refresh_quota_status(namespace);
        }
        if !namespace.is_empty() {
            self.try_finalize_namespace(registry, namespace);
        }
    }

    /// The objects of `gr` in `namespace` that count against quota (pods: those not Succeeded or
    /// Failed).
    fn counted(&self, gr: &GroupResource, namespace: &str) -> i64 {
        let objects = self.list(gr, Some(namespace));
        if !(gr.group.is_empty() && gr.resource == "pods") {
            return objects.len() as i64;
        }
        objects
            .iter()
            .filter(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
            })
            .count() as i64
    }

    /// Quota admission for object counts: an object that would take a namespace over any quota's
    /// `count/<resource>[.<group>]` limit (or, for the core kinds that have one, `pods`, `secrets`,
    /// `configmaps`, ...) is refused, as the API server's quota admission refuses it. Checked under the
    /// store lock, so concurrent creations cannot both take the last slot. Compute resources
    /// (`requests.cpu`) are not accounted.
    fn check_quota(&self, gr: &GroupResource, namespace: &str, name: &str) -> ApiResult<()> {
        let quotas = GroupResource {
            group: String::new(),
            resource: "resourcequotas".into(),
        };
        for quota in self.list(&quotas, Some(namespace)) {
            let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object) else {
                continue;
            };
            for (key, limit) in hard {
                if counted_by(key).as_ref() != Some(gr) {
                    continue;
                }
                let Some(limit) = quantity_count(limit) else {
                    continue;
                };
                let used = self.counted(gr, namespace);
                if used + 1 > limit {
                    let quota_name = quota
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let what = if gr.group.is_empty() {
                        gr.resource.clone()
                    } else {
                        format!("{}.{}", gr.resource, gr.group)
                    };
                    return Err(ApiError::forbidden(format!(
                        "{what} \"{name}\" is forbidden: exceeded quota: {quota_name}, requested: {key}=1, used: {key}={used}, limited: {key}={limit}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// What the quota controller does: each quota's status says its hard limits and the objects
    /// counted ("0" for what is not accounted). These writes are the cluster's own, not a client's,
    /// so they are not counted in `writes`.
    fn refresh_quota_status(&mut self, namespace: &str) {
        let gr = GroupResource {
            group: String::new(),
            resource: "resourcequotas".into(),
        };
        for quota in self.list(&gr, Some(namespace)) {
            let hard = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
            let mut used_map = serde_json::Map::new();
            for key in hard.as_object().into_iter().flatten().map(|(k, _)| k) {
                let used = counted_by(key).map_or(0, |counted| self.counted(&counted, namespace));
                used_map.insert(key.to_owned(), json!(used.to_string()));
            }
            let status = json!({"hard": hard, "used": used_map});
            if quota.get("status") == Some(&status) {
                continue;
            }
            let mut next = (*quota).clone();
            next["status"] = status;
            let rv = self.next_rv();
            meta_mut(&mut next).insert("resourceVersion".into(), json!(rv.to_string()));
            let name = next
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let next = Arc::new(next);
            self.objects
                .entry(gr.clone())
                .or_default()
                .insert((namespace.to_owned(), name), next.clone());
            self.record(&gr, namespace, EventType::Modified, next, Some(quota), rv);
        }
    }

    /// Background garbage collection: deletes every object owned by `uid`.
    fn collect_dependents(&mut self, registry: &Registry, uid: &str) {
        let mut dependents = Vec::new();
        for (gr, bucket) in &self.objects {
            for ((ns, name), object) in bucket {
                let owned = object
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                    });
                if owned {
                    dependents.push((gr.clone(), ns.clone(), name.clone()));
                }
            }
        }
        for (gr, ns, name) in dependents {
            if let Some(rt) = registry.any_version(&gr) {
                // Already gone or marked: both fine for a collector.
                let _ = self.delete(registry, &rt, &ns, &name, &DeleteOptions::default());
            }
        }
    }

    fn terminate_namespace(&mut self, registry: &Registry, namespace: &str) {
        let mut contents = Vec::new();
        for (gr, bucket) in &self.objects {
            for (ns, name) in bucket.keys() {
                if ns == namespace {
                    contents.push((gr.clone(), name.clone()));
                }
            }
        }
        for (gr, name) in contents {
            if let Some(rt) = registry.any_version(&gr) {
                let _ = self.delete(registry, &rt, namespace, &name, &DeleteOptions::default());
            }
        }
        self.try_finalize_namespace(registry, namespace);
    }

    /// The namespace controller's last step: a terminating namespace with no contents left loses its
    /// `kubernetes` finalizer and, with no other finalizer, goes.
    fn try_finalize_namespace(&mut self, registry: &Registry, namespace: &str) {
        let ns_gr = GroupResource {
            group: String::new(),
            resource: "namespaces".into(),
        };
        let Some(ns) = self.get(&ns_gr, "", namespace) else {
            return;
        };
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let empty = self.objects.values().all(|bucket| {
            bucket
                .range((namespace.to_owned(), String::new())..)
                .next()
                .is_none_or(|((n, _), _)| n != namespace)
        });
        if !empty {
            return;
        }
        let rv = self.next_rv();
        if has_finalizers(&ns) {
            let mut finalized = (*ns).clone();
            finalized["spec"]["finalizers"] = json!([]);
            meta_mut(&mut finalized).insert("resourceVersion".into(), json!(rv.to_string()));
            let finalized = Arc::new(finalized);
            self.objects
                .entry(ns_gr.clone())
                .or_default()
                .insert((String::new(), namespace.to_owned()), finalized.clone());
            self.record(&ns_gr, "", EventType::Modified, finalized, Some(ns), rv);
            return;
        }
        self.remove(registry, &ns_gr, "", namespace, ns, rv, false);
    }

    /// Removes every object of a resource at once (its CRD was deleted), sending DELETED for each.
    pub fn drop_bucket(&mut self, gr: &GroupResource) {
        let Some(bucket) = self.objects.remove(gr) else {
            return;
        };
        for ((ns, _), object) in bucket {
            let rv = self.next_rv();
            let mut gone = (*object).clone();
            meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
            self.record(gr, &ns, EventType::Deleted, Arc::new(gone), None, rv);
        }
        self.applied.retain(|(g, _, _, _), _| g != gr);
    }

    /// What a field manager last applied to an object (server-side apply).
    pub fn last_applied(
        &self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        manager: &str,
    ) -> Option<&Value> {
        self.applied.get(&(
            gr.clone(),
            namespace.to_owned(),
            name.to_owned(),
            manager.to_owned(),
        ))
    }

    /// Records what a field manager applied.
    pub fn set_applied(
        &mut self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        manager: &str,
        config: Value,
    ) {
        self.applied.insert(
            (
                gr.clone(),
                namespace.to_owned(),
                name.to_owned(),
                manager.to_owned(),
            ),
            config,
        );
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

fn is_core(rt: &ResourceType, plural: &str) -> bool {
    rt.group.is_empty() && rt.plural == plural
}

/// The resource a quota key counts, if it is an object count: `count/<resource>[.<group>]`, or a core
/// kind's own name (`pods`, `secrets`, ...).
fn counted_by(key: &str) -> Option<GroupResource> {
    const LEGACY: &[&str] = &[
        "pods",
        "services",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "replicationcontrollers",
        "resourcequotas",
    ];
    if let Some(rest) = key.strip_prefix("count/") {
        let (resource, group) = rest.split_once('.').unwrap_or((rest, ""));
        return Some(GroupResource {
            group: group.to_owned(),
            resource: resource.to_owned(),
        });
    }
    LEGACY.contains(&key).then(|| GroupResource {
        group: String::new(),
        resource: key.to_owned(),
    })
}

/// A whole-number quantity (`5`, `"5"`); object counts are whole.
fn quantity_count(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn namespace_type() -> ResourceType {
    ResourceType {
        group: String::new(),
        version: "v1".into(),
        kind: "Namespace".into(),
        plural: "namespaces".into(),
        singular: "namespace".into(),
        namespaced: false,
        short_names: Vec::new(),
        status: true,
        virtual_create: false,
        crd: None,
        categories: Vec::new(),
    }
}

/// Why a name is not valid for the resource, if it is not (DNS-1123 label for namespaces, subdomain else).
fn invalid_name(rt: &ResourceType, name: &str) -> Option<&'static str> {
    let label_only = rt.group.is_empty() && rt.plural == "namespaces";
    let max = if label_only { 63 } else { 253 };
    if name.len() > max {
        return Some("must be no more than 63 characters");
    }
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label_only && c == '.');
    let rbac = rt.group == "rbac.authorization.k8s.io";
    if rbac {
        // RBAC names are path segments: anything but '/' and '%'.
        return (name.contains('/') || name.contains('%')).then_some("may not contain '/' or '%'");
    }
    if !name.chars().all(ok_char)
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Some(if label_only {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        });
    }
    None
}
