//! Schema helpers for fields whose JSON schema cannot be derived as-is.

use schemars::{Schema, SchemaGenerator, json_schema};

/// `Tenant.spec.data`: a free-form object, kept as written (`x-kubernetes-preserve-unknown-fields`).
pub(crate) fn tenant_data(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Free-form values for templates (replication raw items refer to them). Any keys, any values.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// `rawItems`: complete Kubernetes objects (apiVersion, kind, metadata, anything else), kept as written.
pub(crate) fn raw_items(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Complete manifests to create in each selected namespace (their own namespace is ignored).",
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-embedded-resource": true,
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}
