//! The CustomResourceDefinitions, their file names and YAML, and a check of the API server's
//! structural schema rules (a real API server rejects a CRD that breaks them).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{
    BulkheadConfiguration, CustomQuota, GlobalCustomQuota, GlobalProxySettings, GlobalTenantResource,
    ProxySetting, ResourcePool, ResourcePoolClaim, Tenant, TenantOwner, TenantResource,
};

/// The `format`s kube-apiserver recognizes in CRD schemas (k8s.io/kube-openapi's validate formats).
const KNOWN_FORMATS: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
    "int32",
    "int64",
    "float",
    "double",
];

/// The header of every generated CRD file.
pub const GENERATED_HEADER: &str =
    "# Generated from crates/api by `cargo xtask crds`. Do not edit: change the Rust types instead.\n";

/// Every CRD Bulkhead defines, in a stable order, with descriptions unwrapped (see [`unwrap_descriptions`]).
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Tenant::crd(),
        BulkheadConfiguration::crd(),
        GlobalTenantResource::crd(),
        TenantResource::crd(),
        ProxySetting::crd(),
        TenantOwner::crd(),
        CustomQuota::crd(),
        GlobalCustomQuota::crd(),
        ResourcePool::crd(),
        ResourcePoolClaim::crd(),
        GlobalProxySettings::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                unwrap_descriptions(schema);
                crate::rules::add(schema);
            }
        }
    }
    crds
}

/// Doc comments are wrapped at the source's line width; `kubectl explain` wraps again. Single line
/// breaks become spaces; paragraph breaks stay.
pub fn unwrap_descriptions(schema: &mut JSONSchemaProps) {
    visit_mut(schema, &mut |s| {
        if let Some(text) = s.description.as_mut() {
            *text = text
                .split("\n\n")
                .map(|paragraph| paragraph.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n\n");
        }
    });
}

/// Calls `f` on `schema` and on every schema below it (properties, map values, list items).
pub fn visit_mut(schema: &mut JSONSchemaProps, f: &mut impl FnMut(&mut JSONSchemaProps)) {
    f(schema);
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        visit_mut(child, f);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        visit_mut(extra, f);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(item)) = schema.items.as_mut() {
        visit_mut(item, f);
    }
}

/// The schema of a CRD's first version.
pub fn schema_of(crd: &CustomResourceDefinition) -> Option<&JSONSchemaProps> {
    crd.spec
        .versions
        .first()?
        .schema
        .as_ref()?
        .open_api_v3_schema
        .as_ref()
}

/// The file a CRD is written to, e.g. `bulkhead.dev_tenants.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// A CRD as the YAML document written to the chart (with [`GENERATED_HEADER`]).
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!("{GENERATED_HEADER}{}", serde_saphyr::to_string(crd)?))
}

/// Every way the CRD's schemas break the API server's structural schema rules; empty when it is valid.
/// See "Specifying a structural schema" in the Kubernetes CustomResourceDefinition documentation.
pub fn structural_violations(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut out = Vec::new();
    for version in &crd.spec.versions {
        let at = format!("{}/{}", crd.metadata.name.as_deref().unwrap_or("?"), version.name);
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => out.push(format!("{at}: no openAPIV3Schema")),
            Some(root) => check_node(root, &at, false, &mut out),
        }
    }
    out
}

