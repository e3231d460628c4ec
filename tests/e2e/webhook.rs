//! The webhook role end to end: tenant users drive plain kubectl, the API server calls Bulkhead's
//! webhook over TLS with the CA the controller issued, and the answers reach the user.

use std::time::Duration;

use crate::harness::{Bulkhead, Cluster, Kubectl, event_notes, eventually};

/// The group tenant users belong to (the default `userGroups`).
const USERS: &str = "bulkhead.dev";

fn apply_as(k: &Kubectl, yaml: &str) -> Result<String, String> {
    with_stdin(k, "apply", yaml)
}

/// `kubectl create -f -`: for users who may create but not read (namespaces).
fn create_as(k: &Kubectl, yaml: &str) -> Result<String, String> {
    with_stdin(k, "create", yaml)
}

fn with_stdin(k: &Kubectl, verb: &str, yaml: &str) -> Result<String, String> {
    let out = k.run_with_input(&[verb, "-f", "-"], Some(yaml));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn denied(result: Result<String, String>, needle: &str) {
    match result {
        Ok(out) => panic!("allowed, expected a denial with {needle:?}: {out}"),
        Err(e) => assert!(e.contains(needle), "{e:?} does not contain {needle:?}"),
    }
}

/// Waits until the owner's RoleBinding in `ns` exists, so RBAC lets the owner act there.
async fn owner_can_act(cluster: &Cluster, ns: &str) {
    eventually(Duration::from_secs(20), || async {
        let out = cluster
            .kubectl()
            .run(&["get", "rolebindings", "-n", ns, "-o", "name"]);
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        names.contains("bulkhead-admin-").then_some(()).ok_or(names)
    })
    .await;
}

/// Creates a namespace as `k`, retrying while Bulkhead is still setting up (the provisioner binding
/// for the user group comes with the controller's first pass).
async fn create_namespace(k: &Kubectl, ns: &str) {
    k.ok_eventually(Duration::from_secs(20), &["create", "namespace", ns])
        .await;
}

/// Two tenants owned by one user each (with `owner_extra` added to the owner entry, e.g. cluster
/// roles), hostnames restricted to `*.apps.example.com` with Cluster collision scope, one namespace
/// each (`<tenant>-x`) made by its owner: kubectl as each owner, and the two namespaces.
async fn neighbours(
    cluster: &Cluster,
    (a, alice): (&str, &str),
    (b, bob): (&str, &str),
    owner_extra: &str,
) -> (Kubectl, Kubectl, String, String) {
    let tenant = |t: &str, owner: &str| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {owner}{owner_extra}}}]\n  ingressOptions:\n    hostnameCollisionScope: Cluster\n    allowedHostnames: {{allowedRegex: '^.*\\.apps\\.example\\.com$'}}\n"
        )
    };
    cluster.apply(&format!("{}---\n{}", tenant(a, alice), tenant(b, bob)));
    let (ka, kb) = (
        cluster.kubectl_as(alice, &[USERS]),
        cluster.kubectl_as(bob, &[USERS]),
    );
    let (ns_a, ns_b) = (format!("{a}-x"), format!("{b}-x"));
    cluster.clean_up(&["namespace", &ns_a]);
    cluster.clean_up(&["namespace", &ns_b]);
    create_namespace(&ka, &ns_a).await;
    create_namespace(&kb, &ns_b).await;
    owner_can_act(cluster, &ns_a).await;
    owner_can_act(cluster, &ns_b).await;
    (ka, kb, ns_a, ns_b)
}

async fn start(cluster: &Cluster) -> Bulkhead {
    let lease = cluster.unique("e2e-wh-lease");
    let bulkhead = Bulkhead::start(cluster, &["--lease-namespace", "default", "--lease-name", &lease]);
    bulkhead.wait_ready().await;
    bulkhead
}

#[tokio::test]
async fn owners_create_namespaces_in_their_tenant_and_the_rules_hold() {
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-wh");
    let other = cluster.unique("e2e-wh-other");
    let alice = cluster.unique("alice");
    let bulkhead = start(&cluster).await;
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  forceTenantPrefix: true\n  namespaceOptions: {{quota: 2, forbiddenLabels: {{denied: [team]}}}}\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {other}}}\nspec:\n  owners: [{{kind: User, name: someone-else}}]\n"
    ));
    let k = cluster.kubectl_as(&alice, &[USERS]);
    let one = format!("{t}-one");
    cluster.clean_up(&["namespace", &one]);
    // The provisioner binding for the user group may take a moment after the controller starts.
    create_namespace(&k, &one).await;
    let got = cluster.kubectl().ok(&[
        "get",
        "namespace",
        &one,
        "-o",
        "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}|{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}|{.metadata.ownerReferences[0].controller}",
    ]);
    assert_eq!(got, format!("{t}|Tenant/{t}|true"));

    // Prefix, forbidden labels, quota, and a user without a tenant.
    let wrong = k.fails(&["create", "namespace", &cluster.unique("noprefix")]);
    assert!(
        wrong.contains(&format!(
            "must be named `{t}-<name>`: tenant `{t}` requires its prefix"
        )),
        "{wrong}"
    );
    denied(
        create_as(
            &k,
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {t}-x, labels: {{team: a}}}}\n"),
        ),
        &format!("label `team` is forbidden on the namespaces of tenant `{t}`"),
    );
    let two = format!("{t}-two");
    cluster.clean_up(&["namespace", &two]);
    k.ok(&["create", "namespace", &two]);
    eventually(Duration::from_secs(10), || async {
        let out = k.run(&["create", "namespace", &format!("{t}-three")]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.contains(&format!(
            "is over the namespace quota of tenant `{t}`: it has 2 of 2 namespaces"
        ))
        .then_some(())
        .ok_or(err)
    })
    .await;
    let nobody = cluster.kubectl_as(&cluster.unique("mallory"), &[USERS]);
    let err = nobody.fails(&["create", "namespace", &cluster.unique("m")]);
    assert!(err.contains("no tenant assigned to you"), "{err}");

    // The Tenant records denials as Events, one reason per check family (repeats of one reason fold
    // into the first one's series, as Kubernetes aggregates Events).
    eventually(Duration::from_secs(10), || async {
        let notes = event_notes(&cluster, &t, "NamespaceDenied").await?;
        notes
            .iter()
            .any(|n| n.contains("requires its prefix"))
            .then_some(())
            .ok_or_else(|| format!("no Denied event on the tenant yet: {notes:?}"))
    })
    .await;
    let denials = bulkhead
        .metric(
            r#"bulkhead_admission_requests_total{allowed="false",operation="CREATE",webhook="namespaces"}"#,
        )
        .unwrap_or(0.0);
    assert!(denials >= 3.0, "{denials}");
}

