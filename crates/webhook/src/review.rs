//! AdmissionReview (admission.k8s.io/v1) as it travels: decoded with clear errors, encoded back.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use bulkhead_policy::admission::{Operation, Verdict};

/// The largest body accepted. The API server caps objects at ~1.5 MiB; a review carries the object and
/// its old version, plus framing.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// An AdmissionReview as the API server sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1` (v1beta1 is answered in kind).
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// The request.
    pub request: Option<AdmissionRequest>,
}

/// Group, version and kind (or resource) of the object.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct GroupVersionKind {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// Group, version and resource (plural) of a request.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct GroupVersionResource {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Resource (plural).
    #[serde(default)]
    pub resource: String,
}

/// The caller, as authenticated by the API server.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct UserInfo {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The request inside a review.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind.
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// The subresource written, if any.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// The resource written (`apps/v1 deployments` for a Deployment's `scale`).
    #[serde(default)]
    pub resource: Option<GroupVersionResource>,
    /// The object's name (may be empty on create with generateName).
    #[serde(default)]
    pub name: String,
    /// The namespace of a namespaced object.
    #[serde(default)]
    pub namespace: Option<String>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: String,
    /// The caller.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object after the write.
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    /// The object before the write.
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
    /// Whether this is a dry run (no side effects: no Events).
    #[serde(default)]
    pub dry_run: Option<bool>,
}

impl AdmissionRequest {
    /// The operation, parsed.
    pub fn operation(&self) -> Result<Operation, String> {
        Operation::parse(&self.operation).ok_or_else(|| format!("unknown operation `{}`", self.operation))
    }
}

/// Decodes a review body. Errors are sentences fit for a 400 response.
pub fn decode(body: &[u8]) -> Result<(String, AdmissionRequest), String> {
    if body.len() > MAX_BODY {
        return Err(format!(
            "the body is {} bytes; at most {MAX_BODY} are accepted",
            body.len()
        ));
    }
    let review: AdmissionReview =
        serde_json::from_slice(body).map_err(|e| format!("the body is not an AdmissionReview: {e}"))?;
    if review.kind != "AdmissionReview" {
        return Err(format!("expected kind AdmissionReview, got `{}`", review.kind));
    }
    if !matches!(
        review.api_version.as_str(),
        "admission.k8s.io/v1" | "admission.k8s.io/v1beta1"
    ) {
        return Err(format!(
            "unsupported apiVersion `{}`: admission.k8s.io/v1 is spoken here",
            review.api_version
        ));
    }
    let request = review
        .request
        .ok_or_else(|| "the AdmissionReview has no request".to_owned())?;
    if request.uid.is_empty() {
        return Err("the admission request has no uid".to_owned());
    }
    request.operation()?;
    Ok((review.api_version, request))
}

/// Reads the object (or old object) into a typed value; a missing one is `None`.
pub fn typed<T: serde::de::DeserializeOwned>(
    raw: Option<&RawValue>,
    what: &str,
) -> Result<Option<T>, String> {
    raw.filter(|r| r.get() != "null")
        .map(|r| serde_json::from_str(r.get()).map_err(|e| format!("the {what} cannot be read: {e}")))
        .transpose()
}

/// The response review for a verdict. `mutating` says whether a patch may be sent; `warnings` go to the
/// client (audits of namespace rules); `audit` becomes
/// the response's `auditAnnotations` (the API server writes them to its audit log under the
/// webhook's name, e.g. `pods.validate.bulkhead.dev/tenant`).
pub fn encode(
    api_version: &str,
    uid: &str,
    verdict: &Verdict,
    mutating: bool,
    audit: &std::collections::BTreeMap<&'static str, String>,
    warnings: &[String],
) -> Value {
    let mut response = json!({"uid": uid, "allowed": verdict.is_allowed()});
    if !audit.is_empty() {
        response["auditAnnotations"] = json!(audit);
    }
    if !warnings.is_empty() {
        // The API server passes these to the client (kubectl prints them as `Warning: ...`).
        response["warnings"] = json!(warnings);
    }
    match verdict {
        Verdict::Allow(patch) if mutating && !patch.is_empty() => {
            let bytes = serde_json::to_vec(patch).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        Verdict::Allow(_) => {}
        Verdict::Deny(denial) => {
            response["status"] = json!({
                "code": 403,
                "reason": "Forbidden",
                "message": denial.message,
            });
        }
    }
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
}

/// The response to a request Bulkhead could not read at all (still a valid review, denied).
#[derive(Debug, Serialize)]
pub struct BadRequest {
    /// Why.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_reviews_are_refused_with_reasons() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "the body is not an AdmissionReview"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#, "expected kind AdmissionReview"),
            (br#"{"apiVersion":"v9","kind":"AdmissionReview"}"#, "unsupported apiVersion `v9`"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "has no request"),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","operation":"CREATE"}}"#,
                "has no uid",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","operation":"EXPLODE"}}"#,
                "unknown operation `EXPLODE`",
            ),
        ];
        for (body, reason) in cases {
            let error = decode(body).expect_err("must fail");
            assert!(error.contains(reason), "{error:?} lacks {reason:?}");
        }
        let huge = vec![b' '; MAX_BODY + 1];
        assert!(decode(&huge).expect_err("too big").contains("at most"));
    }

    #[test]
    fn verdicts_encode_as_the_api_server_expects() {
        let allow = encode(
            "admission.k8s.io/v1",
            "u1",
            &Verdict::Allow(vec![json!({"op": "add", "path": "/a", "value": 1})]),
            true,
            &std::collections::BTreeMap::from([("tenant", "solar".to_owned())]),
            &[],
        );
        assert_eq!(allow["response"]["auditAnnotations"], json!({"tenant": "solar"}));
        assert_eq!(allow["response"]["uid"], "u1");
        assert_eq!(allow["response"]["allowed"], true);
        assert_eq!(allow["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(allow["response"]["patch"].as_str().unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(
            serde_json::from_slice::<Value>(&patch).ok(),
            Some(json!([{"op": "add", "path": "/a", "value": 1}]))
        );
        let validating = encode(
            "admission.k8s.io/v1",
            "u1",
            &Verdict::Allow(vec![json!({})]),
            false,
            &std::collections::BTreeMap::new(),
            &["image `x` matches audit rule rules[0] of tenant `solar`".to_owned()],
        );
        assert!(validating["response"].get("auditAnnotations").is_none());
        assert_eq!(
            validating["response"]["warnings"],
            json!(["image `x` matches audit rule rules[0] of tenant `solar`"])
        );
        assert!(validating["response"].get("patch").is_none());
        let deny = encode(
            "admission.k8s.io/v1",
            "u2",
            &Verdict::deny(None, "no"),
            true,
            &std::collections::BTreeMap::new(),
            &[],
        );
        assert!(deny["response"].get("warnings").is_none());
        assert_eq!(deny["response"]["allowed"], false);
        assert_eq!(deny["response"]["status"]["message"], "no");
        assert_eq!(deny["response"]["status"]["code"], 403);
    }
}
