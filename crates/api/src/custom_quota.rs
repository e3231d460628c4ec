//! CustomQuota and GlobalCustomQuota: limits on any kind, counted by a JSONPath, with Capsule
//! v0.15's field names (`capsule.clastix.io/v1beta2` manifests migrate by their apiVersion).
//!
//! A quota adds up, over the objects its `sources` select, either 1 per object (`op: count`) or the
//! quantities a JSONPath finds in each (`op: add`, `op: sub`), and admission refuses a write that would
//! take the total past `limit`. The total is kept in `status` by the controller (`claims`: every counted
//! object with its usage); writes admitted but not yet counted are kept as `status.reservations` by
//! the webhook, in the same object, so that concurrent writes (through any webhook replica, across
//! restarts) can never pass the limit together. docs/quotas.md says how.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, LabelSelectorRequirement};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A quantity as the API server writes one: an integer, or a number with an optional suffix.
const QUANTITY_RULE: &str = r"type(self) == int || string(self).matches('^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([KMGTPE]i|[mkMGTPE]|[eE][+-]?[0-9]+)?$')";

/// A limit on the objects of one namespace, of any namespaced kind.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "CustomQuota",
    namespaced,
    shortname = "cq",
    category = "bulkhead",
    status = "CustomQuotaStatus",
    doc = "A limit on what the objects of one namespace add up to, for any kind, counted by a JSONPath.",
    printcolumn = r#"{"name":"Used","type":"string","jsonPath":".status.usage.used"}"#,
    printcolumn = r#"{"name":"Limit","type":"string","jsonPath":".spec.limit"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CustomQuotaSpec {
    /// The most the selected objects may add up to: a quantity (`5`, `500Gi`, `1500m`).
    #[schemars(extend("maxLength" = 64, "x-kubernetes-validations" = [{"rule": QUANTITY_RULE, "message": "must be a quantity (5, 500Gi, 1500m)"}]))]
    pub limit: Quantity,
    /// What counts, kind by kind; the usage is the sum over all sources.
    #[schemars(length(min = 1))]
    pub sources: Vec<QuotaSource>,
    /// Only objects whose labels match one of these selectors count (all objects when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope_selectors: Vec<LabelSelector>,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<QuotaOptions>,
}

/// A limit on the objects of every namespace its `namespaceSelectors` select, together.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "GlobalCustomQuota",
    shortname = "gcq",
    category = "bulkhead",
    status = "CustomQuotaStatus",
    doc = "A limit on what the objects of the selected namespaces add up to together, for any namespaced kind.",
    printcolumn = r#"{"name":"Used","type":"string","jsonPath":".status.usage.used"}"#,
    printcolumn = r#"{"name":"Limit","type":"string","jsonPath":".spec.limit"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GlobalCustomQuotaSpec {
    /// The most the selected objects may add up to: a quantity (`5`, `500Gi`, `1500m`).
    #[schemars(extend("maxLength" = 64, "x-kubernetes-validations" = [{"rule": QUANTITY_RULE, "message": "must be a quantity (5, 500Gi, 1500m)"}]))]
    pub limit: Quantity,
    /// What counts, kind by kind; the usage is the sum over all sources.
    #[schemars(length(min = 1))]
    pub sources: Vec<QuotaSource>,
    /// The namespaces whose objects count: those whose labels match one of these selectors. None
    /// selects no namespace (a quota over the whole cluster names that on purpose: `- {}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Only objects whose labels match one of these selectors count (all objects when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope_selectors: Vec<LabelSelector>,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<QuotaOptions>,
}

/// One kind of object that counts, and how.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.apiVersion) || has(self.version)", "message": "give apiVersion, or group and version"},
    {"rule": "(has(self.op) && self.op == 'count') ? !has(self.path) : has(self.path)", "message": "path is required with op add or sub, and not allowed with op count"}
]))]
pub struct QuotaSource {
    /// `group/version` of the kind (`v1`, `batch/v1`); or give `group` and `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The kind's API group (`""` for the core group), with `version`, instead of `apiVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind's version, with `group`, instead of `apiVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The kind (`Pod`, `PersistentVolumeClaim`, any namespaced custom kind).
    #[schemars(length(min = 1))]
    pub kind: String,
    /// `count` (1 per object), `add` (the quantities `path` finds; the default) or `sub` (the same,
    /// subtracted).
    #[serde(default)]
    pub op: QuotaOp,
    /// A JSONPath from the object (`.spec.resources.requests.storage`,
    /// `.spec.containers[*].resources.limits.cpu`); the quantities it finds are summed, a missing
    /// field counts 0. Required for `add` and `sub`, not allowed with `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
    /// Only objects matching one of these count (all objects of the kind when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<SourceSelector>,
}

/// How a source's objects count.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuotaOp {
    /// The quantities `path` finds are added.
    #[default]
    Add,
    /// The quantities `path` finds are subtracted.
    Sub,
    /// Each object counts 1.
    Count,
}

/// Labels and fields an object must have to count: the label selector and every field selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSelector {
    /// Labels the object must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Label requirements the object must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
    /// JSONPath conditions on the object, all of which must hold: `.spec.type=LoadBalancer`
    /// (also `==`, quoted or not), `.status.phase!=Succeeded`, or a bare path that holds when it finds
    /// something other than `false`, `0` or nothing (`.spec.suspend`,
    /// `.spec.accessModes[?(@=="ReadWriteOnce")]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_selectors: Vec<String>,
}

impl SourceSelector {
    /// The label part, as a Kubernetes label selector.
    pub fn label_selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: self.match_expressions.clone(),
        }
    }
}