#[tokio::test]
async fn every_advisory_scenario_is_denied_and_administrators_keep_control() {
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-cve");
    let other = cluster.unique("e2e-cve-other");
    let alice = cluster.unique("alice");
    let _bulkhead = start(&cluster).await;
    // Alice may patch namespaces cluster-wide (as in the advisories): only the webhook stands between.
    let role = cluster.unique("e2e-ns-patcher");
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {other}}}\nspec:\n  owners: [{{kind: User, name: {alice}-not}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {role}}}\nrules: [{{apiGroups: [''], resources: [namespaces, namespaces/status, namespaces/finalize], verbs: [get, list, patch, update]}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {role}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\nsubjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {alice}}}]\n"
    ));
    let ns = format!("{t}-app");
    let free = cluster.unique("e2e-unmanaged");
    cluster.clean_up(&["namespace", &ns]);
    cluster.clean_up(&["namespace", &free]);
    cluster.kubectl().ok(&["create", "namespace", &free]);
    let k = cluster.kubectl_as(&alice, &[USERS]);
    create_namespace(&k, &ns).await;

    // CVE-2022-46167: removing the ownerReference.
    let err = k.fails(&[
        "patch",
        "namespace",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/ownerReferences"}]"#,
    ]);
    assert!(
        err.contains(&format!(
            "the ownerReference of namespace `{ns}` to its Tenant `{t}` cannot be added, changed or removed"
        )),
        "{err}"
    );
    // CVE-2024-39690: patching an unmanaged namespace into a tenant.
    let label = format!("bulkhead.dev/tenant={t}");
    let err = k.fails(&["label", "namespace", &free, &label]);
    assert!(
        err.contains(&format!(
            "namespace `{free}` is not part of a tenant and cannot be moved into tenant `{t}`"
        )),
        "{err}"
    );
    // CVE-2025-55205: moving the namespace to another tenant by its label, or removing the label.
    let err = k.fails(&[
        "label",
        "namespace",
        &ns,
        &format!("bulkhead.dev/tenant={other}"),
        "--overwrite",
    ]);
    assert!(
        err.contains(&format!("cannot be moved to tenant `{other}`")),
        "{err}"
    );
    let err = k.fails(&["label", "namespace", &ns, "bulkhead.dev/tenant-"]);
    assert!(err.contains("cannot be removed"), "{err}");
    // CVE-2026-30963: the same through the status and finalize subresources.
    let move_label = format!(r#"{{"metadata":{{"labels":{{"bulkhead.dev/tenant":"{other}"}}}}}}"#);
    let err = k.fails(&[
        "patch",
        "namespace",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &move_label,
    ]);
    assert!(err.contains("(through `status`)"), "{err}");
    let current = cluster.kubectl().ok(&["get", "namespace", &ns, "-o", "json"]);
    let mut moved: serde_json::Value = serde_json::from_str(&current).unwrap();
    moved["metadata"]["labels"]["bulkhead.dev/tenant"] = serde_json::json!(other);
    let out = k.run_with_input(
        &[
            "replace",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/finalize"),
            "-f",
            "-",
        ],
        Some(&moved.to_string()),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && err.contains("(through `finalize`)"),
        "{err}"
    );
    let unmanaged = cluster.kubectl().ok(&["get", "namespace", &free, "-o", "json"]);
    let mut into: serde_json::Value = serde_json::from_str(&unmanaged).unwrap();
    into["metadata"]["labels"]["bulkhead.dev/tenant"] = serde_json::json!(t);
    let out = k.run_with_input(
        &[
            "replace",
            "--raw",
            &format!("/api/v1/namespaces/{free}/finalize"),
            "-f",
            "-",
        ],
        Some(&into.to_string()),
    );
    assert!(
        !out.status.success(),
        "finalize moved an unmanaged namespace into a tenant"
    );

    // Nothing moved.
    let got = cluster.kubectl().ok(&[
        "get",
        "namespace",
        &ns,
        "-o",
        "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}|{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(got, format!("{t}|{t}"));
    // Harmless changes by the owner still pass; the administrator can still manage namespaces.
    k.ok(&["label", "namespace", &ns, "app=web"]);
    cluster.kubectl().ok(&["label", "namespace", &free, &label]);
    cluster
        .kubectl()
        .ok(&["label", "namespace", &free, "bulkhead.dev/tenant-"]);
}

#[tokio::test]
async fn workloads_follow_the_tenants_rules_with_defaults_injected() {
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-wl");
    let alice = cluster.unique("alice");
    let _bulkhead = start(&cluster).await;
    let host = format!("{t}.apps.example.com");
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {t}}}
spec:
  owners: [{{kind: User, name: {alice}}}]
  containerRegistries: {{allowed: [quay.io]}}
  priorityClasses: {{allowed: [tenant-high]}}
  storageClasses: {{allowed: [silver], default: silver}}
  serviceOptions:
    allowedServices: {{nodePort: false}}
    additionalMetadata: {{labels: {{stamped-by: bulkhead}}}}
  podOptions:
    additionalMetadata: {{labels: {{tenant-pod: "yes"}}}}
  ingressOptions:
    allowedClasses: {{allowed: [nginx]}}
    allowedHostnames: {{allowedRegex: '^.*\.apps\.example\.com$'}}
    hostnameCollisionScope: Tenant
"#
    ));
    let k = cluster.kubectl_as(&alice, &[USERS]);
    let ns = format!("{t}-a");
    let ns2 = format!("{t}-b");
    cluster.clean_up(&["namespace", &ns]);
    cluster.clean_up(&["namespace", &ns2]);
    create_namespace(&k, &ns).await;
    k.ok(&["create", "namespace", &ns2]);
    owner_can_act(&cluster, &ns).await;
    owner_can_act(&cluster, &ns2).await;

    // Pods: registries and priority classes; metadata stamped.
    let err = k.fails(&[
        "run",
        "miner",
        "-n",
        &ns,
        "--image=ghcr.io/evil/miner:1",
        "--restart=Never",
    ]);
    assert!(err.contains(&format!("registry `ghcr.io` of image `ghcr.io/evil/miner:1` (container `miner` in pod `miner`) is not allowed in tenant `{t}`: allowed are `quay.io`")), "{err}");
    k.ok(&[
        "run",
        "web",
        "-n",
        &ns,
        "--image=quay.io/org/web:1.0",
        "--restart=Never",
    ]);
    let labels = cluster.kubectl().ok(&[
        "get",
        "pod",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.labels.tenant-pod}",
    ]);
    assert_eq!(labels, "yes");
    denied(
        apply_as(
            &k,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: vip, namespace: {ns}}}\nspec:\n  priorityClassName: system-cluster-critical\n  containers: [{{name: a, image: quay.io/a/b:1}}]\n"
            ),
        ),
        "priority class `system-cluster-critical` of pod `vip` is not allowed",
    );

    // Services.
    let err = k.fails(&["create", "service", "nodeport", "np", "-n", &ns, "--tcp=80:80"]);
    assert!(
        err.contains("service `np` of type `NodePort` is not allowed"),
        "{err}"
    );
    k.ok(&["create", "service", "clusterip", "web", "-n", &ns, "--tcp=80:80"]);
    let stamped = cluster.kubectl().ok(&[
        "get",
        "service",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.labels.stamped-by}",
    ]);
    assert_eq!(stamped, "bulkhead");

    // Claims: the default class is injected; another class is refused.
    apply_as(&k, &format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n")).unwrap();
    let class = cluster.kubectl().ok(&[
        "get",
        "pvc",
        "data",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.storageClassName}",
    ]);
    assert_eq!(class, "silver");
    denied(
        apply_as(
            &k,
            &format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: gold, namespace: {ns}}}\nspec:\n  storageClassName: gold\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
            ),
        ),
        &format!(
            "storage class `gold` of persistent volume claim `gold` is not allowed in tenant `{t}`: allowed are `silver`"
        ),
    );

    // Ingresses: class, hostnames, wildcards, collisions within the tenant.
    let ingress = |name: &str, ns: &str, class: &str, host: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ingressClassName: {class}\n  rules:\n  - host: '{host}'\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        )
    };
    denied(
        apply_as(&k, &ingress("bad-class", &ns, "traefik", &host)),
        "ingress class `traefik` of ingress `bad-class` is not allowed",
    );
    denied(
        apply_as(&k, &ingress("bad-host", &ns, "nginx", "evil.com")),
        "hostname `evil.com` of ingress `bad-host` is not allowed",
    );
    denied(
        apply_as(&k, &ingress("wild", &ns, "nginx", "*.apps.example.com")),
        "wildcard hostname `*.apps.example.com` of ingress `wild` is not allowed",
    );
    apply_as(&k, &ingress("web", &ns, "nginx", &host)).unwrap();
    eventually(Duration::from_secs(10), || async {
        match apply_as(&k, &ingress("copy", &ns2, "nginx", &host)) {
            Err(e) if e.contains(&format!("host `{host}` with path `/` of ingress `copy` is already served by ingress `{ns}/web` (Tenant scope)")) => Ok(()),
            Err(e) => Err(e),
            Ok(out) => {
                let _ = cluster.kubectl().run(&["delete", "ingress", "copy", "-n", &ns2]);
                Err(format!("the colliding ingress was admitted (cache not caught up?): {out}"))
            }
        }
    })
    .await;
}

