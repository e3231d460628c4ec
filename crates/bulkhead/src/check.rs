//! `bulkhead check`: the webhook's decisions, offline. Tenants, the BulkheadConfiguration, existing
//! namespaces (those with a tenant label and no `check.bulkhead.dev/*` annotation), PersistentVolumes
//! and class objects are read from the manifests as the cluster state; every other object is evaluated as if it were being created, in file order, through the
//! very functions the webhook calls. Admitted namespaces and ingresses join the state, so quotas and
//! hostname collisions between manifests count.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use bulkhead_api::config::BulkheadConfigurationSpec;
use bulkhead_api::{BulkheadConfiguration, Tenant, labels};
use bulkhead_policy::admission::{ClassInfo, ClassKind, Snapshot, Verdict};
use bulkhead_webhook::review::decode;
use bulkhead_webhook::{Check, Context, decide};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

/// Annotation naming the user an object is created as (overrides `--as`).
pub const AS_ANNOTATION: &str = "check.bulkhead.dev/as";
/// Annotation naming that user's groups, comma-separated (overrides `--as-group`).
pub const AS_GROUPS_ANNOTATION: &str = "check.bulkhead.dev/as-groups";
/// Annotation saying the object is expected to be denied (`deny`) or allowed (`allow`).
pub const EXPECT_ANNOTATION: &str = "check.bulkhead.dev/expect";

/// One manifest document and where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// File and document index, for messages.
    pub origin: String,
    /// The object.
    pub object: Value,
}

impl Document {
    /// API group, kind and name.
    fn identity(&self) -> (String, String, String) {
        let name = self.object["metadata"]["name"].as_str().unwrap_or_default();
        (
            group_of(&self.object).to_owned(),
            kind_of(&self.object).to_owned(),
            name.to_owned(),
        )
    }
}

/// Reads every YAML or JSON document in `paths` (directories recursively, in name order).
pub fn load(paths: &[PathBuf]) -> Result<Vec<Document>> {
    let files = files(paths)?;
    let mut docs = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let values: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| anyhow::anyhow!("{} is not valid YAML: {e}", file.display()))?;
        for (i, object) in values.into_iter().enumerate() {
            if object.is_null() {
                continue;
            }
            if object.get("kind").and_then(Value::as_str) == Some("List") {
                for (j, item) in object["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    docs.push(Document {
                        origin: format!("{}#{}.{}", file.display(), i + 1, j + 1),
                        object: item,
                    });
                }
                continue;
            }
            docs.push(Document {
                origin: format!("{}#{}", file.display(), i + 1),
                object,
            });
        }
    }
    Ok(docs)
}

/// The .yaml, .yml and .json files of `paths` (directories searched recursively), in order; an error
/// when there are none.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files)?;
    }
    if files.is_empty() {
        bail!("no .yaml, .yml or .json files in {}", display(paths));
    }
    Ok(files)
}

fn display(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            if entry.is_dir()
                || entry
                    .extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                collect(&entry, out)?;
            }
        }
    } else {
        out.push(path.to_owned());
    }
    Ok(())
}

fn group_of(object: &Value) -> &str {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

/// Who creates the objects, unless an object says otherwise.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// `--as`.
    pub user: Option<String>,
    /// `--as-group`.
    pub groups: Vec<String>,
}

/// The outcome for one object.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `Kind namespace/name`.
    pub object: String,
    /// Where it came from.
    pub origin: String,
    /// The user it was created as.
    pub user: String,
    /// The verdict (the first denial, or the allowance with every patch).
    pub verdict: Verdict,
    /// What the object expected (`Some(true)` = allow, `Some(false)` = deny).
    pub expected: Option<bool>,
    /// The object as admitted (with the webhook's patches), when it was allowed.
    pub admitted: Option<Value>,
}

impl Outcome {
    /// Whether the verdict is what the object expected (or, with no expectation, an allowance).
    pub fn as_expected(&self) -> bool {
        self.expected.unwrap_or(true) == self.verdict.is_allowed()
    }
}

