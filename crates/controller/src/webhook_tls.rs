//! The TLS manager: keeps the webhook's CA and serving certificate in a Secret (renewed before expiry)
//! and registers the webhook configurations with that CA, so no cert-manager is needed. Runs on the
//! leader only.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bulkhead_api::labels;
use bulkhead_policy::webhooks::{Endpoint, admission_policies, configurations};
use bulkhead_tls::certs::{Bundle, Plan, issue, plan};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::reconcile::Context;
use crate::{apply_unless_current, with_type};

/// What the TLS manager keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTls {
    /// The Secret's namespace (Bulkhead's own).
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// Where the API server reaches the webhook.
    pub endpoint: Endpoint,
    /// The names (DNS or IP) the serving certificate is for.
    pub names: Vec<String>,
    /// The name of the webhook configurations.
    pub configuration_name: String,
}

/// How often certificates and configurations are looked at again without a trigger.
const RECHECK: Duration = Duration::from_secs(600);

/// Runs until `stop`: on start, on every configuration change, and every [`RECHECK`].
pub async fn keep(ctx: Arc<Context>, settings: WebhookTls, stop: CancellationToken) {
    let mut config_changes = ctx.cache.configurations().subscribe();
    let mut applied: Option<u64> = None;
    let mut last_full = Instant::now();
    loop {
        let wait = match ensure(&ctx, &settings, &mut applied, last_full.elapsed() >= RECHECK).await {
            Ok(()) => RECHECK,
            Err(e) => {
                warn!(error = %e, "cannot keep the webhook certificate and configurations; retrying");
                applied = None;
                Duration::from_secs(5)
            }
        };
        if last_full.elapsed() >= RECHECK {
            last_full = Instant::now();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = config_changes.recv() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn ensure(ctx: &Context, s: &WebhookTls, applied: &mut Option<u64>, full: bool) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &s.namespace);
    let existing = secrets
        .get_opt(&s.secret)
        .await
        .map_err(|e| format!("cannot read secret {}/{}: {e}", s.namespace, s.secret))?;
    let current = existing.as_ref().and_then(|secret| {
        let data = secret
            .data
            .as_ref()?
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        Bundle::from_secret_parts(&data, secret.metadata.annotations.as_ref()?)
    });
    let now = SystemTime::now();
    let decision = plan(current.as_ref(), &s.names, now);
    let bundle = match (decision, current) {
        (Plan::Keep, Some(bundle)) => bundle,
        (decision, current) => {
            let bundle = issue(current.as_ref(), decision, &s.names, now).map_err(|e| e.to_string())?;
            let (data, annotations) = bundle.to_secret_parts();
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(s.secret.clone()),
                    namespace: Some(s.namespace.clone()),
                    labels: Some(
                        [(labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned())].into(),
                    ),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                data: Some(
                    data.into_iter()
                        .map(|(k, v)| (k, ByteString(v.into_bytes())))
                        .collect(),
                ),
                type_: Some("kubernetes.io/tls".to_owned()),
                ..Default::default()
            };
            let params = PatchParams::apply(labels::FIELD_MANAGER).force();
            secrets
                .patch(&s.secret, &params, &Patch::Apply(with_type(&secret)))
                .await
                .map_err(|e| format!("cannot write secret {}/{}: {e}", s.namespace, s.secret))?;
            info!(plan = ?decision, names = %s.names.join(","), "webhook certificate issued");
            bundle
        }
    };
    let groups = ctx.cache.configuration().user_groups;
    let (mutating, validating) = configurations(
        &s.configuration_name,
        &s.endpoint,
        &bundle.ca_cert,
        &groups,
        &s.namespace,
    );
    let policies = admission_policies(&s.configuration_name, &groups, &s.namespace);
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(&(&mutating, &validating, &policies))
        .unwrap_or_default()
        .hash(&mut hasher);
    let hash = hasher.finish();
    if *applied == Some(hash) && !full {
        return Ok(());
    }
    let m: Api<MutatingWebhookConfiguration> = Api::all(ctx.client.clone());
    apply_unless_current(&m, &s.configuration_name, with_type(&mutating))
        .await
        .map_err(|e| format!("cannot register the mutating webhooks: {e}"))?;
    let v: Api<ValidatingWebhookConfiguration> = Api::all(ctx.client.clone());
    apply_unless_current(&v, &s.configuration_name, with_type(&validating))
        .await
        .map_err(|e| format!("cannot register the validating webhooks: {e}"))?;
    // What the API server enforces itself. An API server without ValidatingAdmissionPolicy (before
    // 1.30) keeps only the webhooks' checks: said, not fatal.
    let vap: Api<ValidatingAdmissionPolicy> = Api::all(ctx.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ctx.client.clone());
    for (policy, binding) in &policies {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let result = match apply_unless_current(&vap, &name, with_type(policy)).await {
            Ok(_) => apply_unless_current(&bindings, &name, with_type(binding)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            warn!(policy = %name, error = %e, "cannot register the ValidatingAdmissionPolicy; the webhook alone enforces it");
        }
    }
    if *applied != Some(hash) {
        info!(endpoint = ?s.endpoint, "webhook configurations and admission policies registered");
    }
    *applied = Some(hash);
    Ok(())
}