#[tokio::test]
async fn tenants_are_validated_at_the_door() {
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-badtenant");
    cluster.clean_up(&["tenant", &t]);
    let refused = |spec: &str| {
        let out = cluster.kubectl().run_with_input(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: a}}]\n{spec}"
            )),
        );
        assert!(!out.status.success(), "an invalid Tenant was admitted: {spec}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // What CEL can say, the API server says itself (the CRD's validation rules), Bulkhead running or
    // not: here it has not started yet.
    let err = refused("  containerRegistries: {allowedRegex: '(unclosed'}\n");
    assert!(
        err.contains("spec.containerRegistries.allowedRegex: Invalid value: \"string\": ")
            && err.contains("evaluating rule: must be a regular expression that compiles (RE2 syntax)"),
        "{err}"
    );
    let err = refused(
        "  namespaceOptions: {additionalMetadataList: [{namespaceSelector: {matchExpressions: [{key: a, operator: In}]}}]}\n",
    );
    assert!(
        err.contains("spec.namespaceOptions.additionalMetadataList[0].namespaceSelector.matchExpressions[0]: Invalid value: values must be non-empty when operator is In or NotIn"),
        "{err}"
    );
    let _bulkhead = start(&cluster).await;
    // The webhook keeps what CEL on a 1.28 API server cannot say (IP ranges).
    let err = refused("  serviceOptions: {externalIPs: {allowed: ['10.0.0.0/33']}}\n");
    assert!(
        err.contains(&format!("tenant `{t}` is invalid: serviceOptions.externalIPs.allowed: `10.0.0.0/33` is not an IP address or CIDR")),
        "{err}"
    );
    cluster.apply(&format!("apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  preventDeletion: true\n"));
    let err = cluster.kubectl().fails(&["delete", "tenant", &t]);
    assert!(
        err.contains(&format!("tenant `{t}` has preventDeletion set")),
        "{err}"
    );
    cluster.kubectl().ok(&[
        "patch",
        "tenant",
        &t,
        "--type=merge",
        "-p",
        r#"{"spec":{"preventDeletion":false}}"#,
    ]);
}