/// The cluster state found in the manifests, and the objects to evaluate.
pub fn split(docs: Vec<Document>) -> Result<(Snapshot, BulkheadConfigurationSpec, Vec<Document>)> {
    let mut snapshot = Snapshot::new();
    let mut config = BulkheadConfigurationSpec::default();
    let mut evaluate = Vec::new();
    for mut doc in docs {
        let (group, kind, name) = doc.identity();
        let labels_of =
            |o: &Value| serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default();
        match (group.as_str(), kind.as_str()) {
            ("capsule.clastix.io" | "bulkhead.dev", "Tenant") => {
                doc.object["apiVersion"] = json!(bulkhead_api::API_VERSION);
                let tenant: Tenant = serde_json::from_value(doc.object.clone())
                    .with_context(|| format!("{}: Tenant `{name}` cannot be read", doc.origin))?;
                snapshot.add_tenant(tenant);
                evaluate.push(doc);
            }
            ("bulkhead.dev", "BulkheadConfiguration") => {
                let c: BulkheadConfiguration =
                    serde_json::from_value(doc.object.clone()).with_context(|| {
                        format!("{}: BulkheadConfiguration `{name}` cannot be read", doc.origin)
                    })?;
                if name == labels::CONFIGURATION_NAME {
                    config = c.spec;
                }
            }
            ("", "Namespace")
                if doc.object["metadata"]["labels"][labels::TENANT].is_string()
                    && annotation(&doc.object, AS_ANNOTATION).is_none()
                    && annotation(&doc.object, EXPECT_ANNOTATION).is_none() =>
            {
                let ns = serde_json::from_value(doc.object.clone())
                    .with_context(|| format!("{}: Namespace `{name}` cannot be read", doc.origin))?;
                snapshot.add_namespace(&ns);
            }
            ("", "Node") => {
                let node = serde_json::from_value(doc.object.clone())
                    .with_context(|| format!("{}: Node `{name}` cannot be read", doc.origin))?;
                snapshot.add_node(&node);
            }
            ("", "PersistentVolume") => {
                let pv = serde_json::from_value(doc.object.clone())
                    .with_context(|| format!("{}: PersistentVolume `{name}` cannot be read", doc.origin))?;
                snapshot.add_persistent_volume(&pv);
            }
            ("storage.k8s.io", "StorageClass")
            | ("networking.k8s.io", "IngressClass")
            | ("scheduling.k8s.io", "PriorityClass")
            | ("node.k8s.io", "RuntimeClass") => {
                let class = match kind.as_str() {
                    "StorageClass" => ClassKind::Storage,
                    "IngressClass" => ClassKind::Ingress,
                    "PriorityClass" => ClassKind::Priority,
                    _ => ClassKind::Runtime,
                };
                let info = ClassInfo {
                    labels: labels_of(&doc.object),
                    value: doc.object["value"].as_i64().and_then(|v| i32::try_from(v).ok()),
                };
                snapshot.add_class(class, &name, info);
            }
            _ => evaluate.push(doc),
        }
    }
    Ok((snapshot, config, evaluate))
}

/// What the API server would say of a Bulkhead object that its CRD refuses (strict field validation,
/// the schema, the CEL rules), in its words; `None` for other objects and valid ones.
fn schema_problems(
    crds: &[CustomResourceDefinition],
    group: &str,
    kind: &str,
    name: &str,
    object: &Value,
) -> Option<String> {
    if group != bulkhead_api::GROUP {
        return None;
    }
    let crd = crds.iter().find(|c| c.spec.names.kind == kind)?;
    let errors = bulkhead_api::validation::validate(crd, object);
    (!errors.is_empty()).then(|| format!("{kind}.{group} \"{name}\" is invalid: {}", errors.join(", ")))
}

