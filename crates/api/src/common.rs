//! Building blocks shared by several resources: allowed and forbidden lists, metadata, selectors.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Values allowed by exact name or by a regular expression. An empty list with no regex allows nothing
/// only where the field is set; an absent field means "no restriction".
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedList {
    /// Values allowed exactly as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// A regular expression (RE2 syntax, unanchored unless you anchor it); a value matching it is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_regex: Option<String>,
}

/// Classes (storage, ingress, priority, runtime, gateway, device) a tenant may use: by exact name, by
/// regular expression, or by labels on the class object; with an optional default injected on create.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassAllowedList {
    /// Class names allowed exactly as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
    /// A regular expression; a class whose name matches it is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_regex: Option<String>,
    /// A class whose object carries all these labels is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// A class whose object's labels satisfy all these requirements is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
    /// The class set on objects created without one. It is allowed even if no other rule allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

impl ClassAllowedList {
    /// The label selector part of this list, when it has one.
    pub fn selector(&self) -> Option<LabelSelector> {
        if self.match_labels.is_none() && self.match_expressions.is_none() {
            return None;
        }
        Some(LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: self.match_expressions.clone(),
        })
    }
}

/// Keys tenant users may not set, by exact key or regular expression.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForbiddenList {
    /// Keys forbidden exactly as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<String>,
    /// A regular expression; a key matching it is forbidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_regex: Option<String>,
}

/// Labels and annotations Bulkhead puts on objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AdditionalMetadata {
    /// Labels to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Labels and annotations for the tenant namespaces that match a selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectedMetadata {
    /// Which of the tenant's namespaces get this metadata; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Labels to set on the selected namespaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to set on the selected namespaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Labels and annotations a namespace must carry, each key mapped to a regular expression its value must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RequiredMetadata {
    /// Label key -> regular expression the value must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotation key -> regular expression the value must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