#[tokio::test]
async fn protected_names_are_refused_to_tenant_users_and_not_to_administrators() {
    let cluster = Cluster::start().await;
    // The configuration is cluster-wide: on a cluster that already has one, leave it alone.
    if cluster.has_configuration() {
        return;
    }
    let t = cluster.unique("e2e-prot");
    let alice = cluster.unique("alice");
    let prefix = cluster.unique("locked");
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: BulkheadConfiguration\nmetadata: {{name: default}}\nspec:\n  userGroups: [{USERS}]\n  protectedNamespaceRegex: '^{prefix}-'\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n"
    ));
    let _bulkhead = start(&cluster).await;
    let k = cluster.kubectl_as(&alice, &[USERS]);
    let mine = format!("{t}-ok");
    cluster.clean_up(&["namespace", &mine]);
    create_namespace(&k, &mine).await;
    let locked = format!("{prefix}-x");
    let err = k.fails(&["create", "namespace", &locked]);
    assert!(
        err.contains(&format!(
            "namespace name `{locked}` is protected: it matches `^{prefix}-`"
        )),
        "{err}"
    );
    cluster.clean_up(&["namespace", &locked]);
    cluster.kubectl().ok(&["create", "namespace", &locked]);
}

/// #16: a rule holds on every field that means the same thing, on update as well as create, and on the
/// subresources that change what it guards.
#[tokio::test]
async fn the_same_meaning_through_another_field_an_update_or_a_subresource_is_denied() {
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-alias");
    let alice = cluster.unique("alice");
    let _bulkhead = start(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {t}}}
spec:
  owners: [{{kind: User, name: {alice}}}]
  storageClasses: {{allowed: [silver]}}
  ingressOptions:
    allowedClasses: {{allowed: [nginx]}}
    allowedHostnames: {{allowed: [{t}.example.com]}}
