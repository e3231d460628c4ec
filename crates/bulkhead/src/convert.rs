//! `bulkhead convert`: Capsule manifests to Bulkhead's, edited as text so that comments, order and
//! everything Bulkhead reads as Capsule does stay as written.
//!
//! Per document: Tenant, TenantResource, GlobalTenantResource and capsule-proxy's ProxySetting get
//! Bulkhead's apiVersion (their fields keep Capsule's names); a CapsuleConfiguration becomes the
//! BulkheadConfiguration `default`, its fields without a Bulkhead meaning dropped and said so, its
//! `users` of kind Group folded into `userGroups`. Kinds Bulkhead does not have yet are left as they
//! are, and said so. Every converted document is then checked against Bulkhead's CRDs as the API
//! server would check it under strict validation, and what it would refuse is reported.

use anyhow::Result;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// The result of converting one file.
#[derive(Debug, Default, PartialEq)]
pub struct Converted {
    /// The converted text.
    pub text: String,
    /// What a reader should know, one sentence each, naming the document (`#2 Tenant solar: ...`).
    pub notes: Vec<String>,
    /// Whether some converted document would be refused by Bulkhead's CRDs (or could not be read).
    pub refused: bool,
}

const CAPSULE_GROUP: &str = "capsule.clastix.io";
/// Kinds whose fields Bulkhead reads with Capsule's names: only the apiVersion changes.
const SAME_FIELDS: [&str; 10] = [
    "Tenant",
    "TenantResource",
    "GlobalTenantResource",
    "ProxySetting",
    "TenantOwner",
    "CustomQuota",
    "GlobalCustomQuota",
    "ResourcePool",
    "ResourcePoolClaim",
    "GlobalProxySettings",
];
/// CapsuleConfiguration fields with the same name and meaning in BulkheadConfiguration.
const CONFIGURATION_FIELDS: [&str; 8] = [
    "allowServiceAccountPromotion",
    "userGroups",
    "ignoreUserWithGroups",
    "administrators",
    "forceTenantPrefix",
    "protectedNamespaceRegex",
    "nodeMetadata",
    "enableTLSReconciler",
];

/// Converts the documents of one file.
pub fn convert(text: &str, crds: &[CustomResourceDefinition]) -> Converted {
    let mut out = Converted::default();
    let mut converted = Vec::new();
    for (i, (separator, lines)) in documents(text).into_iter().enumerate() {
        let (doc, notes, refused) = convert_document(&lines, i + 1, crds);
        out.notes.extend(notes);
        out.refused |= refused;
        if let Some(separator) = separator {
            converted.push(separator.to_owned());
        }
        converted.extend(doc);
    }
    out.text = converted.join("\n");
    if text.ends_with('\n') {
        out.text.push('\n');
    }
    out
}

/// The documents of a YAML stream: each with the `---` line before it, if any.
fn documents(text: &str) -> Vec<(Option<&str>, Vec<String>)> {
    let mut docs: Vec<(Option<&str>, Vec<String>)> = vec![(None, Vec::new())];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            docs.push((Some(line), Vec::new()));
        } else if let Some((_, lines)) = docs.last_mut() {
            lines.push(line.to_owned());
        }
    }
    docs
}

