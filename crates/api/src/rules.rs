//! CEL validation rules (`x-kubernetes-validations`) the API server evaluates itself, so that a Tenant
//! (or any Bulkhead resource) that cannot work is refused even while Bulkhead is down.
//!
//! The rules are added by shape, not field by field, so that a new field of a known shape is covered
//! without anyone remembering to: every string property whose name ends in `Regex`, every value of a
//! `requiredMetadata` map (a regex per key), every `matchExpressions` list (label selector
//! requirements) and every Tenant owner. Only CEL that Kubernetes 1.28 (the chart's minimum) knows is
//! used: `matches`, `startsWith`, `size`, `trim` and `in`.
//!
//! What CEL cannot say stays in the webhook (`policy::admission::tenant_problems`): external IP ranges
//! (CEL's IP library arrived in 1.31) and checks that need other objects.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, ValidationRule,
};

/// A regular expression that compiles: matching the empty string either succeeds or fails, and only a
/// pattern that does not compile makes both sides an error (CEL's `||` absorbs one error, not two).
/// The API server ratchets a rule that says false about a value an update leaves unchanged, but never
/// one whose evaluation fails; so the rule itself lets an unchanged value pass (`optionalOldSelf`:
/// `oldSelf` is empty on create), or a Tenant stored before the rule existed could not even have its
/// status written.
pub const REGEX: &str = "oldSelf == optional.of(self) || ''.matches(self) || !''.matches(self)";
/// What the API server says of a regex that does not compile, after the compiler's own error.
pub const REGEX_MESSAGE: &str = "must be a regular expression that compiles (RE2 syntax)";

/// A label selector requirement's operator is one Kubernetes knows.
pub const OPERATOR: &str = "self.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist']";
/// `In` and `NotIn` need values.
pub const VALUES_NEEDED: &str =
    "!(self.operator in ['In', 'NotIn']) || (has(self.values) && self.values.size() > 0)";

// The owners list is atomic: the API server correlates (and ratchets) it as a whole, not its items, so
// its rules are on the list. Selector requirements sit in lists inside other lists, where a rule on
// the list goes over the API server's cost budget, so theirs are on each requirement.

/// No owner's name is blank.
pub const OWNER_NAME: &str = "self.all(o, o.name.trim().size() > 0)";
/// A ServiceAccount owner (named so, or of that kind) is named `system:serviceaccount:<ns>:<name>`.
pub const OWNER_SERVICE_ACCOUNT: &str = "self.all(o, (has(o.kind) ? o.kind == 'ServiceAccount' : o.name.startsWith('system:serviceaccount:')) ? o.name.matches('^system:serviceaccount:[^:]+:[^:]+$') : true)";

/// The bounds the rules need. The API server estimates a rule's worst cost from the largest list, map
/// and string the schema allows and refuses the CRD when it is too high, so a rule on every owner or on
/// every required-metadata value needs those bounded. They are far above anything seen in use.
pub const MAX_OWNERS: i64 = 128;
/// The most requirements in one label selector's `matchExpressions`.
pub const MAX_REQUIREMENTS: i64 = 64;
/// The longest selector operator (the longest there is, `DoesNotExist`, has 12 characters).
pub const MAX_OPERATOR: i64 = 16;
/// The longest owner name (user, group or ServiceAccount).
pub const MAX_OWNER_NAME: i64 = 512;
/// The most keys in `requiredMetadata.labels` or `.annotations`.
pub const MAX_REQUIRED_KEYS: i64 = 64;
/// The longest regex in `requiredMetadata`.
pub const MAX_REQUIRED_PATTERN: i64 = 1024;

/// Adds the rules to `schema` and everything below it. Idempotent.
pub fn add(schema: &mut JSONSchemaProps) {
    for (name, prop) in schema.properties.iter_mut().flatten() {
        if name.ends_with("Regex") && prop.type_.as_deref() == Some("string") {
            push_regex(prop);
        }
        if name == "requiredMetadata" {
            for map in prop.properties.iter_mut().flat_map(|p| p.values_mut()) {
                if let Some(JSONSchemaPropsOrBool::Schema(value)) = map.additional_properties.as_mut() {
                    push_regex(value);
                    value.max_length.get_or_insert(MAX_REQUIRED_PATTERN);
                    map.max_properties.get_or_insert(MAX_REQUIRED_KEYS);
                }
            }
        }
        let item_has = |prop: &JSONSchemaProps, fields: &[&str]| match &prop.items {
            Some(JSONSchemaPropsOrArray::Schema(item)) => item
                .properties
                .as_ref()
                .is_some_and(|p| fields.iter().all(|f| p.contains_key(*f))),
            _ => false,
        };
        if name == "matchExpressions" && item_has(prop, &["operator"]) {
            prop.max_items.get_or_insert(MAX_REQUIREMENTS);
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = prop.items.as_mut()
                && let Some(operator) = item.properties.as_mut().and_then(|p| p.get_mut("operator"))
            {
                operator.max_length.get_or_insert(MAX_OPERATOR);
            }
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = prop.items.as_mut() {
                push(
                    item,
                    OPERATOR,
                    "operator must be one of In, NotIn, Exists, DoesNotExist",
                );
                push(
                    item,
                    VALUES_NEEDED,
                    "values must be non-empty when operator is In or NotIn",
                );
                // `Exists` / `DoesNotExist` with values is accepted, as Capsule's CRDs accept it (its
                // documentation has one): Kubernetes cannot turn it into a selector, so it matches
                // nothing (`bulkhead_policy::selector`), which is what Capsule makes of it too.
            }
        }
        if name == "owners" && item_has(prop, &["name", "kind"]) {
            prop.max_items.get_or_insert(MAX_OWNERS);
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = prop.items.as_mut()
                && let Some(owner_name) = item.properties.as_mut().and_then(|p| p.get_mut("name"))
            {
                owner_name.max_length.get_or_insert(MAX_OWNER_NAME);
            }
            push(prop, OWNER_NAME, "an owner's name must not be blank");
            push(
                prop,
                OWNER_SERVICE_ACCOUNT,
                "a ServiceAccount owner must be named system:serviceaccount:<namespace>:<name>",
            );
        }
        add(prop);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        add(extra);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(item)) = schema.items.as_mut() {
        add(item);
    }
}

fn push(schema: &mut JSONSchemaProps, rule: &str, message: &str) {
    push_rule(schema, rule, message, None);
}

fn push_regex(schema: &mut JSONSchemaProps) {
    push_rule(schema, REGEX, REGEX_MESSAGE, Some(true));
}

fn push_rule(schema: &mut JSONSchemaProps, rule: &str, message: &str, optional_old_self: Option<bool>) {
    let rules = schema.x_kubernetes_validations.get_or_insert_with(Vec::new);
    if rules.iter().any(|r| r.rule == rule) {
        return;
    }
    rules.push(ValidationRule {
        rule: rule.to_owned(),
        message: Some(message.to_owned()),
        optional_old_self,
        ..ValidationRule::default()
    });
}