"#
    ));
    let k = cluster.kubectl_as(&alice, &[USERS]);
    let ns = format!("{t}-a");
    cluster.clean_up(&["namespace", &ns]);
    create_namespace(&k, &ns).await;
    owner_can_act(&cluster, &ns).await;

    // Storage class: the older annotation, on create and added later.
    let claim = |name: &str, annotations: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}, annotations: {{{annotations}}}}}\nspec:\n  storageClassName: silver\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
        )
    };
    denied(
        create_as(
            &k,
            &claim("gold", "volume.beta.kubernetes.io/storage-class: gold"),
        ),
        &format!("storage class `gold` of persistent volume claim `gold` is not allowed in tenant `{t}`"),
    );
    create_as(&k, &claim("data", "")).unwrap();
    let err = k.fails(&[
        "annotate",
        "pvc",
        "data",
        "-n",
        &ns,
        "volume.beta.kubernetes.io/storage-class=gold",
    ]);
    assert!(
        err.contains("storage class `gold` of persistent volume claim `data`"),
        "{err}"
    );
    let kept = cluster.kubectl().ok(&[
        "get",
        "pvc",
        "data",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!kept.contains("gold"), "{kept}");

    // Ingress: a rule with no host, a default backend, and the class annotation added beside the field.
    let ingress = |name: &str, host: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ingressClassName: nginx\n  rules:\n  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}\n"
        )
    };
    denied(
        create_as(&k, &ingress("everything", "")),
        &format!(
            "ingress `everything` has a rule with no host, which serves every hostname: tenant `{t}` allows only hostnames `{t}.example.com`"
        ),
    );
    create_as(&k, &ingress("web", &format!("{t}.example.com"))).unwrap();
    let err = k.fails(&[
        "annotate",
        "ingress",
        "web",
        "-n",
        &ns,
        "kubernetes.io/ingress.class=traefik",
    ]);
    assert!(
        err.contains("ingress class `traefik` of ingress `web` is not allowed"),
        "{err}"
    );
    let err = k.fails(&[
        "patch",
        "ingress",
        "web",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"defaultBackend":{"service":{"name":"web","port":{"number":80}}}}}"#,
    ]);
    assert!(
        err.contains("has a default backend, which serves every hostname"),
        "{err}"
    );

    // Cordoned: subresource writes are writes.
    k.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        &ns,
        "--image=quay.io/org/web:1",
    ]);
    cluster.kubectl().ok(&[
        "patch",
        "tenant",
        &t,
        "--type=merge",
        "-p",
        r#"{"spec":{"cordoned":true}}"#,
    ]);
    eventually(Duration::from_secs(10), || async {
        let out = k.run(&["label", "deployment", "web", "-n", &ns, "frozen=no"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.contains("is cordoned").then_some(()).ok_or(err)
    })
    .await;
    if cluster.is_testkit() {
        eprintln!("not run on the testkit: deployments/scale (it serves no scale subresource)");
        return;
    }
    let err = k.fails(&["scale", "deployment", "web", "-n", &ns, "--replicas=5"]);
    assert!(
        err.contains(&format!(
            "the scale of `web` cannot be changed: tenant `{t}` is cordoned"
        )),
        "{err}"
    );
    let replicas = cluster.kubectl().ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "1");
}