/// Options of a quota.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaOptions {
    /// Also export each counted object's usage as a metric (`bulkhead_custom_quota_item_usage`).
    /// Off by default: one series per object.
    #[serde(default)]
    pub emit_metric_per_claim_usage: bool,
}

/// What the controller counted, and what the webhook admitted that is not counted yet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomQuotaStatus {
    /// Used and available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<QuotaUsage>,
    /// Every object counted, with its usage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<QuotaClaim>,
    /// Writes the webhook admitted whose objects the controller has not counted yet. Each is kept
    /// until the controller counts its object (or a minute passes: a write that never happened).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<QuotaReservation>,
    /// The namespaces whose objects count (a GlobalCustomQuota's selection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// The kinds counted, as found by discovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<QuotaTarget>,
    /// `Ready`: whether every source's kind is served, readable and counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Used and available.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    /// What the counted objects add up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<Quantity>,
    /// `limit - used`, at least 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<Quantity>,
}

/// One object counted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaClaim {
    /// API group of the object.
    #[serde(default)]
    pub group: String,
    /// Version of the object.
    #[serde(default)]
    pub version: String,
    /// Kind of the object.
    #[serde(default)]
    pub kind: String,
    /// Namespace of the object.
    #[serde(default)]
    pub namespace: String,
    /// Name of the object.
    #[serde(default)]
    pub name: String,
    /// UID of the object.
    #[serde(default)]
    pub uid: String,
    /// What it adds (negative for `sub`).
    pub usage: Quantity,
}

/// A write admitted and not yet counted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaReservation {
    /// UID of the object written.
    pub uid: String,
    /// Namespace of the object.
    #[serde(default)]
    pub namespace: String,
    /// Name of the object.
    #[serde(default)]
    pub name: String,
    /// Its usage after the write.
    pub usage: Quantity,
    /// When it was admitted (RFC 3339).
    pub time: String,
}

/// A kind counted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaTarget {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// Version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// The resource (plural) the API server serves it as.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// The source's op.
    #[serde(default)]
    pub op: QuotaOp,
    /// The source's path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// `namespace` (Capsule writes it; every counted kind is namespaced).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

impl QuotaSource {
    /// The kind's group and version, from `apiVersion` or from `group` and `version`.
    pub fn group_version(&self) -> (String, String) {
        match &self.api_version {
            Some(api_version) => match api_version.split_once('/') {
                Some((group, version)) => (group.to_owned(), version.to_owned()),
                None => (String::new(), api_version.clone()),
            },
            None => (
                self.group.clone().unwrap_or_default(),
                self.version.clone().unwrap_or_default(),
            ),
        }
    }
}

/// What the two kinds share, so the rest of Bulkhead treats them alike.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaDefinition<'a> {
    /// The quota's limit.
    pub limit: &'a Quantity,
    /// Its sources.
    pub sources: &'a [QuotaSource],
    /// Its scope selectors.
    pub scope_selectors: &'a [LabelSelector],
    /// A CustomQuota's namespace, or `None` for a GlobalCustomQuota (whose namespaces its selectors choose).
    pub namespace: Option<&'a str>,
    /// A GlobalCustomQuota's namespace selectors.
    pub namespace_selectors: &'a [LabelSelector],
    /// Whether each claim is a metric too.
    pub per_claim_metrics: bool,
}

impl CustomQuota {
    /// The definition.
    pub fn definition(&self) -> QuotaDefinition<'_> {
        QuotaDefinition {
            limit: &self.spec.limit,
            sources: &self.spec.sources,
            scope_selectors: &self.spec.scope_selectors,
            namespace: self.metadata.namespace.as_deref(),
            namespace_selectors: &[],
            per_claim_metrics: self
                .spec
                .options
                .as_ref()
                .is_some_and(|o| o.emit_metric_per_claim_usage),
        }
    }
}

impl GlobalCustomQuota {
    /// The definition.
    pub fn definition(&self) -> QuotaDefinition<'_> {
        QuotaDefinition {
            limit: &self.spec.limit,
            sources: &self.spec.sources,
            scope_selectors: &self.spec.scope_selectors,
            namespace: None,
            namespace_selectors: &self.spec.namespace_selectors,
            per_claim_metrics: self
                .spec
                .options
                .as_ref()
                .is_some_and(|o| o.emit_metric_per_claim_usage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsules_manifests_read_as_written() {
        let quota: GlobalCustomQuotaSpec = serde_json::from_value(serde_json::json!({
            "limit": 5,
            "namespaceSelectors": [{"matchLabels": {"capsule.clastix.io/tenant": "solar"}}],
            "sources": [
                {"apiVersion": "v1", "kind": "Pod", "op": "add", "path": ".spec.containers[*].resources.limits.cpu",
                 "selectors": [{"fieldSelectors": [".status.phase!=Succeeded"]}]},
                {"group": "", "version": "v1", "kind": "Pod", "op": "count"},
                {"apiVersion": "s3.aws.upbound.io/v1beta1", "kind": "Bucket"}
            ]
        }))
        .unwrap();
        assert_eq!(quota.limit, Quantity("5".into()));
        assert_eq!(quota.sources[0].group_version(), (String::new(), "v1".into()));
        assert_eq!(quota.sources[1].group_version(), (String::new(), "v1".into()));
        assert_eq!(quota.sources[1].op, QuotaOp::Count);
        assert_eq!(
            quota.sources[2].group_version(),
            ("s3.aws.upbound.io".into(), "v1beta1".into())
        );
        assert_eq!(quota.sources[2].op, QuotaOp::Add, "add is the default");
    }
}
