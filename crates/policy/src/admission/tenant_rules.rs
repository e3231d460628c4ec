//! `Tenant.spec.rules[]` at admission (Capsule v0.15's namespace rules): which rules apply to a request
//! (namespace selector, audience, CEL conditions), and, for each value a rule speaks about (an image, a
//! QoS class, a scheduler, a Service type, an ExternalName, a namespace label or annotation), the
//! decision: the last matching `allow` or `deny` rule wins; a value no rule matches is refused where an
//! `allow` rule made an allow-list, admitted elsewhere; matching `audit` rules report it and decide
//! nothing.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bulkhead_api::Tenant;
use bulkhead_api::namespace_rules::{
    Action, Audience, AudienceKind, Enforce, Match, MetadataRule, MetadataValueRule, PullPolicy, QosClass,
    Registry, ServiceType, WorkloadTarget,
};
use k8s_openapi::api::core::v1::{Pod, PodSpec, ResourceRequirements, Service};
use serde_json::Value;

use super::lists::pattern_matches;
use super::{Request, View};
use crate::identity::CallerClass;
use crate::selector;

/// Labels or annotations, key to value.
pub type Metadata = BTreeMap<String, String>;

/// What a rule check found: a denial (the message), and the audits to report (admitted anyway).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The first value refused, as a sentence.
    pub denial: Option<String>,
    /// One sentence per value an `audit` rule matched.
    pub audits: Vec<String>,
}

/// Everything a rule check reads besides the object.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// The request.
    pub req: &'a Request<'a>,
    /// The cluster.
    pub view: &'a dyn View,
    /// The tenant whose rules apply.
    pub tenant: &'a Tenant,
    /// The name of the namespace the object is in (for a Namespace, its own).
    pub namespace_name: &'a str,
    /// The labels of the namespace the object is in (for a Namespace, its own).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// The admission request as CEL conditions see it (`request`).
    pub request: &'a Value,
    /// The object as CEL conditions see it (`object`).
    pub object: &'a Value,
}

impl<'a> Scope<'a> {
    fn tenant_name(&self) -> &str {
        self.tenant.metadata.name.as_deref().unwrap_or_default()
    }

    fn concerns(&self, audience: &[Audience]) -> bool {
        if audience.is_empty() {
            return true;
        }
        let caller = self.req.caller;
        audience.iter().any(|a| match a.kind {
            AudienceKind::User | AudienceKind::ServiceAccount => caller.user == a.name,
            AudienceKind::Group => caller.groups.contains(&a.name),
            AudienceKind::Custom => match a.name.as_str() {
                "CapsuleUser" => self.req.class == CallerClass::TenantUser,
                "Administrator" => self.req.class == CallerClass::Administrator,
                "TenantOwner" => self.view.tenants_owned_by(caller).contains(self.tenant_name()),
                "Controller" => caller.user == self.req.own_identity,
                _ => false,
            },
        })
    }

    /// The enforce blocks that apply, with their rule index, among those `relevant` says speak about
    /// this kind of object, their templates rendered for this namespace. `Err` when a condition cannot
    /// be evaluated (and none is false), or a template does not render.
    fn applicable(
        &self,
        relevant: impl Fn(&Enforce) -> bool,
    ) -> Result<Vec<(usize, Cow<'a, Enforce>)>, String> {
        let mut out = Vec::new();
        for (i, rule) in self.tenant.spec.rules.iter().enumerate() {
            let Some(enforce) = rule.enforce.as_ref().filter(|e| relevant(e)) else {
                continue;
            };
            let selected = rule
                .namespace_selector
                .as_ref()
                .is_none_or(|s| selector::matches(s, self.namespace_labels));
            if !selected || !self.concerns(&rule.audience) {
                continue;
            }
            let enforce = self.rendered(i, enforce)?;
            if conditions_hold(i, &enforce, self.object, self.request)? {
                out.push((i, enforce));
            }
        }
        Ok(out)
    }