/// Node isolation without the PodNodeSelector admission plugin (managed clusters do not allow it; the
/// suite's control plane runs without it): the webhook puts the tenant's node selector on every pod,
/// refuses pods asking for other values of those labels, and refuses placing a pod by name (its
/// `spec.nodeName`, `pods/binding`, or the older `bindings` resource) on a node outside the selector.
#[tokio::test]
async fn pods_run_only_on_the_tenants_nodes_without_the_pod_node_selector_plugin() {
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-nodes");
    let alice = cluster.unique("alice");
    let _bulkhead = start(&cluster).await;
    let (inside, outside) = (format!("{t}-in"), format!("{t}-out"));
    cluster.clean_up(&["node", &inside]);
    cluster.clean_up(&["node", &outside]);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {inside}, labels: {{pool: {t}}}}}\n---\napiVersion: v1\nkind: Node\nmetadata: {{name: {outside}, labels: {{pool: shared}}}}\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  nodeSelector: {{pool: {t}}}\n"
    ));
    let k = cluster.kubectl_as(&alice, &[USERS]);
    let ns = format!("{t}-a");
    cluster.clean_up(&["namespace", &ns]);
    // Pods placed on a node wait for its kubelet to confirm their deletion, and there is none: they
    // are deleted at once (before the namespace, which would wait for them for ever).
    cluster.clean_up(&["pods", "--all", "-n", &ns, "--grace-period=0", "--force"]);
    create_namespace(&k, &ns).await;
    owner_can_act(&cluster, &ns).await;
    let admin = cluster.kubectl();

    // The selector is set on the pod itself.
    k.ok(&[
        "run",
        "web",
        "-n",
        &ns,
        "--image=quay.io/org/web:1",
        "--restart=Never",
    ]);
    let selector = admin.ok(&[
        "get",
        "pod",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.nodeSelector}",
    ]);
    assert_eq!(selector, format!("{{\"pool\":\"{t}\"}}"));
    let wanted = format!("tenant `{t}` runs its pods only on nodes labelled `pool={t}`");
    let pod = |name: &str, spec: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}  containers: [{{name: a, image: quay.io/a/b:1}}]\n"
        )
    };
    denied(
        apply_as(&k, &pod("shared", "  nodeSelector: {pool: shared}\n")),
        &format!("pod `shared` asks for node label `pool=shared` in its nodeSelector: {wanted}"),
    );
    denied(
        apply_as(
            &k,
            &pod(
                "affine",
                "  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [shared]}]}]}}}\n",
            ),
        ),
        &format!(
            "pod `affine` asks for node label `pool` In `shared` in its required node affinity: {wanted}"
        ),
    );
    // Named nodes skip the scheduler: the webhook reads the node's labels from its cache.
    eventually(Duration::from_secs(20), || async {
        match apply_as(&k, &pod("pinned", &format!("  nodeName: {outside}\n"))) {
            Err(e)
                if e.contains(&format!(
                    "pod `pinned` cannot be placed on node `{outside}`, which has `pool=shared`: {wanted}"
                )) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
            Ok(out) => panic!("a pod was placed by name on a node outside the tenant's: {out}"),
        }
    })
    .await;
    apply_as(&k, &pod("inside", &format!("  nodeName: {inside}\n"))).unwrap();

    // Bindings bind every caller, an administrator too, through both resources.
    let binding = |pod: &str, node: &str| {
        format!(
            "{{\"apiVersion\": \"v1\", \"kind\": \"Binding\", \"metadata\": {{\"name\": \"{pod}\"}}, \"target\": {{\"kind\": \"Node\", \"name\": \"{node}\"}}}}"
        )
    };
    let subresource = format!("/api/v1/namespaces/{ns}/pods/web/binding");
    let legacy = format!("/api/v1/namespaces/{ns}/bindings");
    for path in [&subresource, &legacy] {
        let out = admin.run_with_input(
            &["create", "--raw", path, "-f", "-"],
            Some(&binding("web", &outside)),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "bound through {path} to a node outside the tenant's"
        );
        assert!(
            err.contains(&format!(
                "pod `web` cannot be placed on node `{outside}`, which has `pool=shared`"
            )),
            "{path}: {err}"
        );
    }
    let placed = admin.ok(&["get", "pod", "web", "-n", &ns, "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(placed, "", "a refused binding left the pod placed");
    let out = admin.run_with_input(
        &["create", "--raw", &subresource, "-f", "-"],
        Some(&binding("web", &inside)),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let placed = admin.ok(&["get", "pod", "web", "-n", &ns, "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(placed, inside);
}

/// External DNS serves the whole cluster and publishes names from Ingress rules and from the
/// `external-dns.alpha.kubernetes.io/hostname` (and `internal-hostname`) annotations of Services and
/// Ingresses: the hostname rules and the collision check cover all of them, on create and update.
#[tokio::test]
async fn a_tenant_cannot_take_another_tenants_dns_name_through_an_annotation() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.unique("e2e-dns-a"), cluster.unique("e2e-dns-b"));
    let (alice, bob) = (cluster.unique("alice"), cluster.unique("bob"));
    let _bulkhead = start(&cluster).await;
    let (ka, kb, ns_a, ns_b) = neighbours(&cluster, (&a, &alice), (&b, &bob), "").await;

    let shop = format!("shop-{a}.apps.example.com");
    apply_as(
        &ka,
        &format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: shop, namespace: {ns_a}}}\nspec:\n  rules:\n  - host: {shop}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        ),
    )
    .unwrap();
    let service = |ns: &str, name: &str, key: &str, value: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{external-dns.alpha.kubernetes.io/{key}: '{value}'}}\nspec:\n  ports: [{{port: 80}}]\n"
        )
    };
    // The Ingress's host, in another tenant's annotation, written as DNS reads it (case, final dot).
    let upper = format!("{}.", shop.to_uppercase());
    eventually(Duration::from_secs(20), || async {
        match apply_as(&kb, &service(&ns_b, "lb", "hostname", &upper)) {
            Err(e) if e.contains(&format!("host `{shop}` (an External DNS name) of service `lb` is already served by ingress `{ns_a}/shop` (Cluster scope)")) => Ok(()),
            Err(e) => Err(e),
            Ok(out) => {
                let _ = cluster.kubectl().run(&["delete", "service", "lb", "-n", &ns_b]);
                Err(format!("the annotation took another tenant's name (cache not caught up?): {out}"))
            }
        }
    })
    .await;
    denied(
        apply_as(&kb, &service(&ns_b, "db", "internal-hostname", "db.bank.com")),
        &format!(
            "hostname `db.bank.com` in annotation `external-dns.alpha.kubernetes.io/internal-hostname` of service `db` is not allowed in tenant `{b}`"
        ),
    );
    // An update is judged as a create is.
    let api = format!("api-{b}.apps.example.com");
    apply_as(&kb, &service(&ns_b, "api", "hostname", &api)).unwrap();
    denied(
        apply_as(&kb, &service(&ns_b, "api", "hostname", &format!("{api}, {shop}"))),
        &format!(
            "host `{shop}` (an External DNS name) of service `api` is already served by ingress `{ns_a}/shop`"
        ),
    );
    let kept = cluster.kubectl().ok(&[
        "get",
        "service",
        "api",
        "-n",
        &ns_b,
        "-o",
        "jsonpath={.metadata.annotations.external-dns\\.alpha\\.kubernetes\\.io/hostname}",
    ]);
    assert_eq!(kept, api, "the refused update changed the annotation");
    // The Service's annotated name is taken for the first tenant's Ingresses too.
    eventually(Duration::from_secs(20), || async {
        match apply_as(
            &ka,
            &format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: api, namespace: {ns_a}}}\nspec:\n  rules:\n  - host: {api}\n    http:\n      paths:\n      - {{path: /v1, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
            ),
        ) {
            Err(e) if e.contains(&format!("host `{api}` with path `/v1` of ingress `api` is already served by service `{ns_b}/api` (Cluster scope)")) => Ok(()),
            Err(e) => Err(e),
            Ok(out) => {
                let _ = cluster.kubectl().run(&["delete", "ingress", "api", "-n", &ns_a]);
                Err(format!("admitted: {out}"))
            }
        }
    })
    .await;
}

