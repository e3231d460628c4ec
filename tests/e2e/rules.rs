//! Namespace rules (`Tenant.spec.rules`, Capsule v0.15) against the API server: images, QoS classes and
//! schedulers of Pods, Service types, namespace metadata (defaults, managed values, allow-lists and
//! denials), audits reported as warnings and Events, and RoleBindings distributed by selector.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::controller::bindings;
use crate::harness::{Bulkhead, Cluster, event_notes, eventually};

async fn start(cluster: &Cluster, prefix: &str) -> Bulkhead {
    let lease = cluster.unique(&format!("{prefix}-lease"));
    let bulkhead = Bulkhead::start(cluster, &["--lease-namespace", "default", "--lease-name", &lease]);
    bulkhead.wait_ready().await;
    bulkhead
}

/// Retries `args` as `who` until it succeeds (the webhook may not have seen a new Tenant yet).
async fn eventually_ok(
    cluster: &Cluster,
    who: (&str, &[&str]),
    args: &[&str],
    input: Option<&str>,
) -> String {
    eventually(Duration::from_secs(60), || async {
        let run = cluster.kubectl_as(who.0, who.1).run_with_input(args, input);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        if run.status.success() { Ok(text) } else { Err(text) }
    })
    .await
}

fn refused(cluster: &Cluster, who: (&str, &[&str]), args: &[&str], input: Option<&str>) -> String {
    let run = cluster.kubectl_as(who.0, who.1).run_with_input(args, input);
    assert!(
        !run.status.success(),
        "admitted: {} {}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stderr).into_owned()
}

/// A unique tenant, its owner, and its two namespaces `<tenant>-dev` and `<tenant>-prod`, cleaned up.
pub(crate) fn names(cluster: &Cluster, prefix: &str) -> (String, String, String, String) {
    let tenant = cluster.unique(prefix);
    let alice = cluster.unique("alice");
    let (dev, prod) = (format!("{tenant}-dev"), format!("{tenant}-prod"));
    cluster.clean_up(&["tenant", &tenant]);
    cluster.clean_up(&["namespace", &dev]);
    cluster.clean_up(&["namespace", &prod]);
    (tenant, alice, dev, prod)
}

/// A Tenant owned by `alice` with the default namespaces `dev` and `prod` (labelled `<key>: dev|prod`)
/// and these rules (YAML, indented by two).
pub(crate) fn two_namespace_tenant(names: (&str, &str, &str, &str), key: &str, rules: &str) -> String {
    let (tenant, alice, dev, prod) = names;
    format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  namespaceOptions:\n    defaultNamespaces: [{{name: {dev}, labels: {{{key}: dev}}}}, {{name: {prod}, labels: {{{key}: prod}}}}]\n  rules:{rules}"
    )
}

fn pod(ns: &str, name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  containers:\n  - name: app\n    image: {image}\n{extra}"
    )
}