/// Evaluates `docs` in order against `snapshot`, as `caller` (or each object's annotations).
pub fn evaluate(
    snapshot: &mut Snapshot,
    config: &BulkheadConfigurationSpec,
    docs: &[Document],
    caller: &Caller,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    let crds = bulkhead_api::crds::all();
    for (n, doc) in docs.iter().enumerate() {
        let (group, kind, name) = doc.identity();
        let namespace = doc.object["metadata"]["namespace"].as_str().map(str::to_owned);
        let user = annotation(&doc.object, AS_ANNOTATION)
            .map(str::to_owned)
            .or_else(|| caller.user.clone())
            .unwrap_or_else(|| "bulkhead-check".to_owned());
        let groups: Vec<String> = match annotation(&doc.object, AS_GROUPS_ANNOTATION) {
            Some(g) => g
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            None if !caller.groups.is_empty() => caller.groups.clone(),
            None => config.user_groups.clone(),
        };
        let expected = match annotation(&doc.object, EXPECT_ANNOTATION) {
            None => None,
            Some("allow") => Some(true),
            Some("deny") => Some(false),
            Some(other) => bail!(
                "{}: {EXPECT_ANNOTATION} is `{other}`; use `allow` or `deny`",
                doc.origin
            ),
        };
        let mut object = doc.object.clone();
        let mut patches = Vec::new();
        // The API server validates the object against its CRD (schema and CEL rules) before any
        // validating webhook sees it.
        let mut verdict = match schema_problems(&crds, &group, &kind, &name, &object) {
            Some(message) => Verdict::deny(None, message),
            None => Verdict::allow(),
        };
        // The resourcepools hook's offline part: a claim names quantities.
        if verdict.is_allowed()
            && group == "bulkhead.dev"
            && kind == "ResourcePoolClaim"
            && let Ok(claim) = serde_json::from_value::<bulkhead_api::ResourcePoolClaim>(object.clone())
            && let Some(message) = bulkhead_policy::resource_pool::bad_quantities(&name, &claim.spec.claim)
        {
            verdict = Verdict::deny(None, message);
        }
        for check in Check::for_kind(&group, &kind) {
            if !verdict.is_allowed() {
                break;
            }
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": format!("check-{n}"),
                    "kind": {"group": group, "version": "", "kind": kind},
                    "name": name, "namespace": namespace, "operation": "CREATE",
                    "userInfo": {"username": user, "groups": groups},
                    "object": object,
                }
            });
            let bytes = serde_json::to_vec(&review)?;
            let (_, request) = decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", doc.origin))?;
            let ctx = Context {
                view: snapshot,
                config,
                own_identity: "",
                // Each check's patch is applied before the next runs, as the mutating calls do.
                mutating: true,
            };
            match decide(check, &request, &ctx).map_err(|e| anyhow::anyhow!("{}: {e}", doc.origin))? {
                Verdict::Allow(patch) => {
                    if !patch.is_empty() {
                        let ops: json_patch::Patch = serde_json::from_value(Value::Array(patch.clone()))?;
                        json_patch::patch(&mut object, &ops)
                            .map_err(|e| anyhow::anyhow!("{}: the patch does not apply: {e}", doc.origin))?;
                        patches.extend(patch);
                    }
                }
                denied @ Verdict::Deny(_) => {
                    verdict = denied;
                    break;
                }
            }
        }
        let admitted = verdict.is_allowed().then(|| object.clone());
        if verdict.is_allowed() {
            verdict = Verdict::Allow(patches);
            match (group.as_str(), kind.as_str()) {
                ("", "Namespace") => {
                    if let Ok(ns) = serde_json::from_value(object.clone()) {
                        snapshot.add_namespace(&ns);
                    }
                }
                ("networking.k8s.io", "Ingress")
                | ("", "Service")
                | ("gateway.networking.k8s.io", "HTTPRoute" | "GRPCRoute" | "TLSRoute") => {
                    let mut routed = object.clone();
                    if routed["metadata"]["namespace"].is_null() {
                        routed["metadata"]["namespace"] = json!("default");
                    }
                    add_routes(snapshot, &kind, routed);
                }
                _ => {}
            }
        }
        let object_name = match &namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
        outcomes.push(Outcome {
            object: object_name,
            origin: doc.origin.clone(),
            user,
            verdict,
            expected,
            admitted,
        });
    }
    Ok(outcomes)
}