/// The API server's audit log tells which tenant did what: every answer of the webhook carries
/// `auditAnnotations` (tenant, check, decision), which the API server writes under the webhook's name.
/// On the real run the test has a control plane of its own with an audit policy (level Metadata) and
/// log file; the testkit keeps the same events in memory.
#[tokio::test]
async fn the_audit_log_names_the_tenant_and_the_check_of_every_answer() {
    use bulkhead_testkit::controlplane;
    let logs = tempfile::tempdir().expect("a directory for the audit log");
    let log = logs.path().join("audit.log");
    let own = if std::env::var_os(crate::harness::KUBECONFIG_ENV).is_some() {
        let bin = controlplane::bin_dir();
        if !controlplane::binaries_present(&bin) {
            eprintln!(
                "not run: an audit log needs a control plane of this test's own, and no built one is at {}",
                bin.display()
            );
            return;
        }
        let policy = logs.path().join("policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )
        .expect("the audit policy is written");
        let flags = [
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", log.display()),
            "--audit-log-mode=blocking".to_owned(),
        ];
        Some(controlplane::ControlPlane::start_with(&bin, &flags).expect("a control plane of its own starts"))
    } else {
        None
    };
    let cluster = match &own {
        Some(plane) => Cluster::at(plane.kubeconfig().to_owned()).await,
        None => Cluster::start().await,
    };
    let events = || -> Vec<serde_json::Value> {
        match cluster.testkit() {
            Some(server) => server.audit_events(),
            None => std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }
    };
    let t = cluster.unique("e2e-audit");
    let alice = cluster.unique("alice");
    let _bulkhead = start(&cluster).await;
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  containerRegistries: {{allowed: [quay.io]}}\n"
    ));
    let k = cluster.kubectl_as(&alice, &[USERS]);
    let ns = format!("{t}-a");
    cluster.clean_up(&["namespace", &ns]);
    create_namespace(&k, &ns).await;
    owner_can_act(&cluster, &ns).await;
    k.fails(&[
        "run",
        "miner",
        "-n",
        &ns,
        "--image=ghcr.io/evil/miner:1",
        "--restart=Never",
    ]);
    k.ok(&[
        "run",
        "web",
        "-n",
        &ns,
        "--image=quay.io/org/web:1",
        "--restart=Never",
    ]);

    // The event of each request, by resource, name and the annotation key it must carry.
    let find = |resource: &str, name: &str, key: &str| -> Result<serde_json::Value, String> {
        events()
            .into_iter()
            .find(|e| {
                e["verb"] == "create"
                    && e["objectRef"]["resource"] == resource
                    && e["objectRef"]["name"] == name
                    && e["annotations"].get(key).is_some()
            })
            .ok_or_else(|| format!("no audit event of {resource}/{name} with {key}"))
    };
    let namespace = eventually(Duration::from_secs(20), || async {
        find("namespaces", &ns, "namespaces.mutate.bulkhead.dev/tenant")
    })
    .await;
    let a = &namespace["annotations"];
    assert_eq!(
        a["namespaces.mutate.bulkhead.dev/tenant"],
        t.as_str(),
        "{namespace}"
    );
    assert_eq!(
        a["namespaces.mutate.bulkhead.dev/check"], "namespaces",
        "{namespace}"
    );
    assert_eq!(
        a["namespaces.validate.bulkhead.dev/tenant"],
        t.as_str(),
        "{namespace}"
    );
    // kubectl_as impersonates: the real log names the administrator as `user` and alice as
    // `impersonatedUser`; the testkit records the user after impersonation.
    let who = namespace["impersonatedUser"]["username"]
        .as_str()
        .or(namespace["user"]["username"].as_str());
    assert_eq!(who, Some(alice.as_str()), "{namespace}");
    // The mutating call already refuses it; no validating call follows a refusal.
    let miner = eventually(Duration::from_secs(20), || async {
        find("pods", "miner", "pods.mutate.bulkhead.dev/decision")
    })
    .await;
    let a = &miner["annotations"];
    assert_eq!(a["pods.mutate.bulkhead.dev/decision"], "denied", "{miner}");
    assert_eq!(a["pods.mutate.bulkhead.dev/tenant"], t.as_str(), "{miner}");
    assert_eq!(a["pods.mutate.bulkhead.dev/check"], "pods", "{miner}");
    assert!(a.get("pods.validate.bulkhead.dev/decision").is_none(), "{miner}");
    assert_eq!(miner["responseStatus"]["code"], 403, "{miner}");
    let web = eventually(Duration::from_secs(20), || async {
        find("pods", "web", "pods.validate.bulkhead.dev/decision")
    })
    .await;
    let a = &web["annotations"];
    assert_eq!(a["pods.mutate.bulkhead.dev/decision"], "allowed", "{web}");
    assert_eq!(a["pods.validate.bulkhead.dev/decision"], "allowed", "{web}");
    assert_eq!(a["pods.validate.bulkhead.dev/tenant"], t.as_str(), "{web}");
}