#[tokio::test]
async fn workload_rules_decide_by_the_last_matching_rule_and_audits_are_reported() {
    let cluster = Cluster::start().await;
    let _bulkhead = start(&cluster, "e2e-rules-pods").await;
    let (tenant, alice, dev, prod) = names(&cluster, "e2e-rules");
    // Capsule's documented example, and a QoS rule and a Service rule.
    cluster.apply(&two_namespace_tenant(
        (&tenant, &alice, &dev, &prod),
        "env",
        r#"
  - enforce:
      action: allow
      workloads:
        registries: [{exp: "harbor/.*"}]
  - enforce:
      action: deny
      workloads:
        targets: [pod/containers, pod/volumes]
        registries: [{exp: "harbor/customer/.*"}]
  - enforce:
      action: audit
      workloads:
        registries: [{exp: "harbor/legacy/.*"}]
  - namespaceSelector:
      matchLabels: {env: prod}
    enforce:
      action: allow
      workloads:
        registries: [{exp: "harbor/customer/prod-image/.*", policy: [Always]}]
  - enforce:
      action: deny
      workloads:
        qosClasses: [BestEffort]
  - namespaceSelector:
      matchLabels: {env: dev}
    enforce:
      action: allow
      workloads:
        qosClasses: [BestEffort]
  - enforce:
      action: allow
      services:
        types: [ClusterIP]
"#,
    ));
    let me = (alice.as_str(), &["bulkhead.dev"][..]);
    let resources = "    resources: {limits: {cpu: 100m, memory: 64Mi}}\n";
    // Allowed by rules[0]; BestEffort is allowed in dev by the later rules[5].
    eventually_ok(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&pod(&dev, "ok", "harbor/team/app:1", "")),
    )
    .await;
    let err = refused(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&pod(&dev, "customer", "harbor/customer/app:1", resources)),
    );
    assert!(
        err.contains(&format!("image `harbor/customer/app:1` (pull policy IfNotPresent) of container `app` in pod `customer` is denied by rules[1] of tenant `{tenant}`")),
        "{err}"
    );
    let err = refused(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&pod(&dev, "docker", "docker.io/library/nginx:1.27", resources)),
    );
    assert!(
        err.contains("is not allowed by the rules of tenant")
            && err.contains("no allow rule matches it (rules[0] allow a list)"),
        "{err}"
    );
    // In prod the later allow wins over the deny, with the pull policy it names; BestEffort is denied.
    let always = format!("{resources}    imagePullPolicy: Always\n");
    eventually_ok(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&pod(&prod, "db", "harbor/customer/prod-image/db:1", &always)),
    )
    .await;
    let err = refused(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&pod(&prod, "lazy", "harbor/team/app:1", "")),
    );
    assert!(
        err.contains(&format!(
            "QoS class BestEffort of pod `lazy` is denied by rules[4] of tenant `{tenant}`"
        )),
        "{err}"
    );
    // An audit: admitted, the client warned, an Event on the Tenant.
    let out = eventually_ok(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&pod(&dev, "legacy", "harbor/legacy/tool:3", "")),
    )
    .await;
    let audit = format!(
        "image `harbor/legacy/tool:3` (pull policy IfNotPresent) of container `app` in pod `legacy` matches audit rule rules[2] of tenant `{tenant}`"
    );
    assert!(out.contains(&format!("Warning: {audit}")), "{out}");
    eventually(Duration::from_secs(30), || async {
        let notes = event_notes(&cluster, &tenant, "RuleAudit").await?;
        notes
            .iter()
            .any(|n| n == &audit)
            .then_some(())
            .ok_or(format!("{notes:?}"))
    })
    .await;
    // Services: ClusterIP only.
    let svc = |name: &str, kind: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {dev}}}\nspec:\n  type: {kind}\n  ports: [{{port: 80}}]\n"
        )
    };
    eventually_ok(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&svc("internal", "ClusterIP")),
    )
    .await;
    let err = refused(
        &cluster,
        me,
        &["apply", "-f", "-"],
        Some(&svc("exposed", "NodePort")),
    );
    assert!(
        err.contains(&format!(
            "type NodePort of service `exposed` is not allowed by the rules of tenant `{tenant}`"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn namespace_metadata_rules_default_manage_and_refuse() {
    let cluster = Cluster::start().await;
    let _bulkhead = start(&cluster, "e2e-rules-ns").await;
    let tenant = cluster.unique("e2e-meta");
    let alice = cluster.unique("alice");
    cluster.clean_up(&["tenant", &tenant]);
    // Capsule's quickstart: environment defaulted to dev and allowed from a list; Pod Security labels
    // managed; its enforce label defaulted outside prod.
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {tenant}}}
spec:
  owners: [{{kind: User, name: {alice}}}]
  rules:
  - audience: [{{kind: Custom, name: CapsuleUser}}]
    enforce:
      action: deny
      metadata:
      - apiGroups: [v1]
        kinds: [Namespace]
        labels:
          "openshift.io/.*":
            values: [{{exp: ".*"}}]
  - enforce:
      action: allow
      metadata:
      - apiGroups: [v1]
        kinds: [Namespace]
        labels:
          environment:
            required: true
            default: dev
            values: [{{exact: [dev, test, prod]}}]
  - enforce:
      action: allow
      metadata:
      - apiGroups: [v1]
        kinds: [Namespace]
        labels:
          pod-security.kubernetes.io/audit: {{required: true, managed: restricted}}
  - namespaceSelector:
      matchExpressions: [{{key: environment, operator: NotIn, values: [prod]}}]
    enforce:
      action: allow
      metadata:
      - apiGroups: [v1]
        kinds: [Namespace]
        labels:
          pod-security.kubernetes.io/enforce:
            required: true
            default: restricted
            values: [{{exact: [restricted, baseline]}}]
"#
    ));
    // Alice may relabel namespaces (as in the advisories): only the webhook stands between.
    let role = cluster.unique("e2e-meta-ns-labeller");
    cluster.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {role}}}\nrules: [{{apiGroups: [''], resources: [namespaces], verbs: [get, list, patch, update]}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {role}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {alice}}}]\n"
    ));
    let me = (alice.as_str(), &["bulkhead.dev"][..]);
    let ns = format!("{tenant}-a");
    cluster.clean_up(&["namespace", &ns]);
    eventually_ok(&cluster, me, &["create", "namespace", &ns], None).await;
    let labels = cluster.kubectl().ok(&[
        "get",
        "namespace",
        &ns,
        "-o",
        r#"jsonpath={.metadata.labels.environment} {.metadata.labels.pod-security\.kubernetes\.io/audit} {.metadata.labels.pod-security\.kubernetes\.io/enforce}"#,
    ]);
    assert_eq!(labels, "dev restricted restricted");
    let manifest = |name: &str, labels: &str| {
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n")
    };
    let stage = format!("{tenant}-stage");
    let err = refused(
        &cluster,
        me,
        &["create", "-f", "-"],
        Some(&manifest(&stage, "environment: stage")),
    );
    assert!(
        err.contains(&format!("label `environment=stage` of namespace `{stage}` is not allowed by the rules of tenant `{tenant}`")),
        "{err}"
    );
    let os = format!("{tenant}-os");
    let err = refused(
        &cluster,
        me,
        &["create", "-f", "-"],
        Some(&manifest(&os, "openshift.io/run-level: \"0\"")),
    );
    assert!(
        err.contains(&format!(
            "label `openshift.io/run-level=0` of namespace `{os}` is denied by rules[0] of tenant `{tenant}`"
        )),
        "{err}"
    );
    // A managed label cannot be changed, a required one not removed; prod needs no enforce default.
    let err = refused(
        &cluster,
        me,
        &[
            "label",
            "--overwrite",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/audit=privileged",
        ],
        None,
    );
    // The managed value is namespace metadata Bulkhead keeps, protected as the rest of it.
    assert!(
        err.contains(&format!("label `pod-security.kubernetes.io/audit` of namespace `{ns}` is set by Bulkhead to `restricted` for tenant `{tenant}` and cannot be changed or removed")),
        "{err}"
    );
    let err = refused(&cluster, me, &["label", "namespace", &ns, "environment-"], None);
    assert!(
        err.contains(&format!(
            "namespace `{ns}` needs the label `environment` (rules[1] of tenant `{tenant}`)"
        )),
        "{err}"
    );
    let prod = format!("{tenant}-prod");
    cluster.clean_up(&["namespace", &prod]);
    eventually_ok(
        &cluster,
        me,
        &["create", "-f", "-"],
        Some(&manifest(&prod, "environment: prod")),
    )
    .await;
    let enforce = cluster.kubectl().ok(&[
        "get",
        "namespace",
        &prod,
        "-o",
        r#"jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}"#,
    ]);
    assert_eq!(enforce, "", "the enforce default applies outside prod only");
    // The controller keeps managed values on namespaces the webhook did not see being made.
    cluster.kubectl().ok(&[
        "label",
        "--overwrite",
        "namespace",
        &prod,
        "pod-security.kubernetes.io/audit=baseline",
    ]);
    eventually(Duration::from_secs(60), || async {
        let value = cluster.kubectl().ok(&[
            "get",
            "namespace",
            &prod,
            "-o",
            r#"jsonpath={.metadata.labels.pod-security\.kubernetes\.io/audit}"#,
        ]);
        (value == "restricted").then_some(()).ok_or(value)
    })
    .await;
}