fn check_node(s: &JSONSchemaProps, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let int_or_string = s.x_kubernetes_int_or_string == Some(true);
    let preserve = s.x_kubernetes_preserve_unknown_fields == Some(true);
    if !in_junctor && s.type_.as_deref().unwrap_or("").is_empty() && !int_or_string && !preserve {
        out.push(format!("{path}: no type"));
    }
    if in_junctor
        && !int_or_string
        && (s.description.is_some() || s.type_.is_some() || s.default.is_some() || s.nullable.is_some())
    {
        out.push(format!(
            "{path}: description, type, default or nullable inside allOf/anyOf/oneOf/not"
        ));
    }
    for (field, set) in [
        ("$ref", s.ref_path.is_some()),
        ("definitions", s.definitions.is_some()),
        ("id", s.id.is_some()),
        ("$schema", s.schema.is_some()),
        ("patternProperties", s.pattern_properties.is_some()),
        ("dependencies", s.dependencies.is_some()),
        ("additionalItems", s.additional_items.is_some()),
        ("uniqueItems: true", s.unique_items == Some(true)),
    ] {
        if set {
            out.push(format!("{path}: {field} is not allowed in a CRD schema"));
        }
    }
    // The API server warns about (and ignores) any other format: `unrecognized format "uint32"`.
    if let Some(format) = s.format.as_deref()
        && !KNOWN_FORMATS.contains(&format)
    {
        out.push(format!("{path}: format `{format}` is not one Kubernetes knows"));
    }
    if s.properties.is_some() && matches!(s.additional_properties, Some(JSONSchemaPropsOrBool::Schema(_))) {
        out.push(format!("{path}: properties and additionalProperties together"));
    }
    if s.x_kubernetes_embedded_resource == Some(true) && s.type_.as_deref() != Some("object") {
        out.push(format!("{path}: an embedded resource must be of type object"));
    }
    for (name, prop) in s.properties.iter().flatten() {
        check_node(prop, &format!("{path}.{name}"), in_junctor, out);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = &s.additional_properties {
        check_node(extra, &format!("{path}.*"), in_junctor, out);
    }
    match &s.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => check_node(item, &format!("{path}[]"), in_junctor, out),
        Some(JSONSchemaPropsOrArray::Schemas(_)) => {
            out.push(format!("{path}: items must be a single schema"))
        }
        None if s.type_.as_deref() == Some("array") && !preserve => {
            out.push(format!("{path}: array without items"));
        }
        None => {}
    }
    for (junctor, list) in [("allOf", &s.all_of), ("anyOf", &s.any_of), ("oneOf", &s.one_of)] {
        for (i, sub) in list.iter().flatten().enumerate() {
            check_node(sub, &format!("{path}.{junctor}[{i}]"), true, out);
            // Rule: a field named inside a junctor must also be specified outside it.
            for name in sub.properties.iter().flat_map(|p| p.keys()) {
                if !s.properties.as_ref().is_some_and(|p| p.contains_key(name)) {
                    out.push(format!(
                        "{path}.{junctor}[{i}]: field {name} is not specified outside {junctor}"
                    ));
                }
            }
        }
    }
    if let Some(not) = &s.not {
        check_node(not, &format!("{path}.not"), true, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_schema_is_structural() {
        for crd in all() {
            let violations = structural_violations(&crd);
            assert!(violations.is_empty(), "{}: {violations:#?}", file_name(&crd));
        }
    }

    #[test]
    fn the_checker_finds_what_the_api_server_rejects() {
        let mut crd = Tenant::crd();
        let root = crd.spec.versions[0]
            .schema
            .as_mut()
            .unwrap()
            .open_api_v3_schema
            .as_mut()
            .unwrap();
        let spec = root.properties.as_mut().unwrap().get_mut("spec").unwrap();
        let owners = spec.properties.as_mut().unwrap().get_mut("owners").unwrap();
        owners.type_ = None;
        owners.unique_items = Some(true);
        owners.format = Some("uint32".into());
        let v = structural_violations(&crd);
        assert!(v.iter().any(|m| m.ends_with(".spec.owners: no type")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("uniqueItems")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("format `uint32`")), "{v:?}");
    }

    #[test]
    fn descriptions_are_unwrapped_for_kubectl_explain() {
        let crd = all().remove(0);
        let root = schema_of(&crd).unwrap();
        let owners = &root.properties.as_ref().unwrap()["spec"]
            .properties
            .as_ref()
            .unwrap()["owners"];
        let item = match owners.items.as_ref().unwrap() {
            JSONSchemaPropsOrArray::Schema(s) => s,
            JSONSchemaPropsOrArray::Schemas(_) => panic!("one schema"),
        };
        let text = item.description.as_deref().unwrap();
        assert!(
            text.contains("every tenant namespace, and what the proxy"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn file_names_and_scopes() {
        let names: Vec<(String, String)> = all()
            .iter()
            .map(|c| (file_name(c), c.spec.scope.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("bulkhead.dev_tenants.yaml", "Cluster"),
                ("bulkhead.dev_bulkheadconfigurations.yaml", "Cluster"),
                ("bulkhead.dev_globaltenantresources.yaml", "Cluster"),
                ("bulkhead.dev_tenantresources.yaml", "Namespaced"),
                ("bulkhead.dev_proxysettings.yaml", "Namespaced"),
                ("bulkhead.dev_tenantowners.yaml", "Cluster"),
                ("bulkhead.dev_customquotas.yaml", "Namespaced"),
                ("bulkhead.dev_globalcustomquotas.yaml", "Cluster"),
                ("bulkhead.dev_resourcepools.yaml", "Cluster"),
                ("bulkhead.dev_resourcepoolclaims.yaml", "Namespaced"),
                ("bulkhead.dev_globalproxysettings.yaml", "Cluster"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }
}