/// #15.2: Gateway API route hostnames (HTTPRoute, GRPCRoute, TLSRoute), which External DNS publishes,
/// follow the tenant's hostname rules and collide with Ingress hosts and annotated names, both ways.
#[tokio::test]
async fn gateway_route_hostnames_follow_the_hostname_rules_and_take_no_other_tenants_name() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.unique("e2e-gw-a"), cluster.unique("e2e-gw-b"));
    let (alice, bob) = (cluster.unique("alice"), cluster.unique("bob"));
    // Tenant owners' `admin` role knows nothing of routes: a role for them, bound by the Tenant.
    let routes_role = cluster.unique("e2e-gw-routes");
    cluster.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {routes_role}}}\nrules:\n- apiGroups: [gateway.networking.k8s.io]\n  resources: [httproutes, grpcroutes, tlsroutes]\n  verbs: ['*']\n"
    ));
    // Gateway API installed while Bulkhead runs (on a cluster that has it already, it was there at the
    // start): the routes made from then on count for collisions without a restart.
    let lease = cluster.unique("e2e-gw-lease");
    // Strict RBAC: the chart lets Bulkhead bind only the roles it lists, so the routes role is added.
    let bindable = format!(
        r#"configuration.bindableClusterRoles=["admin","bulkhead-namespace-deleter","{routes_role}"]"#
    );
    let bulkhead = Bulkhead::start_with_chart(
        &cluster,
        &[
            "--lease-namespace",
            "default",
            "--lease-name",
            &lease,
            "--gateway-discovery-interval",
            "1s",
        ],
        &[&bindable],
    );
    bulkhead.wait_ready().await;
    cluster.install_gateway_routes();
    let roles = format!(", clusterRoles: [admin, {routes_role}]");
    let (ka, kb, ns_a, ns_b) = neighbours(&cluster, (&a, &alice), (&b, &bob), &roles).await;
    let http = |ns: &str, name: &str, hostnames: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: shared-gateway, namespace: infra}}]\n  hostnames: {hostnames}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /shop}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
        )
    };

    // Allowed names are admitted (once the route RoleBinding has reached the owner).
    let shop = format!("shop-{a}.apps.example.com");
    eventually(Duration::from_secs(30), || async {
        apply_as(&ka, &http(&ns_a, "shop", &format!("['{shop}']")))
    })
    .await;
    // A name outside the tenant's, a wildcard, and no name at all are refused, on update as well.
    denied(
        apply_as(&ka, &http(&ns_a, "shop", &format!("['{shop}', 'www.bank.com']"))),
        &format!("hostname `www.bank.com` of httproute `shop` is not allowed in tenant `{a}`"),
    );
    denied(
        apply_as(&ka, &http(&ns_a, "wild", "['*.apps.example.com']")),
        &format!("wildcard hostname `*.apps.example.com` of httproute `wild` is not allowed in tenant `{a}`"),
    );
    denied(
        apply_as(&ka, &http(&ns_a, "any", "[]")),
        &format!(
            "httproute `any` names no hostname, which serves every hostname its listeners accept: tenant `{a}` allows only hostnames"
        ),
    );
    let kept = cluster.kubectl().ok(&[
        "get",
        "httproute",
        "shop",
        "-n",
        &ns_a,
        "-o",
        "jsonpath={.spec.hostnames}",
    ]);
    assert_eq!(
        kept,
        format!("[\"{shop}\"]"),
        "the refused update changed the route"
    );

    // The route's name is taken: for another tenant's route, Ingress, annotated Service and TLSRoute.
    eventually(Duration::from_secs(20), || async {
        match apply_as(&kb, &http(&ns_b, "copy", &format!("['{shop}']"))) {
            Err(e) if e.contains(&format!("host `{shop}` with path `/shop` of httproute `copy` is already served by httproute `{ns_a}/shop` (Cluster scope)")) => Ok(()),
            Err(e) => Err(e),
            Ok(out) => {
                let _ = cluster.kubectl().run(&["delete", "httproute", "copy", "-n", &ns_b]);
                Err(format!("another tenant took the route's name (cache not caught up?): {out}"))
            }
        }
    })
    .await;
    denied(
        apply_as(
            &kb,
            &format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: shop, namespace: {ns_b}}}\nspec:\n  rules:\n  - host: {shop}\n    http:\n      paths:\n      - {{path: /shop, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
            ),
        ),
        &format!(
            "host `{shop}` with path `/shop` of ingress `shop` is already served by httproute `{ns_a}/shop`"
        ),
    );
    denied(
        apply_as(
            &kb,
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb\n  namespace: {ns_b}\n  annotations: {{external-dns.alpha.kubernetes.io/hostname: '{shop}'}}\nspec:\n  ports: [{{port: 80}}]\n"
            ),
        ),
        &format!(
            "host `{shop}` (an External DNS name) of service `lb` is already served by httproute `{ns_a}/shop`"
        ),
    );
    denied(
        apply_as(
            &kb,
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {{name: db, namespace: {ns_b}}}\nspec:\n  parentRefs: [{{name: shared-gateway, namespace: infra}}]\n  hostnames: ['{shop}']\n  rules:\n  - backendRefs: [{{name: db, port: 5432}}]\n"
            ),
        ),
        &format!(
            "host `{shop}` (an External DNS name) of tlsroute `db` is already served by httproute `{ns_a}/shop`"
        ),
    );
    // gRPC methods: the same method on the same name collides, another method does not.
    let grpc_host = format!("grpc-{b}.apps.example.com");
    let grpc = |ns: &str, name: &str, method: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: shared-gateway, namespace: infra}}]\n  hostnames: ['{grpc_host}']\n  rules:\n  - matches: [{{method: {{service: shop.Payments, method: {method}}}}}]\n    backendRefs: [{{name: pay, port: 9000}}]\n"
        )
    };
    apply_as(&kb, &grpc(&ns_b, "charge", "Charge")).unwrap();
    eventually(Duration::from_secs(20), || async {
        match apply_as(&ka, &grpc(&ns_a, "charge", "Charge")) {
            Err(e) if e.contains(&format!("host `{grpc_host}` with path `/shop.Payments/Charge` of grpcroute `charge` is already served by grpcroute `{ns_b}/charge`")) => Ok(()),
            Err(e) => Err(e),
            Ok(out) => {
                let _ = cluster.kubectl().run(&["delete", "grpcroute", "charge", "-n", &ns_a]);
                Err(format!("the same method on the same name was admitted: {out}"))
            }
        }
    })
    .await;
    apply_as(&ka, &grpc(&ns_a, "refund", "Refund")).unwrap();
}