    /// A rule's enforce block with its Go templates (`{{ .tenant.metadata.name }}`,
    /// `{{ .namespace.metadata.name }}`) rendered over the tenant and this namespace, as Capsule renders
    /// rule bodies per namespace.
    fn rendered(&self, index: usize, enforce: &'a Enforce) -> Result<Cow<'a, Enforce>, String> {
        // The usual rule has no template: found without serializing it, on every admission.
        if !has_templates(enforce) {
            return Ok(Cow::Borrowed(enforce));
        }
        let value = serde_json::to_value(enforce).unwrap_or_default();
        let data = serde_json::json!({
            "tenant": serde_json::to_value(self.tenant).unwrap_or_default(),
            "namespace": {"metadata": {"name": self.namespace_name, "labels": self.namespace_labels}},
        });
        let rendered = render_strings(&value, &data)
            .map_err(|e| format!("rules[{index}] of tenant `{}`: {e}", self.tenant_name()))?;
        serde_json::from_value(rendered).map(Cow::Owned).map_err(|e| {
            format!(
                "rules[{index}] of tenant `{}` is not valid once rendered: {e}",
                self.tenant_name()
            )
        })
    }
}

/// Whether any string of a rule's enforce block is a Go template (`{{`).
fn has_templates(e: &Enforce) -> bool {
    let t = |s: &str| s.contains("{{");
    let matcher = |exact: &[String], exp: Option<&str>| exact.iter().any(|x| t(x)) || exp.is_some_and(t);
    let workloads = e.workloads.iter().any(|w| {
        w.registries.iter().any(|r| matcher(&r.exact, r.exp.as_deref()))
            || w.schedulers.iter().any(|m| matcher(&m.exact, m.exp.as_deref()))
    });
    let services = e
        .services
        .iter()
        .flat_map(|s| s.external_names.iter())
        .flat_map(|x| &x.hostnames)
        .any(|m| matcher(&m.exact, m.exp.as_deref()));
    let metadata = e.metadata.iter().any(|m| {
        m.labels.iter().chain(&m.annotations).any(|(key, rule)| {
            t(key)
                || rule.default.as_deref().is_some_and(t)
                || rule.managed.as_deref().is_some_and(t)
                || rule.values.iter().any(|v| matcher(&v.exact, v.exp.as_deref()))
        })
    });
    workloads
        || services
        || metadata
        || e.registries.iter().any(|r| t(&r.url))
        || e.conditions.iter().any(|c| t(&c.expression))
}

/// Every string of `value` rendered as a Go template over `data`.
fn render_strings(value: &Value, data: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(crate::template::render_text(s, data)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_strings(v, data))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((crate::template::render_text(k, data)?, render_strings(v, data)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn borrowed<'r>(rules: &'r [(usize, Cow<'_, Enforce>)]) -> Vec<(usize, &'r Enforce)> {
    rules.iter().map(|(i, e)| (*i, e.as_ref())).collect()
}

/// Whether every condition of a rule is true. A false one wins over an error in another; an error
/// with none false is `Err`.
fn conditions_hold(index: usize, enforce: &Enforce, object: &Value, request: &Value) -> Result<bool, String> {
    let mut error = None;
    for (n, condition) in enforce.conditions.iter().enumerate() {
        let name = condition
            .name
            .clone()
            .unwrap_or_else(|| format!("conditions[{n}]"));
        match crate::cel::evaluate(&condition.expression, object, request) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                error.get_or_insert(format!(
                    "rules[{index}] condition `{name}` cannot be evaluated: {e}"
                ));
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// Whether a value matcher matches. A regular expression that does not compile matches nothing (the
/// tenants webhook refuses such a Tenant; one admitted while it was down fails closed for `allow`).
pub fn matches(m: &Match, value: &str) -> bool {
    matches_parts(&m.exact, m.exp.as_deref(), m.negate, value)
}

fn matches_parts(exact: &[String], exp: Option<&str>, negate: bool, value: &str) -> bool {
    let hit =
        exact.iter().any(|e| e == value) || exp.is_some_and(|re| pattern_matches(re, value).unwrap_or(false));
    hit != negate
}

/// The decision on one value among the rules that speak about it.
struct Judged {
    /// The last matching allow or deny rule.
    last: Option<(Action, usize)>,
    /// Rules whose `allow` made an allow-list for this value.
    allow_list: Vec<usize>,
    /// Matching audit rules.
    audits: Vec<usize>,
}

fn judge<'r>(
    rules: &[(usize, &'r Enforce)],
    speaks: impl Fn(&'r Enforce) -> bool,
    hit: impl Fn(&'r Enforce) -> bool,
) -> Judged {
    let mut judged = Judged {
        last: None,
        allow_list: Vec::new(),
        audits: Vec::new(),
    };
    for (i, enforce) in rules {
        if !speaks(enforce) {
            continue;
        }
        if enforce.action == Action::Allow {
            judged.allow_list.push(*i);
        }
        if hit(enforce) {
            match enforce.action {
                Action::Audit => judged.audits.push(*i),
                action => judged.last = Some((action, *i)),
            }
        }
    }
    judged
}

fn indexes(list: &[usize]) -> String {
    list.iter()
        .map(|i| format!("rules[{i}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns a judgement into a denial or audits. `what` names the value (`` image `x` of container `c` ``).
fn conclude(judged: Judged, what: &str, t: &str, out: &mut Outcome) {
    for i in &judged.audits {
        out.audits
            .push(format!("{what} matches audit rule rules[{i}] of tenant `{t}`"));
    }
    if out.denial.is_some() {
        return;
    }
    match judged.last {
        Some((Action::Deny, i)) => {
            out.denial = Some(format!("{what} is denied by rules[{i}] of tenant `{t}`"))
        }
        Some(_) => {}
        None if !judged.allow_list.is_empty() => {
            out.denial = Some(format!(
                "{what} is not allowed by the rules of tenant `{t}`: no allow rule matches it ({} allow a list)",
                indexes(&judged.allow_list)
            ))
        }
        None => {}
    }
}

/// The effective pull policy Kubernetes gives a container without one.
fn pull_policy(image: &str, policy: Option<&str>) -> String {
    if let Some(p) = policy.filter(|p| !p.is_empty()) {
        return p.to_owned();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = last.contains(':') && !last.ends_with(":latest");
    if tagged || image.contains('@') {
        "IfNotPresent"
    } else {
        "Always"
    }
    .to_owned()
}

fn registry_hits(r: &Registry, image: &str, policy: &str) -> bool {
    matches_parts(&r.exact, r.exp.as_deref(), r.negate, image)
        && (r.policy.is_empty() || r.policy.iter().any(|p| p.as_str() == policy))
}

fn url_hits(url: &str, allowed: &[PullPolicy], image: &str, policy: &str) -> bool {
    pattern_matches(url, image).unwrap_or(false)
        && (allowed.is_empty() || allowed.iter().any(|p| p.as_str() == policy))
}

/// One image reference of a Pod, with where it is.
struct ImageRef<'a> {
    target: WorkloadTarget,
    what: String,
    image: &'a str,
    policy: String,
}

fn images(spec: &PodSpec) -> Vec<ImageRef<'_>> {
    let containers = spec.containers.iter().map(|c| {
        (
            WorkloadTarget::Containers,
            "container",
            c.name.as_str(),
            c.image.as_deref(),
            c.image_pull_policy.as_deref(),
        )
    });
    let init = spec.init_containers.iter().flatten().map(|c| {
        (
            WorkloadTarget::InitContainers,
            "init container",
            c.name.as_str(),
            c.image.as_deref(),
            c.image_pull_policy.as_deref(),
        )
    });
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| {
        (
            WorkloadTarget::EphemeralContainers,
            "ephemeral container",
            c.name.as_str(),
            c.image.as_deref(),
            c.image_pull_policy.as_deref(),
        )
    });
    let volumes = spec.volumes.iter().flatten().filter_map(|v| {
        let source = v.image.as_ref()?;
        Some((
            WorkloadTarget::Volumes,
            "image volume",
            v.name.as_str(),
            source.reference.as_deref(),
            source.pull_policy.as_deref(),
        ))
    });
    containers
        .chain(init)
        .chain(ephemeral)
        .chain(volumes)
        .map(|(target, kind, name, image, policy)| {
            let image = image.unwrap_or_default();
            ImageRef {
                target,
                what: format!("{kind} `{name}`"),
                image,
                policy: pull_policy(image, policy),
            }
        })
        .collect()
}

fn sums(resources: Option<&ResourceRequirements>) -> (BTreeMap<String, i128>, BTreeMap<String, i128>) {
    let pick = |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
        m.into_iter()
            .flatten()
            .filter(|(name, _)| matches!(name.as_str(), "cpu" | "memory"))
            .filter_map(|(name, q)| Some((name.clone(), crate::quota::parse_millis(&q.0)?)))
            .filter(|(_, v)| *v != 0)
            .collect::<BTreeMap<String, i128>>()
    };
    let limits = pick(resources.and_then(|r| r.limits.as_ref()));
    let mut requests = pick(resources.and_then(|r| r.requests.as_ref()));
    // As the API server defaults them: a request not given is its limit.
    for (name, v) in &limits {
        requests.entry(name.clone()).or_insert(*v);
    }
    (requests, limits)
}

/// The Pod's QoS class, computed as Kubernetes does (containers and init containers, CPU and memory;
/// a request not given is its limit), unless its status already says.
pub fn qos_class(pod: &Pod) -> QosClass {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => return QosClass::Guaranteed,
        Some("Burstable") => return QosClass::Burstable,
        Some("BestEffort") => return QosClass::BestEffort,
        _ => {}
    }
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let mut requests: BTreeMap<String, i128> = BTreeMap::new();
    let mut limits: BTreeMap<String, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let (r, l) = sums(c.resources.as_ref());
        for (k, v) in &r {
            *requests.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &l {
            *limits.entry(k.clone()).or_default() += v;
        }
        if !(l.contains_key("cpu") && l.contains_key("memory")) {
            guaranteed = false;
        }
        if r != l {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

fn qos_name(q: QosClass) -> &'static str {
    match q {
        QosClass::Guaranteed => "Guaranteed",
        QosClass::Burstable => "Burstable",
        QosClass::BestEffort => "BestEffort",
    }
}

fn speaks_of_images(e: &Enforce) -> bool {
    !e.registries.is_empty() || e.workloads.as_ref().is_some_and(|w| !w.registries.is_empty())
}

fn targets_of(e: &Enforce) -> &[WorkloadTarget] {
    e.workloads
        .as_ref()
        .map(|w| w.targets.as_slice())
        .unwrap_or_default()
}

/// The rules on a Pod: its images (those not already in the Pod before an update), its QoS class and
/// its scheduler.
pub fn pod(scope: &Scope<'_>, pod: &Pod, old: Option<&Pod>) -> Outcome {
    let mut out = Outcome::default();
    let relevant = |e: &Enforce| {
        speaks_of_images(e)
            || e.workloads
                .as_ref()
                .is_some_and(|w| !w.qos_classes.is_empty() || !w.schedulers.is_empty())
    };
    let owned = match scope.applicable(relevant) {
        Ok(rules) => rules,
        Err(e) => {
            out.denial = Some(e);
            return out;
        }
    };
    let rules = borrowed(&owned);
    if rules.is_empty() {
        return out;
    }
    let t = scope.tenant_name();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else { return out };
    let before: Vec<(WorkloadTarget, String, String)> = old
        .and_then(|o| o.spec.as_ref())
        .map(|s| {
            images(s)
                .into_iter()
                .map(|i| (i.target, i.image.to_owned(), i.policy))
                .collect()
        })
        .unwrap_or_default();
    for image in images(spec) {
        if before
            .iter()
            .any(|(t, i, p)| *t == image.target && i == image.image && *p == image.policy)
        {
            continue;
        }
        let targeted = |e: &Enforce| {
            let targets = targets_of(e);
            targets.is_empty() || targets.contains(&image.target)
        };
        let judged = judge(
            &rules,
            |e| speaks_of_images(e) && (targeted(e) || !e.registries.is_empty()),
            |e| {
                e.registries
                    .iter()
                    .any(|r| url_hits(&r.url, &r.policy, image.image, &image.policy))
                    || (targeted(e)
                        && e.workloads
                            .iter()
                            .flat_map(|w| &w.registries)
                            .any(|r| registry_hits(r, image.image, &image.policy)))
            },
        );
        let what = format!(
            "image `{}` (pull policy {}) of {} in pod `{name}`",
            image.image, image.policy, image.what
        );
        conclude(judged, &what, t, &mut out);
    }
    let qos = qos_class(pod);
    let judged = judge(
        &rules,
        |e| e.workloads.as_ref().is_some_and(|w| !w.qos_classes.is_empty()),
        |e| e.workloads.iter().flat_map(|w| &w.qos_classes).any(|q| *q == qos),
    );
    conclude(
        judged,
        &format!("QoS class {} of pod `{name}`", qos_name(qos)),
        t,
        &mut out,
    );
    let scheduler = spec
        .scheduler_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default-scheduler");
    let judged = judge(
        &rules,
        |e| e.workloads.as_ref().is_some_and(|w| !w.schedulers.is_empty()),
        |e| {
            e.workloads
                .iter()
                .flat_map(|w| &w.schedulers)
                .any(|m| matches(m, scheduler))
        },
    );
    conclude(
        judged,
        &format!("scheduler `{scheduler}` of pod `{name}`"),
        t,
        &mut out,
    );
    out
}

fn service_type_name(t: ServiceType) -> &'static str {
    match t {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
        ServiceType::ExternalName => "ExternalName",
    }
}

/// The rules on a Service: its type, and an ExternalName Service's hostname.
pub fn service(scope: &Scope<'_>, svc: &Service) -> Outcome {
    let mut out = Outcome::default();
    let relevant = |e: &Enforce| {
        e.services.as_ref().is_some_and(|s| {
            !s.types.is_empty() || s.external_names.as_ref().is_some_and(|x| !x.hostnames.is_empty())
        })
    };
    let owned = match scope.applicable(relevant) {
        Ok(rules) => rules,
        Err(e) => {
            out.denial = Some(e);
            return out;
        }
    };
    let rules = borrowed(&owned);
    if rules.is_empty() {
        return out;
    }
    let t = scope.tenant_name();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = spec
        .type_
        .as_deref()
        .filter(|k| !k.is_empty())
        .unwrap_or("ClusterIP");
    let judged = judge(
        &rules,
        |e| e.services.as_ref().is_some_and(|s| !s.types.is_empty()),
        |e| {
            e.services
                .iter()
                .flat_map(|s| &s.types)
                .any(|k| service_type_name(*k) == kind)
        },
    );
    conclude(judged, &format!("type {kind} of service `{name}`"), t, &mut out);
    if kind == "ExternalName" {
        let host = spec.external_name.as_deref().unwrap_or_default();
        let hostnames = |e: &Enforce| -> Vec<Match> {
            e.services
                .iter()
                .flat_map(|s| s.external_names.iter())
                .flat_map(|x| x.hostnames.clone())
                .collect()
        };
        let judged = judge(
            &rules,
            |e| !hostnames(e).is_empty(),
            |e| hostnames(e).iter().any(|m| matches(m, host)),
        );
        conclude(
            judged,
            &format!("external name `{host}` of service `{name}`"),
            t,
            &mut out,
        );
    }
    out
}

/// Whether a metadata rule applies to Namespaces: it names the kind `Namespace` and its API groups
/// include core `v1` (empty, `v1`, `""` or `*`).
pub fn targets_namespaces(rule: &MetadataRule) -> bool {
    rule.kinds.iter().any(|k| k == "Namespace")
        && (rule.api_groups.is_empty()
            || rule
                .api_groups
                .iter()
                .any(|g| matches!(g.as_str(), "" | "v1" | "*")))
}

/// Whether a metadata key of a rule is a pattern (not a valid label or annotation key).
fn is_pattern(key: &str) -> bool {
    key.chars()
        .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
}

fn key_hits(rule_key: &str, key: &str) -> bool {
    if is_pattern(rule_key) {
        pattern_matches(&format!("^(?:{rule_key})$"), key).unwrap_or(false)
    } else {
        rule_key == key
    }
}

fn value_hits(rule: &MetadataValueRule, value: &str) -> bool {
    rule.values.is_empty() || rule.values.iter().any(|m| matches(m, value))
}

/// Labels or annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataKind {
    /// `metadata.labels`.
    Labels,
    /// `metadata.annotations`.
    Annotations,
}

impl MetadataKind {
    fn of(self, rule: &MetadataRule) -> &BTreeMap<String, MetadataValueRule> {
        match self {
            MetadataKind::Labels => &rule.labels,
            MetadataKind::Annotations => &rule.annotations,
        }
    }

    fn word(self) -> &'static str {
        match self {
            MetadataKind::Labels => "label",
            MetadataKind::Annotations => "annotation",
        }
    }

    /// The JSON pointer of a key of this kind.
    pub fn pointer(self, key: &str) -> String {
        let field = match self {
            MetadataKind::Labels => "labels",
            MetadataKind::Annotations => "annotations",
        };
        format!("/metadata/{field}/{}", super::pointer_segment(key))
    }
}

fn namespace_metadata<'r>(
    rules: &[(usize, &'r Enforce)],
    kind: MetadataKind,
) -> Vec<(usize, Action, &'r str, &'r MetadataValueRule)> {
    let mut out = Vec::new();
    for (i, e) in rules {
        for m in e.metadata.iter().filter(|m| targets_namespaces(m)) {
            for (key, rule) in kind.of(m) {
                out.push((*i, e.action, key.as_str(), rule));
            }
        }
    }
    out
}

fn speaks_of_namespace_metadata(e: &Enforce) -> bool {
    e.metadata.iter().any(targets_namespaces)
}

/// The labels and annotations the rules set on a Namespace: `managed` values always, `default` values
/// where the key is absent (allow rules, in rule order). Rules are selected by the namespace's labels
/// as they become. Returns the final labels and annotations.
pub fn namespace_defaults(
    scope: &Scope<'_>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<(Metadata, Metadata), String> {
    let mut labels = labels.clone();
    let mut annotations = annotations.clone();
    // Defaults can change which rules select the namespace: settle in at most a few rounds.
    for _ in 0..4 {
        let snapshot = labels.clone();
        let now = Scope {
            namespace_labels: &snapshot,
            ..*scope
        };
        let owned = now.applicable(speaks_of_namespace_metadata)?;
        let rules = borrowed(&owned);
        let before = (labels.clone(), annotations.clone());
        for (_, e) in rules.iter().filter(|(_, e)| e.action == Action::Allow) {
            for m in e.metadata.iter().filter(|m| targets_namespaces(m)) {
                for (kind, target) in [
                    (MetadataKind::Labels, &mut labels),
                    (MetadataKind::Annotations, &mut annotations),
                ] {
                    for (key, rule) in kind.of(m) {
                        if is_pattern(key) {
                            continue;
                        }
                        if let Some(v) = &rule.managed {
                            target.insert(key.clone(), v.clone());
                        } else if let Some(v) = &rule.default {
                            target.entry(key.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
        }
        if before == (labels.clone(), annotations.clone()) {
            break;
        }
    }
    Ok((labels, annotations))
}

/// The rules on a Namespace's labels and annotations (its final ones, after [`namespace_defaults`]):
/// required keys present, managed values kept, every value allowed.
pub fn namespace(
    scope: &Scope<'_>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Outcome {
    let mut out = Outcome::default();
    let owned = match scope.applicable(speaks_of_namespace_metadata) {
        Ok(rules) => rules,
        Err(e) => {
            out.denial = Some(e);
            return out;
        }
    };
    let rules = borrowed(&owned);
    if rules.is_empty() {
        return out;
    }
    let t = scope.tenant_name();
    let name = scope
        .object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for (kind, present) in [
        (MetadataKind::Labels, labels),
        (MetadataKind::Annotations, annotations),
    ] {
        let entries = namespace_metadata(&rules, kind);
        for (i, action, key, rule) in &entries {
            if *action != Action::Allow || is_pattern(key) {
                continue;
            }
            if rule.required && !present.contains_key(*key) && out.denial.is_none() {
                out.denial = Some(format!(
                    "namespace `{name}` needs the {} `{key}` (rules[{i}] of tenant `{t}`)",
                    kind.word()
                ));
            }
            if let (Some(managed), Some(value)) = (&rule.managed, present.get(*key))
                && managed != value
                && out.denial.is_none()
            {
                out.denial = Some(format!(
                    "the {} `{key}` of namespace `{name}` is managed by rules[{i}] of tenant `{t}`: it must be `{managed}`, not `{value}`",
                    kind.word()
                ));
            }
        }
        for (key, value) in present {
            let judged = judge(
                &rules,
                |e| {
                    e.metadata
                        .iter()
                        .filter(|m| targets_namespaces(m))
                        .any(|m| kind.of(m).keys().any(|k| key_hits(k, key)))
                },
                |e| {
                    e.metadata
                        .iter()
                        .filter(|m| targets_namespaces(m))
                        .flat_map(|m| kind.of(m))
                        .any(|(k, r)| key_hits(k, key) && value_hits(r, value))
                },
            );
            let what = format!("{} `{key}={value}` of namespace `{name}`", kind.word());
            conclude(judged, &what, t, &mut out);
        }
    }
    out
}

/// Problems of a Tenant's rules that admission refuses: regular expressions and CEL conditions that do
/// not compile, matchers with neither `exact` nor `exp`, unknown Custom audiences, metadata rules on
/// kinds other than Namespace.
pub fn problems(tenant: &Tenant) -> Vec<String> {
    let mut out = Vec::new();
    // A templated value is checked once rendered for a namespace (a failure then refuses the request).
    let check_re = |out: &mut Vec<String>, path: String, re: &str| {
        if !re.contains("{{")
            && let Err(e) = pattern_matches(re, "")
        {
            out.push(format!("{path}: {e}"));
        }
    };
    let check_match = |out: &mut Vec<String>, path: String, m: &Match| {
        if m.exact.is_empty() && m.exp.is_none() {
            out.push(format!("{path}: a matcher needs `exact` or `exp`"));
        }
        if let Some(re) = &m.exp {
            check_re(out, format!("{path}.exp"), re);
        }
    };
    for (i, rule) in tenant.spec.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        for (n, a) in rule.audience.iter().enumerate() {
            if a.kind == AudienceKind::Custom
                && !matches!(
                    a.name.as_str(),
                    "CapsuleUser" | "Administrator" | "TenantOwner" | "Controller"
                )
            {
                out.push(format!(
                    "{at}.audience[{n}]: unknown Custom audience `{}` (CapsuleUser, Administrator, TenantOwner or Controller)",
                    a.name
                ));
            }
        }
        let Some(e) = &rule.enforce else { continue };
        for (n, c) in e.conditions.iter().enumerate() {
            if !c.expression.contains("{{")
                && let Err(err) = crate::cel::compile(&c.expression)
            {
                out.push(format!("{at}.enforce.conditions[{n}]: {err}"));
            }
        }
        for (n, r) in e.registries.iter().enumerate() {
            check_re(&mut out, format!("{at}.enforce.registries[{n}].url"), &r.url);
        }
        if let Some(w) = &e.workloads {
            for (n, r) in w.registries.iter().enumerate() {
                let m = Match {
                    exact: r.exact.clone(),
                    exp: r.exp.clone(),
                    negate: r.negate,
                };
                check_match(&mut out, format!("{at}.enforce.workloads.registries[{n}]"), &m);
            }
            for (n, m) in w.schedulers.iter().enumerate() {
                check_match(&mut out, format!("{at}.enforce.workloads.schedulers[{n}]"), m);
            }
        }
        if let Some(x) = e.services.as_ref().and_then(|s| s.external_names.as_ref()) {
            for (n, m) in x.hostnames.iter().enumerate() {
                check_match(
                    &mut out,
                    format!("{at}.enforce.services.externalNames.hostnames[{n}]"),
                    m,
                );
            }
        }
        for (n, m) in e.metadata.iter().enumerate() {
            let path = format!("{at}.enforce.metadata[{n}]");
            if !targets_namespaces(m) || m.kinds.len() != 1 {
                out.push(format!(
                    "{path}: Bulkhead enforces metadata rules on Namespaces only: `kinds` must be [Namespace] (and `apiGroups` core v1)"
                ));
            }
            for (kind, map) in [("labels", &m.labels), ("annotations", &m.annotations)] {
                for (key, r) in map {
                    if is_pattern(key) {
                        check_re(&mut out, format!("{path}.{kind}[{key}]"), &format!("^(?:{key})$"));
                    }
                    for (v, m) in r.values.iter().enumerate() {
                        check_match(&mut out, format!("{path}.{kind}[{key}].values[{v}]"), m);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{Operation, Snapshot};
    use crate::identity::Caller;
    use bulkhead_api::BulkheadConfigurationSpec;
    use serde_json::json;

    fn tenant(rules: Value) -> Tenant {
        let mut t = Tenant::new("solar", serde_json::from_value(json!({"rules": rules})).unwrap());
        t.metadata.uid = Some("uid".into());
        t
    }

    fn pod(containers: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"containers": containers}}))
            .unwrap()
    }

    fn judge_pod(t: &Tenant, labels: &[(&str, &str)], p: &Pod) -> Outcome {
        let config = BulkheadConfigurationSpec::default();
        let caller = Caller::new("alice", ["bulkhead.dev"]);
        let req = Request {
            operation: Operation::Create,
            subresource: None,
            caller: &caller,
            class: CallerClass::TenantUser,
            config: &config,
            mutating: false,
            own_identity: "bulkhead",
        };
        let view = Snapshot::new();
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let object = serde_json::to_value(p).unwrap();
        let request = json!({"operation": "CREATE", "userInfo": {"username": "alice"}});
        let scope = Scope {
            req: &req,
            view: &view,
            tenant: t,
            namespace_name: "solar-dev",
            namespace_labels: &labels,
            request: &request,
            object: &object,
        };
        super::pod(&scope, p, None)
    }

    #[test]
    fn the_last_matching_registry_rule_wins_and_allow_makes_an_allow_list() {
        // Capsule's documentation (134-tenant-solar.yaml).
        let t = tenant(json!([
            {"enforce": {"action": "allow", "workloads": {"registries": [{"exp": "harbor/.*"}]}}},
            {"enforce": {"action": "deny", "workloads": {"targets": ["pod/containers", "pod/volumes"], "registries": [{"exp": "harbor/customer/.*"}]}}},
            {"enforce": {"action": "allow", "workloads": {"targets": ["pod/containers"], "registries": [{"exp": "audit/.*"}]}}},
            {"enforce": {"action": "audit", "workloads": {"targets": ["pod/containers"], "registries": [{"exp": "audit/.*"}]}}},
            {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
             "enforce": {"action": "allow", "workloads": {"targets": ["pod/containers", "pod/volumes"], "registries": [{"exp": "harbor/customer/prod-image/.*", "policy": ["Always"]}]}}}
        ]));
        let ok = judge_pod(
            &t,
            &[],
            &pod(json!([{"name": "a", "image": "harbor/team/app:1"}])),
        );
        assert_eq!(ok, Outcome::default());
        let denied = judge_pod(
            &t,
            &[],
            &pod(json!([{"name": "a", "image": "harbor/customer/x:1"}])),
        );
        assert_eq!(
            denied.denial.as_deref(),
            Some(
                "image `harbor/customer/x:1` (pull policy IfNotPresent) of container `a` in pod `web` is denied by rules[1] of tenant `solar`"
            )
        );
        let outside = judge_pod(
            &t,
            &[],
            &pod(json!([{"name": "a", "image": "docker.io/nginx:1"}])),
        );
        assert!(outside.denial.unwrap().contains("is not allowed by the rules of tenant `solar`: no allow rule matches it (rules[0], rules[2] allow a list)"));
        // Audit: admitted and reported.
        let audited = judge_pod(&t, &[], &pod(json!([{"name": "a", "image": "audit/tool:2"}])));
        assert_eq!(audited.denial, None);
        assert_eq!(
            audited.audits,
            [
                "image `audit/tool:2` (pull policy IfNotPresent) of container `a` in pod `web` matches audit rule rules[3] of tenant `solar`"
            ]
        );
        // In prod, a later allow overrides the deny, for the pull policy it names only.
        let prod = [("env", "prod")];
        let always = pod(
            json!([{"name": "a", "image": "harbor/customer/prod-image/db:1", "imagePullPolicy": "Always"}]),
        );
        assert_eq!(judge_pod(&t, &prod, &always).denial, None);
        let if_not_present = pod(json!([{"name": "a", "image": "harbor/customer/prod-image/db:1"}]));
        assert!(
            judge_pod(&t, &prod, &if_not_present)
                .denial
                .unwrap()
                .contains("denied by rules[1]")
        );
        // Init containers are not targeted by rules[1] and [2]: rules[0]'s allow-list decides.
        let init: Pod = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
            "containers": [{"name": "a", "image": "harbor/team/app:1"}],
            "initContainers": [{"name": "i", "image": "harbor/customer/x:1"}]}}))
        .unwrap();
        assert_eq!(judge_pod(&t, &[], &init).denial, None);
    }

    #[test]
    fn negated_matchers_and_the_earlier_url_form() {
        let t = tenant(json!([
            {"enforce": {"action": "deny", "workloads": {"registries": [{"exp": "trusted/.*", "negate": true}]}}}
        ]));
        assert_eq!(
            judge_pod(&t, &[], &pod(json!([{"name": "a", "image": "trusted/x:1"}]))).denial,
            None
        );
        assert!(
            judge_pod(&t, &[], &pod(json!([{"name": "a", "image": "evil/x:1"}])))
                .denial
                .is_some()
        );
        let legacy = tenant(json!([
            {"namespaceSelector": {"matchLabels": {"env": "prod"}},
             "enforce": {"action": "allow", "registries": [{"url": "harbor/v2/prod-registry/.*", "policy": ["ifNotPresent"]}]}}
        ]));
        let image = pod(json!([{"name": "a", "image": "harbor/v2/prod-registry/app:1"}]));
        assert_eq!(judge_pod(&legacy, &[("env", "prod")], &image).denial, None);
        let other = pod(json!([{"name": "a", "image": "quay.io/app:1"}]));
        assert!(judge_pod(&legacy, &[("env", "prod")], &other).denial.is_some());
        assert_eq!(
            judge_pod(&legacy, &[("env", "dev")], &other).denial,
            None,
            "not selected"
        );
    }

    #[test]
    fn qos_classes_and_schedulers() {
        let t = tenant(json!([
            {"enforce": {"action": "deny", "workloads": {"qosClasses": ["BestEffort"]}}},
            {"enforce": {"action": "allow", "workloads": {"schedulers": [{"exact": ["tenant-scheduler", "default-scheduler"]}]}}}
        ]));
        let best_effort = pod(json!([{"name": "a", "image": "x:1"}]));
        assert_eq!(
            judge_pod(&t, &[], &best_effort).denial.as_deref(),
            Some("QoS class BestEffort of pod `web` is denied by rules[0] of tenant `solar`")
        );
        let guaranteed = pod(
            json!([{"name": "a", "image": "x:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]),
        );
        assert_eq!(qos_class(&guaranteed), QosClass::Guaranteed);
        assert_eq!(judge_pod(&t, &[], &guaranteed).denial, None);
        let burstable = pod(
            json!([{"name": "a", "image": "x:1", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]),
        );
        assert_eq!(qos_class(&burstable), QosClass::Burstable);
        let mut other: Pod = guaranteed.clone();
        other.spec.as_mut().unwrap().scheduler_name = Some("rogue".into());
        assert!(
            judge_pod(&t, &[], &other)
                .denial
                .unwrap()
                .contains("scheduler `rogue` of pod `web` is not allowed")
        );
    }

    #[test]
    fn audiences_and_conditions_choose_the_rules_that_apply() {
        let t = tenant(json!([
            {"audience": [{"kind": "User", "name": "bob"}],
             "enforce": {"action": "deny", "workloads": {"qosClasses": ["BestEffort"]}}},
            {"enforce": {"action": "deny", "conditions": [{"name": "labelled", "expression": "has(object.metadata.labels) && object.metadata.labels.tier == 'gold'"}],
             "workloads": {"qosClasses": ["Burstable"]}}}
        ]));
        let best_effort = pod(json!([{"name": "a", "image": "x:1"}]));
        assert_eq!(
            judge_pod(&t, &[], &best_effort).denial,
            None,
            "rules[0] is bob's only"
        );
        let mut gold: Pod = serde_json::from_value(json!({"metadata": {"name": "web", "labels": {"tier": "gold"}}, "spec": {"containers": [{"name": "a", "image": "x:1", "resources": {"requests": {"cpu": "1"}}}]}})).unwrap();
        assert!(
            judge_pod(&t, &[], &gold)
                .denial
                .unwrap()
                .contains("denied by rules[1]")
        );
        gold.metadata.labels = None;
        assert_eq!(judge_pod(&t, &[], &gold).denial, None);
        let broken = tenant(json!([
            {"enforce": {"action": "deny", "conditions": [{"expression": "object.spec.nothing.here"}], "workloads": {"qosClasses": ["BestEffort"]}}}
        ]));
        assert!(
            judge_pod(&broken, &[], &best_effort)
                .denial
                .unwrap()
                .contains("rules[0] condition `conditions[0]` cannot be evaluated")
        );
    }

    #[test]
    fn rule_bodies_are_templates_over_the_tenant_and_the_namespace() {
        let t = tenant(json!([
            {"enforce": {"action": "allow", "workloads": {"registries": [{"exact": ["{{ .tenant.metadata.name }}/{{ .namespace.metadata.name }}/app:1"]}]}}}
        ]));
        assert_eq!(
            judge_pod(
                &t,
                &[],
                &pod(json!([{"name": "a", "image": "solar/solar-dev/app:1"}]))
            )
            .denial,
            None
        );
        assert!(
            judge_pod(
                &t,
                &[],
                &pod(json!([{"name": "a", "image": "solar/other/app:1"}]))
            )
            .denial
            .is_some()
        );
        let missing = tenant(json!([
            {"enforce": {"action": "allow", "workloads": {"registries": [{"exp": "{{ .tenant.spec.data.nothing }}"}]}}}
        ]));
        assert!(problems(&missing).is_empty(), "checked once rendered");
        assert!(has_templates(missing.spec.rules[0].enforce.as_ref().unwrap()));
        let plain = tenant(
            json!([{"enforce": {"workloads": {"registries": [{"exp": "x"}]}, "metadata": [{"kinds": ["Namespace"], "labels": {"a": {"default": "b"}}}]}}]),
        );
        assert!(!has_templates(plain.spec.rules[0].enforce.as_ref().unwrap()));
        let denial = judge_pod(&missing, &[], &pod(json!([{"name": "a", "image": "x:1"}])))
            .denial
            .unwrap();
        assert!(
            denial.starts_with("rules[0] of tenant `solar`: `{{ .tenant.spec.data.nothing }}` fails"),
            "{denial}"
        );
    }

    #[test]
    fn admission_refuses_what_cannot_be_evaluated() {
        let t = tenant(json!([
            {"audience": [{"kind": "Custom", "name": "Everyone"}],
             "enforce": {"conditions": [{"expression": "object.("}],
                "workloads": {"registries": [{"exp": "("}, {"policy": ["Always"]}]},
                "metadata": [{"kinds": ["ConfigMap"], "labels": {"a": {"values": [{"exp": "["}]}}}]}}
        ]));
        let problems = problems(&t);
        let text = problems.join("\n");
        for expected in [
            "rules[0].audience[0]: unknown Custom audience `Everyone`",
            "rules[0].enforce.conditions[0]: invalid CEL expression",
            "rules[0].enforce.workloads.registries[0].exp: invalid regular expression `(`",
            "rules[0].enforce.workloads.registries[1]: a matcher needs `exact` or `exp`",
            "rules[0].enforce.metadata[0]: Bulkhead enforces metadata rules on Namespaces only",
            "rules[0].enforce.metadata[0].labels[a].values[0].exp: invalid regular expression",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