fn convert_document(
    lines: &[String],
    n: usize,
    crds: &[CustomResourceDefinition],
) -> (Vec<String>, Vec<String>, bool) {
    if lines.iter().all(|l| is_blank(l)) {
        return (lines.to_vec(), Vec::new(), false);
    }
    let text = lines.join("\n");
    let value: Value = match serde_saphyr::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return (
                lines.to_vec(),
                vec![format!("#{n}: not valid YAML, left as it is: {e}")],
                true,
            );
        }
    };
    let (Some(api_version), Some(kind)) = (
        value.get("apiVersion").and_then(Value::as_str),
        value.get("kind").and_then(Value::as_str),
    ) else {
        return (lines.to_vec(), Vec::new(), false);
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let what = format!("#{n} {kind} {name}");
    if api_version.split('/').next() != Some(CAPSULE_GROUP) {
        return (lines.to_vec(), Vec::new(), false);
    }
    let mut doc = lines.to_vec();
    let mut notes = Vec::new();
    let target = bulkhead_api::API_VERSION;
    if SAME_FIELDS.contains(&kind) {
        set_top_level(&mut doc, "apiVersion", target);
        if value.get("spec").is_none() {
            // Capsule's CRDs let a Tenant omit its spec (its documentation shows status-only ones);
            // Bulkhead's require it, as an empty one means the same.
            while doc.last().is_some_and(|l| is_blank(l)) {
                doc.pop();
            }
            doc.push("spec: {}".to_owned());
            notes.push(format!(
                "{what}: has no spec; `spec: {{}}` added, which means the same"
            ));
        }
        if kind == "Tenant" && !api_version.ends_with("/v1beta2") {
            notes.push(format!(
                "{what}: {api_version} is read as Capsule's v1beta2; fields of older versions are refused below if any"
            ));
        }
    } else if kind == "CapsuleConfiguration" {
        set_top_level(&mut doc, "apiVersion", target);
        set_top_level(&mut doc, "kind", "BulkheadConfiguration");
        if name != bulkhead_api::labels::CONFIGURATION_NAME {
            set_metadata_name(&mut doc, bulkhead_api::labels::CONFIGURATION_NAME);
            notes.push(format!(
                "{what}: renamed `default`, the one BulkheadConfiguration Bulkhead reads"
            ));
        }
        notes.extend(configuration_spec(&mut doc, &value, &what));
    } else {
        notes.push(format!("{what}: not converted: Bulkhead has no {kind} yet"));
        return (doc, notes, true);
    }
    let refused = match serde_saphyr::from_str::<Value>(&doc.join("\n")) {
        Ok(converted) => {
            let kind = converted
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match crds.iter().find(|c| c.spec.names.kind == kind) {
                Some(crd) => {
                    let errors = bulkhead_api::validation::validate(crd, &converted);
                    for error in &errors {
                        notes.push(format!("{what}: Bulkhead's CRD refuses it: {error}"));
                    }
                    !errors.is_empty()
                }
                None => false,
            }
        }
        Err(e) => {
            notes.push(format!("{what}: the converted text is not valid YAML: {e}"));
            true
        }
    };
    (doc, notes, refused)
}

/// A top-level key's line (`key: value`, at no indentation).
fn set_top_level(doc: &mut [String], key: &str, value: &str) {
    if let Some(line) = doc.iter_mut().find(|l| l.starts_with(&format!("{key}:"))) {
        *line = format!("{key}: {value}");
    }
}