/// Records the hosts an admitted Ingress, Service or Gateway API route serves, for the collision
/// checks of the objects after it.
fn add_routes(snapshot: &mut Snapshot, kind: &str, object: serde_json::Value) {
    use bulkhead_api::gateway::{GRPCRoute, HTTPRoute, TLSRoute};
    use bulkhead_policy::admission::GatewayRoute;
    // decide() has read the object already (one it cannot read ends the run), so this parses.
    let _ = match kind {
        "Ingress" => serde_json::from_value(object).map(|ing| snapshot.add_ingress(&ing)),
        "Service" => serde_json::from_value(object).map(|svc| snapshot.add_service(&svc)),
        "HTTPRoute" => serde_json::from_value::<HTTPRoute>(object)
            .map(|r| snapshot.add_gateway_route(&GatewayRoute::http(&r))),
        "GRPCRoute" => serde_json::from_value::<GRPCRoute>(object)
            .map(|r| snapshot.add_gateway_route(&GatewayRoute::grpc(&r))),
        "TLSRoute" => serde_json::from_value::<TLSRoute>(object)
            .map(|r| snapshot.add_gateway_route(&GatewayRoute::tls(&r))),
        _ => Ok(()),
    };
}

/// A human-readable report; one line per object, then the patches of allowed ones indented.
pub fn report(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        let mark = match (o.verdict.is_allowed(), o.expected) {
            (_, Some(_)) if o.as_expected() => " (as expected)",
            (_, Some(_)) => " (UNEXPECTED)",
            _ => "",
        };
        match &o.verdict {
            Verdict::Allow(patch) => {
                let _ = writeln!(out, "allow  {} (as {}){mark}  [{}]", o.object, o.user, o.origin);
                for op in patch {
                    let _ = writeln!(
                        out,
                        "         {} {} {}",
                        op["op"].as_str().unwrap_or_default(),
                        op["path"].as_str().unwrap_or_default(),
                        op["value"]
                    );
                }
            }
            Verdict::Deny(d) => {
                let _ = writeln!(
                    out,
                    "deny   {} (as {}){mark}  [{}]\n         {}",
                    o.object, o.user, o.origin, d.message
                );
            }
        }
    }
    let allowed = outcomes.iter().filter(|o| o.verdict.is_allowed()).count();
    let unexpected = outcomes.iter().filter(|o| !o.as_expected()).count();
    let _ = writeln!(
        out,
        "\n{} objects: {allowed} allowed, {} denied; {unexpected} not as expected",
        outcomes.len(),
        outcomes.len() - allowed
    );
    out
}

/// Runs `bulkhead check`: prints the report; `Ok(false)` when any object was denied (or, for objects
/// that state an expectation, when the outcome differs from it).
pub fn run(paths: &[PathBuf], caller: &Caller, show_rendered: bool) -> Result<bool> {
    if paths.is_empty() {
        bail!("name the manifests to check: bulkhead check PATH... (files or directories)");
    }
    let docs = load(paths)?;
    let all = docs.clone();
    let (mut snapshot, config, evaluate_docs) = split(docs)?;
    let outcomes = evaluate(&mut snapshot, &config, &evaluate_docs, caller)?;
    print!("{}", report(&outcomes));
    // The cluster after these creates: the state read from the manifests and every admitted object.
    let evaluated: std::collections::BTreeSet<&str> =
        evaluate_docs.iter().map(|d| d.origin.as_str()).collect();
    let mut cluster: Vec<Value> = all
        .iter()
        .filter(|d| !evaluated.contains(d.origin.as_str()))
        .map(|d| d.object.clone())
        .chain(outcomes.iter().filter_map(|o| o.admitted.clone()))
        .collect();
    let mut rendered = crate::check_replication::default_namespaces(&mut cluster, &config);
    rendered.extend(crate::check_replication::render(&cluster));
    print!("{}", crate::check_replication::report(&rendered));
    if show_rendered {
        for object in rendered.iter().flat_map(|r| r.manifests.iter()) {
            print!("---\n{}", serde_saphyr::to_string(object)?);
        }
    }
    Ok(outcomes.iter().all(Outcome::as_expected) && rendered.iter().all(|r| r.problems.is_empty()))
}