#[tokio::test]
async fn rule_bindings_follow_the_namespace_selector_with_templated_subjects() {
    let cluster = Cluster::start().await;
    let _bulkhead = start(&cluster, "e2e-rules-rb").await;
    let (tenant, alice, dev, prod) = names(&cluster, "e2e-rb");
    // Capsule's documentation (201-tenant-solar.yaml).
    cluster.apply(&two_namespace_tenant(
        (&tenant, &alice, &dev, &prod),
        "environment",
        r#"
  - namespaceSelector:
      matchExpressions: [{key: environment, operator: NotIn, values: [prod]}]
    permissions:
      bindings:
      - clusterRoleName: edit
        subjects: [{kind: Group, name: "tenant:{{ .tenant.metadata.name }}:operators"}]
  - namespaceSelector:
      matchLabels: {environment: prod}
    permissions:
      bindings:
      - clusterRoleName: view
        subjects: [{kind: Group, name: "tenant:{{ .tenant.metadata.name }}:operators"}]
"#,
    ));
    let group = format!("tenant:{tenant}:operators");
    let rule_bindings = |got: BTreeSet<(String, String, String)>| -> BTreeSet<(String, String, String)> {
        got.into_iter().filter(|(_, _, who)| *who == group).collect()
    };
    eventually(Duration::from_secs(60), || async {
        let d = rule_bindings(bindings(&cluster, &dev).await);
        let p = rule_bindings(bindings(&cluster, &prod).await);
        let want_d = BTreeSet::from([("edit".to_owned(), "Group".to_owned(), group.clone())]);
        let want_p = BTreeSet::from([("view".to_owned(), "Group".to_owned(), group.clone())]);
        (d == want_d && p == want_p)
            .then_some(())
            .ok_or(format!("dev {d:?} prod {p:?}"))
    })
    .await;
    // The operators may edit in dev, only view in prod.
    let can = |ns: &str, verb: &str| {
        cluster
            .kubectl_as("someone", &[group.as_str()])
            .run(&["auth", "can-i", verb, "configmaps", "-n", ns])
            .status
            .success()
    };
    eventually(Duration::from_secs(30), || async {
        (can(&dev, "create") && !can(&prod, "create") && can(&prod, "get"))
            .then_some(())
            .ok_or("RBAC not as the rules say".to_owned())
    })
    .await;
}