/// `metadata.name` in block style (`metadata:` then an indented `name:`).
fn set_metadata_name(doc: &mut [String], value: &str) {
    let Some(start) = doc.iter().position(|l| l.trim_end() == "metadata:") else {
        return;
    };
    for line in doc.iter_mut().skip(start + 1) {
        if indent(line) == 0 && !is_blank(line) {
            return;
        }
        if line.trim_start().starts_with("name:") {
            *line = format!("{}name: {value}", " ".repeat(indent(line)));
            return;
        }
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Drops the CapsuleConfiguration spec fields Bulkhead has no meaning for (each replaced by a comment
/// that says so), and folds `users` of kind Group into `userGroups`. Returns the notes.
fn configuration_spec(doc: &mut Vec<String>, value: &Value, what: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(spec) = value.get("spec").and_then(Value::as_object) else {
        return notes;
    };
    let Some(start) = doc.iter().position(|l| l.trim_end() == "spec:") else {
        if spec.keys().any(|k| !CONFIGURATION_FIELDS.contains(&k.as_str())) {
            notes.push(format!(
                "{what}: spec is not in block style; its fields were not converted"
            ));
        }
        return notes;
    };
    let mut groups: Vec<String> = spec
        .get("userGroups")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fold_groups = false;
    for entry in spec.get("users").and_then(Value::as_array).into_iter().flatten() {
        let (kind, name) = (
            entry.get("kind").and_then(Value::as_str).unwrap_or_default(),
            entry.get("name").and_then(Value::as_str).unwrap_or_default(),
        );
        if kind == "Group" {
            fold_groups = true;
            if !groups.iter().any(|g| g == name) {
                groups.push(name.to_owned());
            }
        } else {
            notes.push(format!(
                "{what}: users entry {kind} `{name}` dropped: Bulkhead's tenant users are the members of userGroups (and service accounts of tenant namespaces); put them in a group"
            ));
        }
    }
    for user in spec
        .get("userNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        notes.push(format!(
            "{what}: userNames entry `{}` dropped: put the user in one of userGroups",
            user.as_str().unwrap_or_default()
        ));
    }
    // The fields of spec, as [start, end) line ranges at the spec's child indentation.
    let child = doc
        .iter()
        .skip(start + 1)
        .find(|l| !is_blank(l))
        .map(|l| indent(l))
        .unwrap_or(2);
    let mut fields: Vec<(String, usize, usize)> = Vec::new();
    let mut i = start + 1;
    while i < doc.len() {
        let line = &doc[i];
        if !is_blank(line) && indent(line) < child {
            break;
        }
        if !is_blank(line) && indent(line) == child && !line.trim_start().starts_with('-') {
            let key = line
                .trim_start()
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            if let Some(last) = fields.last_mut() {
                last.2 = i;
            }
            fields.push((key, i, doc.len()));
        }
        i += 1;
    }
    if let Some(last) = fields.last_mut() {
        last.2 = last.2.min(i);
    }
    let pad = " ".repeat(child);
    let mut edits: Vec<(usize, usize, Vec<String>)> = Vec::new();
    let mut groups_written = false;
    for (key, from, to) in &fields {
        let replacement = match key.as_str() {
            "userGroups" | "users" if fold_groups => {
                if groups_written {
                    Vec::new()
                } else {
                    groups_written = true;
                    vec![format!("{pad}userGroups: [{}]", groups.join(", "))]
                }
            }
            "users" | "userNames" => vec![format!(
                "{pad}# bulkhead convert: `{key}` dropped (Bulkhead's tenant users are the members of userGroups)"
            )],
            k if CONFIGURATION_FIELDS.contains(&k) => continue,
            other => {
                notes.push(format!(
                    "{what}: spec.{other} dropped: Bulkhead has no such setting"
                ));
                vec![format!(
                    "{pad}# bulkhead convert: `{other}` dropped (no such setting in Bulkhead)"
                )]
            }
        };
        // A field's trailing comment and blank lines stay with what follows.
        let mut end = *to;
        while end > *from + 1 && is_blank(&doc[end - 1]) {
            end -= 1;
        }
        edits.push((*from, end, replacement));
    }
    for (from, to, replacement) in edits.into_iter().rev() {
        doc.splice(from..to, replacement);
    }
    notes
}

/// Converts every file under `paths` to standard output, with the notes on standard error. Returns
/// whether every document converted into one Bulkhead accepts.
pub fn run(paths: &[std::path::PathBuf]) -> Result<bool> {
    let crds = bulkhead_api::crds::all();
    let mut clean = true;
    let files = crate::check::files(paths)?;
    let many = files.len() > 1;
    let mut stdout = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let converted = convert(&text, &crds);
        for note in &converted.notes {
            eprintln!("{}{note}", file.display());
        }
        clean &= !converted.refused;
        if many {
            stdout.push_str(&format!("---\n# {}\n", file.display()));
        }
        stdout.push_str(converted.text.trim_start_matches("---\n"));
        if !stdout.ends_with('\n') {
            stdout.push('\n');
        }
    }
    crate::write_stdout(&stdout)?;
    Ok(clean)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_tenant_keeps_its_comments_and_order_and_gets_bulkheads_api_version() {
        let text = "# the solar team\napiVersion: capsule.clastix.io/v1beta2\nkind: Tenant\nmetadata:\n  name: solar # owned by platform\nspec:\n  owners:\n  - kind: User\n    name: alice\n  ingressOptions: {hostnameCollisionScope: Tenant}\n";
        let out = convert(text, &bulkhead_api::crds::all());
        assert_eq!(
            out.text,
            text.replace("capsule.clastix.io/v1beta2", "bulkhead.dev/v1alpha1")
        );
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        assert!(!out.refused);
    }

    #[test]
    fn a_capsule_configuration_becomes_the_bulkhead_configuration() {
        let text = "\
---
apiVersion: capsule.clastix.io/v1beta2
kind: CapsuleConfiguration
metadata:
  name: capsule-default
  labels: {app: capsule}
spec:
  enableTLSReconciler: true
  # names of Capsule's own objects
  overrides:
    TLSSecretName: capsule-tls
    mutatingWebhookConfigurationName: capsule-mutating
  forceTenantPrefix: false
  protectedNamespaceRegex: ^kube-
  userGroups: [capsule.clastix.io]
  users:
  - kind: Group
    name: platform-users
  - kind: User
    name: alice
  cacheInvalidation: 24h
---
apiVersion: v1
kind: Namespace
metadata: {name: untouched}
";
        let out = convert(text, &bulkhead_api::crds::all());
        let want = "\
---
apiVersion: bulkhead.dev/v1alpha1
kind: BulkheadConfiguration
metadata:
  name: default
  labels: {app: capsule}
spec:
  enableTLSReconciler: true
  # names of Capsule's own objects
  # bulkhead convert: `overrides` dropped (no such setting in Bulkhead)
  forceTenantPrefix: false
  protectedNamespaceRegex: ^kube-
  userGroups: [capsule.clastix.io, platform-users]
  # bulkhead convert: `cacheInvalidation` dropped (no such setting in Bulkhead)
---
apiVersion: v1
kind: Namespace
metadata: {name: untouched}
";
        assert_eq!(out.text, want);
        assert!(!out.refused, "{:?}", out.notes);
        let notes = out.notes.join("\n");
        assert!(
            notes.contains("#2 CapsuleConfiguration capsule-default: renamed `default`"),
            "{notes}"
        );
        assert!(notes.contains("spec.overrides dropped"), "{notes}");
        assert!(notes.contains("spec.cacheInvalidation dropped"), "{notes}");
        assert!(notes.contains("users entry User `alice` dropped"), "{notes}");
        // What comes out is a BulkheadConfiguration its CRD accepts, meaning what Capsule's meant.
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out.text).unwrap();
        let config: bulkhead_api::BulkheadConfiguration = serde_json::from_value(docs[0].clone()).unwrap();
        assert_eq!(config.spec.user_groups, ["capsule.clastix.io", "platform-users"]);
        assert_eq!(config.spec.protected_namespace_regex.as_deref(), Some("^kube-"));
        assert!(config.spec.enable_tls_reconciler);
    }

    #[test]
    fn a_document_without_a_spec_gets_an_empty_one() {
        let text = "apiVersion: capsule.clastix.io/v1beta2\nkind: Tenant\nmetadata:\n  name: solar\nstatus:\n  owners:\n  - {kind: User, name: alice, clusterRoles: [admin]}\n";
        let out = convert(text, &bulkhead_api::crds::all());
        assert!(!out.refused, "{:?}", out.notes);
        assert!(out.text.trim_end().ends_with("spec: {}"), "{}", out.text);
        assert_eq!(
            out.notes,
            ["#1 Tenant solar: has no spec; `spec: {}` added, which means the same"]
        );
        let bare = "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {name: solar}\n";
        let value: Value = serde_saphyr::from_str(bare).unwrap();
        let tenant_crd = <bulkhead_api::Tenant as kube::CustomResourceExt>::crd();
        assert_eq!(
            bulkhead_api::validation::validate(&tenant_crd, &value),
            ["spec: Required value"]
        );
    }

    #[test]
    fn kinds_bulkhead_lacks_and_fields_it_refuses_are_reported_not_hidden() {
        let text = "apiVersion: capsule.clastix.io/v1beta2\nkind: TenantPolicy\nmetadata: {name: pool}\nspec: {}\n---\napiVersion: capsule.clastix.io/v1beta2\nkind: Tenant\nmetadata: {name: solar}\nspec:\n  owners: [{kind: User, name: alice}]\n  somethingNew: true\n";
        let out = convert(text, &bulkhead_api::crds::all());
        assert!(out.refused);
        assert!(
            out.text
                .starts_with("apiVersion: capsule.clastix.io/v1beta2\nkind: TenantPolicy")
        );
        assert!(
            out.text
                .contains("---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant")
        );
        let notes = out.notes.join("\n");
        assert!(
            notes.contains("#1 TenantPolicy pool: not converted: Bulkhead has no TenantPolicy yet"),
            "{notes}"
        );
        assert!(
            notes.contains("#2 Tenant solar: Bulkhead's CRD refuses it: unknown field \"spec.somethingNew\""),
            "{notes}"
        );
    }
}
